/**
 * Fault-injection harness (issue 8, first part): real worker processes (`millrace run`), a producer
 * loop recording every acknowledgement per (tenant, equipment, seq), a fault scheduler, a settle
 * phase and an independent checker over producer acks, PostgreSQL rows, Parquet rows on S3 (pyarrow)
 * and the dead-letter topics. Results: bench/results/faults-<profile>.json. Scope and gaps: docs/faults.md.
 *
 * Every reading carries its sequence: equipment `eq-NN` of a tenant sends seq 0, 1, 2, … with
 * time = base + seq·1 s and vibration = seq, on partition NN mod partitions (so every partition gets
 * the same share). Its temperature follows a fixed cycle ({@link temperatureOf}) that raises and
 * clears one temperature alarm per cycle, so the checker can also count alert events.
 * Bounded throughout: every wait has a deadline, the run stops by itself.
 */
import { randomUUID } from "node:crypto";
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Kafka, logLevel, type Admin, type Producer } from "kafkajs";
import { requireEnv } from "../../lib/env.ts";
import type { SensorReading } from "../../schemas/index.ts";
import { repoRoot, stackContext } from "../../stack/context.ts";
import { kafkaService, kafkaStackCredentials } from "../../stack/kafka.ts";
import { createKafka } from "../../lib/kafka-client.ts";
import type { StackContext } from "../../stack/types.ts";
import { createTenant } from "../../tenants/provision.ts";
import { createTestDatabase, type TestDatabase } from "../helpers/db.ts";
import { consumeToSentinels, encodeReading, endOffsets, header, registerSensorSchema } from "../helpers/kafka.ts";
import { pyarrowVersion, readS3DatasetWithPyarrow } from "../helpers/parquet-readers.ts";
import { startWorkerProcess, workerLogLines, writeTopology, type WorkerProcess } from "../helpers/processes.ts";
import { waitUntil } from "../helpers/wait.ts";
import { FaultProxy, type PgMessage, type ProxyConn } from "./proxy.ts";

export type FaultKind = "kill9" | "rolling_bounce" | "scale" | "broker_kill" | "broker_stop" | "poison" | "pg_cut" | "pg_outage";

/**
 * The alarm cycle of every equipment: ALARM_CYCLE readings (1 s of event time apart), of which
 * [ALARM_HIGH_FROM, ALARM_HIGH_TO) are at 115 °C — above the repository topology's temperature_high
 * major level (110) for 60 s, past its 30 s sustain — and the rest at 20 °C, far below its clear
 * level. So each complete cycle raises exactly one temperature alarm and clears it again.
 */
export const ALARM_CYCLE = 200;
export const ALARM_HIGH_FROM = 100;
export const ALARM_HIGH_TO = 160;
export const temperatureOf = (seq: number): number => (seq % ALARM_CYCLE >= ALARM_HIGH_FROM && seq % ALARM_CYCLE < ALARM_HIGH_TO ? 115 : 20);

/** The harness's reading number `seq` of equipment `eq` (the rig's producer sends the same). */
export function faultReading(tenant: string, eq: number, seq: number, base: number): SensorReading {
  return { time: base + seq * 1000, tenant_id: tenant, equipment_id: eqName(eq), facility_id: "fac-01", temperature: temperatureOf(seq), vibration: seq, pressure: null, flow_rate: null };
}

export interface FaultProfile {
  name: string;
  tenants: number;
  partitions: number;
  /** Equipment per tenant (spread evenly over the partitions). */
  equipment: number;
  /** Minimum readings per partition before the producer may stop. */
  minPerPartition: number;
  /** Readings per equipment per producer tick. */
  perTick: number;
  tickMs: number;
  /** Replicas in the steady phase (the scaling fault goes 1 → maxReplicas → 1). */
  replicas: number;
  kills: number;
  bounceRounds: number;
  scale: boolean;
  poison: boolean;
  /**
   * Broker restarts; needs an isolated broker of the harness's own (never the shared stack's).
   * Alternately hard (SIGKILL, `broker_kill`) and clean (SIGTERM, `broker_stop`).
   */
  brokerKills: number;
  /**
   * PostgreSQL connection cuts through a fault proxy (test/faults/proxy.ts) in front of every
   * worker: alternately cut at a batch's first CopyData, and a batch's COMMIT reply swallowed with
   * the connection cut (committed, outcome unknown to the worker). 0 = workers connect directly.
   */
  pgCuts: number;
  /**
   * PostgreSQL outages through the same proxy: for pgOutageMs every connection is cut and every
   * new one reset, as a stopped server looks to its clients; readiness must report it.
   */
  pgOutages: number;
  pgOutageMs: number;
  /** Bound of each recovery wait and of the settle phase. */
  recoverTimeoutMs: number;
  settleTimeoutMs: number;
  seed: number;
}

export const PROFILES: Record<"quick" | "soak", FaultProfile> = {
  quick: {
    name: "quick", tenants: 2, partitions: 3, equipment: 12, minPerPartition: 1000, perTick: 3, tickMs: 250,
    replicas: 2, kills: 3, bounceRounds: 1, scale: true, poison: true, brokerKills: 0, pgCuts: 0, pgOutages: 0, pgOutageMs: 60_000,
    recoverTimeoutMs: 60_000, settleTimeoutMs: 90_000, seed: 1,
  },
  soak: {
    name: "soak", tenants: 3, partitions: 3, equipment: 12, minPerPartition: 5000, perTick: 4, tickMs: 250,
    replicas: 3, kills: 24, bounceRounds: 3, scale: true, poison: true, brokerKills: 4, pgCuts: 6, pgOutages: 1, pgOutageMs: 60_000,
    recoverTimeoutMs: 120_000, settleTimeoutMs: 300_000, seed: 8,
  },
};

export interface WorkerExit {
  name: string;
  signal: "SIGTERM" | "SIGKILL";
  code: number | null;
  ms: number;
}

export interface FaultRecord {
  kind: FaultKind;
  at: number;
  detail: string;
  recoverMs: number | null;
}

export interface TenantCheck {
  tenant: string;
  acked: number;
  pgRows: number;
  parquetRows: number;
  missingPg: number;
  missingParquet: number;
  duplicatedParquet: number;
  unackedPresent: number;
  foreignRows: number;
  inversionsPg: number;
  inversionsParquet: number;
  deadLetters: number;
  deadLettersExpected: number;
  alerts: AlertCheck;
  examples: string[];
}

/** Alert events of one tenant: the alerts table against the alerts topic (both exactly once). */
export interface AlertCheck {
  /** Events in the alerts table (threshold kind). */
  pg: number;
  /** Distinct events (millrace.alert.event_id) on the alerts topic. */
  topicDistinct: number;
  /** Records on the topic repeating an event already there (0: the outbox relay delivers exactly once). */
  redelivered: number;
  /** Table events never published. */
  missingOnTopic: number;
  /** Topic events the table does not have. */
  notInTable: number;
  /** Topic events repeated with different bytes. */
  contradictory: number;
  /** Alarms whose steps are not 1, 2, … from `raised`, or that go on after `cleared`. */
  lifecycleErrors: number;
  /** Complete alarm cycles checked (equipment whose rows are gap-free), and those without exactly one alarm raised and cleared in them. */
  cyclesChecked: number;
  cyclesWrong: number;
}

export interface FaultResults {
  profile: string;
  seed: number;
  startedAt: string;
  durationMs: number;
  broker: "shared" | "isolated";
  faults: Record<FaultKind, number>;
  faultLog: FaultRecord[];
  records: { produced: number; acked: number; failedSends: number; perPartitionMin: number };
  missing: number;
  duplicated: number;
  inversions: number;
  unackedPresent: number;
  parquetEqualsPg: boolean;
  /** Sums over the tenants. */
  alerts: AlertCheck;
  /** Per PostgreSQL outage: the live workers whose /readyz reported the database within it, of all live. */
  pgOutageReadiness: Array<{ reported: number; of: number }>;
  settleMs: number | null;
  recoverMs: { max: number | null; mean: number | null };
  sigtermExits: WorkerExit[];
  badSigtermExits: number;
  poison: { tenantA: string; tenantB: string; tenantBLagBefore: number; tenantBLagMax: number; tenantBRecoverMs: number | null } | null;
  tenants: TenantCheck[];
  errors: string[];
}

/** Deterministic PRNG (mulberry32), so a run can be repeated with the same seed. */
function rng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

export function s3Settings() {
  return {
    endpoint: requireEnv("MILLRACE_S3_ENDPOINT"),
    region: process.env.MILLRACE_S3_REGION ?? "us-east-1",
    accessKeyId: requireEnv("MILLRACE_S3_ACCESS_KEY_ID"),
    secretAccessKey: requireEnv("MILLRACE_S3_SECRET_ACCESS_KEY"),
  };
}

export const eqName = (i: number) => `eq-${String(i).padStart(2, "0")}`;

export interface RunOptions {
  profile: FaultProfile;
  outFile?: string;
  log?: (msg: string) => void;
  /** Keep the database and the logs afterwards. */
  keep?: boolean;
}

export async function runFaults(opts: RunOptions): Promise<FaultResults> {
  const p = opts.profile;
  const log = opts.log ?? ((m: string) => process.stderr.write(`[faults] ${m}\n`));
  const random = rng(p.seed);
  const t0 = Date.now();
  const runId = `${p.name}-${t0.toString(36)}`;
  const logDir = join(repoRoot, ".stack", "test-logs", `faults-${runId}`);
  const errors: string[] = [];
  const faultLog: FaultRecord[] = [];
  const sigtermExits: WorkerExit[] = [];
  const procs: WorkerProcess[] = [];
  const live: WorkerProcess[] = [];
  let workerNo = 0;

  pyarrowVersion(); // a missing pyarrow fails the run up front
  let brokerCtx: StackContext | undefined;
  let brokerDir: string | undefined;
  let brokers = requireEnv("MILLRACE_KAFKA_BROKERS");
  if (p.brokerKills > 0) {
    brokerDir = mkdtempSync(join(tmpdir(), "millrace-faults-broker-"));
    const b = stackContext();
    brokerCtx = { ...b, stateDir: brokerDir, ports: { ...b.ports, kafka: 29292, kafkaController: 29293 } };
    log(`starting an isolated broker on 127.0.0.1:${brokerCtx.ports.kafka}`);
    await kafkaService.install(brokerCtx);
    await kafkaService.start(brokerCtx);
    await kafkaService.waitReady(brokerCtx, 120_000);
    brokers = `127.0.0.1:${brokerCtx.ports.kafka}`;
  }
  const kafka = createKafka({ clientId: `faults-${runId}`, brokers: brokers.split(","), auth: brokerCtx ? kafkaStackCredentials(brokerCtx).admin : undefined, logLevel: logLevel.NOTHING, retry: { retries: 8 } });
  const db: TestDatabase = await createTestDatabase();
  let pgProxy: FaultProxy | undefined;
  const admin: Admin = kafka.admin();
  let producer: Producer | undefined;
  const tenants = Array.from({ length: p.tenants }, () => randomUUID());
  const topics = tenants.map((t) => `sensor-data-${t}`);
  const group = `faults-${runId}`;
  const base = Date.now() - 3 * 86_400_000;
  // acks[tenant][equipment] = set of acked seqs; nextSeq per (tenant, equipment).
  const acked = tenants.map(() => Array.from({ length: p.equipment }, () => new Set<number>()));
  const nextSeq = tenants.map(() => new Array<number>(p.equipment).fill(0));
  let produced = 0;
  let failedSends = 0;
  const poisonSent = new Map<string, number>();

  try {
    await admin.connect();
    // Idempotent, so retried (bounded) while a just-started broker settles.
    for (const t of tenants) await waitUntil(`tenant ${t.slice(0, 8)} provisioned (enterprise: the fault counts are not slowed by a tier rate limit)`, async () => (await createTenant(db.admin, admin, { tenantId: t, name: `faults-${t.slice(0, 6)}`, tier: "enterprise", partitions: p.partitions }), true), 60_000, 500);
    const schemaId = await registerSensorSchema(topics[0]!);
    const topology = writeTopology(logDir, [
      [/max_rows: 5000/, "max_rows: 200"],
      [/max_rows: 100000/, "max_rows: 500"],
      [/idle_flush: 60s/, "idle_flush: 1s"],
      [/session_timeout: 30s/, "session_timeout: 10s"],
      [/heartbeat_interval: 3s/, "heartbeat_interval: 1s"],
    ]);
    // An isolated broker has its own SCRAM passwords: its settings replace the shared stack's.
    const env = { ...(brokerCtx ? kafkaService.env(brokerCtx) : {}), MILLRACE_KAFKA_BROKERS: brokers };
    let workerPgUrl = db.adminUrl;
    if (p.pgCuts > 0 || p.pgOutages > 0) {
      const u = new URL(db.adminUrl);
      pgProxy = await FaultProxy.start({ name: "pg", protocol: "pg", target: { host: u.hostname, port: Number(u.port) } });
      u.host = `127.0.0.1:${pgProxy.port}`;
      workerPgUrl = u.toString();
    }
    const start = () => {
      const w = startWorkerProcess({ name: `w${++workerNo}`, topology, group, tenants, pgUrl: workerPgUrl, logDir, env });
      procs.push(w);
      live.push(w);
      return w;
    };
    const drop = (w: WorkerProcess) => live.splice(live.indexOf(w), 1);
    const stopClean = async (w: WorkerProcess) => {
      drop(w);
      const at = Date.now();
      w.kill("SIGTERM");
      const code = await Promise.race([w.exited, new Promise<"timeout">((r) => setTimeout(() => r("timeout"), 30_000).unref())]);
      const ms = Date.now() - at;
      if (code === "timeout") {
        w.kill("SIGKILL");
        await w.exited;
        sigtermExits.push({ name: w.name, signal: "SIGTERM", code: null, ms });
        errors.push(`${w.name} did not exit within 30 s of SIGTERM (log: ${w.logFile})`);
      } else {
        sigtermExits.push({ name: w.name, signal: "SIGTERM", code, ms });
        if (code !== 0) errors.push(`${w.name} exited ${code} after SIGTERM (log: ${w.logFile})`);
      }
    };

    /** PG consumer_offsets and the Parquet sink's offsets both at (or past) `target` for every partition. */
    const storedOffsets = async (table: "pg" | "parquet", topic: string) => {
      const r = table === "pg"
        ? await db.admin.query<{ partition: number; next_offset: string }>("SELECT partition, next_offset FROM millrace.consumer_offsets WHERE consumer_group = $1 AND topic = $2", [group, topic])
        : await db.admin.query<{ partition: number; next_offset: string }>("SELECT partition, next_offset FROM millrace.sink_offsets WHERE sink = 's3_parquet' AND consumer_group = $1 AND topic = $2", [group, topic]);
      return new Map(r.rows.map((x) => [x.partition, Number(x.next_offset)]));
    };
    // The end offsets of every topic; retried (bounded) while a broker is restarting or a new topic's leader settles.
    const snapshot = () =>
      waitUntil("the topics' end offsets", async () => new Map(await Promise.all(topics.map(async (t) => [t, await endOffsets(admin, t)] as const))), 120_000, 250);
    await snapshot();
    const reached = async (target: Map<string, Map<number, number>>, onlyTopics = topics) => {
      for (const topic of onlyTopics) {
        const [pgOff, pqOff] = await Promise.all([storedOffsets("pg", topic), storedOffsets("parquet", topic)]);
        for (const [part, high] of target.get(topic) ?? []) {
          if (high === 0) continue;
          if ((pgOff.get(part) ?? 0) < high || (pqOff.get(part) ?? 0) < high) return false;
        }
      }
      return true;
    };
    const lagOf = async (topic: string) => {
      const [end, pgOff] = await Promise.all([endOffsets(admin, topic), storedOffsets("pg", topic)]);
      let lag = 0;
      for (const [part, high] of end) lag += high - (pgOff.get(part) ?? 0);
      return lag;
    };
    /** Time until everything produced before the fault is in both sinks (bounded; null = not within the bound). */
    const recover = async (kind: FaultKind, detail: string, at: number) => {
      const target = await snapshot();
      let recoverMs: number | null = null;
      try {
        await waitUntil(`recovery after ${kind} (${detail})`, () => reached(target), p.recoverTimeoutMs, 250);
        recoverMs = Date.now() - at;
      } catch (err) {
        errors.push((err as Error).message);
      }
      faultLog.push({ kind, at: at - t0, detail, recoverMs });
      log(`${kind}: ${detail} → recovered in ${recoverMs ?? "∞"} ms`);
    };

    // ----------------------------------------------------------------------------- producer loop
    producer = kafka.producer({ idempotent: true, maxInFlightRequests: 1, allowAutoTopicCreation: false, retry: { retries: 5 } });
    await producer.connect();
    let producing = true;
    const perTenantMin = p.minPerPartition * p.partitions;
    const producerLoop = (async () => {
      while (producing || nextSeq.some((eqs) => eqs.reduce((a, b) => a + b, 0) < perTenantMin)) {
        for (const [ti, tenant] of tenants.entries()) {
          const batch: Array<{ eq: number; seq: number }> = [];
          for (let e = 0; e < p.equipment; e++) for (let k = 0; k < p.perTick; k++) batch.push({ eq: e, seq: nextSeq[ti]![e]!++ });
          const messages = batch.map(({ eq, seq }) => {
            return { key: eqName(eq), partition: eq % p.partitions, value: encodeReading(schemaId, faultReading(tenant, eq, seq, base)) };
          });
          produced += messages.length;
          try {
            await producer!.send({ topic: topics[ti]!, acks: -1, messages });
            for (const { eq, seq } of batch) acked[ti]![eq]!.add(seq);
          } catch (err) {
            // Not retried with the same seqs: an unacked record may or may not be in the topic; the
            // checker counts it as "unacked present" if it shows up, never as missing.
            failedSends++;
            if (failedSends <= 3) log(`send failed (${(err as Error).message}); those seqs stay unacked`);
          }
        }
        await new Promise((r) => setTimeout(r, p.tickMs));
      }
    })();

    // ----------------------------------------------------------------------------- fault scheduler
    const faults: Record<FaultKind, number> = { kill9: 0, rolling_bounce: 0, scale: 0, broker_kill: 0, broker_stop: 0, poison: 0, pg_cut: 0, pg_outage: 0 };
    const pgOutageReadiness: FaultResults["pgOutageReadiness"] = [];
    start();
    await waitUntil("the first rows in PostgreSQL", async () => (await db.admin.query("SELECT count(*)::int AS n FROM sensor_data_raw")).rows[0].n > 0, 120_000, 250);
    if (p.scale) {
      const at = Date.now();
      while (live.length < 3) start();
      faults.scale++;
      await recover("scale", `1 → ${live.length}`, at);
    }
    while (live.length < p.replicas) start();

    let poison: FaultResults["poison"] = null;
    let brokerKillsLeft = p.brokerKills;
    for (let k = 0; k < p.kills; k++) {
      await new Promise((r) => setTimeout(r, 200 + Math.floor(random() * 2500))); // a random moment (deliberate jitter, not synchronisation)
      const victim = live[Math.floor(random() * live.length)]!;
      const at = Date.now();
      drop(victim);
      victim.kill("SIGKILL");
      await victim.exited;
      faults.kill9++;
      start();
      await recover("kill9", `${victim.name} killed, replacement started`, at);
      if (brokerCtx && brokerKillsLeft > 0 && (k + 1) % Math.max(1, Math.floor(p.kills / (p.brokerKills + 1))) === 0) {
        brokerKillsLeft--;
        const hard = (p.brokerKills - brokerKillsLeft) % 2 === 1; // the 1st, 3rd, … hard; the others clean
        const bat = Date.now();
        await kafkaService.stop(brokerCtx, { force: hard });
        await new Promise((r) => setTimeout(r, 2000 + Math.floor(random() * 3000))); // broker down for a while
        await kafkaService.start(brokerCtx);
        await kafkaService.waitReady(brokerCtx, 120_000);
        faults[hard ? "broker_kill" : "broker_stop"]++;
        await recover(hard ? "broker_kill" : "broker_stop", hard ? "isolated broker SIGKILLed and restarted" : "isolated broker stopped cleanly (SIGTERM) and restarted", bat);
      }
    }
    for (let i = 0; pgProxy && i < p.pgCuts; i++) {
      await new Promise((r) => setTimeout(r, 200 + Math.floor(random() * 2500))); // a random moment (deliberate jitter, not synchronisation)
      const proxy = pgProxy;
      const copyCut = i % 2 === 0;
      let at = 0;
      const batchOf = (m: PgMessage, c: ProxyConn) => {
        if (m.type === "Q" && /^COPY sensor_data_raw\b/.test(m.text ?? "")) c.state.batch = true;
        if (m.type === "Q" && (m.text === "COMMIT" || m.text === "ROLLBACK")) {
          c.state.ending = c.state.batch === true;
          c.state.batch = false;
        } else if (m.type === "Q" || m.type === "P") c.state.ending = false;
      };
      proxy.hooks = copyCut
        ? { onPgClient: (m, c) => (batchOf(m, c), m.type === "d" && c.state.batch && !at ? ((at = Date.now()), "cut") : undefined) }
        : {
            onPgClient: (m, c) => void batchOf(m, c),
            onPgServer: (m, c) => (m.type === "C" && m.text === "COMMIT" && c.state.ending && !at ? ((at = Date.now()), "cut") : undefined),
          };
      const what = copyCut ? "connection cut during a batch's COPY" : "a batch's COMMIT reply lost, connection cut";
      try {
        await waitUntil(`the PostgreSQL cut (${what})`, async () => at > 0, 90_000, 50);
      } catch (err) {
        errors.push((err as Error).message);
      }
      proxy.hooks = {};
      if (at > 0) {
        faults.pg_cut++;
        await recover("pg_cut", what, at);
      }
    }
    for (let i = 0; pgProxy && i < p.pgOutages; i++) {
      const proxy = pgProxy;
      const at = Date.now();
      proxy.refuse(p.pgOutageMs); // like a stopped server: every new connection is reset
      proxy.cutAll();
      // Readiness of every live worker reports the database while it is down (polled, bounded by the outage).
      const watched = [...live];
      const reported = new Set<string>();
      await waitUntil("every live worker's /readyz to report the PostgreSQL outage", async () => {
        for (const w of watched) {
          if (reported.has(w.name)) continue;
          const port = workerLogLines(w.logFile, /metrics and health endpoints listening/).at(-1)?.port;
          if (typeof port !== "number") continue;
          const res = await fetch(`http://127.0.0.1:${port}/readyz`).catch(() => undefined);
          if (res?.status === 503 && ((await res.json()) as { why: string[] }).why.some((y) => /database/.test(y))) reported.add(w.name);
        }
        return reported.size === watched.length || !proxy.refusing;
      }, p.pgOutageMs + 5_000, 500).catch(() => {});
      if (!proxy.refusing) errors.push(`PostgreSQL outage ${i + 1}: readiness reported it on ${reported.size} of ${watched.length} workers only`);
      pgOutageReadiness.push({ reported: reported.size, of: watched.length });
      await waitUntil("the end of the PostgreSQL outage", async () => !proxy.refusing, p.pgOutageMs + 5_000, 250);
      faults.pg_outage++;
      await recover("pg_outage", `PostgreSQL unreachable for ${p.pgOutageMs / 1000} s (readiness 503 on ${reported.size}/${watched.length} workers)`, at);
    }
    for (let round = 0; round < p.bounceRounds; round++) {
      const at = Date.now();
      for (const w of [...live]) {
        await stopClean(w);
        start();
      }
      faults.rolling_bounce++;
      await recover("rolling_bounce", `round ${round + 1}: every replica SIGTERMed and replaced`, at);
    }
    if (p.poison && tenants.length >= 2) {
      const [a, b] = [tenants[0]!, tenants[1]!];
      const lagBefore = (await waitUntil("tenant B's lag", async () => ({ n: await lagOf(topics[1]!) }), 60_000, 250)).n;
      const at = Date.now();
      await producer.send({ topic: topics[0]!, acks: -1, messages: [{ key: "eq-00", partition: 0, value: Buffer.from('{"not":"avro"}') }] });
      poisonSent.set(a, (poisonSent.get(a) ?? 0) + 1);
      faults.poison++;
      const target = await snapshot();
      let lagMax = lagBefore;
      let bRecover: number | null = null;
      try {
        await waitUntil("tenant B past the poison's moment", async () => {
          lagMax = Math.max(lagMax, await lagOf(topics[1]!));
          return reached(target, [topics[1]!]);
        }, p.recoverTimeoutMs, 250);
        bRecover = Date.now() - at;
      } catch (err) {
        errors.push((err as Error).message);
      }
      await recover("poison", `bad_magic_byte record in tenant ${a.slice(0, 8)}`, at);
      poison = { tenantA: a, tenantB: b, tenantBLagBefore: lagBefore, tenantBLagMax: lagMax, tenantBRecoverMs: bRecover };
    }
    if (p.scale) {
      const at = Date.now();
      while (live.length > 1) await stopClean(live[live.length - 1]!);
      faults.scale++;
      await recover("scale", "→ 1 (clean SIGTERM)", at);
    }

    // ----------------------------------------------------------------------------- settle
    producing = false;
    await producerLoop;
    const settleAt = Date.now();
    const final = await snapshot();
    let settleMs: number | null = null;
    try {
      await waitUntil("settle: PG and Parquet offsets at the topics' end", () => reached(final), p.settleTimeoutMs, 500);
      settleMs = Date.now() - settleAt;
    } catch (err) {
      errors.push((err as Error).message);
    }
    for (const w of [...live]) await stopClean(w);
    const perPartitionMin = Math.min(...[...final.values()].flatMap((m) => [...m.values()]));

    // ----------------------------------------------------------------------------- checker
    log("checking: producer acks vs PostgreSQL vs Parquet (pyarrow) vs dead-letter topics");
    const checks = await checkTenants({ db, kafka, tenants, acked, equipment: p.equipment, base, poisonSent, alarmCycles: true });

    const sum = (f: (c: TenantCheck) => number) => checks.reduce((n, c) => n + f(c), 0);
    const recs = faultLog.map((f) => f.recoverMs).filter((x): x is number => x !== null);
    const results: FaultResults = {
      profile: p.name,
      seed: p.seed,
      startedAt: new Date(t0).toISOString(),
      durationMs: Date.now() - t0,
      broker: brokerCtx ? "isolated" : "shared",
      faults,
      faultLog,
      records: { produced, acked: sum((c) => c.acked), failedSends, perPartitionMin },
      missing: sum((c) => c.missingPg + c.missingParquet),
      duplicated: sum((c) => c.duplicatedParquet),
      inversions: sum((c) => c.inversionsPg + c.inversionsParquet),
      unackedPresent: sum((c) => c.unackedPresent),
      parquetEqualsPg: checks.every((c) => c.parquetRows === c.pgRows),
      alerts: sumAlerts(checks.map((c) => c.alerts)),
      pgOutageReadiness,
      settleMs,
      recoverMs: { max: recs.length ? Math.max(...recs) : null, mean: recs.length ? Math.round(recs.reduce((a, b) => a + b, 0) / recs.length) : null },
      sigtermExits,
      badSigtermExits: sigtermExits.filter((x) => x.code !== 0).length,
      poison,
      tenants: checks,
      errors,
    };
    if (opts.outFile) {
      mkdirSync(join(opts.outFile, ".."), { recursive: true });
      writeFileSync(opts.outFile, `${JSON.stringify(results, null, 2)}\n`);
    }
    return results;
  } finally {
    for (const w of procs) w.kill("SIGKILL");
    await Promise.all(procs.map((w) => w.exited));
    await producer?.disconnect().catch(() => {});
    if (!brokerCtx) {
      const existing = new Set(await admin.listTopics().catch(() => [] as string[]));
      const mine = tenants.flatMap((t) => [`sensor-data-${t}`, `alerts-${t}`, `dead-letters-${t}`]).filter((t) => existing.has(t));
      if (mine.length > 0) await admin.deleteTopics({ topics: mine }).catch(() => {});
    }
    await admin.disconnect().catch(() => {});
    if (!opts.keep) await db.drop().catch(() => {});
    await pgProxy?.close().catch(() => {});
    if (brokerCtx) await kafkaService.stop(brokerCtx, { force: true }).catch(() => {});
    if (brokerDir) rmSync(brokerDir, { recursive: true, force: true });
  }
}

export interface CheckInput {
  db: TestDatabase;
  kafka: Kafka;
  tenants: string[];
  /** acked[tenant index][equipment index] = the acknowledged seqs. */
  acked: Array<Array<Set<number>>>;
  equipment: number;
  /** Reading time of seq 0 (time = base + seq·1 s). */
  base: number;
  /** Poison records sent per tenant (dead letters expected). */
  poisonSent: Map<string, number>;
  /** The readings follow {@link faultReading}'s temperature cycle: check one alarm per complete cycle. */
  alarmCycles?: boolean;
}

/**
 * The independent checker, per tenant and equipment: producer acks vs PostgreSQL rows vs Parquet
 * rows read back with pyarrow over S3 vs the dead-letter topic (see docs/faults.md, "The checker").
 */
export async function checkTenants(o: CheckInput): Promise<TenantCheck[]> {
  const { db, kafka, tenants, acked, base, poisonSent } = o;
  const checks: TenantCheck[] = [];
  for (const [ti, tenant] of tenants.entries()) {
    const examples: string[] = [];
    const note = (s: string) => void (examples.length < 10 && examples.push(s));
    const pgRows = (await db.admin.query<{ equipment_id: string; seq: number; t: string }>(
      "SELECT equipment_id, vibration::int AS seq, (extract(epoch FROM time) * 1000)::bigint AS t FROM sensor_data_raw WHERE tenant_id = $1 ORDER BY equipment_id, time",
      [tenant],
    )).rows;
    const pq = readS3DatasetWithPyarrow(`millrace-shared/${tenant}/sensor-data/`, s3Settings()).rows;
    const c: TenantCheck = { tenant, acked: 0, pgRows: pgRows.length, parquetRows: pq.length, missingPg: 0, missingParquet: 0, duplicatedParquet: 0, unackedPresent: 0, foreignRows: 0, inversionsPg: 0, inversionsParquet: 0, deadLetters: 0, deadLettersExpected: poisonSent.get(tenant) ?? 0, alerts: sumAlerts([]), examples };
    const pgBy = new Map<string, number[]>();
    for (const r of pgRows) {
      const list = pgBy.get(r.equipment_id) ?? [];
      if (list.length > 0 && list[list.length - 1]! >= r.seq) {
        c.inversionsPg++;
        note(`PG inversion ${r.equipment_id}: seq ${r.seq} after ${list[list.length - 1]} in time order`);
      }
      if (Number(r.t) !== base + r.seq * 1000) {
        c.inversionsPg++; // a row whose sequence does not match its time: out of place, counted with the inversions
        note(`PG row ${r.equipment_id} seq ${r.seq} has time ${r.t}, expected ${base + r.seq * 1000}`);
      }
      list.push(r.seq);
      pgBy.set(r.equipment_id, list);
    }
    const pqBy = new Map<string, Array<{ seq: number; off: number }>>();
    for (const r of pq) {
      if (r.tenant_id !== tenant) c.foreignRows++;
      const list = pqBy.get(r.equipment_id) ?? [];
      list.push({ seq: Number(r.vibration), off: r.source_offset });
      pqBy.set(r.equipment_id, list);
    }
    for (let e = 0; e < o.equipment; e++) {
      const eq = eqName(e);
      const ack = acked[ti]![e]!;
      c.acked += ack.size;
      const pgSet = new Set(pgBy.get(eq) ?? []);
      const pqList = (pqBy.get(eq) ?? []).sort((x, y) => x.off - y.off);
      const pqCount = new Map<number, number>();
      for (const [i, r] of pqList.entries()) {
        pqCount.set(r.seq, (pqCount.get(r.seq) ?? 0) + 1);
        if (i > 0 && pqList[i - 1]!.seq >= r.seq && pqList[i - 1]!.off !== r.off) {
          c.inversionsParquet++;
          note(`Parquet inversion ${eq}: seq ${r.seq} at offset ${r.off} after seq ${pqList[i - 1]!.seq}`);
        }
      }
      for (const s of ack) {
        if (!pgSet.has(s)) { c.missingPg++; note(`missing in PG: ${eq} seq ${s}`); }
        if (!pqCount.has(s)) { c.missingParquet++; note(`missing in Parquet: ${eq} seq ${s}`); }
      }
      for (const [s, n] of pqCount) {
        if (n > 1) { c.duplicatedParquet += n - 1; note(`duplicated in Parquet: ${eq} seq ${s} ×${n}`); }
        if (!ack.has(s)) c.unackedPresent++;
      }
      for (const s of pgSet) if (!ack.has(s) && !pqCount.has(s)) c.unackedPresent++;
    }
    c.alerts = await checkAlerts(o, tenant, pgBy, note);
    // Every record on the topic (not distinct ids): the outbox is delivered exactly once.
    c.deadLetters = [...(await readTopic(kafka, `dead-letters-${tenant}`, "millrace.dlq.id")).values()].reduce((n, e) => n + e.records, 0);
    if (c.deadLetters !== c.deadLettersExpected) note(`dead letters on the topic: ${c.deadLetters}, expected ${c.deadLettersExpected}`);
    checks.push(c);
  }

  return checks;
}

/**
 * Every record of `topic`, read from the start (bounded), by the value of header `idHeader`:
 * id → the distinct value bytes (hex) seen under it, and how many records carried it.
 */
async function readTopic(kafka: Kafka, topic: string, idHeader: string): Promise<Map<string, { values: Set<string>; records: number }>> {
  const out = new Map<string, { values: Set<string>; records: number }>();
  const admin = kafka.admin();
  await admin.connect();
  try {
    if (!(await admin.listTopics()).includes(topic)) return out;
    // The outbox topics are written in Kafka transactions: their end offsets count commit markers
    // and aborted attempts, so the topic is read up to sentinels instead (every committed record).
    let seen = 0;
    for (const message of await consumeToSentinels(kafka, admin, topic)) {
      seen++;
      const id = header(message, idHeader) ?? `no-id-${seen}`;
      const e = out.get(id) ?? { values: new Set<string>(), records: 0 };
      e.values.add(message.value?.toString("hex") ?? "");
      e.records++;
      out.set(id, e);
    }
  } finally {
    await admin.disconnect();
  }
  return out;
}

export function sumAlerts(xs: AlertCheck[]): AlertCheck {
  const z: AlertCheck = { pg: 0, topicDistinct: 0, redelivered: 0, missingOnTopic: 0, notInTable: 0, contradictory: 0, lifecycleErrors: 0, cyclesChecked: 0, cyclesWrong: 0 };
  for (const x of xs) for (const k of Object.keys(z) as Array<keyof AlertCheck>) z[k] += x[k];
  return z;
}

/**
 * One tenant's alert events: the alerts table against its alerts topic, each alarm's lifecycle,
 * and (with {@link CheckInput.alarmCycles}) one temperature alarm raised and cleared per complete
 * cycle of every equipment whose stored rows have no gap.
 */
async function checkAlerts(o: CheckInput, tenant: string, pgSeqs: Map<string, number[]>, note: (s: string) => void): Promise<AlertCheck> {
  const a = sumAlerts([]);
  const rows = (await o.db.admin.query<{ alert_id: string; seq: number; step: string; rule_id: string; equipment_id: string; t: string }>(
    `SELECT alert_id, seq, step, rule_id, equipment_id, (extract(epoch FROM event_time) * 1000)::bigint AS t
     FROM alerts WHERE tenant_id = $1 AND kind = 'threshold' ORDER BY alert_id, seq`,
    [tenant],
  )).rows;
  a.pg = rows.length;
  const onTopic = await readTopic(o.kafka, `alerts-${tenant}`, "millrace.alert.event_id");
  const inTable = new Set(rows.map((r) => `${r.alert_id}/${r.seq}`));
  for (const [id, e] of onTopic) {
    if (e.values.size > 1) { a.contradictory++; note(`alert event ${id} on the topic with ${e.values.size} different contents`); }
    a.redelivered += e.records - 1;
    if (!inTable.has(id)) { a.notInTable++; note(`alert event ${id} on the topic, not in the alerts table`); }
  }
  a.topicDistinct = onTopic.size;
  for (const id of inTable) if (!onTopic.has(id)) { a.missingOnTopic++; note(`alert event ${id} never published`); }

  const byAlarm = new Map<string, typeof rows>();
  for (const r of rows) byAlarm.set(r.alert_id, [...(byAlarm.get(r.alert_id) ?? []), r]);
  for (const [id, steps] of byAlarm) {
    const ok = steps.every((s, i) => s.seq === i + 1 && (i === 0) === (s.step === "raised") && (s.step !== "cleared" || i === steps.length - 1));
    if (!ok) { a.lifecycleErrors++; note(`alarm ${id}: steps ${steps.map((s) => `${s.seq}:${s.step}`).join(", ")}`); }
  }
  if (!o.alarmCycles) return a;
  for (let e = 0; e < o.equipment; e++) {
    const eq = eqName(e);
    const seqs = pgSeqs.get(eq) ?? [];
    if (seqs.some((s, i) => s !== i)) continue; // a gap (unacked sends): its cycles are not checked
    const complete = Math.floor(seqs.length / ALARM_CYCLE);
    const seqOf = (t: string) => (Number(t) - o.base) / 1000;
    const alarms = [...byAlarm.values()].filter((st) => st[0]!.equipment_id === eq && st[0]!.rule_id === "temperature_high");
    for (let c = 0; c < complete; c++) {
      a.cyclesChecked++;
      const from = c * ALARM_CYCLE;
      const raisedIn = alarms.filter((st) => st[0]!.step === "raised" && seqOf(st[0]!.t) >= from + ALARM_HIGH_FROM && seqOf(st[0]!.t) < from + ALARM_HIGH_TO);
      const cleared = raisedIn.length === 1 && raisedIn[0]!.some((s) => s.step === "cleared" && seqOf(s.t) >= from + ALARM_HIGH_TO && seqOf(s.t) < from + ALARM_CYCLE);
      if (!cleared) { a.cyclesWrong++; note(`${eq} cycle ${c}: ${raisedIn.length} temperature alarms raised in its high window${raisedIn.length === 1 ? ", not cleared in the cycle" : ""}`); }
    }
    const stray = alarms.filter((st) => st[0]!.step === "raised" && (seqOf(st[0]!.t) % ALARM_CYCLE < ALARM_HIGH_FROM || seqOf(st[0]!.t) % ALARM_CYCLE >= ALARM_HIGH_TO));
    for (const st of stray) { a.cyclesWrong++; note(`${eq}: temperature alarm ${st[0]!.alert_id} raised outside a high window (seq ${seqOf(st[0]!.t)})`); }
  }
  return a;
}

/** A short Markdown summary of a run. */
export function summarise(r: FaultResults): string {
  const lines = [
    `## Faults: ${r.profile} (seed ${r.seed}, ${r.broker} broker, ${(r.durationMs / 1000).toFixed(0)} s)`,
    "",
    `| fault | injected |`,
    `| --- | --- |`,
    ...Object.entries(r.faults).map(([k, n]) => `| ${k} | ${n} |`),
    "",
    `| check | value |`,
    `| --- | --- |`,
    `| readings acked / produced | ${r.records.acked} / ${r.records.produced} (min ${r.records.perPartitionMin} per partition, ${r.records.failedSends} failed sends) |`,
    `| missing (PG + Parquet) | ${r.missing} |`,
    `| duplicated (Parquet) | ${r.duplicated} |`,
    `| sequence inversions | ${r.inversions} |`,
    `| unacked but present | ${r.unackedPresent} |`,
    `| Parquet rows = PG rows per tenant | ${r.parquetEqualsPg ? "yes" : "NO"} |`,
    `| alert events: table / topic distinct (redelivered) | ${r.alerts.pg} / ${r.alerts.topicDistinct} (${r.alerts.redelivered}) |`,
    `| alert events missing on topic / not in table / contradictory / bad lifecycles | ${r.alerts.missingOnTopic} / ${r.alerts.notInTable} / ${r.alerts.contradictory} / ${r.alerts.lifecycleErrors} |`,
    `| alarm cycles checked / wrong | ${r.alerts.cyclesChecked} / ${r.alerts.cyclesWrong} |`,
    ...r.pgOutageReadiness.map((x, i) => `| PostgreSQL outage ${i + 1}: workers reporting it on /readyz | ${x.reported} of ${x.of} |`),
    `| SIGTERM exits not 0 within 30 s | ${r.badSigtermExits} of ${r.sigtermExits.length} (slowest ${Math.max(0, ...r.sigtermExits.map((x) => x.ms))} ms) |`,
    `| time to recover (max / mean) | ${r.recoverMs.max ?? "–"} / ${r.recoverMs.mean ?? "–"} ms |`,
    `| settle | ${r.settleMs ?? "not within the bound"} ms |`,
    ...(r.poison ? [`| poison in A: B lag before / max, B recovered | ${r.poison.tenantBLagBefore} / ${r.poison.tenantBLagMax}, ${r.poison.tenantBRecoverMs ?? "–"} ms |`] : []),
    "",
    ...(r.errors.length ? ["Errors:", ...r.errors.map((e) => `- ${e}`), ""] : []),
    ...r.tenants.flatMap((t) => t.examples.map((e) => `- ${t.tenant.slice(0, 8)}: ${e}`)),
  ];
  return `${lines.join("\n")}\n`;
}
