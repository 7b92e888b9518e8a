/**
 * The TimescaleDB/PostgreSQL sink's I/O: one database transaction per batch that
 *   1. sets the tenant context so row-level security checks every row,
 *   2. COPYs the rows (binary format) into a session temp staging table (COPY cannot target a
 *      table with RLS),
 *   3. moves them into sensor_data_raw with INSERT … SELECT … ORDER BY src_offset ON CONFLICT DO
 *      NOTHING (replays and in-batch duplicates are no-ops; the lowest offset wins deterministically),
 *   4. records the batch's dead letters (outbox, exactly once),
 *   5. advances the partition's stored offset — only if it still equals the batch's first offset,
 *      which fences a worker that lost the partition in a rebalance,
 * and commits — 3, 4 (and the engine's extra statements) and 5 as one statement in the common case.
 * A data error (SQLSTATE 22/23) is isolated by bisecting the batch under savepoints: only the
 * offending rows are rejected, the rest of the batch commits.
 */
import { pipeline } from "node:stream/promises";
import { Readable } from "node:stream";
import type pg from "pg";
import { from as copyFrom } from "pg-copy-streams";
import { FencedError, isDataPgError, isMissingPartitionError, RetriableSinkError } from "../../lib/errors.ts";
import type { Rejection, StoredReading } from "../../pipelines/reading.ts";
import { STAGE_COLUMNS } from "./copy-encoder.ts";
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

const STAGE_DDL = `CREATE TEMP TABLE IF NOT EXISTS millrace_stage (
  src_offset bigint NOT NULL, time timestamptz NOT NULL, tenant_id uuid NOT NULL, equipment_id text NOT NULL,
  facility_id text NOT NULL, temperature real, vibration real, pressure real) ON COMMIT DELETE ROWS`;

const COPY_SQL = `COPY millrace_stage (${STAGE_COLUMNS.join(", ")}) FROM STDIN (FORMAT binary)`;

const MOVE_SQL = `WITH moved AS (DELETE FROM millrace_stage RETURNING *)
INSERT INTO sensor_data_raw (time, tenant_id, equipment_id, facility_id, temperature, vibration, pressure)
SELECT DISTINCT ON (time, tenant_id, equipment_id) time, tenant_id, equipment_id, facility_id, temperature, vibration, pressure
FROM moved ORDER BY time, tenant_id, equipment_id, src_offset
ON CONFLICT DO NOTHING`;

/**
 * The common case in one statement: move the staged rows (lowest offset first, so for in-batch
 * duplicates the lowest offset wins, as DISTINCT ON did), then the extra CTEs (dead letters, alarm
 * state, alert outbox), and the fenced offset advance. All CTEs see the snapshot from before the
 * statement, so `stored` is the offset as it was: when `advanced` is null the batch is fenced or
 * (stored = batch end) was already committed by an earlier attempt. The temp staging table is
 * emptied by COMMIT (ON COMMIT DELETE ROWS) or ROLLBACK.
 */
const FAST_MOVE_CTE = `moved AS (INSERT INTO sensor_data_raw (time, tenant_id, equipment_id, facility_id, temperature, vibration, pressure)
SELECT time, tenant_id, equipment_id, facility_id, temperature, vibration, pressure FROM millrace_stage ORDER BY src_offset
ON CONFLICT DO NOTHING RETURNING 1)`;
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

async function copyRows(client: pg.PoolClient, rows: readonly StoredReading[]): Promise<void> {
  if (rows.length === 0) return;
  const stream = client.query(copyFrom(COPY_SQL));
  await pipeline(Readable.from([encodeCopyBinary(rows)]), stream);
}

/** COPY + move one subset; returns rows inserted. */
async function writeSubset(client: pg.PoolClient, rows: readonly StoredReading[]): Promise<number> {
  if (rows.length === 0) return 0;
  await copyRows(client, rows);
  const res = await client.query(MOVE_SQL);
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
  rows: readonly StoredReading[],
  depth = 0,
): Promise<{ inserted: number; refused: Array<{ row: StoredReading; error: unknown }> }> {
  const sp = `millrace_sp_${depth}`;
  await client.query(`SAVEPOINT ${sp}`);
  try {
    const inserted = await writeSubset(client, rows);
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
    const left = await writeIsolating(client, rows.slice(0, mid), depth + 1);
    const right = await writeIsolating(client, rows.slice(mid), depth + 1);
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
  /** Epoch days known to have a partition (or a hypertable that makes chunks itself). */
  private readonly knownDays = new Set<number>();
  /** Sessions whose temp staging table exists (created by a committed transaction). */
  private readonly staged = new WeakSet<pg.PoolClient>();

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
   * One batch, one transaction. The common case is five round trips: `BEGIN[; stage DDL]`, the
   * tenant context (a bound parameter), the COPY, one statement that moves the rows, writes the extra
   * statements and advances the fenced offset, and COMMIT. A data error (SQLSTATE 22/23) anywhere
   * in it rolls the attempt back and the batch is written again by {@link writeBatchIsolating},
   * which bisects under savepoints.
   */
  async writeBatch(batch: BatchCommit): Promise<BatchResult> {
    await this.ensurePartitions(batch.rows);
    if (!UUID_TEXT.test(batch.tenantId)) throw new Error(`invalid tenant id ${JSON.stringify(batch.tenantId)}`);
    const client = await this.pool.connect();
    let broken: unknown;
    let isolate = false;
    try {
      // The tenant context is always a bound parameter, never part of the SQL text: a round trip of
      // its own, since a simple query (BEGIN; DDL) cannot carry parameters.
      await client.query(this.staged.has(client) ? "BEGIN" : `BEGIN; ${STAGE_DDL}`);
      await client.query("SELECT set_config('app.current_tenant_id', $1, true)", [batch.tenantId]);
      if (batch.rows.length > 0) await copyRows(client, batch.rows);
      const extra: BatchStatement[] = [];
      if (batch.deadLetters.length > 0) extra.push(deadLetterStatement(batch.deadLetters));
      if (batch.statements) extra.push(...batch.statements(new Set()));
      const values: unknown[] = [batch.consumerGroup, batch.topic, batch.partition, batch.expectedOffset, batch.nextOffset];
      const ctes: string[] = batch.rows.length > 0 ? [FAST_MOVE_CTE] : [];
      extra.forEach((st, i) => {
        ctes.push(`x${i} AS (${shiftParams(st.text, values.length)})`);
        values.push(...st.values);
      });
      ctes.push(FAST_ADVANCE_CTE);
      const res = await client.query<{ inserted: number; advanced: string | null; stored: string | null }>(
        `WITH ${ctes.join(",\n")}\n${batch.rows.length > 0 ? FAST_SELECT : FAST_SELECT_NO_ROWS}`,
        values,
      );
      const r = res.rows[0]!;
      if (batch.inTransaction) await batch.inTransaction(client, new Set());
      if (r.advanced === null) {
        // `stored` is from the statement's snapshot; a commit that became visible while the advance
        // waited for the row (an earlier attempt of this batch) is seen by a fresh read, as before.
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
      await client.query("COMMIT");
      this.staged.add(client);
      return { inserted: r.inserted, duplicates: batch.rows.length - r.inserted, rejected: [] };
    } catch (err) {
      const after = await this.rollbackAfter(client, err);
      broken = after.broken;
      if (after.rethrow !== err || !isDataPgError(err) || broken !== undefined) throw after.rethrow;
      isolate = true;
    } finally {
      // A connection whose state is unknown (failed rollback, lost socket) is discarded, not reused.
      client.release(broken === undefined ? undefined : (broken as Error));
    }
    if (isolate) return await this.writeBatchIsolating(batch);
    throw new Error("unreachable");
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
      await client.query("BEGIN");
      await client.query("SELECT set_config('app.current_tenant_id', $1, true)", [batch.tenantId]);
      await client.query(STAGE_DDL);
      const { inserted, refused } = await writeIsolating(client, batch.rows);
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
      this.staged.add(client);
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
