/**
 * Orchestrates the local stack: `up` (install → start → wait until each service answers → write
 * the connection settings), `down`, `status`, `env`, `logs`.
 */
import { existsSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { savedPorts } from "./context.ts";
import { ensureDir } from "./process.ts";
import { services } from "./services.ts";
import type { ServiceStatus, StackContext, StackService } from "./types.ts";

export const READY_TIMEOUT_MS = 180_000;

function pick(names: string[] | undefined): StackService[] {
  if (!names || names.length === 0) return services;
  const unknown = names.filter((n) => !services.some((s) => s.name === n));
  if (unknown.length > 0) {
    throw new Error(`unknown stack service(s): ${unknown.join(", ")}; known: ${services.map((s) => s.name).join(", ")}`);
  }
  return services.filter((s) => names.includes(s.name));
}

export function envFile(ctx: StackContext): string {
  return join(ctx.stateDir, "env");
}

export function stackEnv(ctx: StackContext): Record<string, string> {
  const env: Record<string, string> = {};
  for (const s of services) Object.assign(env, s.env(ctx));
  return env;
}

export function formatEnv(env: Record<string, string>): string {
  return Object.entries(env)
    .map(([k, v]) => `export ${k}='${v.replaceAll("'", "'\\''")}'`)
    .join("\n");
}

export async function stackUp(ctx: StackContext, names?: string[]): Promise<Record<string, string>> {
  ensureDir(ctx.stateDir);
  const chosen = pick(names);
  // Services already running here listen on the ports they were started with: bringing the stack
  // "up" on other ports would find their pids alive and could take another stack's ports for them.
  const saved = savedPorts(ctx.stateDir);
  const moved = (Object.keys(saved) as Array<keyof typeof saved>).filter((k) => saved[k] !== ctx.ports[k]);
  if (moved.length > 0) {
    const running = (await Promise.all(services.map(async (s) => ((await s.status(ctx)).running ? s.name : undefined)))).filter((n) => n !== undefined);
    if (running.length > 0) {
      throw new Error(
        `the stack in ${ctx.stateDir} runs on other ports (${moved.map((k) => `${k} ${saved[k]}, not ${ctx.ports[k]}`).join("; ")}) and ${running.join(", ")} ${running.length === 1 ? "is" : "are"} running: ` +
          "unset the MILLRACE_STACK_*_PORT variables to use it as it is, or stop it first (./millrace stack down) to move it",
      );
    }
  }
  writeFileSync(join(ctx.stateDir, "ports.json"), `${JSON.stringify(ctx.ports)}\n`);
  for (const s of chosen) {
    const t0 = Date.now();
    ctx.log(`stack: ${s.name}: installing (cached after the first time)…`);
    await s.install(ctx);
    ctx.log(`stack: ${s.name}: starting…`);
    await s.start(ctx);
    await s.waitReady(ctx, READY_TIMEOUT_MS);
    ctx.log(`stack: ${s.name}: ready (${((Date.now() - t0) / 1000).toFixed(1)} s)`);
  }
  const env = stackEnv(ctx);
  writeFileSync(envFile(ctx), `${formatEnv(env)}\n`, { mode: 0o600 });
  return env;
}

export async function stackDown(ctx: StackContext, opts: { force?: boolean; names?: string[] } = {}): Promise<void> {
  // Stop in reverse start order: clients of a service go before the service.
  for (const s of [...pick(opts.names)].reverse()) {
    ctx.log(`stack: ${s.name}: stopping${opts.force ? " (SIGKILL)" : ""}…`);
    await s.stop(ctx, { force: opts.force });
  }
}

export async function stackStatus(ctx: StackContext): Promise<ServiceStatus[]> {
  return await Promise.all(services.map((s) => s.status(ctx)));
}

export function stackLogs(ctx: StackContext, name: string, lines: number): string {
  const [s] = pick([name]);
  const file = s!.logFile(ctx);
  if (!existsSync(file)) return `(no log yet at ${file})`;
  return readFileSync(file, "utf8").split("\n").slice(-lines).join("\n");
}
