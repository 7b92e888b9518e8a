/**
 * Validate: a decoded reading becomes a stored reading, or a rejection with a reason.
 * Pure and synchronous; the tenant directory and clock are passed in.
 *
 * Rules (each a dead-letter reason):
 *  - tenant_mismatch: payload tenant_id differs from the topic's tenant (a security boundary: such
 *    a reading is stored under neither tenant)
 *  - unknown_tenant / tenant_suspended: the topic's tenant is not active
 *  - invalid_time: before 1900-01-01 (a clock error, whatever the retention)
 *  - time_in_future: more than `maxFutureSkewMs` ahead of the worker's clock
 *  - time_too_old: older than the tenant's retention (NULL retention = unlimited)
 *  - non_finite_value: NaN or ±Infinity in a measure (null is fine: "not measured"); the same policy
 *    applies to PostgreSQL and Parquet because both receive only validated readings
 *  - invalid_equipment_id / invalid_facility_id: 1–128 characters of [A-Za-z0-9._:/-]
 */
import type { Tier } from "../../tenants/tiers.ts";
import type { SensorReading } from "../../schemas/index.ts";
import { MEASURES, type StoredReading } from "../reading.ts";
import type { DatabaseRef } from "../../tenants/database.ts";

export interface TenantInfo {
  tenantId: string;
  status: "active" | "suspended" | "deleted";
  /** null = unlimited. */
  retentionDays: number | null;
  maxEquipment: number;
  /** Subscription tier (rate limits); absent in tests that build tenants by hand = basic. */
  tier?: Tier;
  /** Its dedicated database (tenants/database.ts); absent = the shared database. */
  database?: DatabaseRef;
  /** Why its database_ref could not be used (the worker refuses to route its records until fixed). */
  databaseProblem?: string;
}

export interface ValidateOptions {
  maxFutureSkewMs: number;
}

/** Readings before 1900 are certainly clock errors (and keep partition creation bounded). */
export const MIN_TIME = Date.UTC(1900, 0, 1);

export const ID_PATTERN = /^[A-Za-z0-9._:/-]{1,128}$/;

export type ValidateResult = { ok: true; row: StoredReading } | { ok: false; reason: string; message: string };


export function validateReading(
  r: SensorReading,
  ctx: { topicTenantId: string; tenant: TenantInfo | undefined; offset: number; now: number },
  opts: ValidateOptions,
): ValidateResult {
  if (r.tenant_id.toLowerCase() !== ctx.topicTenantId) {
    return {
      ok: false,
      reason: "tenant_mismatch",
      message: `payload tenant_id ${JSON.stringify(r.tenant_id.slice(0, 64))} is not the topic's tenant ${ctx.topicTenantId}`,
    };
  }
  const t = ctx.tenant;
  if (t === undefined || t.status === "deleted") return { ok: false, reason: "unknown_tenant", message: `tenant ${ctx.topicTenantId} is not registered` };
  if (t.status === "suspended") return { ok: false, reason: "tenant_suspended", message: `tenant ${ctx.topicTenantId} is suspended` };
  if (!ID_PATTERN.test(r.equipment_id)) {
    return { ok: false, reason: "invalid_equipment_id", message: `equipment_id must be 1-128 characters of [A-Za-z0-9._:/-], got ${JSON.stringify(r.equipment_id.slice(0, 140))}` };
  }
  if (!ID_PATTERN.test(r.facility_id)) {
    return { ok: false, reason: "invalid_facility_id", message: `facility_id must be 1-128 characters of [A-Za-z0-9._:/-], got ${JSON.stringify(r.facility_id.slice(0, 140))}` };
  }
  if (!Number.isFinite(r.time) || r.time < MIN_TIME) {
    return { ok: false, reason: "invalid_time", message: `time ${r.time} is not an instant after 1900-01-01T00:00:00Z` };
  }
  if (r.time > ctx.now + opts.maxFutureSkewMs) {
    return { ok: false, reason: "time_in_future", message: `time ${new Date(r.time).toISOString()} is more than ${opts.maxFutureSkewMs} ms ahead of the worker clock` };
  }
  if (t.retentionDays !== null && r.time < ctx.now - t.retentionDays * 86_400_000) {
    return { ok: false, reason: "time_too_old", message: `time ${new Date(r.time).toISOString()} is older than the tenant's ${t.retentionDays}-day retention` };
  }
  for (const m of MEASURES) {
    // A measure the writer's schema lacks is null after resolution; absent (undefined) counts as null too.
    const v: number | null | undefined = r[m];
    if (v !== null && v !== undefined && !Number.isFinite(v)) return { ok: false, reason: "non_finite_value", message: `${m} is ${v}; measures must be finite numbers or null` };
  }
  return {
    ok: true,
    row: {
      offset: ctx.offset,
      time: r.time,
      tenantId: ctx.topicTenantId,
      equipmentId: r.equipment_id,
      facilityId: r.facility_id,
      temperature: r.temperature,
      vibration: r.vibration,
      pressure: r.pressure,
      flow_rate: r.flow_rate ?? null,
    },
  };
}
