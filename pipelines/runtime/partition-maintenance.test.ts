import type pg from "pg";
import { pino } from "pino";
import client from "prom-client";
import { afterEach, describe, expect, it, vi } from "vitest";
import { PartitionMaintenance, PartitionMaintenanceMetrics } from "./partition-maintenance.ts";

const EVERY = 3_600_000;

function capturingLogger(): { log: pino.Logger; lines: Array<Record<string, unknown>> } {
  const lines: Array<Record<string, unknown>> = [];
  const log = pino({ level: "debug" }, { write: (l: string) => void lines.push(JSON.parse(l) as Record<string, unknown>) });
  return { log, lines };
}

async function counter(registry: client.Registry, name: string, labels: Record<string, string> = {}): Promise<number> {
  const m = (await registry.getMetricsAsJSON()).find((x) => x.name === name);
  const v = (m?.values ?? []).find((x) => Object.entries(labels).every(([k, want]) => x.labels[k] === want));
  return v?.value ?? 0;
}

const shared = { name: "shared", pool: {} as pg.Pool };
const dedicated = { name: "millrace_t_0123456789abcdef", pool: {} as pg.Pool };

describe("PartitionMaintenance (the worker's timer)", () => {
  afterEach(() => {
    vi.useRealTimers();
  });

  it("runs every interval on every target; a failure is logged and counted, the other targets still run and the next tick retries", async () => {
    vi.useFakeTimers();
    const { log, lines } = capturingLogger();
    const registry = new client.Registry();
    const calls: string[] = [];
    let sharedFails = true;
    const maintain = vi.fn(async (pool: pg.Pool) => {
      const name = pool === shared.pool ? "shared" : "dedicated";
      calls.push(name);
      if (name === "shared" && sharedFails) throw new Error("connect ECONNREFUSED 127.0.0.1:5432");
      return name === "shared" ? ["sensor_data_raw_p20270101"] : [];
    });
    const m = new PartitionMaintenance({ everyMs: EVERY, targets: () => [shared, dedicated], log, metrics: new PartitionMaintenanceMetrics(registry), maintain });
    m.start();
    expect(m.scheduled.pending).toBe(true);
    // Nothing before the first interval (the worker runs the step itself at start).
    await vi.advanceTimersByTimeAsync(EVERY - 1);
    expect(calls).toEqual([]);

    await vi.advanceTimersByTimeAsync(1);
    expect(calls).toEqual(["shared", "dedicated"]);
    expect(await counter(registry, "millrace_partition_maintenance_runs_total", { outcome: "failed" })).toBe(1);
    expect(await counter(registry, "millrace_partition_maintenance_runs_total", { outcome: "ok" })).toBe(1);
    const warn = lines.find((l) => l.level === 40);
    expect(warn).toMatchObject({ store: "shared", err: "connect ECONNREFUSED 127.0.0.1:5432" });
    expect(m.scheduled.pending).toBe(true);

    sharedFails = false;
    await vi.advanceTimersByTimeAsync(EVERY);
    expect(calls).toEqual(["shared", "dedicated", "shared", "dedicated"]);
    expect(await counter(registry, "millrace_partitions_created_total")).toBe(1);
    const info = lines.find((l) => l.level === 30);
    expect(info).toMatchObject({ store: "shared", created: ["sensor_data_raw_p20270101"] });

    await m.stop();
    expect(m.scheduled.pending).toBe(false);
    await vi.advanceTimersByTimeAsync(10 * EVERY);
    expect(calls).toHaveLength(4);
  });

  it("never overlaps runs, and stop() waits for the run in flight", async () => {
    vi.useFakeTimers();
    let release: (names: string[]) => void = () => {};
    const maintain = vi.fn(() => new Promise<string[]>((r) => (release = r)));
    const m = new PartitionMaintenance({ everyMs: EVERY, targets: () => [shared], log: capturingLogger().log, maintain });
    m.start();
    await vi.advanceTimersByTimeAsync(EVERY);
    expect(maintain).toHaveBeenCalledTimes(1);
    // A slow run: no second one starts while it lasts.
    await vi.advanceTimersByTimeAsync(5 * EVERY);
    expect(maintain).toHaveBeenCalledTimes(1);
    let stopped = false;
    const stopping = m.stop().then(() => (stopped = true));
    await vi.advanceTimersByTimeAsync(0);
    expect(stopped).toBe(false);
    release([]);
    await stopping;
    expect(stopped).toBe(true);
    await vi.advanceTimersByTimeAsync(5 * EVERY);
    expect(maintain).toHaveBeenCalledTimes(1);
  });

  it("runOnce never rejects, and the timer does not keep the process alive", async () => {
    const m = new PartitionMaintenance({
      everyMs: EVERY,
      targets: () => [shared],
      log: capturingLogger().log,
      maintain: () => Promise.reject(new Error("boom")),
    });
    await expect(m.runOnce()).resolves.toEqual([{ store: "shared", error: "boom" }]);
    m.start();
    expect(m.scheduled).toEqual({ pending: true, keepsProcessAlive: false });
    await m.stop();
    expect(m.scheduled.pending).toBe(false);
  });

  it("refuses a non-positive interval", () => {
    expect(() => new PartitionMaintenance({ everyMs: 0, targets: () => [], log: capturingLogger().log })).toThrow(/positive/);
  });
});
