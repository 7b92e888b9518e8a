import { describe, expect, it } from "vitest";
import { effectiveRules, parseRuleOverride, ruleConfigSchema, toConfig, toRule, type ThresholdRule } from "./threshold-rules.ts";

const problems = (raw: unknown) => {
  const r = parseRuleOverride(raw);
  return r.ok ? [] : r.problems;
};

describe("threshold rules: validation", () => {
  it("accepts a full rule and fills the defaults", () => {
    const r = parseRuleOverride({ id: "vib", measure: "vibration", comparison: "above", levels: { warning: 1, critical: 3 } });
    expect(r).toEqual({
      ok: true,
      rule: {
        id: "vib",
        name: "vib",
        measure: "vibration",
        comparison: "above",
        levels: [
          { severity: "warning", threshold: 1 },
          { severity: "critical", threshold: 3 },
        ],
        sustainMs: 0,
        deadband: 0,
        clearSustainMs: 0,
        enabled: true,
      },
    });
  });

  it("reports every problem of a ladder that does not rise with severity", () => {
    expect(problems({ id: "v", measure: "vibration", comparison: "above", levels: { warning: 3, major: 2, critical: 2 } })).toEqual([
      "levels.major: must be above warning (3): severity rises with the value",
      "levels.critical: must be above major (2): severity rises with the value",
    ]);
    expect(problems({ id: "p", measure: "pressure", comparison: "below", levels: { warning: 1, critical: 2 } })).toEqual([
      "levels.critical: must be below warning (1): severity rises as the value falls",
    ]);
  });

  it("bands: [low, high], nested, and wider than twice the deadband", () => {
    expect(problems({ id: "t", measure: "temperature", comparison: "outside", levels: { warning: 5 } })).toEqual(["levels.warning: an outside rule takes a [low, high] band per severity"]);
    expect(problems({ id: "t", measure: "temperature", comparison: "outside", levels: { warning: [20, 80], major: [25, 90] } })).toEqual([
      "levels.major: must be strictly wider than warning [20, 80]: a more severe band lies outside a less severe one",
    ]);
    expect(problems({ id: "t", measure: "temperature", comparison: "outside", levels: { warning: [20, 24] }, deadband: 2 })).toEqual([
      "deadband: must be less than half the warning band's width (4)",
    ]);
    expect(problems({ id: "t", measure: "temperature", comparison: "above", levels: { warning: [1, 2] } })).toEqual([
      "levels.warning: an above rule takes one threshold per severity, not a band",
    ]);
    expect(problems({ id: "t", measure: "pressure", comparison: "below", levels: { warning: [1, 2] } })).toEqual([
      "levels.warning: a below rule takes one threshold per severity, not a band",
    ]);
  });

  it("refuses unknown fields, measures, ids and units", () => {
    expect(problems({ id: "Bad-Id", measure: "flow", comparison: "above", levels: {}, sustain: 30, colour: "red" })).toEqual([
      "id: must be snake_case: a lower-case letter, then up to 62 lower-case letters, digits or _",
      "measure: expected one of temperature, vibration, pressure, flow_rate",
      "sustain: 30 has no unit: expected a duration like 100ms, 30s, 5m or 1h",
      'Unrecognized key: "colour"',
    ]);
    expect(problems({ id: "v", measure: "vibration", comparison: "above", levels: {} })).toEqual(["levels: needs at least one of warning, major, critical"]);
  });

  it("an override may be just { id, enabled: false }", () => {
    expect(parseRuleOverride({ id: "vib", enabled: false })).toEqual({ ok: true, rule: { id: "vib", enabled: false } });
  });

  it("toConfig is the inverse of toRule", () => {
    const raw = { id: "t", name: "Oven", measure: "temperature", comparison: "outside", levels: { warning: [20, 80], critical: [10, 90] }, sustain: "30s", deadband: 1, clear_sustain: "1m", enabled: true };
    const rule = toRule(ruleConfigSchema.parse(raw));
    expect(toRule(ruleConfigSchema.parse(toConfig(rule)))).toEqual(rule);
    expect(toConfig(rule)).toMatchObject({ sustain: "30s", clear_sustain: "1m" });
  });
});

describe("effectiveRules", () => {
  const rule = (id: string, warning: number): ThresholdRule => ({
    id,
    name: id,
    measure: "vibration",
    comparison: "above",
    levels: [{ severity: "warning", threshold: warning }],
    sustainMs: 0,
    deadband: 0,
    clearSustainMs: 0,
  });

  it("defaults in order, replaced by same-id overrides, disabled ones removed, tenant additions after by id", () => {
    const defaults = [rule("a", 1), rule("b", 1), rule("c", 1)];
    const out = effectiveRules(defaults, [{ ...rule("z", 5), enabled: true }, { ...rule("b", 9), enabled: true }, { id: "c", enabled: false }, { ...rule("m", 5), enabled: true }]);
    expect(out.map((r) => `${r.id}:${r.levels[0]!.severity}`)).toEqual(["a:warning", "b:warning", "m:warning", "z:warning"]);
    expect(out[1]).toEqual(rule("b", 9));
    expect(out[1]).not.toHaveProperty("enabled");
  });
});
