import { describe, expect, it } from "vitest";
import { ruleConfigSchema, toRule } from "../../pipelines/processors/threshold-rules.ts";
import { evaluateRule, IDLE_STATE } from "../../pipelines/processors/thresholds.ts";
import type { AlertEvent } from "../../schemas/generated.ts";
import { AlertEncodeError, decodeAlertEvent, encodeAlertEvent } from "./encode.ts";

const TENANT = "6f1c2a4e-3b5d-4c7e-9f80-1a2b3c4d5e6f";

function raisedEvent(): AlertEvent {
  const rule = toRule(ruleConfigSchema.parse({ id: "temp", measure: "temperature", comparison: "outside", levels: { warning: [20, 80] } }));
  const step = evaluateRule(rule, IDLE_STATE, { time: Date.UTC(2024, 0, 1), equipmentId: "oven/1", facilityId: "f1", temperature: 90.5 }, TENANT);
  return step.events[0]!;
}

describe("alert event encoding", () => {
  it("round-trips through the wire format; key, timestamp and headers come from the event", () => {
    const e = raisedEvent();
    const rec = encodeAlertEvent(e, 42);
    expect(rec.value.subarray(0, 5)).toEqual(Buffer.from([0, 0, 0, 0, 42]));
    expect(decodeAlertEvent(rec.value)).toEqual({ schemaId: 42, event: e });
    expect(rec.key).toBe(e.alert_id);
    expect(rec.timestamp).toBe(String(Date.UTC(2024, 0, 1)));
    expect(rec.headers).toEqual({ "millrace.alert.event_id": `${e.alert_id}/1`, "millrace.alert.step": "raised", "millrace.alert.severity": "warning", "millrace.tenant": TENANT });
  });

  it("a quota warning (no rule, no reading) encodes too", () => {
    const q: AlertEvent = {
      event_id: "a/1", alert_id: "a", seq: 1, step: "raised", kind: "quota", severity: "warning", previous_severity: null, tenant_id: TENANT,
      time: 1, rule: null, reading: null, quota: { registered: 80, max_equipment: 100, warn_percent: 80 }, reason: "equipment_quota_warning",
    };
    expect(decodeAlertEvent(encodeAlertEvent(q, 1).value).event).toEqual(q);
  });

  it("refuses an event that does not fit the schema, naming the field", () => {
    const e = { ...raisedEvent(), step: "exploded" } as unknown as AlertEvent;
    expect(() => encodeAlertEvent(e, 1)).toThrow(AlertEncodeError);
    expect(() => encodeAlertEvent(e, 1)).toThrow(/step="exploded"/);
  });
});
