/**
 * Threshold rules over real data: the 16 SKAB valve1 experiments (../shared/datasets/skab, read in
 * place, never copied), each file one equipment, every reading through the pure evaluator. Scoring
 * (test/helpers/skab.ts): an alert is a true positive when it is *raised* inside a labelled anomaly
 * window (anomaly = 1); precision = raised inside a window / all raised; recall = windows with at
 * least one alert raised inside / all windows. The rules and the numbers are in docs/alerts.md §7
 * and the README; test/integration/skab-replay.test.ts gets the same numbers through a real worker.
 *
 * Two rule sets, because the data says two things:
 *  - Bands on temperature, vibration and pressure (SKAB mapping: vibration ← Accelerometer1RMS,
 *    pressure ← Pressure, temperature ← Temperature), set just outside normal operation, catch
 *    almost nothing and what they catch is mostly outside the windows: the valve closure does not
 *    show in these signals. The numbers are pinned so docs/alerts.md cannot drift.
 *  - The closure shows plainly in the flow rate (flow_rate ← Volume Flow RateRMS, SensorReading v2):
 *    the chosen rule `valve_flow_low`, parsed from its written form like any tenant rule, finds it.
 *    Precision and recall are asserted with a margin, and its counts are pinned.
 */
import { existsSync } from "node:fs";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { readCsvReadings } from "../../produce/csv.ts";
import { parseRuleOverride, type ThresholdRule } from "../../pipelines/processors/threshold-rules.ts";
import { evaluateRule, IDLE_STATE, type RuleAlarmState, type ThresholdReading } from "../../pipelines/processors/thresholds.ts";
import { anomalyWindows, readLabels, scoreRaised, valve1Files, VALVE1, VALVE_FLOW_LOW, type RaisedAlert, type SkabScore } from "../helpers/skab.ts";

const TENANT = "00000000-0000-4000-8000-00000000005b";

/** One experiment's readings through the repository's CSV reader with the default (SKAB) mapping. */
async function readExperiment(file: string, equipmentId: string): Promise<ThresholdReading[]> {
  const out: ThresholdReading[] = [];
  for await (const rec of readCsvReadings(file, { tenantId: TENANT, equipmentId, facilityId: "skab-testbed" })) {
    const r = rec.reading;
    out.push({ time: r.time, equipmentId, facilityId: r.facility_id, temperature: r.temperature, vibration: r.vibration, pressure: r.pressure, flow_rate: r.flow_rate });
  }
  return out;
}

type Score = SkabScore & {
  /** Lifecycle steps of all rules, by step (and escalations by the severity reached). */
  steps: Record<string, number>;
};

async function score(rules: readonly ThresholdRule[]): Promise<Score> {
  const files = valve1Files();
  expect(files).toHaveLength(16);
  const raised: RaisedAlert[] = [];
  const windowsOf = new Map<string, Array<[number, number]>>();
  const steps: Record<string, number> = {};
  for (const f of files) {
    const equipmentId = `pump-valve1-${f.replace(".csv", "").padStart(2, "0")}`;
    const readings = await readExperiment(join(VALVE1, f), equipmentId);
    const labels = readLabels(join(VALVE1, f));
    // The reader and the independent label parse agree row for row.
    expect(readings.map((r) => r.time)).toEqual(labels.map((l) => l.time));
    windowsOf.set(equipmentId, anomalyWindows(labels));
    for (const rule of rules) {
      let state: RuleAlarmState = IDLE_STATE;
      for (const r of readings) {
        const step = evaluateRule(rule, state, r, TENANT);
        state = step.state;
        for (const e of step.events) {
          const kind = e.step === "escalated" ? `escalated_to_${e.severity}` : e.step;
          steps[kind] = (steps[kind] ?? 0) + 1;
          if (e.step === "raised") raised.push({ equipmentId, ruleId: rule.id, time: e.time });
        }
      }
    }
  }
  return { ...scoreRaised(raised, windowsOf, rules.map((r) => r.id)), steps };
}

const base = { sustainMs: 0, clearSustainMs: 0 };

/** Bands just outside valve1's normal operation (anomaly = 0 rows: p99.9 / p0.1, quantized pressure steps). */
const SCHEMA_RULES: ThresholdRule[] = [
  { ...base, id: "skab_vibration_high", name: "Vibration high", measure: "vibration", comparison: "above", levels: [{ severity: "warning", threshold: 0.0288 }], deadband: 0.0002 },
  { ...base, id: "skab_pressure_band", name: "Pressure out of band", measure: "pressure", comparison: "outside", levels: [{ severity: "warning", low: -0.7, high: 0.8 }], deadband: 0.1 },
  { ...base, id: "skab_temperature_band", name: "Temperature out of band", measure: "temperature", comparison: "outside", levels: [{ severity: "warning", low: 65.4, high: 79.9 }], deadband: 0.2 },
];

function flowRule(): ThresholdRule {
  const parsed = parseRuleOverride(VALVE_FLOW_LOW);
  if (!parsed.ok || parsed.rule.enabled === false) throw new Error(`valve_flow_low does not parse: ${JSON.stringify(parsed)}`);
  const { enabled: _e, ...rule } = parsed.rule;
  return rule;
}

describe("threshold rules over SKAB valve1 (16 labelled experiments)", () => {
  it("the data set is where the test expects it (../shared/datasets/skab/valve1)", () => {
    expect(existsSync(VALVE1), `${VALVE1} is missing: the shared data sets are needed`).toBe(true);
  });

  it("bands on temperature, vibration and pressure: few alerts, mostly outside the windows (every count of docs/alerts.md §7's table pinned)", async () => {
    const s = await score(SCHEMA_RULES);
    expect(s).toMatchObject({ windows: 16 });
    expect({ raised: s.raised, inside: s.inside, windowsHit: s.windowsHit, byRule: s.byRule }).toEqual({
      raised: 43,
      inside: 13,
      windowsHit: 7,
      byRule: {
        skab_vibration_high: { raised: 14, inside: 4, windowsHit: 1 },
        skab_pressure_band: { raised: 25, inside: 6, windowsHit: 6 },
        skab_temperature_band: { raised: 4, inside: 3, windowsHit: 1 },
      },
    });
    expect(s.precision.toFixed(2)).toBe("0.30");
  });

  it("the same bands with a 5 s sustain raise nothing at all (docs/alerts.md §7)", async () => {
    const s = await score(SCHEMA_RULES.map((r) => ({ ...r, sustainMs: 5_000 })));
    expect(s.raised).toBe(0);
  });

  it("the chosen rule, valve_flow_low on flow_rate, finds the valve closures: precision ≥ 0.9, recall ≥ 0.8", async () => {
    const s = await score([flowRule()]);
    expect(s.windows).toBe(16);
    expect(s.precision).toBeGreaterThanOrEqual(0.9);
    expect(s.recall).toBeGreaterThanOrEqual(0.8);
    expect({ raised: s.raised, inside: s.inside, windowsHit: s.windowsHit }).toEqual({ raised: 15, inside: 15, windowsHit: 15 });
    // The lifecycle docs/alerts.md §7 reports for the flow rule.
    expect(s.steps).toEqual({ raised: 15, escalated_to_major: 7, escalated_to_critical: 2, de_escalated: 9, cleared: 15 });
  });
});
