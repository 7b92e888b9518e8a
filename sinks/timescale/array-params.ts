/**
 * The sink's row encoding (pure: rows in, bytes out): a batch of readings as one PostgreSQL array per
 * column, in the arrays' binary wire format, sent as bound parameters of the sink's single
 * `INSERT … SELECT … FROM unnest($n::timestamptz[], …)` statement (node-postgres sends a Buffer
 * parameter in binary format). One write per row into sensor_data_raw, under row-level security,
 * instead of a binary COPY into a staging table and a second write from it — COPY FROM is refused on
 * a table with RLS for a role subject to it. Chosen by measurement (docs/benchmarks.md, issue 7).
 *
 * Format (PostgreSQL's array_send/array_recv): int32 number of dimensions (1), int32 flags (1 if
 * any element is NULL), int32 element type OID, per dimension int32 length and int32 lower bound
 * (1); per element an int32 byte length (-1 = NULL) and the value in the element type's binary send
 * format. timestamptz = int64 BE microseconds since 2000-01-01 UTC; text = UTF-8 bytes; real =
 * IEEE-754 float32 BE. array_recv refuses an element OID other than the parameter's.
 *
 * The tenant id is not an array: a batch is one tenant's, so it is one bound uuid parameter.
 */
import type { StoredReading } from "../../pipelines/reading.ts";
import { PG_EPOCH_MS } from "./copy-binary-encoder.ts";

export const OID = { timestamptz: 1184, text: 25, float4: 700 } as const;

const ARRAY_HEADER_BYTES = 20;
const TWO_32 = 4_294_967_296;

export interface ReadingArrays {
  time: Buffer;
  equipmentId: Buffer;
  facilityId: Buffer;
  temperature: Buffer;
  vibration: Buffer;
  pressure: Buffer;
  flowRate: Buffer;
}

/** The statement's unnest: the parameter numbers of the seven arrays, from `first`. */
export function unnestSql(first: number): string {
  const p = (i: number) => `$${first + i}`;
  return `unnest(${p(0)}::timestamptz[], ${p(1)}::text[], ${p(2)}::text[], ${p(3)}::real[], ${p(4)}::real[], ${p(5)}::real[], ${p(6)}::real[])`;
}

function header(buf: Buffer, o: number, oid: number, n: number, hasNull: boolean): number {
  buf.writeInt32BE(1, o);
  buf.writeInt32BE(hasNull ? 1 : 0, o + 4);
  buf.writeInt32BE(oid, o + 8);
  buf.writeInt32BE(n, o + 12);
  buf.writeInt32BE(1, o + 16);
  return o + ARRAY_HEADER_BYTES;
}

type MeasureKey = "temperature" | "vibration" | "pressure" | "flow_rate";

/** Rows → the seven column arrays (in row order), as subarrays of one buffer. */
export function encodeReadingArrays(rows: readonly StoredReading[]): ReadingArrays {
  const n = rows.length;
  // Upper bound: headers, 12 bytes a time, 8 a measure, 4 + 3 per UTF-16 unit of the two texts.
  let bound = 7 * ARRAY_HEADER_BYTES + n * (12 + 4 * 8 + 8);
  for (let i = 0; i < n; i++) bound += 3 * (rows[i]!.equipmentId.length + rows[i]!.facilityId.length);
  const buf = Buffer.allocUnsafe(bound);

  let o = header(buf, 0, OID.timestamptz, n, false);
  for (let i = 0; i < n; i++) {
    const us = (rows[i]!.time - PG_EPOCH_MS) * 1000;
    const hi = Math.floor(us / TWO_32);
    buf.writeInt32BE(8, o);
    buf.writeInt32BE(hi, o + 4);
    buf.writeUInt32BE(us - hi * TWO_32, o + 8);
    o += 12;
  }
  const time = buf.subarray(0, o);

  const texts = (key: "equipmentId" | "facilityId"): Buffer => {
    const start = o;
    o = header(buf, o, OID.text, n, false);
    for (let i = 0; i < n; i++) {
      const len = buf.write(rows[i]![key], o + 4, "utf8");
      buf.writeInt32BE(len, o);
      o += 4 + len;
    }
    return buf.subarray(start, o);
  };
  const equipmentId = texts("equipmentId");
  const facilityId = texts("facilityId");

  const reals = (key: MeasureKey): Buffer => {
    const start = o;
    let hasNull = false;
    o = header(buf, o, OID.float4, n, false);
    for (let i = 0; i < n; i++) {
      const v = rows[i]![key];
      if (v === null) {
        hasNull = true;
        buf.writeInt32BE(-1, o);
        o += 4;
      } else {
        buf.writeInt32BE(4, o);
        buf.writeFloatBE(v, o + 4);
        o += 8;
      }
    }
    if (hasNull) buf.writeInt32BE(1, start + 4);
    return buf.subarray(start, o);
  };
  const temperature = reals("temperature");
  const vibration = reals("vibration");
  const pressure = reals("pressure");
  const flowRate = reals("flow_rate");
  return { time, equipmentId, facilityId, temperature, vibration, pressure, flowRate };
}
