/** `type: equipment_quota` — per-tenant equipment limit (exact, in PostgreSQL) and per-tier message rate limits. */
import { z } from "zod";
import type { Tier } from "../../../tenants/tiers.ts";
import { defineComponent } from "../component-spec.ts";
import { duration, integer } from "../fields.ts";

/** Readings per second: a positive integer, or `unlimited` (→ Infinity: no rate limit). */
function rate() {
  return z
    .unknown()
    .transform((raw, ctx) => {
      if (raw === "unlimited") return Number.POSITIVE_INFINITY;
      if (typeof raw === "number" && Number.isSafeInteger(raw) && raw >= 1) return raw;
      ctx.addIssue({ code: "custom", message: "expected readings per second (an integer ≥ 1) or `unlimited`" });
      return z.NEVER;
    })
    .meta({ docType: "integer or `unlimited`" });
}

const rateHelp = (tier: Tier) =>
  `Readings per second a ${tier}-tier tenant may sustain, over all its partitions (a token bucket per tenant and worker). Above it the tenant's partitions are paused for as long as it is ahead — slowed, never dropped; other tenants are unaffected. \`unlimited\` turns it off.`;
const burstHelp = (tier: Tier) => `Readings a ${tier}-tier tenant may send above its rate before it is slowed (the bucket's size).`;

const config = z.strictObject({
  rejection_ttl: duration({ min: 0 })
    .prefault("5s")
    .describe("How long a worker trusts a refusal (tenant at its max_equipment) before asking the database again; a raised limit admits waiting equipment within this, or at once when the tenant directory sees the new limit."),
  warn_percent: integer({ min: 1, max: 100 })
    .prefault(80)
    .describe("A warning alert (kind quota) is raised once per tenant and limit when its registered equipment reaches this share of max_equipment."),
  basic_rate: rate().prefault(1_000).describe(rateHelp("basic")),
  basic_burst: integer({ min: 1 }).prefault(20_000).describe(burstHelp("basic")),
  professional_rate: rate().prefault(10_000).describe(rateHelp("professional")),
  professional_burst: integer({ min: 1 }).prefault(200_000).describe(burstHelp("professional")),
  enterprise_rate: rate().prefault("unlimited").describe(rateHelp("enterprise")),
  enterprise_burst: integer({ min: 1 }).prefault(1_000_000).describe(burstHelp("enterprise")),
});

export const equipmentQuota = defineComponent({
  type: "equipment_quota",
  kind: "processor",
  summary:
    "The tenant's equipment limit: the first reading of a new equipment id registers it while the tenant has fewer than max_equipment (exact across replicas: admission happens in PostgreSQL, once per chunk, never per record); readings of further new equipment are rejected as quota_exceeded. Also the per-tier message rate: a tenant above its tier's rate has its partitions paused until it is back within it (never dropped). Readings that pass are unchanged.",
  config,
  framework: [],
  accepts: "stored_readings",
  emits: "stored_readings",
  example: { id: "quota", entry: { inputs: ["validate"], rejection_ttl: "5s", warn_percent: 80, basic_rate: 1000, basic_burst: 20000 } },
  plan: ({ id, config: c, inputs }) => ({
    id,
    type: "equipment_quota",
    input: inputs[0]!,
    rejectionTtlMs: c.rejection_ttl,
    warnPercent: c.warn_percent,
    rateLimits: {
      basic: limit(c.basic_rate, c.basic_burst),
      professional: limit(c.professional_rate, c.professional_burst),
      enterprise: limit(c.enterprise_rate, c.enterprise_burst),
    },
  }),
});

function limit(perSecond: number, burst: number): { perSecond: number; burst: number } | null {
  return Number.isFinite(perSecond) ? { perSecond, burst } : null;
}
