/**
 * topology.yaml → {@link TopologyPlan}. Parse (keeping positions) → each entry's `type` and settings
 * against its component spec → the graph checks → a deep-frozen plan. Every problem found on the
 * way is collected, with its YAML line and column, and thrown together as one {@link TopologyError};
 * nothing is built from a topology with a problem.
 */
import { readFileSync } from "node:fs";
import { dirname, resolve } from "node:path";
import type { z } from "zod";
import type { ComponentSpec } from "./component-spec.ts";
import { deepFreeze } from "./deep-freeze.ts";
import { didYouMean } from "./did-you-mean.ts";
import { batchPlan, FRAMEWORK_SCHEMAS, retryPlan } from "./framework.ts";
import { checkGraph, SECTION_KIND, type GraphNode, type Section } from "./graph-checks.ts";
import { TopologyError, type ProcessorPlan, type SinkPlan, type SourcePlan, type TopologyPlan, type TopologyProblem } from "./plan.ts";
import { COMPONENTS, componentSpec } from "./registry.ts";
import { parseYamlSource, type Anchor, type YamlPath, type YamlSource } from "./yaml-source.ts";

const SECTIONS: readonly Section[] = ["sources", "processors", "sinks"];
const TOP_LEVEL_KEYS = ["version", ...SECTIONS];
const COMPONENT_ID = /^[a-z][a-z0-9_]*$/;

/** Reads and loads a topology file; throws {@link TopologyError} (also when the file cannot be read). */
export function loadTopology(file: string): TopologyPlan {
  const abs = resolve(file);
  let text: string;
  try {
    text = readFileSync(abs, "utf8");
  } catch (err) {
    throw new TopologyError(abs, [{ path: "(file)", message: `cannot read ${abs}: ${(err as Error).message}` }]);
  }
  return parseTopology(text, abs);
}

/** Loads topology text; `file` names it in messages and relative paths (e.g. `schema`) resolve against its directory. */
export function parseTopology(text: string, file: string): TopologyPlan {
  const abs = resolve(file);
  const baseDir = dirname(abs);
  const src = parseYamlSource(text);
  if (src.syntaxErrors.length > 0) {
    throw new TopologyError(
      abs,
      src.syntaxErrors.map((e) => ({ path: "(yaml)", line: e.line, column: e.column, message: e.message })),
    );
  }
  const problems = new Problems(src);
  const root = src.value;
  if (!isRecord(root)) {
    problems.add([], "expected a mapping with `version`, `sources`, `processors` and `sinks`");
    throw problems.error(abs);
  }

  for (const key of Object.keys(root)) {
    if (!TOP_LEVEL_KEYS.includes(key)) problems.add([key], `unknown top-level key \`${key}\`${didYouMean(key, TOP_LEVEL_KEYS)}`, "key");
  }
  if (!("version" in root)) problems.add(["version"], "missing `version: 1`");
  else if (root.version !== 1) problems.add(["version"], `unsupported version ${JSON.stringify(root.version)}: this millrace reads version 1`);

  const nodes: GraphNode[] = [];
  const valid = new Map<GraphNode, Validated>();
  for (const section of SECTIONS) {
    const entries = root[section];
    if (entries === undefined || entries === null) continue; // the graph checks say what is missing
    if (!isRecord(entries)) {
      problems.add([section], `expected a mapping of component id → settings, got ${describeValue(entries)}`);
      continue;
    }
    for (const [id, entry] of Object.entries(entries)) {
      const node = readEntry(section, id, entry, problems, baseDir);
      nodes.push(node.graph);
      if (node.validated) valid.set(node.graph, node.validated);
    }
  }

  for (const p of checkGraph(nodes)) problems.add(p.path, p.message, p.anchor);
  if (problems.count > 0) throw problems.error(abs);

  const plans = nodes.map((n) => {
    const v = valid.get(n)!;
    const inputs = n.inputs.state === "ok" ? n.inputs.ids : [];
    return v.spec.plan({ id: n.id, config: v.config, inputs, baseDir, ...v.framework });
  });
  const plan: TopologyPlan = {
    file: abs,
    source: plans.find((_, i) => nodes[i]!.section === "sources") as SourcePlan,
    processors: plans.filter((_, i) => nodes[i]!.section === "processors") as ProcessorPlan[],
    sinks: plans.filter((_, i) => nodes[i]!.section === "sinks") as SinkPlan[],
  };
  return deepFreeze(plan);
}

interface Validated {
  spec: ComponentSpec;
  config: z.output<z.ZodObject>;
  framework: { batch?: ReturnType<typeof batchPlan>; retry?: ReturnType<typeof retryPlan> };
}

/** One entry: its type, its inputs and its settings, each problem reported; `validated` only when all of it is fine. */
function readEntry(section: Section, id: string, entry: unknown, problems: Problems, baseDir: string): { graph: GraphNode; validated?: Validated } {
  const base = [section, id];
  const kind = SECTION_KIND[section];
  if (!COMPONENT_ID.test(id)) {
    problems.add(base, `component id \`${id}\` must be snake_case: a lower-case letter, then lower-case letters, digits or _`, "key");
  }
  if (!isRecord(entry)) {
    problems.add(base, `expected the ${kind}'s settings (a mapping with \`type:\`), got ${describeValue(entry)}`);
    return { graph: { id, section, spec: undefined, inputs: { state: "malformed" }, claims: [] } };
  }

  // type
  let spec: ComponentSpec | undefined;
  const type = entry.type;
  const known = COMPONENTS.filter((c) => c.kind === kind).map((c) => c.type);
  if (type === undefined) {
    problems.add([...base, "type"], `missing \`type\`: one of ${known.join(", ")}`);
  } else if (typeof type !== "string") {
    problems.add([...base, "type"], `expected a component type name, got ${describeValue(type)}`);
  } else {
    spec = componentSpec(type);
    if (!spec) {
      problems.add([...base, "type"], `unknown ${kind} type \`${type}\`${didYouMean(type, COMPONENTS.map((c) => c.type))}; known: ${known.join(", ")}`);
    } else if (spec.kind !== kind) {
      problems.add([...base, "type"], `${type} is a ${spec.kind}: it belongs under \`${SECTIONS.find((s) => SECTION_KIND[s] === spec!.kind)}:\``);
    }
  }

  // inputs (the graph checks decide whether the ids fit)
  let inputs: GraphNode["inputs"] = { state: "absent" };
  if ("inputs" in entry) {
    if (kind === "source") {
      problems.add([...base, "inputs"], "a source takes no inputs: it reads from Kafka", "key");
    } else if (Array.isArray(entry.inputs) && entry.inputs.every((i) => typeof i === "string" && i !== "")) {
      inputs = { state: "ok", ids: entry.inputs as string[] };
    } else {
      problems.add([...base, "inputs"], `expected a list of component ids, e.g. [decode], got ${describeValue(entry.inputs)}`);
      inputs = { state: "malformed" };
    }
  }

  // settings: the component's own, and the engine-owned ones it takes
  let validated: Validated | undefined;
  let claims: GraphNode["claims"] = [];
  if (spec) {
    const before = problems.count;
    const own: Record<string, unknown> = {};
    const framework: Record<string, unknown> = {};
    for (const [k, v] of Object.entries(entry)) {
      if (k === "type" || k === "inputs") continue;
      if ((spec.framework as readonly string[]).includes(k)) framework[k] = v;
      else own[k] = v;
    }
    const ownKeys = [...Object.keys(spec.config.shape), ...spec.framework, "type", ...(kind === "source" ? [] : ["inputs"])];
    const config = problems.parse(spec.config, own, base, ownKeys, spec.type);
    const plans: Validated["framework"] = {};
    for (const f of spec.framework) {
      const schema = FRAMEWORK_SCHEMAS[f];
      const parsed = problems.parse(schema, framework[f] ?? {}, [...base, f], Object.keys(schema.shape), f);
      if (parsed !== undefined) {
        if (f === "batch") plans.batch = batchPlan(parsed as z.output<typeof FRAMEWORK_SCHEMAS.batch>);
        else plans.retry = retryPlan(parsed as z.output<typeof FRAMEWORK_SCHEMAS.retry>);
      }
    }
    if (config !== undefined) {
      for (const p of spec.check?.(config, { baseDir }) ?? []) problems.add([...base, ...p.path], p.message);
      claims = spec.claims?.(config) ?? [];
    }
    if (spec.kind !== kind) spec = undefined; // reported above; the graph treats it as unknown
    else if (problems.count === before && config !== undefined) validated = { spec, config, framework: plans };
  }
  return { graph: { id, section, spec, inputs, claims }, validated };
}

/** The problems found so far, each placed in the YAML. */
class Problems {
  private readonly list: TopologyProblem[] = [];
  constructor(private readonly src: YamlSource) {}

  get count(): number {
    return this.list.length;
  }

  add(path: YamlPath, message: string, anchor: Anchor = "value"): void {
    this.list.push({ path: formatPath(path), ...this.src.locate(path, anchor), message });
  }

  /** Validates `value` (found at `base`); reports every issue and returns the output when there was none. */
  parse<S extends z.ZodType>(schema: S, value: unknown, base: YamlPath, knownKeys: readonly string[], owner: string): z.output<S> | undefined {
    const r = schema.safeParse(value);
    if (r.success) return r.data;
    for (const issue of r.error.issues) {
      const path = [...base, ...issue.path.map((p) => (typeof p === "symbol" ? String(p) : p))];
      if (issue.code === "unrecognized_keys") {
        for (const key of issue.keys) {
          const takers = COMPONENTS.filter((c) => (c.framework as readonly string[]).includes(key)).map((c) => c.type);
          const hint = takers.length > 0 ? `: only ${takers.join(", ")} take the engine's \`${key}\` settings` : didYouMean(key, knownKeys);
          this.add([...path, key], `unknown setting \`${key}\` for ${owner}${hint}`, "key");
        }
      } else if (!this.src.has(path)) {
        // Absent from the file: either required, or its default conflicts with a setting that is there.
        const name = String(path.at(-1));
        this.add(path, issue.code === "invalid_type" ? `missing required setting \`${name}\`` : `${issue.message} (\`${name}\` is not set, so its default applies)`);
      } else {
        this.add(path, issue.message.startsWith("Invalid input: expected object") ? "expected a mapping of settings" : issue.message);
      }
    }
    return undefined;
  }

  error(file: string): TopologyError {
    const sorted = this.list
      .map((p, i) => ({ p, i }))
      .sort((a, b) => (a.p.line ?? 0) - (b.p.line ?? 0) || (a.p.column ?? 0) - (b.p.column ?? 0) || a.i - b.i)
      .map(({ p }) => p);
    return new TopologyError(file, sorted);
  }
}

/** `["sinks", "timescale", "inputs", 0]` → `sinks.timescale.inputs[0]`. */
export function formatPath(path: YamlPath): string {
  if (path.length === 0) return "(document)";
  return path.map((seg, i) => (typeof seg === "number" ? `[${seg}]` : i === 0 ? seg : `.${seg}`)).join("");
}

function isRecord(v: unknown): v is Record<string, unknown> {
  return v !== null && typeof v === "object" && !Array.isArray(v);
}

function describeValue(v: unknown): string {
  if (v === null || v === undefined) return "nothing";
  if (Array.isArray(v)) return "a list";
  if (typeof v === "object") return "a mapping";
  return `${typeof v} ${JSON.stringify(v)}`;
}
