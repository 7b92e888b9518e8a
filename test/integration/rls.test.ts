/**
 * Row-level security: an analyst role for one tenant sees only its tenant's rows through every
 * path (parent table, each partition directly, the view), whatever app.current_tenant_id it sets;
 * the writer with no tenant setting sees nothing and cannot write; a writer can only write rows of
 * the tenant it set; the sink's COPY role (millrace_loader) only rows of its tenant context.
 */
import { randomUUID, randomBytes } from "node:crypto";
import { Readable } from "node:stream";
import { pipeline } from "node:stream/promises";
import pg from "pg";
import { from as copyFrom } from "pg-copy-streams";
import { LOADER_ROLE } from "../../sinks/timescale/writer.ts";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createTestDatabase, insertTenant, withDatabase, type TestDatabase } from "../helpers/db.ts";

describe("row-level security", () => {
  let db: TestDatabase;
  const tenantA = randomUUID();
  const tenantB = randomUUID();
  const suffix = randomBytes(3).toString("hex");
  const roleA = `analyst_a_${suffix}`;
  const roleB = `analyst_b_${suffix}`;
  const password = randomBytes(12).toString("hex");
  let partitions: string[] = [];

  const asAnalyst = async (role: string, fn: (c: pg.Client) => Promise<void>) => {
    const u = new URL(db.adminUrl);
    u.username = role;
    u.password = password;
    const c = new pg.Client({ connectionString: u.toString() });
    await c.connect();
    try {
      await fn(c);
    } finally {
      await c.end();
    }
  };

  beforeAll(async () => {
    db = await createTestDatabase();
    await insertTenant(db.admin, { tenantId: tenantA });
    await insertTenant(db.admin, { tenantId: tenantB });
    for (const [role, tenant] of [
      [roleA, tenantA],
      [roleB, tenantB],
    ] as const) {
      await db.admin.query(`CREATE ROLE ${role} LOGIN PASSWORD '${password}'`);
      await db.admin.query(`GRANT CONNECT ON DATABASE ${db.name} TO ${role}`);
      await db.admin.query("SELECT millrace.grant_analyst($1, $2)", [role, tenant]);
    }
    // Rows for both tenants on two different days (two partitions).
    await db.admin.query("SELECT millrace.ensure_sensor_partitions('2024-05-01T00:00:00Z', '2024-05-02T00:00:00Z')");
    await db.admin.query(
      `INSERT INTO sensor_data_raw (time, tenant_id, equipment_id, facility_id, temperature)
       SELECT t, tn, 'eq-' || g, 'fac-1', g FROM generate_series(1, 5) g,
         (VALUES ('2024-05-01T10:00:00Z'::timestamptz), ('2024-05-02T10:00:00Z'::timestamptz)) AS ts(t),
         (VALUES ($1::uuid), ($2::uuid)) AS tns(tn)`,
      [tenantA, tenantB],
    );
    partitions = ["sensor_data_raw_p20240501", "sensor_data_raw_p20240502"];
  });
  afterAll(async () => {
    if (db) {
      await db.drop();
      const c = new pg.Client({ connectionString: withDatabase(db.adminUrl, "postgres") });
      await c.connect();
      await c.query(`DROP ROLE IF EXISTS ${roleA}`);
      await c.query(`DROP ROLE IF EXISTS ${roleB}`);
      await c.end();
    }
  });

  it("an analyst sees only its tenant through the parent, each partition and the view — even after setting another tenant", async () => {
    for (const [role, own] of [
      [roleA, tenantA],
      [roleB, tenantB],
    ] as const) {
      await asAnalyst(role, async (c) => {
        const other = own === tenantA ? tenantB : tenantA;
        for (const setting of [null, other, "not-a-uuid", ""]) {
          if (setting !== null) await c.query("SELECT set_config('app.current_tenant_id', $1, false)", [setting]);
          const parent = await c.query("SELECT DISTINCT tenant_id FROM sensor_data_raw");
          expect(parent.rows.map((r) => r.tenant_id)).toEqual([own]);
          const count = await c.query("SELECT count(*)::int AS n FROM sensor_data_raw");
          expect(count.rows[0].n).toBe(10);
          for (const p of partitions) {
            const direct = await c.query(`SELECT DISTINCT tenant_id FROM ${p}`);
            expect(direct.rows.map((r) => r.tenant_id)).toEqual([own]);
          }
          const view = await c.query("SELECT DISTINCT tenant_id FROM sensor_data_hourly");
          expect(view.rows.map((r) => r.tenant_id)).toEqual([own]);
        }
        // Analysts cannot write.
        await expect(
          c.query("INSERT INTO sensor_data_raw (time, tenant_id, equipment_id, facility_id) VALUES (now(), $1, 'x', 'y')", [own]),
        ).rejects.toMatchObject({ code: "42501" });
      });
    }
  });

  it("a writer without a tenant setting sees no rows and gets no error; with a setting, only that tenant", async () => {
    const c = await db.writer.connect();
    try {
      const none = await c.query("SELECT count(*)::int AS n FROM sensor_data_raw");
      expect(none.rows[0].n).toBe(0);
      // The writer has no business reading partitions directly (least privilege): refused outright.
      await expect(c.query(`SELECT count(*)::int AS n FROM ${partitions[0]}`)).rejects.toMatchObject({ code: "42501" });
      await c.query("BEGIN");
      await c.query("SELECT set_config('app.current_tenant_id', $1, true)", [tenantA]);
      const a = await c.query("SELECT DISTINCT tenant_id FROM sensor_data_raw");
      expect(a.rows.map((r) => r.tenant_id)).toEqual([tenantA]);
      await c.query("COMMIT");
      // The setting was transaction-local: gone again.
      const after = await c.query("SELECT count(*)::int AS n FROM sensor_data_raw");
      expect(after.rows[0].n).toBe(0);
    } finally {
      c.release();
    }
  });

  it("a writer cannot store a row under another tenant than the one it set", async () => {
    const c = await db.writer.connect();
    try {
      await c.query("BEGIN");
      await c.query("SELECT set_config('app.current_tenant_id', $1, true)", [tenantA]);
      await expect(
        c.query("INSERT INTO sensor_data_raw (time, tenant_id, equipment_id, facility_id) VALUES ('2024-05-01T11:00:00Z', $1, 'x', 'y')", [tenantB]),
      ).rejects.toMatchObject({ code: "42501" });
      await c.query("ROLLBACK");
      // And without any setting, nothing can be written at all.
      await expect(
        c.query("INSERT INTO sensor_data_raw (time, tenant_id, equipment_id, facility_id) VALUES ('2024-05-01T11:00:00Z', $1, 'x', 'y')", [tenantA]),
      ).rejects.toMatchObject({ code: "42501" });
    } finally {
      c.release();
    }
  });

  it("PostgreSQL refuses COPY into the RLS table for the writer — which is why the sink COPYs as millrace_loader", async () => {
    const c = await db.writer.connect();
    try {
      await expect(c.query("COPY sensor_data_raw FROM STDIN")).rejects.toThrow(/row-level security/);
    } finally {
      c.release(true);
    }
  });

  it("millrace_loader COPYs only rows of the transaction's tenant context, and can do nothing else", async () => {
    const copyRow = async (c: pg.PoolClient, tenant: string, equipment: string) => {
      const line = `2024-05-01 12:00:00+00\t${tenant}\t${equipment}\tfac-1\t1.5\t\\N\t\\N\n`;
      await pipeline(Readable.from([Buffer.from(line)]), c.query(copyFrom("COPY sensor_data_raw (time, tenant_id, equipment_id, facility_id, temperature, vibration, pressure) FROM STDIN")));
    };
    const asLoader = async (tenant: string | null, fn: (c: pg.PoolClient) => Promise<void>) => {
      const c = await db.writer.connect();
      try {
        await c.query(`BEGIN; SET LOCAL ROLE ${LOADER_ROLE}`);
        if (tenant !== null) await c.query("SELECT set_config('app.current_tenant_id', $1, true)", [tenant]);
        await fn(c);
        await c.query("COMMIT");
      } catch (err) {
        await c.query("ROLLBACK");
        throw err;
      } finally {
        c.release();
      }
    };
    const count = async (equipment: string) =>
      (await db.admin.query("SELECT count(*)::int AS n FROM sensor_data_raw WHERE equipment_id = $1", [equipment])).rows[0].n as number;

    // Its own tenant: stored.
    await asLoader(tenantA, (c) => copyRow(c, tenantA, "loader-ok"));
    expect(await count("loader-ok")).toBe(1);
    // Another tenant's row under A's context: the CHECK refuses it (23514), nothing stored.
    await expect(asLoader(tenantA, (c) => copyRow(c, tenantB, "loader-other"))).rejects.toMatchObject({ code: "23514" });
    // No tenant context, or a malformed one: an error, never a pass.
    await expect(asLoader(null, (c) => copyRow(c, tenantA, "loader-none"))).rejects.toMatchObject({ message: expect.stringMatching(/app\.current_tenant_id|invalid input syntax for type uuid/) });
    await expect(asLoader("not-a-uuid", (c) => copyRow(c, tenantA, "loader-bad"))).rejects.toMatchObject({ code: "22P02" });
    expect(await count("loader-other")).toBe(0);
    expect(await count("loader-none")).toBe(0);
    expect(await count("loader-bad")).toBe(0);
    // It cannot read a row (BYPASSRLS does not give it SELECT), nor write the pipeline's tables.
    await expect(asLoader(tenantA, async (c) => void (await c.query("SELECT count(*) FROM sensor_data_raw")))).rejects.toMatchObject({ code: "42501" });
    await expect(
      asLoader(tenantA, async (c) => void (await c.query("INSERT INTO millrace.consumer_offsets (consumer_group, topic, partition, next_offset) VALUES ('g', 't', 0, 0)"))),
    ).rejects.toMatchObject({ code: "42501" });
    // Nor can anyone but the writer become it: an analyst cannot SET ROLE to the loader.
    await asAnalyst(roleA, async (c) => {
      await expect(c.query(`SET ROLE ${LOADER_ROLE}`)).rejects.toMatchObject({ code: "42501" });
    });
    // Other roles are not held by the check (migrations, moves, restores): the owner inserts any tenant.
    await db.admin.query("INSERT INTO sensor_data_raw (time, tenant_id, equipment_id, facility_id) VALUES ('2024-05-01T12:00:00Z', $1, 'owner-any', 'fac-1')", [tenantB]);
    expect(await count("owner-any")).toBe(1);
  });
});
