import { Command } from "commander";
import { describe, expect, it } from "vitest";
import { oldReplayHint, registerProduceCommands } from "./produce.ts";

const DAY = 86_400_000;
const NOW = Date.UTC(2026, 5, 1, 12);

describe("millrace produce csv: the hint after replaying old readings", () => {
  it("points at --start-at when the first reading is more than 30 days old and --start-at was not given", () => {
    const skab = Date.UTC(2020, 2, 9, 10, 14, 33);
    expect(oldReplayHint(skab, false, NOW)).toBe(
      "produce: hint: the first reading is from 2020-03-09T10:14:33.000Z, more than 30 days ago; readings older than the tenant's retention " +
        "are dead-lettered as time_too_old — to replay the file as recent data, give --start-at now-1h",
    );
    expect(oldReplayHint(NOW - 30 * DAY - 1, false, NOW)).toMatch(/^produce: hint: .*--start-at now-1h$/);
  });

  it("says nothing for recent readings, with --start-at, or when nothing was read", () => {
    expect(oldReplayHint(NOW - 30 * DAY, false, NOW)).toBeUndefined();
    expect(oldReplayHint(NOW - DAY, false, NOW)).toBeUndefined();
    expect(oldReplayHint(Date.UTC(2020, 2, 9), true, NOW)).toBeUndefined();
    expect(oldReplayHint(undefined, false, NOW)).toBeUndefined();
  });
});

describe("millrace produce csv --help", () => {
  it("says --start-at is the way to replay old files such as SKAB into a tenant with a retention", () => {
    const program = new Command();
    registerProduceCommands(program);
    const csv = program.commands.find((c) => c.name() === "produce")!.commands.find((c) => c.name() === "csv")!;
    const startAt = csv.options.find((o) => o.long === "--start-at")!;
    expect(startAt.description).toMatch(/; use it to replay old files such as SKAB \(2020\) into a tenant whose retention would refuse them$/);
  });
});
