import { describe, expect, it } from "vitest";
import { PLAUSIBLE, syntheticFleet, syntheticReadings, syntheticSpanMs, type SyntheticOptions, type SyntheticRecord } from "./synthetic.ts";

const A = "3f2b8c1e-6d4a-4b7e-9c0d-1a2b3c4d5e6f";
const B = "0b7e4a52-9c1d-4f3e-8a6b-2c5d7e9f1a3b";
const START = Date.UTC(2026, 0, 5, 6, 0, 0);

function gen(opts: Partial<SyntheticOptions> = {}): SyntheticRecord[] {
  return [...syntheticReadings({ tenants: [A], start: START, count: 2000, seed: 42, ...opts })];
}

describe("synthetic readings", () => {
  it("are deterministic: the same seed gives the same readings, another seed others", () => {
    const a = gen({ tenants: [A, B], count: 5000 });
    const b = gen({ tenants: [A, B], count: 5000 });
    expect(b).toEqual(a);
    const c = gen({ tenants: [A, B], count: 5000, seed: 43 });
    expect(c.map((r) => r.reading)).not.toEqual(a.map((r) => r.reading));
    // String seeds work too.
    expect(gen({ seed: "line-7" })).toEqual(gen({ seed: "line-7" }));
  });

  it("gives a tenant the same readings whether or not other tenants are generated", () => {
    const alone = gen({ tenants: [A], count: 3000 });
    const together = gen({ tenants: [B, A], count: 6000 }).filter((r) => r.tenantId === A);
    expect(together).toEqual(alone);
  });

  it("emits exactly `count` readings, in time order, one per machine per interval", () => {
    const recs = gen({ tenants: [A, B], facilities: 3, equipmentPerFacility: 4, intervalMs: 5000, count: 24 * 10 + 7 });
    expect(recs).toHaveLength(247);
    for (let i = 1; i < recs.length; i++) expect(recs[i]!.reading.time).toBeGreaterThanOrEqual(recs[i - 1]!.reading.time);
    // 2 tenants × 3 × 4 = 24 machines per tick
    expect(recs[0]!.reading.time).toBe(START);
    expect(recs[23]!.reading.time).toBe(START);
    expect(recs[24]!.reading.time).toBe(START + 5000);
    expect(recs.at(-1)!.reading.time).toBe(START + 10 * 5000);
    expect(new Set(recs.slice(0, 24).map((r) => `${r.tenantId}/${r.reading.equipment_id}`)).size).toBe(24);
    expect(syntheticSpanMs({ tenants: [A, B], facilities: 3, equipmentPerFacility: 4, intervalMs: 5000 }, 247)).toBe(11 * 5000);
  });

  it("names facilities and equipment like fac-01 and pump-0007, tenant ids lower-cased", () => {
    const fleet = syntheticFleet({ tenants: [A.toUpperCase()], facilities: 3, equipmentPerFacility: 4, seed: 1 });
    expect(fleet).toHaveLength(12);
    expect(fleet.map((f) => f.facilityId)).toEqual(["fac-01", "fac-01", "fac-01", "fac-01", "fac-02", "fac-02", "fac-02", "fac-02", "fac-03", "fac-03", "fac-03", "fac-03"]);
    fleet.forEach((f, i) => {
      expect(f.equipmentId).toMatch(/^(pump|compressor|motor|press)-\d{4}$/);
      expect(f.equipmentId.endsWith(String(i + 1).padStart(4, "0"))).toBe(true);
      expect(f.tenantId).toBe(A);
    });
    const recs = gen({ tenants: [A.toUpperCase()], count: 20 });
    for (const r of recs) {
      expect(r.tenantId).toBe(A);
      expect(r.reading.tenant_id).toBe(A);
      expect(r.reading.facility_id).toMatch(/^fac-\d{2}$/);
    }
  });

  it("numbers readings per (tenant, equipment) contiguously from 0", () => {
    const recs = gen({ tenants: [A, B], count: 10_000 });
    const next = new Map<string, number>();
    for (const r of recs) {
      const key = `${r.tenantId}/${r.reading.equipment_id}`;
      expect(r.seq).toBe(next.get(key) ?? 0);
      next.set(key, r.seq + 1);
    }
    expect(next.size).toBe(20);
    expect([...next.values()].every((n) => n === 500)).toBe(true);
  });

  it("stays within plausible physical ranges; outside excursions within tight ones", () => {
    const recs = gen({ tenants: [A, B], facilities: 4, equipmentPerFacility: 10, count: 80_000, excursionProbability: 0.01, intervalMs: 10_000 });
    let values = 0;
    let nulls = 0;
    const outside: string[] = [];
    const tight = { temperature: [20, 100], vibration: [0.01, 1.5], pressure: [0.5, 250] } as const;
    for (const { reading: r, excursions } of recs) {
      for (const m of ["temperature", "vibration", "pressure"] as const) {
        const v = r[m];
        if (v === null) {
          nulls++;
          continue;
        }
        values++;
        if (!(Number.isFinite(v) && v >= PLAUSIBLE[m].min && v <= PLAUSIBLE[m].max)) outside.push(`${r.equipment_id} ${m}=${v}`);
        if (excursions === undefined && !(v > tight[m][0] && v < tight[m][1])) outside.push(`${r.equipment_id} ${m}=${v} (no excursion)`);
      }
    }
    expect(outside.slice(0, 10)).toEqual([]);
    // Dropouts: rare but present (p = 0.001 per reading and sensor, 1–5 readings each).
    expect(nulls).toBeGreaterThan(0);
    expect(nulls / (values + nulls)).toBeLessThan(0.01);
  });

  it("drifts slowly and is noisy but continuous: consecutive readings of a machine are close", () => {
    const recs = gen({ count: 10 * 3600, excursionProbability: 0, dropoutProbability: 0 }); // 1 h of 10 machines at 1 s
    const byMachine = new Map<string, number[]>();
    for (const r of recs) (byMachine.get(r.reading.equipment_id) ?? byMachine.set(r.reading.equipment_id, []).get(r.reading.equipment_id)!).push(r.reading.temperature!);
    for (const temps of byMachine.values()) {
      for (let i = 1; i < temps.length; i++) expect(Math.abs(temps[i]! - temps[i - 1]!)).toBeLessThan(2);
      const min = Math.min(...temps);
      const max = Math.max(...temps);
      expect(max - min).toBeGreaterThan(0.3); // it moves
      expect(max - min).toBeLessThan(15); // but not wildly
    }
  });

  it("has a daily-ish cycle: hourly means of temperature over two days swing by degrees", () => {
    const recs = gen({ equipmentPerFacility: 1, facilities: 1, count: 48 * 60, intervalMs: 60_000, excursionProbability: 0, dropoutProbability: 0 });
    const hourly: number[] = [];
    for (let h = 0; h < 48; h++) {
      const slice = recs.slice(h * 60, (h + 1) * 60).map((r) => r.reading.temperature!);
      hourly.push(slice.reduce((a, b) => a + b, 0) / slice.length);
    }
    expect(Math.max(...hourly) - Math.min(...hourly)).toBeGreaterThan(2);
  });

  it("begins excursions at about the configured rate, in vibration and pressure, spikes and steps", () => {
    for (const p of [0.002, 0.01, 0.05]) {
      const recs = gen({ tenants: [A, B], facilities: 5, equipmentPerFacility: 10, count: 100_000, excursionProbability: p });
      const starts = recs.flatMap((r) => (r.excursions ?? []).filter((e) => e.startSeq === r.seq));
      const rate = starts.length / recs.length;
      expect(rate).toBeGreaterThan(p * 0.85);
      expect(rate).toBeLessThan(p * 1.15);
      if (p === 0.01) {
        const kinds = new Set(starts.map((e) => `${e.kind}/${e.signal}`));
        expect(kinds).toEqual(new Set(["spike/vibration", "spike/pressure", "step/vibration", "step/pressure"]));
      }
    }
    expect(gen({ count: 20_000, excursionProbability: 0 }).some((r) => r.excursions !== undefined)).toBe(false);
  });

  it("makes excursions visible: a vibration spike is several times the machine's usual level", () => {
    const recs = gen({ count: 50_000, excursionProbability: 0.01, dropoutProbability: 0 });
    const normal = new Map<string, number[]>();
    for (const r of recs) if (r.excursions === undefined) (normal.get(r.reading.equipment_id) ?? normal.set(r.reading.equipment_id, []).get(r.reading.equipment_id)!).push(r.reading.vibration!);
    const spikes = recs.filter((r) => r.excursions?.some((e) => e.kind === "spike" && e.signal === "vibration" && e.startSeq === r.seq));
    expect(spikes.length).toBeGreaterThan(50);
    for (const s of spikes) {
      const usual = normal.get(s.reading.equipment_id)!;
      const mean = usual.reduce((a, b) => a + b, 0) / usual.length;
      expect(s.reading.vibration!).toBeGreaterThan(2.5 * mean);
    }
  });

  it("refuses nonsense options", () => {
    expect(() => gen({ tenants: [] })).toThrow(/tenant/);
    expect(() => gen({ excursionProbability: 2 })).toThrow(/probability/);
    expect(() => gen({ facilities: 0 })).toThrow(/facilities/);
    expect(() => gen({ intervalMs: 0 })).toThrow(/interval/);
    expect(() => gen({ count: -1 })).toThrow(/count/);
  });
});
