import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { repoRoot } from "../../stack/context.ts";
import { describeTopology } from "./describe.ts";
import { loadTopology } from "./loader.ts";
import type { TopologyPlan } from "./plan.ts";

describe("describeTopology", () => {
  it("describes the repository's topology: nodes, settings, successors and predecessors", () => {
    expect(describeTopology(loadTopology(join(repoRoot, "topology.yaml")))).toBe(
      `Topologies:
   Sub-topology: 0
    Source: tenant_topics (kafka_tenant_topics)
      topic_pattern: sensor-data-{tenant_id}
      consumer_group: millrace-ingest
      from_beginning: true
      session_timeout: 30s
      heartbeat_interval: 3s
      max_bytes_per_partition: 1MiB
      max_bytes: 10MiB
      partitions_consumed_concurrently: 4
      topic_refresh: 10s
      lag_poll: 5s
      stall_after: 1m
      --> decode
    Processor: decode (avro_decode)
      schema: schemas/sensor-reading.avsc
      unknown_schema_ttl: 1m
      --> validate
      rejections --> dead_letter
      <-- tenant_topics
    Processor: validate (validate_reading)
      max_future_skew: 5m
      tenant_refresh: 5s
      --> quota
      rejections --> dead_letter
      <-- decode
    Processor: quota (equipment_quota)
      rejection_ttl: 5s
      warn_percent: 80
      rate_limits: { basic: { per_second: 1000, burst: 20000 }, professional: { per_second: 10000, burst: 200000 }, enterprise: null }
      --> thresholds
      rejections --> dead_letter
      <-- validate
    Processor: thresholds (thresholds)
      rules_refresh: 10s
      rules: [{ id: vibration_high, name: Vibration high, measure: vibration, comparison: above, levels: [{ severity: warning, threshold: 1.5 }, { severity: major, threshold: 2.5 }, { severity: critical, threshold: 4 }], sustain: 10s, deadband: 0.2, clear_sustain: 0ms }, { id: temperature_high, name: Temperature high, measure: temperature, comparison: above, levels: [{ severity: warning, threshold: 95 }, { severity: major, threshold: 110 }, { severity: critical, threshold: 125 }], sustain: 30s, deadband: 2, clear_sustain: 0ms }]
      --> timescale, parquet
      rejections --> dead_letter
      <-- quota
    Sink: timescale (timescale_copy)
      batch: { max_rows: 5000, max_bytes: 4MiB }
      retry: { initial_delay: 100ms, max_delay: 10s, factor: 2, max_retries: unlimited }
      pool_size: 4
      statement_timeout: 1m
      partition_maintenance: 1h
      rejections --> dead_letter
      <-- thresholds
    Sink: parquet (s3_parquet)
      retry: { initial_delay: 200ms, max_delay: 30s, factor: 2, max_retries: unlimited }
      max_rows: 100000
      max_bytes: 64MiB
      max_span: 1h
      idle_flush: 1m
      row_group_rows: 4096
      max_buffered_bytes: 256MiB
      max_pending_bytes: 256MiB
      max_memory_bytes: 1GiB
      multipart_threshold: 16MiB
      shared_bucket: millrace-shared
      key_prefix: 
      rejections --> dead_letter
      <-- thresholds
    Sink: dead_letter (kafka_dead_letter)
      topic_pattern: dead-letters-{tenant_id}
      retry: { initial_delay: 100ms, max_delay: 10s, factor: 2, max_retries: unlimited }
      publish_interval: 1s
      max_batch: 500
      <-- decode, validate, quota, thresholds, timescale, parquet (rejections)
`,
    );
  });

  it("does not depend on where the repository is checked out", () => {
    const plan = loadTopology(join(repoRoot, "topology.yaml"));
    const moved = structuredClone(plan) as TopologyPlan;
    moved.file = "/elsewhere/topology.yaml";
    for (const p of moved.processors) if (p.type === "avro_decode") p.schemaFile = "/elsewhere/schemas/sensor-reading.avsc";
    expect(describeTopology(moved)).toBe(describeTopology(plan));
  });

  it("redacts secrets: an { env: NAME } reference prints as <env:NAME>, a secret-named literal as <redacted>", () => {
    const plan = structuredClone(loadTopology(join(repoRoot, "topology.yaml"))) as TopologyPlan;
    // No component has a secret yet; a future one (e.g. an S3 sink's credentials) would carry references like these.
    Object.assign(plan.sinks[0]!, { accessKey: { env: "MILLRACE_S3_ACCESS_KEY" }, secretAccessKey: "hunter2", auth: { password: { env: "PGPASSWORD" } } });
    const text = describeTopology(plan);
    expect(text).toContain("      access_key: <env:MILLRACE_S3_ACCESS_KEY>\n");
    expect(text).toContain("      secret_access_key: <redacted>\n");
    expect(text).toContain("      auth: { password: <env:PGPASSWORD> }\n");
    expect(text).not.toContain("hunter2");
  });
});
