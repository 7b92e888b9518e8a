/**
 * The thresholds processor as the engine drives it, per chunk of one partition (a "scope"):
 *
 *   await evaluator.prepare(scope, tenantId, rows)   // rules refresh, state of unseen equipment
 *   const changes = evaluator.evaluate(scope, tenantId, rows)   // synchronous, pure over the cache
 *   … in the sink transaction: await persistAlarmChanges(client, tenantId, changes)
 *   … after COMMIT: evaluator.commit(changes)     (fenced instead: evaluator.forget(scope))
 *
 * evaluate() never changes the cache, so a batch that fails and is retried, or is fenced, leaves
 * the in-memory state equal to the committed one. The cache is per scope (one partition), so
 * forgetting a revoked partition cannot race with another partition's chunk in flight. Readings of
 * one equipment must stay in one partition (the producers key by equipment_id).
 *
 * Rules: the defaults from topology.yaml merged with the tenant's overrides (threshold_rules),
 * re-read every `rulesRefreshMs`. A rule change applies from the next chunk evaluated after the
 * refresh; an open alarm whose rule was deleted or disabled is closed (cleared, reason
 * rule_removed) at the equipment's next reading.
 */
import client from "prom-client";
import type pg from "pg";
import type { Logger } from "../../lib/log.ts";
import { loadAlarmState, loadRuleOverrides, type AlarmChanges, type AlarmStateChange } from "./alarm-store.ts";
import { effectiveRules, type RuleOverride, type ThresholdRule } from "./threshold-rules.ts";
import type { AlertEvent } from "../../schemas/generated.ts";
import { closeRemovedRule, IDLE_STATE, LATE, NO_VALUE, stepRule, type RuleAlarmState, type ThresholdReading } from "./thresholds.ts";

/** What one chunk produced, for {@link ThresholdEvaluator.commit} and persistAlarmChanges. */
export interface ChunkAlarmChanges extends AlarmChanges {
  scope: string;
  tenantId: string;
  /** Readings not evaluated because they were not newer than the equipment's last evaluated reading. */
  late: number;
}

/** How the evaluator reads PostgreSQL (replaceable in unit tests). */
export interface AlarmStateSource {
  loadAlarmState(tenantId: string, equipmentIds: readonly string[]): Promise<Map<string, Map<string, RuleAlarmState>>>;
  loadRuleOverrides(tenantId: string): Promise<{ overrides: RuleOverride[]; problems: Array<{ ruleId: string; problems: string[] }> }>;
}

/**
 * Alarm state from the tenant's store (`stateOf`: the shared database or the tenant's dedicated
 * one); rule overrides from the control plane (`control`, the shared database).
 */
export function pgAlarmStateSource(stateOf: (tenantId: string) => pg.Pool, control: pg.Pool): AlarmStateSource {
  return {
    loadAlarmState: (t, e) => loadAlarmState(stateOf(t), t, e),
    loadRuleOverrides: (t) => loadRuleOverrides(control, t),
  };
}

export class ThresholdMetrics {
  readonly events: client.Counter<"tenant" | "step" | "severity">;
  readonly late: client.Counter<"tenant">;
  readonly invalidRules: client.Gauge<"tenant">;

  constructor(registry: client.Registry) {
    const registers = [registry];
    this.events = new client.Counter({ name: "millrace_alert_events_total", help: "Alert events committed, by lifecycle step and severity", labelNames: ["tenant", "step", "severity"], registers });
    this.late = new client.Counter({ name: "millrace_threshold_late_readings_total", help: "Readings stored but not evaluated for alarms: not newer than the equipment's last evaluated reading", labelNames: ["tenant"], registers });
    this.invalidRules = new client.Gauge({ name: "millrace_threshold_invalid_rules", help: "Tenant rule overrides that failed validation and are ignored", labelNames: ["tenant"], registers });
  }
}

export interface ThresholdEvaluatorOptions {
  source: AlarmStateSource;
  /** The defaults (topology.yaml). */
  defaults: readonly ThresholdRule[];
  rulesRefreshMs: number;
  metrics?: ThresholdMetrics;
  log?: Logger;
  /** Wall clock, for the rules refresh only (evaluation uses event time). */
  now?: () => number;
}

/** One equipment's alarm states while a chunk is evaluated. */
interface Pending {
  equipmentId: string;
  /** The committed states by rule index (IDLE_STATE when none), to tell what changed. */
  committed: RuleAlarmState[];
  states: RuleAlarmState[];
  removed: Map<string, RuleAlarmState> | undefined;
  removedChanged: Set<string> | undefined;
}

interface Scope {
  tenantId: string;
  /** equipment → rule id → committed state (absent rule = idle). */
  equipment: Map<string, Map<string, RuleAlarmState>>;
}

export class ThresholdEvaluator {
  private readonly scopes = new Map<string, Scope>();
  private readonly rules = new Map<string, { rules: readonly ThresholdRule[]; loadedAt: number }>();
  private readonly now: () => number;

  constructor(private readonly o: ThresholdEvaluatorOptions) {
    this.now = o.now ?? Date.now;
  }

  /** The tenant's effective rules as of the last refresh (defaults before the first). */
  rulesFor(tenantId: string): readonly ThresholdRule[] {
    return this.rules.get(tenantId)?.rules ?? this.o.defaults;
  }

  /** Re-read the tenant's overrides now (also done by prepare() when they are older than rulesRefreshMs). */
  async refreshRules(tenantId: string): Promise<void> {
    const { overrides, problems } = await this.o.source.loadRuleOverrides(tenantId);
    for (const p of problems) this.o.log?.warn({ tenant: tenantId, rule: p.ruleId, problems: p.problems }, "ignoring an invalid threshold rule override");
    this.o.metrics?.invalidRules.set({ tenant: tenantId }, problems.length);
    this.rules.set(tenantId, { rules: effectiveRules(this.o.defaults, overrides), loadedAt: this.now() });
  }

  /**
   * Once per chunk, before {@link evaluate}: refresh the tenant's rules if stale and load the
   * committed state of equipment this scope has not seen (one query each, only when needed).
   */
  async prepare(scope: string, tenantId: string, rows: Iterable<{ equipmentId: string }>): Promise<void> {
    const r = this.rules.get(tenantId);
    if (r === undefined || this.now() - r.loadedAt >= this.o.rulesRefreshMs) await this.refreshRules(tenantId);
    let s = this.scopes.get(scope);
    if (s !== undefined && s.tenantId !== tenantId) throw new Error(`thresholds: scope ${scope} belongs to tenant ${s.tenantId}, not ${tenantId}`);
    const missing = new Set<string>();
    for (const { equipmentId } of rows) if (!s?.equipment.has(equipmentId)) missing.add(equipmentId);
    if (missing.size === 0) return;
    const loaded = await this.o.source.loadAlarmState(tenantId, [...missing]);
    s = this.scopes.get(scope);
    if (s === undefined) {
      s = { tenantId, equipment: new Map() };
      this.scopes.set(scope, s);
    }
    for (const [equipmentId, states] of loaded) if (!s.equipment.has(equipmentId)) s.equipment.set(equipmentId, states);
  }

  /**
   * Synchronous: evaluate the rows (in order) against the tenant's rules, starting from the
   * committed state. Returns the states to persist and the events; the cache is not changed.
   */
  evaluate(scope: string, tenantId: string, rows: readonly ThresholdReading[]): ChunkAlarmChanges {
    const s = this.scopes.get(scope);
    const equipment = s?.tenantId === tenantId ? s.equipment : undefined;
    const rules = this.rulesFor(tenantId);
    const n = rules.length;
    const ruleIds = this.ruleIdsOf(rules);
    // Per equipment: the state so far in this chunk, by rule index (undefined = the committed one);
    // rules no longer in the tenant's set that still have a committed state go in `removed`.
    const pending = new Map<string, Pending>();
    const events: AlertEvent[] = [];
    let late = 0;
    for (let r = 0; r < rows.length; r++) {
      const reading = rows[r]!;
      const equipmentId = reading.equipmentId;
      let p = pending.get(equipmentId);
      if (p === undefined) {
        const committed = equipment?.get(equipmentId);
        if (committed === undefined) throw new Error(`thresholds: equipment ${JSON.stringify(equipmentId)} was not prepared in scope ${scope} (call prepare() for the chunk first)`);
        const states = new Array<RuleAlarmState>(n);
        for (let i = 0; i < n; i++) states[i] = committed.get(rules[i]!.id) ?? IDLE_STATE;
        let removed: Map<string, RuleAlarmState> | undefined;
        for (const [ruleId, st] of committed) if (!ruleIds.has(ruleId)) (removed ??= new Map()).set(ruleId, st);
        p = { equipmentId, committed: states.slice(), states, removed, removedChanged: undefined };
        pending.set(equipmentId, p);
      }
      let wasLate = false;
      const states = p.states;
      for (let i = 0; i < n; i++) {
        const next = stepRule(rules[i]!, states[i]!, reading, tenantId, events);
        if (next === LATE) wasLate = true;
        else if (next !== NO_VALUE) states[i] = next;
      }
      if (p.removed !== undefined) {
        for (const [ruleId, st] of p.removed) {
          const step = closeRemovedRule(st, reading, tenantId);
          if (step === null) continue;
          p.removed.set(ruleId, step.state);
          (p.removedChanged ??= new Set()).add(ruleId);
          for (const e of step.events) events.push(e);
        }
      }
      if (wasLate) late++;
    }
    const changes: AlarmStateChange[] = [];
    for (const p of pending.values()) {
      for (let i = 0; i < n; i++) if (p.states[i] !== p.committed[i]) changes.push({ equipmentId: p.equipmentId, ruleId: rules[i]!.id, state: p.states[i]! });
      if (p.removedChanged) for (const ruleId of p.removedChanged) changes.push({ equipmentId: p.equipmentId, ruleId, state: p.removed!.get(ruleId)! });
    }
    return { scope, tenantId, states: changes, events, late };
  }

  private readonly ruleIdSets = new WeakMap<readonly ThresholdRule[], ReadonlySet<string>>();

  private ruleIdsOf(rules: readonly ThresholdRule[]): ReadonlySet<string> {
    let ids = this.ruleIdSets.get(rules);
    if (ids === undefined) {
      ids = new Set(rules.map((r) => r.id));
      this.ruleIdSets.set(rules, ids);
    }
    return ids;
  }

  /** After the sink transaction with these changes committed: make them the cached state. */
  commit(changes: ChunkAlarmChanges): void {
    const m = this.o.metrics;
    if (m) {
      for (const e of changes.events) m.events.inc({ tenant: changes.tenantId, step: e.step, severity: e.severity });
      if (changes.late > 0) m.late.inc({ tenant: changes.tenantId }, changes.late);
    }
    const s = this.scopes.get(changes.scope);
    if (s === undefined || s.tenantId !== changes.tenantId) return; // forgotten meanwhile: reloaded from the database next time
    for (const c of changes.states) {
      let states = s.equipment.get(c.equipmentId);
      if (states === undefined) {
        states = new Map();
        s.equipment.set(c.equipmentId, states);
      }
      states.set(c.ruleId, c.state);
    }
  }

  /** Drop a scope's cached state (partition revoked, reassigned or fenced): the next prepare() reloads it. */
  forget(scope: string): void {
    this.scopes.delete(scope);
  }

  /** Drop every scope (a new consumer-group generation). */
  forgetAll(): void {
    this.scopes.clear();
  }

  /** Open alarms in the cache of a scope (status, tests). */
  openAlarms(scope: string): Array<{ equipmentId: string; ruleId: string; severity: string; alertId: string }> {
    const out: Array<{ equipmentId: string; ruleId: string; severity: string; alertId: string }> = [];
    for (const [equipmentId, states] of this.scopes.get(scope)?.equipment ?? []) {
      for (const [ruleId, st] of states) if (st.active) out.push({ equipmentId, ruleId, severity: st.active.severity, alertId: st.active.alertId });
    }
    return out;
  }
}
