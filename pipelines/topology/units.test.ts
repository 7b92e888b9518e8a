import { describe, expect, it } from "vitest";
import { formatDuration, formatSize, parseDuration, parseSize } from "./units.ts";

describe("units", () => {
  it("parses durations with a unit, and only those", () => {
    expect(parseDuration("100ms")).toEqual({ ok: true, value: 100 });
    expect(parseDuration("30s")).toEqual({ ok: true, value: 30_000 });
    expect(parseDuration("5m")).toEqual({ ok: true, value: 300_000 });
    expect(parseDuration("1h")).toEqual({ ok: true, value: 3_600_000 });
    expect(parseDuration("1.5s")).toEqual({ ok: true, value: 1_500 });
    for (const bad of [30, "30", "5 min", "-1s", "0.5ms", true]) expect(parseDuration(bad).ok).toBe(false);
  });

  it("parses binary sizes and plain byte counts", () => {
    expect(parseSize("512KiB")).toEqual({ ok: true, value: 512 * 1024 });
    expect(parseSize("4MiB")).toEqual({ ok: true, value: 4 * 1024 ** 2 });
    expect(parseSize("1GiB")).toEqual({ ok: true, value: 1024 ** 3 });
    expect(parseSize(1000)).toEqual({ ok: true, value: 1000 });
    expect(parseSize("1000")).toEqual({ ok: true, value: 1000 });
    for (const bad of ["4MB", "4mib", -1, 1.5, "lots", null]) expect(parseSize(bad).ok).toBe(false);
  });

  it("formats with the largest exact unit", () => {
    expect([0, 100, 1500, 30_000, 60_000, 300_000, 3_600_000].map(formatDuration)).toEqual(["0ms", "100ms", "1500ms", "30s", "1m", "5m", "1h"]);
    expect([0, 1000, 1024, 4 * 1024 ** 2, 1024 ** 3].map(formatSize)).toEqual(["0", "1000", "1KiB", "4MiB", "1GiB"]);
  });
});
