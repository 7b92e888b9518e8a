/**
 * Builds the {@link StackContext} from the environment. Every setting has a default so that
 * `millrace stack up` works with nothing set; each can be overridden (README, "The local stack").
 * Ports: MILLRACE_STACK_*_PORT, else the ports the stack in this state directory was last brought
 * up on (`.stack/ports.json`, written by `stack up`), else the defaults — so `stack env|status|logs`
 * in a shell without the variables still describe the stack that runs, not another one.
 */
import { existsSync, readFileSync } from "node:fs";
import { homedir } from "node:os";
import { join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import type { StackContext } from "./types.ts";

export const repoRoot = resolve(fileURLToPath(new URL("..", import.meta.url)));

function intFromEnv(env: NodeJS.ProcessEnv, name: string, fallback: number): number {
  const raw = env[name];
  if (raw === undefined || raw === "") return fallback;
  const n = Number.parseInt(raw, 10);
  if (!Number.isInteger(n) || n <= 0 || n > 65535) throw new Error(`${name}=${raw} is not a valid TCP port`);
  return n;
}

export type StackPorts = StackContext["ports"];

/** The ports `stack up` last used for this state directory (empty when none or unreadable). */
export function savedPorts(stateDir: string): Partial<StackPorts> {
  const file = join(stateDir, "ports.json");
  if (!existsSync(file)) return {};
  try {
    const raw = JSON.parse(readFileSync(file, "utf8")) as Record<string, unknown>;
    const out: Partial<StackPorts> = {};
    for (const k of ["kafka", "kafkaController", "registry", "postgres", "s3"] as const) {
      const v = raw[k];
      if (typeof v === "number" && Number.isInteger(v) && v > 0 && v <= 65535) out[k] = v;
    }
    return out;
  } catch {
    return {};
  }
}

export function stackContext(env: NodeJS.ProcessEnv = process.env, log: (msg: string) => void = (m) => process.stderr.write(`${m}\n`)): StackContext {
  const stateDir = resolve(env.MILLRACE_STACK_DIR ?? join(repoRoot, ".stack"));
  const saved = savedPorts(stateDir);
  return {
    root: repoRoot,
    stateDir,
    cacheDir: resolve(env.MILLRACE_CACHE_DIR ?? join(homedir(), ".cache", "millrace")),
    host: "127.0.0.1",
    ports: {
      kafka: intFromEnv(env, "MILLRACE_STACK_KAFKA_PORT", saved.kafka ?? 19092),
      kafkaController: intFromEnv(env, "MILLRACE_STACK_KAFKA_CONTROLLER_PORT", saved.kafkaController ?? 19093),
      registry: intFromEnv(env, "MILLRACE_STACK_REGISTRY_PORT", saved.registry ?? 18081),
      postgres: intFromEnv(env, "MILLRACE_STACK_POSTGRES_PORT", saved.postgres ?? 15432),
      s3: intFromEnv(env, "MILLRACE_STACK_S3_PORT", saved.s3 ?? 19000),
    },
    log,
  };
}
