/**
 * Fresh databases for the benchmark (the pattern of test/helpers/db.ts, with a `millrace_bench_`
 * prefix): one per measured path, so every path writes the same rows into the same, empty, migrated
 * schema. Dropped at the end of the run unless kept.
 */
import { randomBytes } from "node:crypto";
import pg from "pg";
import { requireEnv } from "../lib/env.ts";
import { migrate } from "../migrations/migrate.ts";

export interface BenchDatabase {
  name: string;
  /** Superuser URL of this database. */
  adminUrl: string;
  admin: pg.Pool;
  drop(): Promise<void>;
}

export function withDatabase(url: string, db: string): string {
  const u = new URL(url);
  u.pathname = `/${db}`;
  return u.toString();
}

export async function createBenchDatabase(label: string): Promise<BenchDatabase> {
  const base = requireEnv("MILLRACE_PG_ADMIN_URL");
  const name = `millrace_bench_${label.replace(/[^a-z0-9_]/g, "_").slice(0, 20)}_${randomBytes(4).toString("hex")}`;
  const root = new pg.Client({ connectionString: base });
  await root.connect();
  try {
    await root.query(`CREATE DATABASE ${name}`);
  } finally {
    await root.end();
  }
  const adminUrl = withDatabase(base, name);
  try {
    await migrate(adminUrl);
  } catch (err) {
    const c = new pg.Client({ connectionString: base });
    await c.connect();
    await c.query(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`).finally(() => c.end());
    throw err;
  }
  const admin = new pg.Pool({ connectionString: adminUrl, max: 4, options: "-c TimeZone=UTC" });
  admin.on("error", () => {});
  return {
    name,
    adminUrl,
    admin,
    async drop() {
      await admin.end().catch(() => {});
      const c = new pg.Client({ connectionString: base });
      await c.connect();
      try {
        await c.query(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`);
      } finally {
        await c.end();
      }
    },
  };
}

/**
 * The bench's tenants: enterprise tier, so no tier message rate limit slows a drain (a basic-tier
 * tenant is held to 1,000 readings/s by the repository's topology — every drain but the first was,
 * until this was set, which made the PostgreSQL-only and profiled drains measure the rate limit).
 */
export async function insertTenants(pool: pg.Pool, tenantIds: readonly string[]): Promise<void> {
  for (const t of tenantIds) {
    await pool.query(
      `INSERT INTO tenants (tenant_id, tenant_name, deployment_type, subscription_tier, retention_policy_days, max_equipment, status)
       VALUES ($1, $2, 'multi-tenant', 'enterprise', 30, 10000, 'active') ON CONFLICT (tenant_id) DO NOTHING`,
      [t, `bench ${t.slice(0, 8)}`],
    );
  }
}

/** Daily partitions covering [fromMs, toMs] (what the worker makes itself before its first batch). */
export async function ensurePartitions(pool: pg.Pool, fromMs: number, toMs: number): Promise<void> {
  await pool.query("SELECT millrace.ensure_sensor_partitions($1::timestamptz, $2::timestamptz)", [new Date(fromMs).toISOString(), new Date(toMs).toISOString()]);
}

/**
 * Count and an order-independent checksum of a table's rows (as superuser, so RLS shows them all):
 * two paths that stored the same rows give the same pair.
 */
export async function tableChecksum(pool: pg.Pool, table = "sensor_data_raw"): Promise<{ rows: number; checksum: string }> {
  if (!/^[a-z_][a-z0-9_]*$/.test(table)) throw new Error(`bad table name ${table}`);
  const res = await pool.query<{ n: string; h: string | null }>(
    `SELECT count(*)::text AS n,
            sum(hashtextextended(concat_ws('|', extract(epoch FROM time)::text, tenant_id, equipment_id, facility_id,
                                           temperature, vibration, pressure, flow_rate), 0))::text AS h
     FROM ${table}`,
  );
  return { rows: Number(res.rows[0]!.n), checksum: res.rows[0]!.h ?? "0" };
}
