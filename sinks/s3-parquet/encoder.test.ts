import { describe, expect, it } from "vitest";
import type { StoredReading } from "../../pipelines/reading.ts";
import { CREATED_BY, encodeParquet, SCHEMA_METADATA_KEY, SCHEMA_VERSION } from "./encoder.ts";
import { readParquetFooter } from "./footer.ts";

const T = "3f1c2a9e-8b7d-4c6e-9a5f-1e2d3c4b5a69";
function readings(n: number, start = Date.parse("2024-05-01T00:00:00Z")): StoredReading[] {
  return Array.from({ length: n }, (_, i) => ({
    offset: 1000 + i,
    time: start + i * 250,
    tenantId: T,
    equipmentId: `press-${i % 7}`,
    facilityId: "plant-a",
    temperature: i % 5 === 0 ? null : 20 + i / 8,
    vibration: (i * 37) % 11 === 0 ? null : i / 1024,
    pressure: 1.5,
    flow_rate: i % 3 === 0 ? null : 30 + (i % 64) / 32,
  }));
}

describe("encodeParquet", () => {
  it("gives the same bytes for the same rows (no clock, random or host in the file)", async () => {
    const rows = readings(5000);
    const a = await encodeParquet(rows);
    const b = await encodeParquet(rows.map((r) => ({ ...r })));
    expect(a.equals(b)).toBe(true);
    expect(a.subarray(0, 4).toString()).toBe("PAR1");
    expect(a.subarray(-4).toString()).toBe("PAR1");
    // and a different row gives different bytes
    const c = await encodeParquet([...rows.slice(0, -1), { ...rows.at(-1)!, temperature: 99 }]);
    expect(a.equals(c)).toBe(false);
  });

  it("gives the same bytes with its own row shredding as with parquetjs-lite's, for every row-group shape", async () => {
    const rows = readings(9000).map((r, i) => ({ ...r, equipmentId: i % 11 === 0 ? "ü-😀" : r.equipmentId, temperature: i % 97 === 0 ? NaN : r.temperature }));
    for (const [n, rowGroupRows] of [[9000, 4096], [4096, 4096], [4095, 4096], [4097, 4096], [1, 4096], [10, 1], [10, 2], [10, 3], [500, 64]] as const) {
      const a = await encodeParquet(rows.slice(0, n), { rowGroupRows, shredder: "fast" });
      const b = await encodeParquet(rows.slice(0, n), { rowGroupRows, shredder: "library" });
      expect(a.equals(b), `${n} rows, groups of ${rowGroupRows}`).toBe(true);
    }
    const paged = await encodeParquet(rows.slice(0, 1000), { rowGroupRows: 512, pageRows: 100 });
    expect(readParquetFooter(paged).rowGroups.map((g) => g.rows)).toEqual([512, 488]);
  });

  it("is independent of the process time zone", async () => {
    const rows = readings(50, Date.parse("2024-03-31T00:30:00Z"));
    const before = process.env.TZ;
    try {
      process.env.TZ = "Europe/Berlin";
      const berlin = await encodeParquet(rows);
      process.env.TZ = "UTC";
      expect((await encodeParquet(rows)).equals(berlin)).toBe(true);
    } finally {
      if (before === undefined) delete process.env.TZ;
      else process.env.TZ = before;
    }
  });

  it("bounds row groups, types the columns, records the schema version, writer and time range", async () => {
    const rows = readings(10_000);
    const f = readParquetFooter(await encodeParquet(rows, { rowGroupRows: 4096 }));
    expect(f.rows).toBe(10_000);
    expect(f.rowGroups.map((g) => g.rows)).toEqual([4096, 4096, 1808]);
    expect(f.rowGroups.every((g) => g.codecs.join() === "SNAPPY")).toBe(true);
    expect(f.createdBy).toBe(CREATED_BY);
    expect(f.keyValue).toEqual({ [SCHEMA_METADATA_KEY]: SCHEMA_VERSION });
    expect(f.columns.map((c) => [c.name, c.physicalType, c.repetition, c.logicalType])).toEqual([
      ["time", "INT64", "REQUIRED", "TIMESTAMP(MILLIS, UTC)"],
      ["tenant_id", "BYTE_ARRAY", "REQUIRED", "STRING"],
      ["equipment_id", "BYTE_ARRAY", "REQUIRED", "STRING"],
      ["facility_id", "BYTE_ARRAY", "REQUIRED", "STRING"],
      ["temperature", "FLOAT", "OPTIONAL", ""],
      ["vibration", "FLOAT", "OPTIONAL", ""],
      ["pressure", "FLOAT", "OPTIONAL", ""],
      ["source_offset", "INT64", "REQUIRED", ""],
      ["flow_rate", "FLOAT", "OPTIONAL", ""],
    ]);
    expect([f.minTime, f.maxTime]).toEqual([rows[0]!.time, rows.at(-1)!.time]);
  });

  it("keeps the time statistics right before 1970", async () => {
    const t = Date.parse("1969-12-31T23:59:59Z");
    const f = readParquetFooter(await encodeParquet(readings(3, t)));
    expect([f.minTime, f.maxTime]).toEqual([t, t + 500]);
  });

  it("stores a stray NaN or Infinity instead of aborting the file (validation dead-letters them first)", async () => {
    // Values are read back by DuckDB and pyarrow in test/integration/parquet-format.test.ts.
    const rows = readings(3).map((r, i) => ({ ...r, temperature: [NaN, Infinity, -Infinity][i]! }));
    const f = readParquetFooter(await encodeParquet(rows));
    expect(f.rows).toBe(3);
  });

  it("refuses rows that break the StoredReading invariants, and bad options", async () => {
    await expect(encodeParquet([{ ...readings(1)[0]!, time: 1.5 }])).rejects.toThrow(TypeError);
    await expect(encodeParquet([{ ...readings(1)[0]!, offset: -1 }])).rejects.toThrow(TypeError);
    await expect(encodeParquet([{ ...readings(1)[0]!, pressure: "1" as unknown as number }])).rejects.toThrow(TypeError);
    await expect(encodeParquet(readings(1), { rowGroupRows: 0 })).rejects.toThrow(RangeError);
  });

  it("writes a valid empty file", async () => {
    expect(readParquetFooter(await encodeParquet([]))).toMatchObject({ rows: 0, rowGroups: [] });
  });
});
