/** Child processes of the benchmark: node scripts under the tsx loader, and a free loopback port. */
import { spawn, type ChildProcess } from "node:child_process";
import { closeSync, openSync } from "node:fs";
import { createServer } from "node:net";
import { join } from "node:path";
import { pathToFileURL } from "node:url";
import { repoRoot } from "../stack/context.ts";

export const TSX_LOADER = pathToFileURL(join(repoRoot, "node_modules", "tsx", "dist", "loader.mjs")).href;

export interface Child {
  child: ChildProcess;
  pid: number;
  logFile: string;
  exited: Promise<number | null>;
  /** stdout (when captured), whole. */
  stdout(): string;
}

/** `node [nodeArgs] --import tsx <script> args`, stderr (and stdout unless captured) to logFile. */
export function spawnNode(opts: { script: string; args: string[]; nodeArgs?: string[]; logFile: string; env?: NodeJS.ProcessEnv; captureStdout?: boolean }): Child {
  return spawnLogged(process.execPath, [...(opts.nodeArgs ?? []), "--import", TSX_LOADER, opts.script, ...opts.args], opts);
}

export function spawnLogged(cmd: string, args: string[], opts: { logFile: string; env?: NodeJS.ProcessEnv; captureStdout?: boolean; cwd?: string }): Child {
  const fd = openSync(opts.logFile, "a");
  const child = spawn(cmd, args, {
    cwd: opts.cwd ?? repoRoot,
    env: { ...process.env, ...opts.env },
    stdio: ["ignore", opts.captureStdout ? "pipe" : fd, fd],
  });
  closeSync(fd);
  let out = "";
  child.stdout?.setEncoding("utf8");
  child.stdout?.on("data", (d: string) => (out += d));
  const exited = new Promise<number | null>((resolve) => {
    child.once("exit", (code, signal) => resolve(code ?? (signal ? 128 : null)));
    child.once("error", () => resolve(-1));
  });
  if (child.pid === undefined) throw new Error(`could not start ${cmd}`);
  return { child, pid: child.pid, logFile: opts.logFile, exited, stdout: () => out };
}

/** Wait for exit at most `ms`, then SIGKILL it (and wait for that). */
export async function waitExit(c: Child, ms: number): Promise<number | null> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<"timeout">((r) => (timer = setTimeout(() => r("timeout"), ms)));
  const res = await Promise.race([c.exited, timeout]);
  clearTimeout(timer);
  if (res === "timeout") {
    c.child.kill("SIGKILL");
    return await c.exited;
  }
  return res;
}

export async function freePort(): Promise<number> {
  return await new Promise((resolve, reject) => {
    const s = createServer();
    s.once("error", reject);
    s.listen(0, "127.0.0.1", () => {
      const a = s.address();
      const port = typeof a === "object" && a ? a.port : 0;
      s.close(() => resolve(port));
    });
  });
}

export const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

/** Last JSON object line printed on stdout by a child script. */
export function lastJsonLine<T>(text: string): T {
  const lines = text.trim().split("\n").reverse();
  for (const l of lines) {
    const s = l.trim();
    if (s.startsWith("{")) return JSON.parse(s) as T;
  }
  throw new Error(`no JSON result on stdout: ${text.slice(-500)}`);
}
