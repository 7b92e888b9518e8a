/**
 * Publishes dead letters from the outbox (millrace.dead_letters, written in the same transaction
 * as the batch they came from) to the tenant's dead-letter topic, exactly once
 * (sinks/outbox/relay.ts): one leader per database claims batches in (created_at, source
 * position) order and sends each in a Kafka transaction, then marks the rows published. Each
 * record keeps its original key and bytes; `millrace.dlq.id` (`topic/partition/offset`) names
 * its source.
 */
import { OutboxRelay, type RelayBatch, type RelayKafka } from "../outbox/relay.ts";
import type pg from "pg";
import type { Logger } from "../../lib/log.ts";
import type { PipelineMetrics } from "../../lib/metrics.ts";
import type { TopicPattern } from "../../pipelines/runtime/tenant-directory.ts";
import { deadLetterHeaders } from "./headers.ts";

/** Where dead letters of records whose topic names no tenant go. */
export const UNROUTABLE_DLQ_TOPIC = "millrace-dead-letters";

interface OutboxRow {
  source_topic: string;
  source_partition: number;
  source_offset: string;
  tenant_id: string | null;
  reason: string;
  stage: string;
  message: string;
  schema_id: number | null;
  record_key: Buffer | null;
  record_value: Buffer | null;
  record_headers: Record<string, string>;
  record_timestamp: Date | null;
}

export interface DeadLetterPublisherOptions {
  pool: pg.Pool;
  kafka: RelayKafka;
  topicPattern: TopicPattern;
  maxBatch: number;
  intervalMs: number;
  partitions: number;
  log: Logger;
  metrics: PipelineMetrics;
  /** See {@link OutboxRelayOptions.leaderIdleTimeoutMs}. */
  leaderIdleTimeoutMs?: number;
}

/** Advisory lock class 'dlqp': the single active dead-letter publisher. */
const PUBLISH_LOCK = [0x646c7170, 0] as const;

const COLUMNS = `source_topic, source_partition, source_offset, tenant_id, reason, stage, message, schema_id,
  record_key, record_value, record_headers, record_timestamp`;

export class DeadLetterPublisher extends OutboxRelay<OutboxRow> {
  constructor(private readonly o: DeadLetterPublisherOptions) {
    super({ ...o, kind: "dead_letters", lockKey: PUBLISH_LOCK });
  }

  protected onDrainError(err: unknown): void {
    this.o.log.warn({ err }, "dead-letter publish failed; will retry");
  }

  private topicFor(row: OutboxRow): string {
    return row.tenant_id ? this.o.topicPattern.topicFor(row.tenant_id) : UNROUTABLE_DLQ_TOPIC;
  }

  protected async claim(c: pg.ClientBase, limit: number): Promise<{ batch: string; rows: OutboxRow[] }> {
    const res = await c.query<OutboxRow & { relay_batch: string }>(
      `WITH b AS (SELECT nextval('millrace.outbox_relay_batch') AS n),
       s AS (SELECT source_topic, source_partition, source_offset FROM millrace.dead_letters
             WHERE published_at IS NULL AND relay_batch IS NULL
             ORDER BY created_at, source_topic, source_partition, source_offset LIMIT $1),
       u AS (UPDATE millrace.dead_letters d SET relay_batch = (SELECT n FROM b)
             FROM s WHERE d.source_topic = s.source_topic AND d.source_partition = s.source_partition AND d.source_offset = s.source_offset
             RETURNING d.created_at, d.relay_batch, ${COLUMNS.split(",").map((x) => `d.${x.trim()}`).join(", ")})
       SELECT relay_batch::text, ${COLUMNS} FROM u ORDER BY created_at, source_topic, source_partition, source_offset`,
      [limit],
    );
    return { batch: res.rows[0]?.relay_batch ?? "", rows: res.rows };
  }

  protected encode(_c: pg.ClientBase, rows: OutboxRow[]): Promise<RelayBatch<OutboxRow>> {
    const byTopic = new Map<string, OutboxRow[]>();
    for (const r of rows) {
      const t = this.topicFor(r);
      let list = byTopic.get(t);
      if (!list) byTopic.set(t, (list = []));
      list.push(r);
    }
    return Promise.resolve({
      rows,
      topicMessages: [...byTopic].map(([topic, list]) => ({
        topic,
        messages: list.map((r) => ({
          key: r.record_key,
          value: r.record_value,
          timestamp: r.record_timestamp ? String(r.record_timestamp.getTime()) : undefined,
          headers: deadLetterHeaders(
            {
              sourceTopic: r.source_topic,
              sourcePartition: r.source_partition,
              sourceOffset: Number(r.source_offset),
              tenantId: r.tenant_id,
              reason: r.reason,
              stage: r.stage,
              message: r.message,
              schemaId: r.schema_id,
              timestamp: r.record_timestamp ? r.record_timestamp.getTime() : null,
            },
            r.record_headers,
          ),
        })),
      })),
    });
  }

  protected async markPublished(c: pg.ClientBase, batch: string): Promise<void> {
    await c.query("UPDATE millrace.dead_letters SET published_at = now() WHERE relay_batch = $1 AND published_at IS NULL", [batch]);
  }

  protected async recover(c: pg.ClientBase, delivered: string | null): Promise<OutboxRow[]> {
    const done = delivered === null
      ? []
      : (await c.query<OutboxRow>(
          `UPDATE millrace.dead_letters SET published_at = now()
           WHERE published_at IS NULL AND relay_batch IS NOT NULL AND relay_batch <= $1 RETURNING ${COLUMNS}`,
          [delivered],
        )).rows;
    await c.query("UPDATE millrace.dead_letters SET relay_batch = NULL WHERE published_at IS NULL AND relay_batch IS NOT NULL");
    return done;
  }

  protected published(rows: OutboxRow[]): void {
    for (const r of rows) this.o.metrics.deadLettersPublished.inc({ tenant: r.tenant_id ?? "unknown" });
  }
}
