/**
 * Builds the {@link StackContext} from the environment. Every setting has a default so that
 * `millrace stack up` works with nothing set; each can be overridden (documented in docs/stack.md).
 */
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

export function stackContext(env: NodeJS.ProcessEnv = process.env, log: (msg: string) => void = (m) => process.stderr.write(`${m}\n`)): StackContext {
  return {
    root: repoRoot,
    stateDir: resolve(env.MILLRACE_STACK_DIR ?? join(repoRoot, ".stack")),
    cacheDir: resolve(env.MILLRACE_CACHE_DIR ?? join(homedir(), ".cache", "millrace")),
    host: "127.0.0.1",
    ports: {
      kafka: intFromEnv(env, "MILLRACE_STACK_KAFKA_PORT", 19092),
      kafkaController: intFromEnv(env, "MILLRACE_STACK_KAFKA_CONTROLLER_PORT", 19093),
      registry: intFromEnv(env, "MILLRACE_STACK_REGISTRY_PORT", 18081),
      postgres: intFromEnv(env, "MILLRACE_STACK_POSTGRES_PORT", 15432),
      s3: intFromEnv(env, "MILLRACE_STACK_S3_PORT", 19000),
    },
    log,
  };
}
