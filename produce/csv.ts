/**
 * Replaying a CSV file as sensor readings, streamed with csv-parse (constant memory for any size).
 *
 * A column mapping says which column feeds which field; the default is the SKAB benchmark's layout
 * (`;`-separated; `datetime;Accelerometer1RMS;…;Pressure;Temperature;…`). Times without a zone
 * (`2020-03-09 10:14:33`) are taken as UTC, a date alone (`2020-03-09`) as its midnight UTC; ISO 8601
 * with `Z` or an offset is honoured; a plain integer is epoch milliseconds, and one before 2001-09-09
 * (< 1e12, most likely epoch seconds) is refused rather than guessed at. An empty measure cell is a
 * null (sensor dropout). A row that cannot be read (bad number or time, a measure outside the 32-bit
 * float range the readings are encoded with, wrong number of cells, broken quoting) is an error
 * naming the file and line — it fails the replay (default) or is skipped and reported.
 */
import { createReadStream } from "node:fs";
import { basename, dirname, extname } from "node:path";
import type { Readable } from "node:stream";
import { parse, type CsvError } from "csv-parse";
import type { RuleConfig } from "../pipelines/processors/threshold-rules.ts";
import type { Measure } from "../pipelines/reading.ts";
import type { SensorReading } from "../schemas/index.ts";

export type MeasureField = Measure;
export type MappedField = MeasureField | "time";

/** Field → CSV column name. `time` is required; a measure left out is always null. */
export interface CsvMapping {
  time: string;
  temperature?: string;
  vibration?: string;
  pressure?: string;
  flow_rate?: string;
}

export const SKAB_MAPPING: Readonly<CsvMapping> = Object.freeze({
  time: "datetime",
  temperature: "Temperature",
  vibration: "Accelerometer1RMS",
  pressure: "Pressure",
  flow_rate: "Volume Flow RateRMS",
});

export const SKAB_DELIMITER = ";";

/**
 * The threshold rule that finds SKAB valve1's valve closures (a sustained drop of the flow rate;
 * normal flow is 32 ± 1 l/min), in the form `millrace rules set` stores. Scored against the data
 * set's labels in docs/alerts.md §7; the demo sets it for the tenant that gets the SKAB pump run.
 */
export const SKAB_VALVE_FLOW_RULE: Readonly<RuleConfig> = Object.freeze({
  id: "valve_flow_low",
  name: "Flow low (valve closing)",
  measure: "flow_rate",
  comparison: "below",
  levels: { warning: 31.5, major: 29, critical: 27 },
  sustain: "10s",
  deadband: 0.5,
  enabled: true,
});

const FIELDS: readonly MappedField[] = ["time", "temperature", "vibration", "pressure", "flow_rate"];

/**
 * `temperature=Temperature,vibration=Accelerometer1RMS,pressure=Pressure,flow_rate=Volume Flow RateRMS,time=datetime`,
 * over `base`; `flow_rate=` (no column) leaves a measure of `base` unmapped (always null).
 */
export function parseMapping(spec: string, base: Readonly<Partial<CsvMapping>> = {}): CsvMapping {
  const out: Partial<CsvMapping> = { ...base };
  for (const part of spec.split(",")) {
    if (part.trim() === "") continue;
    const eq = part.indexOf("=");
    if (eq <= 0) throw new Error(`--map: expected field=column, got ${JSON.stringify(part)}`);
    const field = part.slice(0, eq).trim() as MappedField;
    const column = part.slice(eq + 1).trim();
    if (!FIELDS.includes(field)) throw new Error(`--map: unknown field ${JSON.stringify(field)}; the fields are ${FIELDS.join(", ")}`);
    if (column === "" && field === "time") throw new Error("--map: no column given for time (it is required)");
    // `field=` (no column) unmaps a measure taken from `base`: it is always null.
    if (column === "") delete out[field as MeasureField];
    else out[field] = column;
  }
  if (out.time === undefined) throw new Error("--map: the time column is required (time=<column>)");
  return out as CsvMapping;
}

/** The header does not fit the mapping (a mapped column is missing). */
export class CsvHeaderError extends Error {
  override readonly name = "CsvHeaderError";
}

/** A row that cannot be turned into a reading. */
export class CsvRowError extends Error {
  readonly file: string;
  readonly line: number;
  constructor(file: string, line: number, message: string, cause?: unknown) {
    super(`${file}:${line}: ${message}`, cause === undefined ? undefined : { cause });
    this.name = "CsvRowError";
    this.file = file;
    this.line = line;
  }
}

/** A zone-less time, or a date alone (midnight); taken as UTC. */
const LOCAL_TIME = /^(\d{4})-(\d{2})-(\d{2})(?:[ T](\d{2}):(\d{2})(?::(\d{2})(?:[.,](\d{1,9}))?)?)?$/;
const ZONED_TIME = /^\d{4}-\d{2}-\d{2}[ T]\d{2}:\d{2}(?::\d{2}(?:[.,]\d{1,9})?)?(?:Z|[+-]\d{2}:?\d{2})$/i;

/**
 * The smallest plain-integer time accepted, 2001-09-09T01:46:40Z in epoch ms: a smaller integer is
 * most likely epoch seconds (1796355600 s is 2026-12-04; as ms it would be 1970-01-21), and units
 * are not guessed.
 */
export const MIN_EPOCH_MS = 1e12;

const EPOCH_MS = /^\d{1,16}$/;

/**
 * Parse a time cell to epoch ms; zone-less times are UTC, a date alone is its midnight UTC. Returns
 * undefined if it is not a time, including a plain integer below {@link MIN_EPOCH_MS}.
 */
export function parseCsvTime(text: string): number | undefined {
  const s = text.trim();
  if (EPOCH_MS.test(s)) {
    const t = Number(s);
    return t >= MIN_EPOCH_MS ? t : undefined;
  }
  const m = LOCAL_TIME.exec(s);
  if (m) {
    const [, y, mo, d, h, mi, sec, frac] = m;
    const ms = frac === undefined ? 0 : Math.round(Number(`0.${frac}`) * 1000);
    const t = Date.UTC(Number(y), Number(mo) - 1, Number(d), Number(h ?? 0), Number(mi ?? 0), Number(sec ?? 0), ms);
    // Date.UTC rolls over (Feb 30 → Mar 2); refuse instead.
    const back = new Date(t);
    if (back.getUTCMonth() !== Number(mo) - 1 || back.getUTCDate() !== Number(d) || Number(h ?? 0) > 23 || Number(mi ?? 0) > 59 || Number(sec ?? 0) > 59) {
      return undefined;
    }
    return t;
  }
  if (ZONED_TIME.test(s)) {
    const t = Date.parse(s.replace(" ", "T").replace(",", "."));
    return Number.isFinite(t) ? t : undefined;
  }
  return undefined;
}

/** A plain decimal number: optional sign, digits with an optional fraction (`.5` and `5.` too), optional exponent. */
const DECIMAL = /^[+-]?(?:\d+\.?\d*|\.\d+)(?:e[+-]?\d+)?$/i;

/**
 * Parse a measure cell: empty → null; otherwise a finite decimal number, or undefined if it is not
 * one. Only decimal notation is read: Number() alone would also take `0x10`, `0b11`, `0o17` (16, 3, 15).
 */
export function parseMeasure(text: string): number | null | undefined {
  const s = text.trim();
  if (s === "") return null;
  if (!DECIMAL.test(s)) return undefined;
  const v = Number(s);
  return Number.isFinite(v) ? v : undefined;
}

/** The largest finite 32-bit float (FLT_MAX): measures are Avro `float`s (schemas/sensor-reading.avsc). */
export const FLOAT32_MAX = 3.4028234663852886e38;

/**
 * Whether a measure survives the Avro `float` encoding as a finite number; beyond the range it would
 * be encoded as ±Infinity and dead-lettered by the worker (non_finite_value). Decided by rounding as
 * the encoder does (Math.fround), not by comparing with FLOAT32_MAX: a value slightly above FLT_MAX
 * (less than half a float32 step) still rounds to FLT_MAX and is encoded as that.
 */
export function fitsFloat32(v: number): boolean {
  return Number.isFinite(Math.fround(v));
}

/** `valve1/3.csv` → `valve1-03`; `anomaly-free/anomaly-free.csv` → `anomaly-free`. Always a valid id. */
export function equipmentIdFromPath(file: string): string {
  const stem = basename(file, extname(file));
  const parent = basename(dirname(file));
  const raw = /^\d+$/.test(stem) ? `${parent && parent !== "." && parent !== "/" ? `${parent}-` : "csv-"}${stem.padStart(2, "0")}` : stem;
  const id = raw.replace(/[^A-Za-z0-9._:/-]/g, "-").slice(0, 128);
  return id === "" ? "csv" : id;
}

export interface CsvReplayOptions {
  tenantId: string;
  equipmentId: string;
  facilityId: string;
  /** Default {@link SKAB_MAPPING}. */
  mapping?: CsvMapping;
  /** Default `;` (SKAB). */
  delimiter?: string;
  /** What to do with a bad row: `fail` (default) throws a {@link CsvRowError}; `skip` reports it to onSkip. */
  onBadRow?: "fail" | "skip";
  onSkip?: (err: CsvRowError) => void;
  /** Move the file in time: its first row is placed at this instant (epoch ms), the spacing kept. */
  startAt?: number;
  /** Name used in messages (default: the path, or "csv"). */
  name?: string;
  /** seq of the first reading (default 0). */
  seqStart?: number;
}

export interface CsvRecord {
  tenantId: string;
  reading: SensorReading;
  /** Per (tenant, equipment) from seqStart, contiguous over the emitted readings. */
  seq: number;
  /** Line of the CSV the reading came from (1 = the header). */
  line: number;
}

interface Row {
  record: string[];
  info: { lines: number };
}

/**
 * Stream the readings of one CSV file (a path or a readable stream of its bytes). The header row is
 * the first line; the mapped columns must all be in it.
 */
export async function* readCsvReadings(source: string | Readable, opts: CsvReplayOptions): AsyncGenerator<CsvRecord, void, undefined> {
  const name = opts.name ?? (typeof source === "string" ? source : "csv");
  const mapping = opts.mapping ?? SKAB_MAPPING;
  const skip = opts.onBadRow === "skip";
  const tenantId = opts.tenantId.toLowerCase();
  const input = typeof source === "string" ? createReadStream(source) : source;

  const parser = parse({
    delimiter: opts.delimiter ?? SKAB_DELIMITER,
    bom: true,
    info: true,
    skip_empty_lines: true,
    relax_column_count: true, // checked below, so that a short row is a row error with its line
    skip_records_with_error: skip,
    on_skip: (err: CsvError | undefined) => {
      const line = typeof err?.lines === "number" ? err.lines : 0;
      opts.onSkip?.(new CsvRowError(name, line, `unreadable CSV (${err?.message ?? "unknown error"}), skipped`, err));
      return undefined;
    },
  });
  input.on("error", (err: Error) => parser.destroy(err));
  input.pipe(parser);

  let columns: { field: MappedField; index: number }[] | undefined;
  let width = 0;
  let shift = 0;
  let seq = opts.seqStart ?? 0;
  let first = true;

  try {
    for await (const row of parser as AsyncIterable<Row>) {
      const line = row.info.lines;
      const cells = row.record;
      if (columns === undefined) {
        columns = resolveColumns(name, cells, mapping);
        width = cells.length;
        continue;
      }
      let reading: SensorReading;
      try {
        if (cells.length !== width) throw new Error(`expected ${width} cells as in the header, got ${cells.length}`);
        reading = toReading(cells, columns, tenantId, opts);
      } catch (err) {
        const e = new CsvRowError(name, line, (err as Error).message);
        if (!skip) throw e;
        opts.onSkip?.(e);
        continue;
      }
      if (first) {
        first = false;
        if (opts.startAt !== undefined) shift = opts.startAt - reading.time;
      }
      reading.time += shift;
      yield { tenantId, reading, seq: seq++, line };
    }
  } catch (err) {
    if (err instanceof CsvRowError || err instanceof CsvHeaderError) throw err;
    const e = err as CsvError & { lines?: number };
    if (typeof e.code === "string" && e.code.startsWith("CSV_")) throw new CsvRowError(name, typeof e.lines === "number" ? e.lines : 0, e.message, err);
    throw new Error(`cannot read ${name}: ${e.message}`, { cause: err });
  } finally {
    if (!input.destroyed) input.destroy();
  }
  if (columns === undefined) throw new Error(`${name}: empty file, no header row`);
}

function resolveColumns(name: string, header: string[], mapping: CsvMapping): { field: MappedField; index: number }[] {
  const names = header.map((h) => h.trim());
  const out: { field: MappedField; index: number }[] = [];
  for (const field of FIELDS) {
    const column = mapping[field];
    if (column === undefined) continue;
    const index = names.indexOf(column);
    if (index < 0) {
      throw new CsvHeaderError(
        `${name}: column ${JSON.stringify(column)} (mapped to ${field}) is not in the header; the columns are ${names.map((n) => JSON.stringify(n)).join(", ")}` +
          (names.length === 1 ? ` — only one column: is the delimiter right?` : ""),
      );
    }
    out.push({ field, index });
  }
  return out;
}

function toReading(cells: string[], columns: { field: MappedField; index: number }[], tenantId: string, opts: CsvReplayOptions): SensorReading {
  const reading: SensorReading = {
    time: 0,
    tenant_id: tenantId,
    equipment_id: opts.equipmentId,
    facility_id: opts.facilityId,
    temperature: null,
    vibration: null,
    pressure: null,
    flow_rate: null,
  };
  for (const { field, index } of columns) {
    const cell = cells[index] ?? "";
    if (field === "time") {
      const t = parseCsvTime(cell);
      if (t === undefined && EPOCH_MS.test(cell.trim())) {
        throw new Error(
          `time column: ${JSON.stringify(cell)} as epoch milliseconds is ${new Date(Number(cell.trim())).toISOString()}, before 2001-09-09: it looks like epoch seconds; ` +
            "the column must be epoch milliseconds (or ISO 8601)",
        );
      }
      if (t === undefined) throw new Error(`time column: ${JSON.stringify(cell)} is not a time (expected e.g. 2020-03-09 10:14:33, 2020-03-09, ISO 8601 or epoch ms)`);
      reading.time = t;
    } else {
      const v = parseMeasure(cell);
      if (v === undefined) throw new Error(`${field} column: ${JSON.stringify(cell)} is not a number (expected a decimal number, e.g. 79.3366 or -1.5e-3)`);
      if (v !== null && !fitsFloat32(v)) {
        throw new Error(`${field} column: ${JSON.stringify(cell)} is outside the 32-bit float range (±${FLOAT32_MAX}) the readings are encoded with`);
      }
      reading[field] = v;
    }
  }
  return reading;
}
