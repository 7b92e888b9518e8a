import { describe, expect, it } from "vitest";
import { ThresholdEvaluator, type AlarmStateSource } from "./threshold-evaluator.ts";
import type { RuleOverride, ThresholdRule } from "./threshold-rules.ts";
import type { RuleAlarmState, ThresholdReading } from "./thresholds.ts";

const T = "6f1c2a4e-3b5d-4c7e-9f80-1a2b3c4d5e6f";
const T0 = Date.UTC(2024, 4, 1);
const vib: ThresholdRule = {
  id: "vib_high",
  name: "Vibration high",
  measure: "vibration",
  comparison: "above",
  levels: [{ severity: "warning", threshold: 1 }],
  sustainMs: 0,
  deadband: 0.1,
  clearSustainMs: 0,
};

/** A database stand-in: committed states and overrides, with call counts. */
class FakeSource implements AlarmStateSource {
  states = new Map<string, Map<string, RuleAlarmState>>();
  overrides: RuleOverride[] = [];
  loads: string[][] = [];
  ruleLoads = 0;
  async loadAlarmState(_t: string, ids: readonly string[]) {
    this.loads.push([...ids]);
    return new Map(ids.map((id) => [id, new Map(this.states.get(id) ?? [])]));
  }
  async loadRuleOverrides() {
    this.ruleLoads++;
    return { overrides: this.overrides, problems: [] };
  }
}

const readings = (equipmentId: string, values: number[], startSec = 0): ThresholdReading[] =>
  values.map((v, i) => ({ time: T0 + (startSec + i) * 1000, equipmentId, facilityId: "f", vibration: v }));

describe("ThresholdEvaluator", () => {
  it("loads state once per scope and equipment; evaluate does not change the cache until commit", async () => {
    const src = new FakeSource();
    const ev = new ThresholdEvaluator({ source: src, defaults: [vib], rulesRefreshMs: 10_000, now: () => 0 });
    const chunk = readings("a", [0.5, 2]);
    await ev.prepare("p0", T, chunk);
    await ev.prepare("p0", T, chunk);
    expect(src.loads).toEqual([["a"]]);
    expect(src.ruleLoads).toBe(1);
    const first = ev.evaluate("p0", T, chunk);
    expect(ev.evaluate("p0", T, chunk)).toEqual(first); // a retried batch evaluates the same
    expect(first.events.map((e) => e.step)).toEqual(["raised"]);
    expect(first.states).toHaveLength(1);
    expect(ev.openAlarms("p0")).toEqual([]);
    ev.commit(first);
    expect(ev.openAlarms("p0")).toEqual([{ equipmentId: "a", ruleId: "vib_high", severity: "warning", alertId: first.events[0]!.alert_id }]);
    // Redelivered after commit: late, no events.
    const again = ev.evaluate("p0", T, chunk);
    expect(again).toMatchObject({ events: [], states: [], late: 2 });
  });

  it("forget(scope) makes the next prepare reload the committed state; unprepared equipment is a wiring error", async () => {
    const src = new FakeSource();
    const ev = new ThresholdEvaluator({ source: src, defaults: [vib], rulesRefreshMs: 10_000, now: () => 0 });
    await ev.prepare("p0", T, readings("a", [1]));
    expect(() => ev.evaluate("p0", T, readings("b", [1]))).toThrow(/was not prepared/);
    ev.forget("p0");
    await ev.prepare("p0", T, readings("a", [1]));
    expect(src.loads).toEqual([["a"], ["a"]]);
  });

  it("rules: refreshed after rulesRefreshMs; an override replaces the default; a removed rule's open alarm is cleared", async () => {
    let now = 0;
    const src = new FakeSource();
    const ev = new ThresholdEvaluator({ source: src, defaults: [vib], rulesRefreshMs: 10_000, now: () => now });
    await ev.prepare("p0", T, readings("a", [2]));
    const raised = ev.evaluate("p0", T, readings("a", [2]));
    ev.commit(raised);

    src.overrides = [{ ...vib, levels: [{ severity: "warning", threshold: 5 }], enabled: true }];
    now = 9_999;
    await ev.prepare("p0", T, readings("a", [2], 1));
    expect(ev.rulesFor(T)[0]!.levels[0]).toEqual({ severity: "warning", threshold: 1 });
    now = 10_000;
    await ev.prepare("p0", T, readings("a", [2], 1));
    expect(ev.rulesFor(T)[0]!.levels[0]).toEqual({ severity: "warning", threshold: 5 });
    // 2 is now far below the warning threshold (5 − 0.1): the alarm clears under the new rule.
    const cleared = ev.evaluate("p0", T, readings("a", [2], 1));
    expect(cleared.events.map((e) => `${e.step}:${e.rule!.threshold}`)).toEqual(["cleared:5"]);
    ev.commit(cleared);

    const again = ev.evaluate("p0", T, readings("a", [9], 2));
    ev.commit(again);
    src.overrides = [{ id: "vib_high", enabled: false }];
    await ev.refreshRules(T);
    const removed = ev.evaluate("p0", T, readings("a", [9], 3));
    expect(removed.events.map((e) => `${e.step}:${e.reason}`)).toEqual(["cleared:rule_removed"]);
    ev.commit(removed);
    expect(ev.evaluate("p0", T, readings("a", [9], 4)).events).toEqual([]);
  });

  it("several equipment and rules in one chunk: one state per (equipment, rule), events in reading order", async () => {
    const src = new FakeSource();
    const temp: ThresholdRule = { ...vib, id: "temp_high", measure: "temperature", levels: [{ severity: "critical", threshold: 100 }] };
    const ev = new ThresholdEvaluator({ source: src, defaults: [vib, temp], rulesRefreshMs: 10_000, now: () => 0 });
    const rows: ThresholdReading[] = [
      { time: T0, equipmentId: "a", facilityId: "f", vibration: 2, temperature: 120 },
      { time: T0, equipmentId: "b", facilityId: "f", vibration: 0, temperature: 50 },
      { time: T0 + 1000, equipmentId: "a", facilityId: "f", vibration: 0, temperature: 150 },
    ];
    await ev.prepare("p0", T, rows);
    const out = ev.evaluate("p0", T, rows);
    expect(out.events.map((e) => `${e.reading!.equipment_id}:${e.rule!.id}:${e.step}`)).toEqual(["a:vib_high:raised", "a:temp_high:raised", "a:vib_high:cleared"]);
    expect(out.states.map((s) => `${s.equipmentId}:${s.ruleId}`).sort()).toEqual(["a:temp_high", "a:vib_high", "b:temp_high", "b:vib_high"]);
  });
});
