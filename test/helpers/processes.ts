/** Worker replicas as real child processes (`millrace run`), for crash, kill -9 and scaling tests. */
import { spawn, type ChildProcess } from "node:child_process";
import { mkdirSync, openSync, closeSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { pathToFileURL } from "node:url";
import { repoRoot } from "../../stack/context.ts";


export interface WorkerProcess {
  name: string;
  child: ChildProcess;
  logFile: string;
  exited: Promise<number | null>;
  kill(signal?: NodeJS.Signals): void;
}

/** A topology file with changed settings (absolute schema path, so it can live anywhere). */
export function writeTopology(dir: string, edits: Array<[RegExp, string]>): string {
  let text = readFileSync(join(repoRoot, "topology.yaml"), "utf8");
  text = text.replace(/schema:\s*schemas\/sensor-reading\.avsc/, `schema: ${join(repoRoot, "schemas", "sensor-reading.avsc")}`);
  for (const [re, to] of edits) {
    if (!re.test(text)) throw new Error(`topology edit ${re} matched nothing`);
    text = text.replace(re, to);
  }
  mkdirSync(dir, { recursive: true });
  const file = join(dir, `topology-${Date.now()}-${Math.random().toString(36).slice(2)}.yaml`);
  writeFileSync(file, text);
  return file;
}

/** Lines of a worker's log file (pino JSON) whose msg matches; a line cut by SIGKILL is skipped. */
export function workerLogLines(logFile: string, msg: RegExp): Array<Record<string, unknown>> {
  const out: Array<Record<string, unknown>> = [];
  for (const line of readFileSync(logFile, "utf8").split("\n")) {
    if (!line.startsWith("{")) continue;
    try {
      const j = JSON.parse(line) as Record<string, unknown>;
      if (typeof j.msg === "string" && msg.test(j.msg)) out.push(j);
    } catch {
      // a line cut by SIGKILL
    }
  }
  return out;
}

export function startWorkerProcess(opts: {
  name: string;
  topology: string;
  group: string;
  tenants: string[];
  pgUrl: string;
  logDir: string;
  env?: NodeJS.ProcessEnv;
}): WorkerProcess {
  mkdirSync(opts.logDir, { recursive: true });
  const logFile = join(opts.logDir, `${opts.name}.log`);
  const fd = openSync(logFile, "a");
  // One process (node with tsx's loader), so SIGKILL really kills the worker.
  const child = spawn(
    process.execPath,
    ["--import", pathToFileURL(join(repoRoot, "cli", "early-signals.mjs")).href, "--import", pathToFileURL(join(repoRoot, "node_modules", "tsx", "dist", "loader.mjs")).href, join(repoRoot, "cli", "main.ts"), "run", "--topology", opts.topology, "--consumer-group", opts.group, "--tenants", opts.tenants.join(","), "--metrics-port", "0"],
    {
      cwd: repoRoot,
      env: { ...process.env, MILLRACE_PG_URL: opts.pgUrl, MILLRACE_PG_ROLE: "millrace_writer", MILLRACE_INSTANCE_ID: opts.name, MILLRACE_LOG_LEVEL: "info", ...opts.env },
      stdio: ["ignore", fd, fd],
    },
  );
  closeSync(fd);
  const exited = new Promise<number | null>((resolve) => child.once("exit", (code) => resolve(code)));
  return {
    name: opts.name,
    child,
    logFile,
    exited,
    kill(signal: NodeJS.Signals = "SIGKILL") {
      child.kill(signal);
    },
  };
}

/**
 * The worker's /metrics URL, from its "metrics and health endpoints listening" log line (this
 * process's pid: the log file is appended to across runs). Bounded wait.
 */
export async function workerMetricsUrl(p: WorkerProcess, timeoutMs = 60_000): Promise<string> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    const line = workerLogLines(p.logFile, /^metrics and health endpoints listening$/).find((j) => j.pid === p.child.pid);
    if (line && typeof line.port === "number") return `http://127.0.0.1:${line.port}/metrics`;
    if (p.child.exitCode !== null) throw new Error(`worker ${p.name} exited (${p.child.exitCode}) before its metrics endpoint listened; see ${p.logFile}`);
    await new Promise((r) => setTimeout(r, 200));
  }
  throw new Error(`timed out after ${timeoutMs} ms waiting for worker ${p.name}'s metrics endpoint (log ${p.logFile})`);
}
