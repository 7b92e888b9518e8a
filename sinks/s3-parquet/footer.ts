/**
 * Reading a Parquet file's footer (pure): schema, row groups, row counts, codec, and the time
 * column's min/max statistics — what `millrace parquet inspect|verify` show and check, without
 * decoding any data page. Works on the whole file or on its tail (the last
 * {@link parquetFooterLength} + 8 bytes), e.g. from a ranged GET.
 */
import { createRequire } from "node:module";

const require = createRequire(import.meta.url);

type Int64Like = number | bigint | { toNumber(): number } | Buffer;
interface ThriftStats {
  min_value?: Buffer | null;
  max_value?: Buffer | null;
  null_count?: Int64Like | null;
}
interface ThriftColumnChunk {
  meta_data: { path_in_schema: string[]; codec: number; type: number; num_values: Int64Like; total_compressed_size: Int64Like; statistics?: ThriftStats | null };
}
interface ThriftRowGroup {
  num_rows: Int64Like;
  total_byte_size: Int64Like;
  columns: ThriftColumnChunk[];
}
interface ThriftLogicalType {
  TIMESTAMP?: { isAdjustedToUTC?: boolean; unit?: { MILLIS?: unknown; MICROS?: unknown; NANOS?: unknown } } | null;
  STRING?: unknown;
  [k: string]: unknown;
}
interface ThriftSchemaElement {
  name: string;
  type?: number | null;
  repetition_type?: number | null;
  converted_type?: number | null;
  num_children?: number | null;
  logicalType?: ThriftLogicalType | null;
}
interface ThriftFileMetaData {
  version: number;
  schema: ThriftSchemaElement[];
  num_rows: Int64Like;
  row_groups: ThriftRowGroup[] | null;
  key_value_metadata?: Array<{ key: string; value?: string | null }> | null;
  created_by?: string | null;
}

const thrift = require("parquetjs-lite/gen-nodejs/parquet_types") as {
  FileMetaData: new () => ThriftFileMetaData;
  Type: Record<string, number>;
  ConvertedType: Record<string, number>;
  FieldRepetitionType: Record<string, number>;
  CompressionCodec: Record<string, number>;
};
const { decodeThrift } = require("parquetjs-lite/lib/util") as { decodeThrift(obj: unknown, buf: Buffer, offset?: number): number };

export interface FooterColumn {
  name: string;
  physicalType: string;
  repetition: string;
  /** Logical type as readers name it, e.g. `TIMESTAMP(MILLIS, UTC)`, `STRING`, or "" for none. */
  logicalType: string;
  convertedType: string;
}

export interface FooterRowGroup {
  rows: number;
  /** Compressed bytes of the row group's column chunks. */
  compressedBytes: number;
  codecs: string[];
}

export interface ParquetFooter {
  rows: number;
  createdBy: string;
  keyValue: Record<string, string>;
  columns: FooterColumn[];
  rowGroups: FooterRowGroup[];
  /** From the time column's row-group statistics (epoch ms), when present. */
  minTime: number | undefined;
  maxTime: number | undefined;
  footerBytes: number;
}

const MAGIC = "PAR1";

function name(map: Record<string, number>, v: number | null | undefined): string {
  if (v === null || v === undefined) return "";
  return Object.keys(map).find((k) => map[k] === v) ?? String(v);
}

function toNumber(v: Int64Like | null | undefined): number {
  if (v === null || v === undefined) return 0;
  if (typeof v === "number") return v;
  if (typeof v === "bigint") return Number(v);
  if (Buffer.isBuffer(v)) return Number(v.readBigInt64BE(0));
  return v.toNumber();
}

function logicalName(lt: ThriftLogicalType | null | undefined): string {
  if (!lt) return "";
  if (lt.TIMESTAMP) {
    const u = lt.TIMESTAMP.unit ?? {};
    const unit = u.MILLIS ? "MILLIS" : u.MICROS ? "MICROS" : u.NANOS ? "NANOS" : "?";
    return `TIMESTAMP(${unit}, ${lt.TIMESTAMP.isAdjustedToUTC ? "UTC" : "local"})`;
  }
  const k = Object.keys(lt).find((key) => lt[key] !== null && lt[key] !== undefined);
  return k ?? "";
}

/** Bytes of the footer (thrift metadata) given the file's last 8 bytes; throws if not Parquet. */
export function parquetFooterLength(last8: Buffer): number {
  if (last8.length < 8 || last8.subarray(-4).toString("latin1") !== MAGIC) throw new Error("not a Parquet file (no PAR1 trailer)");
  return last8.readUInt32LE(last8.length - 8);
}

/** Decode the footer of a Parquet file (or of its tail ending at end of file). */
export function readParquetFooter(buf: Buffer): ParquetFooter {
  const len = parquetFooterLength(buf.subarray(-8));
  const start = buf.length - 8 - len;
  if (start < 0) throw new Error(`footer of ${len} bytes does not fit in the ${buf.length} bytes given`);
  const meta = new thrift.FileMetaData();
  decodeThrift(meta, buf.subarray(start, buf.length - 8));
  const leaves = meta.schema.slice(1);
  const columns = leaves.map((el) => ({
    name: el.name,
    physicalType: name(thrift.Type, el.type),
    repetition: name(thrift.FieldRepetitionType, el.repetition_type),
    logicalType: logicalName(el.logicalType),
    convertedType: name(thrift.ConvertedType, el.converted_type),
  }));
  const timeIndex = leaves.findIndex((el) => el.name === "time");
  let minTime: number | undefined;
  let maxTime: number | undefined;
  const rowGroups = (meta.row_groups ?? []).map((g) => {
    const st = timeIndex >= 0 ? g.columns[timeIndex]?.meta_data.statistics : undefined;
    if (st?.min_value && st.min_value.length === 8) {
      const v = Number(st.min_value.readBigInt64LE(0));
      minTime = minTime === undefined ? v : Math.min(minTime, v);
    }
    if (st?.max_value && st.max_value.length === 8) {
      const v = Number(st.max_value.readBigInt64LE(0));
      maxTime = maxTime === undefined ? v : Math.max(maxTime, v);
    }
    return {
      rows: toNumber(g.num_rows),
      compressedBytes: g.columns.reduce((s, c) => s + toNumber(c.meta_data.total_compressed_size), 0),
      codecs: [...new Set(g.columns.map((c) => name(thrift.CompressionCodec, c.meta_data.codec)))],
    };
  });
  const keyValue: Record<string, string> = {};
  for (const kv of meta.key_value_metadata ?? []) keyValue[kv.key] = kv.value ?? "";
  return { rows: toNumber(meta.num_rows), createdBy: meta.created_by ?? "", keyValue, columns, rowGroups, minTime, maxTime, footerBytes: len };
}
