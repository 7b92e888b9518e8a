import client from "prom-client";
import { describe, expect, it } from "vitest";
import { QuotaGate, QuotaMetrics } from "./quota.ts";
import type { AdmissionResult, QuotaStore } from "./quota-store.ts";

const T = "6f1c2a4e-3b5d-4c7e-9f80-1a2b3c4d5e6f";

/** An in-memory store with the database function's semantics (admit new ids in order while there is room). */
class FakeStore implements QuotaStore {
  readonly registered = new Set<string>();
  readonly calls: string[][] = [];
  status: AdmissionResult["tenantStatus"] = "active";
  constructor(public max: number) {}
  async admit(_tenant: string, ids: readonly string[]): Promise<AdmissionResult> {
    this.calls.push([...ids]);
    if (this.status !== "active") return { admitted: [], rejected: [...new Set(ids)], registered: 0, maxEquipment: 0, warningRaised: false, tenantStatus: this.status };
    for (const id of ids) if (!this.registered.has(id) && this.registered.size < this.max) this.registered.add(id);
    return {
      admitted: ids.filter((i) => this.registered.has(i)),
      rejected: ids.filter((i) => !this.registered.has(i)),
      registered: this.registered.size,
      maxEquipment: this.max,
      warningRaised: false,
      tenantStatus: "active",
    };
  }
}

const rows = (...ids: string[]) => ids.map((equipmentId) => ({ equipmentId }));

describe("QuotaGate", () => {
  it("a tenant the database already sees as suspended or deleted: tenant_suspended / unknown_tenant, never quota_exceeded, and nothing cached", async () => {
    const store = new FakeStore(100);
    const gate = new QuotaGate({ store });
    await gate.prepare(T, rows("a"));
    store.status = "suspended"; // suspended in the database; the worker's directory still says active
    await gate.prepare(T, rows("a", "b"));
    expect(gate.check(T, "a").ok).toBe(true); // registered before: in flight, as documented
    expect(gate.check(T, "b")).toEqual({ ok: false, reason: "tenant_suspended", message: `tenant ${T} is suspended` });
    store.status = "deleted";
    await gate.prepare(T, rows("b"));
    expect(gate.check(T, "b")).toMatchObject({ ok: false, reason: "unknown_tenant" });
    // Resumed: the very next chunk asks again and admits (no cached refusal, no quota_exceeded).
    store.status = "active";
    await gate.prepare(T, rows("b"));
    expect(gate.check(T, "b").ok).toBe(true);
    expect(store.calls).toEqual([["a"], ["b"], ["b"], ["b"]]);
  });

  it("admits up to the limit in reading order, rejects the rest, and asks once per chunk with unknown equipment only", async () => {
    const store = new FakeStore(3);
    const gate = new QuotaGate({ store });
    await gate.prepare(T, rows("a", "b", "a", "c", "d", "e"));
    expect(store.calls).toEqual([["a", "b", "c", "d", "e"]]);
    expect(["a", "b", "c", "d", "e"].map((e) => gate.check(T, e).ok)).toEqual([true, true, true, false, false]);
    expect(gate.check(T, "d")).toEqual({
      ok: false,
      reason: "quota_exceeded",
      message: `equipment "d" is not registered and tenant ${T} has 3 registered equipment, its limit (max_equipment) is 3`,
    });
    await gate.prepare(T, rows("a", "b", "c", "a"));
    await gate.prepare(T, rows("d", "e")); // rejections are still fresh
    expect(store.calls).toHaveLength(1);
  });

  it("the refusal reads right when the limit was lowered below the equipment already registered", async () => {
    const store = new FakeStore(4);
    const gate = new QuotaGate({ store });
    await gate.prepare(T, rows("a", "b", "c", "d"));
    store.max = 3; // tenants update --max-equipment 3: the four stay registered
    await gate.prepare(T, rows("e"));
    expect(gate.check(T, "e")).toEqual({
      ok: false,
      reason: "quota_exceeded",
      message: `equipment "e" is not registered and tenant ${T} has 4 registered equipment, its limit (max_equipment) is 3`,
    });
  });

  it("asks again about a rejection after the TTL, or at once when the directory's limit changed", async () => {
    let now = 0;
    let limit = 1;
    const store = new FakeStore(1);
    const gate = new QuotaGate({ store, now: () => now, rejectionTtlMs: 5_000, limitOf: () => limit });
    await gate.prepare(T, rows("a", "b"));
    expect(gate.check(T, "b").ok).toBe(false);
    now = 4_999;
    await gate.prepare(T, rows("b"));
    expect(store.calls).toHaveLength(1);
    now = 5_000;
    await gate.prepare(T, rows("b"));
    expect(store.calls).toEqual([["a", "b"], ["b"]]);
    // The limit is raised: the directory sees it on its refresh; the cached rejection is dropped.
    store.max = 2;
    limit = 2;
    await gate.prepare(T, rows("b"));
    expect(store.calls).toHaveLength(3);
    expect(gate.check(T, "b").ok).toBe(true);
  });

  it("a store failure caches nothing (the engine retries the chunk)", async () => {
    const gate = new QuotaGate({ store: { admit: () => Promise.reject(new Error("connection lost")) } });
    await expect(gate.prepare(T, rows("a"))).rejects.toThrow("connection lost");
    expect(() => gate.check(T, "a")).toThrow(/was not prepared/);
  });

  it("remembers a bounded number of rejections", async () => {
    const store = new FakeStore(0);
    const gate = new QuotaGate({ store, maxRememberedRejections: 10 });
    await gate.prepare(T, rows(...Array.from({ length: 25 }, (_, i) => `x${i}`)));
    expect(() => gate.check(T, "x0")).toThrow(/was not prepared/); // forgotten: asked again next time
    expect(gate.check(T, "x24").ok).toBe(false);
  });

  it("metrics: registered, limit, admissions and round trips", async () => {
    const registry = new client.Registry();
    const gate = new QuotaGate({ store: new FakeStore(2), metrics: new QuotaMetrics(registry) });
    await gate.prepare(T, rows("a", "b", "c"));
    await gate.prepare(T, rows("a", "b"));
    const text = await registry.metrics();
    expect(text).toContain(`millrace_quota_equipment_registered{tenant="${T}"} 2`);
    expect(text).toContain(`millrace_quota_equipment_limit{tenant="${T}"} 2`);
    expect(text).toContain(`millrace_quota_admissions_total{tenant="${T}",outcome="rejected"} 1`);
    expect(text).toContain(`millrace_quota_round_trips_total{tenant="${T}"} 1`);
  });
});

describe("QuotaGate.rateLimitDelayMs (token bucket in debt)", () => {
  it("lets a burst through, then asks for the pause that brings the tenant back to its rate; other tenants are unaffected", () => {
    let now = 0;
    const gate = new QuotaGate({ store: new FakeStore(0), now: () => now, rateLimitOf: (t) => (t === T ? { perSecond: 100, burst: 200 } : null) });
    expect(gate.rateLimitDelayMs(T, 200)).toBe(0);
    expect(gate.rateLimitDelayMs(T, 50)).toBe(500); // 50 over, at 100/s
    now = 500;
    expect(gate.rateLimitDelayMs(T, 0)).toBe(0);
    expect(gate.rateLimitDelayMs(T, 100)).toBe(1000);
    now = 10_000; // refilled, capped at the burst
    expect(gate.rateLimitDelayMs(T, 200)).toBe(0);
    expect(gate.rateLimitDelayMs("other", 1_000_000)).toBe(0);
  });
});
