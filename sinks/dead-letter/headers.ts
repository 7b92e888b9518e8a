/**
 * Dead-letter record format (pure). The record keeps the original key and value bytes untouched.
 * Of the original headers it keeps what the outbox stored (headersToStrings in
 * pipelines/runtime/batch-processor.ts): each value as a UTF-8 string, the last value of a repeated
 * header, none whose name starts with `millrace.` (dropped here too, so a producer cannot forge
 * ours). millrace adds these headers (all UTF-8 strings), after the original ones:
 *
 *   millrace.dlq.id            `{source topic}/{partition}/{offset}` — unique per source record
 *   millrace.reason            machine-readable code, e.g. bad_magic_byte, tenant_mismatch
 *   millrace.stage             decode | validate | quota | tenant | sink
 *   millrace.message           one line for humans
 *   millrace.source.topic / millrace.source.partition / millrace.source.offset
 *   millrace.schema.id         the wire-format schema id, whenever the record is a frame (any stage)
 *   millrace.tenant            the tenant of the source topic
 *   millrace.source.timestamp  the source record's Kafka timestamp (ms)
 */
export const DLQ_HEADER_PREFIX = "millrace.";

export interface DeadLetterFields {
  sourceTopic: string;
  sourcePartition: number;
  sourceOffset: number;
  tenantId: string | null;
  reason: string;
  stage: string;
  message: string;
  schemaId: number | null;
  timestamp: number | null;
}

export function dlqId(f: Pick<DeadLetterFields, "sourceTopic" | "sourcePartition" | "sourceOffset">): string {
  return `${f.sourceTopic}/${f.sourcePartition}/${f.sourceOffset}`;
}

export function deadLetterHeaders(f: DeadLetterFields, original: Record<string, string> = {}): Record<string, string> {
  const h: Record<string, string> = {};
  // Original headers first; ours win on a clash (a producer cannot forge a reason).
  for (const [k, v] of Object.entries(original)) if (!k.startsWith(DLQ_HEADER_PREFIX)) h[k] = v;
  h["millrace.dlq.id"] = dlqId(f);
  h["millrace.reason"] = f.reason;
  h["millrace.stage"] = f.stage;
  h["millrace.message"] = f.message;
  h["millrace.source.topic"] = f.sourceTopic;
  h["millrace.source.partition"] = String(f.sourcePartition);
  h["millrace.source.offset"] = String(f.sourceOffset);
  if (f.schemaId !== null) h["millrace.schema.id"] = String(f.schemaId);
  if (f.tenantId !== null) h["millrace.tenant"] = f.tenantId;
  if (f.timestamp !== null) h["millrace.source.timestamp"] = String(f.timestamp);
  return h;
}
