import { describe, expect, it } from "vitest";
import type { StoredReading } from "../../pipelines/reading.ts";
import { estimateRowBytes, ParquetRoller, ROW_OVERHEAD_BYTES, type RollerLimits } from "./roller.ts";

const T = "3f1c2a9e-8b7d-4c6e-9a5f-1e2d3c4b5a69";
const T0 = Date.parse("2024-05-01T00:00:00Z");

function row(offset: number, time = T0 + offset * 1000, equipmentId = "eq-1"): StoredReading {
  return { offset, time, tenantId: T, equipmentId, facilityId: "f1", temperature: 1, vibration: null, pressure: 2, flow_rate: null };
}
function rows(from: number, to: number): StoredReading[] {
  return Array.from({ length: to - from + 1 }, (_, i) => row(from + i));
}
const loose: RollerLimits = { maxRows: 1_000_000, maxBytes: 1e12, maxSpanMs: 1e12, idleMs: 1e12 };

describe("ParquetRoller", () => {
  it("does not roll while empty or under every limit", () => {
    const r = new ParquetRoller(loose);
    expect(r.shouldRoll(T0)).toBe(false);
    expect(r.take()).toBeUndefined();
    r.append(rows(0, 9), { nowMs: 0 });
    expect(r.shouldRoll(1)).toBe(false);
    expect(r.rowCount).toBe(10);
  });

  it("rolls at exactly maxRows and takes at most maxRows", () => {
    const r = new ParquetRoller({ ...loose, maxRows: 10 });
    r.append(rows(0, 8), { nowMs: 0 });
    expect(r.shouldRoll(0)).toBe(false);
    r.append(rows(9, 9), { nowMs: 0 });
    expect(r.shouldRoll(0)).toBe("rows");
    r.append(rows(10, 24), { nowMs: 0 });
    const a = r.take()!;
    expect(a.rows.map((x) => x.offset)).toEqual(rows(0, 9).map((x) => x.offset));
    expect([a.firstOffset, a.lastOffset]).toEqual([0, 9]);
    expect(r.shouldRoll(0)).toBe("rows"); // 15 left
    const b = r.take()!;
    expect([b.firstOffset, b.lastOffset, b.rows.length]).toEqual([10, 19, 10]);
    expect(r.shouldRoll(0)).toBe(false);
    const c = r.take()!;
    expect([c.firstOffset, c.lastOffset, c.rows.length]).toEqual([20, 24, 5]);
    expect(r.take()).toBeUndefined();
  });

  it("rolls by estimated bytes, and a file never exceeds maxBytes (but holds at least one row)", () => {
    const per = estimateRowBytes(row(0));
    expect(per).toBe(ROW_OVERHEAD_BYTES + T.length + "eq-1".length + "f1".length);
    const r = new ParquetRoller({ ...loose, maxBytes: per * 3 });
    r.append(rows(0, 1), { nowMs: 0 });
    expect(r.shouldRoll(0)).toBe(false);
    r.append(rows(2, 6), { nowMs: 0 });
    expect(r.shouldRoll(0)).toBe("bytes");
    expect(r.take()!.rows).toHaveLength(3);
    const tiny = new ParquetRoller({ ...loose, maxBytes: 1 });
    tiny.append(rows(0, 1), { nowMs: 0 });
    expect(tiny.shouldRoll(0)).toBe("bytes");
    expect(tiny.take()!.rows).toHaveLength(1);
  });

  it("rolls when the event-time span exceeds maxSpanMs; the file stays within it, out-of-order times included", () => {
    const r = new ParquetRoller({ ...loose, maxSpanMs: 10_000 });
    r.append([row(0, T0), row(1, T0 + 10_000)], { nowMs: 0 });
    expect(r.shouldRoll(0)).toBe(false); // span == limit is allowed
    r.append([row(2, T0 - 1)], { nowMs: 0 }); // a late reading widens the span backwards
    expect(r.shouldRoll(0)).toBe("span");
    const f = r.take()!;
    expect(f.rows.map((x) => x.offset)).toEqual([0, 1]);
    expect([f.minTime, f.maxTime]).toEqual([T0, T0 + 10_000]);
    expect(r.shouldRoll(0)).toBe(false);
    expect(r.take()!.rows.map((x) => x.offset)).toEqual([2]);
  });

  it("rolls when the oldest buffered row has waited idleMs of wall clock, even under a steady trickle", () => {
    const r = new ParquetRoller({ ...loose, idleMs: 5_000 });
    r.append(rows(0, 0), { nowMs: 1_000 });
    expect(r.idleDeadline()).toBe(6_000);
    for (let t = 2_000; t < 6_000; t += 1_000) {
      r.append(rows(t / 1000, t / 1000), { nowMs: t });
      expect(r.shouldRoll(t)).toBe(false);
    }
    expect(r.shouldRoll(5_999)).toBe(false);
    expect(r.shouldRoll(6_000)).toBe("idle");
    const f = r.take()!;
    expect(f.rows).toHaveLength(5);
    expect(r.idleDeadline()).toBeUndefined();
    expect(r.shouldRoll(1e9)).toBe(false);
  });

  it("keeps the arrival time of rows left behind by a partial take", () => {
    const r = new ParquetRoller({ ...loose, maxRows: 3, idleMs: 100 });
    r.append(rows(0, 1), { nowMs: 0 });
    r.append(rows(2, 4), { nowMs: 50 });
    expect(r.take()!.rows).toHaveLength(3);
    // offsets 3 and 4 arrived at 50
    expect(r.idleDeadline()).toBe(150);
    expect(r.shouldRoll(149)).toBe(false);
    expect(r.shouldRoll(150)).toBe("idle");
  });

  it("reports the first limit reached in the order rows, bytes, span, idle", () => {
    const r = new ParquetRoller({ maxRows: 2, maxBytes: 1, maxSpanMs: 0, idleMs: 1 });
    r.append([row(0, T0), row(1, T0 + 5)], { nowMs: 0 });
    expect(r.shouldRoll(10)).toBe("rows");
    const s = new ParquetRoller({ maxRows: 5, maxBytes: 1e9, maxSpanMs: 0, idleMs: 1 });
    s.append([row(0, T0), row(1, T0 + 5)], { nowMs: 0 });
    expect(s.shouldRoll(10)).toBe("span");
  });

  it("keeps offset ranges contiguous: dead-lettered offsets between rows and after the last row are covered", () => {
    const r = new ParquetRoller({ ...loose, maxRows: 2 }, { startOffset: 100 });
    // 100 and 103 became dead letters; the chunk consumed through 105.
    r.append([row(101), row(102), row(104)], { lastOffset: 105, nowMs: 0 });
    const a = r.take()!;
    expect([a.firstOffset, a.lastOffset]).toEqual([100, 102]);
    const b = r.take()!;
    expect([b.firstOffset, b.lastOffset]).toEqual([103, 105]);
    // a chunk of only dead letters advances the range without a row
    r.append([], { lastOffset: 107, nowMs: 0 });
    expect(r.take()).toBeUndefined();
    r.append([row(108)], { nowMs: 0 });
    const c = r.take()!;
    expect([c.firstOffset, c.lastOffset]).toEqual([106, 108]);
    expect(r.nextOffset).toBe(109);
  });

  it("without a start offset, the first file starts at the first row (or the first consumed offset)", () => {
    const r = new ParquetRoller(loose);
    r.append([row(7), row(9)], { nowMs: 0 });
    expect(r.take()).toMatchObject({ firstOffset: 7, lastOffset: 9 });
    const d = new ParquetRoller(loose);
    d.append([], { lastOffset: 4, nowMs: 0 });
    d.append([row(5)], { nowMs: 0 });
    expect(d.take()).toMatchObject({ firstOffset: 4, lastOffset: 5 });
  });

  it("rebuilds a planned range exactly with takeThrough, whatever the chunking of the replay", () => {
    const r = new ParquetRoller({ ...loose, maxRows: 3 }, { startOffset: 10 });
    r.append(rows(10, 11), { nowMs: 0 });
    expect(r.takeThrough(14)).toBeUndefined(); // not all consumed yet
    r.append(rows(12, 13), { nowMs: 0 });
    r.append([row(16)], { lastOffset: 17, nowMs: 0 }); // 14, 15 dead letters
    const f = r.takeThrough(15)!;
    expect(f.rows.map((x) => x.offset)).toEqual([10, 11, 12, 13]); // beyond maxRows: the plan wins
    expect([f.firstOffset, f.lastOffset]).toEqual([10, 15]);
    expect(r.pendingFirstOffset).toBe(16);
    expect(r.take()).toMatchObject({ firstOffset: 16, lastOffset: 17 });
  });

  it("refuses rows out of offset order or behind what it has", () => {
    const r = new ParquetRoller(loose);
    r.append(rows(0, 3), { nowMs: 0 });
    expect(() => r.append([row(3)], { nowMs: 0 })).toThrow(RangeError);
    expect(() => r.append([row(5), row(4)], { nowMs: 0 })).toThrow(RangeError);
    expect(() => r.append([row(5)], { lastOffset: 4, nowMs: 0 })).toThrow(RangeError);
    expect(() => new ParquetRoller({ ...loose, maxRows: 0 })).toThrow(RangeError);
  });

  it("holds at most maxRows plus one chunk, however long it runs", () => {
    const r = new ParquetRoller({ ...loose, maxRows: 1000 });
    let peak = 0;
    for (let chunk = 0; chunk < 200; chunk++) {
      r.append(rows(chunk * 250, chunk * 250 + 249), { nowMs: chunk });
      peak = Math.max(peak, r.rowCount);
      while (r.shouldRoll(chunk)) r.take();
    }
    expect(peak).toBeLessThanOrEqual(1000 + 250);
  });
});
