/**
 * Publishes alert events from the outbox (millrace.alerts_outbox, written in the same transaction
 * as the batch whose readings caused them) to the tenant's alerts topic, `alerts-{tenant_id}`,
 * Avro-encoded in the Confluent wire format, exactly once (sinks/outbox/relay.ts): one leader per
 * database sends the outbox in (created_at, alert_id, seq) order in Kafka transactions, so the
 * steps of an alarm reach its partition in order, each once. Every record also carries the
 * `millrace.alert.event_id` header (`{alert_id}/{seq}`) and the alert id as key. The schema is
 * registered once per subject (`alerts-{tenant_id}-value`) and its id cached; every message is
 * encoded locally, with no registry call.
 *
 * After a batch is marked published, `onPublished` gets its events (webhooks): fire-and-forget,
 * it cannot slow or fail publishing.
 */
import type { Registrar } from "../../lib/registry-repair.ts";
import { OutboxRelay, type RelayBatch, type RelayKafka } from "../outbox/relay.ts";
import { SchemaType } from "@kafkajs/confluent-schema-registry";
import type { TopicMessages } from "kafkajs";
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
  kafka: RelayKafka;
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
  /** See {@link OutboxRelayOptions.leaderIdleTimeoutMs}. */
  leaderIdleTimeoutMs?: number;
}

interface OutboxRow {
  alert_id: string;
  seq: number;
  tenant_id: string;
  event: AlertEvent;
}

export class AlertPublisher extends OutboxRelay<OutboxRow> {
  private readonly schemaIds = new Map<string, Promise<number>>();

  constructor(private readonly o: AlertPublisherOptions) {
    super({ ...o, kind: "alerts", lockKey: PUBLISH_LOCK });
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

  protected async claim(c: pg.ClientBase, limit: number): Promise<{ batch: string; rows: OutboxRow[] }> {
    const res = await c.query<OutboxRow & { relay_batch: string }>(
      `WITH b AS (SELECT nextval('millrace.outbox_relay_batch') AS n),
       s AS (SELECT alert_id, seq FROM millrace.alerts_outbox
             WHERE published_at IS NULL AND publish_error IS NULL AND relay_batch IS NULL
             ORDER BY created_at, alert_id, seq LIMIT $1),
       u AS (UPDATE millrace.alerts_outbox o SET relay_batch = (SELECT n FROM b)
             FROM s WHERE o.alert_id = s.alert_id AND o.seq = s.seq
             RETURNING o.alert_id, o.seq, o.tenant_id, o.event, o.created_at, o.relay_batch)
       SELECT alert_id, seq, tenant_id, event, relay_batch::text FROM u ORDER BY created_at, alert_id, seq`,
      [limit],
    );
    return { batch: res.rows[0]?.relay_batch ?? "", rows: res.rows };
  }

  /** Encode a claimed batch; an event that does not fit the schema is set aside (publish_error), never blocking the rest. */
  protected async encode(c: pg.ClientBase, rows: OutboxRow[]): Promise<RelayBatch<OutboxRow>> {
    const type = alertEventType();
    const byTopic = new Map<string, AlertRecord[]>();
    const sent: OutboxRow[] = [];
    for (const r of rows) {
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
      let list = byTopic.get(topic);
      if (!list) byTopic.set(topic, (list = []));
      list.push(rec);
      sent.push(r);
    }
    const topicMessages: TopicMessages[] = [...byTopic].map(([topic, messages]) => ({ topic, messages }));
    return { rows: sent, topicMessages };
  }

  protected async markPublished(c: pg.ClientBase, batch: string): Promise<void> {
    await c.query("UPDATE millrace.alerts_outbox SET published_at = now() WHERE relay_batch = $1 AND published_at IS NULL AND publish_error IS NULL", [batch]);
  }

  protected async recover(c: pg.ClientBase, delivered: string | null): Promise<OutboxRow[]> {
    const done = delivered === null
      ? []
      : (await c.query<OutboxRow>(
          `UPDATE millrace.alerts_outbox SET published_at = now()
           WHERE published_at IS NULL AND publish_error IS NULL AND relay_batch IS NOT NULL AND relay_batch <= $1
           RETURNING alert_id, seq, tenant_id, event`,
          [delivered],
        )).rows;
    await c.query("UPDATE millrace.alerts_outbox SET relay_batch = NULL WHERE published_at IS NULL AND relay_batch IS NOT NULL");
    return done;
  }

  protected published(rows: OutboxRow[]): void {
    for (const r of rows) this.o.metrics?.published.inc({ tenant: r.tenant_id });
    if (rows.length > 0 && this.o.onPublished) {
      try {
        this.o.onPublished(rows.map((r) => r.event));
      } catch (err) {
        this.o.log.warn({ err }, "onPublished hook threw (ignored)");
      }
    }
  }
}
