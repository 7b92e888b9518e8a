/**
 * The time-partition maintenance step (vanilla PostgreSQL; migrations/004_sensor_data_raw.sql):
 * `millrace.maintain_sensor_partitions(behind, ahead)` creates the missing daily partitions of
 * sensor_data_raw from `behind` ago to `ahead` ahead of now, each with row-level security and the
 * tenant_isolation policy. Run at the end of every `millrace migrate` (per database), by
 * `millrace partitions maintain`, and by every worker at start and then on a timer
 * (pipelines/runtime/partition-maintenance.ts). On TimescaleDB it creates nothing (chunks are the
 * extension's).
 *
 * This wrapper also says *which* partitions it created: it takes the same advisory lock the SQL
 * function takes (transaction-scoped; re-entrant within the session), lists the partitions, runs
 * the function and lists them again, all in one transaction — under that lock nobody else creates
 * one in between, so the difference is exactly what this call created.
 */
import type pg from "pg";

/** The SQL function's defaults (migrations/004): 2 days behind to 14 days ahead. */
export const DEFAULT_BEHIND_DAYS = 2;
export const DEFAULT_AHEAD_DAYS = 14;

export interface MaintainOptions {
  behindDays?: number;
  aheadDays?: number;
}

const LOCK_SQL = "SELECT pg_advisory_xact_lock(hashtext('millrace.ensure_sensor_partitions'))";
const LIST_SQL = `SELECT c.relname AS name FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
  WHERE i.inhparent = 'public.sensor_data_raw'::regclass`;
const MAINTAIN_SQL = "SELECT millrace.maintain_sensor_partitions(make_interval(days => $1), make_interval(days => $2)) AS n";

function days(name: string, v: number | undefined, fallback: number): number {
  const d = v ?? fallback;
  if (!Number.isInteger(d) || d < 0 || d > 3650) throw new Error(`${name} must be a whole number of days between 0 and 3650 (got ${v})`);
  return d;
}

/** Runs the maintenance step on one connection (not inside a transaction of the caller's); returns the partitions it created, sorted. */
export async function maintainPartitionsOn(client: pg.ClientBase, opts: MaintainOptions = {}): Promise<string[]> {
  const behind = days("behindDays", opts.behindDays, DEFAULT_BEHIND_DAYS);
  const ahead = days("aheadDays", opts.aheadDays, DEFAULT_AHEAD_DAYS);
  await client.query("BEGIN");
  try {
    await client.query(LOCK_SQL);
    const before = new Set((await client.query<{ name: string }>(LIST_SQL)).rows.map((r) => r.name));
    const { rows } = await client.query<{ n: number }>(MAINTAIN_SQL, [behind, ahead]);
    const created = rows[0]!.n > 0 ? (await client.query<{ name: string }>(LIST_SQL)).rows.map((r) => r.name).filter((n) => !before.has(n)).sort() : [];
    await client.query("COMMIT");
    return created;
  } catch (err) {
    await client.query("ROLLBACK").catch(() => {});
    throw err;
  }
}

/** {@link maintainPartitionsOn} on a connection of the pool (the worker's role may run it: it is granted to millrace_writer). */
export async function maintainPartitions(pool: pg.Pool, opts: MaintainOptions = {}): Promise<string[]> {
  const client = await pool.connect();
  let broken: Error | undefined;
  try {
    return await maintainPartitionsOn(client, opts);
  } catch (err) {
    broken = err as Error; // a connection whose transaction state is unknown is not reused
    throw err;
  } finally {
    client.release(broken);
  }
}

/** Whether the database has the maintenance function (i.e. migration 004 is applied). */
export async function hasPartitionMaintenance(client: pg.ClientBase): Promise<boolean> {
  const { rows } = await client.query<{ ok: boolean }>("SELECT to_regprocedure('millrace.maintain_sensor_partitions(interval,interval)') IS NOT NULL AS ok");
  return rows[0]!.ok;
}
