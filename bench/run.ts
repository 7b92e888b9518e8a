/**
 * `millrace bench`: one run of every measurement, on one set of rows, with the results as JSON,
 * a Markdown table and a PNG chart. See docs/benchmarks.md for what each number means.
 *
 * Order: hot-path micro → preload → worker drain (+ latency phases) → database anchors → Kafka
 * ceilings → naive → peer → profiled drain. Each section that fails records its error and the run
 * goes on; every database and topic the run made is removed at the end (unless kept).
 */
import { spawnSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import { cpus, loadavg, release, totalmem } from "node:os";
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { tmpdir } from "node:os";
import { existsSync } from "node:fs";
import type pg from "pg";
import { SensorPublisher } from "../produce/publisher.ts";
import { createTenant, tenantTopics } from "../tenants/provision.ts";
import { PG_BIN } from "../stack/postgres.ts";
import { repoRoot } from "../stack/context.ts";
import { anchorDatabase, psqlCopy, rawCopy, sinkCopy, sinkInsert, stagingCopy, type AnchorResult } from "./anchors.ts";
import { createBenchDatabase, insertTenants, tableChecksum, type BenchDatabase } from "./db.ts";
import { finishParquet, freePort, latencyPhase, measureDrain, measureParquet, startWorker, stopWorker, tenantEncoders, waitJoined, type DrainResult, type LatencyPhase, type ParquetResult } from "./e2e.ts";
import { loadTopology } from "../pipelines/topology/index.ts";
import { parse as parseYaml, stringify as stringifyYaml } from "yaml";
import { readFileSync } from "node:fs";
import { benchS3, createBucket, removeBucket } from "./s3.ts";
import { PARQUET_SINK } from "../sinks/s3-parquet/manifest.ts";
import { fixtureRows, fixtureSpanMs, makeFixture, fixtureReadings, type Fixture } from "./fixtures.ts";
import { consumerPerformance, nodeDrain, type ConsumerPerfAnchor, type DrainAnchor } from "./kafka-ceiling.ts";
import { benchKafka, deleteGroupsQuietly, deleteTopicsQuietly, endOffsets, sumOffsets } from "./kafka-util.ts";
import { COPY_BATCH_ROWS, runMicro, type MicroResult } from "./micro.ts";
import { producePeerTopics, runPeer, type PeerResult } from "./peer.ts";
import { mainThreadProfile, summariseProfile, type ProfileSummary } from "./profile.ts";
import { renderMarkdown, writeChart } from "./report.ts";
import { lastJsonLine, sleep, spawnNode, waitExit } from "./spawn.ts";

export type BenchProfileName = "smoke" | "full";

export interface BenchSettings {
  profile: BenchProfileName;
  records: number;
  tenants: number;
  partitions: number;
  microRecords: number;
  microWarmup: number;
  microIterations: number;
  latencySeconds: number;
  latencyFractions: number[];
  naiveSeconds: number;
  naiveRecords: number;
  peer: boolean;
  peerRecords: number;
  cpuProfile: boolean;
  outDir: string;
  keep: boolean;
  pollMs: number;
  latencyPollMs: number;
  /** How long to wait for the Parquet sink after PostgreSQL has every record; null = its idle_flush + 90 s. */
  parquetWaitMs: number | null;
}

export const PROFILES: Record<BenchProfileName, Omit<BenchSettings, "outDir" | "keep">> = {
  smoke: {
    profile: "smoke",
    records: 20_000,
    tenants: 4,
    partitions: 3,
    microRecords: 20_000,
    microWarmup: 1,
    microIterations: 3,
    latencySeconds: 3,
    latencyFractions: [0.5, 0.8],
    naiveSeconds: 3,
    naiveRecords: 20_000,
    peer: false,
    peerRecords: 0,
    cpuProfile: false,
    pollMs: 25,
    latencyPollMs: 20,
    parquetWaitMs: 3000,
  },
  full: {
    profile: "full",
    records: 1_000_000,
    tenants: 4,
    partitions: 3,
    microRecords: 200_000,
    microWarmup: 2,
    microIterations: 7,
    latencySeconds: 30,
    latencyFractions: [0.5, 0.8],
    naiveSeconds: 60,
    naiveRecords: 1_000_000,
    peer: true,
    peerRecords: 1_000_000,
    cpuProfile: true,
    pollMs: 50,
    latencyPollMs: 20,
    parquetWaitMs: null,
  },
};

type Failed = { error: string };
type Skipped = { skipped: string };
type Maybe<T> = T | Failed | Skipped;

export interface TableRow {
  path: string;
  kind: "ours" | "anchor" | "peer";
  records: number | null;
  recordsPerSecond: number | null;
  cpu?: string;
  notes?: string;
  section?: Failed | Skipped;
}

export interface BenchResults {
  meta: {
    profile: BenchProfileName;
    date: string;
    startedAt: string;
    elapsedSeconds: number;
    records: number;
    tenants: number;
    partitionsPerTenant: number;
    settings: Omit<BenchSettings, "outDir">;
    machine: { cores: number; cpuModel: string; memoryGiB: number; kernel: string; node: string; loadAverageStart: number[]; loadAverageEnd: number[] };
    /** The code measured: HEAD, and files outside bench/ with uncommitted changes (the worker runs from the working tree). */
    git: { commit: string; uncommitted: string[] };
  };
  micro: MicroResult;
  e2e: {
    preload: { records: number; seconds: number; recordsPerSecond: number } | Failed;
    drain: DrainResult | Failed;
    /** The same drain with the Parquet sink taken out of the topology (PostgreSQL only). */
    drainPostgresOnly: DrainResult | Failed | Skipped;
    /** Cores the rest of the machine kept busy during the drain (machine busy − worker − PostgreSQL − Kafka). */
    backgroundCores: number | null;
    latency: Array<LatencyPhase | (Failed & { fraction: number })>;
    parquet: ParquetResult | Failed | Skipped;
  };
  anchors: {
    rawCopy: Maybe<AnchorResult>;
    sinkCopy: Maybe<AnchorResult>;
    sinkInsert: Maybe<AnchorResult>;
    stagingCopyText: Maybe<AnchorResult>;
    stagingCopyBinary: Maybe<AnchorResult>;
    psqlCopy: Maybe<AnchorResult>;
    nodeDrain: Maybe<DrainAnchor>;
    kafkaConsumerPerformance: Maybe<ConsumerPerfAnchor>;
    naive: Maybe<{ records: number; seconds: number; recordsPerSecond: number; cpuSecondsPerMillion: number | null; stored?: { rows: number; checksum: string } }>;
  };
  peer: Maybe<PeerResult & { produce: { seconds: number; bytes: number } }>;
  profile: Maybe<{ summary: ProfileSummary; drain: DrainResult | null }>;
  ratios: Array<{ name: string; value: number | null; meaning: string }>;
  goals: Array<{ name: string; value: number | null; op: "≥" | "≤" | ">"; target: number; met: boolean | null }>;
  sameRows: Array<{ path: string; equal: boolean; rows: number }>;
  table: TableRow[];
  chart: { png: string } | { skipped: string };
  notes: string[];
}

const rps = (s: unknown): number | null => {
  const v = (s as { recordsPerSecond?: number } | undefined)?.recordsPerSecond;
  return typeof v === "number" && Number.isFinite(v) && v > 0 ? v : null;
};
const ratio = (a: number | null, b: number | null) => (a !== null && b !== null && b > 0 ? a / b : null);
const errorOf = (err: unknown): Failed => ({ error: (err as Error)?.message ?? String(err) });

async function attempt<T>(what: string, log: (m: string) => void, fn: () => Promise<T>): Promise<T | Failed> {
  log(`bench: ${what}…`);
  const t0 = performance.now();
  try {
    const r = await fn();
    log(`bench: ${what} done in ${((performance.now() - t0) / 1000).toFixed(1)} s`);
    return r;
  } catch (err) {
    log(`bench: ${what} FAILED: ${(err as Error).stack ?? String(err)}`);
    return errorOf(err);
  }
}

/** The repository's topology without its Parquet sink (and without it among any inputs), schema path made absolute. */
/** One decimal, or — when not measured (e.g. the stack's pid files are not in this checkout's .stack; set MILLRACE_STACK_DIR). */
const f1 = (v: number | null | undefined): string => (v === null || v === undefined ? "—" : v.toFixed(1));

export function postgresOnlyTopology(dir: string): string {
  const doc = parseYaml(readFileSync(join(repoRoot, "topology.yaml"), "utf8")) as Record<string, Record<string, Record<string, unknown>>>;
  const parquetIds = Object.entries(doc.sinks ?? {}).filter(([, v]) => v.type === "s3_parquet").map(([k]) => k);
  for (const id of parquetIds) delete doc.sinks![id];
  for (const section of ["processors", "sinks"]) {
    for (const c of Object.values(doc[section] ?? {})) {
      if (Array.isArray(c.inputs)) c.inputs = c.inputs.filter((i: unknown) => !parquetIds.includes(String(i)));
      if (typeof c.schema === "string" && !c.schema.startsWith("/")) c.schema = join(repoRoot, c.schema);
    }
  }
  const file = join(dir, "topology-postgres-only.yaml");
  writeFileSync(file, stringifyYaml(doc));
  return file;
}

function gitState(): BenchResults["meta"]["git"] {
  const run = (args: string[]) => spawnSync("git", args, { cwd: repoRoot, encoding: "utf8", timeout: 30_000 }).stdout ?? "";
  const uncommitted = run(["status", "--porcelain", "--untracked-files=no"])
    .split("\n")
    .map((l) => l.slice(3).trim())
    .filter((f) => f && !f.startsWith("bench/"));
  return { commit: run(["rev-parse", "HEAD"]).trim() || "unknown", uncommitted };
}

function machine(): BenchResults["meta"]["machine"] {
  const c = cpus();
  return { cores: c.length, cpuModel: c[0]?.model ?? "unknown", memoryGiB: totalmem() / 2 ** 30, kernel: release(), node: process.version, loadAverageStart: loadavg(), loadAverageEnd: [] };
}

export async function runBench(s: BenchSettings, log: (m: string) => void = (m) => process.stderr.write(`${m}\n`)): Promise<{ results: BenchResults; files: { json: string; markdown: string; png?: string } }> {
  const started = new Date();
  const t0 = performance.now();
  const runId = randomBytes(4).toString("hex");
  const workDir = mkdtempSync(join(tmpdir(), `millrace-bench-${runId}-`));
  const notes: string[] = [];
  const dbs: BenchDatabase[] = [];
  const groups: string[] = [];
  const topics: string[] = [];
  const meta: BenchResults["meta"] = {
    profile: s.profile,
    date: started.toISOString().slice(0, 10),
    startedAt: started.toISOString(),
    elapsedSeconds: 0,
    records: s.records,
    tenants: s.tenants,
    partitionsPerTenant: s.partitions,
    settings: { ...s, outDir: undefined } as unknown as Omit<BenchSettings, "outDir">,
    machine: machine(),
    git: gitState(),
  };
  log(`bench: ${s.profile} profile, ${s.records} records over ${s.tenants} tenants × ${s.partitions} partitions; logs in ${workDir}`);
  const kafka = benchKafka(`millrace-bench-${runId}`);
  const admin = kafka.admin();
  await admin.connect();
  const plan = loadTopology(join(repoRoot, "topology.yaml"));
  const parquetSink = plan.sinks.find((x) => x.type === "s3_parquet");
  const bucket = `millrace-bench-${runId}`;
  const s3 = benchS3();
  let bucketMade = false;

  // 1. Hot path.
  const fx: Fixture = makeFixture({ count: s.records, tenants: s.tenants, seed: "millrace-bench" });
  const microFx = makeFixture({ count: s.microRecords, tenants: s.tenants, tenantIds: fx.tenants, seed: "millrace-bench-micro" });
  log("bench: hot-path microbenchmarks…");
  const micro = await runMicro(microFx, { records: s.microRecords, warmup: s.microWarmup, iterations: s.microIterations, log });

  let results: BenchResults | undefined;
  try {
    if (parquetSink) {
      await createBucket(s3, bucket);
      bucketMade = true;
    }
    // 2. Tenants, topics and the preload, into the e2e database.
    const e2eDb = await createBenchDatabase("e2e");
    dbs.push(e2eDb);
    for (const t of fx.tenants) {
      await createTenant(e2eDb.admin, admin, { tenantId: t, name: `bench ${t.slice(0, 8)}`, tier: "enterprise", partitions: s.partitions, retentionDays: 30, maxEquipment: 10_000 }); // enterprise: no tier rate limit
      const tt = tenantTopics(t);
      topics.push(tt.sensorData, tt.alerts, tt.deadLetters);
    }
    const sensorTopics = fx.tenants.map((t) => tenantTopics(t).sensorData);
    const preload = await attempt("preload", log, async () => {
      const pub = new SensorPublisher({ kafka, batchSize: 2000 });
      try {
        const st = await pub.publish(fixtureReadings(fx));
        if (st.records !== s.records) throw new Error(`preload acknowledged ${st.records} of ${s.records} records`);
        return { records: st.records, seconds: st.elapsedMs / 1000, recordsPerSecond: st.recordsPerSecond };
      } finally {
        await pub.disconnect();
      }
    });
    if ("error" in preload) throw new Error(`preload failed: ${preload.error}`);
    const end = await endOffsets(admin, sensorTopics);
    if (sumOffsets(end) !== s.records) throw new Error(`topics hold ${sumOffsets(end)} records, expected ${s.records} (fresh topics)`);

    // 3. Kafka read ceilings and the naive pipeline, while the topics hold exactly the preloaded rows.
    groups.push(`millrace-bench-drain-${runId}`, `millrace-bench-cperf-${runId}`);
    const drainR = await attempt("anchor: kafkajs no-op drain", log, () => nodeDrain({ topics: sensorTopics, records: s.records, logDir: workDir, timeoutMs: 600_000, group: `millrace-bench-drain-${runId}` }));
    const cperf = await attempt("anchor: Kafka ConsumerPerformance", log, () => consumerPerformance({ topics: sensorTopics, records: s.records, logDir: workDir, timeoutMs: 600_000, group: `millrace-bench-cperf-${runId}` }));
    const span: [number, number] = [fx.start, fx.start + fixtureSpanMs(fx)];
    const inFreshDb = async <T>(label: string, fn: (db: BenchDatabase) => Promise<T>) => {
      const db = await anchorDatabase(label, fx.tenants, ...span);
      dbs.push(db);
      return await fn(db);
    };
    const naive = await attempt("anchor: naive pipeline", log, () =>
      inFreshDb("naive", async (db) => {
        const g = `millrace-bench-naive-${runId}`;
        groups.push(g);
        const c = spawnNode({
          script: join(import.meta.dirname, "naive.ts"),
          args: ["--topics", sensorTopics.join(","), "--records", String(Math.min(s.naiveRecords, s.records)), "--seconds", String(s.naiveSeconds), "--group", g, "--pg-url", db.adminUrl],
          logFile: join(workDir, "naive.log"),
          captureStdout: true,
        });
        const code = await waitExit(c, (s.naiveSeconds + 120) * 1000);
        if (code !== 0) throw new Error(`naive exited ${code}; see ${c.logFile}`);
        const r = lastJsonLine<{ records: number; seconds: number; recordsPerSecond: number; cpuSecondsPerMillion: number | null }>(c.stdout());
        return { ...r, stored: await tableChecksum(db.admin) };
      }),
    );

    // 4. End to end: the worker drains the preload.
    const group = `millrace-bench-${runId}`;
    groups.push(group);
    let e2eChecksum: { rows: number; checksum: string } | undefined;
    const drainTimeout = Math.max(120_000, (s.records / 500) * 1000);
    let parquet: BenchResults["e2e"]["parquet"] = { skipped: "the topology has no Parquet sink" };
    const drain = await attempt("end to end: worker drain", log, async () => {
      const spawnedAt = Date.now();
      const w = startWorker({ pgUrl: e2eDb.adminUrl, tenants: fx.tenants, group, logFile: join(workDir, "worker.log"), metricsPort: await freePort(), s3Bucket: bucket });
      try {
        const d = await measureDrain({ worker: w, pool: e2eDb.admin, dbName: e2eDb.name, end, pollMs: s.pollMs, timeoutMs: drainTimeout, spawnedAt });
        e2eChecksum = await tableChecksum(e2eDb.admin);
        if (parquetSink && parquetSink.type === "s3_parquet") {
          parquet = await attempt("end to end: Parquet sink catching up", log, () =>
            measureParquet({ pool: e2eDb.admin, sink: PARQUET_SINK, group, total: s.records, drain: d, idleFlushMs: parquetSink.idleFlushMs, timeoutMs: s.parquetWaitMs ?? parquetSink.idleFlushMs + 90_000, pollMs: 250 }),
          );
        }
        return d;
      } finally {
        const code = await stopWorker(w);
        if (code !== 0) notes.push(`the worker exited ${code} on SIGTERM (log: ${join(workDir, "worker.log")})`);
        if ("sink" in parquet) parquet = await finishParquet(e2eDb.admin, parquet, group, s.records).catch((err: unknown) => errorOf(err));
      }
    });
    const backgroundCores = "error" in drain ? null : drain.backgroundCores;

    // 4b. The same drain with the Parquet sink removed from the topology: the like-for-like with the PostgreSQL anchors.
    let drainPgOnly: BenchResults["e2e"]["drainPostgresOnly"] = { skipped: "the topology has no Parquet sink (the e2e is PostgreSQL only)" };
    if (parquetSink) {
      drainPgOnly = await attempt("end to end: worker drain, PostgreSQL only", log, async () => {
        const db = await createBenchDatabase("e2e_pg");
        dbs.push(db);
        await insertTenants(db.admin, fx.tenants);
        const g = `millrace-bench-pg-${runId}`;
        groups.push(g);
        const spawnedAt = Date.now();
        const w = startWorker({ pgUrl: db.adminUrl, tenants: fx.tenants, group: g, logFile: join(workDir, "worker-pg-only.log"), metricsPort: await freePort(), topology: postgresOnlyTopology(workDir) });
        try {
          const d = await measureDrain({ worker: w, pool: db.admin, dbName: db.name, end, pollMs: s.pollMs, timeoutMs: drainTimeout, spawnedAt });
          const st = await tableChecksum(db.admin);
          if (e2eChecksum && (st.rows !== e2eChecksum.rows || st.checksum !== e2eChecksum.checksum)) notes.push("the PostgreSQL-only drain stored different rows from the full pipeline's");
          return d;
        } finally {
          await stopWorker(w);
        }
      });
    }

    // 5. Profiled drain: the same rows again, a second worker under node --cpu-prof, its own group and database.
    let profile: BenchResults["profile"] = { skipped: `not requested (${s.profile} profile; --cpu-prof adds it)` };
    if (s.cpuProfile) {
      profile = await attempt("profiled drain (node --cpu-prof)", log, async () => {
        const db = await createBenchDatabase("profile");
        dbs.push(db);
        await insertTenants(db.admin, fx.tenants);
        const g = `millrace-bench-prof-${runId}`;
        groups.push(g);
        const profDir = join(workDir, "cpuprofile");
        const spawnedAt = Date.now();
        const w = startWorker({ pgUrl: db.adminUrl, tenants: fx.tenants, group: g, logFile: join(workDir, "worker-profiled.log"), metricsPort: await freePort(), cpuProfDir: profDir, s3Bucket: bucket });
        let d: DrainResult | null = null;
        try {
          d = await measureDrain({ worker: w, pool: db.admin, dbName: db.name, end, pollMs: s.pollMs, timeoutMs: drainTimeout * 2, spawnedAt });
        } finally {
          await stopWorker(w, 60_000);
        }
        const exitedAt = Date.now();
        const file = existsSync(profDir) ? mainThreadProfile(profDir) : undefined;
        if (!file) throw new Error(`the profiled worker wrote no .cpuprofile into ${profDir}`);
        // Only the drain: from the join to the last commit, counted back from the worker's exit.
        return { summary: summariseProfile(file, { fromEndMs: exitedAt - d.joinedAt, toEndMs: exitedAt - d.doneAt }), drain: d };
      });
    }

    // 6. Latency: the worker of step 4 again (same group and database, so it resumes at the end),
    //    with rate-limited producers at fractions of the rate it measured.
    const latency: BenchResults["e2e"]["latency"] = [];
    if (!("error" in drain)) {
      const lat = await attempt("latency phases", log, async () => {
        const encoders = await tenantEncoders(fx.tenants);
        const w = startWorker({ pgUrl: e2eDb.adminUrl, tenants: fx.tenants, group, logFile: join(workDir, "worker-latency.log"), metricsPort: await freePort(), s3Bucket: bucket });
        try {
          await waitJoined(w.child, 120_000);
          await sleep(1000);
          let timeline = fx.start + fixtureSpanMs(fx) + 60_000;
          for (const [i, fraction] of s.latencyFractions.entries()) {
            const ph = await attempt(`latency at ${fraction * 100}% of ${Math.round(drain.recordsPerSecond)}/s`, log, () =>
              latencyPhase({ fx, kafka, admin, pool: e2eDb.admin, group, topics: sensorTopics, fraction, maxRate: drain.recordsPerSecond, seconds: s.latencySeconds, encoders, start: timeline, seed: `latency-${i}`, pollMs: s.latencyPollMs, timeoutMs: 120_000, worker: w.child }),
            );
            if ("error" in ph) latency.push({ ...ph, fraction });
            else {
              timeline = ph.lastReadingTime + 60_000;
              const { lastReadingTime: _unused, ...rest } = ph;
              latency.push(rest);
            }
          }
        } finally {
          await stopWorker(w);
        }
        return true;
      });
      if (typeof lat === "object" && "error" in lat) latency.push({ ...lat, fraction: 0 });
    }

    // 7. Database anchors: the same rows, each into a fresh database.
    const rows = await fixtureRows(fx);
    const rawCopyR = await attempt("anchor: raw COPY", log, () => inFreshDb("raw", (db) => rawCopy(db, rows, COPY_BATCH_ROWS)));
    const sinkCp = await attempt("anchor: the sink's COPY as millrace_loader", log, () => inFreshDb("sink_copy", (db) => sinkCopy(db, rows, COPY_BATCH_ROWS)));
    const sinkIns = await attempt("anchor: the sink's insert mode (INSERT … FROM unnest)", log, () => inFreshDb("sink_ins", (db) => sinkInsert(db, rows, COPY_BATCH_ROWS)));
    const stagingText = await attempt("anchor: staging COPY (text) + INSERT…SELECT", log, () => inFreshDb("stage_text", (db) => stagingCopy(db, rows, COPY_BATCH_ROWS, "text")));
    const stagingBinary = await attempt("anchor: staging COPY (binary) + INSERT…SELECT", log, () => inFreshDb("stage_bin", (db) => stagingCopy(db, rows, COPY_BATCH_ROWS, "binary")));
    const psql = await attempt("anchor: psql \\copy", log, () => inFreshDb("psql", (db) => psqlCopy(db, rows, join(workDir, "rows.copy"), existsSync(join(PG_BIN, "psql")) ? join(PG_BIN, "psql") : "psql")));
    rows.clear();

    // 8. The peer.
    let peer: BenchResults["peer"] = { skipped: s.profile === "smoke" ? "smoke profile" : "disabled (--no-peer)" };
    if (s.peer) {
      peer = await attempt("peer: Kafka Connect + Debezium JDBC sink", log, async () => {
        const n = Math.min(s.peerRecords, s.records);
        const db = await anchorDatabase("peer", fx.tenants, ...span);
        dbs.push(db);
        const pt = fx.tenants.map((t) => `millrace-bench-peer-${t}`);
        topics.push(...pt);
        const produced = await producePeerTopics(kafka, admin, fx, n, s.partitions);
        const r = await runPeer({ db, admin, topics: produced.topics, records: n, partitions: s.partitions * s.tenants, batchRows: COPY_BATCH_ROWS, workDir, timeoutMs: Math.max(300_000, (n / 300) * 1000), jsonBytes: produced.bytes, log });
        groups.push(`connect-${r.config.name}`);
        return { ...r, produce: { seconds: produced.seconds, bytes: produced.bytes } };
      });
    }

    // Same rows: every database path against the worker's.
    const sameRows: BenchResults["sameRows"] = [];
    const cmp = (path: string, st: { rows: number; checksum: string } | undefined) => {
      if (!st || !e2eChecksum) return;
      sameRows.push({ path, equal: st.rows === e2eChecksum.rows && st.checksum === e2eChecksum.checksum, rows: st.rows });
    };
    for (const [path, a] of [["raw COPY", rawCopyR], ["sink COPY", sinkCp], ["sink insert mode", sinkIns], ["staging text", stagingText], ["staging binary", stagingBinary], ["psql \\copy", psql]] as const) if (!("error" in a) && !("skipped" in a)) cmp(path, a.stored);
    if (!("error" in peer) && !("skipped" in peer) && peer.records === s.records) cmp("peer", peer.stored ?? undefined);
    if (e2eChecksum && e2eChecksum.rows !== s.records) notes.push(`the worker stored ${e2eChecksum.rows} rows of ${s.records}`);
    const drains: Array<[string, DrainResult]> = [];
    if (!("error" in drain)) drains.push(["e2e", drain]);
    if (!("error" in drainPgOnly) && !("skipped" in drainPgOnly)) drains.push(["PostgreSQL-only", drainPgOnly]);
    if (!("error" in profile) && !("skipped" in profile) && profile.drain) drains.push(["profiled", profile.drain]);
    for (const [what, d] of drains) {
      if ((d.rateLimitedSeconds ?? 0) > 0) {
        notes.push(`the ${what} drain was slowed by the tenants' tier rate limit (${d.rateLimitedSeconds!.toFixed(1)} s of pauses): its rate measures the limit, not the pipeline`);
      }
    }

    const e2eRps = rps(drain);
    const pgOnlyRps = rps(drainPgOnly);
    const naiveRps = rps(naive);
    const ratios: BenchResults["ratios"] = [
      { name: "e2e ÷ raw COPY", value: ratio(e2eRps, rps(rawCopyR)), meaning: "the worker against the database's bulk-load ceiling on the same rows (goal ≥ 0.7)" },
      { name: "e2e PostgreSQL only ÷ the sink's COPY", value: ratio(pgOnlyRps ?? e2eRps, rps(sinkCp)), meaning: "the worker against its own rows statements with nothing else (Kafka, decode, thresholds, offsets) in the way" },
      { name: "the sink's COPY ÷ raw COPY", value: ratio(rps(sinkCp), rps(rawCopyR)), meaning: "what the loader role, its tenant CHECK and 5000-row transactions cost against one plain superuser COPY per tenant" },
      { name: "the sink's COPY ÷ staging COPY binary + INSERT…SELECT", value: ratio(rps(sinkCp), rps(stagingBinary)), meaning: "the sink's one write per row against its design until issue 7 (COPY into a staging table, then INSERT…SELECT) (> 1: faster)" },
      { name: "insert mode ÷ the sink's COPY", value: ratio(rps(sinkIns), rps(sinkCp)), meaning: "what a batch costs after a duplicate key: INSERT…SELECT FROM unnest … ON CONFLICT under RLS against the COPY" },
      { name: "staging text ÷ raw COPY", value: ratio(rps(stagingText), rps(rawCopyR)), meaning: "what RLS + staging + INSERT…SELECT ON CONFLICT costs against a plain superuser COPY" },
      { name: "staging binary ÷ staging text", value: ratio(rps(stagingBinary), rps(stagingText)), meaning: "binary COPY against text into the staging table, server side (> 1: binary is faster)" },
      { name: "psql \\copy ÷ raw COPY", value: ratio(rps(psql), rps(rawCopyR)), meaning: "one psql connection against parallel pg-copy-streams" },
      { name: "e2e ÷ naive", value: ratio(e2eRps, naiveRps), meaning: "the worker against one INSERT per message (goal ≥ 10)" },
      { name: "e2e ÷ peer", value: ratio(e2eRps, rps(peer)), meaning: "the worker against Kafka Connect + Debezium JDBC sink (goal > 1)" },
      { name: "Node drain ÷ Kafka's tool", value: ratio(rps(drainR), rps(cperf)), meaning: "kafkajs no-op consumer against Kafka's ConsumerPerformance (Java client)" },
      { name: "e2e ÷ Node drain", value: ratio(e2eRps, rps(drainR)), meaning: "how much of the kafkajs read ceiling the whole pipeline reaches" },
      { name: "e2e PostgreSQL only ÷ raw COPY", value: ratio(pgOnlyRps, rps(rawCopyR)), meaning: "like for like with the database anchors: the worker with the Parquet sink taken out" },
      { name: "e2e (PostgreSQL + Parquet) ÷ e2e PostgreSQL only", value: ratio(e2eRps, pgOnlyRps), meaning: "what writing Parquet as well costs the PostgreSQL side" },
      { name: "decode ÷ avsc baseline", value: micro.stages.find((x) => x.id === "avro_decode")?.ratioToBaseline ?? null, meaning: "AvroDecoder against avsc fromBuffer, one core (goal ≤ 1.5)" },
      { name: "binary ÷ text COPY encoding (client)", value: micro.stages.find((x) => x.id === "copy_encode_binary")?.ratioToBaseline ?? null, meaning: "ns/record of the binary encoder against encodeCopyRows (< 1: binary is cheaper)" },
    ];
    const goal = (name: string, value: number | null, op: "≥" | "≤" | ">", target: number) => ({
      name,
      value,
      op,
      target,
      met: value === null ? null : op === "≥" ? value >= target : op === "≤" ? value <= target : value > target,
    });
    const goals: BenchResults["goals"] = [
      goal("e2e ≥ 0.7 × raw COPY", ratios.find((q) => q.name === "e2e ÷ raw COPY")!.value, "≥", 0.7),
      goal("e2e ≥ 10 × naive", ratios.find((q) => q.name === "e2e ÷ naive")!.value, "≥", 10),
      goal("e2e ahead of the peer", ratios.find((q) => q.name === "e2e ÷ peer")!.value, ">", 1),
      goal("decode ≤ 1.5 × avsc baseline", ratios.find((q) => q.name === "decode ÷ avsc baseline")!.value, "≤", 1.5),
    ];
    const cpuCell = (v: number | null | undefined, what = "") => (v === null || v === undefined ? undefined : `${v.toFixed(1)}${what}`);
    const sec = (x: unknown) => (x && typeof x === "object" && ("error" in x || "skipped" in x) ? (x as Failed | Skipped) : undefined);
    const dr = "error" in drain ? undefined : drain;
    const table: TableRow[] = [
      { path: parquetSink ? "millrace e2e (PostgreSQL + Parquet)" : "millrace e2e (worker)", kind: "ours", records: dr?.records ?? null, recordsPerSecond: e2eRps, cpu: dr ? `worker ${f1(dr.cpu.perMillionRecords.worker)}, pg ${f1(dr.cpu.perMillionRecords.postgresCluster)}, kafka ${f1(dr.cpu.perMillionRecords.kafka)}` : undefined, notes: dr ? `join → last commit, ${dr.seconds.toFixed(1)} s; peak RSS ${((dr.peakRssBytes ?? 0) / 2 ** 20).toFixed(0)} MiB` : undefined, section: sec(drain) },
      { path: "raw COPY (superuser)", kind: "anchor", records: (rawCopyR as AnchorResult).records ?? null, recordsPerSecond: rps(rawCopyR), cpu: cpuCell((rawCopyR as AnchorResult).cpuPerMillion?.postgresCluster, " pg"), notes: "pg-copy-streams, prebuilt buffers, 1 connection per tenant", section: sec(rawCopyR) },
      { path: "the sink's COPY (millrace_loader)", kind: "anchor", records: (sinkCp as AnchorResult).records ?? null, recordsPerSecond: rps(sinkCp), cpu: cpuCell((sinkCp as AnchorResult).cpuPerMillion?.postgresCluster, " pg"), notes: "the sink's statements: tenant context, loader role, binary COPY; 5000-row transactions", section: sec(sinkCp) },
      { path: "the sink's insert mode", kind: "anchor", records: (sinkIns as AnchorResult).records ?? null, recordsPerSecond: rps(sinkIns), cpu: cpuCell((sinkIns as AnchorResult).cpuPerMillion?.postgresCluster, " pg"), notes: "INSERT … FROM unnest of binary arrays, ON CONFLICT, under RLS (after a duplicate key)", section: sec(sinkIns) },
      { path: "staging COPY text + INSERT…SELECT", kind: "anchor", records: (stagingText as AnchorResult).records ?? null, recordsPerSecond: rps(stagingText), cpu: cpuCell((stagingText as AnchorResult).cpuPerMillion?.postgresCluster, " pg"), notes: "the sink's former SQL under RLS, 5000-row transactions", section: sec(stagingText) },
      { path: "staging COPY binary + INSERT…SELECT", kind: "anchor", records: (stagingBinary as AnchorResult).records ?? null, recordsPerSecond: rps(stagingBinary), cpu: cpuCell((stagingBinary as AnchorResult).cpuPerMillion?.postgresCluster, " pg"), notes: "the same with binary COPY (the sink's format until issue 7)", section: sec(stagingBinary) },
      { path: "psql \\copy", kind: "anchor", records: (psql as AnchorResult).records ?? null, recordsPerSecond: rps(psql), cpu: cpuCell((psql as AnchorResult).cpuPerMillion?.postgresCluster, " pg"), notes: "one connection, from a file", section: sec(psql) },
      { path: "kafkajs no-op drain", kind: "anchor", records: (drainR as DrainAnchor).records ?? null, recordsPerSecond: rps(drainR), cpu: cpuCell((drainR as DrainAnchor).cpuSecondsPerMillion, " node"), notes: "worker's fetch settings", section: sec(drainR) },
      { path: "Kafka ConsumerPerformance", kind: "anchor", records: (cperf as ConsumerPerfAnchor).records ?? null, recordsPerSecond: rps(cperf), cpu: cpuCell((cperf as ConsumerPerfAnchor).cpuSecondsPerMillion, " jvm (incl. start-up)"), notes: "fetch.nMsg.sec", section: sec(cperf) },
      { path: "naive (INSERT per message)", kind: "peer", records: (naive as { records: number }).records ?? null, recordsPerSecond: naiveRps, cpu: cpuCell((naive as { cpuSecondsPerMillion: number | null }).cpuSecondsPerMillion, " node"), notes: `first rows of the same topics, bounded to ${s.naiveSeconds} s`, section: sec(naive) },
      { path: "peer: Kafka Connect + Debezium JDBC", kind: "peer", records: (peer as PeerResult).records ?? null, recordsPerSecond: rps(peer), cpu: cpuCell((peer as PeerResult).cpuPerMillion?.connect, " jvm"), notes: "same rows as JSON with schema, separate topics", section: sec(peer) },
    ];
    if (!("error" in drainPgOnly) && !("skipped" in drainPgOnly)) {
      const q = drainPgOnly;
      table.splice(1, 0, { path: "millrace e2e (PostgreSQL only)", kind: "ours", records: q.records, recordsPerSecond: q.recordsPerSecond, cpu: `worker ${f1(q.cpu.perMillionRecords.worker)}, pg ${f1(q.cpu.perMillionRecords.postgresCluster)}, kafka ${f1(q.cpu.perMillionRecords.kafka)}`, notes: `Parquet sink removed from the topology; peak RSS ${((q.peakRssBytes ?? 0) / 2 ** 20).toFixed(0)} MiB` });
    } else if ("error" in drainPgOnly) table.splice(1, 0, { path: "millrace e2e (PostgreSQL only)", kind: "ours", records: null, recordsPerSecond: null, section: drainPgOnly });
    if (!("error" in profile) && !("skipped" in profile) && profile.drain) {
      table.splice(1, 0, { path: "millrace e2e under --cpu-prof", kind: "ours", records: profile.drain.records, recordsPerSecond: profile.drain.recordsPerSecond, notes: "profiler overhead included" });
    }
    notes.push(
      "The peer reads Kafka Connect's JSON-with-schema (no converter on Maven Central reads the Confluent Avro wire format) from separate topics with the same rows, keys and partition count, and writes a plain table (no RLS, no partitions) as superuser.",
      "The naive pipeline is bounded in time; its rate is over the first rows of the same topics.",
      "PostgreSQL and Kafka are shared with other work on this machine: their CPU figures are for the whole cluster/broker over the interval (the e2e also reports this run's own database backends).",
    );
    meta.machine.loadAverageEnd = loadavg();
    meta.elapsedSeconds = (performance.now() - t0) / 1000;
    results = {
      meta,
      micro,
      e2e: { preload, drain, drainPostgresOnly: drainPgOnly, backgroundCores, latency, parquet },
      anchors: { rawCopy: rawCopyR, sinkCopy: sinkCp, sinkInsert: sinkIns, stagingCopyText: stagingText, stagingCopyBinary: stagingBinary, psqlCopy: psql, nodeDrain: drainR, kafkaConsumerPerformance: cperf, naive },
      peer,
      profile,
      ratios,
      goals,
      sameRows,
      table,
      chart: { skipped: "not rendered yet" },
      notes,
    };
  } finally {
    if (!s.keep) {
      await deleteGroupsQuietly(admin, groups);
      await deleteTopicsQuietly(admin, topics);
      for (const db of dbs) await db.drop().catch((err: unknown) => log(`bench: dropping ${db.name} failed: ${(err as Error).message}`));
      if (bucketMade) await removeBucket(s3, bucket).catch((err: unknown) => log(`bench: removing bucket ${bucket} failed: ${(err as Error).message}`));
    } else {
      log(`bench: kept databases ${dbs.map((d) => d.name).join(", ")}, bucket ${bucket} and topics ${topics.join(", ")}`);
    }
    await admin.disconnect().catch(() => {});
  }

  mkdirSync(s.outDir, { recursive: true });
  const json = join(s.outDir, `${s.profile}-${meta.date}.json`);
  const markdown = join(s.outDir, "latest.md");
  const png = join(s.outDir, "latest.png");
  results.chart = writeChart(results, join(workDir, "chart.svg"), png);
  writeFileSync(json, `${JSON.stringify(results, null, 2)}\n`);
  writeFileSync(markdown, `${renderMarkdown(results)}\n`);
  if (!s.keep) rmSync(workDir, { recursive: true, force: true, maxRetries: 2 });
  return { results, files: { json, markdown, png: "png" in results.chart ? png : undefined } };
}

export const DEFAULT_OUT_DIR = join(repoRoot, "bench", "results");
export type { pg };
