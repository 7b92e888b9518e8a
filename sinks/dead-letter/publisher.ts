/**
 * Publishes dead letters from the outbox (millrace.dead_letters, written in the same transaction
 * as the batch they came from) to the tenant's dead-letter topic, then marks them published.
 *
 * Delivery to the topic is at-least-once: a crash after Kafka acknowledged a record but before the
 * row was marked publishes it again on restart, with the same `millrace.dlq.id` header and the same
 * key, so a reader can drop the repeat. The outbox itself holds each dead letter exactly once.
 * Several workers may publish at the same time: rows are claimed with FOR UPDATE SKIP LOCKED.
 */
import { createTopicsAndWait } from "../../lib/kafka-topics.ts";
import { OutboxPump } from "../outbox/pump.ts";
import type { Admin, Producer } from "kafkajs";
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
  producer: Pick<Producer, "sendBatch">;
  admin: Pick<Admin, "listTopics" | "createTopics" | "fetchTopicMetadata">;
  topicPattern: TopicPattern;
  maxBatch: number;
  intervalMs: number;
  partitions: number;
  log: Logger;
  metrics: PipelineMetrics;
}

export class DeadLetterPublisher extends OutboxPump {
  private readonly knownTopics = new Set<string>();

  constructor(private readonly o: DeadLetterPublisherOptions) {
    super(o);
  }

  protected onDrainError(err: unknown): void {
    this.o.log.warn({ err }, "dead-letter publish failed; will retry");
  }

  private topicFor(row: OutboxRow): string {
    return row.tenant_id ? this.o.topicPattern.topicFor(row.tenant_id) : UNROUTABLE_DLQ_TOPIC;
  }

  private async ensureTopics(topics: string[]): Promise<void> {
    const missing = topics.filter((t) => !this.knownTopics.has(t));
    if (missing.length === 0) return;
    // Tenant provisioning creates dead-letter topics; this only covers topics made before it did.
    const existing = new Set(await this.o.admin.listTopics());
    const create = missing.filter((t) => !existing.has(t));
    if (create.length > 0) {
      await createTopicsAndWait(this.o.admin, create.map((topic) => ({ topic, numPartitions: this.o.partitions })));
    }
    for (const t of missing) this.knownTopics.add(t);
  }

  protected async publishOnce(): Promise<number> {
    const client = await this.o.pool.connect();
    try {
      await client.query("BEGIN");
      const res = await client.query<OutboxRow>(
        `SELECT source_topic, source_partition, source_offset, tenant_id, reason, stage, message, schema_id,
                record_key, record_value, record_headers, record_timestamp
         FROM millrace.dead_letters WHERE published_at IS NULL
         ORDER BY created_at, source_topic, source_partition, source_offset
         LIMIT $1 FOR UPDATE SKIP LOCKED`,
        [this.o.maxBatch],
      );
      if (res.rows.length === 0) {
        await client.query("COMMIT");
        return 0;
      }
      const byTopic = new Map<string, OutboxRow[]>();
      for (const r of res.rows) {
        const t = this.topicFor(r);
        byTopic.set(t, [...(byTopic.get(t) ?? []), r]);
      }
      await this.ensureTopics([...byTopic.keys()]);
      await this.o.producer.sendBatch({
        acks: -1,
        topicMessages: [...byTopic].map(([topic, rows]) => ({
          topic,
          messages: rows.map((r) => ({
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
      await client.query(
        `UPDATE millrace.dead_letters SET published_at = now()
         WHERE (source_topic, source_partition, source_offset) IN (SELECT * FROM unnest($1::text[], $2::int[], $3::bigint[]))`,
        [res.rows.map((r) => r.source_topic), res.rows.map((r) => r.source_partition), res.rows.map((r) => r.source_offset)],
      );
      await client.query("COMMIT");
      for (const r of res.rows) this.o.metrics.deadLettersPublished.inc({ tenant: r.tenant_id ?? "unknown" });
      this.lastError = undefined;
      return res.rows.length;
    } catch (err) {
      await client.query("ROLLBACK").catch(() => {});
      throw err;
    } finally {
      client.release();
    }
  }
}
