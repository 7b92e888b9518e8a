import { Command, CommanderError, InvalidArgumentError } from "commander";
import { describe, expect, it } from "vitest";
import { toConfig, type ThresholdRule } from "../pipelines/processors/threshold-rules.ts";
import { buildDefinition, deadbandOption, listRules, registerRulesCommands } from "./rules.ts";

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
    expect(() => buildDefinition("x", undefined, { levels: { warning: "high" } })).toThrow(/expected a decimal number .*, low:high .* or none/);
  });

  it("levels and --deadband are plain decimal numbers: no empty value (Number(\"\") is 0), hex, binary, octal, Infinity or NaN", () => {
    const levels = (warning: string) => (buildDefinition("x", undefined, { levels: { warning } }) as { levels: unknown }).levels;
    for (const [raw, v] of [["-1.5", -1.5], ["2", 2], ["3e-2", 0.03], [".5", 0.5], ["+4", 4], ["1E+3", 1000], [" 7 ", 7], ["0.5:2", [0.5, 2]], ["-1e-3:2", [-0.001, 2]]] as const) {
      expect(levels(raw)).toEqual({ warning: v });
    }
    expect(levels("none")).toEqual({});
    for (const raw of ["", " ", "0x10", "0b1", "0o7", "Infinity", "-Infinity", "NaN", "1e999", "1.", "1..2", "1:", ":2", "0x1:2", "1:2:3", "5 m"]) {
      expect(() => levels(raw), raw).toThrow(InvalidArgumentError);
      expect(() => levels(raw), raw).toThrow(/--warning: expected a decimal number \(e\.g\. 2, -1\.5, 3e-2\), low:high \(e\.g\. 0\.5:2\) or none/);
    }
    expect(deadbandOption("0.2")).toBe(0.2);
    expect(deadbandOption("0")).toBe(0);
    expect(deadbandOption("1e-1")).toBe(0.1);
    for (const raw of ["", " ", "0x10", "Infinity", "NaN", "-1"]) expect(() => deadbandOption(raw), raw).toThrow(/--deadband must be a decimal number ≥ 0/);
  });

  it("rules set refuses a malformed level or deadband before doing anything", async () => {
    for (const args of [["--warning", ""], ["--critical", "0x10"], ["--major", " "], ["--deadband", ""], ["--deadband", "0x10"]]) {
      const program = new Command().exitOverride().configureOutput({ writeErr: () => {}, writeOut: () => {} });
      registerRulesCommands(program);
      // Never the real action (a database): only commander's option parsing is under test.
      program.commands.find((c) => c.name() === "rules")!.commands.find((c) => c.name() === "set")!.action(() => {
        throw new Error("the action ran");
      });
      await expect(program.parseAsync(["rules", "set", "--tenant", "3f1c2d4e-5a6b-4c7d-8e9f-0a1b2c3d4e5f", "--id", "vibration_high", ...args], { from: "user" }), args.join(" ")).rejects.toThrow(CommanderError);
    }
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
