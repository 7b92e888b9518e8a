/**
 * Failure class 11, time zones, end to end: a worker process running with TZ=Europe/Berlin takes
 * readings from the DST nights (2024-03-31, when 02:00–03:00 local does not exist, and 2024-10-27,
 * when 02:00–03:00 local happens twice) through Kafka into PostgreSQL and Parquet on S3; each is
 * stored and read back as exactly its instant, and the Parquet files sit under the UTC date/hour.
 */
import { randomBytes, randomUUID } from "node:crypto";
import { spawnSync } from "node:child_process";
import { join } from "node:path";
import type { Admin, Kafka } from "kafkajs";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { requireEnv } from "../../lib/env.ts";
import type { SensorReading } from "../../schemas/index.ts";
import { repoRoot } from "../../stack/context.ts";
import { createTenant } from "../../tenants/provision.ts";
import { createTestDatabase, type TestDatabase } from "../helpers/db.ts";
import { deleteTopics, encodeReading, endOffsets, produce, registerSensorSchema, testKafka } from "../helpers/kafka.ts";
import { pyarrowVersion, readS3DatasetWithPyarrow } from "../helpers/parquet-readers.ts";
import { startWorkerProcess, writeTopology, type WorkerProcess } from "../helpers/processes.ts";
import { waitUntil } from "../helpers/wait.ts";

const LOG_DIR = join(repoRoot, ".stack", "test-logs");
const TZ = "Europe/Berlin";
/** One reading per partition (so each Parquet file holds one, and its date/hour is that reading's). */
const INSTANTS = ["2024-03-31T00:30:00.000Z", "2024-03-31T01:30:00.000Z", "2024-10-27T00:30:00.000Z", "2024-10-27T01:30:00.000Z"];

describe("class 11: a worker process under TZ=Europe/Berlin stores exact instants", () => {
  let db: TestDatabase;
  let kafka: Kafka;
  let admin: Admin;
  let proc: WorkerProcess | undefined;
  const tenant = randomUUID();
  const topic = `sensor-data-${tenant}`;

  beforeAll(async () => {
    pyarrowVersion();
    db = await createTestDatabase();
    kafka = testKafka();
    admin = kafka.admin();
    await admin.connect();
    // Unlimited retention: readings from 2024 are not too old.
    await createTenant(db.admin, admin, { tenantId: tenant, name: "tz", partitions: INSTANTS.length, retentionDays: null });
  });
  afterAll(async () => {
    if (proc) {
      proc.kill("SIGKILL");
      await proc.exited;
    }
    await deleteTopics(admin, (t) => t.endsWith(tenant));
    await admin.disconnect();
    await db?.drop();
  });

  it("2024-03-31T01:30:00Z and the other DST-night instants: the same instant in PostgreSQL and Parquet", async () => {
    // The machine has the zone (else TZ silently means UTC and this test would prove nothing).
    const local = spawnSync(process.execPath, ["-e", `process.stdout.write(String(new Date(${JSON.stringify(INSTANTS[1])}).getHours()))`], { env: { ...process.env, TZ }, encoding: "utf8" });
    expect(local.stdout).toBe("3"); // 01:30Z is 03:30 CEST

    const schemaId = await registerSensorSchema(topic);
    const readings: SensorReading[] = INSTANTS.map((iso, i) => ({
      time: Date.parse(iso),
      tenant_id: tenant,
      equipment_id: `tz-${i}`,
      facility_id: "fac-01",
      temperature: i,
      vibration: null,
      pressure: null,
      flow_rate: null,
    }));
    await produce(kafka, topic, readings.map((r, i) => ({ key: r.equipment_id, partition: i, value: encodeReading(schemaId, r) })));

    const group = `tz-${randomBytes(3).toString("hex")}`;
    const topology = writeTopology(LOG_DIR, [[/idle_flush: 60s/, "idle_flush: 1s"]]);
    proc = startWorkerProcess({ name: `tz-${group}`, topology, group, tenants: [tenant], pgUrl: db.adminUrl, logDir: LOG_DIR, env: { TZ } });

    await waitUntil("the 4 readings in PostgreSQL", async () => {
      const r = await db.admin.query("SELECT count(*)::int AS n FROM sensor_data_raw WHERE tenant_id = $1", [tenant]);
      return r.rows[0].n === INSTANTS.length;
    }, 120_000);
    const back = await db.admin.query<{ equipment_id: string; utc: string; ms: string }>(
      `SELECT equipment_id, to_char(time AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"') AS utc, (extract(epoch FROM time) * 1000)::bigint::text AS ms
       FROM sensor_data_raw WHERE tenant_id = $1 ORDER BY equipment_id`,
      [tenant],
    );
    expect(back.rows).toEqual(INSTANTS.map((iso, i) => ({ equipment_id: `tz-${i}`, utc: iso, ms: String(Date.parse(iso)) })));

    // Parquet: every partition's records uploaded (the sink's stored offset at the end).
    const end = await endOffsets(admin, topic);
    await waitUntil("every partition's reading in S3", async () => {
      const r = await db.admin.query<{ partition: number; next_offset: string }>(
        "SELECT partition, next_offset FROM millrace.sink_offsets WHERE sink = 's3_parquet' AND consumer_group = $1 AND topic = $2",
        [group, topic],
      );
      const got = new Map(r.rows.map((x) => [x.partition, Number(x.next_offset)]));
      return [...end].every(([p, high]) => got.get(p) === high);
    }, 120_000);
    const s3 = {
      endpoint: requireEnv("MILLRACE_S3_ENDPOINT"),
      region: process.env.MILLRACE_S3_REGION ?? "us-east-1",
      accessKeyId: requireEnv("MILLRACE_S3_ACCESS_KEY_ID"),
      secretAccessKey: requireEnv("MILLRACE_S3_SECRET_ACCESS_KEY"),
    };
    const rows = readS3DatasetWithPyarrow(`millrace-shared/${tenant}/sensor-data/`, s3).rows.sort((a, b) => a.equipment_id.localeCompare(b.equipment_id));
    expect(rows.map((r) => ({ equipment_id: r.equipment_id, time: new Date(r.time).toISOString(), date: r.date, hour: Number(r.hour) }))).toEqual(
      INSTANTS.map((iso, i) => ({ equipment_id: `tz-${i}`, time: iso, date: iso.slice(0, 10), hour: Number(iso.slice(11, 13)) })),
    );
  });
});
