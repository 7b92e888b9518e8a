/**
 * Moving a tenant's store between the shared database and a dedicated one, while workers run
 * (docs/tenancy.md "Moving a tenant"). Nothing is lost or stored twice at the switch:
 *
 *  1. Fence the old store: in one transaction, every offsets row of the tenant's topic (every known
 *     consumer group, every partition — a missing row is created) becomes a tombstone
 *     (next_offset = -1, the real value kept in moved_next_offset). The row locks wait for a batch
 *     in flight to commit; after this no batch and no Parquet upload of the tenant can commit in the
 *     old store (their fence expects a real offset), and workers that read -1 wait for the switch.
 *  2. Copy the tenant's data into the new store — readings, dead letters, alarm state, alerts and
 *     their outbox, the Parquet manifest — then its real offsets. Each copy goes through a staging
 *     table and `INSERT … ON CONFLICT DO NOTHING`, so a rerun of an interrupted move completes it.
 *  3. Switch: the tenants row names the new store (workers see it at once when they meet a tombstone,
 *     else within tenant_refresh) and resume from the copied offsets.
 *  4. Remove the tenant's data from the old store (the tombstones stay, fencing any stale worker).
 *
 * The tenant's ingestion pauses from 1 to 3 (the copy); other tenants are not affected. The tenant
 * id reaches SQL only as a bound parameter: the COPY queries select through the session's tenant
 * context (`millrace.current_tenant_id()`), which is set with a bound parameter.
 */
import { pipeline } from "node:stream/promises";
import type { Admin } from "kafkajs";
import pg from "pg";
import { from as copyFrom, to as copyTo } from "pg-copy-streams";
import { databaseUrl, describeDatabaseRef, ensureDedicatedDatabase, newDedicatedDatabaseName, tenantDatabaseRef, type DatabaseRef } from "./database.ts";
import { tenantTopics } from "./provision.ts";
import { deleteObjects, deleteTenantRows } from "./retention.ts";
import { GetObjectCommand } from "@aws-sdk/client-s3";
import {
  bucketNameProblem,
  describeLocation,
  loadTenantStorage,
  resolveParquetLocation,
  type Env,
  type ParquetLocation,
  type ParquetStorageConfig,
  type S3ClientCache,
  type TenantStorage,
} from "../sinks/s3-parquet/location.ts";
import { putObjectVerified } from "../sinks/s3-parquet/uploader.ts";
import type { DeploymentType } from "./lifecycle.ts";

/** The tenant's tables of a store, in copy order (parents before children). */
const TENANT_TABLES = ["public.sensor_data_raw", "millrace.dead_letters", "public.alarms", "public.alerts", "millrace.alerts_outbox", "millrace.parquet_files"] as const;

export interface MoveRequest {
  to: "shared" | "dedicated";
  /** Consumer groups whose offsets move (default: every group with offsets for the tenant's topic). */
  consumerGroups?: string[];
}

export interface MoveResult {
  tenantId: string;
  from: string;
  to: string;
  moved: boolean;
  deploymentType: DeploymentType;
  copied: Record<string, number>;
  offsets: number;
}

interface MoveContext {
  db: pg.Pool;
  kafka: Admin;
  adminUrl?: string;
  progress?: (line: string) => void;
}

function describe(ref: DatabaseRef | null): string {
  return ref ? describeDatabaseRef(ref) : "the shared database";
}

async function withClient<T>(url: string, fn: (c: pg.Client) => Promise<T>): Promise<T> {
  const c = new pg.Client({ connectionString: url, application_name: "millrace-move", options: "-c TimeZone=UTC" });
  await c.connect();
  try {
    return await fn(c);
  } finally {
    await c.end().catch(() => {});
  }
}

/**
 * Columns that mean something only in their own database, left out of a move: `relay_batch` is the
 * old store's outbox relay claim (its batch numbers and Kafka marker); in the new store the row is
 * simply unclaimed (migrations/011_outbox_relay.sql).
 */
const STORE_LOCAL_COLUMNS = new Set(["relay_batch"]);

async function columnsOf(c: pg.Client, table: string): Promise<string[]> {
  const [schema, name] = table.split(".") as [string, string];
  const res = await c.query<{ column_name: string }>(
    "SELECT column_name FROM information_schema.columns WHERE table_schema = $1 AND table_name = $2 AND is_generated = 'NEVER' ORDER BY ordinal_position",
    [schema, name],
  );
  return res.rows.map((r) => r.column_name).filter((n) => !STORE_LOCAL_COLUMNS.has(n));
}

/** Copy the tenant's rows of `table` from → to (binary COPY through a staging table; a rerun adds what is missing). */
async function copyTable(from: pg.Client, to: pg.Client, table: string, tenantId: string): Promise<number> {
  const cols = await columnsOf(from, table);
  const list = cols.map((c) => from.escapeIdentifier(c)).join(", ");
  await from.query("SELECT set_config('app.current_tenant_id', $1, false)", [tenantId]);
  await to.query("BEGIN");
  try {
    await to.query(`CREATE TEMP TABLE millrace_move_stage (LIKE ${table}) ON COMMIT DROP`);
    await pipeline(
      from.query(copyTo(`COPY (SELECT ${list} FROM ${table} WHERE tenant_id = millrace.current_tenant_id()) TO STDOUT (FORMAT binary)`)),
      to.query(copyFrom(`COPY millrace_move_stage (${list}) FROM STDIN (FORMAT binary)`)),
    );
    const ins = await to.query(`INSERT INTO ${table} (${list}) SELECT ${list} FROM millrace_move_stage ON CONFLICT DO NOTHING`);
    await to.query("COMMIT");
    return ins.rowCount ?? 0;
  } catch (err) {
    await to.query("ROLLBACK").catch(() => {});
    throw err;
  }
}


type Fenced = { co: Array<{ consumer_group: string; partition: number; v: string | null }>; so: Array<{ sink: string; consumer_group: string; partition: number; v: string | null }> };

/**
 * Step 1 of a move: make every offsets row of `topic` in this store a tombstone (a missing row is
 * created as one), in one transaction; returns the real offsets (rows never consumed: none).
 */
async function fenceTopic(c: pg.Client, topic: string, partitions: number, extraGroups: readonly string[]): Promise<Fenced> {
  await c.query("BEGIN");
  try {
    const groups = new Set(extraGroups);
    for (const g of (await c.query<{ g: string }>("SELECT DISTINCT consumer_group AS g FROM millrace.consumer_offsets WHERE topic = $1", [topic])).rows) groups.add(g.g);
    for (const g of groups) {
      for (let p = 0; p < partitions; p++) {
        await c.query("INSERT INTO millrace.consumer_offsets (consumer_group, topic, partition, next_offset) VALUES ($1, $2, $3, -1) ON CONFLICT DO NOTHING", [g, topic, p]);
        await c.query("INSERT INTO millrace.sink_offsets (sink, consumer_group, topic, partition, next_offset) VALUES ('s3_parquet', $1, $2, $3, -1) ON CONFLICT DO NOTHING", [g, topic, p]);
      }
    }
    const co = await c.query<{ consumer_group: string; partition: number; v: string | null }>(
      `UPDATE millrace.consumer_offsets SET moved_next_offset = CASE WHEN next_offset >= 0 THEN next_offset ELSE moved_next_offset END, next_offset = -1, updated_at = now()
       WHERE topic = $1 RETURNING consumer_group, partition, moved_next_offset::text AS v`,
      [topic],
    );
    const so = await c.query<{ sink: string; consumer_group: string; partition: number; v: string | null }>(
      `UPDATE millrace.sink_offsets SET moved_next_offset = CASE WHEN next_offset >= 0 THEN next_offset ELSE moved_next_offset END, next_offset = -1, updated_at = now()
       WHERE topic = $1 RETURNING sink, consumer_group, partition, moved_next_offset::text AS v`,
      [topic],
    );
    await c.query("COMMIT");
    return { co: co.rows.filter((x) => x.v !== null), so: so.rows.filter((x) => x.v !== null) };
  } catch (err) {
    await c.query("ROLLBACK").catch(() => {});
    throw err;
  }
}

/** Undo {@link fenceTopic} in the same store: the real offsets back, never-consumed tombstones gone. */
async function unfenceTopic(c: pg.Client, topic: string): Promise<void> {
  await c.query("BEGIN");
  for (const table of ["millrace.consumer_offsets", "millrace.sink_offsets"]) {
    await c.query(`UPDATE ${table} SET next_offset = moved_next_offset, moved_next_offset = NULL, updated_at = now() WHERE topic = $1 AND next_offset = -1 AND moved_next_offset IS NOT NULL`, [topic]);
    await c.query(`DELETE FROM ${table} WHERE topic = $1 AND next_offset = -1 AND moved_next_offset IS NULL`, [topic]);
  }
  await c.query("COMMIT");
}

/**
 * Move the tenant's store to the shared database or to a (new) dedicated one; its deployment type
 * follows (dedicated database + dedicated bucket = single-tenant, shared + shared = multi-tenant,
 * otherwise hybrid). Rerunnable: a move interrupted before the switch is completed by running it
 * again (into a new dedicated database; the one left behind is reported).
 */
export async function moveTenantDatabase(ctx: MoveContext, tenantId: string, r: MoveRequest): Promise<MoveResult> {
  if (!ctx.adminUrl) throw new Error("moving a tenant's database needs the shared database's admin URL: set MILLRACE_PG_ADMIN_URL");
  const adminUrl = ctx.adminUrl;
  const log = ctx.progress ?? (() => {});
  const row = await ctx.db.query<{ status: string; storage_mode: string; deployment_type: DeploymentType }>("SELECT status, storage_mode, deployment_type FROM tenants WHERE tenant_id = $1", [tenantId]);
  const t = row.rows[0];
  if (!t) throw new Error(`tenant ${tenantId} does not exist`);
  if (t.status === "deleted") throw new Error(`tenant ${tenantId} is deleted; it is not moved`);
  const fromRef = await tenantDatabaseRef(ctx.db, tenantId);
  const deploymentType: DeploymentType = r.to === "dedicated" ? (t.storage_mode === "dedicated" ? "single-tenant" : "hybrid") : t.storage_mode === "dedicated" ? "hybrid" : "multi-tenant";
  if ((r.to === "shared") === (fromRef === null)) {
    return { tenantId, from: describe(fromRef), to: describe(fromRef), moved: false, deploymentType: t.deployment_type, copied: {}, offsets: 0 };
  }
  const toRef: DatabaseRef | null = r.to === "dedicated" ? { database: newDedicatedDatabaseName() } : null;
  const fromUrl = fromRef ? databaseUrl(fromRef, adminUrl) : adminUrl;
  const toUrl = toRef ? databaseUrl(toRef, adminUrl) : adminUrl;
  if (toRef) {
    log(`creating ${describe(toRef)}`);
    await ensureDedicatedDatabase(ctx.db, adminUrl, tenantId, toRef, log);
  }
  const topic = tenantTopics(tenantId).sensorData;
  const partitions = (await ctx.kafka.fetchTopicMetadata({ topics: [topic] })).topics[0]?.partitions.length ?? 0;

  let offsets: Fenced;
  const copied: Record<string, number> = {};
  try {
    // 1. Fence the old store.
    offsets = await withClient(fromUrl, (c) => fenceTopic(c, topic, partitions, r.consumerGroups ?? []));
    log(`fenced ${topic} in ${describe(fromRef)} (${offsets.co.length} partition offsets); the tenant's ingestion waits for the switch`);

    // 2. Copy the data, then the offsets.
    await withClient(fromUrl, (from) =>
      withClient(toUrl, async (to) => {
        const span = await from.query<{ lo: Date | null; hi: Date | null }>("SELECT min(time) AS lo, max(time) AS hi FROM sensor_data_raw WHERE tenant_id = $1", [tenantId]);
        const { lo, hi } = span.rows[0]!;
        if (lo && hi) await to.query("SELECT millrace.ensure_sensor_partitions($1::timestamptz, $2::timestamptz + interval '1 day')", [lo, hi]);
        for (const table of TENANT_TABLES) {
          copied[table] = await copyTable(from, to, table, tenantId);
          log(`copied ${copied[table]} rows of ${table}`);
        }
        await to.query("BEGIN");
        for (const o of offsets.co) {
          await to.query(
            `INSERT INTO millrace.consumer_offsets (consumer_group, topic, partition, next_offset) VALUES ($1, $2, $3, $4)
             ON CONFLICT (consumer_group, topic, partition) DO UPDATE SET next_offset = EXCLUDED.next_offset, moved_next_offset = NULL, updated_at = now()`,
            [o.consumer_group, topic, o.partition, o.v],
          );
        }
        for (const o of offsets.so) {
          await to.query(
            `INSERT INTO millrace.sink_offsets (sink, consumer_group, topic, partition, next_offset) VALUES ($1, $2, $3, $4, $5)
             ON CONFLICT (sink, consumer_group, topic, partition) DO UPDATE SET next_offset = EXCLUDED.next_offset, moved_next_offset = NULL, updated_at = now()`,
            [o.sink, o.consumer_group, topic, o.partition, o.v],
          );
        }
        await to.query("COMMIT");
      }),
    );

    // 3. Switch.
    await ctx.db.query("UPDATE tenants SET database_mode = $2, database_ref = $3, deployment_type = $4, updated_at = now() WHERE tenant_id = $1", [
      tenantId,
      toRef ? "dedicated" : "shared",
      toRef ? JSON.stringify(toRef) : null,
      deploymentType,
    ]);
    log(`switched: ${tenantId} now lives in ${describe(toRef)} (${deploymentType}); workers resume from the copied offsets`);
  } catch (err) {
    if (toRef) log(`the move stopped before the switch; ${describe(toRef)} was left behind (drop it, or rerun the move)`);
    throw err;
  }

  // 4. Clean the old store (tombstones stay).
  await withClient(fromUrl, async (c) => {
    const pool = new pg.Pool({ connectionString: fromUrl, max: 1 });
    try {
      const rows = await deleteTenantRows(pool, tenantId, undefined, { progress: log });
      log(`removed ${rows} readings from ${describe(fromRef)}`);
    } finally {
      await pool.end();
    }
    for (const table of [...TENANT_TABLES].reverse()) if (table !== "public.sensor_data_raw") await c.query(`DELETE FROM ${table} WHERE tenant_id = $1`, [tenantId]);
  });
  return { tenantId, from: describe(fromRef), to: describe(toRef), moved: true, deploymentType, copied, offsets: offsets.co.length };
}

export interface StorageMoveRequest {
  /** The shared bucket (its tenant prefix), or a dedicated bucket under a KMS key. */
  to: { mode: "shared" } | { mode: "dedicated"; bucket: string; kmsKeyId: string };
  consumerGroups?: string[];
}

export interface StorageMoveResult {
  tenantId: string;
  from: string;
  to: string;
  moved: boolean;
  deploymentType: DeploymentType;
  /** Uploaded files copied (and verified) into the new place. */
  objectsCopied: number;
  /** Planned (not yet uploaded) files whose boundaries now name the new place. */
  plannedRepointed: number;
}

type StorageMoveContext = MoveContext & { s3: S3ClientCache; storageConfig: ParquetStorageConfig; env: Env; ensureBucket: (loc: ParquetLocation) => Promise<boolean> };

/**
 * Move the tenant's Parquet files to a dedicated bucket (with its KMS key) or back to the shared
 * bucket, while workers run (docs/tenancy.md "Moving a tenant"): fence the tenant's topic in its
 * store (as for a database move), copy every uploaded file into the new place (each copy verified
 * by size and SHA-256 against the manifest) and point the manifest at it, point planned files at
 * the new place, switch the tenants row, lift the fence (the same store: the real offsets come
 * back), and delete the old objects. Every reading stays in exactly one file, and after the move
 * every file is in the tenant's new place.
 */
export async function moveTenantStorage(ctx: StorageMoveContext, tenantId: string, r: StorageMoveRequest): Promise<StorageMoveResult> {
  const log = ctx.progress ?? (() => {});
  const current = await loadTenantStorage(ctx.db, tenantId);
  if (!current) throw new Error(`tenant ${tenantId} does not exist`);
  const status = (await ctx.db.query<{ status: string; database_mode: string }>("SELECT status, database_mode FROM tenants WHERE tenant_id = $1", [tenantId])).rows[0]!;
  if (status.status === "deleted") throw new Error(`tenant ${tenantId} is deleted; it is not moved`);
  const from = resolveParquetLocation(current, ctx.storageConfig, ctx.env);
  const target: TenantStorage =
    r.to.mode === "shared"
      ? { ...current, storageMode: "shared", storageBucket: null, storageRef: null, kmsKeyId: null }
      : { ...current, storageMode: "dedicated", storageBucket: r.to.bucket, storageRef: null, kmsKeyId: r.to.kmsKeyId };
  if (r.to.mode === "dedicated") {
    const bp = bucketNameProblem(r.to.bucket);
    if (bp) throw new Error(bp);
    if (r.to.bucket === ctx.storageConfig.sharedBucket) throw new Error(`bucket ${r.to.bucket} is the shared bucket`);
  }
  const dedicatedDb = status.database_mode === "dedicated";
  const deploymentType: DeploymentType = r.to.mode === "dedicated" ? (dedicatedDb ? "single-tenant" : "hybrid") : dedicatedDb ? "hybrid" : "multi-tenant";
  const to = resolveParquetLocation({ ...target, deploymentType }, ctx.storageConfig, ctx.env);
  if (to.bucket === from.bucket && to.tenantPrefix === from.tenantPrefix && to.kmsKeyId === from.kmsKeyId) {
    return { tenantId, from: describeLocation(from), to: describeLocation(to), moved: false, deploymentType: current.deploymentType, objectsCopied: 0, plannedRepointed: 0 };
  }
  if (to.mode === "dedicated" && (await ctx.ensureBucket(to))) log(`created bucket ${to.bucket}`);
  const topic = tenantTopics(tenantId).sensorData;
  const partitions = (await ctx.kafka.fetchTopicMetadata({ topics: [topic] })).topics[0]?.partitions.length ?? 0;
  const storeUrl = await (async () => {
    const ref = await tenantDatabaseRef(ctx.db, tenantId);
    if (ref && !ctx.adminUrl) throw new Error("the tenant has a dedicated database; reaching it needs MILLRACE_PG_ADMIN_URL");
    return ref ? databaseUrl(ref, ctx.adminUrl!) : ctx.adminUrl;
  })();
  if (!storeUrl) throw new Error("moving a tenant's storage needs the shared database's admin URL: set MILLRACE_PG_ADMIN_URL");
  const fromClient = ctx.s3.clientForLocation(from);
  const toClient = ctx.s3.clientForLocation(to);
  const oldKeys: string[] = [];
  let objectsCopied = 0;
  let plannedRepointed = 0;
  await withClient(storeUrl, async (c) => {
    await fenceTopic(c, topic, partitions, r.consumerGroups ?? []);
    log(`fenced ${topic}: the tenant's ingestion waits while its files move`);
    try {
      const files = await c.query<{ topic: string; partition: number; first_offset: string; object_key: string; bucket: string; status: string; byte_size: string | null; sha256: string | null }>(
        "SELECT topic, partition, first_offset, object_key, bucket, status, byte_size, sha256 FROM millrace.parquet_files WHERE tenant_id = $1 ORDER BY topic, partition, first_offset",
        [tenantId],
      );
      for (const f of files.rows) {
        if (f.bucket === to.bucket && f.object_key.startsWith(to.tenantPrefix)) continue; // a rerun: already there
        if (!f.object_key.startsWith(from.tenantPrefix) || f.bucket !== from.bucket) throw new Error(`s3://${f.bucket}/${f.object_key} is not in the tenant's place s3://${from.bucket}/${from.tenantPrefix}; not moved (parquet verify)`);
        const key = `${to.tenantPrefix}${f.object_key.slice(from.tenantPrefix.length)}`;
        if (f.status === "uploaded") {
          const got = await fromClient.send(new GetObjectCommand({ Bucket: f.bucket, Key: f.object_key }));
          const body = Buffer.from(await got.Body!.transformToByteArray());
          if (f.byte_size !== null && body.length !== Number(f.byte_size)) throw new Error(`s3://${f.bucket}/${f.object_key} has ${body.length} bytes, the manifest says ${f.byte_size}; not moved (parquet verify)`);
          const up = await putObjectVerified(toClient, { bucket: to.bucket, key, body, kmsKeyId: to.kmsKeyId });
          if (f.sha256 !== null && up.sha256 !== f.sha256) throw new Error(`copy of s3://${f.bucket}/${f.object_key} has SHA-256 ${up.sha256}, the manifest says ${f.sha256}`);
          objectsCopied++;
        } else {
          plannedRepointed++;
        }
        await c.query("UPDATE millrace.parquet_files SET bucket = $5, object_key = $6 WHERE topic = $1 AND partition = $2 AND first_offset = $3 AND tenant_id = $4", [f.topic, f.partition, f.first_offset, tenantId, to.bucket, key]);
        oldKeys.push(f.object_key);
        if (objectsCopied > 0 && objectsCopied % 50 === 0) log(`copied ${objectsCopied} of ${files.rows.length} files`);
      }
      await ctx.db.query(
        "UPDATE tenants SET storage_mode = $2, storage_bucket = $3, storage_ref = NULL, kms_key_id = $4, deployment_type = $5, updated_at = now() WHERE tenant_id = $1",
        [tenantId, to.mode, to.mode === "dedicated" ? to.bucket : null, to.kmsKeyId ?? null, deploymentType],
      );
      if (dedicatedDb) {
        // The dedicated store's copy of the row, which its Parquet planning checks against.
        await c.query("UPDATE tenants SET storage_mode = $2, storage_bucket = $3, storage_ref = NULL, kms_key_id = $4, deployment_type = $5, updated_at = now() WHERE tenant_id = $1", [
          tenantId,
          to.mode,
          to.mode === "dedicated" ? to.bucket : null,
          to.kmsKeyId ?? null,
          deploymentType,
        ]);
      }
      log(`switched: ${tenantId}'s files are in ${describeLocation(to)} (${objectsCopied} copied, ${plannedRepointed} planned files repointed)`);
    } finally {
      // Whether the switch happened or not, the tenant's ingestion goes on (from the same store).
      await unfenceTopic(c, topic);
    }
  });
  // The old objects go last, once the manifest names only the new ones (a planned file's old key
  // too: an upload in flight at the fence may have written it).
  const failed = await deleteObjects(from, ctx.s3, oldKeys);
  if (failed.size > 0) log(`could not delete ${failed.size} old objects (e.g. ${[...failed][0]!.join(": ")}); delete them from s3://${from.bucket}/${from.tenantPrefix}`);
  return { tenantId, from: describeLocation(from), to: describeLocation(to), moved: true, deploymentType, objectsCopied, plannedRepointed };
}
