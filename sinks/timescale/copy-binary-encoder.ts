/**
 * The sink's COPY encoding (pure: rows in, bytes out): readings in PostgreSQL's binary COPY format,
 * for the staging table's columns (STAGE_COLUMNS in copy-encoder.ts). Chosen over the text format
 * by measurement (docs/benchmarks.md, issue 3): about a quarter of the client CPU per row, the same
 * server ingest rate, identical stored rows; and nothing needs escaping.
 *
 * Format (PostgreSQL docs, COPY "Binary Format"): the 11-byte signature `PGCOPY\n\377\r\n\0`, int32
 * flags (0), int32 header-extension length (0); per tuple an int16 field count, then per field an
 * int32 byte length (-1 = NULL) and the value in the type's binary send format; an int16 -1 trailer.
 * bigint = int64 BE; timestamptz = int64 BE microseconds since 2000-01-01 UTC; uuid = its 16 bytes;
 * text = UTF-8 bytes; real = IEEE-754 float32 BE. Everything is big-endian.
 *
 * bench/micro.ts measures it against the text encoder (copy-encoder.ts, kept as the baseline) and
 * bench/anchors.ts loads both through the sink's staging SQL and checks the stored rows are equal.
 */
import type { StoredReading } from "../../pipelines/reading.ts";

export const BINARY_SIGNATURE = Buffer.from([0x50, 0x47, 0x43, 0x4f, 0x50, 0x59, 0x0a, 0xff, 0x0d, 0x0a, 0x00]);
const HEADER_BYTES = BINARY_SIGNATURE.length + 8;
/** 2000-01-01T00:00:00Z in Unix epoch ms: PostgreSQL's timestamp epoch. */
export const PG_EPOCH_MS = 946_684_800_000;
const TWO_32 = 4_294_967_296;

const uuidCache = new Map<string, Buffer>();

export function uuidBytes(uuid: string): Buffer {
  let b = uuidCache.get(uuid);
  if (b === undefined) {
    const hex = uuid.replace(/-/g, "");
    if (!/^[0-9a-fA-F]{32}$/.test(hex)) throw new Error(`not a UUID: ${JSON.stringify(uuid)}`);
    b = Buffer.from(hex, "hex");
    if (uuidCache.size > 10_000) uuidCache.clear();
    uuidCache.set(uuid, b);
  }
  return b;
}

/** int64 (a safe integer) big-endian at `off`. */
function writeInt64(buf: Buffer, v: number, off: number): void {
  const hi = Math.floor(v / TWO_32);
  buf.writeInt32BE(hi, off);
  buf.writeUInt32BE(v - hi * TWO_32, off + 4);
}

export interface BinaryCopyOptions {
  /** Prefix each tuple with src_offset (the staging table's column list, STAGE_COLUMNS); default true. */
  withOffset?: boolean;
}

/** Rows → one binary COPY stream (signature, tuples, trailer). */
export function encodeCopyBinary(rows: readonly StoredReading[], opts: BinaryCopyOptions = {}): Buffer {
  const withOffset = opts.withOffset ?? true;
  const fields = withOffset ? 9 : 8;
  // Upper bound: fixed parts + 3 bytes per UTF-16 unit of the two text columns.
  let bound = HEADER_BYTES + 2;
  for (const r of rows) bound += 2 + fields * 4 + (withOffset ? 8 : 0) + 8 + 16 + 16 + 3 * (r.equipmentId.length + r.facilityId.length);
  const buf = Buffer.allocUnsafe(bound);
  BINARY_SIGNATURE.copy(buf, 0);
  buf.writeInt32BE(0, 11);
  buf.writeInt32BE(0, 15);
  let o = HEADER_BYTES;
  for (const r of rows) {
    buf.writeInt16BE(fields, o);
    o += 2;
    if (withOffset) {
      buf.writeInt32BE(8, o);
      writeInt64(buf, r.offset, o + 4);
      o += 12;
    }
    buf.writeInt32BE(8, o);
    writeInt64(buf, (r.time - PG_EPOCH_MS) * 1000, o + 4);
    o += 12;
    buf.writeInt32BE(16, o);
    uuidBytes(r.tenantId).copy(buf, o + 4);
    o += 20;
    let n = buf.write(r.equipmentId, o + 4, "utf8");
    buf.writeInt32BE(n, o);
    o += 4 + n;
    n = buf.write(r.facilityId, o + 4, "utf8");
    buf.writeInt32BE(n, o);
    o += 4 + n;
    for (const v of [r.temperature, r.vibration, r.pressure, r.flow_rate]) {
      if (v === null) {
        buf.writeInt32BE(-1, o);
        o += 4;
      } else {
        buf.writeInt32BE(4, o);
        buf.writeFloatBE(v, o + 4);
        o += 8;
      }
    }
  }
  buf.writeInt16BE(-1, o);
  o += 2;
  return buf.subarray(0, o);
}
