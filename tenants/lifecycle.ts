/**
 * The tenant lifecycle (docs/tenancy.md): create (idempotent, completes a partial create), list,
 * show, update, suspend, resume, delete [--purge]. The CLI (cli/tenants.ts) is a thin layer over
 * these functions. Tenant ids reach SQL only as bound parameters, and topic names and S3 prefixes
 * only from validated UUIDs.
 */
import { randomUUID } from "node:crypto";
import { CreateBucketCommand, HeadBucketCommand, ListObjectsV2Command } from "@aws-sdk/client-s3";
import type { Admin } from "kafkajs";
import type pg from "pg";
import { s3StatusCode } from "../sinks/s3-parquet/s3-errors.ts";
import {
  bucketNameProblem,
  describeLocation,
  loadTenantStorage,
  resolveParquetLocation,
  type Env,
  type ParquetLocation,
  type ParquetStorageConfig,
  type S3ClientCache,
} from "../sinks/s3-parquet/location.ts";
import { TENANT_ID } from "../sinks/s3-parquet/keys.ts";
import { createTenant, tenantTopics } from "./provision.ts";
import { describeDatabaseRef, newDedicatedDatabaseName, parseDatabaseRef, withTenantStore } from "./database.ts";
import { configCommandScramAdmin, ensureTenantCredentials, removeTenantCredentials, type ScramAdmin, type TenantCredentials } from "./credentials.ts";
import { kafkaAuthFromEnv } from "../lib/kafka-client.ts";
import { deleteObjects, deleteTenantRows } from "./retention.ts";
import { TIERS, type Tier } from "./tiers.ts";

export type DeploymentType = "multi-tenant" | "single-tenant" | "hybrid";
export type TenantStatus = "active" | "suspended" | "deleted";

export interface LifecycleContext {
  /** Admin/owner pool (writes tenants, deletes rows when purging). */
  db: pg.Pool;
  /** Kafka admin client, connected. */
  kafka: Admin;
  s3: S3ClientCache;
  storageConfig: ParquetStorageConfig;
  env: Env;
  progress?: (line: string) => void;
  /**
   * Admin URL of the shared database (superuser or CREATEDB): dedicated databases are created on
   * its server and migrated through it. Needed for tenants with a dedicated database.
   */
  adminUrl?: string;
  /**
   * SCRAM credentials of tenant users (default: Kafka's ConfigCommand, tenants/credentials.ts).
   * Tenant Kafka identities are provisioned only when the admin connection itself uses SASL
   * (MILLRACE_KAFKA_USERNAME set): a broker without SASL has no users to create.
   */
  scram?: ScramAdmin;
}

/** Whether this deployment's Kafka uses SASL (then every tenant gets its own producer identity). */
export function kafkaUsesSasl(ctx: LifecycleContext): boolean {
  return kafkaAuthFromEnv("default", ctx.env as NodeJS.ProcessEnv) !== undefined;
}

function credentialsContext(ctx: LifecycleContext) {
  const auth = kafkaAuthFromEnv("default", ctx.env as NodeJS.ProcessEnv);
  return { kafka: ctx.kafka, scram: ctx.scram ?? configCommandScramAdmin({ env: ctx.env as NodeJS.ProcessEnv, auth }), mechanism: auth?.mechanism };
}

/** Create (or complete) the tenant's producer identity; `rotate` sets a new password. */
export async function tenantCredentials(ctx: LifecycleContext, tenantId: string, o: { rotate?: boolean } = {}): Promise<TenantCredentials> {
  const id = parseTenantId(tenantId);
  const row = await getTenant(ctx.db, id);
  if (!row) throw new Error(`tenant ${id} does not exist`);
  if (row.status === "deleted") throw new Error(`tenant ${id} is deleted; it gets no Kafka credentials`);
  if (!kafkaUsesSasl(ctx)) throw new Error("Kafka is used without SASL (MILLRACE_KAFKA_USERNAME is not set): there are no tenant credentials to make");
  return await ensureTenantCredentials(credentialsContext(ctx), id, o);
}

export interface TenantRow {
  tenant_id: string;
  tenant_name: string;
  deployment_type: DeploymentType;
  data_region: string;
  retention_policy_days: number | null;
  max_equipment: number;
  subscription_tier: Tier;
  status: TenantStatus;
  database_mode: "shared" | "dedicated";
  database_ref: unknown;
  storage_mode: "shared" | "dedicated";
  storage_bucket: string | null;
  kms_key_id: string | null;
  created_at: Date;
  updated_at: Date;
}

const ROW_COLUMNS =
  "tenant_id, tenant_name, deployment_type, data_region, retention_policy_days, max_equipment, subscription_tier, status, database_mode, database_ref, storage_mode, storage_bucket, kms_key_id, created_at, updated_at";

export function parseTenantId(raw: string): string {
  const t = raw.trim().toLowerCase();
  if (!TENANT_ID.test(t)) throw new Error(`not a tenant id (UUID): ${JSON.stringify(raw)}`);
  return t;
}

export interface CreateRequest {
  name: string;
  tenantId?: string;
  tier?: Tier;
  deploymentType?: DeploymentType;
  bucket?: string;
  kmsKeyId?: string;
  /** Where its rows live; default: dedicated for single-tenant, shared otherwise (docs/tenancy.md). */
  database?: "shared" | "dedicated";
  /** If the tenant's Kafka user exists already (a rerun), set a new password and return it (the demo does). */
  rotateKafkaPassword?: boolean;
}

export interface CreateResult {
  tenantId: string;
  /** false: the row existed already (a rerun); the remaining steps were completed. */
  rowCreated: boolean;
  topics: ReturnType<typeof tenantTopics>;
  location: ParquetLocation;
  bucketCreated: boolean;
  /** "shared", or the dedicated database (tenants/database.ts). */
  database: string;
  /** The tenant's Kafka producer identity (undefined: Kafka without SASL); `password` only when created now. */
  kafkaCredentials?: TenantCredentials;
  notes: string[];
}

/** Which storage the request asks for; throws on a contradictory request. */
function storagePlan(r: CreateRequest): { mode: "shared" | "dedicated"; bucket: string | null; kmsKeyId: string | null } {
  const dep = r.deploymentType ?? "multi-tenant";
  const dedicated = r.bucket !== undefined || r.kmsKeyId !== undefined;
  if (dep === "multi-tenant" && dedicated) throw new Error("a multi-tenant tenant's files go to the shared bucket: --bucket/--kms-key-id need --deployment single-tenant or hybrid");
  if (dep === "single-tenant" && !dedicated) throw new Error("a single-tenant tenant needs its own bucket: give --bucket and --kms-key-id");
  if (!dedicated) return { mode: "shared", bucket: null, kmsKeyId: null };
  if (!r.bucket || !r.kmsKeyId) throw new Error("dedicated storage needs both --bucket and --kms-key-id");
  const bp = bucketNameProblem(r.bucket);
  if (bp) throw new Error(bp);
  return { mode: "dedicated", bucket: r.bucket, kmsKeyId: r.kmsKeyId };
}

/** Which database the request asks for; throws on a contradictory request. */
function databasePlan(r: CreateRequest): "shared" | "dedicated" {
  const dep = r.deploymentType ?? "multi-tenant";
  if (dep === "multi-tenant") {
    if (r.database === "dedicated") throw new Error("a multi-tenant tenant's rows live in the shared database: --database dedicated needs --deployment single-tenant or hybrid");
    return "shared";
  }
  if (dep === "single-tenant") {
    if (r.database === "shared") throw new Error("a single-tenant tenant has its own database: --database shared needs --deployment multi-tenant or hybrid");
    return "dedicated";
  }
  return r.database ?? "shared";
}

export async function ensureBucket(ctx: LifecycleContext, loc: ParquetLocation): Promise<boolean> {
  const client = ctx.s3.clientForLocation(loc);
  try {
    await client.send(new HeadBucketCommand({ Bucket: loc.bucket }));
    return false;
  } catch (err) {
    const code = s3StatusCode(err);
    if (code !== 404 && code !== 301 && (err as Error).name !== "NotFound") throw err;
  }
  try {
    await client.send(new CreateBucketCommand({ Bucket: loc.bucket }));
    return true;
  } catch (err) {
    if ((err as Error).name === "BucketAlreadyOwnedByYou") return false;
    throw err;
  }
}

/**
 * Create a tenant, or complete a partial create: the tenants row (written once, never overwritten
 * by a rerun), its three topics, and for dedicated storage its bucket (CreateBucket on the S3 the
 * location resolves to). A deleted tenant is never brought back.
 */
export async function createTenantLifecycle(ctx: LifecycleContext, r: CreateRequest): Promise<CreateResult> {
  const tenantId = r.tenantId !== undefined ? parseTenantId(r.tenantId) : randomUUID();
  const tier = r.tier ?? "basic";
  const dep = r.deploymentType ?? "multi-tenant";
  const storage = storagePlan(r);
  const database = databasePlan(r);
  if (database === "dedicated" && !ctx.adminUrl) throw new Error("a dedicated database is created through the shared database's admin URL: set MILLRACE_PG_ADMIN_URL");
  if (storage.bucket && storage.bucket === ctx.storageConfig.sharedBucket) throw new Error(`bucket ${storage.bucket} is the shared bucket`);
  const notes: string[] = [];
  const policy = TIERS[tier];
  const ins = await ctx.db.query(
    `INSERT INTO tenants (tenant_id, tenant_name, deployment_type, retention_policy_days, max_equipment, subscription_tier, storage_mode, storage_bucket, kms_key_id, database_mode, database_ref)
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)
     ON CONFLICT (tenant_id) DO NOTHING`,
    [
      tenantId,
      r.name,
      dep,
      policy.retentionDays,
      policy.maxEquipment,
      tier,
      storage.mode,
      storage.bucket,
      storage.kmsKeyId,
      database,
      database === "dedicated" ? JSON.stringify({ database: newDedicatedDatabaseName() }) : null,
    ],
  );
  const rowCreated = (ins.rowCount ?? 0) > 0;
  const row = await getTenant(ctx.db, tenantId);
  if (!row) throw new Error(`tenant ${tenantId}: row vanished during create`);
  if (row.status === "deleted") throw new Error(`tenant ${tenantId} was deleted; a deleted tenant is not recreated (create a new tenant id)`);
  if (!rowCreated) {
    const differs: string[] = [];
    if (row.tenant_name !== r.name) differs.push(`name ${JSON.stringify(row.tenant_name)}`);
    if (r.tier !== undefined && row.subscription_tier !== r.tier) differs.push(`tier ${row.subscription_tier}`);
    if (r.deploymentType !== undefined && row.deployment_type !== r.deploymentType) differs.push(`deployment ${row.deployment_type}`);
    if (storage.bucket !== null && row.storage_bucket !== storage.bucket) differs.push(`bucket ${row.storage_bucket ?? "(shared)"}`);
    if (row.database_mode !== database) differs.push(`database ${row.database_mode}`);
    notes.push(`tenant row existed already${differs.length ? ` (kept as is: ${differs.join(", ")}; use \`tenants update\`)` : ""}; completing the remaining steps`);
  }
  // The dedicated database (created and migrated if missing), then the topics (createTenant: its
  // INSERT is a no-op now, the database and topics are made if missing).
  const { topics } = await createTenant(ctx.db, ctx.kafka, {
    tenantId,
    name: row.tenant_name,
    tier: row.subscription_tier,
    deploymentType: row.deployment_type,
    dedicatedDatabase: row.database_mode === "dedicated" ? { adminUrl: ctx.adminUrl!, log: ctx.progress } : undefined,
  });
  if (row.database_mode === "dedicated" && !ctx.adminUrl) throw new Error("this tenant has a dedicated database; completing its create needs MILLRACE_PG_ADMIN_URL");
  const st = await loadTenantStorage(ctx.db, tenantId);
  const location = resolveParquetLocation(st!, ctx.storageConfig, ctx.env);
  let bucketCreated = false;
  if (location.mode === "dedicated") bucketCreated = await ensureBucket(ctx, location);
  let kafkaCredentials: TenantCredentials | undefined;
  if (kafkaUsesSasl(ctx)) {
    kafkaCredentials = await ensureTenantCredentials(credentialsContext(ctx), tenantId, { rotate: r.rotateKafkaPassword });
    if (!kafkaCredentials.created && !kafkaCredentials.rotated) notes.push(`Kafka user ${kafkaCredentials.username} existed already; its password is not shown again (new one: tenants credentials ${tenantId} --rotate)`);
  }
  return { tenantId, rowCreated, topics, location, bucketCreated, database: databaseOf(row), kafkaCredentials, notes };
}

function databaseOf(row: TenantRow): string {
  if (row.database_mode !== "dedicated") return "shared";
  try {
    return describeDatabaseRef(parseDatabaseRef(row.database_ref));
  } catch (err) {
    return `misconfigured: ${(err as Error).message}`;
  }
}

export async function getTenant(db: pg.Pool, tenantId: string): Promise<TenantRow | undefined> {
  const res = await db.query<TenantRow>(`SELECT ${ROW_COLUMNS} FROM tenants WHERE tenant_id = $1`, [parseTenantId(tenantId)]);
  return res.rows[0];
}

export async function listTenants(db: pg.Pool): Promise<TenantRow[]> {
  const res = await db.query<TenantRow>(`SELECT ${ROW_COLUMNS} FROM tenants ORDER BY created_at, tenant_id`);
  return res.rows;
}

export interface TenantDetails {
  row: TenantRow;
  topics: Array<{ name: string; exists: boolean; partitions: number | undefined }>;
  storage: string;
  database: string;
}

export async function showTenant(ctx: LifecycleContext, tenantId: string): Promise<TenantDetails | undefined> {
  const row = await getTenant(ctx.db, tenantId);
  if (!row) return undefined;
  const names = Object.values(tenantTopics(row.tenant_id));
  const existing = new Set(await ctx.kafka.listTopics());
  const present = names.filter((n) => existing.has(n));
  const meta = present.length ? await ctx.kafka.fetchTopicMetadata({ topics: present }) : { topics: [] };
  const parts = new Map(meta.topics.map((t) => [t.name, t.partitions.length]));
  let storage: string;
  try {
    const st = await loadTenantStorage(ctx.db, row.tenant_id);
    storage = describeLocation(resolveParquetLocation(st!, ctx.storageConfig, ctx.env));
  } catch (err) {
    storage = `misconfigured: ${(err as Error).message}`;
  }
  return { row, topics: names.map((name) => ({ name, exists: existing.has(name), partitions: parts.get(name) })), storage, database: databaseOf(row) };
}

export interface UpdateRequest {
  name?: string;
  tier?: Tier;
  maxEquipment?: number;
  /** null = unlimited. */
  retentionDays?: number | null;
}

/**
 * Update name, tier, limits. A new tier brings its retention and equipment limit unless they are
 * given explicitly. Takes effect in workers within tenant_refresh.
 */
export async function updateTenant(db: pg.Pool, tenantId: string, u: UpdateRequest): Promise<TenantRow> {
  const id = parseTenantId(tenantId);
  const sets: string[] = [];
  const values: unknown[] = [id];
  const set = (column: string, v: unknown) => {
    values.push(v);
    sets.push(`${column} = $${values.length}`);
  };
  if (u.name !== undefined) {
    if (!u.name.trim()) throw new Error("--name must not be empty");
    set("tenant_name", u.name);
  }
  if (u.tier !== undefined) {
    set("subscription_tier", u.tier);
    if (u.retentionDays === undefined) set("retention_policy_days", TIERS[u.tier].retentionDays);
    if (u.maxEquipment === undefined) set("max_equipment", TIERS[u.tier].maxEquipment);
  }
  if (u.maxEquipment !== undefined) {
    if (!Number.isSafeInteger(u.maxEquipment) || u.maxEquipment < 0) throw new Error("--max-equipment must be a non-negative integer");
    set("max_equipment", u.maxEquipment);
  }
  if (u.retentionDays !== undefined) {
    if (u.retentionDays !== null && (!Number.isSafeInteger(u.retentionDays) || u.retentionDays <= 0)) throw new Error("--retention-days must be a positive integer or 'unlimited'");
    set("retention_policy_days", u.retentionDays);
  }
  if (sets.length === 0) throw new Error("nothing to update (give --name, --tier, --max-equipment or --retention-days)");
  const res = await db.query<TenantRow>(`UPDATE tenants SET ${sets.join(", ")}, updated_at = now() WHERE tenant_id = $1 RETURNING ${ROW_COLUMNS}`, values);
  if (!res.rows[0]) throw new Error(`tenant ${id} does not exist`);
  return res.rows[0];
}

/** Set the status (suspend: active → suspended; resume: suspended → active). Idempotent. */
export async function setTenantStatus(db: pg.Pool, tenantId: string, status: "active" | "suspended"): Promise<{ changed: boolean; row: TenantRow }> {
  const id = parseTenantId(tenantId);
  const row = await getTenant(db, id);
  if (!row) throw new Error(`tenant ${id} does not exist`);
  if (row.status === "deleted") throw new Error(`tenant ${id} is deleted; it cannot be ${status === "active" ? "resumed" : "suspended"}`);
  if (row.status === status) return { changed: false, row };
  const res = await db.query<TenantRow>(
    `UPDATE tenants SET status = $2, updated_at = now() WHERE tenant_id = $1 AND status <> 'deleted' RETURNING ${ROW_COLUMNS}`,
    [id, status],
  );
  if (!res.rows[0]) throw new Error(`tenant ${id} changed concurrently; retry`);
  return { changed: true, row: res.rows[0] };
}

export interface DeleteResult {
  tenantId: string;
  statusChanged: boolean;
  purged: boolean;
  topicsDeleted: string[];
  rowsDeleted: number;
  deadLettersDeleted: number;
  objectsDeleted: number;
  manifestRowsDeleted: number;
  /** ACL bindings of the tenant's Kafka user removed (its SCRAM credential is removed too). */
  kafkaAclsDeleted: number;
}

async function listAllKeys(ctx: LifecycleContext, loc: ParquetLocation): Promise<string[]> {
  const client = ctx.s3.clientForLocation(loc);
  const keys: string[] = [];
  let token: string | undefined;
  do {
    let page;
    try {
      page = await client.send(new ListObjectsV2Command({ Bucket: loc.bucket, Prefix: loc.tenantPrefix, ContinuationToken: token }));
    } catch (err) {
      if (s3StatusCode(err) === 404) return keys; // no bucket: nothing stored
      throw err;
    }
    for (const o of page.Contents ?? []) if (o.Key && o.Key.startsWith(loc.tenantPrefix)) keys.push(o.Key);
    token = page.IsTruncated ? page.NextContinuationToken : undefined;
  } while (token);
  return keys;
}

/**
 * Mark the tenant deleted (workers stop storing its readings within tenant_refresh: they become
 * unknown_tenant dead letters). With purge also: its topics, its rows of sensor_data_raw (per-tenant
 * DELETEs, one UTC day at a time — never a partition drop), its dead-letter rows, its Parquet
 * objects under its prefix in its bucket and their manifest rows. Rerunnable.
 */
export async function deleteTenant(ctx: LifecycleContext, tenantId: string, opts: { purge?: boolean } = {}): Promise<DeleteResult> {
  const id = parseTenantId(tenantId);
  const row = await getTenant(ctx.db, id);
  if (!row) throw new Error(`tenant ${id} does not exist`);
  const upd = await ctx.db.query("UPDATE tenants SET status = 'deleted', updated_at = now() WHERE tenant_id = $1 AND status <> 'deleted'", [id]);
  const result: DeleteResult = {
    tenantId: id,
    statusChanged: (upd.rowCount ?? 0) > 0,
    purged: false,
    topicsDeleted: [],
    rowsDeleted: 0,
    deadLettersDeleted: 0,
    objectsDeleted: 0,
    manifestRowsDeleted: 0,
    kafkaAclsDeleted: 0,
  };
  if (!opts.purge) return result;

  const names = Object.values(tenantTopics(id));
  const existing = new Set(await ctx.kafka.listTopics());
  const doomed = names.filter((n) => existing.has(n));
  if (doomed.length > 0) {
    await ctx.kafka.deleteTopics({ topics: doomed });
    ctx.progress?.(`deleted topics ${doomed.join(", ")}`);
  }
  result.topicsDeleted = doomed;

  // Rows, dead letters and the Parquet manifest live in the tenant's store: the shared database,
  // or its dedicated database (which is kept, emptied of the tenant's data, like a dedicated bucket).
  await withTenantStore(ctx.db, ctx.adminUrl, id, async (store) => {
    result.rowsDeleted = await deleteTenantRows(store, id, undefined, { progress: ctx.progress });
    const dl = await store.query("DELETE FROM millrace.dead_letters WHERE tenant_id = $1", [id]);
    result.deadLettersDeleted = dl.rowCount ?? 0;
  });

  const st = await loadTenantStorage(ctx.db, id);
  const loc = resolveParquetLocation(st!, ctx.storageConfig, ctx.env);
  const keys = await listAllKeys(ctx, loc);
  const failed = await deleteObjects(loc, ctx.s3, keys);
  if (failed.size > 0) throw new Error(`tenant ${id}: S3 did not delete ${failed.size} objects (e.g. ${[...failed][0]!.join(": ")}); rerun \`tenants delete --purge\``);
  result.objectsDeleted = keys.length;
  ctx.progress?.(`deleted ${keys.length} objects under s3://${loc.bucket}/${loc.tenantPrefix}`);
  result.manifestRowsDeleted = await withTenantStore(ctx.db, ctx.adminUrl, id, async (store) => {
    const mf = await store.query("DELETE FROM millrace.parquet_files WHERE tenant_id = $1", [id]);
    return mf.rowCount ?? 0;
  });
  if (kafkaUsesSasl(ctx)) {
    result.kafkaAclsDeleted = (await removeTenantCredentials(credentialsContext(ctx), id)).aclsDeleted;
    ctx.progress?.(`removed Kafka user tenant-${id} and its ${result.kafkaAclsDeleted} ACLs`);
  }
  result.purged = true;
  return result;
}

const ROLE_NAME = /^[a-z_][a-z0-9_]{0,62}$/;

/**
 * Make an existing PostgreSQL role the tenant's analyst: mapped to the tenant in its store (the
 * shared database, or its dedicated one — where the role is also granted CONNECT, which nobody else
 * has there). Row-level security then shows it the tenant's rows only, whatever it sets.
 */
export async function grantAnalyst(ctx: Pick<LifecycleContext, "db" | "adminUrl">, tenantId: string, role: string): Promise<void> {
  const id = parseTenantId(tenantId);
  if (!ROLE_NAME.test(role)) throw new Error(`not a plain PostgreSQL role name (lower-case letters, digits, _): ${JSON.stringify(role)}`);
  await withTenantStore(ctx.db, ctx.adminUrl, id, async (store, ref) => {
    const c = await store.connect();
    try {
      await c.query("SELECT millrace.grant_analyst($1, $2)", [role, id]);
      if (ref) {
        const db = (await c.query<{ d: string }>("SELECT current_database() AS d")).rows[0]!.d;
        await c.query(`GRANT CONNECT ON DATABASE ${c.escapeIdentifier(db)} TO ${c.escapeIdentifier(role)}`);
      }
    } finally {
      c.release();
    }
  });
}
