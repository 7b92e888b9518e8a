import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import { retry, type RetryPolicy } from "./retry.ts";

class Transient extends Error {}
class Permanent extends Error {}
const retriable = (e: unknown) => e instanceof Transient;

/** A function that fails `failures` times with `make()`, then returns "ok"; records when (fake clock) each attempt ran. */
function flaky(failures: number, make: () => Error = () => new Transient("down")) {
  const at: number[] = [];
  const t0 = Date.now();
  const fn = vi.fn(async (attempt: number) => {
    at.push(Date.now() - t0);
    if (attempt <= failures) throw make();
    return "ok";
  });
  return { fn, at };
}

describe("retry (p-retry): backoff, limits, bail-out, abort — on fake timers", () => {
  beforeEach(() => {
    vi.useFakeTimers({ now: 1_000_000 });
    // Jitter factor (Math.random() + 1) = 1: the delays are exactly initial × factor^n, capped.
    vi.spyOn(Math, "random").mockReturnValue(0);
  });
  afterEach(() => {
    vi.useRealTimers();
    vi.restoreAllMocks();
  });

  it("waits initial × factor^n between attempts, capped at maxDelayMs, and returns the first success", async () => {
    const policy: RetryPolicy = { retries: 10, initialDelayMs: 100, maxDelayMs: 500, factor: 2 };
    const { fn, at } = flaky(5);
    const onRetry = vi.fn();
    const p = retry(fn, policy, { retriable, onRetry });
    await vi.runAllTimersAsync();
    await expect(p).resolves.toBe("ok");
    expect(fn).toHaveBeenCalledTimes(6);
    // Delays 100, 200, 400, 500 (capped), 500 → cumulative attempt times:
    expect(at).toEqual([0, 100, 300, 700, 1200, 1700]);
    expect(onRetry.mock.calls.map((c) => c[1])).toEqual([1, 2, 3, 4, 5]);
    expect(onRetry.mock.calls.every((c) => c[0] instanceof Transient)).toBe(true);
  });

  it("nothing happens before the delay is up (no attempt early)", async () => {
    const { fn } = flaky(1);
    const p = retry(fn, { retries: 3, initialDelayMs: 1000, maxDelayMs: 10_000, factor: 2 }, { retriable });
    await vi.advanceTimersByTimeAsync(999);
    expect(fn).toHaveBeenCalledTimes(1);
    await vi.advanceTimersByTimeAsync(1);
    await expect(p).resolves.toBe("ok");
    expect(fn).toHaveBeenCalledTimes(2);
  });

  it("gives up after `retries` retries (retries + 1 attempts) with the last error; onRetry only before a real retry", async () => {
    let n = 0;
    const { fn } = flaky(Infinity, () => new Transient(`down #${++n}`));
    const onRetry = vi.fn();
    const p = retry(fn, { retries: 3, initialDelayMs: 10, maxDelayMs: 1000, factor: 3 }, { retriable, onRetry });
    const outcome = p.catch((e: unknown) => e);
    await vi.runAllTimersAsync();
    const err = await outcome;
    expect(err).toBeInstanceOf(Transient);
    expect((err as Error).message).toBe("down #4");
    expect(fn).toHaveBeenCalledTimes(4);
    expect(onRetry).toHaveBeenCalledTimes(3);
  });

  it("retries: 0 means one attempt", async () => {
    const { fn } = flaky(1);
    const p = retry(fn, { retries: 0, initialDelayMs: 10, maxDelayMs: 10, factor: 2 }, { retriable }).catch((e: unknown) => e);
    await vi.runAllTimersAsync();
    expect(await p).toBeInstanceOf(Transient);
    expect(fn).toHaveBeenCalledTimes(1);
  });

  it("a non-retriable error bails at once: one attempt, no onRetry, the error itself", async () => {
    const { fn } = flaky(1, () => new Permanent("bad row"));
    const onRetry = vi.fn();
    const p = retry(fn, { retries: Infinity, initialDelayMs: 100, maxDelayMs: 1000, factor: 2 }, { retriable, onRetry }).catch((e: unknown) => e);
    await vi.runAllTimersAsync();
    const err = await p;
    expect(err).toBeInstanceOf(Permanent);
    expect(fn).toHaveBeenCalledTimes(1);
    expect(onRetry).not.toHaveBeenCalled();
  });

  it("retries: Infinity keeps going (here 50 failures) at the capped delay", async () => {
    const { fn, at } = flaky(50);
    const p = retry(fn, { retries: Infinity, initialDelayMs: 100, maxDelayMs: 1000, factor: 2 }, { retriable });
    await vi.runAllTimersAsync();
    await expect(p).resolves.toBe("ok");
    expect(fn).toHaveBeenCalledTimes(51);
    const gaps = at.slice(1).map((t, i) => t - at[i]!);
    expect(gaps.slice(0, 5)).toEqual([100, 200, 400, 800, 1000]);
    expect(new Set(gaps.slice(4))).toEqual(new Set([1000]));
  });

  it("an abort during the wait stops it with the signal's reason; no further attempt", async () => {
    const ac = new AbortController();
    const { fn } = flaky(Infinity);
    const p = retry(fn, { retries: Infinity, initialDelayMs: 1000, maxDelayMs: 1000, factor: 2 }, { retriable, signal: ac.signal }).catch((e: unknown) => e);
    await vi.advanceTimersByTimeAsync(2500); // attempts at 0, 1000, 2000
    expect(fn).toHaveBeenCalledTimes(3);
    ac.abort(new Error("worker stopping"));
    const err = await p;
    expect((err as Error).message).toBe("worker stopping");
    await vi.advanceTimersByTimeAsync(10_000);
    expect(fn).toHaveBeenCalledTimes(3);
  });

  it("jitter: with initialDelayMs > 0 each delay is between 1× and 2× the exponential value", async () => {
    vi.spyOn(Math, "random").mockReturnValue(0.5);
    const { fn, at } = flaky(3);
    const p = retry(fn, { retries: 5, initialDelayMs: 100, maxDelayMs: 10_000, factor: 2 }, { retriable });
    await vi.runAllTimersAsync();
    await expect(p).resolves.toBe("ok");
    expect(at).toEqual([0, 150, 450, 1050]); // 1.5 × (100, 200, 400)
  });

  it("initialDelayMs 0: immediate retries, no jitter", async () => {
    const random = vi.spyOn(Math, "random");
    random.mockClear();
    const { fn, at } = flaky(2);
    const p = retry(fn, { retries: 5, initialDelayMs: 0, maxDelayMs: 0, factor: 2 }, { retriable });
    await vi.runAllTimersAsync();
    await expect(p).resolves.toBe("ok");
    expect(at).toEqual([0, 0, 0]);
    expect(random).not.toHaveBeenCalled();
  });
});
