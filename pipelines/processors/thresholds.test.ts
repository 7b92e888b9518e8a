import { describe, expect, it } from "vitest";
import type { AlertEvent } from "../../schemas/generated.ts";
import { ruleConfigSchema, toRule, type RuleConfig, type ThresholdRule } from "./threshold-rules.ts";
import { alertUuid, closeRemovedRule, evaluateRule, IDLE_STATE, thresholdAlertId, type RuleAlarmState, type ThresholdReading } from "./thresholds.ts";

const TENANT = "6f1c2a4e-3b5d-4c7e-9f80-1a2b3c4d5e6f";
const T0 = Date.UTC(2024, 4, 1, 12, 0, 0);

function rule(c: Partial<RuleConfig> & Pick<RuleConfig, "levels">): ThresholdRule {
  const { enabled: _e, ...r } = toRule(ruleConfigSchema.parse({ id: "vib_high", measure: "vibration", comparison: "above", ...c }));
  return r;
}

/** Readings every second from T0 with these vibration values (null = not measured). */
function series(values: Array<number | null>, startSec = 0): ThresholdReading[] {
  return values.map((v, i) => ({ time: T0 + (startSec + i) * 1000, equipmentId: "press-7", facilityId: "plant-1", vibration: v }));
}

function run(r: ThresholdRule, readings: ThresholdReading[], from: RuleAlarmState = IDLE_STATE) {
  let state = from;
  const events: AlertEvent[] = [];
  const outcomes: string[] = [];
  for (const reading of readings) {
    const step = evaluateRule(r, state, reading, TENANT);
    state = step.state;
    events.push(...step.events);
    outcomes.push(step.outcome);
  }
  return { state, events, outcomes };
}

const steps = (events: AlertEvent[]) => events.map((e) => `${e.step}:${e.severity}@${(e.time - T0) / 1000}`);

describe("threshold state machine: hysteresis", () => {
  it("a value flapping around the threshold gives one alarm, not many (deadband)", () => {
    const r = rule({ levels: { warning: 1.0 }, deadband: 0.2 });
    // 0.95 ↔ 1.05 many times: raised once at the first 1.05, never cleared (0.95 > 1.0 − 0.2)…
    const flapping = Array.from({ length: 40 }, (_, i) => (i % 2 === 0 ? 1.05 : 0.95));
    // …until the value is really back: at or below 0.8.
    const { events } = run(r, series([0.5, ...flapping, 0.85, 0.8, 0.5]));
    expect(steps(events)).toEqual(["raised:warning@1", "cleared:warning@42"]);
    expect(new Set(events.map((e) => e.alert_id)).size).toBe(1);
  });

  it("without a deadband the same flapping opens an alarm per crossing (what the deadband is for)", () => {
    const r = rule({ levels: { warning: 1.0 } });
    const flapping = Array.from({ length: 10 }, (_, i) => (i % 2 === 0 ? 1.05 : 0.95));
    const raised = run(r, series(flapping)).events.filter((e) => e.step === "raised");
    expect(raised).toHaveLength(5);
  });

  it("flapping also gives no alarm at all while it never holds for the sustain time", () => {
    const r = rule({ levels: { warning: 1.0 }, sustain: "5s", deadband: 0.2 });
    const flapping = Array.from({ length: 60 }, (_, i) => (i % 4 < 2 ? 1.05 : 0.95));
    expect(run(r, series(flapping)).events).toEqual([]);
  });

  it("clear_sustain: the value must stay back for that long before the alarm clears", () => {
    const r = rule({ levels: { warning: 1.0 }, deadband: 0.1, clear_sustain: "3s" });
    const { events } = run(r, series([1.2, 0.5, 0.5, 1.2, 0.5, 0.5, 0.5, 0.5]));
    // Back at 0.5 for 1 s, then above again: still the same alarm; then back for 3 s: cleared.
    expect(steps(events)).toEqual(["raised:warning@0", "cleared:warning@7"]);
  });
});

describe("threshold state machine: sustain (event time)", () => {
  const r = rule({ levels: { warning: 1.0 }, sustain: "30s", deadband: 0.1 });

  it("above for less than the sustain time gives no alarm", () => {
    const above29s = series([...Array(30).fill(1.5), 0.5]); // above from 0 s to 29 s, then back
    expect(run(r, above29s).events).toEqual([]);
  });

  it("above for exactly the sustain time raises at the reading that completes it", () => {
    const { events } = run(r, series(Array(31).fill(1.5)));
    expect(steps(events)).toEqual(["raised:warning@30"]);
    expect(events[0]!.reading).toEqual({ time: T0 + 30_000, equipment_id: "press-7", facility_id: "plant-1", value: 1.5 });
  });

  it("a dip below the threshold restarts the sustain", () => {
    const { events } = run(r, series([...Array(20).fill(1.5), 0.99, ...Array(31).fill(1.5)]));
    expect(steps(events)).toEqual(["raised:warning@51"]); // 21 s + 30 s
  });

  it("is measured in event time: sparse readings 30 s apart raise on the second one", () => {
    const sparse: ThresholdReading[] = [0, 30, 60].map((s) => ({ time: T0 + s * 1000, equipmentId: "e", facilityId: "f", vibration: 2 }));
    expect(steps(run(r, sparse).events)).toEqual(["raised:warning@30"]);
  });

  it("a reading without the measure neither breaks nor extends a sustain", () => {
    const { events, outcomes } = run(r, series([1.5, null, null, ...Array(28).fill(1.5)]));
    expect(outcomes.slice(0, 3)).toEqual(["evaluated", "no_value", "no_value"]);
    expect(steps(events)).toEqual(["raised:warning@30"]);
  });
});

describe("threshold state machine: the severity ladder", () => {
  const r = rule({ levels: { warning: 1, major: 2, critical: 3 }, deadband: 0.2 });

  it("escalates and de-escalates one alarm, then clears it; seq counts the steps", () => {
    const { events, state } = run(r, series([0.5, 1.5, 2.5, 3.5, 3.5, 2.9, 2.5, 1.9, 1.5, 0.9, 0.7]));
    expect(steps(events)).toEqual([
      "raised:warning@1",
      "escalated:major@2",
      "escalated:critical@3",
      // 2.9 still holds critical (3 − 0.2); 2.5 does not → major.
      "de_escalated:major@6",
      // 1.9 still holds major; 1.5 → warning; 0.9 holds warning; 0.7 clears.
      "de_escalated:warning@8",
      "cleared:warning@10",
    ]);
    expect(events.map((e) => e.seq)).toEqual([1, 2, 3, 4, 5, 6]);
    expect(new Set(events.map((e) => e.alert_id)).size).toBe(1);
    expect(events.map((e) => e.previous_severity)).toEqual([null, "warning", "major", "critical", "major", "warning"]);
    expect(events.map((e) => e.rule!.threshold)).toEqual([1, 2, 3, 2, 1, 1]);
    expect(state.active).toBeNull();
  });

  it("a jump straight past critical raises at critical; a fall straight to normal clears at once", () => {
    expect(steps(run(r, series([0.5, 9, 0.1])).events)).toEqual(["raised:critical@1", "cleared:critical@2"]);
  });

  it("a drop that skips a level de-escalates directly to the level still held", () => {
    expect(steps(run(r, series([3.5, 1.5, 0])).events)).toEqual(["raised:critical@0", "de_escalated:warning@1", "cleared:warning@2"]);
  });

  it("escalation needs the higher level's own sustain", () => {
    const s = rule({ levels: { warning: 1, critical: 3 }, sustain: "5s" });
    const { events } = run(s, series([...Array(6).fill(1.5), ...Array(4).fill(3.5), 1.5, ...Array(6).fill(3.5)]));
    // warning sustained 0–5 s; critical 6–9 s is 3 s only; critical again from 11 s → escalated at 16 s.
    expect(steps(events)).toEqual(["raised:warning@5", "escalated:critical@16"]);
  });

  it("a new alarm after clearing has a new id and starts at seq 1", () => {
    const { events } = run(r, series([1.5, 0.5, 1.5]));
    expect(steps(events)).toEqual(["raised:warning@0", "cleared:warning@1", "raised:warning@2"]);
    expect(events[2]!.alert_id).not.toBe(events[0]!.alert_id);
    expect(events[2]!.seq).toBe(1);
  });
});

describe("threshold state machine: comparisons", () => {
  it("below: severity rises as the value falls, deadband above the threshold", () => {
    const r = rule({ measure: "pressure", comparison: "below", levels: { warning: 5, critical: 3 }, deadband: 0.5 });
    const readings = [6, 4.9, 2.9, 3.2, 3.6, 5.2, 5.6].map((p, i) => ({ time: T0 + i * 1000, equipmentId: "pump", facilityId: "f", pressure: p }));
    expect(steps(run(r, readings).events)).toEqual(["raised:warning@1", "escalated:critical@2", "de_escalated:warning@4", "cleared:warning@6"]);
  });

  it("outside a band: either side raises; the event names the side crossed and the band", () => {
    const r = rule({ measure: "temperature", comparison: "outside", levels: { warning: [20, 80], critical: [10, 90] }, deadband: 2 });
    const readings = [50, 85, 95, 50, 15, 5, 50].map((v, i) => ({ time: T0 + i * 1000, equipmentId: "oven", facilityId: "f", temperature: v }));
    const { events } = run(r, readings);
    expect(steps(events)).toEqual(["raised:warning@1", "escalated:critical@2", "cleared:critical@3", "raised:warning@4", "escalated:critical@5", "cleared:critical@6"]);
    expect(events.map((e) => e.rule!.threshold)).toEqual([80, 90, 10, 20, 10, 10]);
    expect(events[1]!.rule).toMatchObject({ comparison: "outside", band_low: 10, band_high: 90, deadband: 2 });
  });
});

describe("threshold state machine: determinism and replay", () => {
  const r = rule({ levels: { warning: 1, major: 2 }, sustain: "3s", deadband: 0.2, clear_sustain: "2s" });
  const readings = series([0, 1.5, 1.5, 1.5, 1.5, 2.5, 2.5, 2.5, 2.5, 1.5, 0.5, 0.5, 0.5, 0.5, 1.5, 1.5, 1.5, 1.5, 0]);

  it("the same readings from the same state give the same events, ids included", () => {
    expect(run(r, readings).events).toEqual(run(r, readings).events);
  });

  it("the alert id is derived from tenant, rule, the raising reading's time and equipment", () => {
    const { events } = run(r, readings);
    const raised = events.filter((e) => e.step === "raised");
    expect(raised.map((e) => e.alert_id)).toEqual(raised.map((e) => thresholdAlertId(TENANT, "vib_high", e.time, "press-7")));
    expect(alertUuid("x")).toMatch(/^[0-9a-f]{8}-[0-9a-f]{4}-8[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/);
    expect(thresholdAlertId(TENANT, "vib_high", T0, "a/b")).not.toBe(thresholdAlertId(TENANT, "vib_high", T0, "a/c"));
  });

  it("stopping at any reading and resuming from the (persisted) state gives exactly the uninterrupted events", () => {
    const whole = run(r, readings).events;
    for (let cut = 0; cut <= readings.length; cut++) {
      const first = run(r, readings.slice(0, cut));
      const persisted = JSON.parse(JSON.stringify(first.state)) as RuleAlarmState; // as through the alarms table
      const rest = run(r, readings.slice(cut), persisted);
      expect([...first.events, ...rest.events]).toEqual(whole);
    }
  });

  it("replaying readings already evaluated (a batch redelivered) changes nothing", () => {
    const { state, events } = run(r, readings);
    expect(events.length).toBeGreaterThan(0);
    const again = run(r, readings, state);
    expect(again.events).toEqual([]);
    expect(again.state).toEqual(state);
    expect(new Set(again.outcomes)).toEqual(new Set(["late"]));
  });
});

describe("threshold state machine: late and out-of-order readings", () => {
  const r = rule({ levels: { warning: 1 }, deadband: 0.1 });

  it("a reading not newer than the last evaluated one is not evaluated (and the state is unchanged)", () => {
    const first = run(r, series([0.5, 0.5, 0.5], 10)); // t = 10, 11, 12 s
    const late = run(r, [...series([5], 5), ...series([5], 12)], first.state); // t = 5 s (older), 12 s (same time)
    expect(late.outcomes).toEqual(["late", "late"]);
    expect(late.events).toEqual([]);
    expect(late.state).toBe(first.state);
  });

  it("a late reading cannot reopen or re-time a cleared alarm", () => {
    const cleared = run(r, series([2, 2, 0]));
    expect(steps(cleared.events)).toEqual(["raised:warning@0", "cleared:warning@2"]);
    const late = run(r, series([2], 1), cleared.state);
    expect(late.outcomes).toEqual(["late"]);
    expect(late.events).toEqual([]);
  });
});

describe("closeRemovedRule", () => {
  it("clears an open alarm with reason rule_removed and the rule as it was; nothing to do when idle or late", () => {
    const r = rule({ levels: { warning: 1, major: 2 } });
    const open = run(r, series([1.5, 2.5]));
    const step = closeRemovedRule(open.state, series([2.5], 5)[0]!, TENANT)!;
    expect(step.events).toHaveLength(1);
    expect(step.events[0]).toMatchObject({ step: "cleared", severity: "major", seq: 3, reason: "rule_removed", rule: { id: "vib_high", threshold: 2 } });
    expect(step.events[0]!.reading!.value).toBeNull();
    expect(step.state.active).toBeNull();
    expect(closeRemovedRule(step.state, series([1], 6)[0]!, TENANT)).toBeNull();
    expect(closeRemovedRule(open.state, series([1], 1)[0]!, TENANT)).toBeNull();
  });
});
