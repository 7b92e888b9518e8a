import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { loadMigrations, migrate } from "../../migrations/migrate.ts";
import { createTestDatabase, type TestDatabase } from "../helpers/db.ts";

describe("migrations", () => {
  let db: TestDatabase;
  beforeAll(async () => {
    db = await createTestDatabase({ migrate: false });
  });
  afterAll(async () => {
    await db?.drop();
  });

  it("apply once, then a second and two concurrent runs apply nothing", async () => {
    const all = loadMigrations();
    // Two runs racing on a fresh database: the advisory lock serialises them.
    const [a, b] = await Promise.all([migrate(db.adminUrl), migrate(db.adminUrl)]);
    expect(a.applied.length + b.applied.length).toBe(all.length);
    const again = await migrate(db.adminUrl);
    expect(again.applied).toHaveLength(0);
    expect(again.alreadyApplied).toBe(all.length);
    const { rows } = await db.admin.query("SELECT version FROM millrace_schema_migrations ORDER BY version");
    expect(rows.map((r) => r.version)).toEqual(all.map((m) => m.version));
  });

  it("refuses an applied migration whose file changed", async () => {
    const changed = loadMigrations().map((m, i) => (i === 0 ? { ...m, checksum: "0".repeat(64) } : m));
    await expect(migrate(db.adminUrl, { migrations: changed })).rejects.toThrow(/changed after it was applied/);
  });

  it("vanilla PostgreSQL: sensor_data_raw is range-partitioned by day, partitions ahead of time, no DEFAULT partition", async () => {
    const kind = await db.admin.query("SELECT relkind FROM pg_class WHERE oid = 'sensor_data_raw'::regclass");
    expect(kind.rows[0].relkind).toBe("p");
    const parts = await db.admin.query<{ name: string; bound: string }>(
      `SELECT c.relname AS name, pg_get_expr(c.relpartbound, c.oid) AS bound
       FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid WHERE i.inhparent = 'sensor_data_raw'::regclass ORDER BY 1`,
    );
    expect(parts.rows.some((p) => p.bound === "DEFAULT")).toBe(false);
    const today = new Date().toISOString().slice(0, 10).replaceAll("-", "");
    const names = parts.rows.map((p) => p.name);
    expect(names).toContain(`sensor_data_raw_p${today}`);
    const inTwelveDays = new Date(Date.now() + 12 * 86_400_000).toISOString().slice(0, 10).replaceAll("-", "");
    expect(names).toContain(`sensor_data_raw_p${inTwelveDays}`);
    // Every partition has row-level security and the tenant_isolation policy.
    const rls = await db.admin.query(
      `SELECT c.relname, c.relrowsecurity, (SELECT count(*) FROM pg_policy p WHERE p.polrelid = c.oid AND p.polname = 'tenant_isolation') AS policies
       FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid WHERE i.inhparent = 'sensor_data_raw'::regclass`,
    );
    for (const r of rls.rows) {
      expect(r.relrowsecurity).toBe(true);
      expect(Number(r.policies)).toBe(1);
    }
  });

  it("the maintenance step creates missing partitions and is idempotent", async () => {
    const created = await db.admin.query("SELECT millrace.ensure_sensor_partitions('2020-03-09T00:00:00Z', '2020-03-11T12:00:00Z') AS n");
    expect(created.rows[0].n).toBe(3);
    const again = await db.admin.query("SELECT millrace.ensure_sensor_partitions('2020-03-09T00:00:00Z', '2020-03-11T12:00:00Z') AS n");
    expect(again.rows[0].n).toBe(0);
    const maint = await db.admin.query("SELECT millrace.maintain_sensor_partitions() AS n");
    expect(maint.rows[0].n).toBe(0);
  });
});
