/**
 * Alarm state and alert events in PostgreSQL (migrations/007): the threshold evaluator's I/O.
 *
 *  - {@link persistAlarmChanges} runs INSIDE the sink's batch transaction (the engine passes its
 *    client, with app.current_tenant_id already set): the changed alarm states, every alert event
 *    (alerts, PK alert_id + seq) and its outbox row commit or roll back together with the batch's
 *    rows and partition offset. A replayed batch inserts no event twice (ON CONFLICT DO NOTHING)
 *    and writes the same states again; a fenced batch writes nothing.
 *  - {@link loadAlarmState} reads the committed state of some equipment, when a partition is
 *    (re)assigned or new equipment shows up.
 *  - {@link loadRuleOverrides} reads a tenant's threshold_rules.
 * Reads set the tenant context in their own short transaction, so row-level security applies.
 */
import type pg from "pg";
import type { AlertEvent, AlertRule } from "../../schemas/generated.ts";
import { parseRuleOverride, type RuleOverride, type Severity } from "./threshold-rules.ts";
import type { RuleAlarmState } from "./thresholds.ts";

/** One (equipment, rule) whose state changed. */
export interface AlarmStateChange {
  equipmentId: string;
  ruleId: string;
  state: RuleAlarmState;
}

/** What one chunk's evaluation produced; written by {@link persistAlarmChanges}. */
export interface AlarmChanges {
  /** Final state per changed (equipment, rule). */
  states: readonly AlarmStateChange[];
  /** Every event, in evaluation order. */
  events: readonly AlertEvent[];
}

/** The jsonb `evaluator` column. */
interface EvaluatorColumn {
  since?: Partial<Record<Severity, number>>;
  release_since?: number | null;
  rule?: AlertRule | null;
}

const iso = (ms: number | null | undefined) => (ms === null || ms === undefined ? null : new Date(ms).toISOString());

const UPSERT_ALARMS = `INSERT INTO alarms AS a (tenant_id, equipment_id, rule_id, alert_id, severity, seq, raised_at, changed_at, last_time, evaluator)
SELECT $1::uuid, u.* FROM unnest($2::text[], $3::text[], $4::uuid[], $5::text[], $6::int[], $7::timestamptz[], $8::timestamptz[], $9::timestamptz[], $10::jsonb[])
  AS u(equipment_id, rule_id, alert_id, severity, seq, raised_at, changed_at, last_time, evaluator)
ON CONFLICT (tenant_id, equipment_id, rule_id) DO UPDATE SET
  alert_id = EXCLUDED.alert_id, severity = EXCLUDED.severity, seq = EXCLUDED.seq, raised_at = EXCLUDED.raised_at,
  changed_at = EXCLUDED.changed_at, last_time = EXCLUDED.last_time, evaluator = EXCLUDED.evaluator, updated_at = now()
WHERE a.last_time IS NULL OR EXCLUDED.last_time IS NULL OR a.last_time <= EXCLUDED.last_time`;

const INSERT_ALERTS = `INSERT INTO alerts (tenant_id, alert_id, seq, kind, step, severity, previous_severity, event_time, rule_id, rule_name,
  measure, comparison, threshold, equipment_id, facility_id, value, reason)
SELECT $1::uuid, u.* FROM unnest($2::uuid[], $3::int[], $4::text[], $5::text[], $6::text[], $7::text[], $8::timestamptz[], $9::text[], $10::text[],
  $11::text[], $12::text[], $13::float8[], $14::text[], $15::text[], $16::float8[], $17::text[]) AS u
ON CONFLICT (alert_id, seq) DO NOTHING`;

const INSERT_OUTBOX = `INSERT INTO millrace.alerts_outbox (tenant_id, alert_id, seq, event)
SELECT $1::uuid, u.* FROM unnest($2::uuid[], $3::int[], $4::jsonb[]) AS u
ON CONFLICT (alert_id, seq) DO NOTHING`;

/**
 * One chunk's alarm changes as data-modifying statements (at most three, none when there is
 * nothing to write): the sink runs them in its batch transaction (tenant context set to
 * `tenantId`) — as CTEs of its single batch statement in the common case.
 */
export function alarmChangeStatements(tenantId: string, changes: AlarmChanges): Array<{ text: string; values: unknown[] }> {
  for (const e of changes.events) {
    if (e.tenant_id !== tenantId) throw new Error(`persistAlarmChanges: event ${e.event_id} is of tenant ${e.tenant_id}, not ${tenantId}`);
  }
  const out: Array<{ text: string; values: unknown[] }> = [];
  const s = changes.states;
  if (s.length > 0) {
    const n = s.length;
    const eq = new Array<string>(n), rule = new Array<string>(n), alert = new Array<string | null>(n), sev = new Array<string | null>(n), seq = new Array<number | null>(n);
    const raised = new Array<string | null>(n), changed = new Array<string | null>(n), last = new Array<string | null>(n), evaluator = new Array<string>(n);
    for (let i = 0; i < n; i++) {
      const c = s[i]!;
      const a = c.state.active;
      eq[i] = c.equipmentId;
      rule[i] = c.ruleId;
      alert[i] = a?.alertId ?? null;
      sev[i] = a?.severity ?? null;
      seq[i] = a?.seq ?? null;
      raised[i] = iso(a?.raisedAt);
      changed[i] = iso(a?.changedAt);
      last[i] = iso(c.state.lastTime);
      evaluator[i] = JSON.stringify({ since: c.state.since, release_since: c.state.releaseSince, rule: a?.rule ?? null } satisfies EvaluatorColumn);
    }
    out.push({ text: UPSERT_ALARMS, values: [tenantId, eq, rule, alert, sev, seq, raised, changed, last, evaluator] });
  }
  const ev = changes.events;
  if (ev.length > 0) {
    out.push({
      text: INSERT_ALERTS,
      values: [
        tenantId,
        ev.map((e) => e.alert_id),
        ev.map((e) => e.seq),
        ev.map((e) => e.kind),
        ev.map((e) => e.step),
        ev.map((e) => e.severity),
        ev.map((e) => e.previous_severity),
        ev.map((e) => iso(e.time)),
        ev.map((e) => e.rule?.id ?? null),
        ev.map((e) => e.rule?.name ?? null),
        ev.map((e) => e.rule?.measure ?? null),
        ev.map((e) => e.rule?.comparison ?? null),
        ev.map((e) => e.rule?.threshold ?? null),
        ev.map((e) => e.reading?.equipment_id ?? null),
        ev.map((e) => e.reading?.facility_id ?? null),
        ev.map((e) => e.reading?.value ?? null),
        ev.map((e) => e.reason),
      ],
    });
    out.push({ text: INSERT_OUTBOX, values: [tenantId, ev.map((e) => e.alert_id), ev.map((e) => e.seq), ev.map((e) => JSON.stringify(e))] });
  }
  return out;
}

/**
 * Write one chunk's alarm changes with the client of the sink's open transaction (tenant context
 * set to `tenantId`). At most three statements, none when there is nothing to write.
 */
export async function persistAlarmChanges(client: pg.ClientBase, tenantId: string, changes: AlarmChanges): Promise<void> {
  for (const st of alarmChangeStatements(tenantId, changes)) await client.query(st.text, st.values);
}

/** Run `fn` in a read-only transaction with the tenant context set (row-level security applies). */
async function asTenant<T>(pool: pg.Pool, tenantId: string, fn: (c: pg.PoolClient) => Promise<T>): Promise<T> {
  const c = await pool.connect();
  let broken: Error | undefined;
  try {
    await c.query("BEGIN READ ONLY");
    await c.query("SELECT set_config('app.current_tenant_id', $1, true)", [tenantId]);
    const out = await fn(c);
    await c.query("COMMIT");
    return out;
  } catch (err) {
    await c.query("ROLLBACK").catch((e: unknown) => (broken = e as Error));
    throw err;
  } finally {
    c.release(broken);
  }
}

interface AlarmRow {
  equipment_id: string;
  rule_id: string;
  alert_id: string | null;
  severity: Severity | null;
  seq: number | null;
  raised_at: Date | null;
  changed_at: Date | null;
  last_time: Date | null;
  evaluator: EvaluatorColumn;
}

/** The committed state row → the evaluator's state. */
export function alarmStateOf(r: AlarmRow): RuleAlarmState {
  const ev = r.evaluator ?? {};
  const active =
    r.alert_id !== null && r.severity !== null && r.seq !== null && ev.rule
      ? { alertId: r.alert_id, severity: r.severity, seq: r.seq, raisedAt: r.raised_at!.getTime(), changedAt: r.changed_at!.getTime(), rule: ev.rule }
      : null;
  return { lastTime: r.last_time?.getTime() ?? null, since: ev.since ?? {}, releaseSince: ev.release_since ?? null, active };
}

/**
 * The committed alarm state of these equipment (every rule with a row), keyed equipment → rule.
 * Equipment without rows is present with an empty map (idle for every rule). One transaction.
 */
export async function loadAlarmState(pool: pg.Pool, tenantId: string, equipmentIds: readonly string[]): Promise<Map<string, Map<string, RuleAlarmState>>> {
  const out = new Map<string, Map<string, RuleAlarmState>>(equipmentIds.map((e) => [e, new Map()]));
  if (equipmentIds.length === 0) return out;
  const rows = await asTenant(pool, tenantId, async (c) =>
    (
      await c.query<AlarmRow>(
        `SELECT equipment_id, rule_id, alert_id, severity, seq, raised_at, changed_at, last_time, evaluator
         FROM alarms WHERE tenant_id = $1 AND equipment_id = ANY($2::text[])`,
        [tenantId, equipmentIds],
      )
    ).rows,
  );
  for (const r of rows) out.get(r.equipment_id)?.set(r.rule_id, alarmStateOf(r));
  return out;
}

/** A tenant's rule overrides; rows that do not validate are returned as problems (and skipped). */
export async function loadRuleOverrides(pool: pg.Pool, tenantId: string): Promise<{ overrides: RuleOverride[]; problems: Array<{ ruleId: string; problems: string[] }> }> {
  const rows = await asTenant(pool, tenantId, async (c) =>
    (await c.query<{ rule_id: string; definition: unknown }>("SELECT rule_id, definition FROM threshold_rules WHERE tenant_id = $1 ORDER BY rule_id", [tenantId])).rows,
  );
  const overrides: RuleOverride[] = [];
  const problems: Array<{ ruleId: string; problems: string[] }> = [];
  for (const r of rows) {
    const p = parseRuleOverride(r.definition);
    if (!p.ok) problems.push({ ruleId: r.rule_id, problems: p.problems });
    else if (p.rule.id !== r.rule_id) problems.push({ ruleId: r.rule_id, problems: [`definition id ${JSON.stringify(p.rule.id)} differs from the row's rule_id`] });
    else overrides.push(p.rule);
  }
  return { overrides, problems };
}
