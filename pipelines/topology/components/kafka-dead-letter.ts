/** `type: kafka_dead_letter` — every rejection, with its reason, to the tenant's dead-letter topic. */
import { z } from "zod";
import { defineComponent } from "../component-spec.ts";
import { duration, integer, topicPattern } from "../fields.ts";

const config = z.strictObject({
  topic_pattern: topicPattern()
    .prefault("dead-letters-{tenant_id}")
    .describe("Topic a rejection is published to; `{tenant_id}` is the tenant of the topic the record came from."),
  publish_interval: duration({ min: 1 }).prefault("1s").describe("Most time a rejection waits before it is published (rejections are sent in batches)."),
  max_batch: integer({ min: 1, max: 100_000 }).prefault(500).describe("Most rejections published in one request."),
});

export const kafkaDeadLetter = defineComponent({
  type: "kafka_dead_letter",
  kind: "sink",
  summary:
    "Publishes every rejection (the original record bytes, with stage, reason and source position in headers) to the tenant's dead-letter topic. Its `inputs` are the components whose rejections it receives: every processor and sink, so nothing is dropped. A rejection is recorded in the database outbox in the same transaction as its batch's rows and offsets, then published from there.",
  config,
  framework: ["retry"],
  accepts: "rejections",
  singleton: true,
  example: {
    id: "dead_letter",
    entry: { inputs: ["decode", "validate", "quota", "thresholds", "timescale", "parquet"], topic_pattern: "dead-letters-{tenant_id}", publish_interval: "1s", max_batch: 500 },
  },
  claims: (c) => [{ path: ["topic_pattern"], resource: `kafka_topic:${c.topic_pattern}`, label: `the topics ${c.topic_pattern}`, access: "write" }],
  plan: ({ id, config: c, retry }) => ({
    id,
    type: "kafka_dead_letter",
    topicPattern: c.topic_pattern,
    retry: retry!,
    publishIntervalMs: c.publish_interval,
    maxBatch: c.max_batch,
  }),
});
