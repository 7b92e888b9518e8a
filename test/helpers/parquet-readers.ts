/**
 * Independent Parquet readers for tests: DuckDB (@duckdb/node-api, in process) and pyarrow (Python,
 * a child process). Both return rows in one comparable shape: time as epoch ms, floats as JS numbers
 * (NaN/±Infinity kept), null as null. pyarrow must be installed (test/python-requirements.txt; .ci/run and
 * `millrace test` install it, stack/python.ts): a missing pyarrow fails the test, never skips it.
 */
import { spawnSync } from "node:child_process";
import { DuckDBInstance } from "@duckdb/node-api";

/** The interpreter with pyarrow: `millrace test` sets MILLRACE_PYTHON (stack/python.ts). */
const PYTHON = process.env.MILLRACE_PYTHON || "python3";

export interface ReadRow {
  time: number;
  tenant_id: string;
  equipment_id: string;
  facility_id: string;
  temperature: number | null;
  vibration: number | null;
  pressure: number | null;
  source_offset: number;
  /** null also when the file predates the column (schema sensor-reading/1). */
  flow_rate: number | null;
  /** Hive partition columns, when read with hive partitioning. */
  date?: string;
  hour?: number;
}

export interface PyarrowResult {
  schema: Array<[string, string, boolean]>;
  numRows: number;
  rowGroups: number[];
  /** Per row group, per column: whether min/max statistics are present. */
  hasMinMax: Array<Record<string, boolean>>;
  createdBy: string;
  metadata: Record<string, string>;
  rows: ReadRow[];
}

const PY = String.raw`
import json, math, sys
try:
    import pyarrow as pa, pyarrow.parquet as pq, pyarrow.dataset as ds, pyarrow.fs as pafs
except ImportError as e:
    print("pyarrow is not installed (" + str(e) + "): python3 -m pip install -r test/python-requirements.txt", file=sys.stderr)
    sys.exit(3)
args = json.loads(sys.argv[1])

def fl(v):
    if v is None: return None
    if math.isnan(v): return "NaN"
    if math.isinf(v): return "Infinity" if v > 0 else "-Infinity"
    return v

def rows_of(table):
    cols = {n: table.column(n) for n in table.column_names}
    out = {}
    for n, c in cols.items():
        if n == "time":
            out[n] = c.cast(pa.int64()).to_pylist()
        elif pa.types.is_floating(c.type):
            out[n] = [fl(v) for v in c.to_pylist()]
        else:
            out[n] = [v.isoformat() if hasattr(v, "isoformat") else v for v in c.to_pylist()]
    return [dict(zip(out.keys(), vals)) for vals in zip(*out.values())] if out else []

if args["mode"] == "file":
    f = pq.ParquetFile(args["path"])
    md = f.metadata
    md.to_dict()  # walks every row group and column chunk: the metadata must read cleanly
    table = f.read()
    has = []
    for i in range(md.num_row_groups):
        rg = md.row_group(i)
        has.append({rg.column(j).path_in_schema: bool(rg.column(j).statistics is not None and rg.column(j).statistics.has_min_max) for j in range(rg.num_columns)})
    res = {
        "schema": [[fld.name, str(fld.type), fld.nullable] for fld in f.schema_arrow],
        "numRows": md.num_rows,
        "rowGroups": [md.row_group(i).num_rows for i in range(md.num_row_groups)],
        "hasMinMax": has,
        "createdBy": md.created_by,
        "metadata": {k.decode(): v.decode() for k, v in (md.metadata or {}).items()},
        "rows": rows_of(table),
    }
elif args["mode"] == "drop":
    # Rewrite a file without some columns (e.g. an older schema version's file), types kept.
    t = pq.read_table(args["path"])
    pq.write_table(t.drop_columns(args["columns"]), args["out"], coerce_timestamps="ms", allow_truncated_timestamps=False)
    res = {"schema": [], "numRows": t.num_rows, "rowGroups": [], "hasMinMax": [], "createdBy": "", "metadata": {}, "rows": []}
elif args["mode"] == "unified":
    # A local directory of files of several schema versions, read as docs/parquet.md tells analysts:
    # one dataset with the newest file's schema (older files get its missing columns as nulls).
    schema = pq.read_schema(args["schemaFrom"])
    dataset = ds.dataset(args["path"], format="parquet", partitioning="hive", schema=schema)
    table = dataset.to_table()
    res = {"schema": [[fld.name, str(fld.type), fld.nullable] for fld in table.schema], "numRows": table.num_rows,
           "rowGroups": [], "hasMinMax": [], "createdBy": "", "metadata": {}, "rows": rows_of(table)}
else:
    s3 = args["s3"]
    fs = pafs.S3FileSystem(endpoint_override=s3["endpoint"], access_key=s3["accessKeyId"], secret_key=s3["secretAccessKey"],
                           region=s3["region"], scheme=s3["endpoint"].split(":")[0], force_virtual_addressing=False)
    dataset = ds.dataset(args["path"], filesystem=fs, format="parquet", partitioning="hive")
    table = dataset.to_table()
    res = {"schema": [[fld.name, str(fld.type), fld.nullable] for fld in table.schema], "numRows": table.num_rows,
           "rowGroups": [], "hasMinMax": [], "createdBy": "", "metadata": {}, "rows": rows_of(table)}
print(json.dumps(res))
`;

function num(v: unknown): number | null {
  if (v === null || v === undefined) return null;
  if (v === "NaN") return NaN;
  if (v === "Infinity") return Infinity;
  if (v === "-Infinity") return -Infinity;
  return Number(v);
}

function normalise(r: Record<string, unknown>): ReadRow {
  const out: ReadRow = {
    time: Number(r.time),
    tenant_id: String(r.tenant_id),
    equipment_id: String(r.equipment_id),
    facility_id: String(r.facility_id),
    temperature: num(r.temperature),
    vibration: num(r.vibration),
    pressure: num(r.pressure),
    source_offset: Number(r.source_offset),
    flow_rate: num(r.flow_rate),
  };
  if (r.date !== undefined) out.date = String(r.date).slice(0, 10);
  if (r.hour !== undefined) out.hour = Number(r.hour);
  return out;
}

function runPython(args: Record<string, unknown>): PyarrowResult {
  const res = spawnSync(PYTHON, ["-c", PY, JSON.stringify(args)], { encoding: "utf8", maxBuffer: 512 * 1024 * 1024, timeout: 120_000 });
  if (res.error) throw new Error(`python3 could not run (${res.error.message}); install Python 3 and: python3 -m pip install -r test/python-requirements.txt`);
  if (res.status !== 0) throw new Error(`pyarrow reader failed (exit ${res.status ?? res.signal}): ${res.stderr.trim()}`);
  const parsed = JSON.parse(res.stdout) as PyarrowResult & { rows: Array<Record<string, unknown>> };
  return { ...parsed, rows: parsed.rows.map(normalise) };
}

/** Read one local Parquet file with pyarrow: rows, schema, row groups, statistics presence. */
export function readWithPyarrow(path: string): PyarrowResult {
  return runPython({ mode: "file", path });
}

/** Write `out`: the file at `path` without `columns` (pyarrow), e.g. a file as an older schema version wrote it. */
export function dropColumnsWithPyarrow(path: string, out: string, columns: string[]): void {
  runPython({ mode: "drop", path, out, columns });
}

/** Read a local directory (Hive partitioning) with pyarrow, under the schema of the file `schemaFrom`. */
export function readUnifiedWithPyarrow(dir: string, schemaFrom: string): PyarrowResult {
  return runPython({ mode: "unified", path: dir, schemaFrom });
}

/** Read a dataset (bucket/prefix) from S3 with pyarrow's S3 filesystem and Hive partitioning. */
export function readS3DatasetWithPyarrow(bucketAndPrefix: string, s3: { endpoint: string; region: string; accessKeyId: string; secretAccessKey: string }): PyarrowResult {
  return runPython({ mode: "s3", path: bucketAndPrefix, s3 });
}

/** Python's pyarrow version, or throws with the install command. */
export function pyarrowVersion(): string {
  const res = spawnSync(PYTHON, ["-c", "import pyarrow; print(pyarrow.__version__)"], { encoding: "utf8", timeout: 60_000 });
  if (res.error || res.status !== 0) {
    throw new Error(`pyarrow is required by the Parquet tests: python3 -m pip install -r test/python-requirements.txt (${res.error?.message ?? res.stderr.trim()})`);
  }
  return res.stdout.trim();
}

export interface DuckDb {
  rows(sql: string): Promise<ReadRow[]>;
  query(sql: string): Promise<Array<Record<string, unknown>>>;
  close(): void;
}

/** An in-memory DuckDB. `rows(from)` selects the millrace columns from a FROM clause's source. */
export async function openDuckDb(): Promise<DuckDb> {
  const instance = await DuckDBInstance.create(":memory:");
  const conn = await instance.connect();
  const query = async (sql: string) => (await conn.runAndReadAll(sql)).getRowObjectsJS() as Array<Record<string, unknown>>;
  return {
    query,
    async rows(source: string) {
      const cols = (await query(`DESCRIBE SELECT * FROM ${source}`)).map((c) => String(c.column_name));
      const extra = ["date", "hour"].filter((c) => cols.includes(c)).map((c) => `, CAST(${c} AS VARCHAR) AS ${c}`).join("");
      const flow = cols.includes("flow_rate") ? "flow_rate" : "NULL AS flow_rate";
      const got = await query(
        `SELECT epoch_ms(time) AS time, tenant_id, equipment_id, facility_id, temperature, vibration, pressure, source_offset, ${flow}${extra} FROM ${source}`,
      );
      return got.map(normalise);
    },
    close() {
      conn.closeSync();
      instance.closeSync();
    },
  };
}
