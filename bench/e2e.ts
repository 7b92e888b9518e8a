/**
 * End to end: the real worker (`millrace run`, one child process) drains N preloaded readings over
 * K tenant topics into a fresh database; then rate-limited producers at fractions of the measured
 * rate give produce-to-commit latency.
 *
 *  - records/s: from the worker joining its group (its first fetch follows at once; the time is in
 *    its log) to the last commit, seen by polling millrace.consumer_offsets (the database is where
 *    a batch counts as done) against the topics' end offsets;
 *  - CPU-seconds per million records: /proc utime+stime of the worker, of the PostgreSQL cluster
 *    (postmaster + backends, exited ones included) and of the Kafka JVM, over the same interval;
 *    also the backends of the run's own database only (the cluster is shared with other work);
 *  - peak RSS: the worker's VmHWM; RSS sampled every second for the trend;
 *  - latency: every record of a phase, commit time (first poll that shows its offset committed)
 *    minus its Kafka timestamp (read back from the topic).
 *
 * Parquet: when the topology has the Parquet sink, the worker writes into a bucket of the run's own
 * and {@link measureParquet} waits for the sink's offsets (millrace.sink_offsets) to cover every
 * record as well; the PostgreSQL-only variant runs with a topology that has the sink removed.
 */
import { mkdirSync, readFileSync, existsSync } from "node:fs";
import { join } from "node:path";
import type { Admin, Kafka } from "kafkajs";
import type pg from "pg";
import { sensorTopic, TokenBucket } from "../produce/publisher.ts";
import { createWireEncoder, type WireEncoder } from "../produce/encode.ts";
import { createSchemaRegistry, registerSensorSchema, sensorReadingType, sensorSubject } from "../produce/registry.ts";
import type { SyntheticRecord } from "../produce/synthetic.ts";
import { repoRoot } from "../stack/context.ts";
import { fixtureReadings, fixtureSpanMs, type Fixture } from "./fixtures.ts";
import { endOffsets, partKey, readTimestamps, sumOffsets } from "./kafka-util.ts";
import { cpuBetween, machineCpuSeconds, markCpu, peakRssBytes, pidsCpuSeconds, pidsSnapshot, rssBytes, stackPid, type CpuMark } from "./procstat.ts";
import { freePort, sleep, spawnNode, waitExit, type Child } from "./spawn.ts";

export interface WorkerRun {
  child: Child;
  group: string;
  metricsPort: number;
  cpuProfDir?: string;
}

export function startWorker(opts: { pgUrl: string; tenants: string[]; group: string; logFile: string; metricsPort: number; cpuProfDir?: string; topology?: string; s3Bucket?: string }): WorkerRun {
  const nodeArgs: string[] = [];
  if (opts.cpuProfDir) {
    mkdirSync(opts.cpuProfDir, { recursive: true });
    nodeArgs.push("--cpu-prof", `--cpu-prof-dir=${opts.cpuProfDir}`);
  }
  const args = ["run", "--consumer-group", opts.group, "--tenants", opts.tenants.join(","), "--metrics-port", String(opts.metricsPort)];
  if (opts.topology) args.push("--topology", opts.topology);
  const child = spawnNode({
    script: join(repoRoot, "cli", "main.ts"),
    args,
    nodeArgs,
    logFile: opts.logFile,
    env: {
      MILLRACE_PG_URL: opts.pgUrl,
      MILLRACE_PG_ROLE: "millrace_writer",
      MILLRACE_LOG_LEVEL: "info",
      MILLRACE_INSTANCE_ID: `bench-${opts.group.slice(-8)}`,
      // The Parquet sink writes into the run's own bucket, never the shared one.
      ...(opts.s3Bucket ? { MILLRACE_S3_SHARED_BUCKET: opts.s3Bucket } : {}),
    },
  });
  return { child, group: opts.group, metricsPort: opts.metricsPort, cpuProfDir: opts.cpuProfDir };
}

/** Time (epoch ms, from the worker's own log) of its first "joined consumer group". */
function joinedAt(logFile: string): number | undefined {
  if (!existsSync(logFile)) return undefined;
  for (const line of readFileSync(logFile, "utf8").split("\n")) {
    if (!line.includes("joined consumer group")) continue;
    try {
      const o = JSON.parse(line) as { time?: number };
      if (typeof o.time === "number") return o.time;
    } catch {
      /* a partial line */
    }
  }
  return undefined;
}

export async function committedOffsets(pool: pg.Pool, group: string): Promise<Map<string, number>> {
  const res = await pool.query<{ topic: string; partition: number; next_offset: string }>(
    "SELECT topic, partition, next_offset FROM millrace.consumer_offsets WHERE consumer_group = $1",
    [group],
  );
  return new Map(res.rows.map((r) => [partKey(r.topic, r.partition), Number(r.next_offset)]));
}

async function backendPids(pool: pg.Pool, db: string): Promise<number[]> {
  const res = await pool.query<{ pid: number }>("SELECT pid FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()", [db]);
  return res.rows.map((r) => r.pid);
}

export interface CpuReport {
  seconds: number;
  worker: number | null;
  postgresCluster: number | null;
  postgresOwnDatabase: number | null;
  kafka: number | null;
  perMillionRecords: { worker: number | null; postgresCluster: number | null; postgresOwnDatabase: number | null; kafka: number | null; total: number | null };
}

export function cpuReport(a: CpuMark, b: CpuMark, records: number, ownDb: number | null): CpuReport {
  const c = cpuBetween(a, b);
  const per = (v: number | null | undefined) => (v === null || v === undefined || records === 0 ? null : (v * 1e6) / records);
  const worker = c.worker ?? null;
  const total = worker !== null && c.postgres != null && c.kafka != null ? worker + c.postgres + c.kafka : null;
  return {
    seconds: (b.at - a.at) / 1000,
    worker,
    postgresCluster: c.postgres ?? null,
    postgresOwnDatabase: ownDb,
    kafka: c.kafka ?? null,
    perMillionRecords: { worker: per(worker), postgresCluster: per(c.postgres), postgresOwnDatabase: per(ownDb), kafka: per(c.kafka), total: per(total) },
  };
}

export interface DrainResult {
  records: number;
  /** Join → last commit. */
  seconds: number;
  recordsPerSecond: number;
  /** First commit seen → last commit (excludes the first batch's fetch and write). */
  steadyRecordsPerSecond: number;
  startupMs: number;
  cpu: CpuReport;
  peakRssBytes: number | null;
  rssSamples: Array<{ t: number; bytes: number }>;
  pollMs: number;
  /** Cores busy on the whole machine during the drain, and those not charged to worker, PostgreSQL or Kafka. */
  machineBusyCores: number;
  backgroundCores: number;
  /** Epoch ms: the worker joined; the last record was seen committed. */
  joinedAt: number;
  doneAt: number;
  /**
   * Seconds the worker was asked to pause tenants for their tier's message rate limit during the
   * drain (its millrace_rate_limit_delay_seconds_total); anything above 0 means the drain measured
   * the rate limit, not the pipeline. null when the worker has no metrics port.
   */
  rateLimitedSeconds: number | null;
}

/** The sum of a counter's samples in a Prometheus text exposition. */
export function sumCounter(metricsText: string, name: string): number {
  let sum = 0;
  for (const line of metricsText.split("\n")) {
    if (!line.startsWith(`${name}{`) && !line.startsWith(`${name} `)) continue;
    const v = Number(line.slice(line.lastIndexOf(" ") + 1));
    if (Number.isFinite(v)) sum += v;
  }
  return sum;
}

async function rateLimitedSeconds(metricsPort: number): Promise<number | null> {
  if (metricsPort <= 0) return null;
  const res = await fetch(`http://127.0.0.1:${metricsPort}/metrics`, { signal: AbortSignal.timeout(5000) });
  if (!res.ok) throw new Error(`worker metrics: HTTP ${res.status}`);
  return sumCounter(await res.text(), "millrace_rate_limit_delay_seconds_total");
}

/** Wait until the worker's log says it joined its group; returns that time (epoch ms). */
export async function waitJoined(child: Child, timeoutMs: number): Promise<number> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (child.child.exitCode !== null) throw new Error(`worker exited (${child.child.exitCode}) before joining its group; see ${child.logFile}`);
    if (Date.now() > deadline) throw new Error(`worker did not join its group within ${timeoutMs} ms; see ${child.logFile}`);
    const t = joinedAt(child.logFile);
    if (t !== undefined) return t;
    await sleep(20);
  }
}

/** Wait for the worker to join, then until every record of `end` is committed. */
export async function measureDrain(opts: {
  worker: WorkerRun;
  pool: pg.Pool;
  dbName: string;
  end: Map<string, number>;
  pollMs: number;
  timeoutMs: number;
  spawnedAt: number;
}): Promise<DrainResult> {
  const total = sumOffsets(opts.end);
  const { child } = opts.worker;
  const deadline = Date.now() + opts.timeoutMs;
  let joined: number | undefined;
  const pgPid = stackPid("postgres");
  const kafkaPid = stackPid("kafka");
  const mark = () => markCpu({ worker: [child.pid, false], postgres: [pgPid, true], kafka: [kafkaPid, false] });
  let exit: number | null | undefined;
  void child.exited.then((c) => (exit = c));
  while (joined === undefined) {
    if (exit !== undefined) throw new Error(`worker exited (${exit}) before joining its group; see ${child.logFile}`);
    if (Date.now() > deadline) throw new Error(`worker did not join its group in time; see ${child.logFile}`);
    joined = joinedAt(child.logFile);
    if (joined === undefined) await sleep(20);
  }
  const m0 = mark();
  const mc0 = machineCpuSeconds();
  const own0 = pidsSnapshot(await backendPids(opts.pool, opts.dbName));
  const rssSamples: Array<{ t: number; bytes: number }> = [];
  let lastRss = 0;
  let firstCommitAt: number | undefined;
  let firstCommitted = 0;
  let doneAt: number | undefined;
  while (doneAt === undefined) {
    if (exit !== undefined) throw new Error(`worker exited (${exit}) during the drain; see ${child.logFile}`);
    if (Date.now() > deadline) throw new Error(`drain did not finish within ${opts.timeoutMs} ms; see ${child.logFile}`);
    const committed = sumOffsets(await committedOffsets(opts.pool, opts.worker.group));
    const now = Date.now();
    if (committed > 0 && firstCommitAt === undefined) {
      firstCommitAt = now;
      firstCommitted = committed;
    }
    if (committed >= total) doneAt = now;
    if (now - lastRss >= 1000) {
      const r = rssBytes(child.pid);
      if (r !== undefined) rssSamples.push({ t: (now - joined) / 1000, bytes: r });
      lastRss = now;
    }
    if (doneAt === undefined) await sleep(opts.pollMs);
  }
  const m1 = mark();
  const mc1 = machineCpuSeconds();
  const ownPids = await backendPids(opts.pool, opts.dbName);
  const own1 = pidsSnapshot([...new Set([...own0.keys(), ...ownPids])]);
  const seconds = (doneAt - joined) / 1000;
  const steadySeconds = firstCommitAt !== undefined && doneAt > firstCommitAt ? (doneAt - firstCommitAt) / 1000 : seconds;
  const cpu = cpuReport(m0, m1, total, pidsCpuSeconds(own0, own1));
  const busy = (mc1.busy - mc0.busy) / cpu.seconds;
  const limited = await rateLimitedSeconds(opts.worker.metricsPort);
  return {
    records: total,
    seconds,
    recordsPerSecond: total / seconds,
    steadyRecordsPerSecond: (total - firstCommitted) / steadySeconds,
    startupMs: joined - opts.spawnedAt,
    cpu,
    peakRssBytes: peakRssBytes(child.pid) ?? null,
    rssSamples,
    pollMs: opts.pollMs,
    machineBusyCores: busy,
    joinedAt: joined,
    doneAt,
    backgroundCores: busy - ((cpu.worker ?? 0) + (cpu.postgresCluster ?? 0) + (cpu.kafka ?? 0)) / cpu.seconds,
    rateLimitedSeconds: limited,
  };
}

export interface LatencyPhase {
  fraction: number;
  targetRate: number;
  producedRecords: number;
  /** Achieved produce rate (acknowledged records / producing time). */
  producedPerSecond: number;
  seconds: number;
  latencyMs: { p50: number; p90: number; p99: number; max: number; count: number };
  pollMs: number;
}

function quantile(sorted: Float64Array, q: number): number {
  if (sorted.length === 0) return Number.NaN;
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil(q * sorted.length) - 1))]!;
}

/**
 * A paced producer for the latency phases: the records are Avro-encoded before the clock starts, so
 * on the two shared cores the producer costs as little as kafkajs itself; batches of 50 ms worth,
 * one in flight, acks = all (like SensorPublisher), keyed by equipment (the same partitions).
 */
export async function producePaced(kafka: Kafka, encoders: Map<string, WireEncoder>, source: Iterable<SyntheticRecord>, rate: number): Promise<{ records: number; seconds: number }> {
  const prepared: Array<{ topic: string; key: string; value: Buffer }> = [];
  for (const r of source) prepared.push({ topic: sensorTopic(r.tenantId), key: r.reading.equipment_id, value: encoders.get(r.tenantId)!.encode(r.reading) });
  const producer = kafka.producer({ idempotent: true, maxInFlightRequests: 1, allowAutoTopicCreation: false });
  await producer.connect();
  const batch = Math.max(1, Math.min(5000, Math.floor(rate / 20)));
  const bucket = new TokenBucket(rate, batch);
  const t0 = performance.now();
  try {
    for (let i = 0; i < prepared.length; i += batch) {
      const slice = prepared.slice(i, i + batch);
      await bucket.take(slice.length);
      const byTopic = new Map<string, Array<{ key: string; value: Buffer }>>();
      for (const m of slice) {
        let l = byTopic.get(m.topic);
        if (!l) byTopic.set(m.topic, (l = []));
        l.push({ key: m.key, value: m.value });
      }
      await producer.sendBatch({ topicMessages: [...byTopic].map(([topic, messages]) => ({ topic, messages })), acks: -1 });
    }
  } finally {
    await producer.disconnect();
  }
  return { records: prepared.length, seconds: (performance.now() - t0) / 1000 };
}

/** Encoders for the tenants' topics (their value subjects registered once). */
export async function tenantEncoders(tenants: readonly string[]): Promise<Map<string, WireEncoder>> {
  const registry = createSchemaRegistry();
  const out = new Map<string, WireEncoder>();
  for (const t of tenants) out.set(t, createWireEncoder(await registerSensorSchema(registry, sensorSubject(sensorTopic(t))), sensorReadingType()));
  return out;
}

/** One latency phase: produce at `fraction × maxRate` for `seconds` while polling commits, then join the two. */
export async function latencyPhase(opts: {
  fx: Fixture;
  kafka: Kafka;
  admin: Admin;
  pool: pg.Pool;
  group: string;
  topics: string[];
  fraction: number;
  maxRate: number;
  seconds: number;
  /** Wire encoders per tenant (the schema id registered for the tenant's topic). */
  encoders: Map<string, WireEncoder>;
  /** Timeline start of this phase's readings (after everything produced before). */
  start: number;
  seed: string;
  pollMs: number;
  timeoutMs: number;
  worker: Child;
}): Promise<LatencyPhase & { lastReadingTime: number }> {
  const rate = Math.max(10, Math.round(opts.maxRate * opts.fraction));
  const count = Math.max(1, Math.round(rate * opts.seconds));
  const from = await endOffsets(opts.admin, opts.topics);
  const samples: Array<{ t: number; next: Map<string, number> }> = [];
  let polling = true;
  const poller = (async () => {
    while (polling) {
      const next = await committedOffsets(opts.pool, opts.group);
      samples.push({ t: Date.now(), next });
      await sleep(opts.pollMs);
    }
  })();
  const stats = await producePaced(opts.kafka, opts.encoders, fixtureReadings(opts.fx, { start: opts.start, count, seed: opts.seed }), rate);
  const to = await endOffsets(opts.admin, opts.topics);
  const deadline = Date.now() + opts.timeoutMs;
  try {
    for (;;) {
      const last = samples[samples.length - 1];
      if (last && [...to].every(([k, v]) => (last.next.get(k) ?? 0) >= v)) break;
      if (Date.now() > deadline) throw new Error(`latency phase ${opts.fraction}: commits did not catch up within ${opts.timeoutMs} ms`);
      if (opts.worker.child.exitCode !== null) throw new Error(`worker exited during the latency phase; see ${opts.worker.logFile}`);
      await sleep(opts.pollMs);
    }
  } finally {
    polling = false;
    await poller;
  }
  const ts = await readTimestamps(opts.kafka, from, to, 120_000);
  const lat: number[] = [];
  for (const [k, stamps] of ts) {
    const f = from.get(k)!;
    let si = 0;
    for (let i = 0; i < stamps.length; i++) {
      const off = f + i;
      while (si < samples.length && (samples[si]!.next.get(k) ?? 0) <= off) si++;
      if (si >= samples.length) continue;
      lat.push(samples[si]!.t - stamps[i]!);
    }
  }
  const sorted = Float64Array.from(lat).sort();
  const span = fixtureSpanMs(opts.fx, count);
  return {
    fraction: opts.fraction,
    targetRate: rate,
    producedRecords: stats.records,
    producedPerSecond: stats.records / stats.seconds,
    seconds: stats.seconds,
    latencyMs: { p50: quantile(sorted, 0.5), p90: quantile(sorted, 0.9), p99: quantile(sorted, 0.99), max: sorted.length ? sorted[sorted.length - 1]! : Number.NaN, count: sorted.length },
    pollMs: opts.pollMs,
    lastReadingTime: opts.start + span,
  };
}

export interface ParquetResult {
  sink: string;
  /** Share of the records the Parquet sink had covered (uploaded) when PostgreSQL had them all. */
  coveredAtPgDone: number;
  /** Join → the Parquet sink's offsets cover every record (files close by rows, span or idle_flush). */
  seconds: number | null;
  recordsPerSecondBothWritten: number | null;
  idleFlushMs: number;
  /** How long it was waited for (the smoke profile does not wait out idle_flush). */
  waitedMs: number;
  /** Share covered once the worker had stopped (its graceful shutdown uploads what is open). */
  coveredAfterStop: number | null;
  files: number;
  bytes: number;
  bytesPerRecord: number | null;
}

async function sinkOffsets(pool: pg.Pool, sink: string, group: string): Promise<number> {
  const r = await pool.query<{ n: string | null }>("SELECT sum(next_offset)::text AS n FROM millrace.sink_offsets WHERE sink = $1 AND consumer_group = $2", [sink, group]);
  return Number(r.rows[0]?.n ?? 0);
}

/** After the PostgreSQL drain: wait (bounded) until the Parquet sink has uploaded every record too. */
export async function measureParquet(opts: { pool: pg.Pool; sink: string; group: string; total: number; drain: DrainResult; idleFlushMs: number; timeoutMs: number; pollMs: number }): Promise<ParquetResult> {
  const coveredAtPgDone = (await sinkOffsets(opts.pool, opts.sink, opts.group)) / opts.total;
  const deadline = Date.now() + opts.timeoutMs;
  let doneAt: number | null = null;
  while (Date.now() < deadline) {
    if ((await sinkOffsets(opts.pool, opts.sink, opts.group)) >= opts.total) {
      doneAt = Date.now();
      break;
    }
    await sleep(opts.pollMs);
  }
  const seconds = doneAt === null ? null : (doneAt - opts.drain.joinedAt) / 1000;
  return {
    sink: opts.sink,
    coveredAtPgDone,
    seconds,
    recordsPerSecondBothWritten: seconds === null ? null : opts.total / seconds,
    idleFlushMs: opts.idleFlushMs,
    waitedMs: opts.timeoutMs,
    coveredAfterStop: null,
    files: 0,
    bytes: 0,
    bytesPerRecord: null,
  };
}

/** Once the worker has stopped: coverage and the files it uploaded. */
export async function finishParquet(pool: pg.Pool, r: ParquetResult, group: string, total: number): Promise<ParquetResult> {
  const f = await pool.query<{ n: string; b: string | null }>(
    "SELECT count(*)::text AS n, sum(byte_size)::text AS b FROM millrace.parquet_files WHERE consumer_group = $1 AND status = 'uploaded'",
    [group],
  );
  const bytes = Number(f.rows[0]?.b ?? 0);
  return { ...r, coveredAfterStop: (await sinkOffsets(pool, r.sink, group)) / total, files: Number(f.rows[0]?.n ?? 0), bytes, bytesPerRecord: total > 0 ? bytes / total : null };
}

/** SIGTERM and wait (bounded) — the worker commits its batch in flight and, under --cpu-prof, writes the profile. */
export async function stopWorker(w: WorkerRun, ms = 30_000): Promise<number | null> {
  w.child.child.kill("SIGTERM");
  return await waitExit(w.child, ms);
}

export { freePort };
