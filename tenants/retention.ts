/**
 * Retention per tenant (docs/tenancy.md): rows of sensor_data_raw and Parquet files older than the
 * tenant's retention_policy_days are removed; NULL (unlimited) leaves the tenant untouched.
 *
 * - Rows: one `DELETE … WHERE tenant_id = $1 AND time >= $2 AND time < $3` per UTC day that still
 *   holds rows of the tenant before the cutoff (each statement prunes to one daily partition or
 *   chunk). Daily partitions are shared by every tenant: none is ever dropped here.
 * - Parquet: per (topic, partition), the longest run of uploaded files from the oldest on whose
 *   max_time is before the cutoff. Deleting only such a prefix keeps the remaining manifest ranges
 *   contiguous (no gap for `parquet verify`, and planFile still continues from the newest file or
 *   the sink offset). Each object must lie under the tenant's own prefix in the tenant's own bucket
 *   (else it is reported and kept); the S3 objects are deleted first, then their manifest rows.
 *   Planned (not yet uploaded) files are never touched.
 *
 * Tenant ids reach SQL only as bound parameters.
 */
import { DeleteObjectsCommand } from "@aws-sdk/client-s3";
import type pg from "pg";
import {
  loadTenantStorage,
  resolveParquetLocation,
  type Env,
  type ParquetLocation,
  type ParquetStorageConfig,
  type S3ClientCache,
} from "../sinks/s3-parquet/location.ts";
import { TENANT_ID } from "../sinks/s3-parquet/keys.ts";
import { withTenantStore } from "./database.ts";

const DAY_MS = 86_400_000;

export interface RetentionContext {
  /** A pool allowed to DELETE from sensor_data_raw and millrace.parquet_files (the admin/owner). */
  db: pg.Pool;
  s3: S3ClientCache;
  storageConfig: ParquetStorageConfig;
  env: Env;
  /** Progress lines (default: none). */
  progress?: (line: string) => void;
  /** The shared database's admin URL: how dedicated databases are reached (tenants/database.ts). */
  adminUrl?: string;
}

export interface RetentionOptions {
  dryRun?: boolean;
  /** "Now" for the cutoff (default: the clock). */
  now?: Date;
  /** Only these tenants (default: every tenant with a finite retention). */
  tenantIds?: readonly string[];
}

export interface TenantRetentionResult {
  tenantId: string;
  name: string;
  retentionDays: number | null;
  cutoff: Date | undefined;
  rowsRemoved: number;
  objectsRemoved: number;
  /** Objects kept because they were outside the tenant's place, or S3 refused to delete them. */
  objectsKept: number;
  problems: string[];
}

export interface RetentionSummary {
  dryRun: boolean;
  startedAt: Date;
  tenants: TenantRetentionResult[];
}

function utcDayStart(t: number): number {
  return Math.floor(t / DAY_MS) * DAY_MS;
}

/**
 * Delete (or, dry run, count) the tenant's rows with time < before, one UTC day at a time. Returns
 * the number of rows. `before` undefined: all of the tenant's rows (used by `tenants delete --purge`).
 */
export async function deleteTenantRows(
  db: pg.Pool,
  tenantId: string,
  before: Date | undefined,
  opts: { dryRun?: boolean; progress?: (line: string) => void } = {},
): Promise<number> {
  if (!TENANT_ID.test(tenantId)) throw new Error(`not a tenant id (lower-case UUID): ${JSON.stringify(tenantId)}`);
  const end = before ?? new Date(8_640_000_000_000_000); // the largest Date: every row
  let total = 0;
  let cursor: Date | undefined;
  for (;;) {
    const next = await db.query<{ t: Date | null }>(
      cursor === undefined
        ? "SELECT min(time) AS t FROM sensor_data_raw WHERE tenant_id = $1 AND time < $2"
        : "SELECT min(time) AS t FROM sensor_data_raw WHERE tenant_id = $1 AND time < $2 AND time >= $3",
      cursor === undefined ? [tenantId, end] : [tenantId, end, cursor],
    );
    const first = next.rows[0]?.t;
    if (!first) break;
    const from = new Date(utcDayStart(first.getTime()));
    const to = new Date(Math.min(from.getTime() + DAY_MS, end.getTime()));
    const sql = opts.dryRun
      ? "SELECT count(*)::bigint AS n FROM sensor_data_raw WHERE tenant_id = $1 AND time >= $2 AND time < $3"
      : "DELETE FROM sensor_data_raw WHERE tenant_id = $1 AND time >= $2 AND time < $3";
    const res = await db.query<{ n: string }>(sql, [tenantId, from, to]);
    const n = opts.dryRun ? Number(res.rows[0]?.n ?? 0) : (res.rowCount ?? 0);
    total += n;
    opts.progress?.(`  ${tenantId} ${from.toISOString().slice(0, 10)}: ${opts.dryRun ? "would delete" : "deleted"} ${n} rows`);
    cursor = to;
    if (to.getTime() >= end.getTime()) break;
  }
  return total;
}

interface FileRow {
  topic: string;
  partition: number;
  first_offset: string;
  bucket: string;
  object_key: string;
  status: string;
  max_time: Date;
}

/** Delete S3 objects (up to 1000 per request); returns the keys S3 reported as not deleted. */
export async function deleteObjects(loc: ParquetLocation, s3: S3ClientCache, keys: readonly string[]): Promise<Map<string, string>> {
  const failed = new Map<string, string>();
  const client = s3.clientForLocation(loc);
  for (let i = 0; i < keys.length; i += 1000) {
    const chunk = keys.slice(i, i + 1000);
    const res = await client.send(new DeleteObjectsCommand({ Bucket: loc.bucket, Delete: { Objects: chunk.map((Key) => ({ Key })), Quiet: true } }));
    for (const e of res.Errors ?? []) if (e.Key && e.Code !== "NoSuchKey") failed.set(e.Key, `${e.Code ?? "error"}: ${e.Message ?? ""}`);
  }
  return failed;
}

/** The tenant's expired Parquet files (see the module comment for which ones), deleted from S3 and the manifest. */
export async function expireTenantParquet(
  ctx: RetentionContext,
  tenantId: string,
  cutoff: Date,
  dryRun: boolean,
  /** The tenant's store (its manifest); default the shared database. */
  store: pg.Pool = ctx.db,
): Promise<{ removed: number; kept: number; problems: string[] }> {
  const problems: string[] = [];
  const files = await store.query<FileRow>(
    `SELECT topic, partition, first_offset, bucket, object_key, status, max_time
     FROM millrace.parquet_files WHERE tenant_id = $1 ORDER BY topic, partition, first_offset`,
    [tenantId],
  );
  if (files.rows.length === 0) return { removed: 0, kept: 0, problems };
  const storage = await loadTenantStorage(ctx.db, tenantId);
  if (!storage) return { removed: 0, kept: 0, problems: [`tenant ${tenantId} has no tenants row; its files are kept`] };
  const loc = resolveParquetLocation(storage, ctx.storageConfig, ctx.env);

  // The expired prefix of each (topic, partition).
  const expired: FileRow[] = [];
  const stopped = new Set<string>();
  for (const f of files.rows) {
    const k = `${f.topic}\u0000${f.partition}`;
    if (stopped.has(k)) continue;
    if (f.status !== "uploaded" || f.max_time.getTime() >= cutoff.getTime()) {
      stopped.add(k);
      continue;
    }
    expired.push(f);
  }
  let kept = 0;
  const deletable: FileRow[] = [];
  for (const f of expired) {
    if (f.bucket !== loc.bucket || !f.object_key.startsWith(loc.tenantPrefix)) {
      problems.push(`s3://${f.bucket}/${f.object_key} is not under the tenant's place s3://${loc.bucket}/${loc.tenantPrefix}; kept`);
      kept++;
      continue;
    }
    deletable.push(f);
  }
  if (dryRun || deletable.length === 0) return { removed: deletable.length, kept, problems };

  const failed = await deleteObjects(loc, ctx.s3, deletable.map((f) => f.object_key));
  let removed = 0;
  for (const f of deletable) {
    const err = failed.get(f.object_key);
    if (err) {
      problems.push(`s3://${f.bucket}/${f.object_key}: ${err}; kept`);
      kept++;
      continue;
    }
    await store.query("DELETE FROM millrace.parquet_files WHERE tenant_id = $1 AND topic = $2 AND partition = $3 AND first_offset = $4 AND status = 'uploaded'", [
      tenantId,
      f.topic,
      f.partition,
      f.first_offset,
    ]);
    removed++;
  }
  ctx.progress?.(`  ${tenantId}: deleted ${removed} Parquet objects from s3://${loc.bucket}/${loc.tenantPrefix}`);
  return { removed, kept, problems };
}

/** One retention pass over every tenant with a finite retention (or the given ones). */
export async function runRetention(ctx: RetentionContext, opts: RetentionOptions = {}): Promise<RetentionSummary> {
  const startedAt = opts.now ?? new Date();
  const dryRun = opts.dryRun ?? false;
  const tenants = await ctx.db.query<{ tenant_id: string; tenant_name: string; retention_policy_days: number | null }>(
    "SELECT tenant_id, tenant_name, retention_policy_days FROM tenants ORDER BY tenant_id",
  );
  const only = opts.tenantIds ? new Set(opts.tenantIds) : undefined;
  const out: TenantRetentionResult[] = [];
  for (const t of tenants.rows) {
    if (only && !only.has(t.tenant_id)) continue;
    const result: TenantRetentionResult = {
      tenantId: t.tenant_id,
      name: t.tenant_name,
      retentionDays: t.retention_policy_days,
      cutoff: undefined,
      rowsRemoved: 0,
      objectsRemoved: 0,
      objectsKept: 0,
      problems: [],
    };
    out.push(result);
    if (t.retention_policy_days === null) {
      ctx.progress?.(`${t.tenant_id} (${t.tenant_name}): unlimited retention, untouched`);
      continue;
    }
    const cutoff = new Date(startedAt.getTime() - t.retention_policy_days * DAY_MS);
    result.cutoff = cutoff;
    ctx.progress?.(`${t.tenant_id} (${t.tenant_name}): retention ${t.retention_policy_days} days, removing data before ${cutoff.toISOString()}${dryRun ? " (dry run)" : ""}`);
    try {
      // In the tenant's store: the shared database or its dedicated one.
      await withTenantStore(ctx.db, ctx.adminUrl, t.tenant_id, async (store) => {
        result.rowsRemoved = await deleteTenantRows(store, t.tenant_id, cutoff, { dryRun, progress: ctx.progress });
        const p = await expireTenantParquet(ctx, t.tenant_id, cutoff, dryRun, store);
        result.objectsRemoved = p.removed;
        result.objectsKept = p.kept;
        result.problems.push(...p.problems);
      });
    } catch (err) {
      result.problems.push((err as Error).message);
    }
  }
  return { dryRun, startedAt, tenants: out };
}

export function formatRetentionSummary(s: RetentionSummary): string {
  const verb = s.dryRun ? "would remove" : "removed";
  const rows = [["tenant", "name", "retention", "cutoff", `rows ${verb}`, `objects ${verb}`, "problems"]];
  for (const t of s.tenants) {
    rows.push([
      t.tenantId,
      t.name,
      t.retentionDays === null ? "unlimited" : `${t.retentionDays} d`,
      t.cutoff ? t.cutoff.toISOString() : "-",
      String(t.rowsRemoved),
      String(t.objectsRemoved),
      t.problems.length ? String(t.problems.length) : "-",
    ]);
  }
  const widths = rows[0]!.map((_, i) => Math.max(...rows.map((r) => r[i]!.length)));
  const lines = rows.map((r) => r.map((c, i) => (i === r.length - 1 ? c : c.padEnd(widths[i]!))).join("  "));
  for (const t of s.tenants) for (const p of t.problems) lines.push(`problem: ${t.tenantId}: ${p}`);
  const rowsTotal = s.tenants.reduce((a, t) => a + t.rowsRemoved, 0);
  const objTotal = s.tenants.reduce((a, t) => a + t.objectsRemoved, 0);
  lines.push(`retention ${s.dryRun ? "dry run" : "run"} at ${s.startedAt.toISOString()}: ${verb} ${rowsTotal} rows and ${objTotal} Parquet objects over ${s.tenants.length} tenants`);
  return lines.join("\n");
}
