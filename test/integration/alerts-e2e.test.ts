/**
 * Quotas and alarms end to end, with real worker processes (`millrace run`):
 *  - quota race: three replicas, max_equipment = N, N+5 new equipment arriving at once → exactly N
 *    admitted, the other 5's readings dead-lettered as quota_exceeded; the same after restarting
 *    everything;
 *  - kill -9 while an alarm is active, then restart: exactly one raised and one cleared event.
 */
import { randomBytes, randomUUID } from "node:crypto";
import { createServer } from "node:http";
import type { AddressInfo } from "node:net";
import { join } from "node:path";
import type { Admin, Kafka } from "kafkajs";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { SensorReading } from "../../schemas/index.ts";
import { repoRoot } from "../../stack/context.ts";
import { createTenant } from "../../tenants/provision.ts";
import { createTestDatabase, type TestDatabase } from "../helpers/db.ts";
import { deleteTopics, encodeReading, endOffsets, produce, registerSensorSchema, testKafka } from "../helpers/kafka.ts";
import { startWorkerProcess, writeTopology, type WorkerProcess } from "../helpers/processes.ts";
import { waitUntil } from "../helpers/wait.ts";

const LOG_DIR = join(repoRoot, ".stack", "test-logs");

describe("quotas and alarms end to end", () => {
  let db: TestDatabase;
  let kafka: Kafka;
  let admin: Admin;
  let schemaId: number;
  let topology: string;
  const procs: WorkerProcess[] = [];
  const tenants: string[] = [];
  const base = Date.now() - 3_600_000;

  const start = (name: string, group: string, tenant: string) => {
    const p = startWorkerProcess({ name, topology, group, tenants: [tenant], pgUrl: db.adminUrl, logDir: LOG_DIR });
    procs.push(p);
    return p;
  };
  const drained = async (group: string, topic: string) => {
    const end = await endOffsets(admin, topic);
    const r = await db.admin.query<{ partition: number; next_offset: string }>(
      "SELECT partition, next_offset FROM millrace.consumer_offsets WHERE consumer_group = $1 AND topic = $2",
      [group, topic],
    );
    const got = new Map(r.rows.map((x) => [x.partition, Number(x.next_offset)]));
    return [...end].every(([p, high]) => high === 0 || got.get(p) === high);
  };
  const reading = (tenant: string, eq: string, t: number, vibration: number): SensorReading => ({
    time: t,
    tenant_id: tenant,
    equipment_id: eq,
    facility_id: "fac-01",
    temperature: 40,
    vibration,
    pressure: null,
  });

  beforeAll(async () => {
    db = await createTestDatabase();
    kafka = testKafka();
    admin = kafka.admin();
    await admin.connect();
    schemaId = await registerSensorSchema(`sensor-data-${randomUUID()}`);
    topology = writeTopology(LOG_DIR, [[/max_rows: 5000/, "max_rows: 50"]]);
  });
  afterAll(async () => {
    for (const p of procs) p.kill("SIGKILL");
    await Promise.all(procs.map((p) => p.exited));
    await deleteTopics(admin, (t) => tenants.some((x) => t.endsWith(x)));
    await admin.disconnect();
    await db?.drop();
  });

  it("quota race: three replicas, max_equipment = N, N+5 new equipment at once → exactly N admitted, also after a restart", async () => {
    const N = 10;
    const tenant = randomUUID();
    tenants.push(tenant);
    await createTenant(db.admin, admin, { tenantId: tenant, name: "quota", partitions: 3, maxEquipment: N });
    const topic = `sensor-data-${tenant}`;
    const group = `quota-${randomBytes(3).toString("hex")}`;
    const replicas = [start("quota-r1", group, tenant), start("quota-r2", group, tenant), start("quota-r3", group, tenant)];
    const equipment = Array.from({ length: N + 5 }, (_, i) => `eq-${String(i).padStart(2, "0")}`);
    // Five readings per equipment, spread over the three partitions by key.
    const batch = (round: number) => equipment.flatMap((eq) => Array.from({ length: 5 }, (_, k) => ({ key: eq, value: encodeReading(schemaId, reading(tenant, eq, base + round * 60_000 + k * 1000, 0.1)) })));
    await produce(kafka, topic, batch(0));
    await waitUntil("the three replicas to drain the quota topic", () => drained(group, topic), 120_000);
    const admittedRows = await db.admin.query("SELECT count(DISTINCT equipment_id)::int AS n, count(*)::int AS rows FROM sensor_data_raw WHERE tenant_id = $1", [tenant]);
    expect(admittedRows.rows[0]).toEqual({ n: N, rows: N * 5 });
    const registered = await db.admin.query("SELECT count(*)::int AS n FROM tenant_equipment WHERE tenant_id = $1", [tenant]);
    expect(registered.rows[0].n).toBe(N);
    const rejected = await db.admin.query(
      "SELECT count(*)::int AS n, count(DISTINCT encode(record_key, 'escape'))::int AS eq FROM millrace.dead_letters WHERE tenant_id = $1 AND reason = 'quota_exceeded' AND stage = 'quota'",
      [tenant],
    );
    expect(rejected.rows[0]).toEqual({ n: 25, eq: 5 });

    // Restart everything and send another round: the same N flow, the same 5 are refused.
    for (const r of replicas) r.kill("SIGTERM");
    expect(await Promise.all(replicas.map((r) => r.exited))).toEqual([0, 0, 0]);
    start("quota-r4", group, tenant);
    start("quota-r5", group, tenant);
    start("quota-r6", group, tenant);
    await produce(kafka, topic, batch(1));
    await waitUntil("the restarted replicas to drain", () => drained(group, topic), 120_000);
    const after = await db.admin.query("SELECT count(DISTINCT equipment_id)::int AS n, count(*)::int AS rows FROM sensor_data_raw WHERE tenant_id = $1", [tenant]);
    expect(after.rows[0]).toEqual({ n: N, rows: N * 10 });
    const rejectedAfter = await db.admin.query("SELECT count(*)::int AS n FROM millrace.dead_letters WHERE tenant_id = $1 AND reason = 'quota_exceeded'", [tenant]);
    expect(rejectedAfter.rows[0].n).toBe(50);
  });

  it("kill -9 while an alarm is active, then restart: exactly one raised and one cleared event", async () => {
    const tenant = randomUUID();
    tenants.push(tenant);
    await createTenant(db.admin, admin, { tenantId: tenant, name: "alarm", partitions: 1 });
    const topic = `sensor-data-${tenant}`;
    const group = `alarm-${randomBytes(3).toString("hex")}`;
    // The tenant's webhook: a local endpoint that fails its first request (retried with backoff).
    const hooked: Array<{ step: string; alert_id: string }> = [];
    let calls = 0;
    const server = createServer((req, res) => {
      let body = "";
      req.on("data", (c: Buffer) => (body += c.toString("utf8")));
      req.on("end", () => {
        calls++;
        if (calls === 1) return void res.writeHead(503).end();
        hooked.push(JSON.parse(body) as { step: string; alert_id: string });
        res.writeHead(204).end();
      });
    });
    await new Promise<void>((r) => server.listen(0, "127.0.0.1", () => r()));
    const port = (server.address() as AddressInfo).port;
    await db.admin.query("INSERT INTO millrace.tenant_webhooks (tenant_id, url) VALUES ($1, $2)", [tenant, `http://127.0.0.1:${port}/alerts`]);
    const w1 = start("alarm-w1", group, tenant);
    // vibration_high (topology default): warning at 1.5 g sustained 10 s; clears 0.2 g below.
    const high = Array.from({ length: 30 }, (_, i) => ({ key: "pump-1", value: encodeReading(schemaId, reading(tenant, "pump-1", base + i * 1000, 1.8)) }));
    await produce(kafka, topic, high);
    const events = () => db.admin.query<{ alert_id: string; seq: number; step: string }>("SELECT alert_id, seq, step FROM alerts WHERE tenant_id = $1 ORDER BY alert_id, seq", [tenant]);
    await waitUntil("the alarm to be raised", async () => (await events()).rows.some((e) => e.step === "raised"), 60_000);
    w1.kill("SIGKILL");
    await w1.exited;
    const low = Array.from({ length: 30 }, (_, i) => ({ key: "pump-1", value: encodeReading(schemaId, reading(tenant, "pump-1", base + 30_000 + i * 1000, 0.5)) }));
    await produce(kafka, topic, low);
    const w2 = start("alarm-w2", group, tenant);
    await waitUntil("the alarm to be cleared after the restart", async () => (await drained(group, topic)) && (await events()).rows.some((e) => e.step === "cleared"), 90_000);
    const all = (await events()).rows;
    expect(all.map((e) => [e.seq, e.step])).toEqual([
      [1, "raised"],
      [2, "cleared"],
    ]);
    expect(new Set(all.map((e) => e.alert_id)).size).toBe(1);
    const open = await db.admin.query("SELECT count(*)::int AS n FROM alarms WHERE tenant_id = $1 AND alert_id IS NOT NULL", [tenant]);
    expect(open.rows[0].n).toBe(0);
    // The webhook got the clearing (delivery is at most once per publication: a raise published just
    // before the kill may not have been delivered, but nothing else may arrive).
    await waitUntil("the webhook to receive the clearing", async () => hooked.some((e) => e.step === "cleared"), 60_000);
    expect(hooked.every((e) => e.alert_id === all[0]!.alert_id)).toBe(true);
    server.close();
    w2.kill("SIGTERM");
    expect(await w2.exited).toBe(0);
  });
});
