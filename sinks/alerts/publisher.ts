/**
 * Publishes alert events from the outbox (millrace.alerts_outbox, written in the same transaction
 * as the batch whose readings caused them) to the tenant's alerts topic, `alerts-{tenant_id}`,
 * Avro-encoded in the Confluent wire format, then marks them published.
 *
 * Exactly once in the database, at-least-once on the topic: a crash after Kafka acknowledged a
 * record but before the row was marked publishes it again on restart, with the same key
 * (alert_id) and the same `millrace.alert.event_id` header (`{alert_id}/{seq}`), so a consumer
 * drops the repeat. The schema is registered once per subject (`alerts-{tenant_id}-value`) and its
 * id cached; every message is encoded locally, with no registry call.
 *
 * One publisher at a time across replicas (a transaction-level advisory try-lock): the outbox is
 * sent in (created_at, alert_id, seq) order by one idempotent producer, so the steps of an alarm
 * reach its partition in order. Another replica finding the lock taken skips its turn.
 *
 * After a batch is marked published, `onPublished` gets its events (webhooks): fire-and-forget,
 * it cannot slow or fail publishing.
 */
import type { Registrar } from "../../lib/registry-repair.ts";
import { createTopicsAndWait } from "../../lib/kafka-topics.ts";
import { OutboxPump } from "../outbox/pump.ts";
import { SchemaType } from "@kafkajs/confluent-schema-registry";
import type { Admin, Producer } from "kafkajs";
import type pg from "pg";
import client from "prom-client";
import type { Logger } from "../../lib/log.ts";
import type { TopicPattern } from "../../pipelines/runtime/tenant-directory.ts";
import type { AlertEvent } from "../../schemas/generated.ts";
import { ALERT_EVENT_SCHEMA_TEXT, alertEventType, alertSubject, AlertEncodeError, encodeAlertEvent, type AlertRecord } from "./encode.ts";

/** What the publisher needs of a schema registry client (a SchemaRegistry, or a fake). */
export type AlertSchemaRegistrar = Registrar;

/** Advisory lock class 'alrt': the single active publisher. */
const PUBLISH_LOCK = [0x616c7274, 0] as const;

export class AlertPublisherMetrics {
  readonly published: client.Counter<"tenant">;
  readonly failures: client.Counter;
  readonly encodeErrors: client.Counter<"tenant">;

  constructor(registry: client.Registry) {
    const registers = [registry];
    this.published = new client.Counter({ name: "millrace_alerts_published_total", help: "Alert events published to their alerts topic and marked published", labelNames: ["tenant"], registers });
    this.failures = new client.Counter({ name: "millrace_alert_publish_failures_total", help: "Alert publish attempts that failed (retried on the next turn)", registers });
    this.encodeErrors = new client.Counter({ name: "millrace_alert_encode_errors_total", help: "Alert events that do not fit the schema, set aside with publish_error", labelNames: ["tenant"], registers });
  }
}

export interface AlertPublisherOptions {
  pool: pg.Pool;
  producer: Pick<Producer, "sendBatch">;
  admin: Pick<Admin, "listTopics" | "createTopics" | "fetchTopicMetadata">;
  registry: AlertSchemaRegistrar;
  /** `alerts-{tenant_id}`. */
  topicPattern: TopicPattern;
  maxBatch: number;
  intervalMs: number;
  /** Partitions of alerts topics created on demand (provisioning normally creates them). */
  partitions: number;
  log: Logger;
  metrics?: AlertPublisherMetrics;
  /** Called with each batch after it is marked published; must not throw or block (webhooks). */
  onPublished?: (events: readonly AlertEvent[]) => void;
}

interface OutboxRow {
  alert_id: string;
  seq: number;
  tenant_id: string;
  event: AlertEvent;
}

export class AlertPublisher extends OutboxPump {
  private readonly knownTopics = new Set<string>();
  private readonly schemaIds = new Map<string, Promise<number>>();

  constructor(private readonly o: AlertPublisherOptions) {
    super(o);
  }

  protected onDrainError(err: unknown): void {
    this.o.metrics?.failures.inc();
    this.o.log.warn({ err }, "alert publish failed; will retry");
  }

  private schemaId(subject: string): Promise<number> {
    let id = this.schemaIds.get(subject);
    if (id === undefined) {
      id = this.o.registry.register({ type: SchemaType.AVRO, schema: ALERT_EVENT_SCHEMA_TEXT }, { subject }).then(({ id }) => id);
      // A failed registration is not cached: the next turn tries again.
      id.catch(() => this.schemaIds.delete(subject));
      this.schemaIds.set(subject, id);
    }
    return id;
  }

  private async ensureTopics(topics: string[]): Promise<void> {
    const missing = topics.filter((t) => !this.knownTopics.has(t));
    if (missing.length === 0) return;
    await createTopicsAndWait(this.o.admin, missing.map((topic) => ({ topic, numPartitions: this.o.partitions })));
    for (const t of missing) this.knownTopics.add(t);
  }

  /** One batch: claim, encode, send, mark; all or nothing (except events set aside as unencodable). */
  protected async publishOnce(): Promise<number> {
    const c = await this.o.pool.connect();
    let broken: Error | undefined;
    try {
      await c.query("BEGIN");
      const lock = await c.query<{ ok: boolean }>("SELECT pg_try_advisory_xact_lock($1, $2) AS ok", [...PUBLISH_LOCK]);
      if (!lock.rows[0]!.ok) {
        await c.query("COMMIT");
        return 0;
      }
      const res = await c.query<OutboxRow>(
        `SELECT alert_id, seq, tenant_id, event FROM millrace.alerts_outbox
         WHERE published_at IS NULL AND publish_error IS NULL
         ORDER BY created_at, alert_id, seq LIMIT $1 FOR UPDATE`,
        [this.o.maxBatch],
      );
      if (res.rows.length === 0) {
        await c.query("COMMIT");
        return 0;
      }
      const type = alertEventType();
      const byTopic = new Map<string, AlertRecord[]>();
      const sent: OutboxRow[] = [];
      for (const r of res.rows) {
        const topic = this.o.topicPattern.topicFor(r.tenant_id);
        let rec: AlertRecord;
        try {
          rec = encodeAlertEvent(r.event, await this.schemaId(alertSubject(topic)), type);
        } catch (err) {
          if (!(err instanceof AlertEncodeError)) throw err;
          await c.query("UPDATE millrace.alerts_outbox SET publish_error = $3 WHERE alert_id = $1 AND seq = $2", [r.alert_id, r.seq, err.message]);
          this.o.metrics?.encodeErrors.inc({ tenant: r.tenant_id });
          this.o.log.error({ err, alert: r.alert_id, seq: r.seq }, "alert event does not fit its schema; set aside");
          continue;
        }
        byTopic.set(topic, [...(byTopic.get(topic) ?? []), rec]);
        sent.push(r);
      }
      if (sent.length > 0) {
        await this.ensureTopics([...byTopic.keys()]);
        await this.o.producer.sendBatch({ acks: -1, topicMessages: [...byTopic].map(([topic, messages]) => ({ topic, messages })) });
        await c.query(
          `UPDATE millrace.alerts_outbox SET published_at = now()
           WHERE (alert_id, seq) IN (SELECT * FROM unnest($1::uuid[], $2::int[]))`,
          [sent.map((r) => r.alert_id), sent.map((r) => r.seq)],
        );
      }
      await c.query("COMMIT");
      for (const r of sent) this.o.metrics?.published.inc({ tenant: r.tenant_id });
      this.lastError = undefined;
      if (sent.length > 0 && this.o.onPublished) {
        try {
          this.o.onPublished(sent.map((r) => r.event));
        } catch (err) {
          this.o.log.warn({ err }, "onPublished hook threw (ignored)");
        }
      }
      return res.rows.length;
    } catch (err) {
      await c.query("ROLLBACK").catch((e: unknown) => (broken = e as Error));
      throw err;
    } finally {
      c.release(broken);
    }
  }
}
