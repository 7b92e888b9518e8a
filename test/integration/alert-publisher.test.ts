/**
 * The alert publisher against the real stack: outbox → alerts-{tenant} (Avro through the schema
 * registry, one registration per subject), marked published, exactly once on the topic (a mark lost
 * after Kafka's commit, and a leader fenced in the middle of its transaction), two replicas
 * publishing at once without duplicates or reordering, and webhooks delivered (with retries) from
 * what was published.
 */
import { randomUUID } from "node:crypto";
import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { SchemaRegistry } from "@kafkajs/confluent-schema-registry";
import type { Admin, Kafka, KafkaMessage } from "kafkajs";
import type pg from "pg";
import client from "prom-client";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { requireEnv } from "../../lib/env.ts";
import { silentLogger } from "../../lib/log.ts";
import { persistAlarmChanges } from "../../pipelines/processors/alarm-store.ts";
import { PgQuotaStore } from "../../pipelines/processors/quota-store.ts";
import { pgAlarmStateSource, ThresholdEvaluator } from "../../pipelines/processors/threshold-evaluator.ts";
import { TopicPattern } from "../../pipelines/runtime/tenant-directory.ts";
import type { AlertEvent } from "../../schemas/generated.ts";
import { decodeAlertEvent } from "../../sinks/alerts/encode.ts";
import { AlertPublisher, AlertPublisherMetrics, type AlertPublisherOptions, type AlertSchemaRegistrar } from "../../sinks/alerts/publisher.ts";
import { PgWebhookTargets, WebhookMetrics, WebhookNotifier } from "../../sinks/alerts/webhooks.ts";
import { createTestDatabase, insertTenant, type TestDatabase } from "../helpers/db.ts";
import { consumeToSentinels, header, testKafka } from "../helpers/kafka.ts";
import { waitUntil } from "../helpers/wait.ts";
import { createTopicsAndWait } from "../../lib/kafka-topics.ts";

const T0 = Date.UTC(2024, 4, 1, 8, 0, 0);

describe("alert publisher (outbox → alerts topic, webhooks)", () => {
  let db: TestDatabase;
  let kafka: Kafka;
  let admin: Admin;
  const publishers: AlertPublisher[] = [];
  const tenant = randomUUID();
  const topic = `alerts-${tenant}`;
  let hook: Server;
  let hookUrl: string;
  const hookBodies: string[] = [];
  const registrations: string[] = [];
  let registry: AlertSchemaRegistrar;
  const webhookRegistry = new client.Registry();

  /** One chunk of readings through the evaluator, its alarm changes (alerts + outbox) committed as a batch would. */
  const evaluateAndPersist = async (ev: ThresholdEvaluator, rows: Array<{ time: number; equipmentId: string; facilityId: string; vibration: number }>) => {
    await ev.prepare("p", tenant, rows);
    const changes = ev.evaluate("p", tenant, rows);
    const c = await db.writer.connect();
    try {
      await c.query("BEGIN");
      await c.query("SELECT set_config('app.current_tenant_id', $1, true)", [tenant]);
      await persistAlarmChanges(c, tenant, changes);
      await c.query("COMMIT");
    } finally {
      c.release();
    }
  };

  beforeAll(async () => {
    db = await createTestDatabase();
    await insertTenant(db.admin, { tenantId: tenant, maxEquipment: 5 });
    kafka = testKafka("alerts-test");
    admin = kafka.admin();
    await admin.connect();
    await createTopicsAndWait(admin, [{ topic, numPartitions: 3 }]);
    const real = new SchemaRegistry({ host: requireEnv("MILLRACE_SCHEMA_REGISTRY_URL") });
    registry = {
      register: (schema, opts) => {
        registrations.push(opts.subject);
        return real.register(schema, opts);
      },
    };
    // A webhook that fails the first two requests.
    hook = createServer((req, res) => {
      let body = "";
      req.on("data", (c: Buffer) => (body += c.toString("utf8")));
      req.on("end", () => {
        hookBodies.push(body);
        res.writeHead(hookBodies.length <= 2 ? 502 : 200).end();
      });
    });
    await new Promise<void>((r) => hook.listen(0, "127.0.0.1", r));
    hookUrl = `http://127.0.0.1:${(hook.address() as AddressInfo).port}/alerts`;
    await db.admin.query("INSERT INTO millrace.tenant_webhooks (tenant_id, url, secret_env) VALUES ($1, $2, 'MILLRACE_TEST_WEBHOOK_SECRET')", [tenant, hookUrl]);

    // Events in the outbox: an alarm's four steps (raised, escalated, de-escalated, cleared) and a quota warning.
    const ev = new ThresholdEvaluator({
      source: pgAlarmStateSource(() => db.writer, db.writer),
      defaults: [{ id: "vibration_high", name: "Vibration high", measure: "vibration", comparison: "above", levels: [{ severity: "warning", threshold: 1 }, { severity: "critical", threshold: 3 }], sustainMs: 0, deadband: 0.1, clearSustainMs: 0 }],
      rulesRefreshMs: 60_000,
    });
    await evaluateAndPersist(ev, [0.5, 2, 4, 2, 0.5].map((v, i) => ({ time: T0 + i * 1000, equipmentId: "press-1", facilityId: "plant-1", vibration: v })));
    await new PgQuotaStore(db.writer).admit(tenant, ["a", "b", "c", "d"]);
  });
  afterAll(async () => {
    await admin?.deleteTopics({ topics: [topic] }).catch(() => {});
    await admin?.disconnect();
    hook?.closeAllConnections();
    await new Promise((r) => hook?.close(r));
    await db?.drop();
  });

  // One leader per database: every test's publishers give the lead back when it ends.
  afterEach(async () => {
    await Promise.all(publishers.splice(0).map((p) => p.close()));
  });

  type PublisherOptions = { onPublished?: (e: readonly AlertEvent[]) => void; metrics?: AlertPublisherMetrics };
  const options = (o: PublisherOptions = {}): AlertPublisherOptions => ({
      pool: db.writer,
      kafka: { transactionalProducer: (transactionalId) => kafka.producer({ transactionalId, idempotent: true, maxInFlightRequests: 1, allowAutoTopicCreation: false }), admin },
      registry,
      topicPattern: new TopicPattern("alerts-{tenant_id}"),
      maxBatch: 2,
      intervalMs: 100,
      partitions: 3,
      log: silentLogger,
      ...o,
  });
  const publisher = (o: PublisherOptions = {}): AlertPublisher => {
    const p = new AlertPublisher(options(o));
    publishers.push(p);
    return p;
  };
  const steps = (ms: KafkaMessage[]) => ms.map((m) => decodeAlertEvent(m.value!).event).filter((e) => e.kind === "threshold").map((e) => `${e.seq}:${e.step}`);

  it("two replicas drain the outbox: every event once, Avro through the registry, keyed and ordered by alarm; webhooks delivered with retries", async () => {
    const targets = new PgWebhookTargets({ pool: db.writer, refreshMs: 60_000, secretOf: (n) => (n === "MILLRACE_TEST_WEBHOOK_SECRET" ? "hush" : undefined) });
    await targets.refresh();
    const notifier = new WebhookNotifier({ targets, initialDelayMs: 20, metrics: new WebhookMetrics(webhookRegistry) });
    const metricsRegistry = new client.Registry();
    const metrics = new AlertPublisherMetrics(metricsRegistry);
    const [a, b] = [publisher({ onPublished: (e) => notifier.notify(e), metrics }), publisher({ onPublished: (e) => notifier.notify(e), metrics })];
    const published = await Promise.all([a.drain(), b.drain(), a.drain(), b.drain()]);
    await waitUntil("the outbox to be empty", async () => {
      await Promise.all([a.drain(), b.drain()]);
      const r = await db.admin.query("SELECT count(*)::int AS n FROM millrace.alerts_outbox WHERE published_at IS NULL");
      return r.rows[0].n === 0;
    }, 30_000);
    expect(published.reduce((x, y) => x + y, 0)).toBeLessThanOrEqual(5);

    const messages = await consumeToSentinels(kafka, admin, topic);
    expect(messages).toHaveLength(5);
    const events = messages.map((m) => decodeAlertEvent(m.value!));
    const outbox = (await db.admin.query<{ event: AlertEvent }>("SELECT event FROM millrace.alerts_outbox")).rows.map((r) => r.event);
    expect(events.map((e) => e.event).sort((x, y) => x.event_id.localeCompare(y.event_id))).toEqual(outbox.sort((x, y) => x.event_id.localeCompare(y.event_id)));
    // The schema id on the wire is the one registered under alerts-{tenant}-value, registered once.
    const real = new SchemaRegistry({ host: requireEnv("MILLRACE_SCHEMA_REGISTRY_URL") });
    const latest = await real.getLatestSchemaId(`${topic}-value`);
    expect(new Set(events.map((e) => e.schemaId))).toEqual(new Set([latest]));
    expect(registrations.filter((s) => s === `${topic}-value`).length).toBeLessThanOrEqual(2); // once per publisher
    // One alarm: one key, so one partition, steps in order.
    const alarm = messages.filter((m) => decodeAlertEvent(m.value!).event.kind === "threshold");
    expect(new Set(alarm.map((m) => m.key!.toString()))).toHaveProperty("size", 1);
    expect(steps(alarm)).toEqual(["1:raised", "2:escalated", "3:de_escalated", "4:cleared"]);
    for (const m of messages) expect(header(m, "millrace.alert.event_id")).toBe(decodeAlertEvent(m.value!).event.event_id);
    expect(await metricsRegistry.metrics()).toContain(`millrace_alerts_published_total{tenant="${tenant}"} 5`);

    // Webhooks: 5 events, the first two requests failed (502) and were retried.
    await waitUntil("5 webhook deliveries", async () => (await webhookRegistry.metrics()).includes(`millrace_webhook_deliveries_total{tenant="${tenant}",outcome="delivered"} 5`), 30_000, 50);
    expect(hookBodies).toHaveLength(7);
    expect(new Set(hookBodies.map((b) => (JSON.parse(b) as AlertEvent).event_id))).toEqual(new Set(outbox.map((e) => e.event_id)));
    await notifier.stop();
  });

  /** Outbox events of a new alarm (raised, cleared) for equipment `eq`; returns their event ids. */
  const newAlarm = async (eq: string): Promise<string[]> => {
    const ev = new ThresholdEvaluator({
      source: pgAlarmStateSource(() => db.writer, db.writer),
      defaults: [{ id: "vibration_high", name: "Vibration high", measure: "vibration", comparison: "above", levels: [{ severity: "warning", threshold: 1 }], sustainMs: 0, deadband: 0.1, clearSustainMs: 0 }],
      rulesRefreshMs: 60_000,
    });
    await evaluateAndPersist(ev, [2, 0.5].map((v, i) => ({ time: T0 + i * 1000, equipmentId: eq, facilityId: "plant-1", vibration: v })));
    const r = await db.admin.query<{ id: string }>("SELECT event->>'event_id' AS id FROM millrace.alerts_outbox WHERE published_at IS NULL AND publish_error IS NULL ORDER BY seq");
    expect(r.rows).toHaveLength(2);
    return r.rows.map((x) => x.id);
  };
  const unpublished = async () => (await db.admin.query("SELECT count(*)::int AS n FROM millrace.alerts_outbox WHERE published_at IS NULL AND publish_error IS NULL")).rows[0].n as number;
  /** Each event id on the topic, with how many records carry it. */
  const onTopic = async () => {
    const counts = new Map<string, number>();
    for (const m of await consumeToSentinels(kafka, admin, topic)) {
      const id = header(m, "millrace.alert.event_id")!;
      counts.set(id, (counts.get(id) ?? 0) + 1);
    }
    return counts;
  };

  it("the mark is lost after Kafka committed the batch: the next leader marks it from the marker and sends nothing twice", async () => {
    const ids = await newAlarm("press-lost-mark");
    class LosesMark extends AlertPublisher {
      lost = 0;
      protected override async markPublished(c: pg.ClientBase, batch: string): Promise<void> {
        if (this.lost++ === 0) throw new Error("connection lost after Kafka's commit (test)");
        return super.markPublished(c, batch);
      }
    }
    const p = new LosesMark(options());
    publishers.push(p);
    await expect(p.drain()).rejects.toThrow(/connection lost after Kafka's commit/);
    expect(p.leading).toBe(false); // it gave up the lead
    expect(await unpublished()).toBe(2);
    expect(await p.drain()).toBe(0); // a new lead: recovered from the marker, nothing left to send
    expect(await unpublished()).toBe(0);
    const counts = await onTopic();
    for (const id of ids) expect(counts.get(id)).toBe(1);
    expect([...counts.values()].every((n) => n === 1)).toBe(true);
  });

  it("a leader cut off in the middle of its transaction is fenced: the new leader sends the batch, the old one's commit is refused, every event once", async () => {
    const ids = await newAlarm("press-fenced");
    let inside: () => void = () => {};
    const reachedCommit = new Promise<void>((r) => (inside = r));
    let release: () => void = () => {};
    const held = new Promise<void>((r) => (release = r));
    class Stalls extends AlertPublisher {
      protected override async beforeCommit(): Promise<void> {
        inside();
        await held;
      }
    }
    const zombie = new Stalls(options());
    publishers.push(zombie);
    const zombieDrain = zombie.drain().then(() => "finished", (err: unknown) => (err as Error).message);
    await reachedCommit;
    // Its PostgreSQL session ends (as idle_session_timeout or a network cut would end it): the lead is free.
    const killed = await db.admin.query<{ ok: boolean }>(
      "SELECT pg_terminate_backend(pid) AS ok FROM pg_locks WHERE locktype = 'advisory' AND classid = $1::bigint::oid AND granted",
      [0x616c7274],
    );
    expect(killed.rows.map((r) => r.ok)).toEqual([true]);
    const successor = publisher();
    await waitUntil("the successor to take the lead and publish the batch", async () => {
      await successor.drain().catch(() => 0);
      return (await unpublished()) === 0;
    }, 60_000);
    release();
    expect(await zombieDrain).toMatch(/fenc|epoch|producer/i);
    const counts = await onTopic();
    for (const id of ids) expect(counts.get(id)).toBe(1);
    expect([...counts.values()].every((n) => n === 1)).toBe(true);
  });

  it("an event that does not fit the schema is set aside (publish_error) and does not block the rest", async () => {
    const bad = randomUUID();
    await db.admin.query("INSERT INTO millrace.alerts_outbox (alert_id, seq, tenant_id, event) VALUES ($1, 1, $2, '{\"step\": \"nonsense\"}')", [bad, tenant]);
    const p = publisher();
    await p.drain();
    const r = await db.admin.query("SELECT published_at, publish_error FROM millrace.alerts_outbox WHERE alert_id = $1", [bad]);
    expect(r.rows[0].published_at).toBeNull();
    expect(r.rows[0].publish_error).toMatch(/does not fit schemas\/alert-event.avsc/);
    expect(await p.drain()).toBe(0);
  });
});
