/**
 * `millrace retention run` against a fresh database and the stack's S3: tenants A (30 days),
 * B (90 days), C (unlimited) with rows 10, 45, 100 and 400 days old in the same daily partitions,
 * and Parquet files 400, 45 and 10 days old each — and D (30 days) the same in its own dedicated
 * database. After the run each tenant keeps exactly what its retention allows, in its own database,
 * no partition is dropped, and another tenant's data is never touched.
 */
import { execFile } from "node:child_process";
import { randomBytes, randomUUID } from "node:crypto";
import { join } from "node:path";
import { promisify } from "node:util";
import { CreateBucketCommand, DeleteBucketCommand, DeleteObjectsCommand, ListObjectsV2Command, type S3Client } from "@aws-sdk/client-s3";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { loadStackEnv } from "../../lib/env.ts";
import {
  loadTenantStorage,
  locationObjectKey,
  markUploaded,
  parquetStorageConfig,
  planFile,
  putObjectVerified,
  resolveParquetLocation,
  S3ClientCache,
  sha256,
} from "../../sinks/s3-parquet/index.ts";
import { repoRoot } from "../../stack/context.ts";
import { createTestDatabase, insertTenant, type TestDatabase } from "../helpers/db.ts";
import { databaseUrl, ensureDedicatedDatabase, newDedicatedDatabaseName } from "../../tenants/database.ts";
import pg from "pg";

const run = promisify(execFile);
const DAY = 86_400_000;
const AGES = [10, 45, 100, 400];
const FILE_AGES = [400, 45, 10];
const GROUP = "retention-test";

describe("retention run", () => {
  let db: TestDatabase;
  let s3: S3Client;
  let cache: S3ClientCache;
  const bucket = `millrace-retention-${randomBytes(4).toString("hex")}`;
  const env = () => ({ ...process.env, MILLRACE_S3_SHARED_BUCKET: bucket });
  const A = randomUUID();
  const B = randomUUID();
  const C = randomUUID();
  const D = randomUUID();
  let dPool: pg.Pool;
  const storeOf = (t: string) => (t === D ? dPool : db.admin);
  const now = Date.now();
  // Noon of the day `age` days ago: far from the cutoffs, so a run seconds later sees the same thing.
  const at = (age: number) => Math.floor((now - age * DAY) / DAY) * DAY + DAY / 2;

  const partitions = async () =>
    (await db.admin.query<{ name: string }>("SELECT c.relname AS name FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid WHERE i.inhparent = 'sensor_data_raw'::regclass ORDER BY 1")).rows.map((r) => r.name);
  const ages = async (tenant: string) =>
    (await storeOf(tenant).query<{ time: Date }>("SELECT time FROM sensor_data_raw WHERE tenant_id = $1 ORDER BY time DESC", [tenant])).rows.map((r) => Math.round((now - r.time.getTime()) / DAY));
  const fileAges = async (tenant: string) =>
    (await storeOf(tenant).query<{ max_time: Date }>("SELECT max_time FROM millrace.parquet_files WHERE tenant_id = $1 ORDER BY first_offset", [tenant])).rows.map((r) => Math.round((now - r.max_time.getTime()) / DAY));
  const objects = async (tenant: string) => {
    const res = await s3.send(new ListObjectsV2Command({ Bucket: bucket, Prefix: `${tenant}/` }));
    return (res.Contents ?? []).map((o) => o.Key!).sort();
  };

  beforeAll(async () => {
    loadStackEnv();
    db = await createTestDatabase();
    const config = parquetStorageConfig(env());
    cache = new S3ClientCache(process.env);
    s3 = cache.clientFor(config.platform);
    await s3.send(new CreateBucketCommand({ Bucket: bucket }));
    await insertTenant(db.admin, { tenantId: A, name: "A", retentionDays: 30 });
    await insertTenant(db.admin, { tenantId: B, name: "B", retentionDays: 90 });
    await insertTenant(db.admin, { tenantId: C, name: "C", retentionDays: null });
    await insertTenant(db.admin, { tenantId: D, name: "D", retentionDays: 30 });
    const ref = { database: newDedicatedDatabaseName() };
    await db.admin.query("UPDATE tenants SET deployment_type = 'hybrid', database_mode = 'dedicated', database_ref = $2 WHERE tenant_id = $1", [D, JSON.stringify(ref)]);
    await ensureDedicatedDatabase(db.admin, db.adminUrl, D, ref);
    dPool = new pg.Pool({ connectionString: databaseUrl(ref, db.adminUrl), max: 2 });
    for (const age of AGES) for (const p of [db.admin, dPool]) await p.query("SELECT millrace.ensure_sensor_partitions($1, $1)", [new Date(at(age))]);
    for (const t of [A, B, C, D]) {
      const store = storeOf(t);
      for (const age of AGES) {
        await store.query("INSERT INTO sensor_data_raw (time, tenant_id, equipment_id, facility_id, temperature) VALUES ($1, $2, 'pump-1', 'fac-1', 20)", [new Date(at(age)), t]);
      }
      const loc = resolveParquetLocation((await loadTenantStorage(db.admin, t))!, config, env());
      const topic = `sensor-data-${t}`;
      for (const [offset, age] of FILE_AGES.entries()) {
        const body = Buffer.from(`not really parquet: ${t} ${offset}`);
        const key = locationObjectKey(loc, { topic, partition: 0, firstOffset: offset, lastOffset: offset, firstTime: at(age) });
        const digest = sha256(body).hex;
        await planFile(store, { consumerGroup: GROUP, topic, partition: 0, firstOffset: offset, lastOffset: offset, tenantId: t, bucket, objectKey: key, rowCount: 1, minTime: at(age), maxTime: at(age) });
        await putObjectVerified(s3, { bucket, key, body });
        await markUploaded(store, { consumerGroup: GROUP, topic, partition: 0, firstOffset: offset, lastOffset: offset, byteSize: body.length, sha256: digest });
      }
    }
  });

  afterAll(async () => {
    if (s3) {
      const res = await s3.send(new ListObjectsV2Command({ Bucket: bucket }));
      const keys = (res.Contents ?? []).map((o) => ({ Key: o.Key! }));
      if (keys.length) await s3.send(new DeleteObjectsCommand({ Bucket: bucket, Delete: { Objects: keys } }));
      await s3.send(new DeleteBucketCommand({ Bucket: bucket })).catch(() => {});
      cache.destroy();
    }
    await dPool?.end();
    await db?.drop();
  });

  const cli = (args: string[]) =>
    run(join(repoRoot, "millrace"), ["retention", "run", ...args], {
      env: { ...env(), MILLRACE_PG_ADMIN_URL: db.adminUrl, MILLRACE_PG_URL: "", MILLRACE_PG_ROLE: "" },
      cwd: repoRoot,
      timeout: 90_000,
    });

  it("--dry-run counts and removes nothing", async () => {
    const before = { parts: await partitions(), a: await ages(A), files: await fileAges(A) };
    const r = await cli(["--dry-run"]);
    expect(r.stdout).toMatch(/dry run/);
    expect(r.stdout).toMatch(new RegExp(`${A}\\s+A\\s+30 d\\s+\\S+\\s+3\\s+2`));
    expect(r.stdout).toMatch(new RegExp(`${B}\\s+B\\s+90 d\\s+\\S+\\s+2\\s+1`));
    expect(r.stdout).toMatch(new RegExp(`${C}\\s+C\\s+unlimited\\s+-\\s+0\\s+0`));
    expect(r.stdout).toMatch(new RegExp(`${D}\\s+D\\s+30 d\\s+\\S+\\s+3\\s+2`));
    expect(await partitions()).toEqual(before.parts);
    expect(await ages(A)).toEqual(before.a);
    expect(await fileAges(A)).toEqual(before.files);
    expect(await objects(A)).toHaveLength(3);
  });

  it("each tenant keeps what its retention allows; partitions are kept; others' data untouched", async () => {
    const partsBefore = await partitions();
    expect(partsBefore.length).toBeGreaterThanOrEqual(AGES.length);
    const r = await cli([]);
    expect(r.stdout).toMatch(/removed 8 rows and 5 Parquet objects over 4 tenants/);

    expect(await ages(A)).toEqual([10]);
    expect(await ages(B)).toEqual([10, 45]);
    expect(await ages(C)).toEqual([10, 45, 100, 400]);
    expect(await ages(D)).toEqual([10]); // in its own database
    expect((await db.admin.query("SELECT 1 FROM sensor_data_raw WHERE tenant_id = $1", [D])).rowCount).toBe(0);
    // No partition was dropped: the 100- and 400-day partitions still hold C's rows.
    expect(await partitions()).toEqual(partsBefore);

    expect(await fileAges(A)).toEqual([10]);
    expect(await fileAges(B)).toEqual([45, 10]);
    expect(await fileAges(C)).toEqual([400, 45, 10]);
    expect(await fileAges(D)).toEqual([10]);
    expect(await objects(A)).toHaveLength(1);
    expect(await objects(B)).toHaveLength(2);
    expect(await objects(C)).toHaveLength(3);
    expect(await objects(D)).toHaveLength(1);
    // The kept objects are exactly the ones the manifest still names.
    for (const t of [A, B, C, D]) {
      const keys = (await storeOf(t).query<{ object_key: string }>("SELECT object_key FROM millrace.parquet_files WHERE tenant_id = $1 ORDER BY object_key", [t])).rows.map((x) => x.object_key);
      expect(await objects(t)).toEqual(keys.sort());
    }

    // A second run finds nothing more.
    const again = await cli(["--quiet"]);
    expect(again.stdout).toMatch(/removed 0 rows and 0 Parquet objects/);
  });
});
