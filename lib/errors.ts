/**
 * The error vocabulary. Every error the pipeline reasons about is a {@link MillraceError} with a
 * `retriable` flag (back off and try again, never drop), a stage and a reason code (what goes into
 * the dead-letter headers when it is not retriable).
 */

export type Stage = "decode" | "validate" | "quota" | "thresholds" | "sink" | "tenant";

export class MillraceError extends Error {
  readonly retriable: boolean;
  readonly stage: Stage;
  readonly reason: string;
  constructor(message: string, opts: { retriable: boolean; stage: Stage; reason: string; cause?: unknown }) {
    super(message, opts.cause === undefined ? undefined : { cause: opts.cause });
    this.name = new.target.name;
    this.retriable = opts.retriable;
    this.stage = opts.stage;
    this.reason = opts.reason;
  }
}

/** Thrown by a sink when a transient failure (connection lost, serialization failure, 5xx) should be retried. */
export class RetriableSinkError extends MillraceError {
  constructor(message: string, cause?: unknown) {
    super(message, { retriable: true, stage: "sink", reason: "sink_unavailable", cause });
  }
}

/** Thrown when this worker no longer owns the partition whose batch it was writing (fenced). */
export class FencedError extends MillraceError {
  constructor(message: string) {
    super(message, { retriable: false, stage: "sink", reason: "fenced" });
  }
}

/**
 * PostgreSQL SQLSTATE classes: which errors are transient (retry the whole batch) and which are
 * data errors (isolate and dead-letter the offending row).
 */
export function isRetriablePgError(err: unknown): boolean {
  const e = err as { code?: unknown; message?: unknown };
  if (err instanceof MillraceError) return err.retriable;
  const code = e?.code;
  // A socket-level failure (ECONNREFUSED, ECONNRESET, EPIPE, ETIMEDOUT…): errno codes start with E,
  // which no SQLSTATE class does — checked first, as EPIPE also looks like a five-character SQLSTATE.
  if (typeof code === "string" && /^E[A-Z]+$/.test(code)) return true;
  if (typeof code === "string" && /^[0-9A-Z]{5}$/.test(code)) {
    return (
      code.startsWith("08") || // connection exception
      code === "40001" || // serialization_failure
      code === "40P01" || // deadlock_detected
      code.startsWith("53") || // insufficient resources, too_many_connections
      code.startsWith("57P") || // admin/crash shutdown, cannot connect now
      code === "55P03" || // lock_not_available
      code === "57014" // query_canceled (statement_timeout)
    );
  }
  // No code: one of node-postgres's own connection errors. Anything else (a TypeError, say) is a
  // bug, not retriable.
  const msg = typeof e?.message === "string" ? e.message : "";
  return /Connection terminated|connection error|timeout exceeded when trying to connect|Client was closed|Connection ended|the database system is (starting up|shutting down)/i.test(msg);
}

/** "no partition of relation … found for row": a missing time partition, fixed by creating it. */
export function isMissingPartitionError(err: unknown): boolean {
  const e = err as { code?: unknown; message?: unknown };
  return e?.code === "23514" && typeof e.message === "string" && /no partition of relation/.test(e.message);
}

/** Data errors: the row itself cannot be stored. */
export function isDataPgError(err: unknown): boolean {
  const code = (err as { code?: unknown })?.code;
  return typeof code === "string" && (code.startsWith("22") || code.startsWith("23")) && !isMissingPartitionError(err);
}
