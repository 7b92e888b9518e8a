/**
 * Files written by the s3_parquet encoder read back with two independent readers, DuckDB and
 * pyarrow, value for value (failure classes 12-14): optional columns with no nulls and only nulls,
 * null/NaN/Infinity and a reading before 1970, row-group boundaries at 4,095/4,096/4,100/10,000 rows,
 * strings byte for byte, time as a UTC instant, and the documented Hive-partitioned query shape.
 */
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { StoredReading } from "../../pipelines/reading.ts";
import { validateReading } from "../../pipelines/processors/validate.ts";
import { encodeParquet, parquetObjectKey, readParquetFooter } from "../../sinks/s3-parquet/index.ts";
import { dropColumnsWithPyarrow, openDuckDb, pyarrowVersion, readUnifiedWithPyarrow, readWithPyarrow, type DuckDb, type ReadRow } from "../helpers/parquet-readers.ts";

const T = "6b2f0c1e-4d3a-4f5b-8c7d-9e0a1b2c3d4e";
const TOPIC = `sensor-data-${T}`;
const T0 = Date.parse("2024-03-31T01:30:00Z");

function readings(n: number, f: (i: number) => Partial<StoredReading> = () => ({})): StoredReading[] {
  return Array.from({ length: n }, (_, i) => ({
    offset: 5_000 + i,
    time: T0 + i * 1000,
    tenantId: T,
    equipmentId: `valve-${i % 13}`,
    facilityId: `plant-${i % 3}`,
    temperature: 70 + (i % 100) / 7,
    vibration: (i % 17) / 1000,
    pressure: i % 4 === 0 ? null : 1 + i / 3,
    flow_rate: i % 5 === 0 ? null : 30 + (i % 9) / 4,
    ...f(i),
  }));
}

/** What a reader must return for a written row: FLOAT is 32-bit, so measures are rounded to float. */
function expected(rows: readonly StoredReading[]): ReadRow[] {
  const f = (v: number | null) => (v === null ? null : Math.fround(v));
  return rows.map((r) => ({
    time: r.time,
    tenant_id: r.tenantId,
    equipment_id: r.equipmentId,
    facility_id: r.facilityId,
    temperature: f(r.temperature),
    vibration: f(r.vibration),
    pressure: f(r.pressure),
    source_offset: r.offset,
    flow_rate: f(r.flow_rate),
  }));
}

describe("Parquet files read back by DuckDB and pyarrow", () => {
  let dir: string;
  let duck: DuckDb;

  beforeAll(async () => {
    // Fails (not skips) without pyarrow, naming the install command.
    pyarrowVersion();
    dir = mkdtempSync(join(tmpdir(), "millrace-parquet-"));
    duck = await openDuckDb();
  });

  afterAll(() => {
    duck?.close();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  async function write(name: string, rows: readonly StoredReading[], opts?: Parameters<typeof encodeParquet>[1]): Promise<{ path: string; bytes: number }> {
    const buf = await encodeParquet(rows, opts);
    const path = join(dir, name);
    mkdirSync(dirname(path), { recursive: true });
    writeFileSync(path, buf);
    return { path, bytes: buf.length };
  }

  const sql = (p: string) => `read_parquet('${p.replaceAll("'", "''")}')`;

  it("class 12: an optional column with no nulls and one with only nulls, snappy: both readers agree with what was written", async () => {
    const rows = readings(500, () => ({ vibration: null })); // temperature: no nulls; vibration: only nulls; pressure: some
    const { path } = await write("class12.parquet", rows);
    const want = expected(rows);

    const py = readWithPyarrow(path);
    expect(py.rows).toEqual(want);
    expect(py.numRows).toBe(500);
    expect(py.schema).toEqual([
      ["time", "timestamp[ms, tz=UTC]", false],
      ["tenant_id", "string", false],
      ["equipment_id", "string", false],
      ["facility_id", "string", false],
      ["temperature", "float", true],
      ["vibration", "float", true],
      ["pressure", "float", true],
      ["source_offset", "int64", false],
      ["flow_rate", "float", true],
    ]);
    expect(await duck.rows(sql(path))).toEqual(want);

    // File metadata reads cleanly in DuckDB too (schema, per-column-chunk metadata, file metadata).
    const schema = await duck.query(`SELECT name, type, logical_type FROM parquet_schema('${path}') WHERE name <> 'schema'`);
    expect(schema.map((s) => s.name)).toEqual(["time", "tenant_id", "equipment_id", "facility_id", "temperature", "vibration", "pressure", "source_offset", "flow_rate"]);
    const chunks = await duck.query(`SELECT path_in_schema, compression, stats_null_count FROM parquet_metadata('${path}')`);
    expect(new Set(chunks.map((c) => c.compression))).toEqual(new Set(["SNAPPY"]));
    expect(chunks.find((c) => c.path_in_schema === "vibration")?.stats_null_count).toBe(500n);
    expect(chunks.find((c) => c.path_in_schema === "temperature")?.stats_null_count).toBe(0n);
    const fm = await duck.query(`SELECT num_rows, format_version FROM parquet_file_metadata('${path}')`);
    expect(fm[0]?.num_rows).toBe(500n);
    const types = await duck.query(`DESCRIBE SELECT * FROM ${sql(path)}`);
    expect(types.find((c) => c.column_name === "time")?.column_type).toBe("TIMESTAMP WITH TIME ZONE");
    // Aggregates over the all-null column are NULL, not an error.
    const agg = await duck.query(`SELECT count(vibration) AS n, max(vibration) AS mx, count(*) AS c FROM ${sql(path)}`);
    expect(agg[0]).toEqual({ n: 0n, mx: null, c: 500n });
  });

  it("class 13: null, NaN and ±Infinity follow one policy; 1969-12-31T23:59:59Z round-trips as that UTC instant", async () => {
    // The policy: validation dead-letters NaN and ±Infinity (reason non_finite_value), so neither sink
    // receives them; null means "not measured" and is stored as null in both.
    const tenant = { tenantId: T, status: "active" as const, retentionDays: null, maxEquipment: 100 };
    const sensor = { tenant_id: T, equipment_id: "e", facility_id: "f", time: T0, temperature: NaN, vibration: null, pressure: 1 };
    for (const bad of [NaN, Infinity, -Infinity]) {
      const v = validateReading({ ...sensor, temperature: bad } as never, { topicTenantId: T, tenant, offset: 1, now: T0 }, { maxFutureSkewMs: 60_000 });
      expect(v).toMatchObject({ ok: false, reason: "non_finite_value" });
    }
    expect(validateReading({ ...sensor, temperature: null } as never, { topicTenantId: T, tenant, offset: 1, now: T0 }, { maxFutureSkewMs: 60_000 }).ok).toBe(true);

    // Should one reach the encoder anyway, it does not abort the file: it is stored as the IEEE value
    // (exactly what the PostgreSQL sink's COPY encoder writes into a real column), and that column
    // gets no min/max statistics in that file, so no reader prunes row groups on a NaN bound.
    const preEpoch = Date.parse("1969-12-31T23:59:59Z");
    const rows: StoredReading[] = [
      ...readings(3, (i) => ({ time: preEpoch + i * 1000 })),
      ...readings(4, (i) => ({ offset: 6_000 + i, temperature: [NaN, Infinity, -Infinity, null][i]!, vibration: null, pressure: [null, 0, -0, 3.4e38][i]! })),
    ];
    const { path } = await write("class13.parquet", rows);
    const want = expected(rows);

    const py = readWithPyarrow(path);
    expect(py.rows).toEqual(want);
    expect(py.rows[0]!.time).toBe(preEpoch);
    expect(py.hasMinMax[0]!.temperature).toBe(false);
    expect(py.hasMinMax[0]!.time).toBe(true);
    expect(await duck.rows(sql(path))).toEqual(want);
    const iso = await duck.query(`SELECT strftime(time AT TIME ZONE 'UTC', '%Y-%m-%dT%H:%M:%SZ') AS t FROM ${sql(path)} ORDER BY source_offset LIMIT 1`);
    expect(iso[0]?.t).toBe("1969-12-31T23:59:59Z");
    // Filters on the column are answered from the values, not from a NaN statistic.
    const gt = await duck.query(`SELECT count(*) AS n FROM ${sql(path)} WHERE temperature > 1000`);
    expect(gt[0]?.n).toBe(2n); // +Infinity, and NaN (DuckDB orders NaN above every number)
    const lt = await duck.query(`SELECT count(*) AS n FROM ${sql(path)} WHERE temperature < -1000`);
    expect(lt[0]?.n).toBe(1n); // -Infinity
    const tsFilter = await duck.query(`SELECT count(*) AS n FROM ${sql(path)} WHERE time < TIMESTAMPTZ '1970-01-01 00:00:00+00'`);
    expect(tsFilter[0]?.n).toBe(1n);
  });

  it("strings round-trip byte for byte (UTF-8), whatever the characters", async () => {
    const ids = ["pump\\200", "C:\\new\\tank", "A\tB\nC", "\\N", "", "ü-ñ-😀", "a b*c^d+e", "日本"];
    const rows = readings(ids.length, (i) => ({ equipmentId: ids[i]!, facilityId: ids[ids.length - 1 - i]! }));
    const { path } = await write("strings.parquet", rows);
    const want = expected(rows);
    expect(readWithPyarrow(path).rows).toEqual(want);
    expect(await duck.rows(sql(path))).toEqual(want);
  });

  it("class 14: 4,095 / 4,096 / 4,100 / 10,000 rows: row counts match, row groups of at most 4,096, size about linear", async () => {
    const sizes: Array<{ n: number; bytes: number }> = [];
    for (const n of [4095, 4096, 4100, 10_000]) {
      const rows = readings(n);
      const { path, bytes } = await write(`class14-${n}.parquet`, rows, { rowGroupRows: 4096 });
      sizes.push({ n, bytes });
      const groups = Array.from({ length: Math.ceil(n / 4096) }, (_, g) => Math.min(4096, n - g * 4096));

      const footer = readParquetFooter(readFileSync(path));
      expect(footer.rows).toBe(n);
      expect(footer.rowGroups.map((g) => g.rows)).toEqual(groups);

      const py = readWithPyarrow(path);
      expect(py.numRows).toBe(n);
      expect(py.rowGroups).toEqual(groups);
      expect(py.rows).toEqual(expected(rows));

      const d = await duck.query(`SELECT count(*) AS n, min(source_offset) AS lo, max(source_offset) AS hi FROM ${sql(path)}`);
      expect(d[0]).toEqual({ n: BigInt(n), lo: 5000n, hi: BigInt(5000 + n - 1) });
      const rg = await duck.query(`SELECT row_group_id, max(row_group_num_rows) AS rows FROM parquet_metadata('${path}') GROUP BY 1 ORDER BY 1`);
      expect(rg.map((r) => Number(r.rows))).toEqual(groups);
      expect(await duck.rows(sql(path))).toEqual(expected(rows));
    }
    // Bytes per row stay within ±25% of each other from 4,095 to 10,000 rows (no per-group blow-up).
    const perRow = sizes.map((s) => s.bytes / s.n);
    expect(Math.max(...perRow) / Math.min(...perRow)).toBeLessThan(1.25);
    // Crossing a row-group boundary by 4 rows costs little: one more group's headers, not a copy.
    const [a, b, c] = sizes;
    expect(c!.bytes - b!.bytes).toBeLessThan(0.05 * b!.bytes + 4096);
    expect(b!.bytes - a!.bytes).toBeGreaterThanOrEqual(0);
  });

  it("reads one tenant's prefix with Hive partitioning, as docs/parquet.md tells analysts to", async () => {
    const other = "0aa0bb0c-1d2e-4f30-8a41-5b6c7d8e9f00";
    const files = [
      readings(50, (i) => ({ time: Date.parse("2024-05-01T10:00:00Z") + i * 1000 })),
      readings(40, (i) => ({ offset: 5_050 + i, time: Date.parse("2024-05-01T11:05:00Z") + i * 1000 })),
      readings(30, (i) => ({ offset: 5_090 + i, time: Date.parse("2024-05-02T00:00:00Z") + i * 1000 })),
    ];
    const root = join(dir, "bucket");
    for (const rows of files) {
      const key = parquetObjectKey({ tenantId: T, topic: TOPIC, partition: 0, firstOffset: rows[0]!.offset, lastOffset: rows.at(-1)!.offset, firstTime: rows[0]!.time });
      await write(join("bucket", key), rows);
    }
    // Another tenant's file beside it must not be read.
    const foreign = readings(5, (i) => ({ tenantId: other, offset: i }));
    await write(join("bucket", parquetObjectKey({ tenantId: other, topic: `sensor-data-${other}`, partition: 0, firstOffset: 0, lastOffset: 4, firstTime: T0 })), foreign);

    const got = await duck.rows(`read_parquet('${root}/${T}/sensor-data/*/*/*.parquet', hive_partitioning = true)`);
    const want = expected(files.flat());
    expect(got.map(({ date: _d, hour: _h, ...r }) => r).sort((x, y) => x.source_offset - y.source_offset)).toEqual(want);
    expect(new Set(got.map((r) => r.tenant_id))).toEqual(new Set([T]));
    // The partition columns are the first reading's UTC date and hour.
    const parts = new Set(got.map((r) => `${r.date} ${r.hour}`));
    expect(parts).toEqual(new Set(["2024-05-01 10", "2024-05-01 11", "2024-05-02 0"]));
    const pruned = await duck.query(`SELECT count(*) AS n FROM read_parquet('${root}/${T}/sensor-data/*/*/*.parquet', hive_partitioning = true) WHERE date = '2024-05-01' AND hour = 11`);
    expect(pruned[0]?.n).toBe(40n);
  });
  it("a prefix with files from before flow_rate (sensor-reading/1) and after reads as one table, as docs/parquet.md tells analysts to", async () => {
    const oldRows = readings(20, (i) => ({ offset: 7_000 + i, time: Date.parse("2024-06-01T10:00:00Z") + i * 1000, flow_rate: null }));
    const newRows = readings(30, (i) => ({ offset: 7_020 + i, time: Date.parse("2024-06-01T11:00:00Z") + i * 1000 }));
    const root = join(dir, "mixed");
    const oldKey = parquetObjectKey({ tenantId: T, topic: TOPIC, partition: 0, firstOffset: 7_000, lastOffset: 7_019, firstTime: oldRows[0]!.time });
    const newKey = parquetObjectKey({ tenantId: T, topic: TOPIC, partition: 0, firstOffset: 7_020, lastOffset: 7_049, firstTime: newRows[0]!.time });
    // The older file: what version 1 wrote, the same columns without flow_rate.
    const staged = await write(join("mixed-staging", "old.parquet"), oldRows);
    mkdirSync(dirname(join(root, oldKey)), { recursive: true });
    dropColumnsWithPyarrow(staged.path, join(root, oldKey), ["flow_rate"]);
    expect(readWithPyarrow(join(root, oldKey)).schema.map(([n]) => n)).not.toContain("flow_rate");
    const newest = await write(join("mixed", newKey), newRows);
    const want = expected([...oldRows, ...newRows]);
    expect(want.slice(0, 20).every((r) => r.flow_rate === null)).toBe(true);
    expect(want.slice(20).filter((r) => r.flow_rate !== null).length).toBe(24);
    const bySource = (rs: ReadRow[]) => rs.map(({ date: _d, hour: _h, ...r }) => r).sort((x, y) => x.source_offset - y.source_offset);

    const got = await duck.rows(`read_parquet('${root}/${T}/sensor-data/*/*/*.parquet', hive_partitioning = true, union_by_name = true)`);
    expect(bySource(got)).toEqual(want);
    const py = readUnifiedWithPyarrow(join(root, T, "sensor-data"), newest.path);
    expect(bySource(py.rows)).toEqual(want);
  });
});
