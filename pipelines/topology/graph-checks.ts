/**
 * The checks that look at the whole topology rather than one entry: ids, wiring, cycles, the v1
 * shape (one source → a linear processor chain → sinks), singletons and claimed resources. They
 * run together and return every problem; none stops the others.
 */
import { DATA_KIND_LABEL, type ComponentKind, type ComponentSpec, type ResourceClaim } from "./component-spec.ts";
import { didYouMean } from "./did-you-mean.ts";
import type { Anchor, YamlPath } from "./yaml-source.ts";

export type Section = "sources" | "processors" | "sinks";

export const SECTION_KIND: Record<Section, ComponentKind> = { sources: "source", processors: "processor", sinks: "sink" };

/** One entry of topology.yaml as the graph checks see it. */
export interface GraphNode {
  id: string;
  section: Section;
  /** Undefined when its `type` is unknown or in the wrong section (already reported). */
  spec: ComponentSpec | undefined;
  /** `malformed` was already reported by the loader. */
  inputs: { state: "absent" } | { state: "malformed" } | { state: "ok"; ids: readonly string[] };
  /** From `spec.claims`, when its config was valid. */
  claims: readonly ResourceClaim[];
}

export interface GraphProblem {
  path: YamlPath;
  anchor: Anchor;
  message: string;
}

/** The rules, for docs/topology.md (kept beside the code that enforces them). */
export const GRAPH_RULES: readonly string[] = [
  "Component ids are unique across `sources`, `processors` and `sinks`.",
  "Exactly one source (v1), and at least one sink.",
  "Every processor and sink has `inputs:` naming existing components; no cycles.",
  "Processors form one linear chain in the order they are written: the first takes its input from the source, each next one from the processor before it (v1: no fan-in or fan-out among processors).",
  "Each input emits what its consumer takes: `avro_decode` takes Kafka records, `validate_reading` decoded readings, `timescale_copy` validated readings.",
  "A sink that writes readings takes exactly one input: the last processor, so everything it writes has passed every processor.",
  "A `kafka_dead_letter` sink's `inputs` are the components whose rejections it receives: every processor and every other sink, so no rejection is dropped. A topology with processors needs one.",
  "At most one `timescale_copy` and one `kafka_dead_letter`; no two components write to the same topics, and no sink writes to the topics the source reads.",
];

export function checkGraph(nodes: readonly GraphNode[]): GraphProblem[] {
  const out: GraphProblem[] = [];
  const add = (path: YamlPath, message: string, anchor: Anchor = "value") => out.push({ path, anchor, message });
  const at = (n: GraphNode, ...rest: (string | number)[]): YamlPath => [n.section, n.id, ...rest];
  const ids = (ns: readonly GraphNode[]) => ns.map((n) => `\`${n.id}\``).join(", ");

  // Unique ids (within a section the YAML parser already refuses a duplicate key).
  const byId = new Map<string, GraphNode>();
  for (const n of nodes) {
    const first = byId.get(n.id);
    if (first) add(at(n), `id \`${n.id}\` is already used by ${first.section}.${first.id}: ids must be unique across sources, processors and sinks`, "key");
    else byId.set(n.id, n);
  }
  const live = nodes.filter((n) => byId.get(n.id) === n);
  const ofKind = (k: ComponentKind) => live.filter((n) => SECTION_KIND[n.section] === k);
  const sources = ofKind("source");
  const processors = ofKind("processor");
  const sinks = ofKind("sink");
  const source = sources[0];
  const isDeadLetter = (n: GraphNode) => n.spec?.accepts === "rejections";

  if (!source) add(["sources"], "v1 needs exactly one source; there is none");
  for (const extra of sources.slice(1)) add(at(extra), `v1 supports exactly one source; \`${source!.id}\` is already the source`, "key");
  if (sinks.length === 0) add(["sinks"], "a topology needs at least one sink");

  // Inputs: present, known, not twice, not itself. Resolved edges feed the checks below.
  const edges = new Map<GraphNode, { from: GraphNode; index: number }[]>();
  for (const n of live) {
    if (n.section === "sources") continue; // a source's `inputs:` is reported by the loader
    if (n.inputs.state === "absent") {
      add(at(n, "inputs"), `a ${SECTION_KIND[n.section]} needs \`inputs:\`, the ids of the components it takes data from`);
      continue;
    }
    if (n.inputs.state === "malformed") continue;
    const list = n.inputs.ids;
    if (list.length === 0) add(at(n, "inputs"), `a ${SECTION_KIND[n.section]} needs at least one input`);
    const resolved: { from: GraphNode; index: number }[] = [];
    list.forEach((id, index) => {
      const target = byId.get(id);
      if (list.indexOf(id) !== index) add(at(n, "inputs", index), `\`${id}\` is listed twice`);
      else if (id === n.id) add(at(n, "inputs", index), `\`${id}\` lists itself as an input (a cycle)`);
      else if (!target) add(at(n, "inputs", index), `unknown input \`${id}\`${didYouMean(id, [...byId.keys()].filter((k) => k !== n.id))}`);
      else resolved.push({ from: target, index });
    });
    edges.set(n, resolved);
  }

  // Cycles: one problem per strongly connected component, at the first member in file order.
  const inCycle = new Set<GraphNode>();
  for (const scc of stronglyConnected(live, edges)) {
    if (scc.length < 2) continue;
    const members = live.filter((n) => scc.includes(n));
    const first = members[0]!;
    const loop = shortestLoop(first, members, edges);
    const closing = edges.get(first)!.find((e) => e.from === loop.at(-1))!;
    add(at(first, "inputs", closing.index), `cycle: ${[...loop, first].map((n) => n.id).join(" → ")}`);
    for (const n of scc) inCycle.add(n);
  }
  const usable = (n: GraphNode) => !inCycle.has(n) && n.inputs.state === "ok";
  /** Edges already explained by a chain problem, so the data-kind check does not repeat them. */
  const explained = new Set<string>();

  // v1: the processors form one linear chain from the source, in file order.
  const fedBy = new Map<GraphNode, GraphNode>();
  processors.forEach((p, i) => {
    if (!usable(p) || p.inputs.state !== "ok") return;
    const list = p.inputs.ids;
    const ins = edges.get(p)!;
    if (list.length > 1) {
      add(at(p, "inputs"), `v1 supports a linear processor chain: a processor takes exactly one input, not ${list.length}`);
      for (const e of ins) explained.add(`${p.id}:${e.index}`);
      return;
    }
    const edge = ins[0];
    if (!edge) return;
    const prev = i === 0 ? source : processors[i - 1];
    const other = fedBy.get(edge.from);
    if (prev && edge.from !== prev) {
      const order = `processors run in the order they are written, so \`${p.id}\` takes its input from \`${prev.id}\``;
      add(
        at(p, "inputs", edge.index),
        other ? `v1 supports a linear processor chain: \`${edge.from.id}\` already feeds \`${other.id}\`; ${order}` : `v1 supports a linear processor chain: ${order}`,
      );
      explained.add(`${p.id}:${edge.index}`);
    }
    if (!other) fedBy.set(edge.from, p);
  });

  // Sinks that write readings take them from the end of the chain.
  const last = processors.at(-1) ?? source;
  for (const s of sinks) {
    if (!s.spec || isDeadLetter(s) || !usable(s) || s.inputs.state !== "ok") continue;
    const ins = edges.get(s)!;
    if (s.inputs.ids.length > 1) {
      add(at(s, "inputs"), `a ${s.spec.type} sink takes exactly one input${last ? `, the last processor \`${last.id}\`` : ""}`);
      for (const e of ins) explained.add(`${s.id}:${e.index}`);
      continue;
    }
    const edge = ins[0];
    if (edge && last && edge.from !== last && SECTION_KIND[edge.from.section] === "processor") {
      add(at(s, "inputs", edge.index), `a ${s.spec.type} sink takes its input from the last processor, \`${last.id}\`, so everything it writes has passed every processor`);
      explained.add(`${s.id}:${edge.index}`);
    }
  }

  // What flows along each edge.
  for (const [n, ins] of edges) {
    const accepts = n.spec?.accepts;
    if (!accepts || inCycle.has(n)) continue;
    for (const { from, index } of ins) {
      if (explained.has(`${n.id}:${index}`)) continue;
      const where = at(n, "inputs", index);
      if (accepts === "rejections") {
        if (from.section === "sources") add(where, `\`${from.id}\` is a source: it rejects nothing, so it cannot feed a dead-letter sink`);
        else if (isDeadLetter(from)) add(where, `\`${from.id}\` is a dead-letter sink itself`);
        continue;
      }
      if (from.section === "sinks") {
        add(where, `\`${from.id}\` is a sink: it passes nothing on${isDeadLetter(from) ? "" : " (only a dead-letter sink takes a sink's rejections)"}`);
        continue;
      }
      const emits = from.spec?.emits;
      if (emits && emits !== accepts) {
        add(where, `${n.spec!.type} takes ${DATA_KIND_LABEL[accepts]}, but \`${from.id}\` (${from.spec!.type}) emits ${DATA_KIND_LABEL[emits]}`);
      }
    }
  }

  // Rejections: every processor and sink feeds the dead-letter sink.
  const deadLetters = sinks.filter(isDeadLetter);
  const rejecting = live.filter((n) => n.section !== "sources" && !isDeadLetter(n));
  const dl = deadLetters[0];
  if (!nodes.some(isDeadLetter) && processors.length > 0) {
    add(["sinks"], `processors reject readings (${ids(processors)}), so the topology needs a kafka_dead_letter sink to receive them`);
  }
  if (dl && dl.inputs.state === "ok" && dl.inputs.ids.length > 0) {
    const listed = new Set(dl.inputs.ids);
    const missing = rejecting.filter((n) => !listed.has(n.id));
    if (missing.length > 0) {
      add(at(dl, "inputs"), `a dead-letter sink receives the rejections of every processor and sink, so none is dropped: add ${ids(missing)}`);
    }
  }

  // At most one of each singleton type.
  const firstOfType = new Map<string, GraphNode>();
  for (const n of live) {
    if (!n.spec?.singleton) continue;
    const first = firstOfType.get(n.spec.type);
    if (first) add(at(n), `at most one ${n.spec.type} per topology; \`${first.id}\` is already one`, "key");
    else firstOfType.set(n.spec.type, n);
  }

  // Resources: one writer each, and no writer of what the source reads.
  const writers = new Map<string, GraphNode>();
  const readers = new Map<string, GraphNode>();
  for (const n of live) for (const c of n.claims) if (c.access === "read" && !readers.has(c.resource)) readers.set(c.resource, n);
  for (const n of live) {
    for (const c of n.claims) {
      if (c.access !== "write") continue;
      const other = writers.get(c.resource);
      const reader = readers.get(c.resource);
      if (other) add(at(n, ...c.path), `\`${n.id}\` and \`${other.id}\` both write to ${c.label}: two sinks cannot claim one resource`);
      else writers.set(c.resource, n);
      if (reader) add(at(n, ...c.path), `\`${n.id}\` would write to ${c.label}, which \`${reader.id}\` reads (a loop)`);
    }
  }

  return out;
}

/** Tarjan's algorithm over input → consumer edges. */
function stronglyConnected(nodes: readonly GraphNode[], edges: Map<GraphNode, { from: GraphNode }[]>): GraphNode[][] {
  const successors = new Map<GraphNode, GraphNode[]>(nodes.map((n) => [n, []]));
  for (const [n, ins] of edges) for (const { from } of ins) successors.get(from)?.push(n);
  const index = new Map<GraphNode, number>();
  const low = new Map<GraphNode, number>();
  const stack: GraphNode[] = [];
  const onStack = new Set<GraphNode>();
  const out: GraphNode[][] = [];
  const visit = (v: GraphNode) => {
    index.set(v, index.size);
    low.set(v, index.get(v)!);
    stack.push(v);
    onStack.add(v);
    for (const w of successors.get(v) ?? []) {
      if (!index.has(w)) {
        visit(w);
        low.set(v, Math.min(low.get(v)!, low.get(w)!));
      } else if (onStack.has(w)) low.set(v, Math.min(low.get(v)!, index.get(w)!));
    }
    if (low.get(v) === index.get(v)) {
      const scc: GraphNode[] = [];
      let w: GraphNode;
      do {
        w = stack.pop()!;
        onStack.delete(w);
        scc.push(w);
      } while (w !== v);
      out.push(scc);
    }
  };
  for (const n of nodes) if (!index.has(n)) visit(n);
  return out;
}

/** The shortest path start → … (in data-flow order) whose last node feeds `start` back, within one SCC. */
function shortestLoop(start: GraphNode, members: readonly GraphNode[], edges: Map<GraphNode, { from: GraphNode }[]>): GraphNode[] {
  const successors = (v: GraphNode) => members.filter((n) => edges.get(n)?.some((e) => e.from === v));
  const parent = new Map<GraphNode, GraphNode | undefined>([[start, undefined]]);
  const queue = [start];
  while (queue.length > 0) {
    const v = queue.shift()!;
    for (const w of successors(v)) {
      if (w === start) {
        const path = [v];
        for (let p = parent.get(v); p; p = parent.get(p)) path.unshift(p);
        return path;
      }
      if (!parent.has(w)) {
        parent.set(w, v);
        queue.push(w);
      }
    }
  }
  return [start];
}
