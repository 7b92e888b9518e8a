/**
 * The rolling policy and buffer of one (topic, partition)'s next Parquet file (pure: no clock, no
 * I/O; wall-clock times are passed in).
 *
 * Limits, each inclusive — a file never holds more:
 *   maxRows    rows per file;
 *   maxBytes   estimated in-memory bytes of the rows (fixed per-row cost + string lengths; the
 *              encoded file is smaller, typically 3-6× with snappy);
 *   maxSpanMs  event-time span (max time − min time) of the file's readings;
 *   idleMs     wall-clock age of the oldest buffered row: no reading waits unwritten longer.
 *
 * `shouldRoll(now)` says whether (and why) the worker should cut a file now; `take()` hands over the
 * longest prefix of the buffer within the limits, with the Kafka offset range it covers. Ranges are
 * contiguous: the first file starts at `startOffset` (the Parquet sink's stored next offset), each
 * next one at the previous file's last offset + 1, and a file taken whole extends to the last offset
 * consumed, so records that became dead letters between two readings belong to a range too (no gaps
 * between consecutive files). Memory is bounded by maxRows/maxBytes plus one appended chunk.
 */
import type { StoredReading } from "../../pipelines/reading.ts";

export interface RollerLimits {
  maxRows: number;
  maxBytes: number;
  maxSpanMs: number;
  idleMs: number;
}

export type RollReason = "rows" | "bytes" | "span" | "idle";

export interface TakenFile {
  rows: StoredReading[];
  /** First Kafka offset of the file's range (≤ rows[0].offset). */
  firstOffset: number;
  /** Last Kafka offset of the file's range (≥ the last row's offset). */
  lastOffset: number;
  /** Event-time bounds of the rows (epoch ms). */
  minTime: number;
  maxTime: number;
  /** Estimated bytes of the rows (the same measure as maxBytes). */
  bytes: number;
}

export interface AppendOptions {
  /**
   * Last Kafka offset consumed by this chunk (≥ its last row's offset): records after the last row
   * that did not become rows (dead letters) are covered by the file. Default: the last row's offset.
   */
  lastOffset?: number;
  /** Wall clock of the append (epoch ms), for the idle limit. */
  nowMs: number;
}

/** Fixed per-row cost: 8 numbers/pointers of an object in memory, roughly. */
export const ROW_OVERHEAD_BYTES = 64;

export function estimateRowBytes(r: StoredReading): number {
  return ROW_OVERHEAD_BYTES + r.tenantId.length + r.equipmentId.length + r.facilityId.length;
}

function checkLimits(l: RollerLimits): RollerLimits {
  for (const k of ["maxRows", "maxBytes", "maxSpanMs", "idleMs"] as const) {
    const v = l[k];
    if (!Number.isSafeInteger(v) || v < (k === "maxSpanMs" ? 0 : 1)) throw new RangeError(`roller ${k} must be a positive integer, got ${v}`);
  }
  return { ...l };
}

export class ParquetRoller {
  readonly limits: RollerLimits;
  private rows: StoredReading[] = [];
  private bytes: number[] = [];
  private totalBytes = 0;
  /** Wall clock at which each still-buffered chunk arrived: [index of its first row, time]. */
  private arrivals: Array<[number, number]> = [];
  /** First offset of the range not yet in a file; undefined until known. */
  private rangeStart: number | undefined;
  /** Last offset consumed so far (−1 before the first). */
  private consumedTo = -1;
  /** Event-time bounds of the buffered rows. */
  private minTime = Infinity;
  private maxTime = -Infinity;

  constructor(limits: RollerLimits, opts: { startOffset?: number } = {}) {
    this.limits = checkLimits(limits);
    if (opts.startOffset !== undefined) {
      if (!Number.isSafeInteger(opts.startOffset) || opts.startOffset < 0) throw new RangeError(`startOffset must be a non-negative integer`);
      this.rangeStart = opts.startOffset;
      this.consumedTo = opts.startOffset - 1;
    }
  }

  /** Rows buffered. */
  get rowCount(): number {
    return this.rows.length;
  }

  /** Estimated bytes buffered. */
  get byteCount(): number {
    return this.totalBytes;
  }

  /** Next offset the roller expects (last consumed + 1), or undefined before anything is known. */
  get nextOffset(): number | undefined {
    return this.rangeStart === undefined ? undefined : this.consumedTo + 1;
  }

  /** Offset range start of the next file, or undefined before anything is known. */
  get pendingFirstOffset(): number | undefined {
    return this.rangeStart;
  }

  /**
   * Append one committed chunk's rows (in offset order, after everything appended before). A chunk
   * with no rows still advances the covered range when `lastOffset` is given.
   */
  append(rows: readonly StoredReading[], opts: AppendOptions): void {
    const last = opts.lastOffset ?? (rows.length > 0 ? rows[rows.length - 1]!.offset : undefined);
    if (last === undefined) return;
    let prev = this.consumedTo;
    for (const r of rows) {
      if (!Number.isSafeInteger(r.offset) || r.offset <= prev) {
        throw new RangeError(`rows must be appended in increasing offset order after ${this.consumedTo}: got ${r.offset} after ${prev}`);
      }
      prev = r.offset;
    }
    if (last < prev) throw new RangeError(`lastOffset ${last} is before the chunk's last row ${prev}`);
    if (last <= this.consumedTo) throw new RangeError(`lastOffset ${last} does not advance past ${this.consumedTo}`);
    this.rangeStart ??= rows.length > 0 ? rows[0]!.offset : last;
    if (rows.length > 0) {
      this.arrivals.push([this.rows.length, opts.nowMs]);
      for (const r of rows) {
        const b = estimateRowBytes(r);
        this.rows.push(r);
        this.bytes.push(b);
        this.totalBytes += b;
        if (r.time < this.minTime) this.minTime = r.time;
        if (r.time > this.maxTime) this.maxTime = r.time;
      }
    }
    this.consumedTo = last;
  }

  /** Whether to cut a file now, and the first limit reached (rows, bytes, span, then idle). */
  shouldRoll(nowMs: number): false | RollReason {
    const n = this.rows.length;
    if (n === 0) return false;
    if (n >= this.limits.maxRows) return "rows";
    if (this.totalBytes >= this.limits.maxBytes) return "bytes";
    if (this.maxTime - this.minTime > this.limits.maxSpanMs) return "span";
    const oldest = this.arrivals[0]?.[1];
    if (oldest !== undefined && nowMs - oldest >= this.limits.idleMs) return "idle";
    return false;
  }

  /** Wall-clock deadline (epoch ms) at which the idle limit will fire, or undefined when empty. */
  idleDeadline(): number | undefined {
    const oldest = this.arrivals[0]?.[1];
    return oldest === undefined || this.rows.length === 0 ? undefined : oldest + this.limits.idleMs;
  }

  /** Length of the longest prefix within every limit (at least one row). */
  private prefixLength(): number {
    const n = Math.min(this.rows.length, this.limits.maxRows);
    let bytes = 0;
    let min = Infinity;
    let max = -Infinity;
    for (let i = 0; i < n; i++) {
      const r = this.rows[i]!;
      const nextMin = Math.min(min, r.time);
      const nextMax = Math.max(max, r.time);
      if (i > 0 && (bytes + this.bytes[i]! > this.limits.maxBytes || nextMax - nextMin > this.limits.maxSpanMs)) return i;
      bytes += this.bytes[i]!;
      min = nextMin;
      max = nextMax;
    }
    return n;
  }

  /**
   * Hand over the next file: the longest prefix within the limits, or undefined when no row is
   * buffered. Taking everything buffered extends the range to the last consumed offset.
   */
  take(): TakenFile | undefined {
    if (this.rows.length === 0) return undefined;
    return this.cut(this.prefixLength());
  }

  /**
   * Hand over exactly the file whose range ends at `lastOffset` (rebuilding a planned manifest entry
   * on replay), or undefined while offsets up to `lastOffset` have not all been consumed yet. Rows
   * after `lastOffset` stay buffered. (A range with no rows gives `rows: []`, minTime Infinity.)
   * The range must start where the roller's pending range starts (the caller checks the manifest's
   * first offset against {@link pendingFirstOffset}).
   */
  takeThrough(lastOffset: number): TakenFile | undefined {
    if (this.rangeStart === undefined || this.consumedTo < lastOffset) return undefined;
    if (lastOffset < this.rangeStart) throw new RangeError(`lastOffset ${lastOffset} is before the pending range's first offset ${this.rangeStart}`);
    let n = 0;
    while (n < this.rows.length && this.rows[n]!.offset <= lastOffset) n++;
    return this.cut(n, lastOffset);
  }

  private cut(n: number, through?: number): TakenFile {
    const rows = this.rows.slice(0, n);
    const firstOffset = this.rangeStart!;
    const lastOffset = through ?? (n === this.rows.length ? this.consumedTo : rows[n - 1]!.offset);
    let bytes = 0;
    for (let i = 0; i < n; i++) bytes += this.bytes[i]!;
    let minTime = Infinity;
    let maxTime = -Infinity;
    for (const r of rows) {
      if (r.time < minTime) minTime = r.time;
      if (r.time > maxTime) maxTime = r.time;
    }
    this.rows = this.rows.slice(n);
    this.bytes = this.bytes.slice(n);
    this.totalBytes -= bytes;
    // The remaining rows keep the arrival time of the chunk each came in.
    const arrivals: Array<[number, number]> = [];
    for (let i = 0; i < this.arrivals.length; i++) {
      const [start, at] = this.arrivals[i]!;
      const end = this.arrivals[i + 1]?.[0] ?? Infinity;
      if (end > n) arrivals.push([Math.max(start - n, 0), at]);
    }
    this.arrivals = this.rows.length === 0 ? [] : arrivals;
    this.minTime = Infinity;
    this.maxTime = -Infinity;
    for (const r of this.rows) {
      if (r.time < this.minTime) this.minTime = r.time;
      if (r.time > this.maxTime) this.maxTime = r.time;
    }
    this.rangeStart = lastOffset + 1;
    return { rows, firstOffset, lastOffset, minTime, maxTime, bytes };
  }
}
