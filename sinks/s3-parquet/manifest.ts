/**
 * The Parquet manifest (millrace.parquet_files) and the sink offsets (millrace.sink_offsets): what
 * makes the Parquet files exactly once.
 *
 *   planFile      record a file's boundaries as 'planned' before uploading it. Idempotent: if an
 *                 entry with that first offset exists, it is returned and the caller rebuilds exactly
 *                 that file. Ranges of a (topic, partition) never overlap and follow each other
 *                 without gaps; a plan that would break that comes from a worker that no longer owns
 *                 the partition, and is refused with FencedError.
 *   markUploaded  in one transaction: the entry becomes 'uploaded' (size, SHA-256) and the sink's
 *                 stored next offset moves from the file's first offset to last + 1 — only if it
 *                 still is the first offset (the fence of the PostgreSQL sink, same semantics).
 *
 * Each function runs its own short transaction on a connection from the pool.
 */
import type pg from "pg";
import { FencedError, MillraceError } from "../../lib/errors.ts";

/** The Parquet sink's name in millrace.sink_offsets. */

/**
 * The partition's Parquet files belong to another consumer group (docs/parquet.md, "One consumer
 * group per Parquet sink"): this group cannot continue them. Not a race with another worker of the
 * same group, so the worker reports it (log, /readyz) with the fix instead of as a plain fence.
 */
export class ForeignGroupError extends FencedError {
  constructor(
    topic: string,
    partition: number,
    readonly ownerGroup: string,
  ) {
    super(
      `${topic}[${partition}]: its Parquet files belong to consumer group ${ownerGroup}; one consumer group per Parquet sink — run this worker with --consumer-group ${ownerGroup} to continue them (PostgreSQL is not affected; docs/parquet.md)`,
    );
  }
}

export const PARQUET_SINK = "s3_parquet";

export type FileStatus = "planned" | "uploaded";

export interface ManifestEntry {
  topic: string;
  partition: number;
  firstOffset: number;
  lastOffset: number;
  consumerGroup: string;
  tenantId: string;
  bucket: string;
  objectKey: string;
  status: FileStatus;
  rowCount: number;
  byteSize: number | null;
  sha256: string | null;
  /** Event-time bounds of the file's rows (epoch ms). */
  minTime: number;
  maxTime: number;
  createdAt: Date;
  uploadedAt: Date | null;
}

export interface FilePlan {
  consumerGroup: string;
  topic: string;
  partition: number;
  firstOffset: number;
  lastOffset: number;
  tenantId: string;
  bucket: string;
  objectKey: string;
  rowCount: number;
  minTime: number;
  maxTime: number;
  /** Known when the file was encoded before planning (encoding is pure); checked by markUploaded. */
  sha256?: string;
  byteSize?: number;
  /**
   * Where the planner believes the tenant's files go now ("shared" or "dedicated"); checked against
   * the tenants row in this store, so a file is never planned in a place the tenant moved away from.
   */
  storageMode?: "shared" | "dedicated";
}

export interface PlanOptions {
  /**
   * Accept a first offset after the end of the previous file (records gone from Kafka by retention
   * before they were read). Default false: a gap is refused like an overlap.
   */
  allowGap?: boolean;
  sink?: string;
}

/** The manifest holds something that contradicts the caller (e.g. the same range with other bytes). */
export class ManifestConflictError extends MillraceError {
  constructor(message: string) {
    super(message, { retriable: false, stage: "sink", reason: "parquet_manifest_conflict" });
  }
}

interface EntryRow {
  topic: string;
  partition: number;
  first_offset: string;
  last_offset: string;
  consumer_group: string;
  tenant_id: string;
  bucket: string;
  object_key: string;
  status: FileStatus;
  row_count: number;
  byte_size: string | null;
  sha256: string | null;
  min_time: Date;
  max_time: Date;
  created_at: Date;
  uploaded_at: Date | null;
}

const COLUMNS =
  "topic, partition, first_offset, last_offset, consumer_group, tenant_id, bucket, object_key, status, row_count, byte_size, sha256, min_time, max_time, created_at, uploaded_at";

function toEntry(r: EntryRow): ManifestEntry {
  return {
    topic: r.topic,
    partition: r.partition,
    firstOffset: Number(r.first_offset),
    lastOffset: Number(r.last_offset),
    consumerGroup: r.consumer_group,
    tenantId: r.tenant_id,
    bucket: r.bucket,
    objectKey: r.object_key,
    status: r.status,
    rowCount: r.row_count,
    byteSize: r.byte_size === null ? null : Number(r.byte_size),
    sha256: r.sha256,
    minTime: r.min_time.getTime(),
    maxTime: r.max_time.getTime(),
    createdAt: r.created_at,
    uploadedAt: r.uploaded_at,
  };
}

async function inTransaction<T>(pool: pg.Pool, fn: (c: pg.PoolClient) => Promise<T>): Promise<T> {
  const client = await pool.connect();
  let broken: Error | undefined;
  try {
    await client.query("BEGIN");
    const out = await fn(client);
    await client.query("COMMIT");
    return out;
  } catch (err) {
    try {
      await client.query("ROLLBACK");
    } catch (rollbackErr) {
      broken = rollbackErr as Error;
    }
    throw err;
  } finally {
    client.release(broken);
  }
}

/** Serialises plans of one (topic, partition) (transaction-scoped advisory lock). */
async function lockPartition(c: pg.PoolClient, topic: string, partition: number): Promise<void> {
  await c.query("SELECT pg_advisory_xact_lock(hashtext('millrace.parquet_files:' || $1), $2)", [topic, partition]);
}

function checkPlan(p: FilePlan): void {
  const ints: Array<[string, number]> = [
    ["partition", p.partition],
    ["firstOffset", p.firstOffset],
    ["lastOffset", p.lastOffset],
    ["rowCount", p.rowCount],
  ];
  for (const [k, v] of ints) if (!Number.isSafeInteger(v) || v < 0) throw new RangeError(`planFile: ${k} must be a non-negative integer, got ${v}`);
  if (p.lastOffset < p.firstOffset) throw new RangeError(`planFile: lastOffset ${p.lastOffset} < firstOffset ${p.firstOffset}`);
  if (!Number.isFinite(p.minTime) || !Number.isFinite(p.maxTime) || p.maxTime < p.minTime) throw new RangeError(`planFile: bad time bounds ${p.minTime}..${p.maxTime}`);
  if (p.sha256 !== undefined && !/^[0-9a-f]{64}$/.test(p.sha256)) throw new RangeError("planFile: sha256 must be 64 lower-case hex digits");
}

/**
 * Record the file's boundaries as planned; or, when an entry with this first offset exists (a
 * replay), return it unchanged: the caller must then build exactly that entry's range.
 */
export async function planFile(pool: pg.Pool, plan: FilePlan, opts: PlanOptions = {}): Promise<{ entry: ManifestEntry; created: boolean }> {
  checkPlan(plan);
  const sink = opts.sink ?? PARQUET_SINK;
  return await inTransaction(pool, async (c) => {
    await lockPartition(c, plan.topic, plan.partition);
    const existing = await c.query<EntryRow>(`SELECT ${COLUMNS} FROM millrace.parquet_files WHERE topic = $1 AND partition = $2 AND first_offset = $3`, [
      plan.topic,
      plan.partition,
      plan.firstOffset,
    ]);
    const ex = existing.rows[0];
    if (ex && ex.consumer_group !== plan.consumerGroup) throw new ForeignGroupError(plan.topic, plan.partition, ex.consumer_group);
    if (ex) return { entry: toEntry(ex), created: false };

    const overlap = await c.query<{ first_offset: string; last_offset: string; status: string; consumer_group: string }>(
      `SELECT first_offset, last_offset, status, consumer_group FROM millrace.parquet_files
       WHERE topic = $1 AND partition = $2 AND first_offset <= $4 AND last_offset >= $3 ORDER BY first_offset LIMIT 1`,
      [plan.topic, plan.partition, plan.firstOffset, plan.lastOffset],
    );
    const o = overlap.rows[0];
    if (o && o.consumer_group !== plan.consumerGroup) throw new ForeignGroupError(plan.topic, plan.partition, o.consumer_group);
    if (o) {
      throw new FencedError(
        `${plan.topic}[${plan.partition}]: offsets ${plan.firstOffset}-${plan.lastOffset} overlap the ${o.status} file ${o.first_offset}-${o.last_offset}; another worker owns this partition or the replay did not start from the sink offset`,
      );
    }
    if (plan.storageMode !== undefined) {
      const t = await c.query<{ storage_mode: string; storage_bucket: string | null }>("SELECT storage_mode, storage_bucket FROM tenants WHERE tenant_id = $1", [plan.tenantId]);
      const row = t.rows[0];
      if (row && (row.storage_mode !== plan.storageMode || (row.storage_mode === "dedicated" && row.storage_bucket !== plan.bucket))) {
        throw new FencedError(`${plan.topic}[${plan.partition}]: the tenant's files now go to ${row.storage_mode === "dedicated" ? `s3://${row.storage_bucket}` : "the shared bucket"}, not s3://${plan.bucket} (tenants move)`);
      }
    }
    const last = await c.query<{ last_offset: string; consumer_group: string }>(
      "SELECT last_offset, consumer_group FROM millrace.parquet_files WHERE topic = $1 AND partition = $2 ORDER BY first_offset DESC LIMIT 1",
      [plan.topic, plan.partition],
    );
    const stored = await readSinkOffset(c, sink, plan.consumerGroup, plan.topic, plan.partition);
    if (stored === -1) throw new FencedError(`${plan.topic}[${plan.partition}]: the tenant's store moved to another database (tenants/move.ts)`);
    const expected = last.rows[0] ? Number(last.rows[0].last_offset) + 1 : stored;
    if (expected !== undefined && plan.firstOffset !== expected && !(opts.allowGap && plan.firstOffset > expected)) {
      if (last.rows[0] && last.rows[0].consumer_group !== plan.consumerGroup) throw new ForeignGroupError(plan.topic, plan.partition, last.rows[0].consumer_group);
      throw new FencedError(
        `${plan.topic}[${plan.partition}]: the next file must start at offset ${expected}, not ${plan.firstOffset}; another worker owns this partition or the replay did not start from the sink offset`,
      );
    }
    const ins = await c.query<EntryRow>(
      `INSERT INTO millrace.parquet_files (topic, partition, first_offset, last_offset, consumer_group, tenant_id, bucket, object_key, status, row_count, byte_size, sha256, min_time, max_time)
       VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 'planned', $9, $10, $11, $12, $13)
       RETURNING ${COLUMNS}`,
      [
        plan.topic,
        plan.partition,
        plan.firstOffset,
        plan.lastOffset,
        plan.consumerGroup,
        plan.tenantId,
        plan.bucket,
        plan.objectKey,
        plan.rowCount,
        plan.byteSize ?? null,
        plan.sha256 ?? null,
        new Date(plan.minTime).toISOString(),
        new Date(plan.maxTime).toISOString(),
      ],
    );
    return { entry: toEntry(ins.rows[0]!), created: true };
  });
}

export interface UploadedFile {
  consumerGroup: string;
  topic: string;
  partition: number;
  firstOffset: number;
  lastOffset: number;
  byteSize: number;
  sha256: string;
  /** The stored next offset this file starts from (the fence); default firstOffset. */
  expectedOffset?: number;
  sink?: string;
  /** Where it was uploaded; an entry that names another place now (tenants move) gives RepointedError. */
  bucket?: string;
  objectKey?: string;
}

export interface MarkResult {
  /** The sink's stored next offset now (lastOffset + 1). */
  nextOffset: number;
  /** An earlier attempt (whose COMMIT reply was lost) had already done it. */
  alreadyCommitted: boolean;
}

const ADVANCE_SQL = `INSERT INTO millrace.sink_offsets AS o (sink, consumer_group, topic, partition, next_offset)
VALUES ($1, $2, $3, $4, $6)
ON CONFLICT (sink, consumer_group, topic, partition) DO UPDATE SET next_offset = EXCLUDED.next_offset, updated_at = now()
WHERE o.next_offset = $5
RETURNING o.next_offset`;

/**
 * Mark the file uploaded and advance the sink offset to lastOffset + 1, in one transaction, only if
 * the stored offset still equals `expectedOffset` (else FencedError: this worker lost the partition).
 */
/** The file's manifest entry names another place than the one uploaded to (tenants move): the uploaded object is nobody's. */
export class RepointedError extends FencedError {}

export async function markUploaded(pool: pg.Pool, f: UploadedFile): Promise<MarkResult> {
  if (!/^[0-9a-f]{64}$/.test(f.sha256)) throw new RangeError("markUploaded: sha256 must be 64 lower-case hex digits");
  if (!Number.isSafeInteger(f.byteSize) || f.byteSize < 0) throw new RangeError("markUploaded: byteSize must be a non-negative integer");
  const sink = f.sink ?? PARQUET_SINK;
  const expected = f.expectedOffset ?? f.firstOffset;
  const next = f.lastOffset + 1;
  return await inTransaction(pool, async (c) => {
    const cur = await c.query<EntryRow>(`SELECT ${COLUMNS} FROM millrace.parquet_files WHERE topic = $1 AND partition = $2 AND first_offset = $3 FOR UPDATE`, [
      f.topic,
      f.partition,
      f.firstOffset,
    ]);
    const row = cur.rows[0];
    if (!row) throw new ManifestConflictError(`${f.topic}[${f.partition}]: no manifest entry starts at offset ${f.firstOffset}; planFile first`);
    const entry = toEntry(row);
    if ((f.bucket !== undefined && f.bucket !== entry.bucket) || (f.objectKey !== undefined && f.objectKey !== entry.objectKey)) {
      throw new RepointedError(`${f.topic}[${f.partition}] ${f.firstOffset}-${f.lastOffset}: the manifest now names s3://${entry.bucket}/${entry.objectKey} (the tenant's files moved), not s3://${f.bucket}/${f.objectKey}`);
    }
    if (entry.lastOffset !== f.lastOffset) {
      throw new ManifestConflictError(`${f.topic}[${f.partition}]: the entry at ${f.firstOffset} ends at ${entry.lastOffset}, not ${f.lastOffset}; rebuild the planned range`);
    }
    if (entry.sha256 !== null && (entry.sha256 !== f.sha256 || (entry.byteSize !== null && entry.byteSize !== f.byteSize))) {
      throw new ManifestConflictError(
        `${f.topic}[${f.partition}] ${f.firstOffset}-${f.lastOffset}: the manifest holds sha256 ${entry.sha256} (${entry.byteSize} bytes) but ${f.sha256} (${f.byteSize} bytes) was uploaded: the same range must give the same bytes`,
      );
    }
    if (entry.status === "planned") {
      await c.query(
        `UPDATE millrace.parquet_files SET status = 'uploaded', byte_size = $4, sha256 = $5, uploaded_at = now()
         WHERE topic = $1 AND partition = $2 AND first_offset = $3`,
        [f.topic, f.partition, f.firstOffset, f.byteSize, f.sha256],
      );
    }
    const adv = await c.query(ADVANCE_SQL, [sink, f.consumerGroup, f.topic, f.partition, expected, next]);
    if (adv.rowCount === 1) return { nextOffset: next, alreadyCommitted: false };
    const now = await readSinkOffset(c, sink, f.consumerGroup, f.topic, f.partition);
    if (now === next && entry.status === "uploaded") return { nextOffset: next, alreadyCommitted: true };
    throw new FencedError(`${f.topic}[${f.partition}]: ${sink} offset is ${now}, not ${expected}; another worker owns this partition`);
  });
}

/**
 * Advance the sink offset without a file (e.g. a stretch of offsets that all became dead letters
 * while no file was pending), with the same fence.
 */
export async function advanceSinkOffset(
  pool: pg.Pool,
  a: { sink?: string; consumerGroup: string; topic: string; partition: number; expectedOffset: number; nextOffset: number },
): Promise<void> {
  const sink = a.sink ?? PARQUET_SINK;
  const res = await pool.query(ADVANCE_SQL, [sink, a.consumerGroup, a.topic, a.partition, a.expectedOffset, a.nextOffset]);
  if (res.rowCount === 1) return;
  const now = await readSinkOffset(pool, sink, a.consumerGroup, a.topic, a.partition);
  if (now === a.nextOffset) return;
  throw new FencedError(`${a.topic}[${a.partition}]: ${sink} offset is ${now}, not ${a.expectedOffset}; another worker owns this partition`);
}

async function readSinkOffset(q: pg.Pool | pg.PoolClient, sink: string, group: string, topic: string, partition: number): Promise<number | undefined> {
  const res = await q.query<{ next_offset: string }>(
    "SELECT next_offset FROM millrace.sink_offsets WHERE sink = $1 AND consumer_group = $2 AND topic = $3 AND partition = $4",
    [sink, group, topic, partition],
  );
  return res.rows[0] ? Number(res.rows[0].next_offset) : undefined;
}

/** The sink's stored next offset for the partition, or undefined if it never wrote one. */
export async function sinkOffset(pool: pg.Pool, sink: string, consumerGroup: string, topic: string, partition: number): Promise<number | undefined> {
  return await readSinkOffset(pool, sink, consumerGroup, topic, partition);
}

/** The partition's planned (not yet uploaded) files, oldest first: rebuild these first after a restart. */
export async function plannedFiles(pool: pg.Pool, consumerGroup: string, topic: string, partition: number): Promise<ManifestEntry[]> {
  const res = await pool.query<EntryRow>(
    `SELECT ${COLUMNS} FROM millrace.parquet_files WHERE consumer_group = $1 AND topic = $2 AND partition = $3 AND status = 'planned' ORDER BY first_offset`,
    [consumerGroup, topic, partition],
  );
  return res.rows.map(toEntry);
}

/** A tenant's files (optionally one topic/partition), in topic, partition, offset order. */
export async function listFiles(pool: pg.Pool, filter: { tenantId: string; topic?: string; partition?: number; status?: FileStatus }): Promise<ManifestEntry[]> {
  const res = await pool.query<EntryRow>(
    `SELECT ${COLUMNS} FROM millrace.parquet_files
     WHERE tenant_id = $1 AND ($2::text IS NULL OR topic = $2) AND ($3::int IS NULL OR partition = $3) AND ($4::text IS NULL OR status = $4)
     ORDER BY topic, partition, first_offset`,
    [filter.tenantId, filter.topic ?? null, filter.partition ?? null, filter.status ?? null],
  );
  return res.rows.map(toEntry);
}
