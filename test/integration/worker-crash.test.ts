/**
 * Exactly once under crashes and scaling, with real worker processes (`millrace run`):
 *  - kill -9 of the only worker in the middle of a run, then a restart: every reading stored once;
 *  - three replicas of one group, one killed and one added while producing: exactly once, lag drains;
 *  - SIGTERM while a rebalance waits for a killed member: still a clean, bounded exit.
 * Counted independently of the worker: per (tenant, equipment) the sequence numbers produced vs the
 * rows in PostgreSQL (missing = 0, duplicated = 0 — the primary key forbids duplicates, so the check
 * that matters is that every produced sequence is there and nothing else is).
 */
import { randomBytes, randomUUID } from "node:crypto";
import { join } from "node:path";
import type { Admin, Kafka } from "kafkajs";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { SensorReading } from "../../schemas/index.ts";
import { repoRoot } from "../../stack/context.ts";
import { createTenant } from "../../tenants/provision.ts";
import { createTestDatabase, type TestDatabase } from "../helpers/db.ts";
import { deleteTopics, encodeReading, endOffsets, produce, registerSensorSchema, testKafka } from "../helpers/kafka.ts";
import { startWorkerProcess, workerLogLines, writeTopology, type WorkerProcess } from "../helpers/processes.ts";
import { waitUntil } from "../helpers/wait.ts";

const LOG_DIR = join(repoRoot, ".stack", "test-logs");
const EQUIPMENT = 20;

function readings(tenant: string, fromSeq: number, count: number, base: number): Array<{ key: string; value: SensorReading }> {
  const out: Array<{ key: string; value: SensorReading }> = [];
  for (let s = fromSeq; s < fromSeq + count; s++) {
    const eq = `eq-${String(s % EQUIPMENT).padStart(2, "0")}`;
    const seq = Math.floor(s / EQUIPMENT);
    // The sequence is encoded in the reading's time (1 s per step), so a row names its sequence.
    out.push({ key: eq, value: { time: base + seq * 1000, tenant_id: tenant, equipment_id: eq, facility_id: "fac-01", temperature: seq, vibration: s, pressure: null, flow_rate: null } });
  }
  return out;
}

describe("ingest worker: kill -9, restart, scaling", () => {
  let db: TestDatabase;
  let kafka: Kafka;
  let admin: Admin;
  const tenants = [randomUUID(), randomUUID()];
  const topics = tenants.map((t) => `sensor-data-${t}`);
  const procs: WorkerProcess[] = [];
  let schemaId: number;
  let topology: string;
  const base = Date.now() - 7 * 86_400_000;

  const start = (name: string, group: string) => {
    const p = startWorkerProcess({ name, topology, group, tenants, pgUrl: db.adminUrl, logDir: LOG_DIR });
    procs.push(p);
    return p;
  };
  const publish = async (from: number, count: number) => {
    for (const [i, t] of tenants.entries()) {
      await produce(
        kafka,
        topics[i]!,
        readings(t, from, count, base).map((r) => ({ key: r.key, value: encodeReading(schemaId, r.value) })),
      );
    }
  };
  const rowCount = async () => (await db.admin.query("SELECT count(*)::int AS n FROM sensor_data_raw")).rows[0].n as number;
  const assertExactlyOnce = async (perTenant: number) => {
    for (const t of tenants) {
      const r = await db.admin.query<{ n: number; distinct_seq: number; min: number; max: number }>(
        `SELECT count(*)::int AS n, count(DISTINCT vibration)::int AS distinct_seq, min(vibration)::int AS min, max(vibration)::int AS max
         FROM sensor_data_raw WHERE tenant_id = $1`,
        [t],
      );
      expect(r.rows[0]).toEqual({ n: perTenant, distinct_seq: perTenant, min: 0, max: perTenant - 1 });
    }
    const dls = await db.admin.query("SELECT count(*)::int AS n FROM millrace.dead_letters");
    expect(dls.rows[0].n).toBe(0);
  };
  const drained = async (group: string) => {
    for (const topic of topics) {
      const end = await endOffsets(admin, topic);
      const stored = await db.admin.query<{ partition: number; next_offset: string }>(
        "SELECT partition, next_offset FROM millrace.consumer_offsets WHERE consumer_group = $1 AND topic = $2",
        [group, topic],
      );
      const got = new Map(stored.rows.map((r) => [r.partition, Number(r.next_offset)]));
      for (const [p, high] of end) if (high > 0 && got.get(p) !== high) return false;
    }
    return true;
  };

  beforeAll(async () => {
    db = await createTestDatabase();
    kafka = testKafka();
    admin = kafka.admin();
    await admin.connect();
    for (const t of tenants) await createTenant(db.admin, admin, { tenantId: t, name: t.slice(0, 8), tier: "basic", partitions: 3 });
    schemaId = await registerSensorSchema(topics[0]!);
    // Small sink batches so a kill lands between, during and after many transactions.
    topology = writeTopology(LOG_DIR, [[/max_rows: \d+/, "max_rows: 250"]]);
  });

  afterAll(async () => {
    for (const p of procs) p.kill("SIGKILL");
    await Promise.all(procs.map((p) => p.exited));
    await deleteTopics(admin, (t) => tenants.some((x) => t.endsWith(x)));
    await admin.disconnect();
    await db?.drop();
  });

  it("kill -9 in the middle of a run, then restart: every reading stored exactly once", async () => {
    const group = `crash-${randomBytes(3).toString("hex")}`;
    const total = 6000;
    await publish(0, total);
    const w1 = start("crash-w1", group);
    await waitUntil("the first worker to store some rows", async () => (await rowCount()) >= 1000, 120_000);
    w1.kill("SIGKILL");
    await w1.exited;
    const mid = await rowCount();
    expect(mid).toBeLessThan(total * tenants.length); // killed mid-run, not after
    const w2 = start("crash-w2", group);
    await waitUntil("all readings to be stored after the restart", async () => (await rowCount()) === total * tenants.length && (await drained(group)), 120_000);
    await assertExactlyOnce(total);
    w2.kill("SIGTERM");
    expect(await w2.exited).toBe(0); // a clean stop exits 0
  });

  it("three replicas, one killed and one added while producing: exactly once and lag drains", async () => {
    await db.admin.query("TRUNCATE sensor_data_raw");
    const group = `scale-${randomBytes(3).toString("hex")}`;
    // The same topics, a new group: it starts from the beginning of each partition (6000 already there).
    const r1 = start("scale-r1", group);
    const r2 = start("scale-r2", group);
    const r3 = start("scale-r3", group);
    await publish(6000, 3000);
    await waitUntil("replicas to store rows", async () => (await rowCount()) >= 3000, 120_000);
    r2.kill("SIGKILL");
    await publish(9000, 3000);
    const r4 = start("scale-r4", group);
    await publish(12000, 3000);
    await waitUntil("the group to drain after kill and add", async () => (await rowCount()) === 15000 * tenants.length && (await drained(group)), 180_000);
    await assertExactlyOnce(15000);
    for (const p of [r1, r3, r4]) p.kill("SIGTERM");
    const codes = await Promise.all([r1.exited, r3.exited, r4.exited]);
    expect(codes).toEqual([0, 0, 0]);
  });

  it("SIGTERM while the group's rebalance waits for a killed member: a clean exit 0 within the grace period", async () => {
    // A 60 s session: the killed member stays in the group for up to a minute, so the rebalance
    // (and a consumer stop waiting on it) outlasts the worker's 25 s shutdown grace by far.
    const slow = writeTopology(LOG_DIR, [[/max_rows: \d+/, "max_rows: 250"], [/session_timeout: 30s/, "session_timeout: 60s"]]);
    const group = `rebal-${randomBytes(3).toString("hex")}`;
    const startSlow = (name: string) => {
      // Log files are appended to: a name of this run only, so no earlier run's lines are read.
      const p = startWorkerProcess({ name: `${group}-${name}`, topology: slow, group, tenants, pgUrl: db.adminUrl, logDir: LOG_DIR });
      procs.push(p);
      return p;
    };
    const assigned = (w: WorkerProcess) => {
      const a = workerLogLines(w.logFile, /joined consumer group/).at(-1)?.assignment as Record<string, number[]> | undefined;
      return a !== undefined && Object.values(a).flat().length > 0;
    };
    const a = startSlow("a");
    const b = startSlow("b");
    await waitUntil("both workers to hold partitions", async () => assigned(a) && assigned(b), 120_000, 250);
    b.kill("SIGKILL");
    await b.exited;
    startSlow("c"); // its join starts a rebalance that waits for b until b's session expires
    await waitUntil("the first worker to be caught in the rebalance", async () => workerLogLines(a.logFile, /rebalancing, re-joining/).length > 0, 60_000, 100);
    a.kill("SIGTERM");
    expect(await a.exited, `exit code after SIGTERM (log: ${a.logFile})`).toBe(0);
    expect(workerLogLines(a.logFile, /clean shutdown took too long/)).toEqual([]);
  });
});
