/** `type: kafka_tenant_topics` — the source: every tenant's topic, found by pattern and refreshed for live onboarding. */
import { z } from "zod";
import { defineComponent } from "../component-spec.ts";
import { boolean, duration, integer, size, text, topicPattern } from "../fields.ts";
import { formatDuration } from "../units.ts";

/** Broker defaults group.min.session.timeout.ms / group.max.session.timeout.ms: outside them the join fails. */
const BROKER_MIN_SESSION_MS = 6_000;
const BROKER_MAX_SESSION_MS = 1_800_000;

const config = z
  .strictObject({
    topic_pattern: topicPattern()
      .prefault("sensor-data-{tenant_id}")
      .describe("Topics to consume; `{tenant_id}` stands for a tenant's id (a lower-case UUID), so each tenant has its own topic."),
    consumer_group: text().prefault("millrace-ingest").describe("Kafka consumer group: workers sharing it split the partitions between them."),
    from_beginning: boolean()
      .prefault(true)
      .describe("Where a group with no committed offset starts: true = earliest (a newly onboarded tenant's backlog is kept), false = latest."),
    session_timeout: duration({ min: BROKER_MIN_SESSION_MS, max: BROKER_MAX_SESSION_MS })
      .prefault("30s")
      .describe(`A worker silent this long is dropped from the group and its partitions reassigned (the broker allows ${formatDuration(BROKER_MIN_SESSION_MS)}–${formatDuration(BROKER_MAX_SESSION_MS)}).`),
    heartbeat_interval: duration({ min: 100 })
      .prefault("3s")
      .describe("How often the worker tells the group coordinator it is alive; keep it at most a third of session_timeout."),
    max_bytes_per_partition: size({ min: 1024 }).prefault("1MiB").describe("Most bytes one fetch returns for one partition."),
    max_bytes: size({ min: 1024 }).prefault("10MiB").describe("Most bytes one fetch returns in all."),
    partitions_consumed_concurrently: integer({ min: 1, max: 64 })
      .prefault(4)
      .describe("Partitions processed at the same time by one worker (order is kept within a partition)."),
    topic_refresh: duration({ min: 1_000 })
      .prefault("10s")
      .describe("How often the worker looks for new tenant topics, so a new tenant is consumed without a restart."),
    lag_poll: duration({ min: 1_000, max: 300_000 })
      .prefault("5s")
      .describe("How often the worker reads the high watermarks of its assigned partitions (one request per topic), so lag and `/readyz` move even when no batch arrives (a consumer that stopped fetching)."),
    stall_after: duration({ min: 1_000 })
      .prefault("60s")
      .describe("A partition with lag whose next offset has not moved for this long makes `/readyz` answer 503 naming it."),
  })
  .superRefine((c, ctx) => {
    // Kafka's rule for consumers: heartbeats at most a third of the session timeout, so that one or
    // two lost heartbeats do not cost the member its partitions.
    if (c.heartbeat_interval * 3 > c.session_timeout) {
      ctx.addIssue({ code: "custom", path: ["heartbeat_interval"], message: `must be at most a third of session_timeout (${formatDuration(c.session_timeout)}), i.e. at most ${formatDuration(Math.floor(c.session_timeout / 3))}` });
    }
    if (c.lag_poll >= c.stall_after) ctx.addIssue({ code: "custom", path: ["lag_poll"], message: `must be shorter than stall_after (${formatDuration(c.stall_after)}), or a wedged partition is noticed late` });
    if (c.max_bytes_per_partition > c.max_bytes) ctx.addIssue({ code: "custom", path: ["max_bytes_per_partition"], message: "must not exceed max_bytes" });
  });

export const kafkaTenantTopics = defineComponent({
  type: "kafka_tenant_topics",
  kind: "source",
  summary:
    "Consumes every tenant's topic (`sensor-data-{tenant_id}`) in one consumer group, picking up new tenants' topics as they appear. The engine keeps each partition's offset in the database with the rows it stored (Kafka's committed offset trails it, as a hint).",
  config,
  framework: [],
  emits: "kafka_records",
  example: { id: "tenant_topics", entry: { topic_pattern: "sensor-data-{tenant_id}", consumer_group: "millrace-ingest", partitions_consumed_concurrently: 4 } },
  claims: (c) => [{ path: ["topic_pattern"], resource: `kafka_topic:${c.topic_pattern}`, label: `the topics ${c.topic_pattern}`, access: "read" }],
  plan: ({ id, config: c }) => ({
    id,
    type: "kafka_tenant_topics",
    topicPattern: c.topic_pattern,
    consumerGroup: c.consumer_group,
    fromBeginning: c.from_beginning,
    sessionTimeoutMs: c.session_timeout,
    heartbeatIntervalMs: c.heartbeat_interval,
    maxBytesPerPartition: c.max_bytes_per_partition,
    maxBytes: c.max_bytes,
    partitionsConsumedConcurrently: c.partitions_consumed_concurrently,
    topicRefreshMs: c.topic_refresh,
    lagPollMs: c.lag_poll,
    stallAfterMs: c.stall_after,
  }),
});
