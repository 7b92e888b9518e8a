import { describe, expect, it } from "vitest";
import { toConfig, type ThresholdRule } from "../pipelines/processors/threshold-rules.ts";
import { buildDefinition, listRules } from "./rules.ts";

const vib: ThresholdRule = {
  id: "vibration_high",
  name: "Vibration high",
  measure: "vibration",
  comparison: "above",
  levels: [
    { severity: "warning", threshold: 1.5 },
    { severity: "critical", threshold: 4 },
  ],
  sustainMs: 10_000,
  deadband: 0.2,
  clearSustainMs: 0,
};

describe("millrace rules set: the stored definition", () => {
  it("keeps what is not given from the base (the default or the current override)", () => {
    expect(buildDefinition("vibration_high", toConfig(vib), { levels: { warning: "2", critical: "none" }, sustain: "20s" })).toEqual({
      ...toConfig(vib),
      levels: { warning: 2 },
      sustain: "20s",
    });
  });

  it("a band is low:high; changing the comparison drops the old ladder unless new levels are given", () => {
    expect(buildDefinition("vibration_high", toConfig(vib), { comparison: "outside" })).toMatchObject({ comparison: "outside", levels: {} });
    expect(buildDefinition("vibration_high", toConfig(vib), { comparison: "outside", levels: { warning: "0.1:1.5", major: "-1e-3:2" } })).toMatchObject({
      comparison: "outside",
      levels: { warning: [0.1, 1.5], major: [-0.001, 2] },
    });
    expect(() => buildDefinition("x", undefined, { levels: { warning: "high" } })).toThrow(/expected a number, low:high or none/);
  });

  it("--disable stores only { id, enabled: false }", () => {
    expect(buildDefinition("vibration_high", toConfig(vib), { disable: true, sustain: "1s" })).toEqual({ id: "vibration_high", enabled: false });
  });
});

describe("millrace rules list", () => {
  it("says where each rule comes from", () => {
    const listed = listRules(
      [vib, { ...vib, id: "temp" }, { ...vib, id: "other" }],
      [
        { ...vib, id: "temp", deadband: 1, enabled: true },
        { id: "other", enabled: false },
        { ...vib, id: "mine", enabled: true },
      ],
    );
    expect(listed.map((l) => `${l.id}:${l.source}`)).toEqual(["vibration_high:default", "temp:override", "mine:tenant", "other:disabled"]);
    expect(listed[1]!.rule).toMatchObject({ deadband: 1, sustain: "10s" });
  });
});
