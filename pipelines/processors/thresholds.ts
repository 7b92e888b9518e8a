/**
 * Threshold alarms: a pure state machine per (tenant, equipment, rule).
 *
 *   evaluateRule(rule, state, reading, tenantId) → { state, events, outcome }
 *
 * Nothing here reads a clock, a database or a random source: the same state and the same readings
 * give the same events with the same ids, which is what makes a replay after a crash or rebalance
 * produce no duplicate and no contradiction (the state is persisted with the partition offset).
 *
 * Lifecycle of one alarm (at most one open per equipment and rule):
 *   raised → (escalated | de_escalated)* → cleared
 *
 *  - A level is *entered* when the value is past its threshold (above: v > t; below: v < t;
 *    outside: v < low or v > high) and *held* while it has not come back by the deadband
 *    (above: v > t − deadband; below: v < t + deadband; outside: v < low + deadband or
 *    v > high − deadband). Deadband is the hysteresis that stops a value flapping around a
 *    threshold from opening and closing alarms.
 *  - Raise / escalate: to the most severe level whose entry condition has held continuously for
 *    `sustainMs` of event time (0 = at once); only ever upwards.
 *  - De-escalate / clear: when the current level has not been held for `clearSustainMs`, the alarm
 *    moves to the most severe level still held, or clears if none is.
 *  - The alert id is a UUID derived from (tenant, rule, the raising reading's time, equipment).
 *
 * Late and out-of-order readings: a reading whose time is not after the newest reading this rule
 * already evaluated for the equipment (`lastTime`) is not evaluated (outcome `late`; the engine
 * counts it and stores it normally). Alarms move forward in event time only, so a late reading can
 * never reopen, re-time or contradict an event already emitted. A reading with the measure null
 * ("not measured") is skipped (outcome `no_value`): it neither breaks nor extends a sustain.
 * A gap between readings does not break a sustain: the condition is taken to have held between two
 * readings that both satisfy it.
 */
import { createHash } from "node:crypto";
import type { AlertEvent, AlertRule } from "../../schemas/generated.ts";
import { severityRank, type Measure, type Severity, type ThresholdRule } from "./threshold-rules.ts";

/** Where and when a reading was taken. */
export interface ReadingOrigin {
  readonly time: number;
  readonly equipmentId: string;
  readonly facilityId: string;
}

/** What the evaluator needs of a reading (a StoredReading is one). */
export type ThresholdReading<M extends string = Measure> = ReadingOrigin & { readonly [K in M]?: number | null };

export interface ActiveAlarm {
  alertId: string;
  severity: Severity;
  /** seq of the alarm's last event (1 = raised). */
  seq: number;
  /** Event time of the raising reading. */
  raisedAt: number;
  /** Event time of the last step. */
  changedAt: number;
  /** The rule as of the last step (so the alarm can be closed even after its rule is removed). */
  rule: AlertRule;
}

export interface RuleAlarmState {
  /** Newest reading time evaluated (epoch ms); null before the first. */
  lastTime: number | null;
  /** Per severity: since when (event time) its entry condition has held without a break. */
  since: Readonly<Partial<Record<Severity, number>>>;
  /** While an alarm is open and its level is no longer held: since when. */
  releaseSince: number | null;
  active: ActiveAlarm | null;
}

export const IDLE_STATE: RuleAlarmState = Object.freeze({ lastTime: null, since: Object.freeze({}), releaseSince: null, active: null });

export type RuleOutcome = "evaluated" | "late" | "no_value";

export interface RuleStep {
  state: RuleAlarmState;
  events: AlertEvent[];
  outcome: RuleOutcome;
}

/** SHA-256 of `name` as an RFC 9562 version-8 UUID (twin of SQL millrace.alert_uuid). */
export function alertUuid(name: string): string {
  const d = createHash("sha256").update(name, "utf8").digest().subarray(0, 16);
  d[6] = (d[6]! & 0x0f) | 0x80;
  d[8] = (d[8]! & 0x3f) | 0x80;
  const h = d.toString("hex");
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`;
}

/** The alarm raised by `rule` for `equipmentId` at the reading time `raisedAt`. Equipment last: it may contain `/`. */
export function thresholdAlertId(tenantId: string, ruleId: string, raisedAt: number, equipmentId: string): string {
  return alertUuid(`threshold/${tenantId}/${ruleId}/${raisedAt}/${equipmentId}`);
}

type Level<M extends string> = ThresholdRule<M>["levels"][number];

/** The ladder level for a severity; if the rule no longer has it (edited), the nearest less severe one, else the least severe. */
function levelFor<M extends string>(rule: ThresholdRule<M>, severity: Severity): Level<M> {
  const rank = severityRank(severity);
  let best: Level<M> | undefined;
  for (const l of rule.levels) if (severityRank(l.severity) <= rank) best = l;
  return best ?? rule.levels[0]!;
}

/** The rule as it appears in an event, for the level of `severity`. */
export function alertRule<M extends string>(rule: ThresholdRule<M>, severity: Severity, value: number | null): AlertRule {
  const level = levelFor(rule, severity);
  let threshold: number;
  let bandLow: number | null = null;
  let bandHigh: number | null = null;
  if ("threshold" in level) threshold = level.threshold;
  else {
    bandLow = level.low;
    bandHigh = level.high;
    threshold = value !== null && value > (level.low + level.high) / 2 ? level.high : level.low;
  }
  return {
    id: rule.id,
    name: rule.name,
    measure: rule.measure,
    comparison: rule.comparison,
    threshold,
    band_low: bandLow,
    band_high: bandHigh,
    deadband: rule.deadband,
    sustain_ms: rule.sustainMs,
  };
}

function eventOf(
  tenantId: string,
  reading: ReadingOrigin,
  value: number | null,
  alarm: { alertId: string; seq: number; severity: Severity; rule: AlertRule },
  step: AlertEvent["step"],
  previous: Severity | null,
  reason: string | null = null,
): AlertEvent {
  return {
    event_id: `${alarm.alertId}/${alarm.seq}`,
    alert_id: alarm.alertId,
    seq: alarm.seq,
    step,
    kind: "threshold",
    severity: alarm.severity,
    previous_severity: previous,
    tenant_id: tenantId,
    time: reading.time,
    rule: alarm.rule,
    reading: { time: reading.time, equipment_id: reading.equipmentId, facility_id: reading.facilityId, value },
    quota: null,
    reason,
  };
}

/** {@link stepRule}'s answer when the reading was not evaluated. */
export const LATE: unique symbol = Symbol("late");
export const NO_VALUE: unique symbol = Symbol("no_value");

const EMPTY_SINCE: Readonly<Partial<Record<Severity, number>>> = Object.freeze({});

/** Evaluate one reading against one rule. Pure: `state` is not modified. */
export function evaluateRule<M extends string>(rule: ThresholdRule<M>, state: RuleAlarmState, reading: ThresholdReading<M>, tenantId: string): RuleStep {
  const events: AlertEvent[] = [];
  const next = stepRule(rule, state, reading, tenantId, events);
  if (next === LATE) return { state, events, outcome: "late" };
  if (next === NO_VALUE) return { state, events, outcome: "no_value" };
  return { state: next, events, outcome: "evaluated" };
}

/**
 * {@link evaluateRule} for the hot loop: the next state (a new object; `state` is not modified),
 * or LATE / NO_VALUE (state unchanged); events are appended to `events`. Allocates only the new
 * state (its `since` is the old one's when no sustain timer started or stopped) and the events.
 */
export function stepRule<M extends string>(
  rule: ThresholdRule<M>,
  state: RuleAlarmState,
  reading: ThresholdReading<M>,
  tenantId: string,
  events: AlertEvent[],
): RuleAlarmState | typeof LATE | typeof NO_VALUE {
  const raw = (reading as Record<string, unknown>)[rule.measure];
  if (typeof raw !== "number" || !Number.isFinite(raw)) return NO_VALUE;
  const v = raw;
  const t = reading.time;
  if (state.lastTime !== null && t <= state.lastTime) return LATE;

  // Sustain timers: each level's entry condition, continuously since when.
  const prevSince = state.since;
  const levels = rule.levels;
  const above = rule.comparison === "above";
  const d = rule.deadband;
  let entered = 0;
  let kept = 0;
  let sustained: Severity | null = null;
  let held: Severity | null = null;
  for (let i = 0; i < levels.length; i++) {
    const level = levels[i]!;
    let enter: boolean;
    let hold: boolean;
    if ("threshold" in level) {
      const th = level.threshold;
      enter = above ? v > th : v < th;
      hold = above ? v > th - d : v < th + d;
    } else {
      enter = v < level.low || v > level.high;
      hold = v < level.low + d || v > level.high - d;
    }
    if (hold) held = level.severity;
    if (!enter) continue;
    entered++;
    const prev = prevSince[level.severity];
    if (prev !== undefined) kept++;
    if (t - (prev ?? t) >= rule.sustainMs) sustained = level.severity;
  }
  let since = prevSince;
  if (entered === 0) since = EMPTY_SINCE;
  else {
    let prevCount = 0;
    for (const _ in prevSince) prevCount++;
    if (kept !== entered || prevCount !== entered) {
      const fresh: Partial<Record<Severity, number>> = {};
      for (const level of levels) {
        const enter = "threshold" in level ? (above ? v > level.threshold : v < level.threshold) : v < level.low || v > level.high;
        if (enter) fresh[level.severity] = prevSince[level.severity] ?? t;
      }
      since = fresh;
    }
  }

  let active = state.active;
  let releaseSince = state.releaseSince;

  if (active === null) {
    releaseSince = null;
    if (sustained !== null) {
      const alertId = thresholdAlertId(tenantId, rule.id, t, reading.equipmentId);
      active = { alertId, severity: sustained, seq: 1, raisedAt: t, changedAt: t, rule: alertRule(rule, sustained, v) };
      events.push(eventOf(tenantId, reading, v, active, "raised", null));
    }
  } else if (sustained !== null && severityRank(sustained) > severityRank(active.severity)) {
    const previous = active.severity;
    active = { ...active, severity: sustained, seq: active.seq + 1, changedAt: t, rule: alertRule(rule, sustained, v) };
    releaseSince = null;
    events.push(eventOf(tenantId, reading, v, active, "escalated", previous));
  } else if (held !== null && severityRank(held) >= severityRank(active.severity)) {
    releaseSince = null;
  } else {
    releaseSince ??= t;
    if (t - releaseSince >= rule.clearSustainMs) {
      const previous = active.severity;
      if (held !== null) {
        active = { ...active, severity: held, seq: active.seq + 1, changedAt: t, rule: alertRule(rule, held, v) };
        events.push(eventOf(tenantId, reading, v, active, "de_escalated", previous));
      } else {
        const closing = { ...active, seq: active.seq + 1, rule: alertRule(rule, previous, v) };
        events.push(eventOf(tenantId, reading, v, closing, "cleared", previous));
        active = null;
      }
      releaseSince = null;
    }
  }
  return { lastTime: t, since, releaseSince, active };
}

/**
 * Close an open alarm whose rule no longer applies to the tenant (deleted or disabled): a cleared
 * step at the reading's time, reason `rule_removed`. Null when there is nothing to close or the
 * reading is late (same policy as {@link evaluateRule}).
 */
export function closeRemovedRule(state: RuleAlarmState, reading: ReadingOrigin, tenantId: string): RuleStep | null {
  const a = state.active;
  if (a === null || (state.lastTime !== null && reading.time <= state.lastTime)) return null;
  const event = eventOf(tenantId, reading, null, { ...a, seq: a.seq + 1 }, "cleared", a.severity, "rule_removed");
  return { state: { lastTime: reading.time, since: {}, releaseSince: null, active: null }, events: [event], outcome: "evaluated" };
}
