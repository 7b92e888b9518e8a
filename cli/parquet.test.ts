import { Command } from "commander";
import { describe, expect, it } from "vitest";
import { registerParquetCommands } from "./parquet.ts";

function abortStale(): Command {
  const program = new Command().exitOverride().configureOutput({ writeErr: () => {}, writeOut: () => {} });
  registerParquetCommands(program);
  return program.commands.find((c) => c.name() === "parquet")!.commands.find((c) => c.name() === "abort-stale")!;
}

describe("millrace parquet abort-stale --older-than", () => {
  it("--help shows the default as a duration (15m), not milliseconds", () => {
    const help = abortStale().helpInformation();
    expect(help).toMatch(/--older-than <duration>\s+only uploads started longer ago than this \(0s: all\)\s+\(default: 15m\)/);
    expect(help).not.toContain("900000");
  });

  it("the default is still 15 minutes in milliseconds; a given duration is parsed", async () => {
    const cmd = abortStale();
    let got: { olderThan: number } | undefined;
    cmd.action((o: { olderThan: number }) => {
      got = o;
    });
    const tenant = "3f1c2d4e-5a6b-4c7d-8e9f-0a1b2c3d4e5f";
    await cmd.parent!.parent!.parseAsync(["parquet", "abort-stale", "--tenant", tenant], { from: "user" });
    expect(got!.olderThan).toBe(900_000);
    await cmd.parent!.parent!.parseAsync(["parquet", "abort-stale", "--tenant", tenant, "--older-than", "1h"], { from: "user" });
    expect(got!.olderThan).toBe(3_600_000);
  });
});
