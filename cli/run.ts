/** `millrace run`: one ingest worker replica (run N of them with the same consumer group to scale). */
import { InvalidArgumentError, type Command } from "commander";
import { optionalEnv, requireEnv } from "../lib/env.ts";
import { createLogger } from "../lib/log.ts";
import { startHealthServer } from "../pipelines/runtime/health.ts";
import { IngestWorker } from "../pipelines/runtime/worker.ts";
import { TopicPattern } from "../pipelines/runtime/tenant-directory.ts";
import { loadTopology } from "../pipelines/topology/index.ts";
import { earlySignals } from "../lib/early-signals.ts";
import { join } from "node:path";
import { repoRoot } from "../stack/context.ts";

export function workerSettingsFromEnv(log: ReturnType<typeof createLogger>) {
  const pgUrl = optionalEnv("MILLRACE_PG_URL") ?? requireEnv("MILLRACE_PG_ADMIN_URL");
  return {
    brokers: requireEnv("MILLRACE_KAFKA_BROKERS").split(",").map((s) => s.trim()),
    registryUrl: requireEnv("MILLRACE_SCHEMA_REGISTRY_URL"),
    pgUrl,
    // With only an admin URL (the local stack), act as the writer role like a real deployment.
    pgRole: optionalEnv("MILLRACE_PG_ROLE") ?? (optionalEnv("MILLRACE_PG_URL") ? undefined : "millrace_writer"),
    instanceId: optionalEnv("MILLRACE_INSTANCE_ID"),
    log,
  };
}

/** The HTTP endpoints' port: an integer 0–65535 (0: any free port; the one taken is logged). */
export function metricsPort(raw: string): number {
  const t = raw.trim();
  if (!/^\d+$/.test(t) || Number(t) > 65535) throw new InvalidArgumentError(`expected a port number 0–65535 (0: any free port), got ${JSON.stringify(raw)}`);
  return Number(t);
}

export const DEFAULT_METRICS_PORT = 9464;

/** --metrics-port if given, else MILLRACE_METRICS_PORT, else 9464; `from` says which, for messages. */
export function resolveMetricsPort(given: number | undefined, env: string | undefined): { port: number; from: string } {
  if (given !== undefined) return { port: given, from: "--metrics-port" };
  if (env === undefined) return { port: DEFAULT_METRICS_PORT, from: "the default" };
  try {
    return { port: metricsPort(env), from: "MILLRACE_METRICS_PORT" };
  } catch (err) {
    throw new Error(`MILLRACE_METRICS_PORT: ${(err as Error).message}`);
  }
}

/** startHealthServer, with a port in use (or not allowed) explained: which port, and how to choose another. */
export async function startHealthEndpoints(worker: IngestWorker, port: number, from: string): ReturnType<typeof startHealthServer> {
  try {
    return await startHealthServer(worker, port);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    const another = "choose another with --metrics-port <port> or MILLRACE_METRICS_PORT (0: any free port)";
    if (code === "EADDRINUSE") throw new Error(`port ${port} (${from}) for /metrics, /healthz and /readyz is already in use, e.g. by another worker: ${another}`);
    if (code === "EACCES") throw new Error(`port ${port} (${from}) for /metrics, /healthz and /readyz may not be opened by this user (ports below 1024 need privileges): ${another}`);
    throw err;
  }
}

export function registerRunCommand(program: Command): void {
  program
    .command("run")
    .description("run one ingest worker (a consumer-group member) until SIGTERM/SIGINT")
    .option("-t, --topology <file>", "topology file", join(repoRoot, "topology.yaml"))
    .option("--metrics-port <port>", `HTTP port for /metrics, /healthz, /readyz; 0: any free port (default: $MILLRACE_METRICS_PORT, else ${DEFAULT_METRICS_PORT})`, metricsPort)
    .option("--shutdown-timeout <seconds>", "give up on a clean shutdown after this long", "25")
    .option("--consumer-group <id>", "override the topology's consumer group")
    .option("--tenants <uuids>", "only consume these tenants' topics (comma-separated; default: every tenant topic)")
    .action(async (opts: { topology: string; metricsPort?: number; shutdownTimeout: string; consumerGroup?: string; tenants?: string }) => {
      const metrics = resolveMetricsPort(opts.metricsPort, optionalEnv("MILLRACE_METRICS_PORT"));
      const log = createLogger();
      let plan = loadTopology(opts.topology);
      if (opts.consumerGroup) plan = { ...plan, source: { ...plan.source, consumerGroup: opts.consumerGroup } };
      const settings = workerSettingsFromEnv(log);
      const pattern = new TopicPattern(plan.source.topicPattern);
      const only = opts.tenants ? new Set(opts.tenants.split(",").map((t) => pattern.topicFor(t.trim().toLowerCase()))) : undefined;
      const worker = new IngestWorker(plan, { ...settings, topicFilter: only ? (t) => only.has(t) : undefined });
      const health = await startHealthEndpoints(worker, metrics.port, metrics.from);
      log.info({ port: health.port, instance: worker.instanceId }, "metrics and health endpoints listening");
      let stopping = false;
      const shutdown = (signal: string) => {
        if (stopping) return;
        stopping = true;
        log.info({ signal }, "stopping: finishing the batch in flight, committing, flushing dead letters");
        const timer = setTimeout(() => {
          log.error("clean shutdown took too long; exiting (uncommitted work will be replayed, nothing is lost)");
          process.exit(1);
        }, Number(opts.shutdownTimeout) * 1000);
        timer.unref();
        void worker
          .stop()
          .then(() => health.close())
          .then(() => process.exit(0));
      };
      process.on("SIGTERM", () => shutdown("SIGTERM"));
      process.on("SIGINT", () => shutdown("SIGINT"));
      const early = earlySignals.takeOver();
      if (early) {
        log.info({ signal: early }, "stop requested during start-up; exiting before consuming anything");
        await health.close();
        process.exit(0);
      }
      try {
        await worker.start();
      } catch (err) {
        if (stopping) return; // a stop during start-up: shutdown() exits when the worker has stopped
        throw err;
      }
      if (!stopping) log.info({ group: plan.source.consumerGroup }, "worker running");
    });
}
