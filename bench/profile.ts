/**
 * Summary of a V8 CPU profile (node --cpu-prof) of the worker: self time by module group (ours,
 * kafkajs, pg, avsc, node internals, GC, …), the top self-time functions, and the inclusive time of
 * our own functions (what the engine code costs with everything it calls).
 */
import { readdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { repoRoot } from "../stack/context.ts";

interface CallFrame {
  functionName: string;
  url: string;
  lineNumber: number;
}
interface ProfileNode {
  id: number;
  callFrame: CallFrame;
  hitCount?: number;
  children?: number[];
}
interface CpuProfile {
  nodes: ProfileNode[];
  startTime: number;
  endTime: number;
  samples?: number[];
  timeDeltas?: number[];
}

export interface ProfileSummary {
  file: string;
  /** Sampled CPU-busy time of the main thread (idle excluded), seconds; shares below are of this. */
  seconds: number;
  idleSeconds: number;
  /** Self time by group, seconds and share of the sampled time. */
  groups: Array<{ group: string; seconds: number; share: number }>;
  topSelf: Array<{ fn: string; where: string; group: string; seconds: number; share: number }>;
  /** Our functions by inclusive time (each function counted once per stack). */
  oursInclusive: Array<{ fn: string; where: string; seconds: number; share: number }>;
}

const NM = "/node_modules/";

export function moduleGroup(f: CallFrame): string {
  const u = f.url;
  if (!u) {
    if (f.functionName === "(garbage collector)") return "gc";
    if (f.functionName === "(idle)") return "idle";
    if (f.functionName === "(program)") return "program (V8/native)";
    return "native";
  }
  if (u.startsWith("node:")) return "node internals";
  const i = u.lastIndexOf(NM);
  if (i >= 0) {
    const rest = u.slice(i + NM.length).split("/");
    const pkg = rest[0]!.startsWith("@") ? `${rest[0]}/${rest[1]}` : rest[0]!;
    if (pkg === "kafkajs") return "kafkajs";
    if (pkg === "avsc") return "avsc";
    if (pkg.startsWith("pg")) return "pg";
    if (pkg === "@kafkajs/confluent-schema-registry") return "schema-registry client";
    return `dep:${pkg}`;
  }
  if (u.includes(repoRoot) || u.startsWith("file://")) return "ours";
  return "other";
}

function where(f: CallFrame): string {
  const u = f.url.replace(/^file:\/\//, "");
  const short = u.startsWith(repoRoot) ? u.slice(repoRoot.length + 1) : u.includes(NM) ? u.slice(u.lastIndexOf(NM) + NM.length) : u;
  // tsx-compiled modules report positions in the generated code (often line 1): the file alone then.
  return short ? (f.lineNumber > 0 ? `${short}:${f.lineNumber + 1}` : short) : "";
}

/**
 * `window`: only samples between `fromEndMs` and `toEndMs` before the profile's end (the drain, not
 * the start-up or the shutdown; the caller knows both from the worker's exit time).
 */
export function summariseProfile(file: string, window?: { fromEndMs: number; toEndMs: number }, top = 25): ProfileSummary & { window?: { fromEndMs: number; toEndMs: number } } {
  const p = JSON.parse(readFileSync(file, "utf8")) as CpuProfile;
  const byId = new Map(p.nodes.map((n) => [n.id, n]));
  // Self time per node from samples × time deltas (falls back to hit counts).
  const self = new Map<number, number>();
  if (p.samples && p.timeDeltas && p.samples.length === p.timeDeltas.length) {
    const lo = window ? p.endTime - window.fromEndMs * 1000 : -Infinity;
    const hi = window ? p.endTime - window.toEndMs * 1000 : Infinity;
    let t = p.startTime;
    for (let i = 0; i < p.samples.length; i++) {
      t += p.timeDeltas[i]!;
      if (t < lo || t > hi) continue;
      const dt = p.timeDeltas[i + 1] ?? 0;
      self.set(p.samples[i]!, (self.get(p.samples[i]!) ?? 0) + Math.max(0, dt));
    }
  } else {
    const hits = p.nodes.reduce((a, n) => a + (n.hitCount ?? 0), 0) || 1;
    for (const n of p.nodes) self.set(n.id, ((n.hitCount ?? 0) / hits) * (p.endTime - p.startTime));
  }
  let idle = 0;
  for (const [id, us] of self) {
    if (byId.get(id)?.callFrame.functionName === "(idle)") {
      idle += us;
      self.delete(id);
    }
  }
  const total = [...self.values()].reduce((a, b) => a + b, 0) || 1;
  const groups = new Map<string, number>();
  const fns = new Map<string, { fn: string; where: string; group: string; us: number }>();
  for (const [id, us] of self) {
    const n = byId.get(id);
    if (!n) continue;
    const g = moduleGroup(n.callFrame);
    groups.set(g, (groups.get(g) ?? 0) + us);
    const key = `${n.callFrame.functionName}@${n.callFrame.url}:${n.callFrame.lineNumber}`;
    const e = fns.get(key) ?? { fn: n.callFrame.functionName || "(anonymous)", where: where(n.callFrame), group: g, us: 0 };
    e.us += us;
    fns.set(key, e);
  }
  // Inclusive time of our functions: walk from the root with the stack of our functions on it.
  const parent = new Map<number, number>();
  for (const n of p.nodes) for (const c of n.children ?? []) parent.set(c, n.id);
  const incl = new Map<string, { fn: string; where: string; us: number }>();
  for (const [id, us] of self) {
    const seen = new Set<string>();
    for (let cur: number | undefined = id; cur !== undefined; cur = parent.get(cur)) {
      const n = byId.get(cur);
      if (!n || moduleGroup(n.callFrame) !== "ours") continue;
      const key = `${n.callFrame.functionName}@${n.callFrame.url}:${n.callFrame.lineNumber}`;
      if (seen.has(key)) continue;
      seen.add(key);
      const e = incl.get(key) ?? { fn: n.callFrame.functionName || "(anonymous)", where: where(n.callFrame), us: 0 };
      e.us += us;
      incl.set(key, e);
    }
  }
  const s = (us: number) => us / 1e6;
  return {
    file,
    window,
    seconds: s(total),
    idleSeconds: s(idle),
    groups: [...groups].map(([group, us]) => ({ group, seconds: s(us), share: us / total })).sort((a, b) => b.seconds - a.seconds),
    topSelf: [...fns.values()].sort((a, b) => b.us - a.us).slice(0, top).map((e) => ({ fn: e.fn, where: e.where, group: e.group, seconds: s(e.us), share: e.us / total })),
    oursInclusive: [...incl.values()].sort((a, b) => b.us - a.us).slice(0, 15).map((e) => ({ fn: e.fn, where: e.where, seconds: s(e.us), share: e.us / total })),
  };
}

/**
 * The main thread's profile in `dir`: node writes one per thread (CPU.<date>.<time>.<pid>.<thread>.<seq>.cpuprofile),
 * and the tsx loader's module hooks run on a thread of their own.
 */
export function mainThreadProfile(dir: string): string | undefined {
  const files = readdirSync(dir).filter((f) => f.endsWith(".cpuprofile")).sort();
  const main = files.filter((f) => f.split(".")[4] === "0");
  const pick = main.length ? main : files;
  return pick.length ? join(dir, pick[pick.length - 1]!) : undefined;
}
