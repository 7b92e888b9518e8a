/**
 * `millrace rules list|set|delete --tenant <uuid>`: a tenant's threshold rules. The defaults come
 * from topology.yaml (the `thresholds` processor); a tenant's overrides live in threshold_rules
 * (row-level security: every statement runs with the tenant's context) and replace a default of
 * the same id, add new rules, or switch a default off. Running workers pick a change up within
 * the processor's `rules_refresh`. Rule format and semantics: docs/alerts.md.
 *
 *   millrace rules list   --tenant T [--json]
 *   millrace rules set    --tenant T --id vibration_high --warning 2 --sustain 20s   (other fields: from the
 *                          tenant's current override, else the default of that id)
 *   millrace rules set    --tenant T --id pump_pressure --measure pressure --comparison outside \
 *                          --warning 2:8 --critical 1:9 --deadband 0.2 --sustain 5s
 *   millrace rules set    --tenant T --id temperature_high --disable
 *   millrace rules delete --tenant T --id vibration_high     (the default applies again)
 */
import { join } from "node:path";
import { InvalidArgumentError, type Command } from "commander";
import type pg from "pg";
import { stringify } from "yaml";
import { optionalEnv, requireEnv } from "../lib/env.ts";
import { loadRuleOverrides } from "../pipelines/processors/alarm-store.ts";
import { effectiveRules, parseRuleOverride, RULE_ID, SEVERITIES, toConfig, type RuleConfig, type RuleOverride, type Severity, type ThresholdRule } from "../pipelines/processors/threshold-rules.ts";
import { UUID } from "../pipelines/runtime/tenant-directory.ts";
import { loadTopology } from "../pipelines/topology/index.ts";
import { createPool } from "../sinks/timescale/pool.ts";
import { repoRoot } from "../stack/context.ts";

/** What `rules set` was given; undefined = keep the current value. */
export interface RuleFlags {
  name?: string;
  measure?: string;
  comparison?: string;
  /** Per severity: a number, `low:high`, or `none` to remove the level. */
  levels?: Partial<Record<Severity, string>>;
  sustain?: string;
  deadband?: number;
  clearSustain?: string;
  disable?: boolean;
  enable?: boolean;
}

/** The flags that make `rules set` store `c` (e.g. a rule kept in code, like the SKAB valve rule). */
export function ruleFlags(c: Readonly<RuleConfig>): RuleFlags {
  const levels: Partial<Record<Severity, string>> = {};
  for (const s of SEVERITIES) {
    const v = c.levels[s];
    if (v !== undefined) levels[s] = Array.isArray(v) ? `${v[0]}:${v[1]}` : String(v);
  }
  return {
    name: c.name,
    measure: c.measure,
    comparison: c.comparison,
    levels,
    sustain: c.sustain === undefined ? undefined : String(c.sustain),
    deadband: c.deadband === undefined ? undefined : Number(c.deadband),
    clearSustain: c.clear_sustain === undefined ? undefined : String(c.clear_sustain),
    enable: c.enabled === false ? undefined : true,
    disable: c.enabled === false ? true : undefined,
  };
}

/** A plain decimal number: optional sign, digits with an optional fraction (or `.5`), optional exponent. */
const DECIMAL = /^[+-]?(?:\d+(?:\.\d+)?|\.\d+)(?:e[+-]?\d+)?$/i;

/** `raw` as a plain decimal number; undefined for anything else (empty, hex, binary, octal, Infinity, NaN…), unlike Number(). */
function decimal(raw: string): number | undefined {
  const t = raw.trim();
  if (!DECIMAL.test(t)) return undefined;
  const n = Number(t);
  return Number.isFinite(n) ? n : undefined;
}

function levelValue(severity: Severity, raw: string): number | [number, number] | undefined {
  if (raw.trim() === "none") return undefined;
  const band = /^([^:]*):([^:]*)$/.exec(raw);
  const v = band ? [decimal(band[1]!), decimal(band[2]!)] : decimal(raw);
  if (v === undefined || (Array.isArray(v) && v.some((x) => x === undefined))) {
    throw new InvalidArgumentError(`--${severity}: expected a decimal number (e.g. 2, -1.5, 3e-2), low:high (e.g. 0.5:2) or none, got ${JSON.stringify(raw)}`);
  }
  return v as number | [number, number];
}

/** `--warning`/`--major`/`--critical`: refused at once when malformed; buildDefinition turns it into the level. */
function levelOption(severity: Severity): (raw: string) => string {
  return (raw) => {
    levelValue(severity, raw);
    return raw;
  };
}

/** `--deadband`: a plain decimal number ≥ 0. */
export function deadbandOption(raw: string): number {
  const n = decimal(raw);
  if (n === undefined || n < 0) throw new InvalidArgumentError(`--deadband must be a decimal number ≥ 0 (e.g. 0.2), got ${JSON.stringify(raw)}`);
  return n;
}

/**
 * The definition `rules set` stores: the flags over the tenant's current override of that id,
 * else over the default of that id, else over nothing (a new rule needs measure, comparison, levels).
 */
export function buildDefinition(id: string, base: RuleConfig | undefined, flags: RuleFlags): unknown {
  if (flags.disable) return { id, enabled: false };
  const out: Record<string, unknown> = { ...(base ?? {}), id };
  if (flags.name !== undefined) out.name = flags.name;
  if (flags.measure !== undefined) out.measure = flags.measure;
  if (flags.comparison !== undefined) {
    // A new comparison invalidates the old ladder unless levels are given as well.
    if (base && base.comparison !== flags.comparison && flags.levels === undefined) out.levels = {};
    out.comparison = flags.comparison;
  }
  if (flags.levels !== undefined) {
    const levels: Record<string, unknown> = base && (flags.comparison === undefined || flags.comparison === base.comparison) ? { ...base.levels } : {};
    for (const s of SEVERITIES) {
      const raw = flags.levels[s];
      if (raw === undefined) continue;
      const v = levelValue(s, raw);
      if (v === undefined) delete levels[s];
      else levels[s] = v;
    }
    out.levels = levels;
  }
  if (flags.sustain !== undefined) out.sustain = flags.sustain;
  if (flags.deadband !== undefined) out.deadband = flags.deadband;
  if (flags.clearSustain !== undefined) out.clear_sustain = flags.clearSustain;
  if (flags.enable) out.enabled = true;
  return out;
}

export interface ListedRule {
  id: string;
  /** default: from topology.yaml; override: the tenant's version of a default; tenant: the tenant's own; disabled: a default switched off. */
  source: "default" | "override" | "tenant" | "disabled";
  rule: RuleConfig | { id: string; enabled: false };
}

/** The tenant's rules, effective ones first in evaluation order, then disabled defaults. */
export function listRules(defaults: readonly ThresholdRule[], overrides: readonly RuleOverride[]): ListedRule[] {
  const defaultIds = new Set(defaults.map((d) => d.id));
  const overridden = new Set(overrides.map((o) => o.id));
  const out: ListedRule[] = effectiveRules(defaults, overrides).map((r) => ({
    id: r.id,
    source: !defaultIds.has(r.id) ? "tenant" : overridden.has(r.id) ? "override" : "default",
    rule: toConfig(r),
  }));
  for (const o of overrides) if (o.enabled === false) out.push({ id: o.id, source: defaultIds.has(o.id) ? "disabled" : "tenant", rule: { id: o.id, enabled: false } });
  return out;
}

async function inTenant<T>(pool: pg.Pool, tenantId: string, fn: (c: pg.PoolClient) => Promise<T>): Promise<T> {
  const c = await pool.connect();
  try {
    await c.query("BEGIN");
    await c.query("SELECT set_config('app.current_tenant_id', $1, true)", [tenantId]);
    const out = await fn(c);
    await c.query("COMMIT");
    return out;
  } catch (err) {
    await c.query("ROLLBACK").catch(() => {});
    throw err;
  } finally {
    c.release();
  }
}

async function requireTenant(pool: pg.Pool, tenantId: string): Promise<void> {
  const r = await pool.query("SELECT 1 FROM tenants WHERE tenant_id = $1 AND status <> 'deleted'", [tenantId]);
  if (r.rowCount === 0) throw new Error(`tenant ${tenantId} is not registered`);
}

/** `rules set`: validate and upsert; returns the stored definition or the problems. */
export async function setRule(
  pool: pg.Pool,
  tenantId: string,
  id: string,
  defaults: readonly ThresholdRule[],
  flags: RuleFlags,
): Promise<{ ok: true; stored: unknown } | { ok: false; problems: string[] }> {
  await requireTenant(pool, tenantId);
  const { overrides } = await loadRuleOverrides(pool, tenantId);
  const current = overrides.find((o) => o.id === id);
  const def = defaults.find((d) => d.id === id);
  const base = current && current.enabled !== false ? toConfig(current) : def ? toConfig(def) : undefined;
  const definition = buildDefinition(id, base, flags);
  const parsed = parseRuleOverride(definition);
  if (!parsed.ok) return parsed;
  if (parsed.rule.enabled === false && !def) return { ok: false, problems: [`${id} is not a default rule: delete it instead of disabling it`] };
  const stored = parsed.rule.enabled === false ? parsed.rule : toConfig(parsed.rule);
  await inTenant(pool, tenantId, (c) =>
    c.query(
      `INSERT INTO threshold_rules (tenant_id, rule_id, definition) VALUES ($1, $2, $3)
       ON CONFLICT (tenant_id, rule_id) DO UPDATE SET definition = EXCLUDED.definition, updated_at = now()`,
      [tenantId, id, JSON.stringify(stored)],
    ),
  );
  return { ok: true, stored };
}

/** `rules delete`: true if there was an override. */
export async function deleteRule(pool: pg.Pool, tenantId: string, id: string): Promise<boolean> {
  await requireTenant(pool, tenantId);
  const r = await inTenant(pool, tenantId, (c) => c.query("DELETE FROM threshold_rules WHERE tenant_id = $1 AND rule_id = $2", [tenantId, id]));
  return (r.rowCount ?? 0) > 0;
}

function tenantOption(raw: string): string {
  const t = raw.trim().toLowerCase();
  if (!UUID.test(t)) throw new InvalidArgumentError(`expected a tenant UUID, got ${raw}`);
  return t;
}

function ruleIdOption(raw: string): string {
  if (!RULE_ID.test(raw)) throw new InvalidArgumentError(`rule ids are snake_case (a lower-case letter, then lower-case letters, digits or _), got ${raw}`);
  return raw;
}

function defaultRules(topologyFile: string): readonly ThresholdRule[] {
  const plan = loadTopology(topologyFile);
  return plan.processors.find((p) => p.type === "thresholds")?.rules ?? [];
}

function writerPool(): pg.Pool {
  const url = optionalEnv("MILLRACE_PG_URL") ?? requireEnv("MILLRACE_PG_ADMIN_URL");
  const role = optionalEnv("MILLRACE_PG_ROLE") ?? (optionalEnv("MILLRACE_PG_URL") ? undefined : "millrace_writer");
  return createPool({ connectionString: url, role, max: 1, applicationName: "millrace-rules" });
}

async function withPool<T>(fn: (pool: pg.Pool) => Promise<T>): Promise<T> {
  const pool = writerPool();
  try {
    return await fn(pool);
  } finally {
    await pool.end();
  }
}

export function registerRulesCommands(program: Command): void {
  const rules = program.command("rules").description("a tenant's threshold rules: defaults from topology.yaml, overrides in the database (docs/alerts.md)");
  const common = (c: Command) =>
    c
      .requiredOption("--tenant <uuid>", "the tenant", tenantOption)
      .option("-t, --topology <file>", "topology file with the default rules", join(repoRoot, "topology.yaml"));

  common(rules.command("list").description("the tenant's effective rules (default, override, tenant) and disabled defaults, as YAML"))
    .option("--json", "print JSON instead of YAML")
    .action(async (o: { tenant: string; topology: string; json?: boolean }) => {
      const defaults = defaultRules(o.topology);
      const listed = await withPool(async (pool) => {
        await requireTenant(pool, o.tenant);
        const { overrides, problems } = await loadRuleOverrides(pool, o.tenant);
        for (const p of problems) process.stderr.write(`warning: stored rule ${p.ruleId} is invalid and ignored by workers: ${p.problems.join("; ")}\n`);
        return listRules(defaults, overrides);
      });
      if (o.json) process.stdout.write(`${JSON.stringify(listed, null, 2)}\n`);
      else {
        for (const l of listed) process.stdout.write(`# ${l.source}\n${stringify([l.rule], { lineWidth: 0, flowCollectionPadding: false })}`);
        if (listed.length === 0) process.stdout.write("# no rules\n");
      }
    });

  common(rules.command("set").description("create or change the tenant's rule <id> (fields not given keep their current or default value)"))
    .requiredOption("--id <rule>", "rule id (snake_case)", ruleIdOption)
    .option("--name <text>", "human-readable name")
    .option("--measure <measure>", "temperature, vibration, pressure or flow_rate")
    .option("--comparison <comparison>", "above, below or outside")
    .option("--warning <value>", "warning level: a threshold, low:high for outside, or none", levelOption("warning"))
    .option("--major <value>", "major level: a threshold, low:high for outside, or none", levelOption("major"))
    .option("--critical <value>", "critical level: a threshold, low:high for outside, or none", levelOption("critical"))
    .option("--sustain <duration>", "how long a level must hold before raising/escalating, e.g. 30s")
    .option("--deadband <number>", "hysteresis in the measure's unit", deadbandOption)
    .option("--clear-sustain <duration>", "how long the value must be back before de-escalating/clearing")
    .option("--disable", "switch the default rule <id> off for this tenant")
    .option("--enable", "switch a rule back on")
    .action(async (o: { tenant: string; topology: string; id: string } & Omit<RuleFlags, "levels"> & Partial<Record<Severity, string>>) => {
      if (o.enable && o.disable) throw new InvalidArgumentError("--enable and --disable contradict each other: give one");
      const levels: Partial<Record<Severity, string>> = {};
      for (const s of SEVERITIES) if (o[s] !== undefined) levels[s] = o[s];
      const flags: RuleFlags = { ...o, levels: Object.keys(levels).length > 0 ? levels : undefined };
      const res = await withPool((pool) => setRule(pool, o.tenant, o.id, defaultRules(o.topology), flags));
      if (!res.ok) {
        process.stderr.write(`rule ${o.id} not stored:\n${res.problems.map((p) => `  ${p}`).join("\n")}\n`);
        process.exitCode = 1;
        return;
      }
      process.stdout.write(`stored (workers apply it within their rules_refresh):\n${stringify([res.stored], { lineWidth: 0, flowCollectionPadding: false })}`);
    });

  common(rules.command("delete").description("remove the tenant's override or rule <id> (a default of that id applies again)"))
    .requiredOption("--id <rule>", "rule id", ruleIdOption)
    .action(async (o: { tenant: string; id: string }) => {
      const deleted = await withPool((pool) => deleteRule(pool, o.tenant, o.id));
      process.stdout.write(deleted ? `deleted ${o.id}\n` : `tenant ${o.tenant} has no rule ${o.id} of its own\n`);
    });
}
