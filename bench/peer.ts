/**
 * The peer a user would pick instead: Kafka Connect (standalone mode) with Debezium's JDBC sink
 * connector writing the same rows into PostgreSQL.
 *
 * Input format: Confluent's AvroConverter is not on Maven Central, and no converter there reads the
 * Confluent Avro wire format, so the same readings are produced — same keys, same partition count,
 * 32-bit floats as Avro has them — in Connect's own JSON-with-schema format (JsonConverter,
 * schemas.enable=true) to separate topics. The results say so.
 *
 * Tuning, in fairness: tasks.max = partitions; batch.size and consumer max.poll.records = the sink's
 * 5000 rows; PostgreSQL's UNNEST batch insert enabled; reWriteBatchedInserts on the JDBC URL; offsets
 * flushed every second (so completion is seen promptly). Target: a plain table with the same columns
 * and primary key as sensor_data_raw, written as the superuser (no RLS, no partition routing — both
 * in the peer's favour).
 *
 * Measured: from the first partition assignment in Connect's log to the moment the connector's
 * committed consumer offsets cover every record; CPU of the Connect JVM over the same interval.
 */
import { existsSync, mkdirSync, readFileSync, renameSync, rmSync, writeFileSync, chmodSync } from "node:fs";
import { join } from "node:path";
import { spawnSync } from "node:child_process";
import { CompressionTypes, type Admin, type Kafka } from "kafkajs";
import { requireEnv } from "../lib/env.ts";
import { javaClientProperties, kafkaAuthFromEnv } from "../lib/kafka-client.ts";
import { stackContext } from "../stack/context.ts";
import { KAFKA_VERSION } from "../stack/kafka.ts";
import type { BenchDatabase } from "./db.ts";
import { fixtureReadings, type Fixture } from "./fixtures.ts";
import { cpuBetween, markCpu, stackPid } from "./procstat.ts";
import { freePort, sleep, spawnLogged, waitExit } from "./spawn.ts";
import { createTopicsAndWait } from "../lib/kafka-topics.ts";

export const DEBEZIUM_VERSION = "3.6.0.Final";
/** Bumped when bench/connect/pom.xml changes what it resolves (a new cache directory). */
const POM_REVISION = "2";
const POM = join(import.meta.dirname, "connect", "pom.xml");
const LOG4J = join(import.meta.dirname, "connect", "log4j2.properties");

export interface PeerPaths {
  home: string;
  runtime: string;
  plugins: string;
  marker: string;
}

export function peerPaths(): PeerPaths {
  const home = join(stackContext().cacheDir, `connect-${KAFKA_VERSION}-debezium-${DEBEZIUM_VERSION}-r${POM_REVISION}`);
  return { home, runtime: join(home, "runtime"), plugins: join(home, "plugins"), marker: join(home, ".installed") };
}

/** Resolve the jars with Maven once (cached); returns the paths. */
export function installPeer(log: (m: string) => void): PeerPaths {
  const p = peerPaths();
  if (existsSync(p.marker)) return p;
  log(`peer: resolving Kafka Connect ${KAFKA_VERSION} + Debezium JDBC sink ${DEBEZIUM_VERSION} with Maven into ${p.home}`);
  const tmp = `${p.home}.tmp-${process.pid}`;
  rmSync(tmp, { recursive: true, force: true });
  mkdirSync(tmp, { recursive: true });
  try {
    const res = spawnSync(
      "mvn",
      ["-B", "-q", "-Dstyle.color=never", "-f", POM, "package", `-Dkafka.version=${KAFKA_VERSION}`, `-Ddebezium.version=${DEBEZIUM_VERSION}`, `-Druntime.dir=${join(tmp, "runtime")}`, `-Dplugin.dir=${join(tmp, "plugins", "debezium-connector-jdbc")}`],
      { encoding: "utf8", timeout: 900_000 },
    );
    if (res.status !== 0) throw new Error(`mvn failed (${res.status}): ${(res.stdout + res.stderr).slice(-1500)}`);
    rmSync(p.home, { recursive: true, force: true });
    renameSync(tmp, p.home);
  } finally {
    rmSync(tmp, { recursive: true, force: true });
  }
  writeFileSync(p.marker, `${KAFKA_VERSION} ${DEBEZIUM_VERSION}\n`);
  return p;
}

export const PEER_TABLE = "sensor_data_peer";

/** Connect's JSON-with-schema envelope of a reading (FLOAT32 measures, Timestamp logical time). */
const SCHEMA = {
  type: "struct",
  name: "io.millrace.sensor.SensorReading",
  optional: false,
  fields: [
    { field: "time", type: "int64", name: "org.apache.kafka.connect.data.Timestamp", version: 1, optional: false },
    // Debezium's semantic UUID type: the sink binds it as uuid (the column's type).
    { field: "tenant_id", type: "string", name: "io.debezium.data.Uuid", version: 1, optional: false },
    { field: "equipment_id", type: "string", optional: false },
    { field: "facility_id", type: "string", optional: false },
    { field: "temperature", type: "float", optional: true },
    { field: "vibration", type: "float", optional: true },
    { field: "pressure", type: "float", optional: true },
  ],
};
const SCHEMA_JSON = JSON.stringify(SCHEMA);
const f32 = (v: number | null) => (v === null ? null : Math.fround(v));

export function peerTopic(tenantId: string): string {
  return `millrace-bench-peer-${tenantId}`;
}

/** The same readings as JSON-with-schema, same keys, to one topic per tenant with `partitions` partitions. */
export async function producePeerTopics(kafka: Kafka, admin: Admin, fx: Fixture, count: number, partitions: number): Promise<{ topics: string[]; bytes: number; seconds: number }> {
  const topics = fx.tenants.map(peerTopic);
  await createTopicsAndWait(admin, topics.map((topic) => ({ topic, numPartitions: partitions })));
  const producer = kafka.producer({ idempotent: true, maxInFlightRequests: 1, allowAutoTopicCreation: false });
  await producer.connect();
  const t0 = performance.now();
  let bytes = 0;
  try {
    let batch = new Map<string, Array<{ key: string; value: string }>>();
    let n = 0;
    const flush = async () => {
      if (n === 0) return;
      await producer.sendBatch({ topicMessages: [...batch].map(([topic, messages]) => ({ topic, messages })), acks: -1, compression: CompressionTypes.None });
      batch = new Map();
      n = 0;
    };
    for (const r of fixtureReadings(fx, { count })) {
      const x = r.reading;
      const value = `{"schema":${SCHEMA_JSON},"payload":${JSON.stringify({ time: x.time, tenant_id: x.tenant_id, equipment_id: x.equipment_id, facility_id: x.facility_id, temperature: f32(x.temperature), vibration: f32(x.vibration), pressure: f32(x.pressure) })}}`;
      bytes += value.length;
      const topic = peerTopic(r.tenantId);
      let list = batch.get(topic);
      if (!list) batch.set(topic, (list = []));
      list.push({ key: x.equipment_id, value });
      if (++n >= 2000) await flush();
    }
    await flush();
  } finally {
    await producer.disconnect();
  }
  return { topics, bytes, seconds: (performance.now() - t0) / 1000 };
}

export interface PeerResult {
  records: number;
  seconds: number;
  recordsPerSecond: number;
  startupMs: number;
  cpuPerMillion: { connect: number | null; postgresCluster: number | null };
  stored: { rows: number; checksum: string } | null;
  inputFormat: string;
  config: Record<string, string>;
  jsonBytesPerRecord: number;
}

function assignedAt(logFile: string): number | undefined {
  if (!existsSync(logFile)) return undefined;
  for (const line of readFileSync(logFile, "utf8").split("\n")) {
    if (/Adding newly assigned partitions: \S/.test(line) || /Notifying assignor about the new Assignment\(partitions=\[\S/.test(line)) {
      const t = Number(line.split(" ")[0]);
      if (Number.isFinite(t) && t > 1e12) return t;
    }
  }
  return undefined;
}

export async function runPeer(opts: {
  db: BenchDatabase;
  admin: Admin;
  topics: string[];
  records: number;
  partitions: number;
  batchRows: number;
  workDir: string;
  timeoutMs: number;
  jsonBytes: number;
  log: (m: string) => void;
}): Promise<PeerResult> {
  const p = installPeer(opts.log);
  await opts.db.admin.query(`CREATE TABLE ${PEER_TABLE} (
    time timestamptz NOT NULL, tenant_id uuid NOT NULL, equipment_id text NOT NULL, facility_id text NOT NULL,
    temperature real, vibration real, pressure real, PRIMARY KEY (time, tenant_id, equipment_id))`);
  const admin = new URL(requireEnv("MILLRACE_PG_ADMIN_URL"));
  const name = `millrace-bench-peer-${opts.db.name.slice(-8)}`;
  const group = `connect-${name}`;
  const dir = join(opts.workDir, "connect");
  mkdirSync(dir, { recursive: true });
  const restPort = await freePort();
  const worker: Record<string, string> = {
    "bootstrap.servers": requireEnv("MILLRACE_KAFKA_BROKERS"),
    "key.converter": "org.apache.kafka.connect.storage.StringConverter",
    "value.converter": "org.apache.kafka.connect.json.JsonConverter",
    "value.converter.schemas.enable": "true",
    "offset.storage.file.filename": join(dir, "connect.offsets"),
    "offset.flush.interval.ms": "1000",
    "plugin.path": p.plugins,
    "plugin.discovery": "hybrid_warn",
    listeners: `http://127.0.0.1:${restPort}`,
    "consumer.max.poll.records": String(opts.batchRows),
    "consumer.auto.offset.reset": "earliest",
  };
  // SASL (MILLRACE_KAFKA_*): for the worker's own clients and, prefixed, its tasks' producers and consumers.
  for (const [k, v] of Object.entries(javaClientProperties(kafkaAuthFromEnv()))) {
    for (const prefix of ["", "producer.", "consumer.", "admin."]) worker[`${prefix}${k}`] = v;
  }
  const connector: Record<string, string> = {
    name,
    "connector.class": "io.debezium.connector.jdbc.JdbcSinkConnector",
    "tasks.max": String(opts.partitions),
    topics: opts.topics.join(","),
    "connection.url": `jdbc:postgresql://${admin.hostname}:${admin.port}/${opts.db.name}?stringtype=unspecified&reWriteBatchedInserts=true`,
    "connection.username": decodeURIComponent(admin.username),
    "connection.password": decodeURIComponent(admin.password),
    "connection.pool.min_size": "1",
    "connection.pool.max_size": "2",
    "insert.mode": "insert",
    "primary.key.mode": "none",
    "schema.evolution": "none",
    "delete.enabled": "false",
    "collection.name.format": PEER_TABLE,
    "batch.size": String(opts.batchRows),
    "dialect.postgres.unnest.insert.enabled": "true",
    "use.time.zone": "UTC",
  };
  const props = (o: Record<string, string>) => `${Object.entries(o).map(([k, v]) => `${k}=${v.replace(/\\/g, "\\\\")}`).join("\n")}\n`;
  const workerFile = join(dir, "worker.properties");
  const connectorFile = join(dir, "jdbc-sink.properties");
  writeFileSync(workerFile, props(worker), { mode: 0o600 });
  chmodSync(workerFile, 0o600);
  writeFileSync(connectorFile, props(connector), { mode: 0o600 });
  chmodSync(connectorFile, 0o600);
  const logFile = join(dir, "connect.log");
  const spawnedAt = Date.now();
  const c = spawnLogged(
    "java",
    ["-Xms512m", "-Xmx1g", "-XX:+UseG1GC", "-Duser.timezone=UTC", `-Dlog4j2.configurationFile=${LOG4J}`, "-Dmillrace.log.level=INFO", "-cp", `${p.runtime}/*`, "org.apache.kafka.connect.cli.ConnectStandalone", workerFile, connectorFile],
    { logFile },
  );
  const pgPid = stackPid("postgres");
  const deadline = Date.now() + opts.timeoutMs;
  try {
    let t0: number | undefined;
    while (t0 === undefined) {
      if (c.child.exitCode !== null) throw new Error(`Kafka Connect exited (${c.child.exitCode}) before it was assigned partitions; see ${logFile}`);
      if (Date.now() > deadline) throw new Error(`Kafka Connect was not assigned partitions in time; see ${logFile}`);
      t0 = assignedAt(logFile);
      if (t0 === undefined) await sleep(100);
    }
    const m0 = markCpu({ connect: [c.pid, false], postgres: [pgPid, true] });
    let doneAt: number | undefined;
    let polls = 0;
    while (doneAt === undefined) {
      if (c.child.exitCode !== null) throw new Error(`Kafka Connect exited (${c.child.exitCode}) during the run; see ${logFile}`);
      if (Date.now() > deadline) throw new Error(`Kafka Connect did not commit every record within ${opts.timeoutMs} ms; see ${logFile}`);
      if (++polls % 10 === 0 && /unrecoverable exception|Task is being killed/.test(readFileSync(logFile, "utf8"))) throw new Error(`a Kafka Connect task failed; see ${logFile}`);
      const offs = await opts.admin.fetchOffsets({ groupId: group, topics: opts.topics });
      let sum = 0;
      for (const t of offs) for (const q of t.partitions) sum += Math.max(0, Number(q.offset));
      if (sum >= opts.records) doneAt = Date.now();
      else await sleep(200);
    }
    const m1 = markCpu({ connect: [c.pid, false], postgres: [pgPid, true] });
    const cpu = cpuBetween(m0, m1);
    const seconds = (doneAt - t0) / 1000;
    const per = (v: number | null | undefined) => (v == null ? null : (v * 1e6) / opts.records);
    const { tableChecksum } = await import("./db.ts");
    return {
      records: opts.records,
      seconds,
      recordsPerSecond: opts.records / seconds,
      startupMs: t0 - spawnedAt,
      cpuPerMillion: { connect: per(cpu.connect), postgresCluster: per(cpu.postgres) },
      stored: await tableChecksum(opts.db.admin, PEER_TABLE),
      inputFormat: "Kafka Connect JSON with schema (JsonConverter, schemas.enable=true) on separate topics: no converter on Maven Central reads the Confluent Avro wire format",
      config: { ...connector, "connection.password": "(stack admin)", ...Object.fromEntries(Object.entries(worker).filter(([k]) => k.startsWith("consumer.") || k.startsWith("offset.flush"))) },
      jsonBytesPerRecord: opts.jsonBytes / opts.records,
    };
  } finally {
    c.child.kill("SIGTERM");
    await waitExit(c, 20_000);
  }
}
