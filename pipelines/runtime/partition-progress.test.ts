import client from "prom-client";
import { describe, expect, it } from "vitest";
import { PartitionProgress } from "./partition-progress.ts";

function setup() {
  const registry = new client.Registry();
  const gauge = new client.Gauge({ name: "lag", help: "lag", labelNames: ["topic", "partition"], registers: [registry] });
  let t = 1_000_000;
  const clock = { advance: (ms: number) => (t += ms) };
  const progress = new PartitionProgress(gauge, () => t);
  const series = async () => Object.fromEntries((await gauge.get()).values.map((v) => [`${v.labels.topic}[${v.labels.partition}]`, v.value]));
  return { progress, clock, series };
}

describe("PartitionProgress: lag, stall clock and one gauge series per held partition", () => {
  it("lag = high watermark − next; a watermark that arrives without any batch (the poll) raises the lag and starts the stall clock", async () => {
    const { progress, clock, series } = setup();
    progress.assign({ t: [0, 1] });
    progress.advance("t", 0, 10);
    progress.observeHigh("t", 0, 10);
    expect(progress.list()[0]).toMatchObject({ next: 10, high: 10, lag: 0, stalledMs: 0 });
    clock.advance(120_000); // idle for a long time: never stalled
    expect(progress.stalled(60_000)).toEqual([]);
    progress.observeHigh("t", 0, 25, true); // the poll: 15 records arrived, no batch came
    expect(progress.list()[0]).toMatchObject({ lag: 15, stalledMs: 0 });
    clock.advance(61_000);
    expect(progress.stalled(60_000).map((p) => [p.partition, p.lag, p.stalledMs])).toEqual([[0, 15, 61_000]]);
    expect(await series()).toEqual({ "t[0]": 15 });
    // Progress restarts the clock; draining ends the stall.
    progress.advance("t", 0, 20);
    expect(progress.stalled(60_000)).toEqual([]);
    clock.advance(61_000);
    expect(progress.stalled(60_000).map((p) => p.lag)).toEqual([5]);
    progress.advance("t", 0, 25);
    expect(progress.total()).toBe(0);
    expect(await series()).toEqual({ "t[0]": 0 });
  });

  it("a partition with unknown next offset reports no lag and no series; the watermark is monotonic within an assignment", async () => {
    const { progress, series } = setup();
    progress.assign({ t: [0] });
    progress.observeHigh("t", 0, 100, true);
    expect(progress.total()).toBe(0);
    expect(await series()).toEqual({});
    progress.advance("t", 0, 40);
    expect(progress.total()).toBe(60);
    progress.observeHigh("t", 0, 90, true); // a stale poll answer: ignored
    expect(progress.total()).toBe(60);
    progress.advance("t", 0, 120); // committed past a stale watermark: lag 0, not negative
    expect(progress.list()[0]).toMatchObject({ next: 120, high: 120, lag: 0 });
  });

  it("the poll never re-creates a partition dropped meanwhile; a new assignment, a fence and a revoke remove the series", async () => {
    const { progress, series } = setup();
    progress.assign({ a: [0, 1], b: [0] });
    for (const [t, p] of [["a", 0], ["a", 1], ["b", 0]] as const) {
      progress.advance(t, p, 0);
      progress.observeHigh(t, p, 5);
    }
    expect(await series()).toEqual({ "a[0]": 5, "a[1]": 5, "b[0]": 5 });
    expect(progress.topics()).toEqual(["a", "b"]);
    progress.drop("a", 1); // fenced
    progress.observeHigh("a", 1, 9, true);
    expect(await series()).toEqual({ "a[0]": 5, "b[0]": 5 });
    progress.assign({ b: [0, 1] }); // rebalanced: a[0] went to another replica
    expect(await series()).toEqual({});
    expect(progress.list().map((p) => `${p.topic}[${p.partition}]`)).toEqual(["b[0]", "b[1]"]);
    progress.advance("b", 1, 3);
    progress.observeHigh("b", 1, 4, true);
    expect(await series()).toEqual({ "b[1]": 1 });
    progress.dropAll();
    expect(await series()).toEqual({});
    expect(progress.size).toBe(0);
  });
});
