/** `type: thresholds` — threshold rules on each reading: alarms raised, escalated, de-escalated and cleared as alert events. */
import { z } from "zod";
import { ruleConfigSchema, toRule } from "../../processors/threshold-rules.ts";
import { defineComponent, type ConfigProblem } from "../component-spec.ts";
import { duration } from "../fields.ts";

const config = z.strictObject({
  rules: z
    .array(ruleConfigSchema, { error: "expected a list of rules" })
    .prefault([])
    .describe(
      "The default rules every tenant gets; a tenant's overrides (`millrace rules set`) replace a default of the same id or add to them. Each rule: `id`, `name`, `measure` (temperature, vibration, pressure, flow_rate), `comparison` (above, below, outside), `levels` (warning/major/critical: a threshold, or a [low, high] band for outside), `sustain`, `deadband`, `clear_sustain`, `enabled` — see docs/alerts.md.",
    ),
  rules_refresh: duration({ min: 100 })
    .prefault("10s")
    .describe("How often a tenant's rule overrides are re-read from the database, so a change takes effect without a restart."),
});

function duplicateIds(c: z.output<typeof config>): ConfigProblem[] {
  const seen = new Map<string, number>();
  const out: ConfigProblem[] = [];
  c.rules.forEach((r, i) => {
    const first = seen.get(r.id);
    if (first !== undefined) out.push({ path: ["rules", i, "id"], message: `rule id \`${r.id}\` is already used by rules[${first}]` });
    else seen.set(r.id, i);
  });
  return out;
}

export const thresholds = defineComponent({
  type: "thresholds",
  kind: "processor",
  summary:
    "Evaluates threshold rules on every reading, per equipment and rule: a severity ladder, a sustain time in event time and a deadband for clearing. One alarm per (tenant, equipment, rule) is raised, escalated, de-escalated and cleared; each step is an alert event with a deterministic id, stored with the batch (alerts table) and published to alerts-{tenant_id}. Readings pass through unchanged; it rejects nothing.",
  config,
  framework: [],
  accepts: "stored_readings",
  emits: "stored_readings",
  example: {
    id: "thresholds",
    entry: {
      inputs: ["quota"],
      rules_refresh: "10s",
      rules: [{ id: "vibration_high", name: "Vibration high", measure: "vibration", comparison: "above", levels: { warning: 1.5, major: 2.5, critical: 4 }, sustain: "10s", deadband: 0.2 }],
    },
  },
  check: (c) => duplicateIds(c),
  plan: ({ id, config: c, inputs }) => ({
    id,
    type: "thresholds",
    input: inputs[0]!,
    rulesRefreshMs: c.rules_refresh,
    rules: c.rules
      .map(toRule)
      .filter((r) => r.enabled)
      .map(({ enabled: _enabled, ...rule }) => rule),
  }),
});
