/**
 * A small rig for targeted fault tests (test/integration/faults-network.test.ts): tenants with the
 * harness's workload (equipment `eq-NN` on partition NN mod partitions, seq 0, 1, 2, … with
 * time = base + seq·1 s and vibration = seq), a background producer recording every ack, worker
 * processes (`millrace run`) whose PostgreSQL and S3 can be routed through a {@link FaultProxy},
 * bounded waits on both sinks' stored offsets, and the harness's checker (checkTenants).
 */
import { randomUUID } from "node:crypto";
import { chmodSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { ListMultipartUploadsCommand, S3Client } from "@aws-sdk/client-s3";
import { Kafka, logLevel, type Admin, type Producer } from "kafkajs";
import { requireEnv } from "../../lib/env.ts";
import { repoRoot, stackContext } from "../../stack/context.ts";
import { kafkaService, kafkaStackCredentials } from "../../stack/kafka.ts";
import { createKafka } from "../../lib/kafka-client.ts";
import { postgresService } from "../../stack/postgres.ts";
import type { StackContext } from "../../stack/types.ts";
import { createTenant } from "../../tenants/provision.ts";
import { createTestDatabase, type TestDatabase } from "../helpers/db.ts";
import { encodeReading, endOffsets, registerSensorSchema } from "../helpers/kafka.ts";
import { startWorkerProcess, workerLogLines, writeTopology, type WorkerProcess } from "../helpers/processes.ts";
import { waitUntil } from "../helpers/wait.ts";
import { checkTenants, eqName, faultReading, s3Settings, sumAlerts, type TenantCheck } from "./harness.ts";
import { FaultProxy } from "./proxy.ts";

export type Offsets = Map<string, Map<number, number>>;

export interface RigOptions {
  name: string;
  tenants: number;
  partitions: number;
  equipment: number;
  /** Readings per equipment per producer tick, and the tick. */
  perTick: number;
  tickMs: number;
  /** Extra topology edits (after the rig's small batches / files / timeouts). */
  topologyEdits?: Array<[RegExp, string]>;
  /**
   * A broker of the rig's own (ports 29492–29494, a temporary state dir) with a second listener
   * behind a TCP fault proxy ({@link Rig.kafkaProxy}): a worker started with `kafka: rig.kafkaProxy`
   * reaches the broker only through it, everything else directly.
   */
  isolatedBroker?: boolean;
  /**
   * A PostgreSQL server of the rig's own (port 25632, a temporary state dir) instead of the
   * stack's, so a test can really stop and start it ({@link Rig.stopPostgres}).
   */
  isolatedPostgres?: boolean;
}

const RIG_BROKER = { kafka: 29492, controller: 29493, proxied: 29494 };
const RIG_POSTGRES_PORT = 25632;

export class Rig {
  readonly runId: string;
  readonly logDir: string;
  readonly tenants: string[];
  readonly topics: string[];
  readonly group: string;
  readonly base = Date.now() - 3 * 86_400_000;
  readonly acked: Array<Array<Set<number>>>;
  readonly nextSeq: number[][];
  db!: TestDatabase;
  kafka!: Kafka;
  admin!: Admin;
  topology!: string;
  failedSends = 0;
  private producer: Producer | undefined;
  private producing = false;
  private loop: Promise<void> | undefined;
  private schemaId = 0;
  private workerNo = 0;
  readonly procs: WorkerProcess[] = [];
  readonly proxies: FaultProxy[] = [];
  /** With `isolatedBroker`: the proxy in front of the broker's second listener. */
  kafkaProxy: FaultProxy | undefined;
  private brokers = requireEnv("MILLRACE_KAFKA_BROKERS");
  private brokerCtx: StackContext | undefined;
  private pgCtx: StackContext | undefined;

  constructor(readonly o: RigOptions) {
    this.runId = `${o.name}-${Date.now().toString(36)}`;
    this.logDir = join(repoRoot, ".stack", "test-logs", `faults-${this.runId}`);
    this.tenants = Array.from({ length: o.tenants }, () => randomUUID());
    this.topics = this.tenants.map((t) => `sensor-data-${t}`);
    this.group = `faults-${this.runId}`;
    this.acked = this.tenants.map(() => Array.from({ length: o.equipment }, () => new Set<number>()));
    this.nextSeq = this.tenants.map(() => new Array<number>(o.equipment).fill(0));
  }

  async setup(): Promise<void> {
    if (this.o.isolatedBroker) {
      this.kafkaProxy = await FaultProxy.start({ name: "kafka", protocol: "tcp", target: { host: "127.0.0.1", port: RIG_BROKER.proxied } });
      this.proxies.push(this.kafkaProxy);
      const b = stackContext();
      this.brokerCtx = {
        ...b,
        stateDir: mkdtempSync(join(tmpdir(), "millrace-rig-broker-")),
        ports: { ...b.ports, kafka: RIG_BROKER.kafka, kafkaController: RIG_BROKER.controller },
        kafkaProxiedListener: { port: RIG_BROKER.proxied, advertisedPort: this.kafkaProxy.port },
      };
      await kafkaService.install(this.brokerCtx);
      await kafkaService.start(this.brokerCtx);
      await kafkaService.waitReady(this.brokerCtx, 120_000);
      this.brokers = `127.0.0.1:${RIG_BROKER.kafka}`;
    }
    this.kafka = createKafka({ clientId: `faults-${this.runId}`, brokers: this.brokers.split(","), auth: this.brokerCtx ? kafkaStackCredentials(this.brokerCtx).admin : undefined, logLevel: logLevel.NOTHING, retry: { retries: 8 } });
    let adminBaseUrl: string | undefined;
    if (this.o.isolatedPostgres) {
      const b = stackContext();
      const dir = mkdtempSync(join(tmpdir(), "millrace-rig-pg-"));
      chmodSync(dir, 0o755); // mkdtemp makes 0700; as root the server runs as the postgres OS user, which must reach it
      this.pgCtx = { ...b, stateDir: dir, ports: { ...b.ports, postgres: RIG_POSTGRES_PORT } };
      await this.startPostgres();
      adminBaseUrl = postgresService.env(this.pgCtx).MILLRACE_PG_ADMIN_URL;
    }
    this.db = await createTestDatabase({ adminBaseUrl });
    this.admin = this.kafka.admin();
    await this.admin.connect();
    for (const t of this.tenants) {
      await waitUntil(`tenant ${t.slice(0, 8)} provisioned`, async () => (await createTenant(this.db.admin, this.admin, { tenantId: t, name: `faults-${t.slice(0, 6)}`, tier: "enterprise", partitions: this.o.partitions }), true), 60_000, 500);
    }
    this.schemaId = await registerSensorSchema(this.topics[0]!);
    this.topology = this.writeTopology(this.o.topologyEdits ?? []);
  }

  /** A topology with the rig's small batches (200 rows, 500-row files, 1 s idle flush, 10 s session) plus `edits`. */
  writeTopology(edits: Array<[RegExp, string]>): string {
    return writeTopology(this.logDir, [
      [/max_rows: 5000/, "max_rows: 200"],
      [/max_rows: 100000/, "max_rows: 500"],
      [/idle_flush: 60s/, "idle_flush: 1s"],
      [/session_timeout: 30s/, "session_timeout: 10s"],
      [/heartbeat_interval: 3s/, "heartbeat_interval: 1s"],
      ...edits,
    ]);
  }

  /** With `isolatedPostgres`: stop the rig's server cleanly (fast shutdown: sessions ended, checkpoint). */
  async stopPostgres(): Promise<void> {
    if (!this.pgCtx) throw new Error("stopPostgres needs isolatedPostgres");
    await postgresService.stop(this.pgCtx);
  }

  /** With `isolatedPostgres`: start the rig's server (installed and initialised on first use) and wait until it answers. */
  async startPostgres(): Promise<void> {
    if (!this.pgCtx) throw new Error("startPostgres needs isolatedPostgres");
    await postgresService.install(this.pgCtx);
    await postgresService.start(this.pgCtx);
    await postgresService.waitReady(this.pgCtx, 120_000);
  }

  /** A proxy in front of this stack's PostgreSQL. */
  async pgProxy(name: string): Promise<FaultProxy> {
    const u = new URL(this.db.adminUrl);
    const p = await FaultProxy.start({ name, protocol: "pg", target: { host: u.hostname, port: Number(u.port) } });
    this.proxies.push(p);
    return p;
  }

  /** A proxy in front of this stack's S3. */
  async s3Proxy(name: string): Promise<FaultProxy> {
    const u = new URL(requireEnv("MILLRACE_S3_ENDPOINT"));
    const p = await FaultProxy.start({ name, protocol: "http", target: { host: u.hostname, port: Number(u.port) } });
    this.proxies.push(p);
    return p;
  }

  /** The worker's PostgreSQL URL through a proxy. */
  pgUrlVia(p: FaultProxy): string {
    const u = new URL(this.db.adminUrl);
    u.host = `127.0.0.1:${p.port}`;
    return u.toString();
  }

  startWorker(opts: { pg?: FaultProxy; s3?: FaultProxy; kafka?: FaultProxy; topology?: string } = {}): WorkerProcess {
    // An isolated broker has its own SCRAM passwords: its settings replace the shared stack's.
    const env: NodeJS.ProcessEnv = { ...(this.brokerCtx ? kafkaService.env(this.brokerCtx) : {}), MILLRACE_KAFKA_BROKERS: opts.kafka ? `127.0.0.1:${opts.kafka.port}` : this.brokers };
    if (opts.s3) env.MILLRACE_S3_ENDPOINT = `http://127.0.0.1:${opts.s3.port}`;
    const w = startWorkerProcess({
      name: `w${++this.workerNo}`,
      topology: opts.topology ?? this.topology,
      group: this.group,
      tenants: this.tenants,
      pgUrl: opts.pg ? this.pgUrlVia(opts.pg) : this.db.adminUrl,
      logDir: this.logDir,
      env,
    });
    this.procs.push(w);
    return w;
  }

  /** Start the background producer (idempotent, acks=all; failed sends stay unacked, never resent). */
  async startProducer(): Promise<void> {
    this.producer = this.kafka.producer({ idempotent: true, maxInFlightRequests: 1, allowAutoTopicCreation: false, retry: { retries: 5 } });
    await this.producer.connect();
    this.producing = true;
    this.loop = (async () => {
      while (this.producing) {
        for (const [ti, tenant] of this.tenants.entries()) {
          const batch: Array<{ eq: number; seq: number }> = [];
          for (let e = 0; e < this.o.equipment; e++) for (let k = 0; k < this.o.perTick; k++) batch.push({ eq: e, seq: this.nextSeq[ti]![e]!++ });
          const messages = batch.map(({ eq, seq }) => {
            const value = faultReading(tenant, eq, seq, this.base);
            return { key: eqName(eq), partition: eq % this.o.partitions, value: encodeReading(this.schemaId, value) };
          });
          try {
            await this.producer!.send({ topic: this.topics[ti]!, acks: -1, messages });
            for (const { eq, seq } of batch) this.acked[ti]![eq]!.add(seq);
          } catch {
            this.failedSends++;
          }
        }
        await new Promise((r) => setTimeout(r, this.o.tickMs)); // the producer's pace, not synchronisation
      }
    })();
  }

  async stopProducer(): Promise<void> {
    this.producing = false;
    await this.loop;
    await this.producer?.disconnect().catch(() => {});
    this.producer = undefined;
  }

  /** The smallest end offset over every partition of every topic. */
  async minPerPartition(): Promise<number> {
    const s = await this.snapshot();
    return Math.min(...[...s.values()].flatMap((m) => [...m.values()]));
  }

  /** Produce until every partition holds at least `n` records (bounded). */
  async produceAtLeast(n: number, timeoutMs = 180_000): Promise<void> {
    await waitUntil(`${n} records in every partition`, async () => (await this.minPerPartition()) >= n, timeoutMs, 500);
  }

  snapshot(): Promise<Offsets> {
    return waitUntil("the topics' end offsets", async () => new Map(await Promise.all(this.topics.map(async (t) => [t, await endOffsets(this.admin, t)] as const))), 120_000, 250);
  }

  /** Stored next offsets: `pg` = millrace.consumer_offsets, `parquet` = the s3_parquet rows of millrace.sink_offsets. */
  async stored(table: "pg" | "parquet"): Promise<Offsets> {
    const sql = table === "pg"
      ? "SELECT topic, partition, next_offset FROM millrace.consumer_offsets WHERE consumer_group = $1"
      : "SELECT topic, partition, next_offset FROM millrace.sink_offsets WHERE sink = 's3_parquet' AND consumer_group = $1";
    const r = await this.db.admin.query<{ topic: string; partition: number; next_offset: string }>(sql, [this.group]);
    const out: Offsets = new Map(this.topics.map((t) => [t, new Map<number, number>()]));
    for (const x of r.rows) out.get(x.topic)?.set(x.partition, Number(x.next_offset));
    return out;
  }

  /** Whether `table`'s stored offsets are at or past `target` on every partition (of `topics`). */
  async reached(target: Offsets, tables: Array<"pg" | "parquet"> = ["pg", "parquet"], topics = this.topics, strictlyPast = false): Promise<boolean> {
    for (const table of tables) {
      const s = await this.stored(table);
      for (const topic of topics) {
        for (const [part, high] of target.get(topic) ?? []) {
          if (high === 0) continue;
          const got = s.get(topic)?.get(part) ?? 0;
          if (strictlyPast ? got <= high : got < high) return false;
        }
      }
    }
    return true;
  }

  /** Wait (bounded) until both sinks hold everything produced so far; returns the milliseconds it took. */
  async caughtUp(what: string, timeoutMs = 120_000): Promise<number> {
    const at = Date.now();
    const target = await this.snapshot();
    await waitUntil(`${what}: PostgreSQL and Parquet offsets at the topics' end`, () => this.reached(target), timeoutMs, 250);
    return Date.now() - at;
  }

  /** The checker of the fault harness over this rig's tenants. */
  async check(): Promise<TenantCheck[]> {
    return await checkTenants({ db: this.db, kafka: this.kafka, tenants: this.tenants, acked: this.acked, equipment: this.o.equipment, base: this.base, poisonSent: new Map(), alarmCycles: true });
  }

  /** Incomplete multipart uploads under the rig's tenants' prefixes in the shared bucket. */
  async incompleteUploads(): Promise<Array<{ key: string; uploadId: string }>> {
    const s = s3Settings();
    const s3 = new S3Client({ endpoint: s.endpoint, region: s.region, forcePathStyle: true, credentials: { accessKeyId: s.accessKeyId, secretAccessKey: s.secretAccessKey } });
    try {
      const out: Array<{ key: string; uploadId: string }> = [];
      for (const t of this.tenants) {
        const r = await s3.send(new ListMultipartUploadsCommand({ Bucket: "millrace-shared", Prefix: `${t}/` }));
        for (const u of r.Uploads ?? []) out.push({ key: u.Key ?? "?", uploadId: u.UploadId ?? "?" });
      }
      return out;
    } finally {
      s3.destroy();
    }
  }

  /** Lines of a worker's log (pino JSON) whose msg matches. */
  logLines(w: WorkerProcess, msg: RegExp): Array<Record<string, unknown>> {
    return workerLogLines(w.logFile, msg);
  }

  /** Whether the worker's latest consumer-group assignment (from its log) holds any partition. */
  holdsPartitions(w: WorkerProcess): boolean {
    const a = this.logLines(w, /joined consumer group/).at(-1)?.assignment as Record<string, number[]> | undefined;
    return a !== undefined && Object.values(a).flat().length > 0;
  }

  /** The worker's /readyz answer (its port from its log, waited for, bounded). */
  async readyz(w: WorkerProcess): Promise<{ status: number; body: { why: string[] } }> {
    const port = Number(await waitUntil(`${w.name}'s metrics port`, async () => this.logLines(w, /metrics and health endpoints listening/)[0]?.port, 60_000));
    const res = await fetch(`http://127.0.0.1:${port}/readyz`);
    return { status: res.status, body: (await res.json()) as { why: string[] } };
  }

  /** SIGTERM a worker and wait (bounded) for its exit code. */
  async stopClean(w: WorkerProcess, timeoutMs = 30_000): Promise<number | null | "timeout"> {
    w.kill("SIGTERM");
    const code = await Promise.race([w.exited, new Promise<"timeout">((r) => setTimeout(() => r("timeout"), timeoutMs).unref())]);
    if (code === "timeout") {
      w.kill("SIGKILL");
      await w.exited;
    }
    return code;
  }

  async close(): Promise<void> {
    for (const w of this.procs) {
      w.kill("SIGCONT");
      w.kill("SIGKILL");
    }
    await Promise.all(this.procs.map((w) => w.exited));
    await this.stopProducer().catch(() => {});
    for (const p of this.proxies) await p.close().catch(() => {});
    if (this.brokerCtx) {
      await this.admin?.disconnect().catch(() => {});
      await kafkaService.stop(this.brokerCtx, { force: true }).catch(() => {});
      rmSync(this.brokerCtx.stateDir, { recursive: true, force: true });
    } else if (this.admin) {
      const existing = new Set(await this.admin.listTopics().catch(() => [] as string[]));
      const mine = this.tenants.flatMap((t) => [`sensor-data-${t}`, `alerts-${t}`, `dead-letters-${t}`]).filter((t) => existing.has(t));
      if (mine.length > 0) await this.admin.deleteTopics({ topics: mine }).catch(() => {});
      await this.admin.disconnect().catch(() => {});
    }
    await this.db?.drop().catch(() => {});
    if (this.pgCtx) {
      await postgresService.stop(this.pgCtx, { force: true }).catch(() => {});
      rmSync(this.pgCtx.stateDir, { recursive: true, force: true });
    }
  }
}

/** Totals over the checker's per-tenant results. */
export function totals(checks: TenantCheck[]) {
  const sum = (f: (c: TenantCheck) => number) => checks.reduce((n, c) => n + f(c), 0);
  return {
    acked: sum((c) => c.acked),
    pgRows: sum((c) => c.pgRows),
    parquetRows: sum((c) => c.parquetRows),
    missing: sum((c) => c.missingPg + c.missingParquet),
    duplicated: sum((c) => c.duplicatedParquet),
    inversions: sum((c) => c.inversionsPg + c.inversionsParquet),
    foreign: sum((c) => c.foreignRows),
    parquetEqualsPg: checks.every((c) => c.parquetRows === c.pgRows),
    alerts: sumAlerts(checks.map((c) => c.alerts)),
    examples: checks.flatMap((c) => c.examples.map((e) => `${c.tenant.slice(0, 8)}: ${e}`)),
  };
}
