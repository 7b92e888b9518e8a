import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { repoRoot } from "../../../stack/context.ts";
import { parseTopology } from "../loader.ts";
import { TopologyError, type TopologyProblem } from "../plan.ts";

const SCHEMA = join(repoRoot, "schemas", "sensor-reading.avsc");

const topology = (rules: string) => `version: 1
sources: { in: { type: kafka_tenant_topics } }
processors:
  decode: { type: avro_decode, inputs: [in], schema: ${SCHEMA} }
  validate: { type: validate_reading, inputs: [decode] }
  thresholds:
    type: thresholds
    inputs: [validate]
    rules:
${rules}
sinks:
  db: { type: timescale_copy, inputs: [thresholds] }
  dlq: { type: kafka_dead_letter, inputs: [decode, validate, thresholds, db] }
`;

function problems(text: string): Array<Pick<TopologyProblem, "path" | "line" | "message">> {
  try {
    parseTopology(text, join(repoRoot, "inline.yaml"));
  } catch (err) {
    if (err instanceof TopologyError) return err.problems.map(({ path, line, message }) => ({ path, line, message }));
    throw err;
  }
  throw new Error("loaded without problems");
}

describe("thresholds component", () => {
  it("plans the rules (defaults filled, disabled ones left out)", () => {
    const plan = parseTopology(
      topology(`      - { id: p_low, measure: pressure, comparison: below, levels: { major: 2 }, sustain: 5s }
      - { id: off, measure: vibration, comparison: above, levels: { warning: 1 }, enabled: false }`),
      join(repoRoot, "inline.yaml"),
    );
    expect(plan.processors[2]).toEqual({
      id: "thresholds",
      type: "thresholds",
      input: "validate",
      rulesRefreshMs: 10_000,
      rules: [{ id: "p_low", name: "p_low", measure: "pressure", comparison: "below", levels: [{ severity: "major", threshold: 2 }], sustainMs: 5_000, deadband: 0, clearSustainMs: 0 }],
    });
  });

  it("reports every bad rule with its line: ladder order, bands, duplicate ids, unknown settings", () => {
    expect(
      problems(
        topology(`      - id: vib
        measure: vibration
        comparison: above
        levels: { warning: 3, critical: 2 }
      - { id: temp, measure: temperature, comparison: outside, levels: { warning: 50 } }
      - { id: vib, measure: vibration, comparison: above, levels: { warning: 1 }, colour: red }`),
      ),
    ).toEqual([
      { path: "processors.thresholds.rules[0].levels.critical", line: 13, message: "must be above warning (3): severity rises with the value" },
      { path: "processors.thresholds.rules[1].levels.warning", line: 14, message: "an outside rule takes a [low, high] band per severity" },
      { path: "processors.thresholds.rules[2].colour", line: 15, message: expect.stringContaining("colour") },
    ]);
    expect(problems(topology(`      - { id: a, measure: vibration, comparison: above, levels: { warning: 1 } }
      - { id: a, measure: vibration, comparison: above, levels: { warning: 2 } }`))).toEqual([
      { path: "processors.thresholds.rules[1].id", line: 11, message: "rule id `a` is already used by rules[0]" },
    ]);
  });
});
