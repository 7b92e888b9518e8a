import { describe, expect, it } from "vitest";
import { FencedError, isDataPgError, isMissingPartitionError, isRetriablePgError, MillraceError, RetriableSinkError } from "./errors.ts";

/** A node-postgres DatabaseError as it arrives: an Error with the SQLSTATE in `code`. */
const pgError = (code: string, message = `error ${code}`) => Object.assign(new Error(message), { code });
/** A socket-level failure (errno code, no SQLSTATE). */
const sysError = (code: string) => Object.assign(new Error(`connect ${code} 127.0.0.1:5432`), { code });

describe("isRetriablePgError / isDataPgError: which failures are retried, which dead-letter the row", () => {
  // [what, error, retriable, data error]
  const cases: Array<[string, unknown, boolean, boolean]> = [
    ["08000 connection_exception", pgError("08000"), true, false],
    ["08006 connection_failure", pgError("08006"), true, false],
    ["08P01 protocol_violation", pgError("08P01"), true, false],
    ["40001 serialization_failure", pgError("40001"), true, false],
    ["40P01 deadlock_detected", pgError("40P01"), true, false],
    ["40002 transaction_integrity_constraint_violation (not a retry class)", pgError("40002"), false, false],
    ["53300 too_many_connections", pgError("53300"), true, false],
    ["53100 disk_full", pgError("53100"), true, false],
    ["57P01 admin_shutdown", pgError("57P01"), true, false],
    ["57P02 crash_shutdown", pgError("57P02"), true, false],
    ["57P03 cannot_connect_now", pgError("57P03"), true, false],
    ["57014 query_canceled (statement_timeout)", pgError("57014"), true, false],
    ["55P03 lock_not_available", pgError("55P03"), true, false],
    ["22P02 invalid_text_representation", pgError("22P02"), false, true],
    ["22003 numeric_value_out_of_range", pgError("22003"), false, true],
    ["22021 character_not_in_repertoire", pgError("22021"), false, true],
    ["23505 unique_violation", pgError("23505"), false, true],
    ["23502 not_null_violation", pgError("23502"), false, true],
    ["23514 check_violation", pgError("23514", 'new row for relation "sensor_data_raw" violates check constraint "x"'), false, true],
    ["23514 no partition for the row (fixed by creating it, not a data error)", pgError("23514", 'no partition of relation "sensor_data_raw" found for row'), false, false],
    ["42501 insufficient_privilege (a misconfiguration: neither)", pgError("42501"), false, false],
    ["42P01 undefined_table", pgError("42P01"), false, false],
    ["ECONNREFUSED", sysError("ECONNREFUSED"), true, false],
    ["ECONNRESET", sysError("ECONNRESET"), true, false],
    ["ETIMEDOUT", sysError("ETIMEDOUT"), true, false],
    ["EPIPE", sysError("EPIPE"), true, false],
    ["node-postgres: Connection terminated unexpectedly", new Error("Connection terminated unexpectedly"), true, false],
    ["node-postgres: timeout exceeded when trying to connect", new Error("timeout exceeded when trying to connect"), true, false],
    ["node-postgres: Client was closed and is not queryable", new Error("Client was closed and is not queryable"), true, false],
    ["the database system is starting up (no code)", new Error("the database system is starting up"), true, false],
    ["a TypeError is a bug", new TypeError("Cannot read properties of undefined (reading 'x')"), false, false],
    ["a plain Error", new Error("something else"), false, false],
    ["a lower-case pseudo code is not a SQLSTATE", pgError("abcde"), false, false],
    ["null", null, false, false],
    ["undefined", undefined, false, false],
    ["a string", "08006", false, false],
    ["MillraceError retriable", new MillraceError("registry down", { retriable: true, stage: "decode", reason: "registry_unavailable" }), true, false],
    ["MillraceError not retriable", new MillraceError("bad", { retriable: false, stage: "sink", reason: "x" }), false, false],
    ["RetriableSinkError", new RetriableSinkError("S3 503"), true, false],
    ["FencedError (never retried: the partition is gone)", new FencedError("fenced"), false, false],
  ];

  it.each(cases)("%s", (_what, err, retriable, data) => {
    expect(isRetriablePgError(err)).toBe(retriable);
    expect(isDataPgError(err)).toBe(data);
  });

  it("a MillraceError's own flag wins over a SQLSTATE-like code on it", () => {
    const e = Object.assign(new MillraceError("wrapped", { retriable: false, stage: "sink", reason: "x" }), { code: "40001" });
    expect(isRetriablePgError(e)).toBe(false);
  });

  it("isMissingPartitionError: only 23514 with the partition-routing message", () => {
    expect(isMissingPartitionError(pgError("23514", 'no partition of relation "sensor_data_raw" found for row'))).toBe(true);
    expect(isMissingPartitionError(pgError("23514", "violates check constraint"))).toBe(false);
    expect(isMissingPartitionError(pgError("22P02", "no partition of relation"))).toBe(false);
    expect(isMissingPartitionError(undefined)).toBe(false);
  });
});
