/**
 * Process helpers shared by the stack services: detached start with a pid file, liveness checks,
 * graceful/forced stop, bounded waits, and running install commands with their output in the log.
 */
import { spawn, spawnSync, type SpawnOptions } from "node:child_process";
import { createConnection } from "node:net";
import { closeSync, existsSync, mkdirSync, openSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { dirname } from "node:path";

export function ensureDir(path: string): string {
  mkdirSync(path, { recursive: true });
  return path;
}

export function readPid(pidFile: string): number | undefined {
  if (!existsSync(pidFile)) return undefined;
  const pid = Number.parseInt(readFileSync(pidFile, "utf8").trim(), 10);
  return Number.isFinite(pid) && pid > 0 ? pid : undefined;
}

export function isAlive(pid: number | undefined): boolean {
  if (pid === undefined) return false;
  try {
    process.kill(pid, 0);
  } catch {
    return false;
  }
  // A zombie (exited, not yet reaped) still answers kill(0); treat it as dead.
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
    const state = stat.slice(stat.lastIndexOf(")") + 2, stat.lastIndexOf(")") + 3);
    return state !== "Z" && state !== "X";
  } catch {
    return true;
  }
}

export function runningPid(pidFile: string): number | undefined {
  const pid = readPid(pidFile);
  return isAlive(pid) ? pid : undefined;
}

export interface StartDetachedOptions {
  command: string;
  args: string[];
  pidFile: string;
  logFile: string;
  cwd?: string;
  env?: NodeJS.ProcessEnv;
  /** Run as this user/group (only as root; e.g. PostgreSQL refuses to run as root). Supplementary groups are dropped. */
  uid?: number;
  gid?: number;
}

/** Start a long-running process detached from this one (own process group), output appended to logFile. */
export function startDetached(opts: StartDetachedOptions): number {
  ensureDir(dirname(opts.logFile));
  ensureDir(dirname(opts.pidFile));
  const fd = openSync(opts.logFile, "a");
  const spawnOpts: SpawnOptions = {
    cwd: opts.cwd,
    env: opts.env ?? process.env,
    detached: true,
    stdio: ["ignore", fd, fd],
    ...(opts.uid !== undefined ? { uid: opts.uid } : {}),
    ...(opts.gid !== undefined ? { gid: opts.gid } : {}),
  };
  const child = spawn(opts.command, opts.args, spawnOpts);
  closeSync(fd);
  if (child.pid === undefined) throw new Error(`could not start ${opts.command}`);
  child.unref();
  writeFileSync(opts.pidFile, `${child.pid}\n`);
  return child.pid;
}

export async function sleep(ms: number): Promise<void> {
  await new Promise((r) => setTimeout(r, ms));
}

/**
 * Poll `probe` until it resolves true, at most timeoutMs. `what` names the thing for the error,
 * `hint` says how to find out why (usually the log file).
 */
export async function waitFor(
  what: string,
  probe: () => Promise<boolean>,
  timeoutMs: number,
  hint = "",
  intervalMs = 250,
): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  let lastError: unknown;
  while (Date.now() < deadline) {
    try {
      if (await probe()) return;
    } catch (err) {
      lastError = err;
    }
    await sleep(intervalMs);
  }
  const why = lastError instanceof Error ? ` (last error: ${lastError.message})` : "";
  throw new Error(`${what} did not become ready within ${Math.round(timeoutMs / 1000)} s${why}${hint ? `; ${hint}` : ""}`);
}

export async function portOpen(host: string, port: number, timeoutMs = 1000): Promise<boolean> {
  return await new Promise((resolve) => {
    const sock = createConnection({ host, port });
    const done = (ok: boolean) => {
      sock.destroy();
      resolve(ok);
    };
    sock.setTimeout(timeoutMs, () => done(false));
    sock.once("connect", () => done(true));
    sock.once("error", () => done(false));
  });
}

/** Stop the process in pidFile: SIGTERM to its group, wait up to graceMs, then SIGKILL. */
export async function stopPid(pidFile: string, opts: { force?: boolean; graceMs?: number } = {}): Promise<void> {
  const pid = readPid(pidFile);
  if (pid !== undefined && isAlive(pid)) {
    const signal = opts.force ? "SIGKILL" : "SIGTERM";
    try {
      process.kill(-pid, signal);
    } catch {
      try {
        process.kill(pid, signal);
      } catch {
        /* already gone */
      }
    }
    const deadline = Date.now() + (opts.graceMs ?? 30_000);
    while (isAlive(pid) && Date.now() < deadline) await sleep(100);
    if (isAlive(pid)) {
      try {
        process.kill(-pid, "SIGKILL");
      } catch {
        /* gone */
      }
      const killDeadline = Date.now() + 5000;
      while (isAlive(pid) && Date.now() < killDeadline) await sleep(50);
    }
  }
  rmSync(pidFile, { force: true });
}

/** Run a command to completion (install/build steps); its output goes to logFile; throws with the log tail on failure. */
export function runLogged(
  command: string,
  args: string[],
  logFile: string,
  opts: { cwd?: string; env?: NodeJS.ProcessEnv; uid?: number; gid?: number } = {},
): void {
  ensureDir(dirname(logFile));
  const fd = openSync(logFile, "a");
  const res = spawnSync(command, args, {
    cwd: opts.cwd,
    env: opts.env ?? process.env,
    stdio: ["ignore", fd, fd],
    ...(opts.uid !== undefined ? { uid: opts.uid } : {}),
    ...(opts.gid !== undefined ? { gid: opts.gid } : {}),
  });
  closeSync(fd);
  if (res.status !== 0) {
    const tail = existsSync(logFile) ? readFileSync(logFile, "utf8").split("\n").slice(-25).join("\n") : "";
    throw new Error(`${command} ${args.join(" ")} failed (exit ${res.status ?? res.signal}); see ${logFile}:\n${tail}`);
  }
}

export function commandExists(cmd: string): boolean {
  return spawnSync("sh", ["-c", `command -v ${cmd}`], { stdio: "ignore" }).status === 0;
}

/** Install Debian packages if any of `probeCommands` is missing (we run as root on these machines). */
export function aptInstall(packages: string[], logFile: string): void {
  const sudo = process.getuid?.() === 0 ? [] : ["sudo"];
  const run = (args: string[]) =>
    runLogged(sudo.length ? "sudo" : args[0]!, sudo.length ? args : args.slice(1), logFile, {
      env: { ...process.env, DEBIAN_FRONTEND: "noninteractive" },
    });
  run(["apt-get", "update", "-qq"]);
  run(["apt-get", "install", "-y", "-qq", "--no-install-recommends", ...packages]);
}
