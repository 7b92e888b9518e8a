/**
 * Database anchors on the same rows, each into its own fresh database (same schema, same daily
 * partitions, empty):
 *
 *  - raw_copy: the ceiling — prebuilt COPY text buffers streamed with pg-copy-streams as superuser
 *    straight into sensor_data_raw (no RLS, no staging), one COPY per tenant, tenants in parallel
 *    over as many connections as the worker's pool;
 *  - sink_copy: what the sink does per batch, minus offsets and dead letters — as millrace_writer
 *    with the tenant context set, SET LOCAL ROLE millrace_loader and a binary COPY straight into
 *    sensor_data_raw (its CHECK holds every row to the tenant context; sinks/timescale/writer.ts,
 *    the same statements and encoder), one transaction per 5000 rows;
 *  - sink_insert: the sink's insert mode (after a duplicate key): as millrace_writer under RLS, its
 *    INSERT … SELECT … FROM unnest(binary column arrays) ON CONFLICT DO NOTHING;
 *  - staging_copy_text: the sink's former design (until issue 7), the same way: COPY into a temp
 *    staging table, then INSERT … SELECT … ORDER BY src_offset ON CONFLICT DO NOTHING;
 *  - staging_copy_binary: the same with binary COPY (sinks/timescale/copy-binary-encoder.ts);
 *  - psql_copy: `psql \copy` of the same rows from a file, one connection.
 *
 * Every anchor reports the count and checksum of what it stored, to be compared with the worker's.
 */
import { spawnSync } from "node:child_process";
import { writeFileSync } from "node:fs";
import { Readable } from "node:stream";
import { pipeline } from "node:stream/promises";
import pg from "pg";
import { from as copyFrom } from "pg-copy-streams";
import type { StoredReading } from "../pipelines/reading.ts";
import { encodeCopyRows, STAGE_COLUMNS } from "../sinks/timescale/copy-encoder.ts";
import { createPool } from "../sinks/timescale/pool.ts";
import { encodeCopyBinary } from "../sinks/timescale/copy-binary-encoder.ts";
import { BEGIN_BATCH, COPY_SQL, insertRowsSql, LOADER_ROLE, rowValues } from "../sinks/timescale/writer.ts";
import { createBenchDatabase, ensurePartitions, insertTenants, tableChecksum, type BenchDatabase } from "./db.ts";
import { cpuBetween, machineCpuSeconds, markCpu, pidsCpuSeconds, pidsSnapshot, stackPid } from "./procstat.ts";

export const RAW_COLUMNS = ["time", "tenant_id", "equipment_id", "facility_id", "temperature", "vibration", "pressure", "flow_rate"] as const;

// The sink's former statements (sinks/timescale/writer.ts before issue 7's single-write insert).
const STAGE_DDL = `CREATE TEMP TABLE IF NOT EXISTS millrace_stage (
  src_offset bigint NOT NULL, time timestamptz NOT NULL, tenant_id uuid NOT NULL, equipment_id text NOT NULL,
  facility_id text NOT NULL, temperature real, vibration real, pressure real, flow_rate real) ON COMMIT DELETE ROWS`;
// Its move: no savepoint, no DELETE … RETURNING, no DISTINCT ON sort — the staged rows in offset
// order, ON CONFLICT DO NOTHING (the lowest offset wins).
const MOVE_SQL = `INSERT INTO sensor_data_raw (time, tenant_id, equipment_id, facility_id, temperature, vibration, pressure, flow_rate)
SELECT time, tenant_id, equipment_id, facility_id, temperature, vibration, pressure, flow_rate FROM millrace_stage ORDER BY src_offset
ON CONFLICT DO NOTHING`;

export interface AnchorResult {
  records: number;
  seconds: number;
  recordsPerSecond: number;
  /** CPU-seconds per million records: PostgreSQL (cluster; own database's backends) and this client process. */
  cpuPerMillion: { postgresCluster: number | null; postgresOwnDatabase: number | null; client: number | null };
  stored: { rows: number; checksum: string };
  connections: number;
  /** Cores the whole machine kept busy meanwhile (this anchor's work included). */
  machineBusyCores: number;
  note?: string;
}

/** Text rows without the leading src_offset column (for the raw table's column list). */
function rawText(rows: readonly StoredReading[]): Buffer {
  const text = encodeCopyRows(rows).toString("utf8");
  return Buffer.from(text.replace(/^[^\t\n]*\t/gm, ""), "utf8");
}

function chunk<T>(xs: readonly T[], n: number): T[][] {
  const out: T[][] = [];
  for (let i = 0; i < xs.length; i += n) out.push(xs.slice(i, i + n));
  return out;
}

async function backendPids(pool: pg.Pool, db: string): Promise<number[]> {
  const r = await pool.query<{ pid: number }>("SELECT pid FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()", [db]);
  return r.rows.map((x) => x.pid);
}

/** A fresh database for one anchor: tenants and the fixture's partitions ready. */
export async function anchorDatabase(label: string, tenants: readonly string[], fromMs: number, toMs: number): Promise<BenchDatabase> {
  const db = await createBenchDatabase(label);
  await insertTenants(db.admin, tenants);
  await ensurePartitions(db.admin, fromMs, toMs);
  return db;
}

/** Time `work` and charge it the PostgreSQL and client CPU it caused. */
async function measured(db: BenchDatabase, records: number, connections: number, work: () => Promise<void>, ownPids: () => Promise<number[]>, settleMs = 0): Promise<AnchorResult> {
  const pgPid = stackPid("postgres");
  const c0 = process.cpuUsage();
  const m0 = markCpu({ postgres: [pgPid, true] });
  const mc0 = machineCpuSeconds();
  const t0 = performance.now();
  const own0 = pidsSnapshot(await ownPids());
  await work();
  const t1 = performance.now();
  const mc1 = machineCpuSeconds();
  // A backend that ends with its client (psql) is charged once the postmaster has reaped it.
  if (settleMs > 0) await new Promise((r) => setTimeout(r, settleMs));
  const m1 = markCpu({ postgres: [pgPid, true] });
  const cu = process.cpuUsage(c0);
  const own1 = pidsSnapshot([...own0.keys(), ...(await ownPids())]);
  const c = cpuBetween(m0, m1);
  const seconds = (t1 - t0) / 1000;
  const per = (v: number | null | undefined) => (v === null || v === undefined ? null : (v * 1e6) / records);
  return {
    records,
    seconds,
    recordsPerSecond: records / seconds,
    cpuPerMillion: { postgresCluster: per(c.postgres), postgresOwnDatabase: per(pidsCpuSeconds(own0, own1)), client: per((cu.user + cu.system) / 1e6) },
    stored: await tableChecksum(db.admin),
    connections,
    machineBusyCores: (mc1.busy - mc0.busy) / seconds,
  };
}

/** Superuser COPY straight into sensor_data_raw from prebuilt buffers; one connection per tenant, in parallel. */
export async function rawCopy(db: BenchDatabase, rowsByTenant: Map<string, StoredReading[]>, batchRows: number): Promise<AnchorResult> {
  const buffers = [...rowsByTenant.values()].map((rows) => chunk(rows, batchRows).map(rawText));
  const records = [...rowsByTenant.values()].reduce((a, r) => a + r.length, 0);
  // Its own pool: the admin pool stays free for the checksum afterwards.
  const pool = new pg.Pool({ connectionString: db.adminUrl, max: buffers.length, options: "-c TimeZone=UTC", application_name: "bench-raw-copy" });
  const clients = await Promise.all(buffers.map(() => pool.connect()));
  try {
    const sql = `COPY sensor_data_raw (${RAW_COLUMNS.join(", ")}) FROM STDIN`;
    return await measured(
      db,
      records,
      clients.length,
      async () => {
        await Promise.all(
          clients.map(async (c, i) => {
            await c.query("BEGIN");
            await pipeline(Readable.from(buffers[i]!), c.query(copyFrom(sql)));
            await c.query("COMMIT");
          }),
        );
      },
      async () => (await Promise.all(clients.map((c) => c.query<{ pid: number }>("SELECT pg_backend_pid() AS pid")))).map((r) => r.rows[0]!.pid),
    );
  } finally {
    for (const c of clients) c.release();
    await pool.end();
  }
}

/**
 * The sink-like anchors' shared skeleton: per tenant one millrace_writer connection, in parallel,
 * each running `batch(client, tenant, prepared)` for every prebuilt batch of its tenant's rows.
 */
async function perTenantBatches<B>(
  db: BenchDatabase,
  rowsByTenant: Map<string, StoredReading[]>,
  batchRows: number,
  label: string,
  prepare: (tenant: string, rows: StoredReading[]) => B,
  batch: (c: pg.PoolClient, tenant: string, prepared: B) => Promise<void>,
): Promise<AnchorResult> {
  const work = [...rowsByTenant].map(([tenant, rows]) => ({ tenant, batches: chunk(rows, batchRows).map((b) => prepare(tenant, b)) }));
  const records = [...rowsByTenant.values()].reduce((a, r) => a + r.length, 0);
  const writer = createPool({ connectionString: db.adminUrl, role: "millrace_writer", max: work.length, applicationName: `bench-${label}` });
  const clients = await Promise.all(work.map(() => writer.connect()));
  try {
    return await measured(
      db,
      records,
      clients.length,
      async () => {
        await Promise.all(
          clients.map(async (c, i) => {
            const w = work[i]!;
            for (const prepared of w.batches) await batch(c, w.tenant, prepared);
          }),
        );
      },
      async () => (await Promise.all(clients.map((c) => c.query<{ pid: number }>("SELECT pg_backend_pid() AS pid")))).map((r) => r.rows[0]!.pid),
    );
  } finally {
    for (const c of clients) c.release();
    await writer.end();
  }
}

/** The sink's per-batch COPY (as millrace_loader, binary, straight into sensor_data_raw), the buffers prebuilt; one connection per tenant. */
export function sinkCopy(db: BenchDatabase, rowsByTenant: Map<string, StoredReading[]>, batchRows: number): Promise<AnchorResult> {
  return perTenantBatches(db, rowsByTenant, batchRows, "sink-copy", (_t, b) => encodeCopyBinary(b, { withOffset: false }), async (c, tenant, buf) => {
    await c.query(BEGIN_BATCH);
    await c.query("SELECT set_config('app.current_tenant_id', $1, true)", [tenant]);
    await c.query(`SET LOCAL ROLE ${LOADER_ROLE}`);
    await pipeline(Readable.from([buf]), c.query(copyFrom(COPY_SQL)));
    await c.query("COMMIT");
  });
}

/** The sink's insert mode per batch (RLS, INSERT … SELECT FROM unnest of binary arrays), the parameters prebuilt; one connection per tenant. */
export function sinkInsert(db: BenchDatabase, rowsByTenant: Map<string, StoredReading[]>, batchRows: number): Promise<AnchorResult> {
  const sql = insertRowsSql(1);
  return perTenantBatches(db, rowsByTenant, batchRows, "sink-insert", (tenant, b) => rowValues(tenant, b), async (c, tenant, values) => {
    await c.query(BEGIN_BATCH);
    await c.query("SELECT set_config('app.current_tenant_id', $1, true)", [tenant]);
    await c.query(sql, values);
    await c.query("COMMIT");
  });
}

/** The sink's former per-batch SQL (RLS, staging, INSERT … SELECT) with text or binary COPY; one connection per tenant. */
export function stagingCopy(db: BenchDatabase, rowsByTenant: Map<string, StoredReading[]>, batchRows: number, format: "text" | "binary"): Promise<AnchorResult> {
  const encode = format === "text" ? (r: StoredReading[]) => encodeCopyRows(r) : (r: StoredReading[]) => encodeCopyBinary(r);
  const copySql = `COPY millrace_stage (${STAGE_COLUMNS.join(", ")}) FROM STDIN${format === "binary" ? " (FORMAT binary)" : ""}`;
  return perTenantBatches(db, rowsByTenant, batchRows, `staging-${format}`, (_t, b) => encode(b), async (c, tenant, buf) => {
    // As the sink did: BEGIN with the stage DDL, then the tenant context as a bound parameter.
    await c.query(`BEGIN; ${STAGE_DDL}`);
    await c.query("SELECT set_config('app.current_tenant_id', $1, true)", [tenant]);
    await pipeline(Readable.from([buf]), c.query(copyFrom(copySql)));
    await c.query(MOVE_SQL);
    await c.query("COMMIT");
  });
}

/** `psql \copy` from a file of the same rows (one connection; the time includes starting psql). */
export async function psqlCopy(db: BenchDatabase, rowsByTenant: Map<string, StoredReading[]>, file: string, psql: string): Promise<AnchorResult> {
  const parts: Buffer[] = [];
  for (const rows of rowsByTenant.values()) for (const c of chunk(rows, 50_000)) parts.push(rawText(c));
  writeFileSync(file, Buffer.concat(parts));
  const records = [...rowsByTenant.values()].reduce((a, r) => a + r.length, 0);
  const r = await measured(
    db,
    records,
    1,
    async () => {
      const res = spawnSync(psql, [db.adminUrl, "-X", "-q", "-v", "ON_ERROR_STOP=1", "-c", `\\copy sensor_data_raw (${RAW_COLUMNS.join(", ")}) FROM '${file}'`], {
        encoding: "utf8",
        env: { ...process.env, PGOPTIONS: "-c TimeZone=UTC" },
        timeout: 600_000,
      });
      if (res.status !== 0) throw new Error(`psql \\copy failed (${res.status}): ${res.stderr || res.error?.message}`);
    },
    async () => backendPids(db.admin, db.name),
    500,
  );
  r.cpuPerMillion.postgresOwnDatabase = null;
  r.note = "psql's backend lives only inside the timed interval (its CPU is in the cluster figure); client CPU excludes psql itself; the time includes starting psql";
  return r;
}
