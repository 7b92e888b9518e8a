/**
 * Exactly-once delivery of an outbox table to Kafka, shared by the dead-letter and alert
 * publishers (docs/exactly-once.md "The outbox topics", migrations/011_outbox_relay.sql).
 *
 * Rows reach an outbox exactly once, in the transaction of the batch that produced them. Sending
 * them to Kafka and marking them published cannot be one transaction, so a crash between Kafka's
 * acknowledgement and the mark used to send a batch twice. Here:
 *
 *  1. One relay per outbox and database leads at a time: it holds a session advisory lock on a
 *     connection of its own (not a pool connection). A leader that stops talking to PostgreSQL
 *     (frozen, cut off) loses the session to `idle_session_timeout`, and with it the lead.
 *  2. The leader claims a batch: one statement writes a new batch number (a sequence) into the
 *     rows' `relay_batch` and returns them. It is committed before anything is sent.
 *  3. The batch goes out in one Kafka transaction (transactional id `millrace-outbox-{kind}-{relay
 *     id}`), which also commits the batch number as the offset of the marker group (same name) on
 *     `millrace-outbox-relay`. The records and the marker become visible together, or not at all.
 *  4. The rows are marked published.
 *
 * A new leader first fences every earlier producer of its transactional id (InitProducerId aborts
 * or completes the transaction it left open, and an old process' later commit is refused), then
 * reads the marker: claimed rows of batches up to it were delivered and are marked published; the
 * other claimed rows go out again. Readers of the topics must read committed records (kafkajs'
 * default, `isolation.level=read_committed` elsewhere) — an aborted attempt is never theirs.
 */
import pg from "pg";
import type { Admin, Producer, TopicMessages } from "kafkajs";
import type { Logger } from "../../lib/log.ts";
import { createTopicsAndWait } from "../../lib/kafka-topics.ts";
import { OutboxPump } from "./pump.ts";

/** The topic whose offsets (of each relay's marker group) record the last delivered batch. */
export const RELAY_MARKER_TOPIC = "millrace-outbox-relay";

/** What a relay needs of Kafka: its own transactional producers, and an admin. */
export interface RelayKafka {
  /** A new, unconnected producer with this transactional id (idempotent, one request in flight). */
  transactionalProducer(transactionalId: string): Producer;
  admin: Pick<Admin, "listTopics" | "createTopics" | "fetchTopicMetadata" | "fetchOffsets">;
}

export interface OutboxRelayOptions {
  pool: pg.Pool;
  kafka: RelayKafka;
  /** Which outbox (a row of millrace.outbox_relays). */
  kind: "dead_letters" | "alerts";
  /** Advisory lock key of this outbox's leader. */
  lockKey: readonly [number, number];
  maxBatch: number;
  intervalMs: number;
  /** Partitions of output topics created on demand (provisioning normally creates them). */
  partitions: number;
  log: Logger;
  /** A leader silent this long loses its PostgreSQL session and the lead (default 60 s). */
  leaderIdleTimeoutMs?: number;
}

interface Leader {
  client: pg.Client;
  producer: Producer;
  /** Transactional id = marker group. */
  name: string;
}

/** A claimed batch turned into Kafka records; `rows` are those sent (others were set aside). */
export interface RelayBatch<Row> {
  rows: Row[];
  topicMessages: TopicMessages[];
}

export abstract class OutboxRelay<Row> extends OutboxPump {
  private leader: Leader | undefined;
  /** A connection kept to try for the lead on every turn (not reopened each time). */
  private candidate: pg.Client | undefined;
  private readonly knownTopics = new Set<string>();
  private renewRequested = false;

  protected constructor(protected readonly relay: OutboxRelayOptions) {
    super(relay);
  }

  /** Claim at most `limit` unpublished, unclaimed rows under a new batch number, in publishing order. */
  protected abstract claim(c: pg.ClientBase, limit: number): Promise<{ batch: string; rows: Row[] }>;
  /** Turn a claimed batch into records (rows that cannot be encoded may be set aside here). */
  protected abstract encode(c: pg.ClientBase, rows: Row[]): Promise<RelayBatch<Row>>;
  /** Mark the rows of `batch` published. */
  protected abstract markPublished(c: pg.ClientBase, batch: string): Promise<void>;
  /**
   * After taking the lead: mark claimed rows of batches ≤ `delivered` published (returning them) and
   * release the other claimed rows (their batch never became visible). `delivered` is null when no
   * batch was ever delivered.
   */
  protected abstract recover(c: pg.ClientBase, delivered: string | null): Promise<Row[]>;
  /** Rows now published (metrics, webhooks). Must not throw. */
  protected abstract published(rows: Row[]): void;

  /** Called between sending a batch and committing its transaction (a seam for fault tests). */
  protected beforeCommit(): Promise<void> {
    return Promise.resolve();
  }

  /** Whether this relay currently leads (tests, logs). */
  get leading(): boolean {
    return this.leader !== undefined;
  }

  /** Start the next turn with a new producer (the worker replaced its Kafka clients). */
  renew(): void {
    this.renewRequested = true;
  }

  protected async publishOnce(): Promise<number> {
    if (this.renewRequested) {
      this.renewRequested = false;
      this.knownTopics.clear();
      await this.resign();
    }
    const l = this.leader ?? (await this.lead());
    if (!l) return 0;
    try {
      const { batch, rows } = await this.claim(l.client, this.relay.maxBatch);
      if (rows.length === 0) return 0;
      const out = await this.encode(l.client, rows);
      if (out.rows.length > 0) {
        await this.ensureTopics(out.topicMessages.map((t) => t.topic));
        const txn = await l.producer.transaction();
        try {
          await txn.sendBatch({ acks: -1, topicMessages: out.topicMessages });
          await txn.sendOffsets({ consumerGroupId: l.name, topics: [{ topic: RELAY_MARKER_TOPIC, partitions: [{ partition: 0, offset: batch }] }] });
          await this.beforeCommit();
          await txn.commit();
        } catch (err) {
          if (txn.isActive()) await txn.abort().catch(() => {});
          throw err;
        }
        await this.markPublished(l.client, batch);
        this.published(out.rows);
      }
      this.lastError = undefined;
      return rows.length;
    } catch (err) {
      // Whatever failed, the next leader (maybe this relay again) starts from the marker.
      await this.resign();
      throw err;
    }
  }

  /** Try for the lead; on success fence earlier producers and recover what they left claimed. */
  private async lead(): Promise<Leader | undefined> {
    const c = this.candidate ?? (await this.connect());
    this.candidate = c;
    let producer: Producer | undefined;
    try {
      const lock = await c.query<{ ok: boolean }>("SELECT pg_try_advisory_lock($1, $2) AS ok", [...this.relay.lockKey]);
      if (!lock.rows[0]!.ok) return undefined;
      this.candidate = undefined;
      const r = await c.query<{ relay_id: string }>("SELECT relay_id FROM millrace.outbox_relays WHERE kind = $1", [this.relay.kind]);
      if (r.rows.length === 0) throw new Error(`millrace.outbox_relays has no row for ${this.relay.kind}; run ./millrace migrate`);
      const name = `millrace-outbox-${this.relay.kind}-${r.rows[0]!.relay_id}`;
      producer = this.relay.kafka.transactionalProducer(name);
      await producer.connect();
      // The first transaction() initialises the producer id: the coordinator aborts (or completes)
      // whatever an earlier producer of this id left open and fences it. The empty transaction
      // sends nothing.
      await (await producer.transaction()).abort();
      await this.ensureTopics([]);
      const delivered = await this.deliveredBatch(name);
      const recovered = await this.recover(c, delivered);
      if (recovered.length > 0) {
        this.relay.log.info({ rows: recovered.length, delivered }, "outbox rows delivered by an earlier relay whose mark was lost; marked published, not sent again");
        this.published(recovered);
      }
      this.leader = { client: c, producer, name };
      return this.leader;
    } catch (err) {
      this.candidate = undefined;
      await c.end().catch(() => {});
      await producer?.disconnect().catch(() => {});
      throw err;
    }
  }

  private async connect(): Promise<pg.Client> {
    const base = this.relay.pool.options as pg.ClientConfig & { options?: string };
    const idle = Math.max(5_000, Math.trunc(this.relay.leaderIdleTimeoutMs ?? 60_000));
    const c = new pg.Client({ ...base, options: `${base.options ?? ""} -c idle_session_timeout=${idle}`.trim() });
    c.on("error", () => {}); // a lost connection surfaces on the next query
    await c.connect();
    return c;
  }

  private async deliveredBatch(group: string): Promise<string | null> {
    const res = await this.relay.kafka.admin.fetchOffsets({ groupId: group, topics: [RELAY_MARKER_TOPIC] });
    const p = res.find((t) => t.topic === RELAY_MARKER_TOPIC)?.partitions.find((x) => x.partition === 0);
    return p && Number(p.offset) >= 0 ? p.offset : null;
  }

  private async ensureTopics(topics: string[]): Promise<void> {
    const missing = [RELAY_MARKER_TOPIC, ...topics].filter((t) => !this.knownTopics.has(t));
    if (missing.length === 0) return;
    // Tenant provisioning creates the output topics; this covers topics made before it did.
    const existing = new Set(await this.relay.kafka.admin.listTopics());
    const create = missing.filter((t) => !existing.has(t));
    if (create.length > 0) {
      await createTopicsAndWait(
        this.relay.kafka.admin,
        create.map((topic) => ({ topic, numPartitions: topic === RELAY_MARKER_TOPIC ? 1 : this.relay.partitions })),
      );
    }
    for (const t of missing) this.knownTopics.add(t);
  }

  private async resign(): Promise<void> {
    const l = this.leader;
    this.leader = undefined;
    if (!l) return;
    await l.client.end().catch(() => {}); // the session lock goes with the session
    await l.producer.disconnect().catch(() => {});
  }

  /** Give up the lead and close this relay's connections (after the last flush). */
  async close(): Promise<void> {
    await this.stop();
    await this.resign();
    const c = this.candidate;
    this.candidate = undefined;
    await c?.end().catch(() => {});
  }
}
