/** Running in-process ingest workers against the real stack, isolated per test. */
import { randomBytes } from "node:crypto";
import { join } from "node:path";
import { requireEnv } from "../../lib/env.ts";
import { silentLogger } from "../../lib/log.ts";
import { IngestWorker, type WorkerSettings } from "../../pipelines/runtime/worker.ts";
import { loadTopology } from "../../pipelines/topology/index.ts";
import type { TopologyPlan } from "../../pipelines/topology/plan.ts";
import { repoRoot } from "../../stack/context.ts";

/** The repository's topology with a private consumer group and test-friendly timings. */
export function testPlan(overrides: { group?: string; maxRows?: number } = {}): TopologyPlan {
  const plan = loadTopology(join(repoRoot, "topology.yaml"));
  const clone = structuredClone(plan) as TopologyPlan;
  clone.source.consumerGroup = overrides.group ?? `test-${randomBytes(4).toString("hex")}`;
  clone.source.topicRefreshMs = 1000;
  clone.source.lagPollMs = 1000;
  clone.source.sessionTimeoutMs = 10_000;
  clone.source.heartbeatIntervalMs = 1000;
  for (const p of clone.processors) if (p.type === "validate_reading") p.tenantRefreshMs = 500;
  for (const s of clone.sinks) {
    if (s.type === "timescale_copy" && overrides.maxRows) s.batch.maxRows = overrides.maxRows;
    if (s.type === "kafka_dead_letter") s.publishIntervalMs = 200;
    if (s.type === "s3_parquet") s.idleFlushMs = 1000;
  }
  return clone;
}

export function testWorker(plan: TopologyPlan, pgUrl: string, topics: string[], extra: Partial<WorkerSettings> = {}): IngestWorker {
  const allowed = new Set(topics);
  return new IngestWorker(plan, {
    brokers: requireEnv("MILLRACE_KAFKA_BROKERS").split(","),
    registryUrl: requireEnv("MILLRACE_SCHEMA_REGISTRY_URL"),
    pgUrl,
    pgRole: "millrace_writer",
    log: silentLogger,
    topicFilter: (t) => allowed.has(t),
    ...extra,
  });
}
