/**
 * Kafka read ceiling for Node: a no-op kafkajs consumer draining the same topics with the worker's
 * fetch settings (a child process of the benchmark). Counts records from the group join (when
 * fetching starts) to the last batch; prints one JSON line. Bounded by --timeout-ms.
 *
 *   node --import tsx bench/drain.ts --topics a,b --records N --group G [--timeout-ms 600000]
 */
import { parseArgs } from "node:util";
import { benchKafka } from "./kafka-util.ts";

const { values } = parseArgs({
  options: {
    topics: { type: "string" },
    records: { type: "string" },
    group: { type: "string" },
    "timeout-ms": { type: "string", default: "600000" },
    "max-bytes-per-partition": { type: "string", default: String(1 << 20) },
    "max-bytes": { type: "string", default: String(10 << 20) },
    concurrency: { type: "string", default: "4" },
  },
});
const topics = (values.topics ?? "").split(",").filter(Boolean);
const want = Number(values.records);
if (topics.length === 0 || !(want > 0) || !values.group) throw new Error("drain: --topics, --records and --group are required");

const kafka = benchKafka("millrace-bench-drain");
const consumer = kafka.consumer({
  groupId: values.group,
  maxBytesPerPartition: Number(values["max-bytes-per-partition"]),
  maxBytes: Number(values["max-bytes"]),
  allowAutoTopicCreation: false,
});
let got = 0;
let bytes = 0;
let first: number | undefined;
let last = 0;
let done!: () => void;
const finished = new Promise<void>((r) => (done = r));
const c0 = process.cpuUsage();
await consumer.connect();
// Timed from the group join (fetching starts then), like Kafka's tool's fetch time and the worker's run.
let joined: number | undefined;
let cpuAtFirst = c0;
consumer.on(consumer.events.GROUP_JOIN, () => {
  joined ??= performance.now();
  cpuAtFirst = process.cpuUsage();
});
await consumer.subscribe({ topics, fromBeginning: true });
await consumer.run({
  autoCommit: false,
  partitionsConsumedConcurrently: Number(values.concurrency),
  eachBatch: async ({ batch }) => {
    first ??= joined ?? performance.now();
    got += batch.messages.length;
    for (const m of batch.messages) bytes += m.value?.length ?? 0;
    last = performance.now();
    if (got >= want) done();
  },
});
const timer = setTimeout(() => done(), Number(values["timeout-ms"]));
await finished;
clearTimeout(timer);
const cpu = process.cpuUsage(cpuAtFirst);
await consumer.disconnect().catch(() => {});
const seconds = first === undefined ? 0 : (last - first) / 1000;
process.stdout.write(
  `${JSON.stringify({ records: got, complete: got >= want, bytes, seconds, recordsPerSecond: seconds > 0 ? got / seconds : 0, cpuSecondsPerMillion: got > 0 ? ((cpu.user + cpu.system) / 1e6 / got) * 1e6 : null })}\n`,
);
process.exit(0);
