/**
 * Threshold rules: what one is, how it is written (topology.yaml, `millrace rules set`, the
 * threshold_rules table all use the same snake_case form, validated by the same schema) and how a
 * tenant's effective rules are made from the defaults and its overrides. Pure.
 *
 *   - id: vibration_high            # snake_case, unique per tenant
 *     name: Vibration high          # optional, default: the id
 *     measure: vibration            # temperature | vibration | pressure | flow_rate
 *     comparison: above             # above | below | outside (a band)
 *     levels: { warning: 1.5, major: 2.5, critical: 4 }   # outside: { warning: [2, 8], critical: [1, 9] }
 *     sustain: 10s                  # the level's condition must hold this long (event time); default 0s
 *     deadband: 0.2                 # hysteresis: leave a level only this far back on the normal side
 *     clear_sustain: 0s             # ...and only after being there this long; default 0s
 *     enabled: true                 # an override with `enabled: false` switches a default off
 *
 * Severity ladder: at least one of warning < major < critical; thresholds must rise with severity
 * for `above`, fall for `below`, and bands must nest (each more severe band strictly wider).
 */
import { z } from "zod";
import { boolean, duration, number, text } from "../topology/fields.ts";
import { formatDuration } from "../topology/units.ts";

import { MEASURES, type Measure } from "../reading.ts";
export { MEASURES, type Measure };

/** In rank order: index = rank. */
export const SEVERITIES = ["warning", "major", "critical"] as const;
export type Severity = (typeof SEVERITIES)[number];

export const COMPARISONS = ["above", "below", "outside"] as const;
export type Comparison = (typeof COMPARISONS)[number];

export const RULE_ID = /^[a-z][a-z0-9_]{0,62}$/;

/** One rung of the ladder. above/below use `threshold`; outside uses `low`/`high` (the band that is normal). */
export type ThresholdLevel = { severity: Severity; threshold: number } | { severity: Severity; low: number; high: number };

interface RuleBase<M extends string> {
  id: string;
  name: string;
  measure: M;
  /** Event time a level's condition must hold before the alarm is raised or escalated to it. */
  sustainMs: number;
  /** Hysteresis in the measure's unit: a level is left only when the value is this far back inside. */
  deadband: number;
  /** Event time the value must stay outside the current level's hysteresis band before de-escalating or clearing. */
  clearSustainMs: number;
}

/** A validated rule, levels ordered warning → critical. `M` is the measure vocabulary (the schema's by default). */
export type ThresholdRule<M extends string = Measure> = RuleBase<M> &
  (
    | { comparison: "above" | "below"; levels: ReadonlyArray<{ severity: Severity; threshold: number }> }
    | { comparison: "outside"; levels: ReadonlyArray<{ severity: Severity; low: number; high: number }> }
  );

export function severityRank(s: Severity): number {
  return SEVERITIES.indexOf(s);
}

const levelValue = z.union([z.number({ error: "expected a number" }), z.tuple([z.number(), z.number()], { error: "expected [low, high]" })], {
  error: "expected a threshold (above/below) or a [low, high] band (outside)",
});

const levelsSchema = z
  .strictObject({ warning: levelValue.optional(), major: levelValue.optional(), critical: levelValue.optional() })
  .describe("The severity ladder: a threshold per severity (above/below) or a [low, high] normal band per severity (outside).");

/** A rule as written (snake_case, units as strings), before {@link toRule}. */
export const ruleConfigSchema = z
  .strictObject({
    id: z.string({ error: "expected a rule id" }).regex(RULE_ID, { error: "must be snake_case: a lower-case letter, then up to 62 lower-case letters, digits or _" }),
    name: text().optional(),
    measure: z.enum(MEASURES, { error: `expected one of ${MEASURES.join(", ")}` }),
    comparison: z.enum(COMPARISONS, { error: `expected one of ${COMPARISONS.join(", ")}` }),
    levels: levelsSchema,
    sustain: duration({ min: 0, max: 86_400_000 }).prefault("0s"),
    deadband: number({ min: 0 }).prefault(0),
    clear_sustain: duration({ min: 0, max: 86_400_000 }).prefault("0s"),
    enabled: boolean().prefault(true),
  })
  .superRefine((r, ctx) => {
    for (const p of ladderProblems(r.comparison, r.levels, r.deadband)) ctx.addIssue({ code: "custom", path: p.path, message: p.message });
  });

export type RuleConfig = z.input<typeof ruleConfigSchema>;
type ParsedRuleConfig = z.output<typeof ruleConfigSchema>;

/** A tenant override that only switches a rule (usually a default) off. */
export const disabledRuleSchema = z.strictObject({
  id: z.string().regex(RULE_ID, { error: "must be snake_case" }),
  enabled: z.literal(false),
});

/** What a threshold_rules row's `definition` holds: a full rule, or `{ id, enabled: false }`. */
export const ruleOverrideSchema = z.union([disabledRuleSchema, ruleConfigSchema]);
export type RuleOverride = { id: string; enabled: false } | (ThresholdRule & { enabled: boolean });

function ladderProblems(
  comparison: Comparison,
  levels: Partial<Record<Severity, number | [number, number]>>,
  deadband: number,
): Array<{ path: (string | number)[]; message: string }> {
  const out: Array<{ path: (string | number)[]; message: string }> = [];
  const present = SEVERITIES.filter((s) => levels[s] !== undefined);
  if (present.length === 0) out.push({ path: ["levels"], message: "needs at least one of warning, major, critical" });
  let prev: { s: Severity; v: number | [number, number] } | undefined;
  for (const s of present) {
    const v = levels[s]!;
    const band = Array.isArray(v);
    if (comparison === "outside" && !band) {
      out.push({ path: ["levels", s], message: "an outside rule takes a [low, high] band per severity" });
      continue;
    }
    if (comparison !== "outside" && band) {
      out.push({ path: ["levels", s], message: `${comparison === "above" ? "an" : "a"} ${comparison} rule takes one threshold per severity, not a band` });
      continue;
    }
    if (band) {
      const [low, high] = v;
      if (!(low < high)) out.push({ path: ["levels", s], message: `low (${low}) must be below high (${high})` });
      else if (deadband * 2 >= high - low) out.push({ path: ["deadband"], message: `must be less than half the ${s} band's width (${high - low})` });
    }
    if (prev) {
      const p = prev.v;
      if (comparison === "above" && !((v as number) > (p as number))) out.push({ path: ["levels", s], message: `must be above ${prev.s} (${p}): severity rises with the value` });
      if (comparison === "below" && !((v as number) < (p as number))) out.push({ path: ["levels", s], message: `must be below ${prev.s} (${p}): severity rises as the value falls` });
      if (comparison === "outside" && Array.isArray(p) && band && !(v[0] < p[0] && v[1] > p[1])) {
        out.push({ path: ["levels", s], message: `must be strictly wider than ${prev.s} [${p[0]}, ${p[1]}]: a more severe band lies outside a less severe one` });
      }
    }
    prev = { s, v };
  }
  return out;
}

/** Validated config → rule. */
export function toRule(c: ParsedRuleConfig): ThresholdRule & { enabled: boolean } {
  const present = SEVERITIES.filter((s) => c.levels[s] !== undefined);
  const tail = { sustainMs: c.sustain, deadband: c.deadband, clearSustainMs: c.clear_sustain, enabled: c.enabled };
  const head = { id: c.id, name: c.name ?? c.id, measure: c.measure };
  if (c.comparison === "outside") {
    const levels = present.map((s) => ({ severity: s, low: (c.levels[s] as [number, number])[0], high: (c.levels[s] as [number, number])[1] }));
    return { ...head, comparison: "outside", levels, ...tail };
  }
  return { ...head, comparison: c.comparison, levels: present.map((s) => ({ severity: s, threshold: c.levels[s] as number })), ...tail };
}

/** Rule → the written form (what `millrace rules list` prints and the table stores). */
export function toConfig(r: ThresholdRule & { enabled?: boolean }): RuleConfig {
  const levels: Partial<Record<Severity, number | [number, number]>> = {};
  for (const l of r.levels) levels[l.severity] = "threshold" in l ? l.threshold : [l.low, l.high];
  return {
    id: r.id,
    name: r.name,
    measure: r.measure as Measure,
    comparison: r.comparison,
    levels,
    sustain: formatDuration(r.sustainMs),
    deadband: r.deadband,
    clear_sustain: formatDuration(r.clearSustainMs),
    enabled: r.enabled ?? true,
  };
}

export type RuleParse = { ok: true; rule: RuleOverride } | { ok: false; problems: string[] };

/** Parse a definition (from the table or the CLI); every problem, as `path: message`. */
export function parseRuleOverride(raw: unknown): RuleParse {
  const off = disabledRuleSchema.safeParse(raw);
  if (off.success) return { ok: true, rule: off.data };
  const r = ruleConfigSchema.safeParse(raw);
  if (!r.success) return { ok: false, problems: r.error.issues.map((i) => `${i.path.length > 0 ? `${i.path.join(".")}: ` : ""}${i.message}`) };
  return { ok: true, rule: toRule(r.data) };
}

/**
 * A tenant's effective rules: the defaults, each replaced by the tenant's override of the same id,
 * plus the tenant's own rules; disabled ones left out. Order: defaults first (in their order), then
 * the tenant's additions by id — deterministic, so events within one reading come out in one order.
 */
export function effectiveRules(defaults: readonly ThresholdRule[], overrides: readonly RuleOverride[]): ThresholdRule[] {
  const byId = new Map(overrides.map((o) => [o.id, o]));
  const out: ThresholdRule[] = [];
  for (const d of defaults) {
    const o = byId.get(d.id);
    if (o === undefined) out.push(d);
    else if (o.enabled !== false) out.push(stripEnabled(o));
  }
  const defaultIds = new Set(defaults.map((d) => d.id));
  for (const o of [...overrides].sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0))) {
    if (!defaultIds.has(o.id) && o.enabled !== false) out.push(stripEnabled(o));
  }
  return out;
}

function stripEnabled(o: ThresholdRule & { enabled?: boolean }): ThresholdRule {
  const { enabled: _enabled, ...rule } = o;
  return rule as ThresholdRule;
}
