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

/**
 * The measures a reading carries, in column order (sensor_data_raw, Parquet, COPY). One list for
 * every stage: validation, threshold rules (`measure:`), both sinks. The reading's fields below are
 * named exactly as the measures are (snake_case, as in the schema and in rules).
 */
export const MEASURES = ["temperature", "vibration", "pressure", "flow_rate"] as const;
export type Measure = (typeof MEASURES)[number];

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
  /** Litres per minute; null when the producer's schema version has no flow_rate (version 1). */
  flow_rate: number | null;
}

// Every measure is a field of StoredReading under its own name (the threshold evaluator reads
// `reading[rule.measure]`): this fails to compile if the list and the interface drift apart.
type MeasureFieldsPresent = StoredReading extends Record<Measure, number | null> ? true : never;
export const MEASURE_FIELDS_PRESENT: MeasureFieldsPresent = true;

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
