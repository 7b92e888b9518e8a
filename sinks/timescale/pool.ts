/**
 * Connection pools for the sink. The worker connects with MILLRACE_PG_URL; if MILLRACE_PG_ROLE is
 * set (the local stack sets millrace_writer, because its only login is the admin) every session
 * switches to that role at connection start (a constant role name, validated — never a tenant id).
 * Sessions use UTC so nothing depends on the host's TZ (times are sent as UTC instants anyway).
 */
import pg from "pg";

const ROLE_NAME = /^[a-z_][a-z0-9_]{0,62}$/;

export interface PoolSettings {
  connectionString: string;
  role?: string;
  max?: number;
  applicationName?: string;
  /** Server-side statement timeout (ms) so a stuck statement surfaces as an error. */
  statementTimeoutMs?: number;
  /**
   * Server-side idle_in_transaction_session_timeout (ms): the server ends a session that sits in an
   * open transaction this long without sending a statement — a frozen worker (SIGSTOP, GC or VM
   * pause) must not hold its locks (uncommitted rows, the manifest's advisory lock) over the
   * partition's new owner for as long as it is frozen.
   */
  idleInTransactionTimeoutMs?: number;
}

export function createPool(s: PoolSettings): pg.Pool {
  if (s.role !== undefined && !ROLE_NAME.test(s.role)) throw new Error(`invalid PostgreSQL role name ${JSON.stringify(s.role)}`);
  const options = [`-c TimeZone=UTC`];
  if (s.role) options.push(`-c role=${s.role}`);
  if (s.statementTimeoutMs) options.push(`-c statement_timeout=${Math.trunc(s.statementTimeoutMs)}`);
  if (s.idleInTransactionTimeoutMs) options.push(`-c idle_in_transaction_session_timeout=${Math.trunc(s.idleInTransactionTimeoutMs)}`);
  const pool = new pg.Pool({
    connectionString: s.connectionString,
    max: s.max ?? 4,
    application_name: s.applicationName ?? "millrace",
    options: options.join(" "),
    connectionTimeoutMillis: 10_000,
    idleTimeoutMillis: 30_000,
    keepAlive: true,
  });
  // An idle client losing its connection must not crash the process; the pool replaces it.
  pool.on("error", () => {});
  // Nor may a checked-out one between queries (e.g. while a publisher waits on Kafka inside its
  // transaction, or the server is killed): the next query on it fails with a retriable connection
  // error, and the pool drops it on release.
  pool.on("connect", (client) => {
    client.on("error", () => {});
  });
  return pool;
}
