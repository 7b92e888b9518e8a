/** Kafka helpers for the benchmark: clients, end offsets, reading record timestamps back. */
import { Kafka, logLevel, type Admin } from "kafkajs";
import { createKafka } from "../lib/kafka-client.ts";

export function benchKafka(clientId: string): Kafka {
  return createKafka({ clientId, logLevel: logLevel.NOTHING });
}

export const partKey = (topic: string, partition: number) => `${topic}\u0000${partition}`;

/** High watermark of every partition of `topics`, keyed by {@link partKey}. */
export async function endOffsets(admin: Admin, topics: readonly string[]): Promise<Map<string, number>> {
  const out = new Map<string, number>();
  for (const t of topics) for (const o of await admin.fetchTopicOffsets(t)) out.set(partKey(t, o.partition), Number(o.high));
  return out;
}

export function sumOffsets(m: Map<string, number>): number {
  let s = 0;
  for (const v of m.values()) s += v;
  return s;
}

/**
 * Kafka timestamps (CreateTime, ms) of the records in [from, to) of each partition, read with a
 * throw-away consumer that seeks to `from` on every assignment. Bounded by `timeoutMs`.
 */
export async function readTimestamps(
  kafka: Kafka,
  from: Map<string, number>,
  to: Map<string, number>,
  timeoutMs: number,
): Promise<Map<string, Float64Array>> {
  const want = new Map<string, { from: number; ts: Float64Array; got: number }>();
  let remaining = 0;
  for (const [k, f] of from) {
    const n = (to.get(k) ?? f) - f;
    if (n <= 0) continue;
    want.set(k, { from: f, ts: new Float64Array(n).fill(Number.NaN), got: 0 });
    remaining += n;
  }
  const out = new Map<string, Float64Array>([...want].map(([k, v]) => [k, v.ts]));
  if (remaining === 0) return out;
  const topics = [...new Set([...want.keys()].map((k) => k.split("\u0000")[0]!))];
  const groupId = `millrace-bench-ts-${Date.now()}-${Math.random().toString(36).slice(2)}`;
  const consumer = kafka.consumer({ groupId, maxBytesPerPartition: 1 << 20 });
  await consumer.connect();
  let done!: () => void;
  const finished = new Promise<void>((r) => (done = r));
  const seekAll = () => {
    for (const [k, w] of want) {
      const [topic, p] = k.split("\u0000") as [string, string];
      if (w.got < w.ts.length) consumer.seek({ topic, partition: Number(p), offset: String(w.from + w.got) });
    }
  };
  try {
    consumer.on(consumer.events.GROUP_JOIN, () => seekAll());
    await consumer.subscribe({ topics, fromBeginning: false });
    await consumer.run({
      eachBatch: async ({ batch }) => {
        const w = want.get(`${batch.topic}\u0000${batch.partition}`);
        if (!w) return;
        for (const m of batch.messages) {
          const i = Number(m.offset) - w.from;
          if (i >= 0 && i < w.ts.length && Number.isNaN(w.ts[i]!)) {
            w.ts[i] = Number(m.timestamp);
            w.got++;
            remaining--;
          }
        }
        if (remaining <= 0) done();
      },
    });
    seekAll();
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<void>((_, rej) => (timer = setTimeout(() => rej(new Error(`read back ${remaining} fewer record timestamps than expected within ${timeoutMs} ms`)), timeoutMs)));
    try {
      await Promise.race([finished, timeout]);
    } finally {
      clearTimeout(timer);
    }
  } finally {
    await consumer.disconnect().catch(() => {});
    const admin = kafka.admin();
    await admin
      .connect()
      .then(() => admin.deleteGroups([groupId]))
      .catch(() => {})
      .finally(() => admin.disconnect().catch(() => {}));
  }
  return out;
}

export async function deleteTopicsQuietly(admin: Admin, topics: readonly string[]): Promise<void> {
  const existing = new Set(await admin.listTopics());
  const mine = topics.filter((t) => existing.has(t));
  if (mine.length > 0) await admin.deleteTopics({ topics: mine, timeout: 30_000 }).catch(() => {});
}

export async function deleteGroupsQuietly(admin: Admin, groups: readonly string[]): Promise<void> {
  if (groups.length > 0) await admin.deleteGroups([...groups]).catch(() => {});
}
