/**
 * Alarm state and alert events in PostgreSQL: persistAlarmChanges inside a batch-like transaction
 * (tenant context set, as the sink does), a replay of the same changes is a no-op, a restart
 * (new evaluator, loadAlarmState) continues exactly where the committed state was, row-level
 * security holds, rule overrides come from threshold_rules.
 */
import { randomUUID } from "node:crypto";
import type pg from "pg";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { loadAlarmState, persistAlarmChanges } from "../../pipelines/processors/alarm-store.ts";
import { pgAlarmStateSource, ThresholdEvaluator, type ChunkAlarmChanges } from "../../pipelines/processors/threshold-evaluator.ts";
import type { ThresholdRule } from "../../pipelines/processors/threshold-rules.ts";
import { evaluateRule, IDLE_STATE, type RuleAlarmState, type ThresholdReading } from "../../pipelines/processors/thresholds.ts";
import type { AlertEvent } from "../../schemas/generated.ts";
import { createTestDatabase, insertTenant, type TestDatabase } from "../helpers/db.ts";

const T0 = Date.UTC(2024, 4, 1, 8, 0, 0);
const vib: ThresholdRule = {
  id: "vibration_high",
  name: "Vibration high",
  measure: "vibration",
  comparison: "above",
  levels: [
    { severity: "warning", threshold: 1 },
    { severity: "critical", threshold: 3 },
  ],
  sustainMs: 2_000,
  deadband: 0.2,
  clearSustainMs: 1_000,
};

const series = (equipmentId: string, values: number[], startSec: number): ThresholdReading[] =>
  values.map((v, i) => ({ time: T0 + (startSec + i) * 1000, equipmentId, facilityId: "plant-1", vibration: v }));

/** What the sink does around the engine's call: BEGIN, tenant context, …, COMMIT. */
async function inBatchTransaction(pool: pg.Pool, tenantId: string, fn: (c: pg.PoolClient) => Promise<void>): Promise<void> {
  const c = await pool.connect();
  try {
    await c.query("BEGIN");
    await c.query("SELECT set_config('app.current_tenant_id', $1, true)", [tenantId]);
    await fn(c);
    await c.query("COMMIT");
  } catch (err) {
    await c.query("ROLLBACK");
    throw err;
  } finally {
    c.release();
  }
}

describe("alarm state and alert events (PostgreSQL)", () => {
  let db: TestDatabase;
  const tenant = randomUUID();
  const other = randomUUID();
  const values = [0, 1.5, 1.5, 1.5, 3.5, 3.5, 3.5, 3.5, 2, 2, 0.5, 0.5, 0.5, 1.5, 1.5, 1.5];
  const all = series("press-1", values, 0);

  const evaluator = () => new ThresholdEvaluator({ source: pgAlarmStateSource(() => db.writer, db.writer), defaults: [vib], rulesRefreshMs: 60_000 });
  const asTenant = async <T extends pg.QueryResultRow>(tenantId: string, sql: string, params: unknown[] = []): Promise<T[]> => {
    let rows: T[] = [];
    await inBatchTransaction(db.writer, tenantId, async (c) => {
      rows = (await c.query<T>(sql, params)).rows;
    });
    return rows;
  };
  /** One chunk through the evaluator and a committed transaction. */
  const runChunk = async (ev: ThresholdEvaluator, rows: ThresholdReading[]): Promise<ChunkAlarmChanges> => {
    await ev.prepare("sensor-data-x/0", tenant, rows);
    const changes = ev.evaluate("sensor-data-x/0", tenant, rows);
    await inBatchTransaction(db.writer, tenant, (c) => persistAlarmChanges(c, tenant, changes));
    ev.commit(changes);
    return changes;
  };

  beforeAll(async () => {
    db = await createTestDatabase();
    await insertTenant(db.admin, { tenantId: tenant });
    await insertTenant(db.admin, { tenantId: other });
  });
  afterAll(async () => {
    await db?.drop();
  });

  it("chunks committed one by one, with a restart in the middle, give exactly the uninterrupted events", async () => {
    // The reference: the pure state machine over every reading.
    let state: RuleAlarmState = IDLE_STATE;
    const expected: AlertEvent[] = [];
    for (const r of all) {
      const step = evaluateRule(vib, state, r, tenant);
      state = step.state;
      expected.push(...step.events);
    }
    expect(expected.map((e) => e.step)).toEqual(["raised", "escalated", "de_escalated", "cleared", "raised"]);

    const got: AlertEvent[] = [];
    const first = evaluator();
    got.push(...(await runChunk(first, all.slice(0, 6))).events);
    // Restart mid-alarm (critical open, sustain timers running): a new evaluator loads the committed state.
    const second = evaluator();
    got.push(...(await runChunk(second, all.slice(6, 11))).events);
    got.push(...(await runChunk(second, all.slice(11))).events);
    expect(got).toEqual(expected);

    const stored = await asTenant<{ alert_id: string; seq: number; step: string; severity: string; equipment_id: string; value: number; event_time: Date }>(
      tenant,
      "SELECT alert_id, seq, step, severity, equipment_id, value, event_time FROM alerts ORDER BY event_time, seq",
    );
    expect(stored.map((r) => `${r.step}:${r.severity}:${r.seq}`)).toEqual(expected.map((e) => `${e.step}:${e.severity}:${e.seq}`));
    expect(stored.map((r) => r.event_time.getTime())).toEqual(expected.map((e) => e.time));
    const outbox = await db.admin.query<{ event: AlertEvent }>("SELECT event FROM millrace.alerts_outbox WHERE tenant_id = $1 ORDER BY (event->>'time')::bigint, seq", [tenant]);
    expect(outbox.rows.map((r) => r.event)).toEqual(expected);

    const open = await asTenant<{ alert_id: string; severity: string; seq: number }>(tenant, "SELECT alert_id, severity, seq FROM alarms WHERE alert_id IS NOT NULL");
    expect(open).toEqual([{ alert_id: expected[4]!.alert_id, severity: "warning", seq: 1 }]);
  });

  it("replaying a committed chunk's changes is a no-op: no event twice, the same state", async () => {
    const ev = evaluator();
    const rows = series("press-2", [0, 5, 5, 5, 0, 0], 0);
    const changes = await runChunk(ev, rows);
    expect(changes.events.map((e) => e.step)).toEqual(["raised", "cleared"]);
    const before = (await db.admin.query("SELECT * FROM alarms WHERE equipment_id = 'press-2'")).rows;
    const count = async () => (await db.admin.query<{ n: number }>("SELECT (SELECT count(*) FROM alerts)::int + (SELECT count(*) FROM millrace.alerts_outbox)::int AS n")).rows[0]!.n;
    const n = await count();
    await inBatchTransaction(db.writer, tenant, (c) => persistAlarmChanges(c, tenant, changes));
    expect(await count()).toBe(n);
    const after = (await db.admin.query("SELECT * FROM alarms WHERE equipment_id = 'press-2'")).rows;
    expect(after.map(({ updated_at: _u, ...r }) => r)).toEqual(before.map(({ updated_at: _u, ...r }) => r));
    // And a new evaluator re-evaluating the same readings (a redelivered batch) produces nothing.
    const again = evaluator();
    await again.prepare("p", tenant, rows);
    expect(again.evaluate("p", tenant, rows)).toMatchObject({ events: [], states: [], late: rows.length });
  });

  it("a batch that rolls back (fenced) leaves no state and no event behind", async () => {
    const ev = evaluator();
    const rows = series("press-3", [9, 9, 9], 0);
    await ev.prepare("p", tenant, rows);
    const changes = ev.evaluate("p", tenant, rows);
    expect(changes.events).toHaveLength(1);
    await expect(
      inBatchTransaction(db.writer, tenant, async (c) => {
        await persistAlarmChanges(c, tenant, changes);
        throw new Error("fenced");
      }),
    ).rejects.toThrow("fenced");
    ev.forget("p");
    expect((await loadAlarmState(db.writer, tenant, ["press-3"])).get("press-3")).toEqual(new Map());
    expect((await db.admin.query("SELECT count(*)::int AS n FROM alerts WHERE equipment_id = 'press-3'")).rows[0].n).toBe(0);
  });

  it("row-level security: another tenant sees none of it and cannot write under this tenant", async () => {
    for (const table of ["alarms", "alerts"]) {
      expect(await asTenant(other, `SELECT * FROM ${table}`)).toEqual([]);
      expect((await asTenant<{ n: number }>(tenant, `SELECT count(*)::int AS n FROM ${table}`))[0]!.n).toBeGreaterThan(0);
    }
    expect((await loadAlarmState(db.writer, other, ["press-1"])).get("press-1")).toEqual(new Map());
    const ev = evaluator();
    const rows = series("press-9", [9], 0);
    await ev.prepare("p", tenant, rows);
    const changes = ev.evaluate("p", tenant, rows);
    // The sink's transaction is for `other`: the policy's WITH CHECK refuses this tenant's rows.
    await expect(inBatchTransaction(db.writer, other, (c) => persistAlarmChanges(c, tenant, changes))).rejects.toMatchObject({ code: "42501" });
  });

  it("tenant overrides from threshold_rules replace the defaults; invalid rows are ignored and reported", async () => {
    await db.admin.query(
      `INSERT INTO threshold_rules (tenant_id, rule_id, definition) VALUES
         ($1, 'vibration_high', '{"id": "vibration_high", "measure": "vibration", "comparison": "above", "levels": {"warning": 7}}'),
         ($1, 'broken', '{"id": "broken", "measure": "flow"}'),
         ($1, 'pressure_low', '{"id": "pressure_low", "measure": "pressure", "comparison": "below", "levels": {"major": 2}, "sustain": "5s"}')`,
      [other],
    );
    const ev = evaluator();
    await ev.refreshRules(other);
    expect(ev.rulesFor(other).map((r) => `${r.id}:${r.levels.map((l) => l.severity).join("/")}`)).toEqual(["vibration_high:warning", "pressure_low:major"]);
    expect(ev.rulesFor(other)[0]!.levels[0]).toEqual({ severity: "warning", threshold: 7 });
    expect(ev.rulesFor(tenant)).toEqual([vib]); // not refreshed yet: defaults
  });
});
