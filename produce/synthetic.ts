/**
 * Synthetic factory data: a pure, seeded generator of sensor readings.
 *
 * Per tenant, F facilities (`fac-01`…) each with E pieces of equipment (`pump-0007`, `press-0012`…,
 * numbered across the tenant). Every tick (start + k × interval) each piece of equipment gives one
 * reading; each signal is
 *
 *   baseline + slow drift (mean-reverting random walk, hours) + daily-ish cycle + white noise
 *
 * plus occasional excursions (a one-reading spike, or a step that lasts a while, in vibration or
 * pressure) and occasional sensor dropouts (a null for a few readings of one signal).
 *
 * Deterministic: the same options (seed included) give the same readings, bit for bit. Each piece of
 * equipment has its own PRNG stream derived from (seed, tenant, equipment), so adding a tenant or
 * equipment does not change the readings of the others. Readings come in time order (all equipment
 * of a tick, tenant by tenant, before the next tick); `seq` counts per (tenant, equipment) from 0.
 */
import type { SensorReading } from "../schemas/index.ts";

export type ExcursionSignal = "vibration" | "pressure";
export type ExcursionKind = "spike" | "step";

/** Ground truth of an excursion, attached to every reading it affects. */
export interface ExcursionLabel {
  kind: ExcursionKind;
  signal: ExcursionSignal;
  /** seq of the reading where the excursion began (this reading's seq on its first reading). */
  startSeq: number;
}

export interface SyntheticRecord {
  tenantId: string;
  reading: SensorReading;
  /** Per (tenant, equipment) sequence number, from 0, contiguous. */
  seq: number;
  /** Present when the reading is part of an excursion (labels for anomaly tests). */
  excursions?: ExcursionLabel[];
}

export interface SyntheticOptions {
  /** Tenant UUIDs (lower-cased in the output). */
  tenants: readonly string[];
  /** Facilities per tenant (default 2). */
  facilities?: number;
  /** Equipment per facility (default 5), so a tenant has facilities × equipment machines. */
  equipmentPerFacility?: number;
  /** Epoch ms of the first tick. */
  start: number;
  /** Time between two readings of one machine, ms (default 1000). */
  intervalMs?: number;
  /** Total readings over all tenants; omitted = unbounded. */
  count?: number;
  /** PRNG seed (default 1). */
  seed?: number | string;
  /** Probability per reading that an excursion begins (default 0.002). */
  excursionProbability?: number;
  /** Probability per reading and signal that the sensor drops out (default 0.001). */
  dropoutProbability?: number;
}

export const SYNTHETIC_DEFAULTS = {
  facilities: 2,
  equipmentPerFacility: 5,
  intervalMs: 1000,
  seed: 1,
  excursionProbability: 0.002,
  dropoutProbability: 0.001,
} as const;

/** Plausible physical ranges; the generator never leaves them (the unit tests hold it to them). */
export const PLAUSIBLE = {
  temperature: { min: -20, max: 150 },
  vibration: { min: 0, max: 20 },
  pressure: { min: 0, max: 400 },
} as const;

// ---------------------------------------------------------------------------------------------- PRNG

/** 32-bit string hash (cyrb53's mixing, folded to 32 bits) used to derive stream seeds. */
export function hashSeed(text: string): number {
  let h1 = 0xdeadbeef;
  let h2 = 0x41c6ce57;
  for (let i = 0; i < text.length; i++) {
    const ch = text.charCodeAt(i);
    h1 = Math.imul(h1 ^ ch, 2654435761);
    h2 = Math.imul(h2 ^ ch, 1597334677);
  }
  h1 = Math.imul(h1 ^ (h1 >>> 16), 2246822507) ^ Math.imul(h2 ^ (h2 >>> 13), 3266489909);
  h2 = Math.imul(h2 ^ (h2 >>> 16), 2246822507) ^ Math.imul(h1 ^ (h1 >>> 13), 3266489909);
  return (h1 ^ h2) >>> 0;
}

/** mulberry32: small, fast, good enough for simulation; uniform in [0, 1). */
export function mulberry32(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

class Rng {
  private readonly next: () => number;
  private spare: number | undefined;
  constructor(seed: number) {
    this.next = mulberry32(seed);
  }
  uniform(min = 0, max = 1): number {
    return min + (max - min) * this.next();
  }
  int(min: number, maxInclusive: number): number {
    return min + Math.floor(this.next() * (maxInclusive - min + 1));
  }
  chance(p: number): boolean {
    return this.next() < p;
  }
  /** Standard normal (Box–Muller, both values used). */
  normal(): number {
    if (this.spare !== undefined) {
      const s = this.spare;
      this.spare = undefined;
      return s;
    }
    let u = 0;
    while (u === 0) u = this.next();
    const v = this.next();
    const r = Math.sqrt(-2 * Math.log(u));
    this.spare = r * Math.sin(2 * Math.PI * v);
    return r * Math.cos(2 * Math.PI * v);
  }
  pick<T>(items: readonly T[]): T {
    return items[Math.floor(this.next() * items.length)]!;
  }
}

// ------------------------------------------------------------------------------------------ the fleet

/** One kind of machine: baseline ranges and variability of its three signals. */
interface Kind {
  name: string;
  temperature: { base: [number, number]; drift: number; noise: number; daily: number };
  /** vibration noise/drift/daily are relative to the baseline. */
  vibration: { base: [number, number]; drift: number; noise: number; daily: number };
  pressure: { base: [number, number]; drift: number; noise: number; daily: number };
}

const KINDS: readonly Kind[] = [
  {
    name: "pump",
    temperature: { base: [38, 55], drift: 1.5, noise: 0.15, daily: 2.5 },
    vibration: { base: [0.08, 0.25], drift: 0.08, noise: 0.04, daily: 0.05 },
    pressure: { base: [3, 7], drift: 0.03, noise: 0.01, daily: 0.03 },
  },
  {
    name: "compressor",
    temperature: { base: [65, 85], drift: 2, noise: 0.2, daily: 3 },
    vibration: { base: [0.2, 0.5], drift: 0.08, noise: 0.05, daily: 0.05 },
    pressure: { base: [7, 10], drift: 0.02, noise: 0.008, daily: 0.02 },
  },
  {
    name: "motor",
    temperature: { base: [45, 70], drift: 2, noise: 0.2, daily: 3 },
    vibration: { base: [0.05, 0.2], drift: 0.06, noise: 0.04, daily: 0.04 },
    pressure: { base: [1.5, 3], drift: 0.03, noise: 0.01, daily: 0.02 },
  },
  {
    name: "press",
    temperature: { base: [40, 60], drift: 1.5, noise: 0.2, daily: 2 },
    vibration: { base: [0.3, 0.8], drift: 0.1, noise: 0.06, daily: 0.06 },
    pressure: { base: [120, 180], drift: 0.02, noise: 0.01, daily: 0.02 },
  },
];

export interface EquipmentSpec {
  tenantId: string;
  facilityId: string;
  equipmentId: string;
  kind: string;
}

function pad(n: number, width: number): string {
  return String(n).padStart(width, "0");
}

function intOption(name: string, v: number | undefined, fallback: number, min: number): number {
  const n = v ?? fallback;
  if (!Number.isInteger(n) || n < min) throw new Error(`${name} must be an integer ≥ ${min}, got ${v}`);
  return n;
}

function probability(name: string, v: number | undefined, fallback: number): number {
  const p = v ?? fallback;
  if (!(p >= 0 && p <= 1)) throw new Error(`${name} must be a probability in [0, 1], got ${v}`);
  return p;
}

function seedText(seed: number | string | undefined): string {
  return String(seed ?? SYNTHETIC_DEFAULTS.seed);
}

/** The machines of every tenant, in the order their readings come within a tick. */
export function syntheticFleet(opts: Pick<SyntheticOptions, "tenants" | "facilities" | "equipmentPerFacility" | "seed">): EquipmentSpec[] {
  const facilities = intOption("facilities", opts.facilities, SYNTHETIC_DEFAULTS.facilities, 1);
  const perFacility = intOption("equipment per facility", opts.equipmentPerFacility, SYNTHETIC_DEFAULTS.equipmentPerFacility, 1);
  if (facilities > 99) throw new Error(`facilities must be at most 99, got ${facilities}`);
  if (facilities * perFacility > 9999) throw new Error(`at most 9999 machines per tenant, got ${facilities} × ${perFacility}`);
  const out: EquipmentSpec[] = [];
  for (const raw of opts.tenants) {
    const tenantId = raw.toLowerCase();
    const rng = new Rng(hashSeed(`${seedText(opts.seed)}|fleet|${tenantId}`));
    let n = 0;
    for (let f = 1; f <= facilities; f++) {
      for (let e = 0; e < perFacility; e++) {
        n++;
        const kind = rng.pick(KINDS).name;
        out.push({ tenantId, facilityId: `fac-${pad(f, 2)}`, equipmentId: `${kind}-${pad(n, 4)}`, kind });
      }
    }
  }
  return out;
}

// --------------------------------------------------------------------------------------- the signals

/** Drift correlation time (mean reversion of the random walk). */
const DRIFT_TAU_MS = 3 * 3_600_000;

interface Signal {
  base: number;
  /** Standard deviation of the stationary drift, absolute units. */
  driftSd: number;
  noiseSd: number;
  dailyAmp: number;
  /** Daily-ish: period 22–26 h, random phase. */
  periodMs: number;
  phase: number;
  drift: number;
  /** Remaining readings of a dropout (null). */
  dropout: number;
  decimals: number;
  min: number;
  max: number;
}

interface Step {
  label: ExcursionLabel;
  /** Multiplier of the baseline while it lasts. */
  factor: number;
  remaining: number;
}

class Machine {
  readonly spec: EquipmentSpec;
  private readonly rng: Rng;
  private readonly temperature: Signal;
  private readonly vibration: Signal;
  private readonly pressure: Signal;
  private steps: Partial<Record<ExcursionSignal, Step>> = {};
  seq = 0;

  constructor(spec: EquipmentSpec, seed: string) {
    this.spec = spec;
    this.rng = new Rng(hashSeed(`${seed}|${spec.tenantId}|${spec.equipmentId}`));
    const kind = KINDS.find((k) => k.name === spec.kind)!;
    const r = this.rng;
    const tBase = r.uniform(...kind.temperature.base);
    this.temperature = this.signal(tBase, kind.temperature.drift, kind.temperature.noise, kind.temperature.daily, 2, PLAUSIBLE.temperature);
    const vBase = r.uniform(...kind.vibration.base);
    this.vibration = this.signal(vBase, vBase * kind.vibration.drift, vBase * kind.vibration.noise, vBase * kind.vibration.daily, 4, PLAUSIBLE.vibration);
    const pBase = r.uniform(...kind.pressure.base);
    this.pressure = this.signal(pBase, pBase * kind.pressure.drift, pBase * kind.pressure.noise, pBase * kind.pressure.daily, 3, PLAUSIBLE.pressure);
  }

  private signal(base: number, driftSd: number, noiseSd: number, dailyAmp: number, decimals: number, range: { min: number; max: number }): Signal {
    return {
      base,
      driftSd,
      noiseSd,
      dailyAmp,
      periodMs: this.rng.uniform(22, 26) * 3_600_000,
      phase: this.rng.uniform(0, 2 * Math.PI),
      drift: this.rng.normal() * driftSd,
      dropout: 0,
      decimals,
      min: range.min,
      max: range.max,
    };
  }

  /** One Ornstein–Uhlenbeck step of the drift, then the value (before excursions). */
  private value(s: Signal, time: number, decay: number, kick: number): number {
    s.drift = s.drift * decay + s.driftSd * kick * this.rng.normal();
    return s.base + s.drift + s.dailyAmp * Math.sin((2 * Math.PI * time) / s.periodMs + s.phase) + s.noiseSd * this.rng.normal();
  }

  private finish(s: Signal, v: number, dropoutP: number): number | null {
    // Draw the dropout every time (fixed PRNG consumption per reading keeps streams aligned).
    const drop = this.rng.chance(dropoutP);
    const len = this.rng.int(1, 5);
    if (s.dropout > 0) {
      s.dropout--;
      return null;
    }
    if (drop) {
      s.dropout = len - 1;
      return null;
    }
    const f = 10 ** s.decimals;
    return Math.min(s.max, Math.max(s.min, Math.round(v * f) / f));
  }

  next(time: number, intervalMs: number, excursionP: number, dropoutP: number): SyntheticRecord {
    const r = this.rng;
    const seq = this.seq++;
    const decay = Math.exp(-intervalMs / DRIFT_TAU_MS);
    const kick = Math.sqrt(1 - decay * decay);
    // Temperature has no excursions of its own: its highs come from drift and the daily cycle.
    const temperature = this.value(this.temperature, time, decay, kick);
    let vibration = this.value(this.vibration, time, decay, kick);
    let pressure = this.value(this.pressure, time, decay, kick);

    // Excursions: at most one begins per reading, with probability p, whatever is already going on.
    const begins = r.chance(excursionP);
    const signal: ExcursionSignal = r.chance(0.5) ? "vibration" : "pressure";
    const kind: ExcursionKind = r.chance(0.6) ? "spike" : "step";
    const magnitude = r.uniform(0, 1);
    const duration = r.int(10, 120);
    const up = r.chance(signal === "vibration" ? 1 : 0.5);

    const labels: ExcursionLabel[] = [];
    let spike: { signal: ExcursionSignal; factor: number } | undefined;
    if (begins) {
      const label: ExcursionLabel = { kind, signal, startSeq: seq };
      if (kind === "spike") {
        // Vibration ×3–8 (an impact, a loose part); pressure +25–60 % (a water hammer).
        spike = { signal, factor: signal === "vibration" ? 3 + 5 * magnitude : 1.25 + 0.35 * magnitude };
        labels.push(label);
      } else {
        // Vibration ×2–4 (bearing wear, imbalance); pressure ±15–40 % (a blockage or a leak).
        const factor = signal === "vibration" ? 2 + 2 * magnitude : up ? 1.15 + 0.25 * magnitude : 0.85 - 0.25 * magnitude;
        this.steps[signal] = { label, factor, remaining: duration };
      }
    }
    for (const sig of ["vibration", "pressure"] as const) {
      const step = this.steps[sig];
      if (step === undefined) continue;
      const base = sig === "vibration" ? this.vibration.base : this.pressure.base;
      if (sig === "vibration") vibration += base * (step.factor - 1);
      else pressure += base * (step.factor - 1);
      labels.push(step.label);
      if (--step.remaining <= 0) delete this.steps[sig];
    }
    if (spike !== undefined) {
      if (spike.signal === "vibration") vibration = Math.max(vibration, 0) * spike.factor;
      else pressure *= spike.factor;
    }

    const reading: SensorReading = {
      time,
      tenant_id: this.spec.tenantId,
      equipment_id: this.spec.equipmentId,
      facility_id: this.spec.facilityId,
      temperature: this.finish(this.temperature, temperature, dropoutP),
      vibration: this.finish(this.vibration, vibration, dropoutP),
      pressure: this.finish(this.pressure, pressure, dropoutP),
      flow_rate: null,
    };
    const out: SyntheticRecord = { tenantId: this.spec.tenantId, reading, seq };
    if (labels.length > 0) out.excursions = labels;
    return out;
  }
}

/** Readings per tick (all machines of all tenants). */
export function syntheticReadingsPerTick(opts: Pick<SyntheticOptions, "tenants" | "facilities" | "equipmentPerFacility">): number {
  const f = opts.facilities ?? SYNTHETIC_DEFAULTS.facilities;
  const e = opts.equipmentPerFacility ?? SYNTHETIC_DEFAULTS.equipmentPerFacility;
  return opts.tenants.length * f * e;
}

/** Time span covered by `count` readings: ticks × interval (the last tick is at start + span − interval). */
export function syntheticSpanMs(opts: Pick<SyntheticOptions, "tenants" | "facilities" | "equipmentPerFacility" | "intervalMs">, count: number): number {
  const perTick = syntheticReadingsPerTick(opts);
  return Math.ceil(count / perTick) * (opts.intervalMs ?? SYNTHETIC_DEFAULTS.intervalMs);
}

/** The readings, in time order; stops after `count` readings if given, else runs forever. */
export function* syntheticReadings(opts: SyntheticOptions): Generator<SyntheticRecord, void, undefined> {
  if (opts.tenants.length === 0) throw new Error("at least one tenant is needed");
  const intervalMs = opts.intervalMs ?? SYNTHETIC_DEFAULTS.intervalMs;
  if (!(Number.isFinite(intervalMs) && intervalMs > 0)) throw new Error(`interval must be a positive number of ms, got ${opts.intervalMs}`);
  if (!Number.isFinite(opts.start)) throw new Error(`start must be an epoch-ms instant, got ${opts.start}`);
  const count = opts.count;
  if (count !== undefined && !(Number.isInteger(count) && count >= 0)) throw new Error(`count must be a non-negative integer, got ${count}`);
  const excursionP = probability("excursion probability", opts.excursionProbability, SYNTHETIC_DEFAULTS.excursionProbability);
  const dropoutP = probability("dropout probability", opts.dropoutProbability, SYNTHETIC_DEFAULTS.dropoutProbability);
  const seed = seedText(opts.seed);
  const machines = syntheticFleet(opts).map((spec) => new Machine(spec, seed));

  let emitted = 0;
  for (let tick = 0; ; tick++) {
    const time = Math.round(opts.start + tick * intervalMs);
    for (const m of machines) {
      if (count !== undefined && emitted >= count) return;
      emitted++;
      yield m.next(time, intervalMs, excursionP, dropoutP);
    }
  }
}
