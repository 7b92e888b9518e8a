import { describe, expect, it } from "vitest";
import type { SensorReading } from "../../schemas/index.ts";
import { validateReading, type TenantInfo } from "./validate.ts";

const T = "3f1c2a9e-1b2c-4d5e-8f90-0123456789ab";
const OTHER = "aaaaaaaa-bbbb-4ccc-8ddd-eeeeeeeeeeee";
const NOW = Date.UTC(2026, 0, 10);
const tenant: TenantInfo = { tenantId: T, status: "active", retentionDays: 30, maxEquipment: 10 };
const base: SensorReading = { time: NOW - 1000, tenant_id: T, equipment_id: "pump-01", facility_id: "fac-1", temperature: 20, vibration: null, pressure: 1, flow_rate: null };
const v = (r: Partial<SensorReading>, t: TenantInfo | null = tenant) =>
  validateReading({ ...base, ...r }, { topicTenantId: T, tenant: t ?? undefined, offset: 7, now: NOW }, { maxFutureSkewMs: 300_000 });

describe("validateReading", () => {
  it("accepts a good reading and stores it under the topic's tenant", () => {
    expect(v({})).toEqual({ ok: true, row: { offset: 7, time: NOW - 1000, tenantId: T, equipmentId: "pump-01", facilityId: "fac-1", temperature: 20, vibration: null, pressure: 1, flow_rate: null } });
  });
  it.each([
    [{ tenant_id: OTHER }, "tenant_mismatch"],
    [{ equipment_id: "" }, "invalid_equipment_id"],
    [{ equipment_id: "x".repeat(129) }, "invalid_equipment_id"],
    [{ equipment_id: "a b" }, "invalid_equipment_id"],
    [{ facility_id: "fac\u0000" }, "invalid_facility_id"],
    [{ time: NOW + 301_000 }, "time_in_future"],
    [{ time: NOW - 31 * 86_400_000 }, "time_too_old"],
    [{ temperature: NaN }, "non_finite_value"],
    [{ vibration: Infinity }, "non_finite_value"],
    [{ pressure: -Infinity }, "non_finite_value"],
    [{ flow_rate: NaN }, "non_finite_value"],
    [{ time: Date.parse("1899-12-31T23:59:59Z") }, "invalid_time"],
  ] as const)("rejects %j as %s", (r, reason) => {
    expect(v(r)).toMatchObject({ ok: false, reason });
  });
  it("rejects readings of unknown and suspended tenants", () => {
    expect(v({}, null)).toMatchObject({ ok: false, reason: "unknown_tenant" });
    expect(v({}, { ...tenant, status: "suspended" })).toMatchObject({ ok: false, reason: "tenant_suspended" });
  });
  it("unlimited retention keeps old readings, including before 1970 (class 13)", () => {
    expect(v({ time: Date.parse("1969-12-31T23:59:59Z") }, { ...tenant, retentionDays: null })).toMatchObject({ ok: true });
    expect(v({ time: Date.parse("2020-03-09T10:14:33Z") }, { ...tenant, retentionDays: null })).toMatchObject({ ok: true });
  });
  it("a mismatched tenant is refused even when that other tenant exists (security boundary)", () => {
    const r = v({ tenant_id: OTHER.toUpperCase() });
    expect(r).toMatchObject({ ok: false, reason: "tenant_mismatch" });
  });
});
