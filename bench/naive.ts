/**
 * The naive pipeline a typical user writes (a child process of the benchmark): kafkajs
 * `eachMessage`, decode with the schema registry client, one INSERT per row (autocommit), as the
 * database owner. Stops after --records or --seconds, whichever first; prints one JSON line.
 *
 *   node --import tsx bench/naive.ts --topics a,b --records N --seconds S --group G --pg-url URL
 */
import { parseArgs } from "node:util";
import { SchemaRegistry } from "@kafkajs/confluent-schema-registry";
import pg from "pg";
import { requireEnv } from "../lib/env.ts";
import { benchKafka } from "./kafka-util.ts";

const { values } = parseArgs({
  options: {
    topics: { type: "string" },
    records: { type: "string" },
    seconds: { type: "string" },
    group: { type: "string" },
    "pg-url": { type: "string" },
  },
});
const topics = (values.topics ?? "").split(",").filter(Boolean);
const want = Number(values.records);
const maxSeconds = Number(values.seconds);
if (topics.length === 0 || !(want > 0) || !(maxSeconds > 0) || !values.group || !values["pg-url"]) throw new Error("naive: --topics, --records, --seconds, --group, --pg-url are required");

interface Reading {
  time: number;
  tenant_id: string;
  equipment_id: string;
  facility_id: string;
  temperature: number | null;
  vibration: number | null;
  pressure: number | null;
}

const registry = new SchemaRegistry({ host: requireEnv("MILLRACE_SCHEMA_REGISTRY_URL") });
const db = new pg.Client({ connectionString: values["pg-url"], options: "-c TimeZone=UTC" });
await db.connect();
const kafka = benchKafka("millrace-bench-naive");
const consumer = kafka.consumer({ groupId: values.group });
let got = 0;
let first: number | undefined;
let last = 0;
let stop = false;
let done!: () => void;
const finished = new Promise<void>((r) => (done = r));
let cpuAtFirst = process.cpuUsage();
await consumer.connect();
await consumer.subscribe({ topics, fromBeginning: true });
await consumer.run({
  eachMessage: async ({ message }) => {
    if (stop) return;
    if (first === undefined) {
      first = performance.now();
      cpuAtFirst = process.cpuUsage();
    }
    const r = (await registry.decode(message.value!)) as Reading;
    await db.query(
      "INSERT INTO sensor_data_raw (time, tenant_id, equipment_id, facility_id, temperature, vibration, pressure) VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT DO NOTHING",
      [new Date(r.time), r.tenant_id, r.equipment_id, r.facility_id, r.temperature, r.vibration, r.pressure],
    );
    got++;
    last = performance.now();
    if (got >= want || (last - first) / 1000 >= maxSeconds) {
      stop = true;
      done();
    }
  },
});
const timer = setTimeout(() => done(), (maxSeconds + 60) * 1000);
await finished;
clearTimeout(timer);
const cpu = process.cpuUsage(cpuAtFirst);
await consumer.disconnect().catch(() => {});
await db.end();
const seconds = first === undefined ? 0 : (last - first) / 1000;
process.stdout.write(
  `${JSON.stringify({ records: got, seconds, recordsPerSecond: seconds > 0 ? got / seconds : 0, cpuSecondsPerMillion: got > 0 ? ((cpu.user + cpu.system) / 1e6 / got) * 1e6 : null })}\n`,
);
process.exit(0);
