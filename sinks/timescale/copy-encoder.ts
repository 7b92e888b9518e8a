/**
 * Pure encoding of readings into PostgreSQL COPY text format (rows in, bytes out; no I/O). The sink
 * writes binary COPY (copy-binary-encoder.ts, chosen by measurement); this text encoder is the
 * benchmarks' baseline and defines the staging table's column order.
 *
 * Text format rules (PostgreSQL docs, COPY "Text Format"): columns separated by TAB, rows by LF,
 * NULL is `\N`, and backslash, TAB, LF and CR inside a value are escaped as `\\`, `\t`, `\n`, `\r`.
 * So the two characters `\N` in a value arrive as `\\N` and read back as `\N`, never as NULL.
 * Times are written as ISO-8601 UTC instants (`…Z`), so the session's TimeZone cannot move them.
 */
import type { StoredReading } from "../../pipelines/reading.ts";

const NEEDS_ESCAPE = /[\\\t\n\r]/;
const ESCAPES: Record<string, string> = { "\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r" };

export function escapeCopyText(value: string): string {
  return NEEDS_ESCAPE.test(value) ? value.replace(/[\\\t\n\r]/g, (c) => ESCAPES[c]!) : value;
}

function measure(v: number | null): string {
  if (v === null) return "\\N";
  // Non-finite values are rejected by validation before they get here; keep the encoder total anyway.
  if (Number.isNaN(v)) return "NaN";
  if (v === Infinity) return "Infinity";
  if (v === -Infinity) return "-Infinity";
  return String(v);
}

/** The staging table's columns, in the order {@link encodeCopyRows} writes them. */
export const STAGE_COLUMNS = ["src_offset", "time", "tenant_id", "equipment_id", "facility_id", "temperature", "vibration", "pressure", "flow_rate"] as const;

export function encodeCopyRow(r: StoredReading): string {
  return (
    `${r.offset}\t${new Date(r.time).toISOString()}\t${r.tenantId}\t${escapeCopyText(r.equipmentId)}\t` +
    `${escapeCopyText(r.facilityId)}\t${measure(r.temperature)}\t${measure(r.vibration)}\t${measure(r.pressure)}\t${measure(r.flow_rate)}\n`
  );
}

/** Encode rows into one buffer (chunked by the caller if it wants streaming). */
export function encodeCopyRows(rows: readonly StoredReading[]): Buffer {
  const parts = new Array<string>(rows.length);
  for (let i = 0; i < rows.length; i++) parts[i] = encodeCopyRow(rows[i]!);
  return Buffer.from(parts.join(""), "utf8");
}
