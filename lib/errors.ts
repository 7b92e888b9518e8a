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
  const code = (err as { code?: unknown })?.code;
  if (typeof code !== "string") {
    // No SQLSTATE: a socket error, a timeout, a pool error — connection-level, retriable.
    return true;
  }
  return (
    code.startsWith("08") || // connection exception
    code === "40001" || // serialization_failure
    code === "40P01" || // deadlock_detected
    code === "53300" || // too_many_connections
    code.startsWith("53") || // insufficient resources
    code.startsWith("57P") || // operator intervention: admin shutdown, crash shutdown, cannot connect now
    code === "55P03" || // lock_not_available
    code === "57014" // query_canceled (statement_timeout)
  );
}

/** Data errors: the row itself cannot be stored. */
export function isDataPgError(err: unknown): boolean {
  const code = (err as { code?: unknown })?.code;
  return typeof code === "string" && (code.startsWith("22") || code.startsWith("23"));
}
