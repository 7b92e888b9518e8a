/**
 * Parquet writers compared on the same rows: the s3_parquet encoder (parquetjs-lite) against
 * @dsnp/parquetjs, hyparquet-writer, parquet-wasm (via apache-arrow) and DuckDB's COPY … TO.
 *
 *   npx tsx bench/parquet-libs.ts [--rows 100000] [--runs 3] [--libs a,b,…]
 *
 * Rows: the SKAB valve1 CSVs (../shared/datasets/skab/valve1/*.csv, read in place; temperature ←
 * Temperature, vibration ← Accelerometer1RMS, pressure ← Pressure), repeated with a different
 * equipment id per repetition until --rows. Every library gets the same schema (time as a UTC
 * timestamp, three strings, three nullable FLOATs, the INT64 offset), snappy, row groups of 4,096.
 *
 * Each library runs in its own child process (so peak RSS is its own): one warm-up encode of 5,000
 * rows, then --runs timed encodes of all rows (StoredReading[] in, file bytes out, including any
 * conversion the library needs: columns, an Arrow table, a DuckDB appender). The parent then reads
 * every file back with DuckDB and pyarrow and compares each value with what was written.
 * Output: bench/results/parquet-libs.json and a Markdown table on stdout.
 */
import { spawnSync } from "node:child_process";
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { createRequire } from "node:module";
import { join } from "node:path";
import { Writable } from "node:stream";
import { fileURLToPath } from "node:url";
import type { StoredReading } from "../pipelines/reading.ts";
import { readCsvReadings } from "../produce/csv.ts";
import { encodeParquet } from "../sinks/s3-parquet/encoder.ts";
import { repoRoot } from "../stack/context.ts";

const TENANT = "5d3c2b1a-0f9e-4d8c-8b7a-6f5e4d3c2b1a";
const ROW_GROUP = 4096;
const SKAB_DIR = join(repoRoot, "..", "shared", "datasets", "skab", "valve1");

type Encoder = (rows: readonly StoredReading[], path: string) => Promise<Buffer | undefined>;

// ------------------------------------------------------------------------------------------- data

export async function benchRows(n: number): Promise<StoredReading[]> {
  const files = readdirSync(SKAB_DIR)
    .filter((f) => f.endsWith(".csv"))
    .sort((a, b) => Number.parseInt(a, 10) - Number.parseInt(b, 10));
  if (files.length === 0) throw new Error(`no CSV files in ${SKAB_DIR}`);
  const base: Array<Omit<StoredReading, "offset" | "equipmentId">> = [];
  const equipment: string[] = [];
  for (const f of files) {
    for await (const rec of readCsvReadings(join(SKAB_DIR, f), { tenantId: TENANT, equipmentId: `valve1-${f.replace(".csv", "")}`, facilityId: "skab-testbed" })) {
      const r = rec.reading;
      base.push({ time: r.time, tenantId: TENANT, facilityId: r.facility_id, temperature: r.temperature, vibration: r.vibration, pressure: r.pressure, flow_rate: r.flow_rate });
      equipment.push(r.equipment_id);
    }
  }
  const out: StoredReading[] = new Array(n);
  for (let i = 0; i < n; i++) {
    const rep = Math.floor(i / base.length);
    const j = i % base.length;
    out[i] = { ...base[j]!, offset: i, equipmentId: rep === 0 ? equipment[j]! : `${equipment[j]!}-r${rep}` };
  }
  return out;
}

// --------------------------------------------------------------------------------------- encoders

async function collect(write: (sink: Writable) => Promise<void>): Promise<Buffer> {
  const chunks: Buffer[] = [];
  const sink = new Writable({
    write(chunk: Buffer, _e, cb) {
      chunks.push(chunk);
      cb();
    },
  });
  await write(sink);
  return Buffer.concat(chunks);
}

const encoders: Record<string, () => Promise<Encoder>> = {
  async "parquetjs-lite"() {
    return async (rows) => await encodeParquet(rows, { rowGroupRows: ROW_GROUP });
  },

  async "@dsnp/parquetjs"() {
    // Installed beside parquetjs-lite (which pins node-int64 0.3 at the top level), @dsnp/parquetjs
    // and its thrift 0.23 each get their own copy of node-int64 0.4, and thrift's `instanceof Int64`
    // refuses @dsnp's values ("Expected Int64 or Number"). For the bench, make both load one copy.
    const dsnpRequire = createRequire(createRequire(import.meta.url).resolve("@dsnp/parquetjs"));
    const thriftRequire = createRequire(dsnpRequire.resolve("thrift"));
    const thriftInt64 = thriftRequire.resolve("node-int64");
    thriftRequire(thriftInt64);
    const cache = createRequire(import.meta.url).cache;
    cache[dsnpRequire.resolve("node-int64")] = cache[thriftInt64];
    const { ParquetSchema, ParquetWriter } = await import("@dsnp/parquetjs");
    const c = { compression: "SNAPPY" } as const;
    const schema = new ParquetSchema({
      time: { type: "TIMESTAMP_MILLIS", ...c },
      tenant_id: { type: "UTF8", ...c },
      equipment_id: { type: "UTF8", ...c },
      facility_id: { type: "UTF8", ...c },
      temperature: { type: "FLOAT", optional: true, ...c },
      vibration: { type: "FLOAT", optional: true, ...c },
      pressure: { type: "FLOAT", optional: true, ...c },
      source_offset: { type: "INT64", ...c },
    });
    return async (rows) =>
      await collect(async (sink) => {
        const w = await ParquetWriter.openStream(schema, sink as never, { rowGroupSize: ROW_GROUP, useDataPageV2: false, pageIndex: false });
        for (const r of rows) {
          await w.appendRow({
            time: new Date(r.time),
            tenant_id: r.tenantId,
            equipment_id: r.equipmentId,
            facility_id: r.facilityId,
            temperature: r.temperature ?? undefined,
            vibration: r.vibration ?? undefined,
            pressure: r.pressure ?? undefined,
            source_offset: r.offset,
          });
        }
        await w.close();
      });
  },

  async "hyparquet-writer"() {
    const { parquetWriteBuffer } = await import("hyparquet-writer");
    const el = (name: string, type: string, repetition: string, extra: Record<string, unknown> = {}) => ({ name, type, repetition_type: repetition, ...extra });
    const schema = [
      { name: "root", num_children: 8 },
      el("time", "INT64", "REQUIRED", { logical_type: { type: "TIMESTAMP", isAdjustedToUTC: true, unit: "MILLIS" } }),
      el("tenant_id", "BYTE_ARRAY", "REQUIRED", { converted_type: "UTF8" }),
      el("equipment_id", "BYTE_ARRAY", "REQUIRED", { converted_type: "UTF8" }),
      el("facility_id", "BYTE_ARRAY", "REQUIRED", { converted_type: "UTF8" }),
      el("temperature", "FLOAT", "OPTIONAL"),
      el("vibration", "FLOAT", "OPTIONAL"),
      el("pressure", "FLOAT", "OPTIONAL"),
      el("source_offset", "INT64", "REQUIRED"),
    ];
    return async (rows) => {
      const col = <T>(f: (r: StoredReading) => T) => rows.map(f);
      const ab = parquetWriteBuffer({
        schema: schema as never,
        rowGroupSize: ROW_GROUP,
        codec: "SNAPPY",
        columnData: [
          { name: "time", data: col((r) => BigInt(r.time)) },
          { name: "tenant_id", data: col((r) => r.tenantId) },
          { name: "equipment_id", data: col((r) => r.equipmentId) },
          { name: "facility_id", data: col((r) => r.facilityId) },
          { name: "temperature", data: col((r) => r.temperature) },
          { name: "vibration", data: col((r) => r.vibration) },
          { name: "pressure", data: col((r) => r.pressure) },
          { name: "source_offset", data: col((r) => BigInt(r.offset)) },
        ] as never,
      });
      return Buffer.from(ab);
    };
  },

  async "parquet-wasm"() {
    const arrow = await import("apache-arrow");
    const wasm = await import("parquet-wasm");
    const utc = new arrow.TimestampMillisecond("UTC");
    return async (rows) => {
      const n = rows.length;
      const time = new BigInt64Array(n);
      const off = new BigInt64Array(n);
      for (let i = 0; i < n; i++) {
        time[i] = BigInt(rows[i]!.time);
        off[i] = BigInt(rows[i]!.offset);
      }
      const f32 = (k: "temperature" | "vibration" | "pressure") => arrow.vectorFromArray(rows.map((r) => r[k]), new arrow.Float32());
      const table = new arrow.Table({
        time: arrow.makeVector(arrow.makeData({ type: utc, data: time, length: n })),
        tenant_id: arrow.vectorFromArray(rows.map((r) => r.tenantId), new arrow.Utf8()),
        equipment_id: arrow.vectorFromArray(rows.map((r) => r.equipmentId), new arrow.Utf8()),
        facility_id: arrow.vectorFromArray(rows.map((r) => r.facilityId), new arrow.Utf8()),
        temperature: f32("temperature"),
        vibration: f32("vibration"),
        pressure: f32("pressure"),
        source_offset: arrow.makeVector(off),
      });
      const props = new wasm.WriterPropertiesBuilder().setCompression(wasm.Compression.SNAPPY).setMaxRowGroupSize(ROW_GROUP).build();
      const out = wasm.writeParquet(wasm.Table.fromIPCStream(arrow.tableToIPC(table, "stream")), props);
      return Buffer.from(out);
    };
  },

  async "duckdb-copy"() {
    const { DuckDBInstance, DuckDBTimestampTZValue } = await import("@duckdb/node-api");
    const instance = await DuckDBInstance.create(":memory:", { threads: "1" });
    const conn = await instance.connect();
    let seq = 0;
    return async (rows, path) => {
      const table = `t${seq++}`;
      await conn.run(
        `CREATE TABLE ${table} (time TIMESTAMPTZ NOT NULL, tenant_id VARCHAR NOT NULL, equipment_id VARCHAR NOT NULL, facility_id VARCHAR NOT NULL, temperature FLOAT, vibration FLOAT, pressure FLOAT, source_offset BIGINT NOT NULL)`,
      );
      const app = await conn.createAppender(table);
      const f = (v: number | null) => (v === null ? app.appendNull() : app.appendFloat(v));
      for (const r of rows) {
        app.appendTimestampTZ(new DuckDBTimestampTZValue(BigInt(r.time) * 1000n));
        app.appendVarchar(r.tenantId);
        app.appendVarchar(r.equipmentId);
        app.appendVarchar(r.facilityId);
        f(r.temperature);
        f(r.vibration);
        f(r.pressure);
        app.appendBigInt(BigInt(r.offset));
        app.endRow();
      }
      app.closeSync();
      await conn.run(`COPY ${table} TO '${path.replaceAll("'", "''")}' (FORMAT parquet, COMPRESSION snappy, ROW_GROUP_SIZE ${ROW_GROUP})`);
      await conn.run(`DROP TABLE ${table}`);
      return undefined; // DuckDB wrote the file itself
    };
  },
};

export const LIBS = Object.keys(encoders);

// ------------------------------------------------------------------------------------------ child

interface ChildResult {
  lib: string;
  rows: number;
  runsMs: number[];
  bytes: number;
  rssBeforeKiB: number;
  maxRssKiB: number;
  version: string;
}

function libVersion(lib: string): string {
  const name = lib === "duckdb-copy" ? "@duckdb/node-api" : lib;
  try {
    return (JSON.parse(readFileSync(join(repoRoot, "node_modules", name, "package.json"), "utf8")) as { version: string }).version.replace(/^v/, "");
  } catch {
    return "?";
  }
}

async function child(lib: string, n: number, runs: number, out: string): Promise<void> {
  const rows = await benchRows(n);
  const make = encoders[lib];
  if (!make) throw new Error(`unknown library ${lib}`);
  const encode = await make();
  const warm = `${out}.warm`;
  const wb = await encode(rows.slice(0, 5000), warm);
  if (wb) writeFileSync(warm, wb);
  rmSync(warm, { force: true });
  const rssBeforeKiB = Math.round(process.memoryUsage().rss / 1024);
  const runsMs: number[] = [];
  let bytes = 0;
  for (let i = 0; i < runs; i++) {
    const t0 = process.hrtime.bigint();
    const buf = await encode(rows, out);
    runsMs.push(Number(process.hrtime.bigint() - t0) / 1e6);
    if (buf) writeFileSync(out, buf);
    bytes = buf ? buf.length : statSync(out).size;
  }
  const res: ChildResult = { lib, rows: n, runsMs, bytes, rssBeforeKiB, maxRssKiB: process.resourceUsage().maxRSS, version: libVersion(lib) };
  process.stdout.write(`${JSON.stringify(res)}\n`);
}

// ----------------------------------------------------------------------------------------- parent

interface Compat {
  duckdb: { ok: boolean; rows: number; mismatches: number; timeType: string; error?: string };
  pyarrow: { ok: boolean; rows: number; mismatches: number; timeType: string; error?: string };
}

const PY = String.raw`
import json, math, sys
import pyarrow as pa, pyarrow.parquet as pq
t = pq.read_table(sys.argv[1])
cols = {}
for n in t.column_names:
    c = t.column(n)
    if n == "time":
        cols[n] = c.cast(pa.int64()).to_pylist() if c.type.unit == "ms" else [v // 1000 for v in c.cast(pa.int64()).to_pylist()]
    elif pa.types.is_floating(c.type):
        cols[n] = [None if v is None else ("NaN" if math.isnan(v) else v) for v in c.to_pylist()]
    else:
        cols[n] = c.to_pylist()
print(json.dumps({"timeType": str(t.schema.field("time").type), "cols": cols}))
`;

function expectedColumns(rows: readonly StoredReading[]) {
  const f = (v: number | null) => (v === null ? null : Math.fround(v));
  return {
    time: rows.map((r) => r.time),
    tenant_id: rows.map((r) => r.tenantId),
    equipment_id: rows.map((r) => r.equipmentId),
    facility_id: rows.map((r) => r.facilityId),
    temperature: rows.map((r) => f(r.temperature)),
    vibration: rows.map((r) => f(r.vibration)),
    pressure: rows.map((r) => f(r.pressure)),
    source_offset: rows.map((r) => r.offset),
  } as Record<string, Array<number | string | null>>;
}

function countMismatches(want: Record<string, Array<number | string | null>>, got: Record<string, unknown[]>): number {
  let bad = 0;
  for (const [k, w] of Object.entries(want)) {
    const g = got[k];
    if (!g || g.length !== w.length) {
      bad += w.length;
      continue;
    }
    for (let i = 0; i < w.length; i++) {
      const a = w[i];
      const b = g[i];
      const eq = a === null ? b === null || b === undefined : typeof a === "number" ? Number(b) === a : b === a;
      if (!eq) bad++;
    }
  }
  return bad;
}

async function compatibility(path: string, rows: readonly StoredReading[]): Promise<Compat> {
  const want = expectedColumns(rows);
  const res: Compat = {
    duckdb: { ok: false, rows: 0, mismatches: -1, timeType: "" },
    pyarrow: { ok: false, rows: 0, mismatches: -1, timeType: "" },
  };
  try {
    const { DuckDBInstance } = await import("@duckdb/node-api");
    const inst = await DuckDBInstance.create(":memory:");
    const conn = await inst.connect();
    try {
      const src = `read_parquet('${path}')`;
      const desc = (await conn.runAndReadAll(`DESCRIBE SELECT time FROM ${src}`)).getRowObjectsJS();
      res.duckdb.timeType = String(desc[0]?.column_type);
      const r = await conn.runAndReadAll(
        `SELECT epoch_ms(time) AS time, tenant_id, equipment_id, facility_id, temperature, vibration, pressure, source_offset FROM ${src} ORDER BY source_offset`,
      );
      const cols = r.getColumnsObjectJS() as Record<string, unknown[]>;
      res.duckdb.rows = r.currentRowCount;
      res.duckdb.mismatches = countMismatches(want, cols);
      res.duckdb.ok = res.duckdb.mismatches === 0 && res.duckdb.rows === rows.length && /WITH TIME ZONE/.test(res.duckdb.timeType);
    } finally {
      conn.closeSync();
      inst.closeSync();
    }
  } catch (err) {
    res.duckdb.error = (err as Error).message.slice(0, 200);
  }
  const py = spawnSync(process.env.MILLRACE_PYTHON || "python3", ["-c", PY, path], { encoding: "utf8", maxBuffer: 1024 * 1024 * 1024 });
  if (py.status === 0) {
    const parsed = JSON.parse(py.stdout) as { timeType: string; cols: Record<string, unknown[]> };
    res.pyarrow.timeType = parsed.timeType;
    res.pyarrow.rows = parsed.cols.time?.length ?? 0;
    res.pyarrow.mismatches = countMismatches(want, parsed.cols);
    res.pyarrow.ok = res.pyarrow.mismatches === 0 && res.pyarrow.rows === rows.length && /tz=UTC/.test(parsed.timeType);
  } else {
    res.pyarrow.error = (py.stderr || py.error?.message || "").trim().split("\n").at(-1)?.slice(0, 200);
  }
  return res;
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)]!;
}

async function parent(n: number, runs: number, libs: string[]): Promise<void> {
  const tmp = mkdtempSync(join(tmpdir(), "millrace-bench-parquet-"));
  const rows = await benchRows(n);
  const results: Array<ChildResult & { medianMs: number; rowsPerSec: number; compat: Compat }> = [];
  try {
    for (const lib of libs) {
      const out = join(tmp, `${lib.replace(/[^a-z0-9]+/gi, "_")}.parquet`);
      const loader = `file://${join(repoRoot, "node_modules", "tsx", "dist", "loader.mjs")}`;
      process.stderr.write(`bench: ${lib}…\n`);
      const c = spawnSync(process.execPath, ["--import", loader, fileURLToPath(import.meta.url), "--child", lib, "--rows", String(n), "--runs", String(runs), "--out", out], {
        cwd: repoRoot,
        encoding: "utf8",
        maxBuffer: 16 * 1024 * 1024,
        timeout: 10 * 60_000,
      });
      if (c.status !== 0) throw new Error(`${lib} failed (exit ${c.status ?? c.signal}): ${c.stderr.trim().split("\n").slice(-5).join("\n")}`);
      const r = JSON.parse(c.stdout.trim().split("\n").at(-1)!) as ChildResult;
      const m = median(r.runsMs);
      results.push({ ...r, medianMs: m, rowsPerSec: Math.round(n / (m / 1000)), compat: await compatibility(out, rows) });
    }
  } finally {
    rmSync(tmp, { recursive: true, force: true });
  }
  const report = {
    generatedBy: "npx tsx bench/parquet-libs.ts",
    rows: n,
    runs,
    rowGroupRows: ROW_GROUP,
    compression: "snappy",
    data: "SKAB valve1 (../shared/datasets/skab/valve1/*.csv), repeated with per-repetition equipment ids",
    node: process.version,
    cpus: (await import("node:os")).cpus().length,
    results,
  };
  mkdirSync(join(repoRoot, "bench", "results"), { recursive: true });
  writeFileSync(join(repoRoot, "bench", "results", "parquet-libs.json"), `${JSON.stringify(report, null, 2)}\n`);

  const mb = (kib: number) => (kib / 1024).toFixed(0);
  const lines = [
    `${n} rows, ${runs} runs (median), snappy, row groups of ${ROW_GROUP}, one child process per library (${process.version}, ${report.cpus} cores)`,
    "",
    "| library | version | rows/s | encode ms | output KiB | peak RSS MiB (before encode) | DuckDB reads back | pyarrow reads back |",
    "| --- | --- | ---: | ---: | ---: | ---: | --- | --- |",
    ...results.map((r) => {
      const c = (x: Compat["duckdb"]) => (x.ok ? `yes (${x.timeType})` : x.error ? `no: ${x.error}` : `no: ${x.mismatches} values differ, ${x.rows} rows, ${x.timeType}`);
      return `| ${r.lib} | ${r.version} | ${r.rowsPerSec.toLocaleString("en-US")} | ${r.medianMs.toFixed(0)} | ${(r.bytes / 1024).toFixed(0)} | ${mb(r.maxRssKiB)} (${mb(r.rssBeforeKiB)}) | ${c(r.compat.duckdb)} | ${c(r.compat.pyarrow)} |`;
    }),
  ];
  process.stdout.write(`${lines.join("\n")}\n`);
}

// ------------------------------------------------------------------------------------------- main

function arg(name: string): string | undefined {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 ? process.argv[i + 1] : undefined;
}

if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) {
  const n = Number(arg("rows") ?? 100_000);
  const runs = Number(arg("runs") ?? 3);
  const childLib = arg("child");
  const main = childLib ? child(childLib, n, runs, arg("out")!) : parent(n, runs, (arg("libs") ?? LIBS.join(",")).split(","));
  main.catch((err: unknown) => {
    process.stderr.write(`${(err as Error).stack ?? String(err)}\n`);
    process.exit(1);
  });
}
