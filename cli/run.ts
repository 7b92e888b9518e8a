/** `millrace run`: one ingest worker replica (run N of them with the same consumer group to scale). */
import type { Command } from "commander";
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

export function registerRunCommand(program: Command): void {
  program
    .command("run")
    .description("run one ingest worker (a consumer-group member) until SIGTERM/SIGINT")
    .option("-t, --topology <file>", "topology file", join(repoRoot, "topology.yaml"))
    .option("--metrics-port <port>", "HTTP port for /metrics, /healthz, /readyz ($MILLRACE_METRICS_PORT)", optionalEnv("MILLRACE_METRICS_PORT") ?? "9464")
    .option("--shutdown-timeout <seconds>", "give up on a clean shutdown after this long", "25")
    .option("--consumer-group <id>", "override the topology's consumer group")
    .option("--tenants <uuids>", "only consume these tenants' topics (comma-separated; default: every tenant topic)")
    .action(async (opts: { topology: string; metricsPort: string; shutdownTimeout: string; consumerGroup?: string; tenants?: string }) => {
      const log = createLogger();
      let plan = loadTopology(opts.topology);
      if (opts.consumerGroup) plan = { ...plan, source: { ...plan.source, consumerGroup: opts.consumerGroup } };
      const settings = workerSettingsFromEnv(log);
      const pattern = new TopicPattern(plan.source.topicPattern);
      const only = opts.tenants ? new Set(opts.tenants.split(",").map((t) => pattern.topicFor(t.trim().toLowerCase()))) : undefined;
      const worker = new IngestWorker(plan, { ...settings, topicFilter: only ? (t) => only.has(t) : undefined });
      const health = await startHealthServer(worker, Number.parseInt(opts.metricsPort, 10));
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
