/**
 * Creating topics so that they can be used at once, also on a freshly started broker.
 *
 * kafkajs' `createTopics({ waitForLeaders: true })` waits for leaders by asking for the new topics'
 * metadata and retries only on LEADER_NOT_AVAILABLE. A KRaft broker that has just started (or just
 * created the topic) may answer UNKNOWN_TOPIC_OR_PARTITION ("This server does not host this
 * topic-partition") for a moment instead, and kafkajs gives up on that at once — the first
 * `millrace demo` on a fresh stack failed that way. Here the topics are created without kafkajs'
 * wait, then their metadata is polled (bounded) until every partition has a leader.
 */
import type { Admin, ITopicConfig } from "kafkajs";

export type TopicAdmin = Pick<Admin, "createTopics" | "fetchTopicMetadata">;

/** Create what is missing of `topics` (existing ones are left alone) and wait until all have leaders. */
export async function createTopicsAndWait(admin: TopicAdmin, topics: ITopicConfig[], timeoutMs = 60_000): Promise<void> {
  if (topics.length === 0) return;
  await admin.createTopics({ topics, waitForLeaders: false });
  const names = topics.map((t) => t.topic);
  const deadline = Date.now() + timeoutMs;
  let last: unknown;
  for (let delay = 100; ; delay = Math.min(delay * 2, 2_000)) {
    try {
      const md = await admin.fetchTopicMetadata({ topics: names });
      const ready = names.every((n) => {
        const t = md.topics.find((x) => x.name === n);
        return t !== undefined && t.partitions.length > 0 && t.partitions.every((p) => p.leader >= 0);
      });
      if (ready) return;
      last = new Error("some partitions have no leader yet");
    } catch (err) {
      last = err;
    }
    if (Date.now() + delay > deadline) break;
    await new Promise((r) => setTimeout(r, delay));
  }
  throw new Error(`topics ${names.join(", ")} were created but have no leaders after ${Math.round(timeoutMs / 1000)} s (${(last as Error)?.message ?? last}); is the broker healthy? ./millrace stack status`);
}
