/**
 * The equipment quota against PostgreSQL: three gates with their own pools act as three replicas.
 * N+5 new equipment arriving at all of them at once → exactly N admitted and the same 5 rejected
 * everywhere, the warning raised once; the same answers after every gate and pool is recreated
 * (a restart); limit changes take effect without a restart.
 */
import { randomUUID } from "node:crypto";
import type pg from "pg";
import client from "prom-client";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { QuotaGate, QuotaMetrics } from "../../pipelines/processors/quota.ts";
import { PgQuotaStore } from "../../pipelines/processors/quota-store.ts";
import { alertUuid } from "../../pipelines/processors/thresholds.ts";
import { createPool } from "../../sinks/timescale/pool.ts";
import { createTestDatabase, insertTenant, type TestDatabase } from "../helpers/db.ts";

const N = 20;

/** A deterministic shuffle (so a failure can be reproduced). */
function shuffled<T>(xs: readonly T[], seed: number): T[] {
  const out = [...xs];
  let s = seed;
  for (let i = out.length - 1; i > 0; i--) {
    s = (s * 1103515245 + 12345) % 2 ** 31;
    const j = s % (i + 1);
    [out[i], out[j]] = [out[j]!, out[i]!];
  }
  return out;
}

describe("equipment quota (PostgreSQL admission)", () => {
  let db: TestDatabase;
  const pools: pg.Pool[] = [];
  const tenant = randomUUID();
  const equipment = Array.from({ length: N + 5 }, (_, i) => `press-${String(i).padStart(2, "0")}`);

  const replica = (opts: { limitOf?: () => number; rejectionTtlMs?: number; metrics?: QuotaMetrics } = {}) => {
    const pool = createPool({ connectionString: db.adminUrl, role: "millrace_writer", max: 2 });
    pools.push(pool);
    return new QuotaGate({ store: new PgQuotaStore(pool), ...opts });
  };
  /** millrace_quota_warnings_total{tenant} as the registry exposes it (0 when never incremented). */
  const warningsCounted = async (registry: client.Registry) => {
    const m = (await registry.getSingleMetric("millrace_quota_warnings_total")?.get())?.values ?? [];
    return m.filter((v) => v.labels.tenant === tenant).reduce((a, v) => a + v.value, 0);
  };
  const registered = async () =>
    (await db.admin.query<{ equipment_id: string }>("SELECT equipment_id FROM tenant_equipment WHERE tenant_id = $1 ORDER BY 1", [tenant])).rows.map((r) => r.equipment_id);
  const decisions = (gate: QuotaGate) => equipment.filter((e) => gate.check(tenant, e).ok);

  beforeAll(async () => {
    db = await createTestDatabase();
    await insertTenant(db.admin, { tenantId: tenant, maxEquipment: N });
  });
  afterAll(async () => {
    await Promise.all(pools.map((p) => p.end()));
    await db?.drop();
  });

  it("three replicas, N+5 new equipment at once: exactly N admitted, the same 5 rejected by every replica", async () => {
    // The racing gates share one metrics object: the warning counter is the sum over the replicas.
    const registry = new client.Registry();
    const metrics = new QuotaMetrics(registry);
    const gates = [replica({ metrics }), replica({ metrics }), replica({ metrics })];
    // Each replica sees every equipment, in its own order, in chunks of 4: many admissions race.
    await Promise.all(
      gates.map(async (gate, g) => {
        const order = shuffled(equipment, g + 1);
        for (let i = 0; i < order.length; i += 4) await gate.prepare(tenant, order.slice(i, i + 4).map((equipmentId) => ({ equipmentId })));
      }),
    );
    const inDb = await registered();
    expect(inDb).toHaveLength(N);
    for (const gate of gates) {
      expect(decisions(gate)).toEqual(equipment.filter((e) => inDb.includes(e)));
      expect(equipment.filter((e) => !gate.check(tenant, e).ok)).toHaveLength(5);
      expect(gate.check(tenant, equipment.find((e) => !inDb.includes(e))!)).toMatchObject({ ok: false, reason: "quota_exceeded" });
    }
    // The 80 % warning: once, whichever replica crossed it.
    const warnings = await db.admin.query("SELECT registered, max_equipment FROM millrace.quota_warnings WHERE tenant_id = $1", [tenant]);
    expect(warnings.rows).toEqual([{ registered: expect.any(Number), max_equipment: N }]);
    expect(warnings.rows[0].registered).toBeGreaterThanOrEqual(0.8 * N);
    expect(await warningsCounted(registry)).toBe(1);
    const outbox = await db.admin.query("SELECT alert_id, event FROM millrace.alerts_outbox WHERE tenant_id = $1", [tenant]);
    expect(outbox.rows).toHaveLength(1);
    expect(outbox.rows[0].alert_id).toBe(alertUuid(`quota/${tenant}/${N}`));
    expect(outbox.rows[0].event).toMatchObject({ kind: "quota", step: "raised", severity: "warning", seq: 1, quota: { max_equipment: N, warn_percent: 80 } });
    const alerts = await db.admin.query("SELECT kind, step FROM alerts WHERE tenant_id = $1", [tenant]);
    expect(alerts.rows).toEqual([{ kind: "quota", step: "raised" }]);
  });

  it("after a restart (new gates, new pools) the answers are the same, and nothing more is admitted", async () => {
    const before = await registered();
    await Promise.all(pools.splice(0).map((p) => p.end()));
    const registry = new client.Registry();
    const metrics = new QuotaMetrics(registry);
    const gates = [replica({ metrics }), replica({ metrics }), replica({ metrics })];
    await Promise.all(gates.map((gate, g) => gate.prepare(tenant, shuffled(equipment, 10 + g).map((equipmentId) => ({ equipmentId })))));
    expect(await registered()).toEqual(before);
    for (const gate of gates) expect(decisions(gate)).toEqual(equipment.filter((e) => before.includes(e)));
    expect((await db.admin.query("SELECT count(*)::int AS n FROM millrace.alerts_outbox WHERE tenant_id = $1", [tenant])).rows[0].n).toBe(1);
    expect(await warningsCounted(registry)).toBe(0); // already raised for this limit: not again
  });

  it("a raised limit admits waiting equipment without a restart; a lowered one admits nothing new and keeps registered equipment flowing", async () => {
    let limit = N;
    const registry = new client.Registry();
    const gate = replica({ limitOf: () => limit, rejectionTtlMs: 60_000, metrics: new QuotaMetrics(registry) });
    const all = equipment.map((equipmentId) => ({ equipmentId }));
    await gate.prepare(tenant, all);
    expect(decisions(gate)).toHaveLength(N);

    await db.admin.query("UPDATE tenants SET max_equipment = $2 WHERE tenant_id = $1", [tenant, N + 2]);
    await gate.prepare(tenant, all);
    expect(decisions(gate)).toHaveLength(N); // the directory has not seen the new limit yet: rejections still cached
    limit = N + 2; // the tenant directory's refresh
    await gate.prepare(tenant, all);
    expect(decisions(gate)).toHaveLength(N + 2);
    // A new limit re-arms the warning: N+2 registered ≥ 80 % of N+2.
    expect((await db.admin.query("SELECT count(*)::int AS n FROM millrace.quota_warnings WHERE tenant_id = $1", [tenant])).rows[0].n).toBe(2);
    expect(await warningsCounted(registry)).toBe(1);

    await db.admin.query("UPDATE tenants SET max_equipment = $2 WHERE tenant_id = $1", [tenant, N - 3]);
    limit = N - 3;
    const fresh = replica({ limitOf: () => limit });
    await fresh.prepare(tenant, [...all, { equipmentId: "brand-new" }]);
    expect(decisions(fresh)).toHaveLength(N + 2);
    expect(fresh.check(tenant, "brand-new").ok).toBe(false);
    expect(await registered()).toHaveLength(N + 2);
  });

  it("the database refuses an admission for another tenant than the transaction's context", async () => {
    const c = await db.writer.connect();
    try {
      await c.query("BEGIN");
      await c.query("SELECT set_config('app.current_tenant_id', $1, true)", [randomUUID()]);
      await expect(c.query("SELECT * FROM millrace.admit_equipment($1, ARRAY['x'])", [tenant])).rejects.toMatchObject({ code: "42501" });
    } finally {
      await c.query("ROLLBACK");
      c.release();
    }
    // …and the writer cannot register equipment directly, bypassing the function.
    await expect(db.writer.query("INSERT INTO tenant_equipment (tenant_id, equipment_id) VALUES ($1, 'sneaky')", [tenant])).rejects.toMatchObject({ code: "42501" });
  });

  it("SQL millrace.alert_uuid and TypeScript alertUuid agree", async () => {
    for (const name of ["x", `quota/${tenant}/7`, "threshold/ä/π/1700000000000/eq:1/2"]) {
      const r = await db.admin.query<{ id: string }>("SELECT millrace.alert_uuid($1)::text AS id", [name]);
      expect(r.rows[0]!.id).toBe(alertUuid(name));
    }
  });
});
