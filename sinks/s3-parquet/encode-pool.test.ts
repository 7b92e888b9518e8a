import { afterAll, describe, expect, it } from "vitest";
import type { StoredReading } from "../../pipelines/reading.ts";
import { ParquetEncodePool } from "./encode-pool.ts";
import { encodeParquet } from "./encoder.ts";

const rows: StoredReading[] = Array.from({ length: 10_000 }, (_, i) => ({
  offset: 1000 + i,
  time: Date.UTC(2026, 0, 1) + i * 997,
  tenantId: "3f2b8c1e-6d4a-4b7e-9c0d-1a2b3c4d5e6f",
  equipmentId: `pump-${i % 37}`,
  facilityId: i % 2 ? "fac-ü1" : "fac-2",
  temperature: i % 11 === 0 ? null : Math.fround(20 + i / 100),
  vibration: Math.fround(i / 1000),
  pressure: i % 7 === 0 ? null : Math.fround(-1 + i / 5000),
  flow_rate: null,
}));

describe("Parquet encoding in a worker thread", () => {
  const pool = new ParquetEncodePool();
  afterAll(() => pool.close());

  it("gives exactly the bytes of the encoder on the main thread, for files asked at once", async () => {
    const opts = { rowGroupRows: 4096 };
    const [a, b] = await Promise.all([pool.encode(rows, opts), pool.encode(rows.slice(0, 3), opts)]);
    expect(a.equals(await encodeParquet(rows, opts))).toBe(true);
    expect(b.equals(await encodeParquet(rows.slice(0, 3), opts))).toBe(true);
  }, 60_000);

  it("rejects with the encoder's own error, and keeps working", async () => {
    const bad = [{ ...rows[0]!, time: 1.5 }];
    await expect(pool.encode(bad)).rejects.toThrow(TypeError);
    await expect(pool.encode(bad)).rejects.toThrow(/not an integer of epoch milliseconds/);
    expect((await pool.encode(rows.slice(0, 10))).equals(await encodeParquet(rows.slice(0, 10)))).toBe(true);
  }, 60_000);

  it("fails the files waiting on a closed pool, and a new file starts a new thread", async () => {
    // The expectation is attached before the pool is closed: the file fails as close() starts.
    const waiting = expect(pool.encode(rows)).rejects.toThrow(/closed|exited/);
    await pool.close();
    await waiting;
    expect((await pool.encode(rows.slice(0, 5))).equals(await encodeParquet(rows.slice(0, 5)))).toBe(true);
  }, 60_000);
});
