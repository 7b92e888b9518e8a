/**
 * Pure Parquet encoding of stored readings (rows in, bytes out; no I/O), on parquetjs-lite.
 *
 * Schema (one row per reading, in the order given):
 *   time           INT64  TIMESTAMP(MILLIS, isAdjustedToUTC=true)   required — a UTC instant
 *   tenant_id      BYTE_ARRAY STRING (UTF-8)                        required
 *   equipment_id   BYTE_ARRAY STRING (UTF-8)                        required
 *   facility_id    BYTE_ARRAY STRING (UTF-8)                        required
 *   temperature    FLOAT                                            optional
 *   vibration      FLOAT                                            optional
 *   pressure       FLOAT                                            optional
 *   source_offset  INT64                                            required — the Kafka offset
 *   flow_rate      FLOAT                                            optional — added with SensorReading v2;
 *                                                                   last, so a reader matching columns by
 *                                                                   position still reads older files
 *
 * What parquetjs-lite does not do and this module adds: it writes only the legacy converted type
 * (TIMESTAMP_MILLIS, UTF8), so the footer is written here with the modern logical types as well
 * (TIMESTAMP isAdjustedToUTC, STRING) and column orders; it refuses negative TIMESTAMP_MILLIS
 * integers (a reading before 1970), so the time column is shredded as INT64 and typed in the footer.
 *
 * Choices, each for reader compatibility or determinism:
 *  - data page v1 (every reader supports it), no page index (parquetjs-lite writes ColumnIndex
 *    structs without their required fields), snappy by default (zstd is not in parquetjs-lite);
 *  - no min/max statistics on the string columns: parquetjs-lite compares JS strings (UTF-16 code
 *    units), which is not the UTF-8 byte order readers prune row groups with;
 *  - a measure column holding a NaN in a file gets no statistics in that file (a NaN bound would make
 *    readers prune wrongly); non-finite values themselves are stored as IEEE floats, exactly as the
 *    PostgreSQL sink stores them in `real`. They should never arrive: validation dead-letters NaN and
 *    ±Infinity (reason non_finite_value) before any sink, so both sinks see the same rows;
 *  - measures are FLOAT (32-bit), the same precision as PostgreSQL `real`;
 *  - no clocks, random values or host names anywhere: the same rows give the same bytes.
 */
import { createRequire } from "node:module";
import { Writable } from "node:stream";
import { MEASURES, type StoredReading } from "../../pipelines/reading.ts";

const require = createRequire(import.meta.url);

/** The columns, in file order. */
export const PARQUET_COLUMNS = ["time", "tenant_id", "equipment_id", "facility_id", "temperature", "vibration", "pressure", "source_offset", "flow_rate"] as const;
export type ParquetColumn = (typeof PARQUET_COLUMNS)[number];

export const MEASURE_COLUMNS = MEASURES;

export type ParquetCompression = "SNAPPY" | "GZIP" | "UNCOMPRESSED";

export interface ParquetEncodeOptions {
  /** Rows per row group: what the writer holds shredded in memory at once (default 4096). */
  rowGroupRows?: number;
  /** Rows per data page (default 4096, at most rowGroupRows). */
  pageRows?: number;
  /** Default SNAPPY. */
  compression?: ParquetCompression;
  /** Extra key/value metadata for the footer (must itself be deterministic: no clocks). */
  metadata?: Readonly<Record<string, string>>;
  /**
   * "fast" (default): rows inside a row group are shredded here (see {@link shredFlat}); the library
   * shreds the first and last row of each group, which cuts pages and writes the group. "library":
   * every row through parquetjs-lite's appendRow. Both give the same bytes (tested).
   */
  shredder?: "fast" | "library";
}

export const DEFAULT_ROW_GROUP_ROWS = 4096;
/** Written into every file's footer (`created_by`) and compared by `millrace parquet inspect`. */
export const CREATED_BY = "millrace s3_parquet (parquetjs-lite 0.8.7)";
/** Key/value metadata naming the schema version, so a later change can be told apart. */
export const SCHEMA_METADATA_KEY = "millrace.schema";
export const SCHEMA_VERSION = "sensor-reading/2";

// ---- the parts of parquetjs-lite used here (CommonJS, untyped) ----

interface ThriftObject {
  write(output: unknown): void;
}
type ThriftCtor = new (args?: Record<string, unknown>) => ThriftObject & Record<string, unknown>;

interface ParquetThrift {
  Type: Record<string, number>;
  ConvertedType: Record<string, number>;
  FieldRepetitionType: Record<string, number>;
  FileMetaData: ThriftCtor;
  SchemaElement: ThriftCtor;
  KeyValue: ThriftCtor;
  LogicalType: ThriftCtor;
  TimestampType: ThriftCtor;
  TimeUnit: ThriftCtor;
  MilliSeconds: ThriftCtor;
  StringType: ThriftCtor;
  ColumnOrder: ThriftCtor;
  TypeDefinedOrder: ThriftCtor;
}

interface LibField {
  name: string;
  path: string[];
  primitiveType: string;
  originalType?: string;
  repetitionType: string;
  dLevelMax: number;
  isNested?: boolean;
}

interface LibSchema {
  fieldList: LibField[];
}

interface LibEnvelopeWriter {
  rowCount: number;
  rowGroups: unknown[];
  writeSection(buf: Buffer): Promise<void>;
  writeFooter(userMetadata?: Record<string, string>): Promise<void>;
}

interface LibColumnData {
  dlevels: number[];
  rlevels: number[];
  values: unknown[];
  distinct_values: Set<unknown>;
  count: number;
}

/** The writer's buffer of the row group being filled (shredded columns). */
interface LibRowBuffer {
  rowCount?: number;
  pageRowCount?: number;
  columnData?: Record<string, LibColumnData>;
}

interface LibWriter {
  rowBuffer: LibRowBuffer;
  appendRow(row: Record<string, unknown>): Promise<void>;
  close(): Promise<void>;
}

interface ParquetJsLite {
  ParquetSchema: new (def: Record<string, Record<string, unknown>>) => LibSchema;
  ParquetEnvelopeWriter: new (
    schema: LibSchema,
    write: (buf: Buffer) => Promise<void>,
    close: () => Promise<void>,
    fileOffset: number,
    opts: Record<string, unknown>,
  ) => LibEnvelopeWriter;
  ParquetWriter: new (schema: LibSchema, envelope: LibEnvelopeWriter, opts: Record<string, unknown>) => LibWriter;
}

const lib = require("parquetjs-lite") as ParquetJsLite;
const thrift = require("parquetjs-lite/gen-nodejs/parquet_types") as ParquetThrift;
const { serializeThrift } = require("parquetjs-lite/lib/util") as { serializeThrift(obj: ThriftObject): Buffer };
const libTypes = require("parquetjs-lite/lib/types") as { PARQUET_LOGICAL_TYPES: Record<string, { toPrimitive: (v: unknown) => unknown }> };

// parquetjs-lite's FLOAT conversion throws on NaN (it parses with parseFloat and rejects NaN). A
// number is already a float's value: pass numbers through (NaN included, so one stray NaN cannot
// abort a whole file), keep the library's parsing for anything else. Only millrace uses the library
// in this process; the change is idempotent.
{
  const float = libTypes.PARQUET_LOGICAL_TYPES.FLOAT!;
  const original = float.toPrimitive;
  if (!(original as { millrace?: boolean }).millrace) {
    const patched = (v: unknown) => (typeof v === "number" ? v : original(v));
    (patched as { millrace?: boolean }).millrace = true;
    float.toPrimitive = patched;
  }
}

const PARQUET_MAGIC = Buffer.from("PAR1");

function libSchema(compression: ParquetCompression, statsOff: ReadonlySet<string>): LibSchema {
  const col = (type: string, extra: Record<string, unknown> = {}) => ({ type, compression, encoding: "PLAIN", ...extra });
  const measure = (name: string) => col("FLOAT", { optional: true, statistics: statsOff.has(name) ? false : undefined });
  return new lib.ParquetSchema({
    // INT64 here, TIMESTAMP(MILLIS, UTC) in the footer (see the module comment).
    time: col("INT64"),
    tenant_id: col("UTF8", { statistics: false }),
    equipment_id: col("UTF8", { statistics: false }),
    facility_id: col("UTF8", { statistics: false }),
    temperature: measure("temperature"),
    vibration: measure("vibration"),
    pressure: measure("pressure"),
    source_offset: col("INT64"),
    flow_rate: measure("flow_rate"),
  });
}

/** The footer with logical types (what parquetjs-lite's own footer lacks). */
function encodeFooter(schema: LibSchema, env: LibEnvelopeWriter, kv: Readonly<Record<string, string>>): Buffer {
  const T = thrift;
  const elements: ThriftObject[] = [new T.SchemaElement({ name: "schema", num_children: schema.fieldList.length })];
  for (const f of schema.fieldList) {
    if (f.isNested) throw new Error("nested fields are not part of the millrace schema");
    const el = new T.SchemaElement({
      name: f.name,
      type: T.Type[f.primitiveType],
      repetition_type: T.FieldRepetitionType[f.repetitionType],
    });
    if (f.name === "time") {
      el.converted_type = T.ConvertedType.TIMESTAMP_MILLIS;
      el.logicalType = new T.LogicalType({
        TIMESTAMP: new T.TimestampType({ isAdjustedToUTC: true, unit: new T.TimeUnit({ MILLIS: new T.MilliSeconds() }) }),
      });
    } else if (f.primitiveType === "BYTE_ARRAY") {
      el.converted_type = T.ConvertedType.UTF8;
      el.logicalType = new T.LogicalType({ STRING: new T.StringType() });
    }
    elements.push(el);
  }
  const meta = new T.FileMetaData({
    version: 1,
    schema: elements,
    num_rows: env.rowCount,
    row_groups: env.rowGroups,
    key_value_metadata: Object.keys(kv)
      .sort()
      .map((k) => new T.KeyValue({ key: k, value: kv[k] })),
    created_by: CREATED_BY,
    column_orders: schema.fieldList.map(() => new T.ColumnOrder({ TYPE_ORDER: new T.TypeDefinedOrder() })),
  });
  const body = serializeThrift(meta);
  const len = Buffer.alloc(4);
  len.writeUInt32LE(body.length, 0);
  return Buffer.concat([body, len, PARQUET_MAGIC]);
}

/**
 * Append one row to the writer's row-group buffer exactly as parquetjs-lite's shredRecord does for
 * a flat schema (levels, values, distinct values, counts), without its per-row allocations — the
 * library's shredder is most of its encoding time. Only for rows that neither start a row group nor
 * complete a page or group (those go through appendRow, which encodes pages and writes groups).
 */
function shredFlat(fields: readonly LibField[], row: Record<string, unknown>, buf: LibRowBuffer): void {
  const cols = buf.columnData!;
  for (const f of fields) {
    const v = row[f.name];
    if (v === undefined || v === null) {
      if (f.repetitionType === "REQUIRED") throw new TypeError(`missing required field: ${f.name}`);
    }
  }
  for (const f of fields) {
    const col = cols[String(f.path)]!;
    const v = row[f.name];
    col.rlevels.push(0);
    col.count += 1;
    if (v === undefined || v === null) {
      col.dlevels.push(0);
      continue;
    }
    col.distinct_values.add(v);
    // The library's toPrimitive for these types: UTF8 → UTF-8 bytes; INT64 (safe integers, checked)
    // and FLOAT (numbers) → the number itself.
    col.values.push(f.originalType === "UTF8" ? Buffer.from(v as string, "utf8") : v);
    col.dlevels.push(f.dLevelMax);
  }
  buf.rowCount! += 1;
  buf.pageRowCount! += 1;
}

function checkRow(r: StoredReading, i: number): void {
  if (!Number.isSafeInteger(r.time)) throw new TypeError(`row ${i} (offset ${r.offset}): time ${r.time} is not an integer of epoch milliseconds`);
  if (!Number.isSafeInteger(r.offset) || r.offset < 0) throw new TypeError(`row ${i}: offset ${r.offset} is not a non-negative integer`);
  for (const m of MEASURE_COLUMNS) {
    const v = r[m];
    if (v !== null && typeof v !== "number") throw new TypeError(`row ${i} (offset ${r.offset}): ${m} is ${typeof v}, not a number or null`);
  }
}

/** Measure columns holding a NaN among the rows (their statistics are left out of this file). */
function columnsWithNaN(rows: readonly StoredReading[]): Set<string> {
  const out = new Set<string>();
  for (const r of rows) for (const m of MEASURE_COLUMNS) if (r[m] !== null && Number.isNaN(r[m])) out.add(m);
  return out;
}

/**
 * Encode the rows into one Parquet file, in memory. The writer holds at most one row group shredded
 * at a time; the output (the file) is returned whole, so its size is bounded by the roller's limits.
 * Throws TypeError for rows that break the StoredReading invariants (integer time and offset).
 */
export async function encodeParquet(rows: readonly StoredReading[], opts: ParquetEncodeOptions = {}): Promise<Buffer> {
  const rowGroupRows = opts.rowGroupRows ?? DEFAULT_ROW_GROUP_ROWS;
  if (!Number.isSafeInteger(rowGroupRows) || rowGroupRows < 1) throw new RangeError(`rowGroupRows must be a positive integer, got ${rowGroupRows}`);
  const pageRows = Math.min(opts.pageRows ?? DEFAULT_ROW_GROUP_ROWS, rowGroupRows);
  if (!Number.isSafeInteger(pageRows) || pageRows < 1) throw new RangeError(`pageRows must be a positive integer, got ${pageRows}`);
  const compression = opts.compression ?? "SNAPPY";

  const chunks: Buffer[] = [];
  const sink = new Writable({
    write(chunk: Buffer, _enc, cb) {
      chunks.push(chunk);
      cb();
    },
  });
  const write = (buf: Buffer) =>
    new Promise<void>((resolve, reject) => {
      sink.write(buf, (err) => (err ? reject(err) : resolve()));
    });
  const close = () => new Promise<void>((resolve) => sink.end(() => resolve()));

  const schema = libSchema(compression, columnsWithNaN(rows));
  const libOpts = { rowGroupSize: rowGroupRows, pageSize: pageRows, useDataPageV2: false, pageIndex: false };
  const env = new lib.ParquetEnvelopeWriter(schema, write, close, 0, libOpts);
  const kv = { ...opts.metadata, [SCHEMA_METADATA_KEY]: SCHEMA_VERSION };
  env.writeFooter = () => env.writeSection(encodeFooter(schema, env, kv));
  const writer = new lib.ParquetWriter(schema, env, libOpts);

  // The fast path needs pages cut only at row-group ends (pageRows == rowGroupRows).
  const fast = (opts.shredder ?? "fast") === "fast" && pageRows >= rowGroupRows;
  for (let i = 0; i < rows.length; i++) {
    const r = rows[i]!;
    checkRow(r, i);
    const row = {
      time: r.time,
      tenant_id: r.tenantId,
      equipment_id: r.equipmentId,
      facility_id: r.facilityId,
      temperature: r.temperature,
      vibration: r.vibration,
      pressure: r.pressure,
      source_offset: r.offset,
      flow_rate: r.flow_rate,
    };
    const inGroup = writer.rowBuffer.rowCount ?? 0;
    if (fast && inGroup > 0 && inGroup < rowGroupRows - 1) shredFlat(schema.fieldList, row, writer.rowBuffer);
    else await writer.appendRow(row);
  }
  await writer.close();
  return Buffer.concat(chunks);
}
