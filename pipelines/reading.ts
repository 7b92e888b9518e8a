/**
 * The shapes a reading takes as it flows through the pipeline:
 *   Kafka record → (decode) DecodedReading → (validate) StoredReading → sinks.
 * A record that leaves the flow becomes a {@link Rejection}, which the engine dead-letters.
 */
import type { Stage } from "../lib/errors.ts";

/** Where a record came from; the engine keeps it alongside every reading and rejection. */
export interface SourcePosition {
  topic: string;
  partition: number;
  /** Kafka offset (int64 as a JS number: safe up to 2^53, far beyond any real partition). */
  offset: number;
}

/** A reading as stored: time in epoch milliseconds (UTC instant), measures nullable. */
export interface StoredReading {
  offset: number;
  time: number;
  tenantId: string;
  equipmentId: string;
  facilityId: string;
  temperature: number | null;
  vibration: number | null;
  pressure: number | null;
}

/** Why a record could not be stored; becomes the dead-letter record's headers. */
export interface Rejection {
  offset: number;
  stage: Stage;
  /** Stable machine-readable code, e.g. `bad_magic_byte`, `tenant_mismatch`. */
  reason: string;
  /** One line for humans. */
  message: string;
  schemaId?: number;
}
