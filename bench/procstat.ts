/**
 * CPU and memory of processes, read from /proc (Linux): utime+stime of a process, of a process and
 * its children (PostgreSQL's postmaster and backends), peak and current RSS. All values are the
 * kernel's own accounting, so they are independent of how busy the rest of the machine is.
 */
import { existsSync, readdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { stackContext } from "../stack/context.ts";

/** USER_HZ: the unit of the times in /proc/<pid>/stat (100 on every Linux architecture Node runs on). */
export const CLOCK_TICKS_PER_SECOND = 100;

export interface ProcTimes {
  pid: number;
  ppid: number;
  /** utime + stime, in ticks. */
  ticks: number;
  /** cutime + cstime (reaped children), in ticks. */
  childTicks: number;
  /** Start time since boot (ticks): tells a reused pid from the same process. */
  start: number;
  comm: string;
}

export function procTimes(pid: number): ProcTimes | undefined {
  let text: string;
  try {
    text = readFileSync(`/proc/${pid}/stat`, "utf8");
  } catch {
    return undefined;
  }
  const close = text.lastIndexOf(")");
  const comm = text.slice(text.indexOf("(") + 1, close);
  const f = text.slice(close + 2).split(" ");
  // f[0] = state (field 3), so field n is f[n - 3].
  const n = (field: number) => Number(f[field - 3]);
  return { pid, ppid: n(4), ticks: n(14) + n(15), childTicks: n(16) + n(17), start: n(22), comm };
}

export function cpuSecondsOf(pid: number): number | undefined {
  const t = procTimes(pid);
  return t === undefined ? undefined : t.ticks / CLOCK_TICKS_PER_SECOND;
}

function statusKiB(pid: number, key: "VmHWM" | "VmRSS"): number | undefined {
  try {
    const m = new RegExp(`^${key}:\\s+(\\d+) kB`, "m").exec(readFileSync(`/proc/${pid}/status`, "utf8"));
    return m ? Number(m[1]) : undefined;
  } catch {
    return undefined;
  }
}

/** Peak resident set size (bytes) of a live process. */
export function peakRssBytes(pid: number): number | undefined {
  const k = statusKiB(pid, "VmHWM");
  return k === undefined ? undefined : k * 1024;
}

export function rssBytes(pid: number): number | undefined {
  const k = statusKiB(pid, "VmRSS");
  return k === undefined ? undefined : k * 1024;
}

export function childrenOf(ppid: number): number[] {
  const out: number[] = [];
  for (const e of readdirSync("/proc")) {
    if (!/^\d+$/.test(e)) continue;
    const t = procTimes(Number(e));
    if (t?.ppid === ppid) out.push(t.pid);
  }
  return out;
}

/** A process and (optionally) its direct children, as a CPU snapshot. */
export interface GroupSnapshot {
  root: number;
  rootChildTicks: number;
  procs: Map<number, { ticks: number; start: number }>;
}

export function snapshotGroup(root: number, withChildren: boolean): GroupSnapshot | undefined {
  const r = procTimes(root);
  if (r === undefined) return undefined;
  const procs = new Map<number, { ticks: number; start: number }>([[root, { ticks: r.ticks, start: r.start }]]);
  if (withChildren) {
    for (const pid of childrenOf(root)) {
      const t = procTimes(pid);
      if (t) procs.set(pid, { ticks: t.ticks, start: t.start });
    }
  }
  return { root, rootChildTicks: r.childTicks, procs };
}

/**
 * CPU-seconds the group used between two snapshots: live processes' deltas, plus what children that
 * exited in between used (the root's cutime/cstime grows by their whole lifetime when it reaps them,
 * so what they had used before the first snapshot is taken off again).
 */
export function groupCpuSeconds(before: GroupSnapshot, after: GroupSnapshot): number {
  let ticks = after.rootChildTicks - before.rootChildTicks;
  for (const [pid, a] of after.procs) {
    const b = before.procs.get(pid);
    ticks += b !== undefined && b.start === a.start ? a.ticks - b.ticks : a.ticks;
  }
  for (const [pid, b] of before.procs) {
    const a = after.procs.get(pid);
    if (a === undefined || a.start !== b.start) ticks -= b.ticks;
  }
  return Math.max(0, ticks) / CLOCK_TICKS_PER_SECOND;
}

/** CPU-seconds of a fixed set of pids (e.g. one database's backends) between two reads; new pids count whole. */
export function pidsSnapshot(pids: Iterable<number>): Map<number, { ticks: number; start: number }> {
  const m = new Map<number, { ticks: number; start: number }>();
  for (const pid of pids) {
    const t = procTimes(pid);
    if (t) m.set(pid, { ticks: t.ticks, start: t.start });
  }
  return m;
}

export function pidsCpuSeconds(before: Map<number, { ticks: number; start: number }>, after: Map<number, { ticks: number; start: number }>): number {
  let ticks = 0;
  for (const [pid, a] of after) {
    const b = before.get(pid);
    ticks += b !== undefined && b.start === a.start ? a.ticks - b.ticks : a.ticks;
  }
  return ticks / CLOCK_TICKS_PER_SECOND;
}

/** The local stack's service pids (from `.stack/<service>/*.pid`). */
export function stackPid(service: "postgres" | "kafka" | "registry"): number | undefined {
  const dir = join(stackContext().stateDir, service);
  if (!existsSync(dir)) return undefined;
  for (const f of readdirSync(dir)) {
    if (!f.endsWith(".pid")) continue;
    const pid = Number.parseInt(readFileSync(join(dir, f), "utf8").trim().split("\n")[0] ?? "", 10);
    if (Number.isInteger(pid) && procTimes(pid) !== undefined) return pid;
  }
  return undefined;
}

/** One moment of the machine's CPU accounting for the processes a run is charged with. */
export interface CpuMark {
  at: number;
  procs: Map<string, GroupSnapshot | undefined>;
}

/** Marks named process groups: `{ worker: [pid, false], postgres: [postmaster, true], kafka: [pid, false] }`. */
export function markCpu(groups: Record<string, [number | undefined, boolean]>): CpuMark {
  const procs = new Map<string, GroupSnapshot | undefined>();
  for (const [name, [pid, kids]] of Object.entries(groups)) procs.set(name, pid === undefined ? undefined : snapshotGroup(pid, kids));
  return { at: performance.now(), procs };
}

export function cpuBetween(a: CpuMark, b: CpuMark): Record<string, number | null> {
  const out: Record<string, number | null> = {};
  for (const [name, before] of a.procs) {
    const after = b.procs.get(name);
    out[name] = before && after ? groupCpuSeconds(before, after) : null;
  }
  return out;
}

/** Machine-wide CPU (all cores) from /proc/stat, in seconds: shows how much else was running. */
export function machineCpuSeconds(): { busy: number; total: number } {
  const line = readFileSync("/proc/stat", "utf8").split("\n")[0]!.trim().split(/\s+/).slice(1).map(Number);
  const [user = 0, nice = 0, system = 0, idle = 0, iowait = 0, irq = 0, softirq = 0, steal = 0] = line;
  const busy = user + nice + system + irq + softirq + steal;
  return { busy: busy / CLOCK_TICKS_PER_SECOND, total: (busy + idle + iowait) / CLOCK_TICKS_PER_SECOND };
}
