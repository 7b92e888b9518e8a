import { readFileSync } from "node:fs";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { repoRoot } from "../../stack/context.ts";
import { loadTopology, parseTopology } from "./loader.ts";
import { TopologyError, type TopologyPlan, type TopologyProblem } from "./plan.ts";

const FIXTURES = join(repoRoot, "test", "fixtures", "topology");
const SCHEMA = join(repoRoot, "schemas", "sensor-reading.avsc");

/** The problems loading a file reports; fails the test if it loads. */
function problems(file: string): TopologyProblem[] {
  try {
    loadTopology(file);
  } catch (err) {
    if (err instanceof TopologyError) return err.problems;
    throw err;
  }
  throw new Error(`${file} loaded without problems`);
}

type Expected = [path: string, line: number, message: string];

/** Each bad fixture with exactly the problems it must report: path, line, and a part of the message. */
const BAD_FIXTURES: Record<string, Expected[]> = {
  "unknown-type.yaml": [["processors.decode.type", 7, "unknown processor type `avro_decoder` (did you mean `avro_decode`?)"]],
  "wrong-section.yaml": [["processors.db.type", 14, "timescale_copy is a sink: it belongs under `sinks:`"]],
  "unknown-input.yaml": [
    ["processors.validate.inputs[0]", 12, "unknown input `decod` (did you mean `decode`?)"],
    ["sinks.dlq.inputs[3]", 19, "`db` is listed twice"],
  ],
  "duplicate-id.yaml": [["sinks.decode", 17, "id `decode` is already used by processors.decode"]],
  "no-inputs.yaml": [
    ["sources.in.inputs", 5, "a source takes no inputs"],
    ["processors.decode.inputs", 7, "a processor needs `inputs:`"],
    ["sinks.db.inputs", 16, "a sink needs at least one input"],
  ],
  "cycle.yaml": [
    ["processors.decode.inputs[0]", 8, "cycle: decode → validate → decode"],
    ["sinks.dlq.inputs[3]", 19, "`dlq` lists itself as an input (a cycle)"],
  ],
  "two-sources.yaml": [["sources.more", 5, "v1 supports exactly one source; `in` is already the source"]],
  "fan-out.yaml": [["processors.validate.inputs[0]", 12, "v1 supports a linear processor chain: `in` already feeds `decode`"]],
  "fan-in.yaml": [["processors.validate.inputs", 12, "v1 supports a linear processor chain: a processor takes exactly one input, not 2"]],
  "out-of-order.yaml": [
    ["processors.validate.inputs[0]", 9, "validate_reading takes decoded readings, but `in` (kafka_tenant_topics) emits Kafka records"],
    ["processors.decode.inputs[0]", 12, "avro_decode takes Kafka records (Confluent wire-format Avro bytes), but `validate` (validate_reading) emits validated readings"],
    ["sinks.db.inputs[0]", 17, "timescale_copy takes validated readings, but `decode` (avro_decode) emits decoded readings"],
  ],
  "sink-not-last.yaml": [["sinks.db.inputs[0]", 16, "a timescale_copy sink takes its input from the last processor, `validate`"]],
  "singletons-and-resources.yaml": [
    ["sinks.db_again", 17, "at most one timescale_copy per topology; `db` is already one"],
    ["sinks.dlq_again", 23, "at most one kafka_dead_letter per topology; `dlq` is already one"],
    ["sinks.dlq_again.topic_pattern", 23, "`dlq_again` and `dlq` both write to the topics dead-letters-{tenant_id}"],
  ],
  "dead-letter.yaml": [
    ["sinks.dlq.inputs", 20, "receives the rejections of every processor and sink, so none is dropped: add `db`"],
    ["sinks.dlq.inputs[0]", 20, "`in` is a source: it rejects nothing"],
    ["sinks.dlq.topic_pattern", 21, "`dlq` would write to the topics sensor-data-{tenant_id}, which `in` reads (a loop)"],
  ],
  "no-dead-letter.yaml": [["sinks", 14, "the topology needs a kafka_dead_letter sink"]],
  "topic-patterns.yaml": [
    ["sources.in.topic_pattern", 5, "must contain {tenant_id} exactly once (found none)"],
    ["sinks.dlq.topic_pattern", 21, "must contain {tenant_id} exactly once (found 2 times)"],
    ["sinks.dlq.topic_pattern", 21, 'contains " ", "/": Kafka topic names allow only'],
  ],
  "missing-schema.yaml": [["processors.decode.schema", 9, `schema file ${join(FIXTURES, "schemas", "no-such-schema.avsc")} does not exist`]],
  "version.yaml": [["version", 1, "unsupported version 2: this millrace reads version 1"]],
  "syntax-error.yaml": [
    ["(yaml)", 5, "Map keys must be unique"],
    ["(yaml)", 8, "Flow sequence in block collection must be sufficiently indented and end with a ]"],
    ["(yaml)", 8, "Flow map in block collection must be sufficiently indented and end with a }"],
  ],
  "settings.yaml": [
    ["sources.in.heartbeat_interval", 7, "must be at most a third of session_timeout (10s), i.e. at most 3333ms"],
    ["sources.in.max_bytes_per_partition", 8, "must not exceed max_bytes"],
    ["sources.in.lag_poll", 10, "must be shorter than stall_after (10s), or a wedged partition is noticed late"],
    ["processors.decode.retry", 17, "unknown setting `retry` for avro_decode: only timescale_copy, s3_parquet, kafka_dead_letter take the engine's `retry` settings"],
    ["sinks.db.retry.max_delay", 27, "must be at least initial_delay"],
  ],
  // Several problems at once: all reported, in file order, none hiding another.
  "many-problems.yaml": [
    ["version", 2, "missing `version: 1`"],
    ["sources.tenant_topics.session_timeout", 5, "30 has no unit: expected a duration like 100ms, 30s, 5m or 1h"],
    ["sources.tenant_topics.max_bytes", 7, '"4MB" is not a size like 512KiB, 4MiB or a plain number of bytes'],
    ["sources.tenant_topics.partitions_consumed_concurent", 8, "unknown setting `partitions_consumed_concurent` for kafka_tenant_topics (did you mean `partitions_consumed_concurrently`?)"],
    ["processors.decode.unknown_schema_ttl", 14, '"soon" is not a duration'],
    ["processors.Validate", 15, "component id `Validate` must be snake_case"],
    ["processors.Validate.type", 15, "missing `type`: one of avro_decode, validate_reading"],
    ["sinks.timescale.inputs[0]", 20, "unknown input `validat` (did you mean `Validate`?)"],
    ["sinks.timescale.batch.max_rows", 22, "must be at least 1"],
    ["sinks.timescale.batch.max_byte", 23, "unknown setting `max_byte` for batch (did you mean `max_bytes`?)"],
    ["sinks.timescale.retry.max_retries", 27, "expected a non-negative integer or `unlimited`"],
    ["sinks.timescale.pool_size", 28, "expected an integer"],
    ["sinks.dead_letter.inputs", 31, "so none is dropped: add `Validate`"],
    ["sinks.dead_letter.batch", 32, "unknown setting `batch` for kafka_dead_letter: only timescale_copy take the engine's `batch` settings"],
  ],
};

describe("loadTopology: bad fixtures report exactly their problems", () => {
  for (const [fixture, expected] of Object.entries(BAD_FIXTURES)) {
    it(fixture, () => {
      const got = problems(join(FIXTURES, fixture)).map((p) => [p.path, p.line, p.message]);
      expect(got).toEqual(expected.map(([path, line, message]) => [path, line, expect.stringContaining(message)]));
    });
  }

  it("points an unknown key at the key and a missing key at its parent", () => {
    const ps = problems(join(FIXTURES, "many-problems.yaml"));
    const at = (path: string) => ps.find((p) => p.path === path)!;
    // `    partitions_consumed_concurent: 4`: the key's first column
    expect(at("sources.tenant_topics.partitions_consumed_concurent")).toMatchObject({ line: 8, column: 5 });
    // `  Validate:` has no `type:`: the problem sits on the component's key
    expect(at("processors.Validate.type")).toMatchObject({ line: 15, column: 3 });
    // a bad value: the value's first column
    expect(at("sinks.timescale.pool_size")).toMatchObject({ line: 28, column: 16 });
  });

  it("throws one TopologyError whose message lists every problem with line:col", () => {
    const file = join(FIXTURES, "unknown-input.yaml");
    expect(() => loadTopology(file)).toThrow(
      `${file}: 2 problems:\n` +
        "  12:14 processors.validate.inputs[0]: unknown input `decod` (did you mean `decode`?)\n" +
        "  19:36 sinks.dlq.inputs[3]: `db` is listed twice",
    );
  });

  it("reports a file it cannot read, an empty document and a document that is not a mapping", () => {
    expect(problems(join(FIXTURES, "no-such-file.yaml"))).toEqual([{ path: "(file)", message: expect.stringContaining("cannot read") }]);
    for (const text of ["", "- a list\n"]) {
      let caught: unknown;
      try {
        parseTopology(text, join(FIXTURES, "inline.yaml"));
      } catch (err) {
        caught = err;
      }
      expect((caught as TopologyError).problems).toEqual([
        { path: "(document)", line: 1, column: 1, message: "expected a mapping with `version`, `sources`, `processors` and `sinks`" },
      ]);
    }
  });

  it("refuses a shared_bucket that S3 would refuse, at its line", () => {
    const text = readFileSync(join(repoRoot, "topology.yaml"), "utf8").replace("shared_bucket: millrace-shared", "shared_bucket: Millrace_Shared");
    const line = text.split("\n").findIndex((l) => l.includes("Millrace_Shared")) + 1;
    let caught: unknown;
    try {
      parseTopology(text, join(repoRoot, "topology.yaml"));
    } catch (err) {
      caught = err;
    }
    expect((caught as TopologyError).problems).toEqual([
      { path: "sinks.parquet.shared_bucket", line, column: expect.any(Number), message: expect.stringContaining('bucket "Millrace_Shared" is not a valid S3 bucket name') },
    ]);
  });

  it("reports missing sections", () => {
    expect(() => parseTopology("version: 1\n", join(FIXTURES, "inline.yaml"))).toThrow(
      /1:1 sources: v1 needs exactly one source; there is none\n {2}1:1 sinks: a topology needs at least one sink$/,
    );
  });
});

describe("loadTopology: good topologies", () => {
  const retry = { initialDelayMs: 100, maxDelayMs: 10_000, factor: 2, maxRetries: Number.POSITIVE_INFINITY };

  it("loads the repository's topology.yaml into the expected plan", () => {
    const file = join(repoRoot, "topology.yaml");
    const expected: TopologyPlan = {
      file,
      source: {
        id: "tenant_topics",
        type: "kafka_tenant_topics",
        topicPattern: "sensor-data-{tenant_id}",
        consumerGroup: "millrace-ingest",
        fromBeginning: true,
        sessionTimeoutMs: 30_000,
        heartbeatIntervalMs: 3_000,
        maxBytesPerPartition: 1024 ** 2,
        maxBytes: 10 * 1024 ** 2,
        partitionsConsumedConcurrently: 4,
        topicRefreshMs: 10_000,
        lagPollMs: 5_000,
        stallAfterMs: 60_000,
      },
      processors: [
        { id: "decode", type: "avro_decode", input: "tenant_topics", schemaFile: SCHEMA, unknownSchemaTtlMs: 60_000 },
        { id: "validate", type: "validate_reading", input: "decode", maxFutureSkewMs: 300_000, tenantRefreshMs: 5_000 },
        {
          id: "quota",
          type: "equipment_quota",
          input: "validate",
          rejectionTtlMs: 5_000,
          warnPercent: 80,
          rateLimits: { basic: { perSecond: 1_000, burst: 20_000 }, professional: { perSecond: 10_000, burst: 200_000 }, enterprise: null },
        },
        {
          id: "thresholds",
          type: "thresholds",
          input: "quota",
          rulesRefreshMs: 10_000,
          rules: [
            {
              id: "vibration_high",
              name: "Vibration high",
              measure: "vibration",
              comparison: "above",
              levels: [
                { severity: "warning", threshold: 1.5 },
                { severity: "major", threshold: 2.5 },
                { severity: "critical", threshold: 4 },
              ],
              sustainMs: 10_000,
              deadband: 0.2,
              clearSustainMs: 0,
            },
            {
              id: "temperature_high",
              name: "Temperature high",
              measure: "temperature",
              comparison: "above",
              levels: [
                { severity: "warning", threshold: 95 },
                { severity: "major", threshold: 110 },
                { severity: "critical", threshold: 125 },
              ],
              sustainMs: 30_000,
              deadband: 2,
              clearSustainMs: 0,
            },
          ],
        },
      ],
      sinks: [
        {
          id: "timescale",
          type: "timescale_copy",
          input: "thresholds",
          batch: { maxRows: 5000, maxBytes: 4 * 1024 ** 2 },
          retry,
          poolSize: 4,
          statementTimeoutMs: 60_000,
          partitionMaintenanceMs: 3_600_000,
        },
        {
          id: "parquet",
          type: "s3_parquet",
          input: "thresholds",
          retry: { initialDelayMs: 200, maxDelayMs: 30_000, factor: 2, maxRetries: Infinity },
          maxRows: 100_000,
          maxBytes: 64 * 1024 ** 2,
          maxSpanMs: 3_600_000,
          idleFlushMs: 60_000,
          rowGroupRows: 4096,
          maxBufferedBytes: 256 * 1024 ** 2,
          maxPendingBytes: 256 * 1024 ** 2,
          maxMemoryBytes: 1024 ** 3,
          multipartThreshold: 16 * 1024 ** 2,
          sharedBucket: "millrace-shared",
          keyPrefix: "",
        },
        { id: "dead_letter", type: "kafka_dead_letter", topicPattern: "dead-letters-{tenant_id}", retry, publishIntervalMs: 1_000, maxBatch: 500 },
      ],
    };
    expect(loadTopology(file)).toEqual(expected);
  });

  it("fills every setting left out from its default", () => {
    const plan = loadTopology(join(FIXTURES, "minimal.yaml"));
    const repo = loadTopology(join(repoRoot, "topology.yaml"));
    // topology.yaml spells out the defaults, so only ids and wiring differ.
    expect(plan.source).toEqual({ ...repo.source, id: "in" });
    expect(plan.processors).toEqual([
      { ...repo.processors[0], input: "in" },
      { ...repo.processors[1], input: "decode" },
    ]);
    expect(plan.sinks).toEqual([
      { ...repo.sinks[0], id: "db", input: "validate" },
      { ...repo.sinks.find((s) => s.type === "kafka_dead_letter")!, id: "dlq" },
    ]);
  });

  it("returns a deep-frozen plan", () => {
    const plan = loadTopology(join(repoRoot, "topology.yaml"));
    const timescale = plan.sinks.find((s) => s.type === "timescale_copy")!;
    expect(Object.isFrozen(plan)).toBe(true);
    expect(Object.isFrozen(plan.processors)).toBe(true);
    expect(Object.isFrozen(timescale.retry)).toBe(true);
    expect(() => {
      (timescale.batch as { maxRows: number }).maxRows = 1;
    }).toThrow(TypeError);
  });

  it("accepts units written every allowed way", () => {
    const text = (ttl: string, bytes: string) =>
      `version: 1
sources: { in: { type: kafka_tenant_topics, max_bytes: ${bytes} } }
processors:
  decode: { type: avro_decode, inputs: [in], schema: ${SCHEMA}, unknown_schema_ttl: ${ttl} }
  validate: { type: validate_reading, inputs: [decode] }
sinks:
  db: { type: timescale_copy, inputs: [validate], retry: { max_retries: 0 } }
  dlq: { type: kafka_dead_letter, inputs: [decode, validate, db] }
`;
    const plan = parseTopology(text("1.5s", "10485760"), join(FIXTURES, "inline.yaml"));
    expect(plan.processors[0]).toMatchObject({ unknownSchemaTtlMs: 1500 });
    expect(plan.source.maxBytes).toBe(10 * 1024 ** 2);
    expect(plan.sinks[0]).toMatchObject({ retry: { maxRetries: 0 } });
    expect(parseTopology(text("1h", "16MiB"), join(FIXTURES, "inline.yaml")).source.maxBytes).toBe(16 * 1024 ** 2);
    // 512KiB is a fine size, but below the default max_bytes_per_partition (1MiB): said so, at the component.
    expect(() => parseTopology(text("1h", "512KiB"), join(FIXTURES, "inline.yaml"))).toThrow(
      "2:12 sources.in.max_bytes_per_partition: must not exceed max_bytes (`max_bytes_per_partition` is not set, so its default applies)",
    );
  });
});
