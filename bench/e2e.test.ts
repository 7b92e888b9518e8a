import { describe, expect, it } from "vitest";
import { sumCounter } from "./e2e.ts";

describe("bench e2e helpers", () => {
  it("sums a counter's samples from a Prometheus exposition, and only that counter's", () => {
    const text = [
      "# HELP millrace_rate_limit_delay_seconds_total Time …",
      "# TYPE millrace_rate_limit_delay_seconds_total counter",
      'millrace_rate_limit_delay_seconds_total{tenant="a",instance="i"} 1.5',
      'millrace_rate_limit_delay_seconds_total{tenant="b",instance="i"} 2',
      'millrace_rate_limit_delay_seconds_total_other{tenant="c"} 100',
      "millrace_records_total 7",
    ].join("\n");
    expect(sumCounter(text, "millrace_rate_limit_delay_seconds_total")).toBe(3.5);
    expect(sumCounter(text, "millrace_records_total")).toBe(7);
    expect(sumCounter("", "millrace_records_total")).toBe(0);
  });
});
