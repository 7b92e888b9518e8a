/**
 * Turns one chunk of Kafka records of one partition into what the sinks need: stored readings,
 * dead letters (with original bytes) and alarm changes. The processor chain runs here, in flow
 * order: decode → validate → quota → thresholds. Synchronous per record; the only awaits are once
 * per chunk and stage (schema ids not yet cached, tenant directory refresh, equipment admission,
 * alarm state of equipment not seen yet).
 */
import type { KafkaMessage } from "kafkajs";
import type { Stage } from "../../lib/errors.ts";
import type { DeadLetterRow } from "../../sinks/timescale/writer.ts";
import { AvroDecoder, schemaIdOf } from "../processors/decode.ts";
import { validateReading, type ValidateOptions } from "../processors/validate.ts";
import type { StoredReading } from "../reading.ts";
import type { TenantDirectory } from "./tenant-directory.ts";
import type { QuotaGate } from "../processors/quota.ts";
import type { ChunkAlarmChanges, ThresholdEvaluator } from "../processors/threshold-evaluator.ts";

export interface ChunkResult {
  rows: StoredReading[];
  deadLetters: DeadLetterRow[];
  /** Alarm state changes and alert events of this chunk (commit with the batch); undefined without rules. */
  alarms?: ChunkAlarmChanges;
  /** Kafka timestamps (ms) of the stored rows' records, by offset, for produce-to-commit latency. */
  firstTimestamp: number | null;
}

export function headersToStrings(h: KafkaMessage["headers"]): Record<string, string> {
  const out: Record<string, string> = {};
  if (!h) return out;
  for (const [k, v] of Object.entries(h)) {
    if (v === undefined) continue;
    const one = Array.isArray(v) ? v[v.length - 1] : v;
    if (one !== undefined) out[k] = Buffer.isBuffer(one) ? one.toString("utf8") : String(one);
  }
  return out;
}

export function deadLetterOf(
  m: KafkaMessage,
  src: { topic: string; partition: number; tenantId: string | null },
  r: { stage: Stage | string; reason: string; message: string; schemaId?: number | null },
): DeadLetterRow {
  return {
    sourceTopic: src.topic,
    sourcePartition: src.partition,
    sourceOffset: Number(m.offset),
    tenantId: src.tenantId,
    reason: r.reason,
    stage: r.stage,
    message: r.message,
    schemaId: r.schemaId ?? null,
    key: m.key ?? null,
    value: m.value ?? null,
    headers: headersToStrings(m.headers),
    timestamp: m.timestamp ? Number(m.timestamp) : null,
  };
}

export class BatchProcessor {
  constructor(
    private readonly decoder: AvroDecoder,
    private readonly tenants: TenantDirectory,
    private readonly validateOpts: ValidateOptions,
    private readonly now: () => number = Date.now,
    private readonly quota?: QuotaGate,
    private readonly thresholds?: ThresholdEvaluator,
  ) {}

  /** The whole chain for one chunk: awaits once per stage, synchronous per record. */
  async processChunk(messages: readonly KafkaMessage[], src: { topic: string; partition: number; tenantId: string | null }): Promise<ChunkResult> {
    await this.prepare(messages);
    const out = this.process(messages, src);
    if (src.tenantId === null || out.rows.length === 0) return out;
    const tenantId = src.tenantId;
    if (this.quota) {
      await this.quota.prepare(tenantId, out.rows);
      let kept: StoredReading[] | undefined;
      let byOffset: Map<number, KafkaMessage> | undefined;
      const rows = out.rows;
      for (let i = 0; i < rows.length; i++) {
        const r = rows[i]!;
        const q = this.quota.check(tenantId, r.equipmentId);
        if (q.ok) {
          kept?.push(r);
          continue;
        }
        // Only a chunk with a rejection pays for the copy and the offset index.
        kept ??= rows.slice(0, i);
        byOffset ??= new Map(messages.map((m) => [Number(m.offset), m]));
        const m = byOffset.get(r.offset)!;
        out.deadLetters.push(deadLetterOf(m, src, { stage: "quota", reason: q.reason, message: q.message, schemaId: schemaIdOf(m.value) }));
      }
      if (kept) out.rows = kept;
    }
    if (this.thresholds && out.rows.length > 0) {
      const scope = `${src.topic}/${src.partition}`;
      await this.thresholds.prepare(scope, tenantId, out.rows);
      out.alarms = this.thresholds.evaluate(scope, tenantId, out.rows);
    }
    return out;
  }

  /** The once-per-chunk awaits: schemas for new ids, a stale tenant directory. */
  async prepare(messages: readonly KafkaMessage[]): Promise<void> {
    await Promise.all([this.decoder.prepare(AvroDecoder.schemaIds(messages.map((m) => m.value))), this.tenants.ensureFresh()]);
  }

  /**
   * Rebuild the rows the database already stored for these records (a Parquet replay below the
   * database's offset): decode and the deterministic checks only — the clock- and tenant-status
   * dependent ones decided when the records were first processed, and every record rejected then
   * is in the dead-letter outbox, whose offsets the caller leaves out.
   */
  async replayChunk(messages: readonly KafkaMessage[], src: { topic: string; partition: number; tenantId: string | null }, deadLettered: ReadonlySet<number>): Promise<StoredReading[]> {
    await this.prepare(messages);
    return this.process(messages, src, { replay: true }).rows.filter((r) => !deadLettered.has(r.offset));
  }

  /** Synchronous; {@link prepare} must have been awaited for these messages. */
  process(messages: readonly KafkaMessage[], src: { topic: string; partition: number; tenantId: string | null }, opts: { replay?: boolean } = {}): ChunkResult {
    const rows: StoredReading[] = [];
    const deadLetters: DeadLetterRow[] = [];
    const now = this.now();
    const validateOpts = opts.replay ? { ...this.validateOpts, maxFutureSkewMs: Number.POSITIVE_INFINITY } : this.validateOpts;
    const tenant =
      src.tenantId === null
        ? undefined
        : opts.replay
          ? { tenantId: src.tenantId, status: "active" as const, retentionDays: null, maxEquipment: Number.MAX_SAFE_INTEGER }
          : this.tenants.get(src.tenantId);
    let firstTimestamp: number | null = null;
    // One validation context for the chunk, its offset set per record (no object per record).
    const ctx = { topicTenantId: src.tenantId ?? "", tenant, offset: 0, now };
    for (const m of messages) {
      const offset = Number(m.offset);
      if (src.tenantId === null) {
        deadLetters.push(deadLetterOf(m, src, { stage: "tenant", reason: "unknown_tenant", message: `topic ${src.topic} does not name a tenant`, schemaId: schemaIdOf(m.value) }));
        continue;
      }
      const decoded = this.decoder.decode(m.value);
      if (!decoded.ok) {
        deadLetters.push(deadLetterOf(m, src, { stage: "decode", reason: decoded.reason, message: decoded.message, schemaId: decoded.schemaId }));
        continue;
      }
      ctx.offset = offset;
      const v = validateReading(decoded.value, ctx, validateOpts);
      if (!v.ok) {
        deadLetters.push(deadLetterOf(m, src, { stage: "validate", reason: v.reason, message: v.message, schemaId: decoded.schemaId }));
        continue;
      }
      rows.push(v.row);
      if (firstTimestamp === null && m.timestamp) firstTimestamp = Number(m.timestamp);
    }
    return { rows, deadLetters, firstTimestamp };
  }
}
