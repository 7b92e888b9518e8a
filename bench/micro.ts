/**
 * Hot-path microbenchmarks on fixed fixtures, one core (this process's main thread), no I/O.
 *
 * Every stage runs over the same pre-built inputs: warm-up iterations (discarded), then measured
 * iterations; each reports ns/record and records/s as median with min and max. A stage with a
 * baseline is run interleaved with it (A B A B …) so machine noise hits both alike, and the ratio
 * stage ÷ baseline is the median of the per-pair ratios.
 *
 * EXTENSION POINT: add a stage to MICRO_STAGES (or fill one of the pending slots at the end):
 * `setup(fx)` builds its inputs once and returns `run()`, which processes every record once and
 * returns a number derived from its output (summed, so the work cannot be optimised away).
 */
import { performance } from "node:perf_hooks";
import type avro from "avsc";
import { validateReading, type ValidateResult } from "../pipelines/processors/validate.ts";
import type { StoredReading } from "../pipelines/reading.ts";
import type { SensorReading } from "../schemas/index.ts";
import { encodeCopyRows } from "../sinks/timescale/copy-encoder.ts";
import { encodeCopyBinary } from "../sinks/timescale/copy-binary-encoder.ts";
import { encodeReadingArrays } from "../sinks/timescale/array-params.ts";
import { fixtureDecoder, fixtureSpanMs, fixtureTenantInfo, wireFixture, type Fixture } from "./fixtures.ts";
import { join } from "node:path";
import { loadTopology } from "../pipelines/topology/index.ts";
import { evaluateRule, IDLE_STATE, type RuleAlarmState } from "../pipelines/processors/thresholds.ts";
import { encodeParquet } from "../sinks/s3-parquet/encoder.ts";
import { QuotaGate } from "../pipelines/processors/quota.ts";
import type { QuotaStore } from "../pipelines/processors/quota-store.ts";
import { repoRoot } from "../stack/context.ts";

export interface MicroInputs {
  fx: Fixture;
  /** Confluent wire bytes, as in the topics. */
  values: Buffer[];
  /** The Avro bodies of the same records (header stripped beforehand: the baseline's input). */
  bodies: Buffer[];
  tenantOf: string[];
  offsets: number[];
  decoded: SensorReading[];
  rows: StoredReading[];
  writer: avro.Type;
  decoder: Awaited<ReturnType<typeof fixtureDecoder>>["decoder"];
  /** The validation clock: just after the last reading. */
  now: number;
}

export interface MicroStage {
  id: string;
  describe: string;
  /** Id of the stage this one is compared with (run interleaved with it). */
  baseline?: string;
  /** Goal on stage ÷ baseline (ns/record), if any. */
  maxRatio?: number;
  /** Returns the per-iteration function; it may be async (then awaited once per iteration, not per record). */
  setup(inp: MicroInputs): () => number | Promise<number>;
}

/** A slot other work will fill (reported as pending, never silently absent). */
export interface PendingStage {
  id: string;
  describe: string;
  pending: string;
}

/** Rows per COPY batch, as the sink's default batch.max_rows. */
export const COPY_BATCH_ROWS = 5000;
/** Rows per quota chunk: the worker prepares the quota once per chunk (≤ batch.max_rows) of one partition. */
const QUOTA_CHUNK_ROWS = COPY_BATCH_ROWS;

function chunks<T>(xs: readonly T[], n: number): T[][] {
  const out: T[][] = [];
  for (let i = 0; i < xs.length; i += n) out.push(xs.slice(i, i + n));
  return out;
}

export const MICRO_STAGES: MicroStage[] = [
  {
    id: "avro_decode_baseline",
    describe: "avsc only: writerType.fromBuffer(body) of the same Avro bodies (no framing, no resolver)",
    setup: ({ bodies, writer }) => () => {
      let s = 0;
      for (const b of bodies) s += (writer.fromBuffer(b) as SensorReading).time & 1;
      return s;
    },
  },
  {
    id: "avro_decode",
    describe: "AvroDecoder.decode(wire bytes): frame check, schema-id cache hit, resolver decode, trailing-bytes check",
    baseline: "avro_decode_baseline",
    maxRatio: 1.5,
    setup: ({ values, decoder }) => () => {
      let s = 0;
      for (const v of values) {
        const d = decoder.decode(v);
        if (d.ok) s += d.value.time & 1;
      }
      return s;
    },
  },
  {
    id: "validate",
    describe: "validateReading (tenant, ids, time window, finite measures) → StoredReading",
    setup: ({ decoded, tenantOf, offsets, now }) => {
      const infos = new Map(tenantOf.map((t) => [t, fixtureTenantInfo(t)]));
      return () => {
        let s = 0;
        for (let i = 0; i < decoded.length; i++) {
          const t = tenantOf[i]!;
          const v: ValidateResult = validateReading(decoded[i]!, { topicTenantId: t, tenant: infos.get(t), offset: offsets[i]!, now }, { maxFutureSkewMs: 300_000 });
          if (v.ok) s += v.row.offset & 1;
        }
        return s;
      };
    },
  },
  {
    id: "copy_encode_text",
    describe: `encodeCopyRows (COPY text format: the sink's former encoder, kept as the baseline), batches of ${COPY_BATCH_ROWS} rows → Buffer`,
    setup: ({ rows }) => {
      const batches = chunks(rows, COPY_BATCH_ROWS);
      return () => {
        let s = 0;
        for (const b of batches) s += encodeCopyRows(b).length;
        return s;
      };
    },
  },
  {
    id: "copy_encode_binary",
    describe: `encodeCopyBinary (COPY binary format, sinks/timescale/copy-binary-encoder.ts: what the sink sends, sensor_data_raw's columns), batches of ${COPY_BATCH_ROWS} rows`,
    baseline: "copy_encode_text",
    setup: ({ rows }) => {
      const batches = chunks(rows, COPY_BATCH_ROWS);
      return () => {
        let s = 0;
        for (const b of batches) s += encodeCopyBinary(b, { withOffset: false }).length;
        return s;
      };
    },
  },
  {
    id: "sink_array_encode",
    describe: `encodeReadingArrays (binary column arrays for the sink's insert mode, INSERT … FROM unnest, sinks/timescale/array-params.ts), batches of ${COPY_BATCH_ROWS} rows`,
    baseline: "copy_encode_binary",
    setup: ({ rows }) => {
      const batches = chunks(rows, COPY_BATCH_ROWS);
      return () => {
        let s = 0;
        for (const b of batches) s += encodeReadingArrays(b).pressure.length;
        return s;
      };
    },
  },
];

MICRO_STAGES.push(
  {
    id: "threshold_eval",
    describe: "evaluateRule for every rule of the repository's topology (state per equipment and rule, carried over), per record",
    setup: ({ rows }) => {
      const plan = loadTopology(join(repoRoot, "topology.yaml"));
      const th = plan.processors.find((x) => x.type === "thresholds");
      const rules = th && th.type === "thresholds" ? th.rules : [];
      return () => {
        const states = new Map<string, RuleAlarmState>();
        let s = 0;
        for (const r of rows) {
          for (const rule of rules) {
            const k = `${r.equipmentId}\u0000${rule.id}`;
            const step = evaluateRule(rule, states.get(k) ?? IDLE_STATE, r, r.tenantId);
            states.set(k, step.state);
            s += step.events.length;
          }
        }
        return s + rules.length;
      };
    },
  },
  {
    id: "parquet_encode",
    describe: "encodeParquet (the s3_parquet sink's encoder: SNAPPY, 4096-row groups) of the stored rows, one file per tenant",
    setup: ({ rows }) => {
      const byTenant = new Map<string, StoredReading[]>();
      for (const r of rows) {
        let l = byTenant.get(r.tenantId);
        if (!l) byTenant.set(r.tenantId, (l = []));
        l.push(r);
      }
      return async () => {
        let s = 0;
        for (const t of byTenant.values()) s += (await encodeParquet(t)).length;
        return s;
      };
    },
  },
);

MICRO_STAGES.push({
  id: "quota_check",
  describe: `QuotaGate on a cache hit, as the quota processor runs it: prepare() per chunk of ${QUOTA_CHUNK_ROWS} rows of one tenant (every equipment already admitted: no database round trip), check() per record, the tier's token bucket per chunk`,
  setup: ({ rows }) => {
    // The store is only asked while warming the cache below; a measured iteration never reaches it.
    let asked = 0;
    const store: QuotaStore = {
      admit: async (_tenant, ids) => {
        asked++;
        return { admitted: [...ids], rejected: [], registered: ids.length, maxEquipment: 1_000_000, warningRaised: false, tenantStatus: "active" };
      },
    };
    const gate = new QuotaGate({ store, rateLimitOf: () => ({ perSecond: 1e12, burst: 1e12 }) });
    const byTenant = new Map<string, StoredReading[]>();
    for (const r of rows) {
      let l = byTenant.get(r.tenantId);
      if (!l) byTenant.set(r.tenantId, (l = []));
      l.push(r);
    }
    const batches = [...byTenant].flatMap(([tenant, list]) => chunks(list, QUOTA_CHUNK_ROWS).map((c) => ({ tenant, rows: c })));
    let warmed = false;
    return async () => {
      if (!warmed) {
        for (const b of batches) await gate.prepare(b.tenant, b.rows);
        warmed = true;
      }
      const before = asked;
      let s = 0;
      for (const b of batches) {
        await gate.prepare(b.tenant, b.rows);
        for (const r of b.rows) if (gate.check(b.tenant, r.equipmentId).ok) s++;
        s += gate.rateLimitDelayMs(b.tenant, b.rows.length);
      }
      if (asked !== before) throw new Error("quota_check: a measured iteration went to the store (not a cache hit)");
      return s;
    };
  },
});

/** TODO slots: fill one by moving its entry into MICRO_STAGES with a setup(). */
export const PENDING_STAGES: PendingStage[] = [];

export interface StageStats {
  id: string;
  describe: string;
  records: number;
  iterations: number;
  nsPerRecord: { median: number; min: number; max: number };
  recordsPerSecond: { median: number; min: number; max: number };
  /** CPU time ÷ wall time of the measured iterations (≈ 1: single-threaded; more: GC helpers). */
  cpuPerWall: number;
  baseline?: string;
  /** Median of per-pair ns ratios stage ÷ baseline. */
  ratioToBaseline?: number;
  maxRatio?: number;
  meetsGoal?: boolean;
}

export interface MicroResult {
  records: number;
  warmup: number;
  iterations: number;
  singleCore: true;
  stages: StageStats[];
  pending: Array<PendingStage & { status: "pending" }>;
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
}

async function once(run: () => number | Promise<number>): Promise<{ ns: number; cpuUs: number; sink: number }> {
  const c0 = process.cpuUsage();
  const t0 = performance.now();
  const sink = await run();
  const ns = (performance.now() - t0) * 1e6;
  const c = process.cpuUsage(c0);
  return { ns, cpuUs: c.user + c.system, sink };
}

export async function buildMicroInputs(fx: Fixture, count: number): Promise<MicroInputs> {
  const wire = wireFixture(fx, count);
  const { decoder, writer } = await fixtureDecoder();
  const now = fx.start + fixtureSpanMs(fx, count);
  const decoded: SensorReading[] = [];
  const rows: StoredReading[] = [];
  for (let i = 0; i < wire.values.length; i++) {
    const d = decoder.decode(wire.values[i]!);
    if (!d.ok) throw new Error(`fixture record ${i}: ${d.message}`);
    decoded.push(d.value);
    const t = wire.tenantOf[i]!;
    const v = validateReading(d.value, { topicTenantId: t, tenant: fixtureTenantInfo(t), offset: wire.offsets[i]!, now }, { maxFutureSkewMs: 300_000 });
    if (!v.ok) throw new Error(`fixture record ${i}: ${v.message}`);
    rows.push(v.row);
  }
  return { fx, values: wire.values, bodies: wire.values.map((v) => v.subarray(5)), tenantOf: wire.tenantOf, offsets: wire.offsets, decoded, rows, writer, decoder, now };
}

export async function runMicro(fx: Fixture, opts: { records: number; warmup: number; iterations: number; log?: (m: string) => void }): Promise<MicroResult> {
  const inp = await buildMicroInputs(fx, opts.records);
  const n = inp.values.length;
  const runs = new Map(MICRO_STAGES.map((s) => [s.id, s.setup(inp)]));
  const samples = new Map<string, Array<{ ns: number; cpuUs: number }>>(MICRO_STAGES.map((s) => [s.id, []]));
  const pairRatios = new Map<string, number[]>(MICRO_STAGES.map((s) => [s.id, []]));
  let sink = 0;
  // Stages with a baseline run interleaved with it; the others alone.
  const groups: string[][] = [];
  const grouped = new Set<string>();
  for (const s of MICRO_STAGES) {
    if (s.baseline && runs.has(s.baseline)) {
      groups.push([s.baseline, s.id]);
      grouped.add(s.baseline).add(s.id);
    }
  }
  for (const s of MICRO_STAGES) if (!grouped.has(s.id)) groups.push([s.id]);
  for (const g of groups) {
    opts.log?.(`micro: ${g.join(" vs ")} (${n} records, ${opts.warmup} warm-up + ${opts.iterations} iterations)`);
    for (let i = 0; i < opts.warmup; i++) for (const id of g) sink += (await once(runs.get(id)!)).sink;
    for (let i = 0; i < opts.iterations; i++) {
      const ns = new Map<string, number>();
      for (const id of i % 2 ? [...g].reverse() : g) {
        const r = await once(runs.get(id)!);
        sink += r.sink;
        samples.get(id)!.push({ ns: r.ns, cpuUs: r.cpuUs });
        ns.set(id, r.ns);
      }
      // A stage's ratio pairs it with its baseline run in the same iteration of the same group (a
      // stage can also be another stage's baseline, and then runs in two groups).
      if (g.length === 2) pairRatios.get(g[1]!)!.push(ns.get(g[1]!)! / ns.get(g[0]!)!);
    }
  }
  if (!Number.isFinite(sink)) throw new Error("micro: checksum is not finite");
  const stats: StageStats[] = MICRO_STAGES.map((s) => {
    const xs = samples.get(s.id)!;
    const per = xs.map((x) => x.ns / n);
    const wall = xs.reduce((a, x) => a + x.ns, 0) / 1e3;
    const cpu = xs.reduce((a, x) => a + x.cpuUs, 0);
    const out: StageStats = {
      id: s.id,
      describe: s.describe,
      records: n,
      iterations: xs.length,
      nsPerRecord: { median: median(per), min: Math.min(...per), max: Math.max(...per) },
      recordsPerSecond: { median: 1e9 / median(per), min: 1e9 / Math.max(...per), max: 1e9 / Math.min(...per) },
      cpuPerWall: wall > 0 ? cpu / wall : 0,
    };
    if (s.baseline && samples.has(s.baseline)) {
      out.baseline = s.baseline;
      out.ratioToBaseline = median(pairRatios.get(s.id)!);
      if (s.maxRatio !== undefined) {
        out.maxRatio = s.maxRatio;
        out.meetsGoal = out.ratioToBaseline <= s.maxRatio;
      }
    }
    return out;
  });
  return {
    records: n,
    warmup: opts.warmup,
    iterations: opts.iterations,
    singleCore: true,
    stages: stats,
    pending: PENDING_STAGES.map((p) => ({ ...p, status: "pending" as const })),
  };
}
