/** A fresh, migrated database per test file, on the stack's PostgreSQL (dropped afterwards). */
import { randomBytes } from "node:crypto";
import pg from "pg";
import { migrate } from "../../migrations/migrate.ts";
import { requireEnv } from "../../lib/env.ts";
import { createPool } from "../../sinks/timescale/pool.ts";
import { DEDICATED_DATABASE_NAME } from "../../tenants/database.ts";

export interface TestDatabase {
  name: string;
  /** Admin (superuser) URL of this database. */
  adminUrl: string;
  admin: pg.Pool;
  /** Pool acting as millrace_writer, like the worker. */
  writer: pg.Pool;
  drop(): Promise<void>;
}

export function withDatabase(url: string, db: string): string {
  const u = new URL(url);
  u.pathname = `/${db}`;
  return u.toString();
}

/** `adminBaseUrl`: another server's admin URL (default: the stack's, $MILLRACE_PG_ADMIN_URL). */
export async function createTestDatabase(opts: { migrate?: boolean; adminBaseUrl?: string } = {}): Promise<TestDatabase> {
  const base = opts.adminBaseUrl ?? requireEnv("MILLRACE_PG_ADMIN_URL");
  const name = `millrace_test_${randomBytes(5).toString("hex")}`;
  const root = new pg.Client({ connectionString: base });
  await root.connect();
  await root.query(`CREATE DATABASE ${name}`);
  await root.end();
  const adminUrl = withDatabase(base, name);
  if (opts.migrate !== false) await migrate(adminUrl);
  const admin = new pg.Pool({ connectionString: adminUrl, max: 4 });
  admin.on("error", () => {});
  admin.on("connect", (c) => c.on("error", () => {}));
  const writer = createPool({ connectionString: adminUrl, role: "millrace_writer" });
  return {
    name,
    adminUrl,
    admin,
    writer,
    async drop() {
      // Tenants' dedicated databases made in this one (tenants/database.ts) go with it.
      const dedicated = await admin
        .query<{ d: string | null }>("SELECT database_ref->>'database' AS d FROM tenants WHERE database_mode = 'dedicated'")
        .then((r) => r.rows.map((x) => x.d).filter((d): d is string => d !== null && DEDICATED_DATABASE_NAME.test(d)))
        .catch(() => [] as string[]);
      await writer.end();
      await admin.end();
      const c = new pg.Client({ connectionString: base });
      await c.connect();
      for (const d of dedicated) await c.query(`DROP DATABASE IF EXISTS ${c.escapeIdentifier(d)} WITH (FORCE)`);
      await c.query(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`);
      await c.end();
    },
  };
}

export async function insertTenant(
  pool: pg.Pool,
  t: { tenantId: string; name?: string; retentionDays?: number | null; maxEquipment?: number; status?: string },
): Promise<void> {
  await pool.query(
    `INSERT INTO tenants (tenant_id, tenant_name, deployment_type, retention_policy_days, max_equipment, status)
     VALUES ($1, $2, 'multi-tenant', $3, $4, $5) ON CONFLICT (tenant_id) DO NOTHING`,
    [t.tenantId, t.name ?? `tenant ${t.tenantId.slice(0, 8)}`, t.retentionDays === undefined ? 30 : t.retentionDays, t.maxEquipment ?? 1000, t.status ?? "active"],
  );
}
