/**
 * Dedicated databases: where a tenant's data lives when its `database_mode` is `dedicated`.
 *
 * The shared database is the control plane (tenants, threshold rules, webhooks, registered
 * equipment and quota warnings, analyst mappings) and the store of every shared tenant. A
 * dedicated tenant's *store* is its own database with the same schema (the same migrations):
 * everything a batch writes in its one transaction — readings, dead letters, alarm state, alerts and
 * their outbox, the consumer and sink offsets — and the Parquet manifest live there, so a batch
 * stays one transaction in one database and exactly once holds per database.
 *
 * `tenants.database_ref` is a reference, never a secret:
 *  - `{"database": "millrace_t_<16 hex>"}` — a database on the shared database's server, reached with
 *    the caller's own connection settings (user, password, host) and this database name. The name is
 *    generated at random by provisioning (never derived from the tenant id) and validated on every
 *    use; it reaches SQL only through `escapeIdentifier` after that check.
 *  - `{"env": "MILLRACE_..."}` — an environment variable that holds the full connection URL of a
 *    database elsewhere (another server or region). The variable name is validated.
 */
import { randomBytes } from "node:crypto";
import pg from "pg";
import { migrate } from "../migrations/migrate.ts";
import { createPool, type PoolSettings } from "../sinks/timescale/pool.ts";

export type DatabaseRef = { database: string } | { env: string };

export const DEDICATED_DATABASE_NAME = /^millrace_t_[0-9a-f]{16}$/;
const ENV_NAME = /^MILLRACE_[A-Z0-9_]{1,100}$/;

export function newDedicatedDatabaseName(): string {
  return `millrace_t_${randomBytes(8).toString("hex")}`;
}

/** A tenants row's database_ref (jsonb), validated; throws with what is wrong. */
export function parseDatabaseRef(raw: unknown): DatabaseRef {
  const r = raw as Record<string, unknown> | null;
  if (r && typeof r === "object" && Object.keys(r).length === 1) {
    if (typeof r.database === "string") {
      if (!DEDICATED_DATABASE_NAME.test(r.database)) throw new Error(`database_ref.database ${JSON.stringify(r.database)} is not a millrace dedicated database name (millrace_t_ + 16 hex digits)`);
      return { database: r.database };
    }
    if (typeof r.env === "string") {
      if (!ENV_NAME.test(r.env)) throw new Error(`database_ref.env ${JSON.stringify(r.env)} is not a MILLRACE_* environment variable name`);
      return { env: r.env };
    }
  }
  throw new Error(`database_ref ${JSON.stringify(raw)} must be {"database": "millrace_t_…"} or {"env": "MILLRACE_…"}`);
}

export function describeDatabaseRef(ref: DatabaseRef): string {
  return "database" in ref ? `database ${ref.database} (on the shared server)` : `the database whose URL is in $${ref.env}`;
}

/** The connection URL of a dedicated database, given the caller's URL of the shared database. */
export function databaseUrl(ref: DatabaseRef, sharedUrl: string, env: NodeJS.ProcessEnv = process.env): string {
  if ("env" in ref) {
    const url = env[ref.env];
    if (!url) throw new Error(`the tenant's database URL is read from $${ref.env}, which is not set: export it in the worker's and the CLI's environment`);
    return url;
  }
  const u = new URL(sharedUrl);
  u.pathname = `/${ref.database}`;
  return u.toString();
}

/**
 * Pools of tenants' stores for one process: the shared pool for shared tenants, one pool per
 * dedicated database (made on first use, kept until {@link end}).
 */
export class TenantDatabases {
  private readonly pools = new Map<string, pg.Pool>();

  constructor(
    readonly shared: pg.Pool,
    private readonly settings: { sharedUrl: string; env?: NodeJS.ProcessEnv; pool: Omit<PoolSettings, "connectionString"> },
  ) {}

  /** The pool of the store `ref` names (null/undefined: the shared database). */
  poolFor(ref: DatabaseRef | null | undefined): pg.Pool {
    if (!ref) return this.shared;
    const url = databaseUrl(ref, this.settings.sharedUrl, this.settings.env);
    let p = this.pools.get(url);
    if (!p) {
      p = createPool({ ...this.settings.pool, connectionString: url });
      this.pools.set(url, p);
    }
    return p;
  }

  /** The store of a tenant, looked up in the tenants table (control plane). */
  async poolOfTenant(tenantId: string): Promise<pg.Pool> {
    return this.poolFor(await tenantDatabaseRef(this.shared, tenantId));
  }

  async end(): Promise<void> {
    await Promise.all([...this.pools.values()].map((p) => p.end().catch(() => {})));
    this.pools.clear();
  }
}

export async function tenantDatabaseRef(control: pg.Pool | pg.PoolClient, tenantId: string): Promise<DatabaseRef | null> {
  const res = await control.query<{ database_mode: string; database_ref: unknown }>("SELECT database_mode, database_ref FROM tenants WHERE tenant_id = $1", [tenantId]);
  const r = res.rows[0];
  return r && r.database_mode === "dedicated" ? parseDatabaseRef(r.database_ref) : null;
}

const TENANT_COPY_COLUMNS = [
  "tenant_id",
  "tenant_name",
  "deployment_type",
  "data_region",
  "retention_policy_days",
  "max_equipment",
  "created_at",
  "subscription_tier",
  "compliance_requirements",
  "status",
  "storage_mode",
  "storage_bucket",
  "storage_ref",
  "kms_key_id",
  "updated_at",
] as const;

/**
 * Create (if missing) and migrate a tenant's dedicated database, and give it a copy of the tenant's
 * own row (its tables reference tenants; the shared row stays the authority — the copy says
 * `database_mode = 'shared'` because, inside that database, the tenant is at home). CONNECT is
 * taken from PUBLIC: only the pipeline's roles and the tenant's analyst roles may connect.
 * Idempotent: a rerun after a partial failure completes it.
 */
export async function ensureDedicatedDatabase(
  control: pg.Pool,
  sharedAdminUrl: string,
  tenantId: string,
  ref: DatabaseRef,
  log: (line: string) => void = () => {},
): Promise<{ created: boolean }> {
  let created = false;
  if ("database" in ref) {
    const root = new pg.Client({ connectionString: sharedAdminUrl, application_name: "millrace-provision" });
    await root.connect();
    try {
      const exists = await root.query("SELECT 1 FROM pg_database WHERE datname = $1", [ref.database]);
      if (exists.rowCount === 0) {
        try {
          // The name matched DEDICATED_DATABASE_NAME (parseDatabaseRef) and is quoted as an identifier.
          await root.query(`CREATE DATABASE ${root.escapeIdentifier(ref.database)}`);
          created = true;
          log(`created database ${ref.database}`);
        } catch (err) {
          if ((err as { code?: string }).code !== "42P04") throw err; // duplicate_database: a concurrent create won
        }
      }
    } finally {
      await root.end();
    }
  }
  const url = databaseUrl(ref, sharedAdminUrl);
  const applied = await migrate(url);
  if (applied.applied.length > 0) log(`migrated ${describeDatabaseRef(ref)} (${applied.applied.length} migrations)`);
  const row = await control.query(`SELECT ${TENANT_COPY_COLUMNS.join(", ")} FROM tenants WHERE tenant_id = $1`, [tenantId]);
  if (row.rowCount === 0) throw new Error(`tenant ${tenantId} has no row in the shared database`);
  const own = new pg.Client({ connectionString: url, application_name: "millrace-provision" });
  await own.connect();
  try {
    const r = row.rows[0] as Record<string, unknown>;
    const cols = TENANT_COPY_COLUMNS;
    await own.query(
      `INSERT INTO tenants (${cols.join(", ")}) VALUES (${cols.map((_, i) => `$${i + 1}`).join(", ")})
       ON CONFLICT (tenant_id) DO UPDATE SET ${cols.filter((c) => c !== "tenant_id").map((c) => `${c} = EXCLUDED.${c}`).join(", ")}`,
      cols.map((c) => r[c]), // jsonb values are sent as JSON by pg
    );
    const db = (await own.query<{ d: string }>("SELECT current_database() AS d")).rows[0]!.d;
    const q = own.escapeIdentifier(db);
    await own.query(`REVOKE CONNECT, TEMPORARY ON DATABASE ${q} FROM PUBLIC`);
    await own.query(`GRANT CONNECT, TEMPORARY ON DATABASE ${q} TO millrace_owner, millrace_writer`);
  } finally {
    await own.end();
  }
  return { created };
}

/**
 * Run `fn` on the pool of the tenant's store: the control pool itself for a shared tenant, a
 * short-lived admin pool of its dedicated database otherwise (`adminUrl`: the shared database's
 * admin URL, whose credentials and server the dedicated database shares — or the URL in the
 * reference's environment variable).
 */
export async function withTenantStore<T>(control: pg.Pool, adminUrl: string | undefined, tenantId: string, fn: (store: pg.Pool, ref: DatabaseRef | null) => Promise<T>): Promise<T> {
  const ref = await tenantDatabaseRef(control, tenantId);
  if (!ref) return await fn(control, null);
  if (!adminUrl && "database" in ref) throw new Error(`tenant ${tenantId} has a dedicated database (${ref.database}); reaching it needs MILLRACE_PG_ADMIN_URL`);
  const pool = new pg.Pool({ connectionString: databaseUrl(ref, adminUrl ?? ""), max: 2, application_name: "millrace-admin" });
  pool.on("error", () => {});
  try {
    return await fn(pool, ref);
  } finally {
    await pool.end().catch(() => {});
  }
}

/**
 * Run `fn` on every dedicated database the shared database's tenants table names, once per
 * database (admin URL: the shared one's credentials and server, or the URL in the reference's
 * environment variable). A reference that cannot be resolved (a URL variable unset) is reported in
 * the result and logged, not fatal.
 */
export async function eachDedicatedDatabase<T>(
  sharedAdminUrl: string,
  fn: (url: string, ref: DatabaseRef) => Promise<T>,
  log: (line: string) => void = () => {},
): Promise<Array<{ database: string; result?: T; problem?: string }>> {
  const control = new pg.Pool({ connectionString: sharedAdminUrl, max: 1, application_name: "millrace-migrate" });
  try {
    const res = await control.query<{ tenant_id: string; database_ref: unknown }>("SELECT tenant_id, database_ref FROM tenants WHERE database_mode = 'dedicated' ORDER BY tenant_id");
    const seen = new Set<string>();
    const out: Array<{ database: string; result?: T; problem?: string }> = [];
    for (const r of res.rows) {
      let ref: DatabaseRef;
      let url: string;
      try {
        ref = parseDatabaseRef(r.database_ref);
        url = databaseUrl(ref, sharedAdminUrl);
      } catch (err) {
        out.push({ database: `tenant ${r.tenant_id}`, problem: (err as Error).message });
        log(`tenant ${r.tenant_id}: ${(err as Error).message}`);
        continue;
      }
      if (seen.has(url)) continue;
      seen.add(url);
      out.push({ database: describeDatabaseRef(ref), result: await fn(url, ref) });
    }
    return out;
  } finally {
    await control.end();
  }
}

/**
 * Apply the migrations to every dedicated database the shared database's tenants table names (a
 * new release's migrations reach tenants' own databases too; each run ends with the partition
 * maintenance step). Returns what was done per database; a reference whose URL variable is unset
 * is reported, not fatal.
 */
export async function migrateDedicatedDatabases(sharedAdminUrl: string, log: (line: string) => void = () => {}): Promise<Array<{ database: string; applied: number; problem?: string }>> {
  const done = await eachDedicatedDatabase(
    sharedAdminUrl,
    async (url, ref) => {
      const m = await migrate(url, { log });
      const parts = m.partitionsCreated.length > 0 ? `; ${m.partitionsCreated.length} time partitions created` : "";
      log(`migrate: ${describeDatabaseRef(ref)}: ${m.applied.length} applied, ${m.alreadyApplied} already applied${parts}`);
      return m.applied.length;
    },
    (line) => log(`migrate: ${line}`),
  );
  return done.map((d) => (d.problem !== undefined ? { database: d.database, applied: 0, problem: d.problem } : { database: d.database, applied: d.result ?? 0 }));
}
