/**
 * The time-partition maintenance keeps running (vanilla PostgreSQL): the partition at the end of the
 * horizon (14 days ahead, migrations/004) is dropped, and each maintenance path brings it back with
 * row-level security and the tenant_isolation policy — `millrace migrate` (shared database and a
 * tenant's dedicated database), the worker's timer (as millrace_writer, next to a database that
 * fails), and `millrace partitions maintain`.
 */
import { execFile } from "node:child_process";
import { randomUUID } from "node:crypto";
import { join } from "node:path";
import { promisify } from "node:util";
import pg from "pg";
import client from "prom-client";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { silentLogger } from "../../lib/log.ts";
import { PartitionMaintenance, PartitionMaintenanceMetrics } from "../../pipelines/runtime/partition-maintenance.ts";
import { repoRoot } from "../../stack/context.ts";
import { databaseUrl, ensureDedicatedDatabase, newDedicatedDatabaseName, type DatabaseRef } from "../../tenants/database.ts";
import { createTestDatabase, insertTenant, withDatabase, type TestDatabase } from "../helpers/db.ts";
import { waitUntil } from "../helpers/wait.ts";

const run = promisify(execFile);

/** The last day the maintenance covers: now + 14 days (UTC), by the database's clock. */
async function horizonEnd(pool: pg.Pool): Promise<string> {
  const { rows } = await pool.query<{ name: string }>(
    "SELECT 'sensor_data_raw_p' || to_char(((now() + interval '14 days') AT TIME ZONE 'UTC')::date, 'YYYYMMDD') AS name",
  );
  return rows[0]!.name;
}

async function exists(pool: pg.Pool, name: string): Promise<boolean> {
  const { rows } = await pool.query<{ ok: boolean }>("SELECT to_regclass(format('public.%I', $1::text)) IS NOT NULL AS ok", [name]);
  return rows[0]!.ok;
}

async function drop(pool: pg.Pool, name: string): Promise<void> {
  expect(name).toMatch(/^sensor_data_raw_p\d{8}$/);
  await pool.query(`DROP TABLE public.${name}`);
  expect(await exists(pool, name), `${name} dropped`).toBe(false);
}

/** The partition is back as a partition of sensor_data_raw for its day, with RLS, the parent's policy and the analysts' grant. */
async function expectProtectedPartition(pool: pg.Pool, name: string): Promise<void> {
  const day = `${name.slice(-8, -4)}-${name.slice(-4, -2)}-${name.slice(-2)}`;
  const { rows } = await pool.query<{ parent: string; bound: string; rls: boolean; forced: boolean; analyst: boolean }>(
    `SELECT i.inhparent::regclass::text AS parent, pg_get_expr(c.relpartbound, c.oid) AS bound, c.relrowsecurity AS rls,
            has_table_privilege('millrace_analyst', c.oid, 'SELECT') AS analyst, c.relforcerowsecurity AS forced
     FROM pg_class c JOIN pg_inherits i ON i.inhrelid = c.oid WHERE c.oid = format('public.%I', $1::text)::regclass`,
    [name],
  );
  expect(rows).toHaveLength(1);
  expect(rows[0]!.parent).toBe("sensor_data_raw");
  expect(rows[0]!.bound).toBe(`FOR VALUES FROM ('${day} 00:00:00+00') TO ('${nextDay(day)} 00:00:00+00')`);
  expect(rows[0]!.rls).toBe(true);
  expect(rows[0]!.analyst).toBe(true);
  const policies = await pool.query<{ tablename: string; policyname: string; qual: string; with_check: string }>(
    "SELECT tablename, policyname, qual, with_check FROM pg_policies WHERE schemaname = 'public' AND tablename IN ('sensor_data_raw', $1) ORDER BY tablename = 'sensor_data_raw' DESC",
    [name],
  );
  expect(policies.rows.map((p) => `${p.tablename}:${p.policyname}`)).toEqual(["sensor_data_raw:tenant_isolation", `${name}:tenant_isolation`]);
  const [parent, part] = policies.rows as [(typeof policies.rows)[0], (typeof policies.rows)[0]];
  expect(part.qual).toBe(parent.qual);
  expect(part.with_check).toBe(parent.with_check);
  expect(part.qual).toMatch(/visible_tenant_id/);
}

function nextDay(day: string): string {
  return new Date(Date.parse(`${day}T00:00:00Z`) + 86_400_000).toISOString().slice(0, 10);
}

describe("time-partition maintenance", () => {
  let db: TestDatabase;
  let dedicated: pg.Pool;
  const tenant = randomUUID();

  const cli = async (...args: string[]) => {
    const env = { ...process.env, MILLRACE_PG_ADMIN_URL: db.adminUrl, MILLRACE_PG_URL: "", MILLRACE_PG_ROLE: "" };
    try {
      const r = await run(join(repoRoot, "millrace"), args, { env, cwd: repoRoot, timeout: 120_000 });
      return { code: 0, stdout: r.stdout, stderr: r.stderr };
    } catch (err) {
      const e = err as { code: number; stdout: string; stderr: string };
      return { code: e.code, stdout: e.stdout, stderr: e.stderr };
    }
  };

  beforeAll(async () => {
    db = await createTestDatabase();
    // A single-tenant tenant with its own database on the same server (as provisioning makes it).
    const ref: DatabaseRef = { database: newDedicatedDatabaseName() };
    await insertTenant(db.admin, { tenantId: tenant });
    await db.admin.query("UPDATE tenants SET deployment_type = 'single-tenant', database_mode = 'dedicated', database_ref = $2 WHERE tenant_id = $1", [tenant, JSON.stringify(ref)]);
    await ensureDedicatedDatabase(db.admin, db.adminUrl, tenant, ref);
    dedicated = new pg.Pool({ connectionString: databaseUrl(ref, db.adminUrl), max: 2 });
  });
  afterAll(async () => {
    await dedicated?.end();
    await db?.drop();
  });

  it("`millrace migrate` recreates the dropped end-of-horizon partition in the shared and the dedicated database", async () => {
    const name = await horizonEnd(db.admin);
    await drop(db.admin, name);
    await drop(dedicated, name);
    const res = await cli("migrate");
    expect(res.code, res.stderr).toBe(0);
    expect(res.stderr).toContain(`migrate: created 1 time partitions (${name})`);
    expect(res.stderr).toMatch(/: 0 applied, \d+ already applied; 1 time partitions created/);
    await expectProtectedPartition(db.admin, name);
    await expectProtectedPartition(dedicated, name);
  });

  it("the worker's timer recreates it as millrace_writer, and a failing database next to it neither stops it nor the timer", async () => {
    const name = await horizonEnd(db.admin);
    await drop(db.admin, name);
    const broken = new pg.Pool({ connectionString: withDatabase(db.adminUrl, "millrace_no_such_database"), connectionTimeoutMillis: 5_000 });
    broken.on("error", () => {});
    const registry = new client.Registry();
    const m = new PartitionMaintenance({
      everyMs: 300,
      targets: () => [
        { name: "broken", pool: broken },
        { name: "shared", pool: db.writer },
      ],
      log: silentLogger,
      metrics: new PartitionMaintenanceMetrics(registry),
    });
    const value = async (metric: string, outcome?: string) =>
      (await registry.getMetricsAsJSON()).find((x) => x.name === metric)?.values.find((v) => outcome === undefined || v.labels.outcome === outcome)?.value ?? 0;
    try {
      m.start();
      await waitUntil(`${name} recreated by the timer`, () => exists(db.admin, name), 30_000);
      // The timer goes on after a failing run: a second round of both targets.
      await waitUntil("a second maintenance round", async () => (await value("millrace_partition_maintenance_runs_total", "failed")) >= 2, 30_000);
    } finally {
      await m.stop();
      await broken.end();
    }
    expect(await value("millrace_partitions_created_total")).toBe(1);
    expect(await value("millrace_partition_maintenance_runs_total", "ok")).toBeGreaterThanOrEqual(2);
    await expectProtectedPartition(db.admin, name);
    // The writer role could not have created it itself: the partitions are owned by millrace_owner.
    const owner = await db.admin.query<{ owner: string }>("SELECT pg_get_userbyid(relowner) AS owner FROM pg_class WHERE oid = format('public.%I', $1::text)::regclass", [name]);
    expect(owner.rows[0]!.owner).toBe("millrace_owner");
  });

  it("`millrace partitions maintain` recreates it on both databases and reports what it created", async () => {
    const name = await horizonEnd(db.admin);
    await drop(db.admin, name);
    await drop(dedicated, name);
    const res = await cli("partitions", "maintain");
    expect(res.code, res.stderr).toBe(0);
    expect(res.stderr).toContain(`partitions: shared database: created 1 (${name})`);
    expect(res.stderr).toMatch(new RegExp(`partitions: database millrace_t_[0-9a-f]{16} \\(on the shared server\\): created 1 \\(${name}\\)`));
    expect(res.stderr).toContain("partitions: 1 dedicated databases maintained");
    await expectProtectedPartition(db.admin, name);
    await expectProtectedPartition(dedicated, name);
    const again = await cli("partitions", "maintain", "--shared-only");
    expect(again.code, again.stderr).toBe(0);
    expect(again.stderr).toContain("partitions: shared database: nothing to create");
  });
});
