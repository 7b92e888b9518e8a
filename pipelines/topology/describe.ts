/**
 * A plan, described in the spirit of Kafka Streams' `Topology#describe()`: the sub-topology, each
 * node with its type and settings, `-->` successors and `<--` predecessors. Deterministic (no
 * absolute paths, fixed order) so it can be diffed and snapshot-tested; secrets are redacted.
 */
import { relative, dirname } from "node:path";
import type { TopologyPlan } from "./plan.ts";
import { formatDuration, formatSize } from "./units.ts";

const REJECTIONS_SINK = "kafka_dead_letter";
/** Plan fields that are the wiring, printed as arrows instead. */
const WIRING = new Set(["id", "type", "input"]);
const SECRET_NAME = /password|secret|token|credential|private_?key/i;

interface Node {
  id: string;
  type: string;
  input?: string;
}

export function describeTopology(plan: TopologyPlan): string {
  const baseDir = dirname(plan.file);
  const deadLetters = plan.sinks.filter((s) => s.type === REJECTIONS_SINK).map((s) => s.id);
  const dataSinks = plan.sinks.filter((s) => s.type !== REJECTIONS_SINK);
  const rejecting = [...plan.processors, ...dataSinks].map((n) => n.id);
  const successors = (id: string) => [...plan.processors, ...dataSinks].filter((n) => n.input === id).map((n) => n.id);

  const lines = ["Topologies:", "   Sub-topology: 0"];
  const node = (label: string, n: Node, arrows: string[]) => {
    lines.push(`    ${label}: ${n.id} (${n.type})`);
    for (const [key, value] of Object.entries(n)) {
      if (!WIRING.has(key)) lines.push(`      ${settingName(key)}: ${formatValue(key, value, baseDir)}`);
    }
    for (const a of arrows) lines.push(`      ${a}`);
  };
  const list = (ids: string[]) => (ids.length > 0 ? ids.join(", ") : "none");
  const rejections = deadLetters.length > 0 ? [`rejections --> ${list(deadLetters)}`] : [];

  node("Source", plan.source, [`--> ${list(successors(plan.source.id))}`]);
  for (const p of plan.processors) node("Processor", p, [`--> ${list(successors(p.id))}`, ...rejections, `<-- ${p.input}`]);
  for (const s of plan.sinks) {
    if ("input" in s) node("Sink", s, [...rejections, `<-- ${s.input}`]);
    else node("Sink", s, [`<-- ${list(rejecting)} (rejections)`]);
  }
  return `${lines.join("\n")}\n`;
}

/** `sessionTimeoutMs` → `session_timeout`, `schemaFile` → `schema`: the topology.yaml names. */
function settingName(key: string): string {
  return key.replace(/(Ms|File)$/, "").replace(/[A-Z]/g, (c) => `_${c.toLowerCase()}`);
}

function formatValue(key: string, value: unknown, baseDir: string): string {
  if (isEnvRef(value)) return `<env:${value.env}>`;
  if (typeof value === "string" && SECRET_NAME.test(key)) return "<redacted>";
  if (typeof value === "number") {
    if (value === Number.POSITIVE_INFINITY) return "unlimited";
    if (key.endsWith("Ms")) return formatDuration(value);
    if (/Bytes|multipartThreshold/.test(key)) return formatSize(value);
    return String(value);
  }
  if (typeof value === "string" && key.endsWith("File")) return relative(baseDir, value) || ".";
  if (Array.isArray(value)) return `[${value.map((v) => formatValue(key, v, baseDir)).join(", ")}]`;
  if (value !== null && typeof value === "object") {
    return `{ ${Object.entries(value)
      .map(([k, v]) => `${settingName(k)}: ${formatValue(k, v, baseDir)}`)
      .join(", ")} }`;
  }
  return String(value);
}

/** A secret reference, `{ env: NAME }`: printed as `<env:NAME>`, never resolved here. */
function isEnvRef(v: unknown): v is { env: string } {
  return v !== null && typeof v === "object" && Object.keys(v).length === 1 && typeof (v as { env?: unknown }).env === "string";
}
