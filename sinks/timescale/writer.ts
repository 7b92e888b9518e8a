/**
 * The TimescaleDB/PostgreSQL sink's I/O: one database transaction per batch that
 *   1. sets the tenant context (a bound parameter) so the database checks every row's tenant,
 *   2. records the batch's dead letters (outbox, exactly once) and the engine's extra statements
 *      (alarm state, alert outbox, the Parquet sink's first offset), and advances the partition's
 *      stored offset — only if it still equals the batch's first offset, which fences a worker that
 *      lost the partition in a rebalance — all as one statement; a fenced batch stops here,
 *   3. COPYs the rows (binary format) straight into sensor_data_raw as millrace_loader, a role
 *      that may do nothing else and only for the tenant context (migrations/010_loader.sql),
 * and commits. Each row is written once, by COPY — PostgreSQL's bulk path (multi-row inserts) —
 * where until issue 7 every row was COPYd into a staging table and moved by INSERT … SELECT, because
 * COPY FROM is refused on a table with row-level security (docs/benchmarks.md has the numbers).
 *
 * COPY cannot skip a duplicate key (a reading re-sent by its producer); a batch whose COPY fails on
 * one (or on any data error) is written again in "insert" mode: the rows inserted by step 2's
 * statement itself, `INSERT … SELECT … FROM unnest(binary column arrays) ON CONFLICT DO NOTHING`
 * under RLS, in offset order (so the lowest offset wins; array-params.ts). A data error there too is
 * isolated by bisecting the batch under savepoints: only the offending rows are rejected, the rest
 * of the batch commits.
 */
import { pipeline } from "node:stream/promises";
import { Readable } from "node:stream";
import type pg from "pg";
import { from as copyFrom } from "pg-copy-streams";
import { FencedError, isDataPgError, isMissingPartitionError, RetriableSinkError } from "../../lib/errors.ts";
import type { Rejection, StoredReading } from "../../pipelines/reading.ts";
import { encodeReadingArrays, unnestSql } from "./array-params.ts";
import { encodeCopyBinary } from "./copy-binary-encoder.ts";

export interface DeadLetterRow {
  sourceTopic: string;
  sourcePartition: number;
  sourceOffset: number;
  tenantId: string | null;
  reason: string;
  stage: string;
  message: string;
  schemaId: number | null;
  key: Buffer | null;
  value: Buffer | null;
  headers: Record<string, string>;
  timestamp: number | null;
}

export interface BatchCommit {
  consumerGroup: string;
  topic: string;
  partition: number;
  tenantId: string;
  /** The stored next offset this batch starts from (the fence). */
  expectedOffset: number;
  /** Offset after the batch's last record. */
  nextOffset: number;
  rows: readonly StoredReading[];
  deadLetters: readonly DeadLetterRow[];
  /** Builds the dead letter of a row the database refuses (the engine still holds the original bytes). */
  deadLetterFor: (row: StoredReading, rejection: Rejection) => DeadLetterRow;
  /**
   * More writes that must commit atomically with this batch (alarm state, alert outbox…), run in
   * the batch's transaction with the tenant context set, after the rows are in. It is given the
   * rows the database refused, so it can leave them out.
   */
  inTransaction?: (client: pg.PoolClient, refused: ReadonlySet<number>) => Promise<void>;
  /**
   * More writes that must commit atomically with this batch, as data-modifying statements
   * (`INSERT …`, numbered from $1 each) — the alarm state and alert outbox. In the common case
   * (no row refused) they run as CTEs of the batch's single move-and-advance statement, so they cost
   * no round trip of their own; when rows had to be isolated they run one by one after the rows.
   * Given the offsets of the rows the database refused (empty in the common case).
   */
  statements?: (refused: ReadonlySet<number>) => readonly BatchStatement[];
}

/** A data-modifying statement with its parameters ($1…$n). */
export interface BatchStatement {
  text: string;
  values: readonly unknown[];
}

export interface BatchResult {
  inserted: number;
  /** Rows that were already stored (replay) or duplicated within the batch. */
  duplicates: number;
  /** Rows the database refused as data errors; already recorded as dead letters in the same transaction. */
  rejected: Array<Rejection & { row: StoredReading }>;
  /** The batch had already been committed by an earlier attempt whose COMMIT reply was lost. */
  alreadyCommitted?: boolean;
}

/**
 * The role that COPYs a batch's rows (migrations/010_loader.sql): NOLOGIN, granted to
 * millrace_writer, INSERT on sensor_data_raw only, BYPASSRLS — COPY FROM refuses a table with RLS
 * for a role subject to it — and held by a CHECK constraint to rows of the transaction's tenant
 * context, so the database still refuses another tenant's row.
 */
export const LOADER_ROLE = "millrace_loader";
export const COPY_SQL = "COPY sensor_data_raw (time, tenant_id, equipment_id, facility_id, temperature, vibration, pressure, flow_rate) FROM STDIN (FORMAT binary)";
/** Batches of a partition written in insert mode after a duplicate key made its COPY fail. */
export const INSERT_MODE_BATCHES = 16;

/**
 * The rows of a batch: the tenant ($n, one uuid: a batch is one tenant's) and seven column arrays
 * ($n+1…$n+7) unnested in row order, which is offset order — so for in-batch duplicates the first,
 * lowest offset is inserted and the rest conflict with it. RLS's WITH CHECK sees every row.
 */
export function insertRowsSql(first: number): string {
  return `INSERT INTO sensor_data_raw (time, tenant_id, equipment_id, facility_id, temperature, vibration, pressure, flow_rate)
SELECT u.t, $${first}::uuid, u.e, u.f, u.te, u.vi, u.pr, u.fl FROM ${unnestSql(first + 1)} AS u(t, e, f, te, vi, pr, fl)
ON CONFLICT DO NOTHING`;
}

/** The parameters of {@link insertRowsSql}: the tenant, then the column arrays. */
export function rowValues(tenantId: string, rows: readonly StoredReading[]): unknown[] {
  const a = encodeReadingArrays(inOffsetOrder(rows));
  return [tenantId, a.time, a.equipmentId, a.facilityId, a.temperature, a.vibration, a.pressure, a.flowRate];
}

/** The rows sorted by offset (they normally arrive so: then the same array, no copy). */
function inOffsetOrder(rows: readonly StoredReading[]): readonly StoredReading[] {
  for (let i = 1; i < rows.length; i++) {
    if (rows[i]!.offset < rows[i - 1]!.offset) return [...rows].sort((a, b) => a.offset - b.offset);
  }
  return rows;
}

/**
 * The common case in one statement: insert the rows, then the extra CTEs (dead letters, alarm
 * state, alert outbox), and the fenced offset advance. All CTEs see the snapshot from before the
 * statement, so `stored` is the offset as it was: when `advanced` is null the batch is fenced or
 * (stored = batch end) was already committed by an earlier attempt.
 */
const ROWS_FIRST_PARAM = 6;

/**
 * A batch's transaction. READ COMMITTED explicitly, whatever the database's default: the fence's
 * fresh re-read of the stored offset (a concurrent attempt's commit) depends on it. Also what an
 * operator (pg_stat_activity) or a fault test sees as the start of a batch.
 */
export const BEGIN_BATCH = "BEGIN ISOLATION LEVEL READ COMMITTED";
const FAST_MOVE_CTE = `moved AS (${insertRowsSql(ROWS_FIRST_PARAM)} RETURNING 1)`;
const FAST_ADVANCE_CTE = `adv AS (INSERT INTO millrace.consumer_offsets AS o (consumer_group, topic, partition, next_offset)
VALUES ($1, $2, $3, $5)
ON CONFLICT (consumer_group, topic, partition) DO UPDATE SET next_offset = EXCLUDED.next_offset, updated_at = now()
WHERE o.next_offset = $4
RETURNING o.next_offset)`;
const FAST_SELECT = `SELECT (SELECT count(*) FROM moved)::int AS inserted, (SELECT next_offset FROM adv)::text AS advanced,
  (SELECT next_offset FROM millrace.consumer_offsets WHERE consumer_group = $1 AND topic = $2 AND partition = $3)::text AS stored`;
const FAST_SELECT_NO_ROWS = `SELECT 0 AS inserted, (SELECT next_offset FROM adv)::text AS advanced,
  (SELECT next_offset FROM millrace.consumer_offsets WHERE consumer_group = $1 AND topic = $2 AND partition = $3)::text AS stored`;

const UUID_TEXT = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

/** Renumber a statement's $n placeholders by `by` (our own SQL only: no `$` in literals). */
function shiftParams(text: string, by: number): string {
  return by === 0 ? text : text.replace(/\$(\d+)/g, (_, n: string) => `$${Number(n) + by}`);
}

const ADVANCE_SQL = `INSERT INTO millrace.consumer_offsets AS o (consumer_group, topic, partition, next_offset)
VALUES ($1, $2, $3, $5)
ON CONFLICT (consumer_group, topic, partition) DO UPDATE SET next_offset = EXCLUDED.next_offset, updated_at = now()
WHERE o.next_offset = $4
RETURNING o.next_offset`;

const DEAD_LETTER_SQL = `INSERT INTO millrace.dead_letters
  (source_topic, source_partition, source_offset, tenant_id, reason, stage, message, schema_id, record_key, record_value, record_headers, record_timestamp)
SELECT * FROM unnest($1::text[], $2::int[], $3::bigint[], $4::uuid[], $5::text[], $6::text[], $7::text[], $8::int[], $9::bytea[], $10::bytea[], $11::jsonb[],
                     $12::timestamptz[])
ON CONFLICT (source_topic, source_partition, source_offset) DO NOTHING`;

/** Insert one subset (tenant context already set); returns rows inserted. */
async function writeSubset(client: pg.PoolClient, tenantId: string, rows: readonly StoredReading[]): Promise<number> {
  if (rows.length === 0) return 0;
  const res = await client.query(insertRowsSql(1), rowValues(tenantId, rows));
  return res.rowCount ?? 0;
}

function pgMessage(err: unknown): string {
  const e = err as { code?: string; message?: string; detail?: string };
  return `${e.code ? `SQLSTATE ${e.code}: ` : ""}${e.message ?? String(err)}${e.detail ? ` (${e.detail})` : ""}`;
}

/**
 * Write the subset; on a data error, split it in halves under savepoints until each failing row is
 * alone. Returns inserted count and the rows refused.
 */
async function writeIsolating(
  client: pg.PoolClient,
  tenantId: string,
  rows: readonly StoredReading[],
  depth = 0,
): Promise<{ inserted: number; refused: Array<{ row: StoredReading; error: unknown }> }> {
  const sp = `millrace_sp_${depth}`;
  await client.query(`SAVEPOINT ${sp}`);
  try {
    const inserted = await writeSubset(client, tenantId, rows);
    await client.query(`RELEASE SAVEPOINT ${sp}`);
    return { inserted, refused: [] };
  } catch (err) {
    await client.query(`ROLLBACK TO SAVEPOINT ${sp}`);
    if (!isDataPgError(err)) throw err;
    if (rows.length === 1) {
      await client.query(`RELEASE SAVEPOINT ${sp}`);
      return { inserted: 0, refused: [{ row: rows[0]!, error: err }] };
    }
    await client.query(`RELEASE SAVEPOINT ${sp}`);
    const mid = rows.length >>> 1;
    const left = await writeIsolating(client, tenantId, rows.slice(0, mid), depth + 1);
    const right = await writeIsolating(client, tenantId, rows.slice(mid), depth + 1);
    return { inserted: left.inserted + right.inserted, refused: [...left.refused, ...right.refused] };
  }
}

function deadLetterStatement(dls: readonly DeadLetterRow[]): BatchStatement {
  return { text: DEAD_LETTER_SQL, values: [
    dls.map((d) => d.sourceTopic),
    dls.map((d) => d.sourcePartition),
    dls.map((d) => d.sourceOffset),
    dls.map((d) => d.tenantId),
    dls.map((d) => d.reason),
    dls.map((d) => d.stage),
    dls.map((d) => d.message),
    dls.map((d) => d.schemaId),
    dls.map((d) => d.key),
    dls.map((d) => d.value),
    dls.map((d) => JSON.stringify(d.headers)),
    dls.map((d) => (d.timestamp === null ? null : new Date(d.timestamp).toISOString())),
  ] };
}

async function insertDeadLetters(client: pg.PoolClient, dls: readonly DeadLetterRow[]): Promise<void> {
  if (dls.length === 0) return;
  const st = deadLetterStatement(dls);
  await client.query(st.text, st.values as unknown[]);
}

/** UTC day numbers (epoch days) spanned by the rows, for partition creation. */
export function utcDays(rows: readonly StoredReading[]): number[] {
  const days = new Set<number>();
  for (const r of rows) days.add(Math.floor(r.time / 86_400_000));
  return [...days].sort((a, b) => a - b);
}

export class TimescaleWriter {
  /** Partitions (topic NUL partition) whose next batches skip the COPY: how many batches are left. */
  private readonly insertModeLeft = new Map<string, number>();
  /** Epoch days known to have a partition (or a hypertable that makes chunks itself). */
  private readonly knownDays = new Set<number>();

  constructor(private readonly pool: pg.Pool) {}

  /** Make sure every UTC day of the rows has a partition (own short transaction, before the batch). */
  async ensurePartitions(rows: readonly StoredReading[]): Promise<void> {
    const missing = utcDays(rows).filter((d) => !this.knownDays.has(d));
    if (missing.length === 0) return;
    // Contiguous runs keep the call count small for backfills.
    let start = missing[0]!;
    let prev = start;
    const runs: Array<[number, number]> = [];
    for (const d of missing.slice(1)) {
      if (d !== prev + 1) {
        runs.push([start, prev]);
        start = d;
      }
      prev = d;
    }
    runs.push([start, prev]);
    for (const [a, b] of runs) {
      await this.pool.query("SELECT millrace.ensure_sensor_partitions($1::timestamptz, $2::timestamptz)", [
        new Date(a * 86_400_000).toISOString(),
        new Date(b * 86_400_000).toISOString(),
      ]);
      for (let d = a; d <= b; d++) this.knownDays.add(d);
    }
  }

  /** Last stored next-offset per partition of `topic` for the group (what to resume from). */
  async storedOffsets(consumerGroup: string, topic: string): Promise<Map<number, number>> {
    const res = await this.pool.query<{ partition: number; next_offset: string }>(
      "SELECT partition, next_offset FROM millrace.consumer_offsets WHERE consumer_group = $1 AND topic = $2",
      [consumerGroup, topic],
    );
    return new Map(res.rows.map((r) => [r.partition, Number(r.next_offset)]));
  }

  /**
   * One batch, one transaction. The common case ("copy") is six round trips: `BEGIN`, the tenant
   * context (a bound parameter), one statement that writes the extra statements and advances the
   * fenced offset, `SET LOCAL ROLE millrace_loader`, the binary COPY of the rows into
   * sensor_data_raw, and COMMIT. A data error in it (SQLSTATE 22/23 — above all a duplicate key,
   * which COPY cannot skip) rolls the attempt back and the batch is written again in "insert" mode:
   * the same transaction with the rows inserted by the statement itself (`INSERT … FROM unnest …
   * ON CONFLICT DO NOTHING`, under RLS); the partition's next {@link INSERT_MODE_BATCHES} batches
   * stay in that mode, since duplicates tend to come in runs (a producer re-sending). A data error
   * there too goes to {@link writeBatchIsolating}, which bisects under savepoints.
   */
  async writeBatch(batch: BatchCommit): Promise<BatchResult> {
    await this.ensurePartitions(batch.rows);
    if (!UUID_TEXT.test(batch.tenantId)) throw new Error(`invalid tenant id ${JSON.stringify(batch.tenantId)}`);
    const key = `${batch.topic}\u0000${batch.partition}`;
    const left = this.insertModeLeft.get(key) ?? 0;
    if (left > 0) this.insertModeLeft.set(key, left - 1);
    else this.insertModeLeft.delete(key);
    if (left === 0 && batch.rows.length > 0) {
      const copied = await this.attempt(batch, "copy");
      if (copied !== "data-error") return copied;
      this.insertModeLeft.set(key, INSERT_MODE_BATCHES);
    }
    const inserted = await this.attempt(batch, "insert");
    if (inserted !== "data-error") return inserted;
    return await this.writeBatchIsolating(batch);
  }

  /** One attempt of the batch in one mode; "data-error" when the database refused a row (rolled back). */
  private async attempt(batch: BatchCommit, mode: "copy" | "insert"): Promise<BatchResult | "data-error"> {
    const client = await this.pool.connect();
    let broken: unknown;
    try {
      // The tenant context is always a bound parameter, never part of the SQL text: a round trip of
      // its own, since a simple query (BEGIN) cannot carry parameters.
      await client.query(BEGIN_BATCH);
      await client.query("SELECT set_config('app.current_tenant_id', $1, true)", [batch.tenantId]);
      const extra: BatchStatement[] = [];
      if (batch.deadLetters.length > 0) extra.push(deadLetterStatement(batch.deadLetters));
      if (batch.statements) extra.push(...batch.statements(new Set()));
      const withRows = mode === "insert" && batch.rows.length > 0;
      const values: unknown[] = [batch.consumerGroup, batch.topic, batch.partition, batch.expectedOffset, batch.nextOffset];
      if (withRows) values.push(...rowValues(batch.tenantId, batch.rows));
      const ctes: string[] = withRows ? [FAST_MOVE_CTE] : [];
      extra.forEach((st, i) => {
        ctes.push(`x${i} AS (${shiftParams(st.text, values.length)})`);
        values.push(...st.values);
      });
      ctes.push(FAST_ADVANCE_CTE);
      const res = await client.query<{ inserted: number; advanced: string | null; stored: string | null }>(
        `WITH ${ctes.join(",\n")}\n${withRows ? FAST_SELECT : FAST_SELECT_NO_ROWS}`,
        values,
      );
      const r = res.rows[0]!;
      if (batch.inTransaction) await batch.inTransaction(client, new Set());
      if (r.advanced === null) {
        // Fenced (or already committed): nothing of the batch is sent. `stored` is from the
        // statement's snapshot; a commit that became visible while the advance waited for the row
        // (an earlier attempt of this batch) is seen by a fresh read, as before.
        let stored = r.stored;
        if (stored === null || Number(stored) !== batch.nextOffset) {
          const now = await client.query<{ next_offset: string }>(
            "SELECT next_offset FROM millrace.consumer_offsets WHERE consumer_group = $1 AND topic = $2 AND partition = $3",
            [batch.consumerGroup, batch.topic, batch.partition],
          );
          stored = now.rows[0]?.next_offset ?? null;
        }
        await client.query("ROLLBACK");
        return this.notAdvanced(batch, stored);
      }
      let inserted = r.inserted;
      if (mode === "copy") {
        // The loader may only COPY into sensor_data_raw, and only rows of the tenant context
        // (migrations/010_loader.sql); the role ends with the transaction.
        await client.query(`SET LOCAL ROLE ${LOADER_ROLE}`);
        await pipeline(Readable.from([encodeCopyBinary(batch.rows, { withOffset: false })]), client.query(copyFrom(COPY_SQL)));
        inserted = batch.rows.length;
      }
      await client.query("COMMIT");
      return { inserted, duplicates: batch.rows.length - inserted, rejected: [] };
    } catch (err) {
      const after = await this.rollbackAfter(client, err);
      broken = after.broken;
      if (after.rethrow !== err || !isDataPgError(err) || broken !== undefined) throw after.rethrow;
      return "data-error";
    } finally {
      // A connection whose state is unknown (failed rollback, lost socket) is discarded, not reused.
      client.release(broken === undefined ? undefined : (broken as Error));
    }
  }

  /**
   * After a failed attempt: roll back, and say whether the rollback itself failed (the connection is
   * then broken and must be discarded). A missing time partition (dropped by retention, or never
   * made) becomes a retriable error, after forgetting the partitions known.
   */
  private async rollbackAfter(client: pg.PoolClient, err: unknown): Promise<{ broken: unknown; rethrow: unknown }> {
    let broken: unknown;
    try {
      await client.query("ROLLBACK");
    } catch (rollbackErr) {
      broken = rollbackErr;
    }
    if (!isMissingPartitionError(err)) return { broken, rethrow: err };
    this.knownDays.clear();
    return { broken, rethrow: new RetriableSinkError(`missing time partition: ${(err as Error).message}`, err) };
  }

  /** The stored offset moved on: either an earlier attempt of this very batch committed, or the batch is fenced. */
  private notAdvanced(batch: BatchCommit, stored: string | null): BatchResult {
    if (stored !== null && Number(stored) === batch.nextOffset) {
      // A previous attempt whose COMMIT outcome was unknown did commit (or another owner stored
      // exactly this range): either way these records are stored once. Nothing to do.
      return { inserted: 0, duplicates: batch.rows.length, rejected: [], alreadyCommitted: true };
    }
    throw new FencedError(`${batch.topic}[${batch.partition}]: stored offset is no longer ${batch.expectedOffset}; another worker owns this partition`);
  }

  /**
   * The batch again after a data error: statement by statement, the rows under savepoints, split
   * in halves until each refused row is alone; those become sink_data_error dead letters in the
   * same transaction.
   */
  private async writeBatchIsolating(batch: BatchCommit): Promise<BatchResult> {
    const client = await this.pool.connect();
    let broken: unknown;
    try {
      await client.query(BEGIN_BATCH);
      await client.query("SELECT set_config('app.current_tenant_id', $1, true)", [batch.tenantId]);
      const { inserted, refused } = await writeIsolating(client, batch.tenantId, batch.rows);
      const rejected = refused.map(({ row, error }) => ({
        row,
        offset: row.offset,
        stage: "sink" as const,
        reason: "sink_data_error",
        message: pgMessage(error),
      }));
      await insertDeadLetters(client, [...batch.deadLetters, ...rejected.map((r) => batch.deadLetterFor(r.row, r))]);
      const refusedOffsets = new Set(rejected.map((r) => r.offset));
      for (const st of batch.statements?.(refusedOffsets) ?? []) await client.query(st.text, st.values as unknown[]);
      if (batch.inTransaction) await batch.inTransaction(client, refusedOffsets);
      const adv = await client.query(ADVANCE_SQL, [batch.consumerGroup, batch.topic, batch.partition, batch.expectedOffset, batch.nextOffset]);
      if (adv.rowCount !== 1) {
        const now = await client.query<{ next_offset: string }>(
          "SELECT next_offset FROM millrace.consumer_offsets WHERE consumer_group = $1 AND topic = $2 AND partition = $3",
          [batch.consumerGroup, batch.topic, batch.partition],
        );
        await client.query("ROLLBACK");
        return this.notAdvanced(batch, now.rows[0]?.next_offset ?? null);
      }
      await client.query("COMMIT");
      return { inserted, duplicates: batch.rows.length - rejected.length - inserted, rejected };
    } catch (err) {
      const after = await this.rollbackAfter(client, err);
      broken = after.broken;
      throw after.rethrow;
    } finally {
      client.release(broken === undefined ? undefined : (broken as Error));
    }
  }
}
