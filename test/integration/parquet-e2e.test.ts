/**
 * Parquet on S3 end to end, read back with an independent reader (pyarrow over the S3 API):
 *  - kill -9 of the worker in the middle of rolling files (asserted: at the kill, files are uploaded
 *    and records PostgreSQL holds are in no uploaded file yet), then a restart: per tenant the rows
 *    in S3 equal the rows produced — every sequence once, none missing;
 *  - failure class 13 through Kafka and the worker: a reading at 1969-12-31T23:59:59Z and null
 *    measures are stored with the same instant and nulls in PostgreSQL and in Parquet (pyarrow and
 *    DuckDB); NaN and ±Infinity are dead-lettered (non_finite_value) before either sink;
 *  - while a tenant's bucket is missing, Kafka's committed offset of its partition is at most the
 *    Parquet sink's offset and below PostgreSQL's;
 *  - a single-tenant tenant's files are in its dedicated bucket, uploaded with its KMS key (the
 *    headers are recorded client-side: the local S3 accepts but does not store them), never in the
 *    shared bucket; no tenant's file is under another tenant's prefix.
 */
import { randomBytes, randomUUID } from "node:crypto";
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { CreateBucketCommand, GetObjectCommand, ListObjectsV2Command, S3Client } from "@aws-sdk/client-s3";
import type { Admin, Kafka } from "kafkajs";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { requireEnv } from "../../lib/env.ts";
import type { IngestWorker } from "../../pipelines/runtime/worker.ts";
import type { SensorReading } from "../../schemas/index.ts";
import { repoRoot } from "../../stack/context.ts";
import { createTenant } from "../../tenants/provision.ts";
import { createTestDatabase, type TestDatabase } from "../helpers/db.ts";
import { deleteTopics, encodeReading, endOffsets, produce, registerSensorSchema, testKafka } from "../helpers/kafka.ts";
import { openDuckDb, pyarrowVersion, readS3DatasetWithPyarrow } from "../helpers/parquet-readers.ts";
import { startWorkerProcess, writeTopology, type WorkerProcess } from "../helpers/processes.ts";
import { waitUntil } from "../helpers/wait.ts";
import { testPlan, testWorker } from "../helpers/worker.ts";

const LOG_DIR = join(repoRoot, ".stack", "test-logs");
const SHARED = "millrace-shared";

function s3Settings() {
  return {
    endpoint: requireEnv("MILLRACE_S3_ENDPOINT"),
    region: process.env.MILLRACE_S3_REGION ?? "us-east-1",
    accessKeyId: requireEnv("MILLRACE_S3_ACCESS_KEY_ID"),
    secretAccessKey: requireEnv("MILLRACE_S3_SECRET_ACCESS_KEY"),
  };
}

describe("Parquet on S3 end to end", () => {
  let db: TestDatabase;
  let kafka: Kafka;
  let admin: Admin;
  let s3: S3Client;
  let schemaId: number;
  const procs: WorkerProcess[] = [];
  const workers: IngestWorker[] = [];
  const tenants: string[] = [];
  const base = Date.now() - 2 * 86_400_000;

  const reading = (tenant: string, seq: number): SensorReading => ({
    time: base + Math.floor(seq / 10) * 1000,
    tenant_id: tenant,
    equipment_id: `eq-${seq % 10}`,
    facility_id: "fac-01",
    temperature: 20,
    vibration: seq,
    pressure: null,
    flow_rate: null,
  });
  const publish = (tenant: string, from: number, n: number) =>
    produce(
      kafka,
      `sensor-data-${tenant}`,
      Array.from({ length: n }, (_, i) => ({ key: `eq-${(from + i) % 10}`, value: encodeReading(schemaId, reading(tenant, from + i)) })),
    );
  /** Every partition of the tenant's topic fully in S3 (the Parquet sink's stored offsets at the end). */
  const inS3 = async (tenant: string, group: string) => {
    const topic = `sensor-data-${tenant}`;
    const end = await endOffsets(admin, topic);
    const r = await db.admin.query<{ partition: number; next_offset: string }>(
      "SELECT partition, next_offset FROM millrace.sink_offsets WHERE sink = 's3_parquet' AND consumer_group = $1 AND topic = $2",
      [group, topic],
    );
    const got = new Map(r.rows.map((x) => [x.partition, Number(x.next_offset)]));
    return [...end].every(([p, high]) => high === 0 || got.get(p) === high);
  };
  const rowsOf = (bucket: string, tenant: string) => readS3DatasetWithPyarrow(`${bucket}/${tenant}/sensor-data/`, s3Settings()).rows;

  beforeAll(async () => {
    pyarrowVersion();
    db = await createTestDatabase();
    kafka = testKafka();
    admin = kafka.admin();
    await admin.connect();
    schemaId = await registerSensorSchema(`sensor-data-${randomUUID()}`);
    s3 = new S3Client({ ...s3Settings(), credentials: { accessKeyId: s3Settings().accessKeyId, secretAccessKey: s3Settings().secretAccessKey }, forcePathStyle: true });
  });
  afterAll(async () => {
    for (const p of procs) p.kill("SIGKILL");
    await Promise.all(procs.map((p) => p.exited));
    await Promise.allSettled(workers.map((w) => w.stop()));
    await deleteTopics(admin, (t) => tenants.some((x) => t.endsWith(x)));
    await admin.disconnect();
    s3.destroy();
    await db?.drop();
  });

  it("kill -9 in the middle of rolling files, then restart: rows in S3 equal rows produced, per tenant, exactly", async () => {
    const ts = [randomUUID(), randomUUID()];
    tenants.push(...ts);
    for (const t of ts) await createTenant(db.admin, admin, { tenantId: t, name: "roll", partitions: 3 });
    const group = `roll-${randomBytes(3).toString("hex")}`;
    const topology = writeTopology(LOG_DIR, [
      [/max_rows: 5000/, "max_rows: 300"],
      [/max_rows: 100000/, "max_rows: 400"],
      [/idle_flush: 60s/, "idle_flush: 1s"],
    ]);
    const total = 4000;
    for (const t of ts) await publish(t, 0, total);
    const w1 = startWorkerProcess({ name: "roll-w1", topology, group, tenants: ts, pgUrl: db.adminUrl, logDir: LOG_DIR });
    procs.push(w1);
    // Work in flight: records PostgreSQL holds that are in no uploaded Parquet file yet (rows in a
    // roller's buffer, or a file planned and being uploaded), after some files are already uploaded.
    const inFlight = async () => {
      const r = await db.admin.query<{ uploaded: number; planned: number; behind: number }>(
        `SELECT (SELECT count(*)::int FROM millrace.parquet_files WHERE consumer_group = $1 AND status = 'uploaded') AS uploaded,
                (SELECT count(*)::int FROM millrace.parquet_files WHERE consumer_group = $1 AND status = 'planned') AS planned,
                (SELECT coalesce(sum(c.next_offset - coalesce(s.next_offset, 0)), 0)::int
                   FROM millrace.consumer_offsets c
                   LEFT JOIN millrace.sink_offsets s ON s.sink = 's3_parquet' AND s.consumer_group = c.consumer_group AND s.topic = c.topic AND s.partition = c.partition
                  WHERE c.consumer_group = $1) AS behind`,
        [group],
      );
      return r.rows[0]!;
    };
    await waitUntil("some Parquet files uploaded while others are still being rolled", async () => {
      const x = await inFlight();
      return x.uploaded >= 4 && (x.behind > 0 || x.planned > 0);
    }, 120_000);
    w1.kill("SIGKILL");
    await w1.exited;
    // The state the kill left (nothing changes it now): files uploaded, and work not in S3 yet.
    const atKill = await inFlight();
    expect(atKill.uploaded).toBeGreaterThanOrEqual(4);
    expect(atKill.behind + atKill.planned, "the kill landed with records stored in PostgreSQL but in no uploaded file").toBeGreaterThan(0);
    const w2 = startWorkerProcess({ name: "roll-w2", topology, group, tenants: ts, pgUrl: db.adminUrl, logDir: LOG_DIR });
    procs.push(w2);
    for (const t of ts) await publish(t, total, 1000); // more traffic after the restart
    for (const t of ts) await waitUntil(`tenant ${t.slice(0, 8)} fully in S3`, () => inS3(t, group), 120_000);
    for (const t of ts) {
      const rows = rowsOf(SHARED, t);
      expect(rows.length).toBe(total + 1000);
      expect(new Set(rows.map((r) => r.vibration)).size).toBe(total + 1000);
      expect(rows.every((r) => r.tenant_id === t)).toBe(true);
      const pg = await db.admin.query("SELECT count(*)::int AS n FROM sensor_data_raw WHERE tenant_id = $1", [t]);
      expect(pg.rows[0].n).toBe(total + 1000); // Parquet rows = PostgreSQL rows
    }
    // The manifest has no gaps or overlaps per partition.
    const ranges = await db.admin.query<{ topic: string; partition: number; first_offset: string; last_offset: string }>(
      "SELECT topic, partition, first_offset, last_offset FROM millrace.parquet_files WHERE consumer_group = $1 ORDER BY topic, partition, first_offset",
      [group],
    );
    let prev: { topic: string; partition: number; last: number } | undefined;
    for (const r of ranges.rows) {
      if (prev && prev.topic === r.topic && prev.partition === r.partition) expect(Number(r.first_offset)).toBe(prev.last + 1);
      prev = { topic: r.topic, partition: r.partition, last: Number(r.last_offset) };
    }
    w2.kill("SIGTERM");
    expect(await w2.exited).toBe(0);
  });

  it("one tenant's failing bucket does not stall the other tenants; its partition is paused, nothing is lost, it drains when the bucket is back", async () => {
    const broken = randomUUID();
    const healthy = randomUUID();
    tenants.push(broken, healthy);
    const bucket = `millrace-b-${broken.slice(0, 8)}`; // not created yet: every upload fails
    await createTenant(db.admin, admin, { tenantId: broken, name: "broken bucket", partitions: 1, deploymentType: "single-tenant" });
    await db.admin.query("UPDATE tenants SET storage_mode = 'dedicated', storage_bucket = $2, kms_key_id = 'test-key' WHERE tenant_id = $1", [broken, bucket]);
    await createTenant(db.admin, admin, { tenantId: healthy, name: "healthy", partitions: 1 });
    const plan = testPlan({ maxRows: 100 });
    for (const x of plan.sinks) {
      if (x.type === "s3_parquet") Object.assign(x, { maxRows: 100, maxPendingBytes: 30_000, retry: { ...x.retry, initialDelayMs: 100, maxDelayMs: 1000 } });
    }
    const worker = testWorker(plan, db.adminUrl, [broken, healthy].map((t) => `sensor-data-${t}`), { stallAfterMs: 3000 });
    workers.push(worker);
    await worker.start();
    const group = worker.plan.source.consumerGroup;
    await publish(broken, 0, 3000);
    await publish(healthy, 0, 3000);
    await waitUntil("the healthy tenant fully in PostgreSQL and S3", async () => inS3(healthy, group), 90_000);
    expect(rowsOf(SHARED, healthy)).toHaveLength(3000);
    // The broken tenant is held back (paused), not dropped, and readiness says why.
    const pgBroken = await db.admin.query("SELECT count(*)::int AS n FROM sensor_data_raw WHERE tenant_id = $1", [broken]);
    expect(pgBroken.rows[0].n).toBeLessThan(3000);
    expect(worker.ready().why.join(" ")).toMatch(/Parquet uploads for sensor-data-[0-9a-f-]+\[0\] are failing/);
    // Kafka's committed offset follows the lower sink: while its bucket is missing, the broken
    // tenant's committed offset is at most its s3_parquet offset, below what PostgreSQL holds.
    const brokenTopic = `sensor-data-${broken}`;
    const positions = async () => {
      const pgOff = await db.admin.query<{ n: string }>("SELECT next_offset AS n FROM millrace.consumer_offsets WHERE consumer_group = $1 AND topic = $2 AND partition = 0", [group, brokenTopic]);
      const pqOff = await db.admin.query<{ n: string }>("SELECT next_offset AS n FROM millrace.sink_offsets WHERE sink = 's3_parquet' AND consumer_group = $1 AND topic = $2 AND partition = 0", [group, brokenTopic]);
      const [kafkaOff] = (await admin.fetchOffsets({ groupId: group, topics: [brokenTopic] }))[0]!.partitions.filter((x) => x.partition === 0);
      return { pg: Number(pgOff.rows[0]?.n ?? -1), pq: Number(pqOff.rows[0]?.n ?? -1), kafka: Number(kafkaOff?.offset ?? -1) };
    };
    const held = await waitUntil("PostgreSQL to hold the broken tenant's records beyond its Parquet offset, and Kafka to have a commit for it", async () => {
      const x = await positions();
      return x.pg > x.pq && x.pq >= 0 && x.kafka >= 0 ? x : undefined;
    }, 60_000);
    expect(held.kafka).toBeLessThanOrEqual(held.pq);
    expect(held.kafka).toBeLessThan(held.pg);
    expect(held.pq).toBe(0); // nothing of it is in S3 yet
    // The bucket appears: everything drains, exactly once.
    await s3.send(new CreateBucketCommand({ Bucket: bucket }));
    await waitUntil("the broken tenant to drain once its bucket exists", async () => inS3(broken, group), 120_000);
    const rows = rowsOf(bucket, broken);
    expect(rows).toHaveLength(3000);
    expect(new Set(rows.map((r) => r.vibration)).size).toBe(3000);
    await worker.stop();
  });

  it("a single-tenant tenant's files are in its dedicated bucket under its KMS key, never in the shared bucket", async () => {
    const dedicated = randomUUID();
    const shared = randomUUID();
    tenants.push(dedicated, shared);
    const bucket = `millrace-t-${dedicated.slice(0, 8)}`;
    const kmsKeyId = `arn:aws:kms:us-east-1:111122223333:key/${randomUUID()}`;
    await s3.send(new CreateBucketCommand({ Bucket: bucket }));
    await createTenant(db.admin, admin, { tenantId: dedicated, name: "dedicated", partitions: 1, deploymentType: "single-tenant" });
    await db.admin.query("UPDATE tenants SET storage_mode = 'dedicated', storage_bucket = $2, kms_key_id = $3 WHERE tenant_id = $1", [dedicated, bucket, kmsKeyId]);
    await createTenant(db.admin, admin, { tenantId: shared, name: "shared", partitions: 1 });

    const sent: Array<{ command: string; bucket: string; headers: Record<string, string> }> = [];
    const worker = testWorker(testPlan(), db.adminUrl, [dedicated, shared].map((t) => `sensor-data-${t}`), {
      onS3Client: (client) =>
        client.middlewareStack.add(
          (next, context) => async (args) => {
            const req = args.request as { headers?: Record<string, string> };
            const headers = Object.fromEntries(Object.entries(req.headers ?? {}).map(([k, v]) => [k.toLowerCase(), v]));
            sent.push({ command: context.commandName ?? "", bucket: String((args.input as { Bucket?: string }).Bucket ?? ""), headers });
            return await next(args);
          },
          { step: "finalizeRequest", name: "recordRequests", priority: "low" },
        ),
    });
    workers.push(worker);
    await worker.start();
    await publish(dedicated, 0, 200);
    await publish(shared, 0, 200);
    const group = worker.plan.source.consumerGroup;
    await waitUntil("both tenants in S3", async () => (await inS3(dedicated, group)) && (await inS3(shared, group)), 90_000);

    expect(rowsOf(bucket, dedicated)).toHaveLength(200);
    expect(rowsOf(SHARED, shared)).toHaveLength(200);
    // Nothing of the dedicated tenant in the shared bucket.
    const leaked = await s3.send(new ListObjectsV2Command({ Bucket: SHARED, Prefix: `${dedicated}/` }));
    expect(leaked.KeyCount ?? 0).toBe(0);
    // Every upload into the dedicated bucket carried SSE-KMS with the tenant's key; none into the shared one.
    const puts = sent.filter((r) => r.command === "PutObjectCommand" || r.command === "CreateMultipartUploadCommand");
    const toDedicated = puts.filter((r) => r.bucket === bucket);
    expect(toDedicated.length).toBeGreaterThan(0);
    for (const r of toDedicated) {
      expect(r.headers["x-amz-server-side-encryption"]).toBe("aws:kms");
      expect(r.headers["x-amz-server-side-encryption-aws-kms-key-id"]).toBe(kmsKeyId);
    }
    for (const r of puts.filter((x) => x.bucket === SHARED)) expect(r.headers["x-amz-server-side-encryption"]).toBeUndefined();
    // Every file under a tenant's prefix in the shared bucket holds only that tenant's rows.
    const sharedTenants = await db.admin.query<{ tenant_id: string }>("SELECT tenant_id FROM tenants WHERE storage_mode = 'shared' AND tenant_id = ANY($1)", [tenants]);
    for (const t of sharedTenants.rows.map((r) => r.tenant_id)) {
      const rows = rowsOf(SHARED, t);
      expect(rows.every((r) => r.tenant_id === t)).toBe(true);
    }
    await worker.stop();
  });

  it("class 13: 1969-12-31T23:59:59Z and null measures reach PostgreSQL and Parquet as the same instant and nulls; NaN and ±Infinity are dead-lettered before either sink", async () => {
    const tenant = randomUUID();
    tenants.push(tenant);
    await createTenant(db.admin, admin, { tenantId: tenant, name: "class 13", partitions: 1 });
    await db.admin.query("UPDATE tenants SET retention_policy_days = NULL WHERE tenant_id = $1", [tenant]); // unlimited: 1969 is not too old
    const worker = testWorker(testPlan(), db.adminUrl, [`sensor-data-${tenant}`]);
    workers.push(worker);
    await worker.start();
    const group = worker.plan.source.consumerGroup;
    const at = (iso: string) => Date.parse(iso);
    const r = (time: number, equipment: string, m: Partial<Pick<SensorReading, "temperature" | "vibration" | "pressure">>): SensorReading => ({
      time,
      tenant_id: tenant,
      equipment_id: equipment,
      facility_id: "fac-13",
      temperature: null,
      vibration: null,
      pressure: null,
      flow_rate: null,
      ...m,
    });
    const sent = [
      r(at("1969-12-31T23:59:59Z"), "pre-1970", { temperature: 21.5, vibration: null, pressure: 1.25 }), // offset 0: stored
      r(at("2024-03-31T01:30:00Z"), "all-null", {}), // 1: stored, every measure null
      r(at("2024-03-31T01:30:01Z"), "nan", { temperature: Number.NaN }), // 2: dead letter
      r(at("2024-03-31T01:30:02Z"), "inf", { vibration: Number.POSITIVE_INFINITY, temperature: 20 }), // 3: dead letter
      r(at("2024-03-31T01:30:03Z"), "neg-inf", { pressure: Number.NEGATIVE_INFINITY }), // 4: dead letter
      r(at("1970-01-01T00:00:00Z"), "epoch", { vibration: 0 }), // 5: stored
    ];
    await produce(kafka, `sensor-data-${tenant}`, sent.map((x) => ({ key: x.equipment_id, value: encodeReading(schemaId, x) })));
    await waitUntil("the class-13 records in PostgreSQL, dead letters and S3", () => inS3(tenant, group), 90_000);

    // Stored, in time order: offsets 0 (1969), 5 (the epoch), 1 (2024).
    const storedOffsets = [0, 5, 1];
    const stored = storedOffsets.map((o) => sent[o]!).map((x) => ({ time: x.time, equipment_id: x.equipment_id, temperature: x.temperature, vibration: x.vibration, pressure: x.pressure }));
    const pg = await db.admin.query<{ ms: string; equipment_id: string; temperature: number | null; vibration: number | null; pressure: number | null }>(
      "SELECT (extract(epoch FROM time) * 1000)::bigint AS ms, equipment_id, temperature, vibration, pressure FROM sensor_data_raw WHERE tenant_id = $1 ORDER BY time",
      [tenant],
    );
    expect(pg.rows.map((x) => ({ time: Number(x.ms), equipment_id: x.equipment_id, temperature: x.temperature, vibration: x.vibration, pressure: x.pressure }))).toEqual(stored);
    expect(Number(pg.rows[0]!.ms)).toBe(-1000);
    const dls = await db.admin.query<{ source_offset: string; reason: string; stage: string }>(
      "SELECT source_offset, reason, stage FROM millrace.dead_letters WHERE tenant_id = $1 ORDER BY source_offset",
      [tenant],
    );
    expect(dls.rows.map((x) => [Number(x.source_offset), x.reason])).toEqual([
      [2, "non_finite_value"],
      [3, "non_finite_value"],
      [4, "non_finite_value"],
    ]);

    const parquetRows = (rows: Array<{ time: number; equipment_id: string; temperature: number | null; vibration: number | null; pressure: number | null; source_offset: number }>) =>
      rows
        .map((x) => ({ time: x.time, equipment_id: x.equipment_id, temperature: x.temperature, vibration: x.vibration, pressure: x.pressure, source_offset: x.source_offset }))
        .sort((a, b) => a.time - b.time);
    const want = stored.map((x, i) => ({ ...x, source_offset: storedOffsets[i] }));
    expect(parquetRows(rowsOf(SHARED, tenant))).toEqual(want);
    // DuckDB over the uploaded objects themselves (downloaded), with Hive partitioning.
    const dir = mkdtempSync(join(tmpdir(), "millrace-c13-"));
    const duck = await openDuckDb();
    try {
      const listed = await s3.send(new ListObjectsV2Command({ Bucket: SHARED, Prefix: `${tenant}/` }));
      const keys = (listed.Contents ?? []).map((o) => o.Key!);
      expect(keys.length).toBeGreaterThan(0);
      expect(keys.some((k) => k.includes("/date=1969-12-31/hour=23/"))).toBe(true); // the file's first reading is the 1969 one
      for (const key of keys) {
        const body = await (await s3.send(new GetObjectCommand({ Bucket: SHARED, Key: key }))).Body!.transformToByteArray();
        mkdirSync(dirname(join(dir, key)), { recursive: true });
        writeFileSync(join(dir, key), body);
      }
      const glob = join(dir, tenant, "sensor-data", "*", "*", "*.parquet").replaceAll("'", "''");
      expect(parquetRows(await duck.rows(`read_parquet('${glob}', hive_partitioning = true)`))).toEqual(want);
    } finally {
      duck.close();
      rmSync(dir, { recursive: true, force: true });
    }
    await worker.stop();
  });
  it("a second consumer group over the same topic: PostgreSQL goes on, its Parquet is refused with the owner named, in the log and /readyz", async () => {
    const t = randomUUID();
    tenants.push(t);
    await createTenant(db.admin, admin, { tenantId: t, name: "two-groups", partitions: 1 });
    const first = testWorker(testPlan(), db.adminUrl, [`sensor-data-${t}`]);
    workers.push(first);
    await first.start();
    await publish(t, 0, 100);
    const owner = first.plan.source.consumerGroup;
    await waitUntil("the first group's files in S3", () => inS3(t, owner), 90_000);
    await first.stop();

    const second = testWorker(testPlan(), db.adminUrl, [`sensor-data-${t}`]);
    workers.push(second);
    await second.start();
    const stored = async () => (await db.admin.query("SELECT count(*)::int AS n FROM millrace.consumer_offsets WHERE consumer_group = $1 AND next_offset = 100", [second.plan.source.consumerGroup])).rows[0].n;
    await waitUntil("the second group's PostgreSQL offset at the end", async () => (await stored()) === 1, 60_000);
    const why = await waitUntil(
      "readiness to name the group owning the Parquet files",
      async () => {
        const r = second.ready();
        return !r.ready && r.why.find((w) => w.includes(`its Parquet files belong to consumer group ${owner}`) && w.includes(`--consumer-group ${owner}`));
      },
      60_000,
    );
    expect(why).toContain(`sensor-data-${t}[0]`);
    // Nothing of the second group reached the manifest or the sink offsets.
    const mine = await db.admin.query("SELECT count(*)::int AS n FROM millrace.parquet_files WHERE consumer_group = $1", [second.plan.source.consumerGroup]);
    expect(mine.rows[0].n).toBe(0);
    await second.stop();
  });
});
