/**
 * The ingest worker: one member of a Kafka consumer group over every tenant topic.
 *
 *   tenant topic → decode → validate → TimescaleDB (rows + dead letters + offsets, one transaction)
 *   → Kafka offset commit (for lag tools) → dead-letter topic (from the outbox)
 *
 * Offsets: the database is the source of truth. The first batch of a partition after each
 * (re)assignment loads the stored next offset; records below it are skipped (already stored), and
 * every batch commits only if the stored offset still equals where it started (see the sink), so a
 * worker that lost its partition can neither write nor commit. Kafka's committed offset trails the
 * database and is only a hint for where to fetch from.
 *
 * Stores: a tenant's records, offsets, alarm state, outboxes and Parquet manifest live in its
 * store — the shared database, or its dedicated database (tenants/database.ts) — so each batch is
 * one transaction in one database. The shared database is also the control plane (tenants, rules,
 * webhooks, equipment registry). A partition's store is fixed when the partition is first seen
 * after an assignment; each store has its own pool, writer and outbox publishers.
 *
 * The engine owns batching, retries, heartbeats, offsets and metrics; processors own one decision;
 * sinks own one destination.
 */
import { randomUUID } from "node:crypto";
import { Kafka, logLevel, type Consumer, type EachBatchPayload, type KafkaMessage, type Admin } from "kafkajs";
import type { RelayKafka } from "../../sinks/outbox/relay.ts";
import { createKafka, type KafkaAuth } from "../../lib/kafka-client.ts";
import type pg from "pg";
import avro from "avsc";
import { FencedError, isRetriablePgError, MillraceError } from "../../lib/errors.ts";
import type { Logger } from "../../lib/log.ts";
import { PipelineMetrics } from "../../lib/metrics.ts";
import { retry } from "../../lib/retry.ts";
import { parseAvroSchema } from "../../schemas/index.ts";
import { DeadLetterPublisher } from "../../sinks/dead-letter/publisher.ts";
import { createPool } from "../../sinks/timescale/pool.ts";
import { TimescaleWriter, type BatchStatement, type DeadLetterRow } from "../../sinks/timescale/writer.ts";
import { AvroDecoder, schemaIdOf, type SchemaLookup } from "../processors/decode.ts";
import type { ProcessorPlan, SinkPlan, TopologyPlan } from "../topology/plan.ts";
import { BatchProcessor, deadLetterOf } from "./batch-processor.ts";
import { ParquetStage } from "./parquet-stage.ts";
import { PartitionMaintenance, PartitionMaintenanceMetrics } from "./partition-maintenance.ts";
import { assertMigrated } from "../../migrations/migrate.ts";
import { maintainPartitions } from "../../migrations/partitions.ts";
import { PARQUET_SINK } from "../../sinks/s3-parquet/index.ts";
import { PgQuotaStore } from "../processors/quota-store.ts";
import { QuotaGate, QuotaMetrics } from "../processors/quota.ts";
import { pgAlarmStateSource, ThresholdEvaluator, ThresholdMetrics } from "../processors/threshold-evaluator.ts";
import { alarmChangeStatements } from "../processors/alarm-store.ts";
import { AlertPublisher, AlertPublisherMetrics } from "../../sinks/alerts/publisher.ts";
import { PgWebhookTargets, WebhookMetrics, WebhookNotifier } from "../../sinks/alerts/webhooks.ts";
import type { Rejection, StoredReading } from "../reading.ts";
import { TenantDirectory, TopicPattern } from "./tenant-directory.ts";
import { PartitionProgress, type PartitionLag } from "./partition-progress.ts";
import { TenantDatabases } from "../../tenants/database.ts";
import { readFileSync } from "node:fs";
import { resolve, dirname } from "node:path";
import { SchemaRegistry } from "@kafkajs/confluent-schema-registry";
import { withCompatibilityRepair } from "../../lib/registry-repair.ts";
import type { S3Client } from "@aws-sdk/client-s3";

export interface WorkerSettings {
  brokers: string[];
  /** SASL credentials; default the worker identity from the environment (MILLRACE_WORKER_KAFKA_*, else MILLRACE_KAFKA_*); null = none. */
  kafkaAuth?: KafkaAuth | null;
  registryUrl: string;
  pgUrl: string;
  pgRole?: string;
  /** Identifies this replica in logs, metrics and the Kafka client id. */
  instanceId?: string;
  log: Logger;
  /** Partitions of dead-letter topics created on demand. */
  deadLetterPartitions?: number;
  /** A partition with lag that has not moved for this long makes /readyz fail (default: source.stall_after). */
  stallAfterMs?: number;
  /** Only consume tenant topics this accepts (default: all that match the source pattern). */
  topicFilter?: (topic: string) => boolean;
  /** Called with every S3 client the Parquet sink creates (tests record requests with middleware). */
  onS3Client?: (client: S3Client) => void;
}

/** Where a tenant's data goes: a database with its writer and outbox publishers. */
interface TenantStore {
  /** "shared", or the dedicated database (for logs). */
  name: string;
  pool: pg.Pool;
  writer: TimescaleWriter;
  dlq: DeadLetterPublisher;
  alerts: AlertPublisher | undefined;
}

interface PartitionState {
  /** The tenant's store, fixed for as long as this state lives (one assignment). */
  store: TenantStore;
  /** Stored next offset (database); undefined until loaded after an assignment. */
  next: number | undefined;
  /** Consecutive failed attempts at the current chunk (for the pause backoff). */
  failures?: number;
  /** Where this partition last sought back to (to seek back at most once per position). */
  seekedBackTo?: number;
}

export interface WorkerStatus {
  instanceId: string;
  joined: boolean;
  crashed: string | undefined;
  /** Every partition of the current assignment (see {@link PartitionProgress}). */
  assigned: PartitionLag[];
  dbOk: boolean;
}

function find<T extends { type: string }, K extends T["type"]>(items: readonly T[], type: K): Extract<T, { type: K }> {
  const it = items.find((i) => i.type === type);
  if (!it) throw new Error(`topology has no ${type} component`);
  return it as Extract<T, { type: K }>;
}

/** 1 GiB — the worker never holds more than the Kafka fetch limits anyway. */
const MAX_SAFE_OFFSET = Number.MAX_SAFE_INTEGER;

export class IngestWorker {
  readonly instanceId: string;
  readonly metrics: PipelineMetrics;
  private readonly kafka: Kafka;
  /** Replaced (not resubscribed) when tenant topics are deleted: see {@link replaceKafkaClients}. */
  private consumer: Consumer;
  private admin: Admin;
  /** The shared database: control plane, and the store of every shared tenant. */
  private readonly pool: pg.Pool;
  private readonly shared: TenantStore;
  private readonly databases: TenantDatabases;
  private readonly dedicated = new Map<pg.Pool, TenantStore>();
  /** Stores whose schema was checked against this code's migrations (assertMigrated). */
  private readonly schemaChecked = new WeakSet<TenantStore>();
  /** Partitions (key) whose tenant's store cannot be used yet, with why (shown by /readyz). */
  private readonly storeWaits = new Map<string, string>();
  private readonly newStore: (name: string, pool: pg.Pool) => TenantStore;
  private publishersStarted = false;
  private readonly tenants: TenantDirectory;
  private readonly processor: BatchProcessor;
  private readonly quota: QuotaGate;
  private readonly thresholds: ThresholdEvaluator | undefined;
  private readonly parquet: ParquetStage | undefined;
  private readonly webhookTargets: PgWebhookTargets | undefined;
  private readonly webhooks: WebhookNotifier | undefined;
  private readonly sourcePattern: TopicPattern;
  private readonly decodePlan: Extract<ProcessorPlan, { type: "avro_decode" }>;
  private readonly sinkPlan: Extract<SinkPlan, { type: "timescale_copy" }>;
  private readonly partitions = new Map<string, PartitionState>();
  /** Lag and progress of every assigned partition (readiness, the lag gauge). */
  private readonly progress: PartitionProgress;
  private lagTimer: NodeJS.Timeout | undefined;
  /** When the high watermarks were last read from Kafka (the lag poll), and its last error. */
  private watermarksReadAt = Date.now();
  private watermarkError: string | undefined;
  /** Partitions of the current assignment with no offset in the database: where the log starts (from_beginning). */
  private readonly logStart = new Map<string, number>();
  /** The current assignment's positioning (see {@link seekToStoredOffsets}); awaited before a partition's first batch. */
  private assignmentSeek: Promise<void> = Promise.resolve();
  private readonly abort = new AbortController();
  private joined = false;
  private crashed: string | undefined;
  private dbOk = true;
  private topicTimer: NodeJS.Timeout | undefined;
  /** The time partitions ahead of now, topped up on a timer (sinks.timescale.partition_maintenance). */
  private readonly partitionMaintenance: PartitionMaintenance;
  private subscribedTopics = new Set<string>();
  private stopping: Promise<void> | undefined;
  private draining = false;
  private inflightBatches = 0;
  private readonly log: Logger;

  constructor(
    readonly plan: TopologyPlan,
    private readonly settings: WorkerSettings,
  ) {
    this.instanceId = settings.instanceId ?? `millrace-${randomUUID().slice(0, 8)}`;
    this.log = settings.log.child({ component: "worker", instance: this.instanceId });
    this.metrics = new PipelineMetrics({ instance: this.instanceId });
    this.progress = new PartitionProgress(this.metrics.lag);
    this.decodePlan = find(plan.processors, "avro_decode");
    const validatePlan = find(plan.processors, "validate_reading");
    this.sinkPlan = find(plan.sinks, "timescale_copy");
    const dlqPlan = find(plan.sinks, "kafka_dead_letter");
    this.sourcePattern = new TopicPattern(plan.source.topicPattern);

    this.kafka = createKafka({
      clientId: this.instanceId,
      brokers: settings.brokers,
      auth: settings.kafkaAuth,
      identity: "worker",
      logLevel: logLevel.WARN,
      logCreator: () => (entry) => {
        const { message, ...rest } = entry.log;
        // The outbox relays' transactional producers bound their retries on purpose (a failed send
        // aborts its transaction; sinks/outbox/relay.ts): kafkajs' warning about it is not news.
        if (typeof message === "string" && message.startsWith("Limiting retries for the idempotent producer")) return;
        this.log.child({ component: "kafkajs", ns: entry.namespace }).warn(rest, message);
      },
      retry: { retries: 10, initialRetryTime: 300, maxRetryTime: 10_000 },
    });
    this.consumer = this.newConsumer();
    this.admin = this.kafka.admin();
    const poolSettings = {
      role: settings.pgRole,
      max: this.sinkPlan.poolSize,
      applicationName: this.instanceId,
      statementTimeoutMs: this.sinkPlan.statementTimeoutMs,
      // A worker idle inside a transaction for a whole session timeout has lost its partitions anyway.
      idleInTransactionTimeoutMs: plan.source.sessionTimeoutMs,
    };
    this.pool = createPool({ ...poolSettings, connectionString: settings.pgUrl });
    this.databases = new TenantDatabases(this.pool, { sharedUrl: settings.pgUrl, pool: poolSettings });
    this.tenants = new TenantDirectory(this.pool, validatePlan.tenantRefreshMs);
    const schemaText = readFileSync(resolve(dirname(plan.file), this.decodePlan.schemaFile), "utf8");
    const reader = parseAvroSchema(schemaText);
    const registry = new SchemaRegistry({ host: settings.registryUrl }, { forSchemaOptions: { wrapUnions: false } });
    const lookup: SchemaLookup = async (id) => {
      try {
        return (await registry.getSchema(id)) as unknown as avro.Type;
      } catch (err) {
        if ((err as { status?: number }).status === 404) return undefined;
        throw new MillraceError(`schema registry lookup of id ${id} failed: ${(err as Error).message}`, {
          retriable: true,
          stage: "decode",
          reason: "registry_unavailable",
          cause: err,
        });
      }
    };
    const decoder = new AvroDecoder(reader, lookup, { unknownTtlMs: this.decodePlan.unknownSchemaTtlMs });
    // Equipment quota: always on (every tenant has max_equipment); admission is exact in PostgreSQL.
    // (Without an equipment_quota processor in the topology: the same limit, default timing, no rate limits.)
    const quotaPlan = plan.processors.find((p) => p.type === "equipment_quota");
    const quota = new QuotaGate({
      store: new PgQuotaStore(this.pool, { warnPercent: quotaPlan?.warnPercent }),
      rejectionTtlMs: quotaPlan?.rejectionTtlMs,
      limitOf: (t) => this.tenants.get(t)?.maxEquipment,
      rateLimitOf: quotaPlan ? (t) => quotaPlan.rateLimits[this.tenants.get(t)?.tier ?? "basic"] : undefined,
      metrics: new QuotaMetrics(this.metrics.registry),
    });
    this.quota = quota;
    const thresholdPlan = plan.processors.find((p) => p.type === "thresholds");
    this.thresholds = thresholdPlan
      ? new ThresholdEvaluator({
          // Alarm state lives in the tenant's store; rule overrides in the control plane.
          source: pgAlarmStateSource((t) => this.storeOf(t).pool, this.pool),
          defaults: thresholdPlan.rules,
          rulesRefreshMs: thresholdPlan.rulesRefreshMs,
          metrics: new ThresholdMetrics(this.metrics.registry),
          log: this.log.child({ component: "thresholds" }),
        })
      : undefined;
    const parquetPlan = plan.sinks.find((x) => x.type === "s3_parquet");
    this.parquet = parquetPlan ? new ParquetStage(parquetPlan, this.pool, (t) => this.storeOf(t).pool, plan.source.consumerGroup, this.log.child({ component: "parquet" }), this.metrics, (t, n, committed) => this.parquetLost(t, n, committed),
          process.env,
          settings.onS3Client,
        ) : undefined;
    this.processor = new BatchProcessor(decoder, this.tenants, { maxFutureSkewMs: validatePlan.maxFutureSkewMs }, Date.now, quota, this.thresholds);
    // Per-tenant webhooks (millrace.tenant_webhooks): fired after alert events are published, on a
    // bounded queue of their own — a slow or failing endpoint never slows ingestion.
    this.webhookTargets = this.thresholds
      ? new PgWebhookTargets({ pool: this.pool, refreshMs: 10_000, secretOf: (n) => process.env[n], log: this.log.child({ component: "webhooks" }) })
      : undefined;
    this.webhooks = this.webhookTargets
      ? new WebhookNotifier({ targets: this.webhookTargets, metrics: new WebhookMetrics(this.metrics.registry), log: this.log.child({ component: "webhooks" }) })
      : undefined;
    const alertMetrics = this.thresholds ? new AlertPublisherMetrics(this.metrics.registry) : undefined;
    const alertRegistry = withCompatibilityRepair(registry, settings.registryUrl, { log: this.log.child({ component: "alerts" }) });
    this.newStore = (name, pool) => ({
      name,
      pool,
      writer: new TimescaleWriter(pool),
      alerts: alertMetrics
        ? new AlertPublisher({
            pool,
            kafka: this.relayKafka(),
            registry: alertRegistry,
            topicPattern: new TopicPattern("alerts-{tenant_id}"),
            maxBatch: dlqPlan.maxBatch,
            intervalMs: dlqPlan.publishIntervalMs,
            partitions: settings.deadLetterPartitions ?? 3,
            log: this.log.child({ component: "alerts", store: name }),
            metrics: alertMetrics,
            onPublished: (events) => this.webhooks?.notify(events),
          })
        : undefined,
      dlq: new DeadLetterPublisher({
        pool,
        kafka: this.relayKafka(),
        topicPattern: new TopicPattern(dlqPlan.topicPattern),
        maxBatch: dlqPlan.maxBatch,
        intervalMs: dlqPlan.publishIntervalMs,
        partitions: settings.deadLetterPartitions ?? 3,
        log: this.log.child({ component: "dead_letter", store: name }),
        metrics: this.metrics,
      }),
    });
    this.shared = this.newStore("shared", this.pool);
    this.partitionMaintenance = new PartitionMaintenance({
      everyMs: this.sinkPlan.partitionMaintenanceMs,
      targets: () => this.stores().map((st) => ({ name: st.name, pool: st.pool })),
      log: this.log.child({ component: "partitions" }),
      metrics: new PartitionMaintenanceMetrics(this.metrics.registry),
    });
  }

  /**
   * The store of a tenant's data (see the header). The directory knows the tenant's database
   * reference; an unknown tenant (no row) and a topic that names no tenant use the shared database.
   */
  private storeOf(tenantId: string | null): TenantStore {
    if (tenantId === null) return this.shared;
    const info = this.tenants.get(tenantId);
    if (info?.databaseProblem) throw new MillraceError(`tenant ${tenantId}: ${info.databaseProblem}`, { retriable: true, stage: "sink", reason: "database_ref" });
    if (!info?.database) return this.shared;
    let pool;
    try {
      pool = this.databases.poolFor(info.database);
    } catch (err) {
      throw new MillraceError(`tenant ${tenantId}: ${(err as Error).message}`, { retriable: true, stage: "sink", reason: "database_ref", cause: err });
    }
    let store = this.dedicated.get(pool);
    if (!store) {
      store = this.newStore("database" in info.database ? info.database.database : `$${info.database.env}`, pool);
      this.dedicated.set(pool, store);
      this.log.info({ tenant: tenantId, store: store.name }, "using the tenant's dedicated database");
      if (this.publishersStarted) {
        store.dlq.start();
        store.alerts?.start();
      }
    }
    return store;
  }

  /**
   * The Parquet sink's state of a partition was fenced (another owner, or the tenant's store moved):
   * the partition reloads at its next batch, and the fetch goes back to where this state's sink
   * offset was, so that a batch comes even if no new records do (an idle partition would otherwise
   * keep its Parquet tail unwritten until its next record).
   */
  private parquetLost(topic: string, partition: number, committed: number | undefined): void {
    this.partitions.delete(this.key(topic, partition));
    if (committed !== undefined) this.rewind(topic, partition, committed);
  }

  /**
   * After a fence: fetch the partition again from `offset` (what was not stored), so its next batch
   * comes even if no new records do; the batch reloads the partition's state and skips what is
   * stored. Harmless where the partition is no longer assigned here.
   */
  private rewind(topic: string, partition: number, offset: number): void {
    if (!this.subscribedTopics.has(topic)) return;
    try {
      this.consumer.seek({ topic, partition, offset: String(offset) });
    } catch (err) {
      this.log.debug({ topic, partition, err: (err as Error).message }, "could not seek a fenced partition back (not assigned here any more)");
    }
  }

  /** The store of a partition's tenant, with the directory refreshed first if it does not know the tenant yet (a new tenant). */
  private async storeOfTopic(topic: string): Promise<TenantStore> {
    const tenantId = this.sourcePattern.tenantOf(topic) ?? null;
    if (tenantId !== null && this.tenants.get(tenantId) === undefined) await this.tenants.refresh();
    const store = this.storeOf(tenantId);
    if (!this.schemaChecked.has(store)) {
      // A dedicated database not migrated to this code's schema: only this tenant's partitions wait
      // (paused, retried; readiness shows it), with the fix in the log.
      try {
        await assertMigrated(store.pool, `tenant ${tenantId}'s dedicated database ${store.name}`);
      } catch (err) {
        throw new MillraceError((err as Error).message, { retriable: true, stage: "sink", reason: "schema_behind", cause: err });
      }
      this.schemaChecked.add(store);
    }
    return store;
  }

  private stores(): TenantStore[] {
    return [this.shared, ...this.dedicated.values()];
  }

  private newConsumer(): Consumer {
    const plan = this.plan;
    return this.kafka.consumer({
      groupId: plan.source.consumerGroup,
      sessionTimeout: plan.source.sessionTimeoutMs,
      rebalanceTimeout: Math.max(60_000, plan.source.sessionTimeoutMs * 2),
      heartbeatInterval: plan.source.heartbeatIntervalMs,
      maxBytesPerPartition: plan.source.maxBytesPerPartition,
      maxBytes: plan.source.maxBytes,
      allowAutoTopicCreation: false,
      retry: { retries: Number.MAX_SAFE_INTEGER, initialRetryTime: 300, maxRetryTime: 10_000 },
    });
  }

  async start(): Promise<void> {
    await this.pool.query("SELECT 1");
    // A database older than this code (e.g. workers upgraded before `millrace migrate`) is refused
    // with the fix, rather than failing every COPY on a missing column.
    await assertMigrated(this.pool, "the shared database");
    this.schemaChecked.add(this.shared);
    await this.tenants.refresh();
    // At start a failure is fatal (the schema is not migrated, or the database refuses); afterwards
    // the timer only logs and retries.
    const created = await maintainPartitions(this.pool);
    if (created.length > 0) this.log.info({ store: this.shared.name, created }, `partition maintenance created ${created.length} time partitions`);
    this.partitionMaintenance.start();
    await this.parquet?.start();
    await Promise.all([this.consumer.connect(), this.admin.connect()]);
    // Webhook targets are loaded before the first batch, so no event published at start-up misses them.
    await this.webhookTargets?.start();
    const topics = await this.tenantTopics();
    this.subscribedTopics = new Set(topics);
    if (topics.length === 0) this.log.warn({ pattern: this.plan.source.topicPattern }, "no tenant topics yet");
    await this.warnForeignParquetGroup(topics);
    await this.runConsumer(this.consumer, topics);
    this.publishersStarted = true;
    for (const st of this.stores()) {
      st.dlq.start();
      st.alerts?.start();
    }
    this.watchTopics();
    this.watchLag();
  }

  /** Listeners (ignoring a replaced consumer's late events), subscription and run. */
  private async runConsumer(c: Consumer, topics: string[]): Promise<void> {
    const current = () => c === this.consumer;
    c.on(c.events.GROUP_JOIN, (e) => {
      if (!current()) return;
      this.joined = true;
      this.crashed = undefined;
      // A new generation: every partition reloads its stored offset before its next batch.
      this.partitions.clear();
      this.storeWaits.clear();
      this.logStart.clear();
      this.progress.assign(e.payload.memberAssignment);
      this.watermarksReadAt = Date.now();
      this.thresholds?.forgetAll();
      this.parquet?.forgetAll();
      this.assignmentSeek = this.seekToStoredOffsets(c, e.payload.memberAssignment);
      this.log.info({ assignment: e.payload.memberAssignment }, "joined consumer group");
    });
    // kafkajs rebalances eagerly: every partition is revoked until the next GROUP_JOIN; a crashed
    // consumer has left the group (its partitions go to others).
    c.on(c.events.REBALANCING, () => {
      if (current()) this.progress.dropAll();
    });
    c.on(c.events.CRASH, (e) => {
      if (!current()) return;
      this.crashed = String(e.payload.error?.message ?? e.payload.error);
      this.joined = false;
      this.progress.dropAll();
      this.log.error({ err: e.payload.error, restart: e.payload.restart }, "consumer crashed");
    });
    c.on(c.events.STOP, () => {
      if (current()) this.joined = false;
    });
    if (topics.length > 0) await c.subscribe({ topics, fromBeginning: this.plan.source.fromBeginning });
    await c.run({
      autoCommit: false,
      eachBatchAutoResolve: false,
      partitionsConsumedConcurrently: this.plan.source.partitionsConsumedConcurrently,
      eachBatch: (p) => this.eachBatch(p),
    });
  }

  /**
   * At every assignment, before a partition's first batch: position each assigned partition where
   * the database says — the lower of the stored offsets of the database and of the Parquet sink —
   * or, where the database has no offset, at the log start (source.from_beginning). Kafka's
   * committed offset is only a hint and can be ahead of the database (a database restored from a
   * backup, or replaced, while the group's Kafka offsets remain): without this an idle partition
   * would never be fetched again and its records would never be stored.
   */
  private async seekToStoredOffsets(c: Consumer, assignment: Record<string, number[]>): Promise<void> {
    const group = this.plan.source.consumerGroup;
    try {
      for (const [topic, parts] of Object.entries(assignment)) {
        if (parts.length === 0) continue;
        const store = await this.storeOfTopic(topic);
        const res = await store.pool.query<{ partition: number; db: string; pq: string | null }>(
          `SELECT c.partition, c.next_offset AS db, s.next_offset AS pq
           FROM millrace.consumer_offsets AS c
           LEFT JOIN millrace.sink_offsets AS s ON s.sink = 's3_parquet' AND s.consumer_group = c.consumer_group AND s.topic = c.topic AND s.partition = c.partition
           WHERE c.consumer_group = $1 AND c.topic = $2`,
          [group, topic],
        );
        // A tombstone (-1: the tenant's store is moving, tenants/move.ts) is positioned by the
        // partition's first batch, once the tenant's new store is known.
        const moved = new Set(res.rows.filter((r) => Number(r.db) === MOVED || (r.pq !== null && Number(r.pq) === MOVED)).map((r) => r.partition));
        const stored = new Map(res.rows.map((r) => [r.partition, this.parquet && r.pq !== null ? Math.min(Number(r.db), Number(r.pq)) : Number(r.db)]));
        const low = new Map<number, number>();
        if (this.plan.source.fromBeginning && parts.some((p) => !stored.has(p))) {
          for (const o of await this.admin.fetchTopicOffsets(topic)) low.set(o.partition, Number(o.low));
        }
        for (const partition of parts) {
          if (moved.has(partition)) continue;
          const at = stored.get(partition) ?? low.get(partition);
          if (at === undefined || c !== this.consumer) continue;
          if (!stored.has(partition)) this.logStart.set(this.key(topic, partition), at);
          c.seek({ topic, partition, offset: String(at) });
          this.progress.advance(topic, partition, at);
        }
      }
    } catch (err) {
      this.log.warn({ err: (err as Error).message }, "could not position the assigned partitions at their stored offsets; each partition's first batch checks again");
    }
  }

  /**
   * The Parquet sink continues one consumer group's files: a topic's files are planned per group
   * (their ranges live in millrace.parquet_files) while the objects they name are shared, so a second
   * group over the same topics plans its files from offset 0 again and collides with the first
   * group's (its files are fenced; PostgreSQL is unaffected). Not solved yet (docs/parquet.md,
   * "One consumer group per Parquet sink"): the worker says so loudly at start.
   */
  private async warnForeignParquetGroup(topics: string[]): Promise<void> {
    if (!this.parquet || topics.length === 0) return;
    const group = this.plan.source.consumerGroup;
    const other = await this.pool.query<{ consumer_group: string; topic: string; files: number }>(
      `SELECT consumer_group, min(topic) AS topic, count(*)::int AS files FROM millrace.parquet_files
       WHERE topic = ANY($1) AND consumer_group <> $2 GROUP BY consumer_group ORDER BY consumer_group LIMIT 3`,
      [topics, group],
    );
    if (other.rows.length === 0) return;
    this.log.error(
      { group, others: other.rows },
      `Parquet files of these topics were written by another consumer group (${other.rows.map((r) => r.consumer_group).join(", ")}): this group's Parquet files for them will collide and be fenced (PostgreSQL is not affected). Run with --consumer-group ${other.rows[0]!.consumer_group} to continue those files; see docs/parquet.md`,
    );
  }

  private async tenantTopics(): Promise<string[]> {
    const all = await this.admin.listTopics();
    const accept = this.settings.topicFilter ?? (() => true);
    return all.filter((t) => this.sourcePattern.tenantOf(t) !== undefined && accept(t)).sort();
  }

  /**
   * New tenant topics (live onboarding): kafkajs fixes a subscription when `run` starts, so when
   * the set changes the consumer is stopped, resubscribed and run again. Offsets live in the
   * database, so nothing is lost or repeated across that restart.
   */
  private watchTopics(): void {
    const tick = async () => {
      try {
        const topics = await this.tenantTopics();
        const removed = [...this.subscribedTopics].filter((t) => !topics.includes(t));
        const added = topics.filter((t) => !this.subscribedTopics.has(t));
        if ((removed.length > 0 || added.length > 0) && !this.abort.signal.aborted) {
          this.log.info({ topics: topics.length, added: added.length, removed: removed.length }, "tenant topics changed; resubscribing");
          if (removed.length > 0) {
            await this.replaceKafkaClients(topics, removed);
          } else {
            await this.consumer.stop();
            this.subscribedTopics = new Set(topics);
            await this.runConsumer(this.consumer, topics);
          }
        }
      } catch (err) {
        this.log.warn({ err }, "topic refresh failed");
      } finally {
        if (!this.abort.signal.aborted) {
          this.topicTimer = setTimeout(() => void tick(), this.plan.source.topicRefreshMs);
          this.topicTimer.unref();
        }
      }
    };
    this.topicTimer = setTimeout(() => void tick(), this.plan.source.topicRefreshMs);
    this.topicTimer.unref();
  }

  /**
   * Tenant topics were deleted (a purged tenant). kafkajs clients never forget a topic they have
   * used: every later metadata refresh of that client fails with UNKNOWN_TOPIC_OR_PARTITION and a
   * commit for it retries without end. So the consumer and the admin are replaced by fresh ones
   * (the outbox relays reach the admin through {@link relayKafka}, and renew their own producers
   * on their next turn); the old ones are stopped and disconnected within bounds. Offsets live in
   * the database, so the new consumer's group generation resumes exactly where the old one stopped.
   */
  private async replaceKafkaClients(topics: string[], removed: string[]): Promise<void> {
    const old = { consumer: this.consumer, admin: this.admin };
    // First, so that a batch finishing on the old consumer commits no hint for a vanished topic.
    this.subscribedTopics = new Set(topics);
    await bounded(old.consumer.stop(), 15_000, () => this.log.warn("old consumer did not stop within 15 s; disconnecting it"));
    await bounded(old.consumer.disconnect(), 10_000);
    for (const k of [...this.partitions.keys()]) if (removed.includes(k.split("\u0000")[0]!)) this.partitions.delete(k);
    for (const k of [...this.storeWaits.keys()]) if (removed.includes(k.split("\u0000")[0]!)) this.storeWaits.delete(k);
    for (const a of this.progress.list()) if (removed.includes(a.topic)) this.progress.drop(a.topic, a.partition);
    const admin = this.kafka.admin();
    await admin.connect();
    this.admin = admin;
    void bounded(old.admin.disconnect(), 10_000);
    for (const st of this.stores()) {
      st.dlq.renew();
      st.alerts?.renew();
    }
    this.consumer = this.newConsumer();
    this.joined = false;
    await this.consumer.connect();
    await this.runConsumer(this.consumer, topics);
    this.log.info({ removed }, "tenant topics removed; Kafka clients replaced");
  }

  /**
   * What the outbox relays use: transactional producers of their own (sinks/outbox/relay.ts) and
   * always the worker's current admin. Their retries are bounded: a send that keeps failing aborts
   * its transaction, and the relay starts over with a fresh producer (one that has forgotten, say,
   * a purged tenant's topic).
   */
  private relayKafka(): RelayKafka {
    return {
      transactionalProducer: (transactionalId) =>
        this.kafka.producer({
          transactionalId,
          idempotent: true,
          maxInFlightRequests: 1,
          allowAutoTopicCreation: false,
          retry: { retries: 8, initialRetryTime: 300, maxRetryTime: 10_000 },
        }),
      admin: {
        listTopics: () => this.admin.listTopics(),
        createTopics: (o) => this.admin.createTopics(o),
        fetchTopicMetadata: (o) => this.admin.fetchTopicMetadata(o),
        fetchOffsets: (o) => this.admin.fetchOffsets(o),
      },
    };
  }

  /** Kafka's committed offsets are hints (the database is authoritative): bounded, never failing. */
  private async commitHint(offsets: Array<{ topic: string; partition: number; offset: string }>): Promise<void> {
    const live = offsets.filter((o) => this.subscribedTopics.has(o.topic));
    if (live.length === 0) return;
    const commit = this.consumer.commitOffsets(live).catch((err: unknown) => {
      this.log.warn({ err: (err as Error).message }, "Kafka offset commit failed (database offsets are authoritative)");
    });
    await bounded(commit, 5_000, () => this.log.warn("Kafka offset commit still pending after 5 s; going on (database offsets are authoritative)"));
  }

  private key(topic: string, partition: number): string {
    return `${topic}\u0000${partition}`;
  }

  private async storedNext(store: TenantStore, topic: string, partition: number): Promise<number | undefined> {
    const stored = await retry(() => store.writer.storedOffsets(this.plan.source.consumerGroup, topic), this.retryPolicy(), {
      retriable: isRetriablePgError,
      signal: this.abort.signal,
      onRetry: (err) => this.onDbRetry(err),
    });
    return stored.get(partition);
  }

  private retryPolicy() {
    const r = this.sinkPlan.retry;
    return { retries: r.maxRetries, initialDelayMs: r.initialDelayMs, maxDelayMs: r.maxDelayMs, factor: r.factor };
  }

  /** A few quick attempts inside the batch; beyond that the partition is paused and retried later. */
  private inBatchRetryPolicy() {
    const r = this.retryPolicy();
    return { ...r, retries: Math.min(r.retries, 3) };
  }

  /**
   * Backpressure: the partition's chunk could not be written (sink down, registry unreachable, an
   * unexpected error). Nothing was resolved, so the records are fetched again; the partition is
   * paused for an exponentially growing delay while the other partitions (other tenants) go on.
   * Never dropped: this repeats until it succeeds or the worker stops; /readyz shows the stall.
   */
  private backOff(p: EachBatchPayload, src: { topic: string; partition: number }, state: PartitionState, err: unknown): void {
    state.failures = (state.failures ?? 0) + 1;
    this.metrics.sinkRetries.inc({ sink: this.sinkPlan.id });
    const r = this.retryPolicy();
    if (state.failures > r.retries + 1) {
      this.log.error({ topic: src.topic, partition: src.partition, err }, "retries exhausted (retry.max_retries); partition stays paused");
      p.pause();
      return;
    }
    const delay = Math.min(r.maxDelayMs, r.initialDelayMs * r.factor ** Math.min(state.failures, 30));
    const retriable = err instanceof MillraceError ? err.retriable : isRetriablePgError(err);
    this.log[retriable ? "warn" : "error"](
      { topic: src.topic, partition: src.partition, attempt: state.failures, delayMs: delay, err: (err as Error).message ?? String(err) },
      "batch failed; partition paused, will retry",
    );
    const resume = p.pause();
    const t = setTimeout(() => {
      if (!this.abort.signal.aborted) resume();
    }, delay);
    t.unref();
  }

  private onDbRetry(err: unknown): void {
    this.dbOk = false;
    this.metrics.sinkRetries.inc({ sink: this.sinkPlan.id });
    this.log.warn({ err: (err as Error).message }, "database write failed; retrying");
  }

  private async eachBatch(p: EachBatchPayload): Promise<void> {
    if (this.draining) return;
    this.inflightBatches++;
    try {
      await this.eachBatchInner(p);
    } finally {
      this.inflightBatches--;
    }
  }

  private async eachBatchInner(p: EachBatchPayload): Promise<void> {
    const { batch } = p;
    const { topic, partition } = batch;
    const k = this.key(topic, partition);
    const heartbeat = setInterval(() => {
      p.heartbeat().catch(() => {
        /* a rebalance is under way; the fence protects the write */
      });
    }, this.plan.source.heartbeatIntervalMs);
    try {
      const tenantId = this.sourcePattern.tenantOf(topic) ?? null;
      let state = this.partitions.get(k);
      if (!state) {
        await this.assignmentSeek;
        let store: TenantStore;
        try {
          store = await this.storeOfTopic(topic);
        } catch (err) {
          // A misconfigured dedicated database (or the control plane unreachable): nothing is read
          // past this point; the partition waits and tries again (readiness shows it).
          if (this.abort.signal.aborted) return;
          this.dbOk = false;
          this.storeWaits.set(k, (err as Error).message);
          this.log.error({ topic, partition, err: (err as Error).message }, "cannot tell or reach the tenant's store; partition paused, will retry");
          const resume = p.pause();
          setTimeout(() => {
            if (!this.abort.signal.aborted) resume();
          }, this.sinkPlan.retry.maxDelayMs).unref();
          return;
        }
        this.storeWaits.delete(k);
        let next = await this.storedNext(store, topic, partition);
        if (next === MOVED) {
          // The tenant's store is moving (tenants/move.ts): its offsets here are a tombstone. Read
          // where the tenant lives now; until the move switches over, wait (nothing is read past).
          await this.tenants.refresh();
          let now: TenantStore | undefined;
          try {
            now = this.storeOf(tenantId);
          } catch {
            now = undefined;
          }
          if (now && now !== store) {
            this.log.info({ topic, partition, from: store.name, to: now.name }, "the tenant's store moved; continuing there");
            store = now;
            next = await this.storedNext(store, topic, partition);
          }
          if (next === MOVED) {
            this.log.info({ topic, partition, store: store.name }, "the tenant's store is moving; partition waits for the switch");
            const resume = p.pause();
            setTimeout(() => {
              if (!this.abort.signal.aborted) resume();
            }, MOVE_WAIT_MS).unref();
            return;
          }
        }
        // The Parquet sink resumes from its own stored offset (≤ the database's); without one yet it
        // starts where the database does.
        if (this.parquet && tenantId) {
          await retry(() => this.parquet!.assign(topic, partition, tenantId, next), this.retryPolicy(), { retriable: isRetriablePgError, signal: this.abort.signal });
        }
        state = { store, next };
        this.partitions.set(k, state);
        const at = next ?? this.logStart.get(k) ?? (batch.messages.length > 0 ? Number(batch.messages[0]!.offset) : undefined);
        if (at !== undefined) this.progress.advance(topic, partition, at);
      }
      this.progress.observeHigh(topic, partition, Number(batch.highWatermark));
      let messages = batch.messages;
      const pqNext = this.parquet?.nextToAppend(topic, partition);
      // With nothing stored yet, the source starts at the log start (from_beginning), not wherever
      // Kafka's committed offset (a hint) happens to be.
      const start = state.next ?? this.logStart.get(k);
      if (start !== undefined) {
        const from = pqNext === undefined ? start : Math.min(start, pqNext);
        if (messages.length > 0 && Number(messages[messages.length - 1]!.offset) < from) {
          // Everything here is already stored (Kafka's committed offset trails the database): jump.
          p.resolveOffset(messages[messages.length - 1]!.offset);
          this.consumer.seek({ topic, partition, offset: String(from) });
          return;
        }
        if (messages.length > 0 && Number(messages[0]!.offset) > from && state.seekedBackTo !== from) {
          // The fetch position is past what a sink still needs (its state was reloaded): go back,
          // once — if the records are gone (retention), the gap is accepted and logged.
          state.seekedBackTo = from;
          this.consumer.seek({ topic, partition, offset: String(from) });
          return;
        }
        if (messages.length > 0 && Number(messages[0]!.offset) > from) {
          this.log.warn({ topic, partition, from, first: messages[0]!.offset }, "records between the stored offset and the log start are gone (retention?)");
        }
        messages = messages.filter((m) => Number(m.offset) >= from);
      }
      const src = { topic, partition, tenantId };
      // Records the database already has but the Parquet sink does not (replay after a crash).
      const stored = state.next;
      const replay = stored === undefined ? [] : messages.filter((m) => Number(m.offset) < stored);
      if (replay.length > 0) {
        for (const chunk of this.chunks(replay)) {
          if (!p.isRunning() || p.isStale() || this.abort.signal.aborted) return;
          if (!(await this.replayChunk(p, chunk, src))) return;
        }
        messages = messages.filter((m) => Number(m.offset) >= stored!);
      }
      for (const chunk of this.chunks(messages)) {
        if (!p.isRunning() || p.isStale() || this.abort.signal.aborted) return;
        const ok = await this.writeChunk(p, chunk, src, state);
        if (!ok) return;
        if (tenantId !== null && this.rateLimited(p, src, tenantId, chunk.length)) return;
      }
      if (messages.length === 0 && batch.messages.length > 0) p.resolveOffset(batch.messages[batch.messages.length - 1]!.offset);
    } finally {
      clearInterval(heartbeat);
    }
  }

  /** Feed the Parquet sink rows the database stored earlier (from the same records, minus their dead letters). */
  private async replayChunk(p: EachBatchPayload, chunk: KafkaMessage[], src: { topic: string; partition: number; tenantId: string | null }): Promise<boolean> {
    const first = Number(chunk[0]!.offset);
    const last = Number(chunk[chunk.length - 1]!.offset);
    // Not even replayed while the Parquet sink holds too much (the chunk is fetched again on resume).
    if (!this.parquetBackpressure(p, src)) return false;
    try {
      const store = this.partitions.get(this.key(src.topic, src.partition))?.store ?? this.storeOf(src.tenantId);
      const dead = await store.pool.query<{ source_offset: string }>(
        "SELECT source_offset FROM millrace.dead_letters WHERE source_topic = $1 AND source_partition = $2 AND source_offset BETWEEN $3 AND $4",
        [src.topic, src.partition, first, last],
      );
      const rows = await this.processor.replayChunk(chunk, src, new Set(dead.rows.map((r) => Number(r.source_offset))));
      this.parquet!.append(src.topic, src.partition, rows, last, first);
    } catch (err) {
      if (this.abort.signal.aborted) return false;
      const state = this.partitions.get(this.key(src.topic, src.partition));
      if (state) this.backOff(p, src, state, err);
      return false;
    }
    p.resolveOffset(String(last));
    return this.parquetBackpressure(p, src);
  }

  /**
   * The tenant's tier rate (equipment_quota): after a chunk of n readings, a tenant ahead of its
   * rate has this partition paused for as long as it is ahead — slowed, never dropped (the rest of
   * the fetched batch is fetched again after the pause); other tenants' partitions go on.
   */
  private rateLimited(p: EachBatchPayload, src: { topic: string; partition: number }, tenantId: string, n: number): boolean {
    const delay = this.quota.rateLimitDelayMs(tenantId, n);
    if (delay <= 0) return false;
    const resume = p.pause();
    const t = setTimeout(() => {
      if (!this.abort.signal.aborted) resume();
    }, delay);
    t.unref();
    this.log.debug({ topic: src.topic, partition: src.partition, delayMs: delay }, "tenant above its tier's rate; partition paused");
    return true;
  }

  /**
   * Pause a partition while the Parquet sink holds too much (its own files waiting for upload beyond
   * max_pending_bytes, or all partitions' beyond max_memory_bytes); resume when drained.
   */
  private parquetBackpressure(p: EachBatchPayload, src: { topic: string; partition: number }): boolean {
    if (!this.parquet?.overLimit(src.topic, src.partition)) return true;
    this.log.warn({ topic: src.topic, partition: src.partition }, "Parquet uploads are behind; partition paused until they catch up");
    const resume = p.pause();
    this.parquet.whenDrained(src.topic, src.partition, () => {
      if (!this.abort.signal.aborted) resume();
    });
    return false;
  }

  /** Split by the sink's row and byte limits. */
  private *chunks(messages: KafkaMessage[]): Generator<KafkaMessage[]> {
    const { maxRows, maxBytes } = this.sinkPlan.batch;
    let start = 0;
    let bytes = 0;
    for (let i = 0; i < messages.length; i++) {
      bytes += messages[i]!.value?.length ?? 0;
      if (i - start + 1 >= maxRows || bytes >= maxBytes) {
        yield messages.slice(start, i + 1);
        start = i + 1;
        bytes = 0;
      }
    }
    if (start < messages.length) yield messages.slice(start);
  }

  /** Process and store one chunk; false if this worker must stop processing the partition (fenced/stopping). */
  private async writeChunk(
    p: EachBatchPayload,
    chunk: KafkaMessage[],
    src: { topic: string; partition: number; tenantId: string | null },
    state: PartitionState,
  ): Promise<boolean> {
    // The Parquet sink holds too much already (this partition's files, or all partitions' together,
    // waiting for S3): pause before taking the chunk; it is fetched again on resume.
    if (!this.parquetBackpressure(p, src)) return false;
    const t0 = process.hrtime.bigint();
    let processed;
    try {
      processed = await retry(() => this.processor.processChunk(chunk, src), this.inBatchRetryPolicy(), {
        retriable: (e) => (e instanceof MillraceError ? e.retriable : isRetriablePgError(e)),
        signal: this.abort.signal,
        onRetry: (err) => this.log.warn({ err: (err as Error).message }, "preparing batch failed; retrying"),
      });
    } catch (err) {
      if (this.abort.signal.aborted) return false;
      this.backOff(p, src, state, err);
      return false;
    }
    const { rows, deadLetters, firstTimestamp, alarms } = processed;
    const scope = `${src.topic}/${src.partition}`;
    const first = Number(chunk[0]!.offset);
    const last = Number(chunk[chunk.length - 1]!.offset);
    if (last >= MAX_SAFE_OFFSET) throw new Error(`offset ${last} exceeds the safe integer range`);
    const expected = state.next ?? first;
    // A row the database refuses is dead-lettered with its original record (key, bytes, headers);
    // chunks are contiguous offsets, so the record is found by position.
    const recordAt = (offset: number): KafkaMessage => {
      const m = chunk[offset - first];
      return m !== undefined && Number(m.offset) === offset ? m : chunk.find((x) => Number(x.offset) === offset)!;
    };
    const deadLetterFor = (row: StoredReading, rej: Rejection): DeadLetterRow =>
      deadLetterOf(recordAt(row.offset), src, { ...rej, schemaId: schemaIdOf(recordAt(row.offset).value) });
    const firstParquetBatch = this.parquet !== undefined && src.tenantId !== null && this.parquet.committed(src.topic, src.partition) === undefined;
    let result;
    try {
      result = await retry(
        () =>
          state.store.writer.writeBatch({
            consumerGroup: this.plan.source.consumerGroup,
            topic: src.topic,
            partition: src.partition,
            tenantId: src.tenantId ?? "00000000-0000-0000-0000-000000000000",
            expectedOffset: expected,
            nextOffset: last + 1,
            rows,
            deadLetters,
            deadLetterFor,
            // Run in the batch's transaction (as CTEs of its one statement in the common case).
            statements: () => {
              const sts: BatchStatement[] = alarms && (alarms.states.length > 0 || alarms.events.length > 0) ? alarmChangeStatements(src.tenantId!, alarms) : [];
              // The partition's very first batch: the Parquet sink starts from the same offset,
              // recorded with it, so a crash before its first upload cannot skip these records.
              if (firstParquetBatch) {
                sts.push({
                  text: `INSERT INTO millrace.sink_offsets (sink, consumer_group, topic, partition, next_offset) VALUES ($1, $2, $3, $4, $5)
                   ON CONFLICT DO NOTHING`,
                  values: [PARQUET_SINK, this.plan.source.consumerGroup, src.topic, src.partition, expected],
                });
              }
              return sts;
            },
          }),
        this.inBatchRetryPolicy(),
        { retriable: isRetriablePgError, signal: this.abort.signal, onRetry: (err) => this.onDbRetry(err) },
      );
    } catch (err) {
      if (err instanceof FencedError) {
        this.metrics.fenced.inc({ topic: src.topic });
        this.log.warn({ topic: src.topic, partition: src.partition, err: err.message }, "batch fenced; another worker owns the partition");
        this.partitions.delete(this.key(src.topic, src.partition));
        this.progress.drop(src.topic, src.partition);
        this.thresholds?.forget(scope);
        const pq = this.parquet?.committed(src.topic, src.partition);
        this.parquet?.forget(src.topic, src.partition);
        this.rewind(src.topic, src.partition, pq === undefined ? expected : Math.min(pq, expected));
        return false;
      }
      // The alarm state in memory went ahead of what was stored: reload it with the next attempt.
      this.thresholds?.forget(scope);
      if (this.abort.signal.aborted) return false;
      this.dbOk = false;
      this.backOff(p, src, state, err);
      return false;
    }
    state.failures = 0;
    this.dbOk = true;
    if (this.parquet && src.tenantId) {
      if (this.parquet.committed(src.topic, src.partition) === undefined) await this.parquet.assign(src.topic, src.partition, src.tenantId, expected);
      const refused = new Set(result.rejected.map((r) => r.offset));
      this.parquet.append(src.topic, src.partition, refused.size > 0 ? rows.filter((r) => !refused.has(r.offset)) : rows, last, first);
    }
    if (alarms) {
      this.thresholds!.commit(alarms);
      if (alarms.events.length > 0) state.store.alerts?.trigger();
    }
    state.next = last + 1;
    this.progress.advance(src.topic, src.partition, state.next);
    p.resolveOffset(String(last));
    // Kafka's committed offset is only a hint (the database is authoritative): never fail on it.
    // Committed to Kafka only as far as both sinks hold the records.
    const pq = this.parquet?.committed(src.topic, src.partition);
    const kafkaNext = pq === undefined ? last + 1 : Math.min(last + 1, pq);
    await this.commitHint([{ topic: src.topic, partition: src.partition, offset: String(kafkaNext) }]);
    const tenant = src.tenantId ?? "unknown";
    const seconds = Number(process.hrtime.bigint() - t0) / 1e9;
    this.metrics.batchRows.observe({ sink: this.sinkPlan.id }, rows.length);
    this.metrics.batchDuration.observe({ sink: this.sinkPlan.id }, seconds);
    if (result.alreadyCommitted) {
      this.log.info({ topic: src.topic, partition: src.partition, first, last }, "batch already stored by an earlier attempt whose COMMIT reply was lost; not counted again");
    } else {
      this.metrics.records.inc({ tenant, outcome: "stored" }, result.inserted);
      this.metrics.records.inc({ tenant, outcome: "duplicate" }, result.duplicates);
      const dls = deadLetters.length + result.rejected.length;
      if (dls > 0) {
        this.metrics.records.inc({ tenant, outcome: "dead_lettered" }, dls);
        for (const d of deadLetters) this.metrics.deadLetters.inc({ tenant, reason: d.reason });
        for (const r of result.rejected) this.metrics.deadLetters.inc({ tenant, reason: r.reason });
        state.store.dlq.trigger();
      }
      if (firstTimestamp !== null) this.metrics.produceToCommit.observe({ tenant }, Math.max(0, Date.now() - firstTimestamp) / 1000);
    }
    return this.parquetBackpressure(p, src);
  }

  status(): WorkerStatus {
    return {
      instanceId: this.instanceId,
      joined: this.joined,
      crashed: this.crashed,
      dbOk: this.dbOk,
      assigned: this.progress.list(),
    };
  }

  /** Ready: joined the group, the database answers, and no partition with lag is stuck. */
  ready(): { ready: boolean; why: string[] } {
    const s = this.status();
    const why: string[] = [];
    if (!s.joined) why.push(s.crashed ? `consumer crashed: ${s.crashed}` : "not a member of the consumer group yet");
    if (!s.dbOk) why.push("database writes are failing (retrying)");
    for (const [k, msg] of this.storeWaits) {
      const [topic, partition] = k.split("\u0000");
      why.push(`${topic}[${partition}] waits for its tenant's database (retrying): ${msg}`);
    }
    for (const f of this.parquet?.failing() ?? []) why.push(`Parquet uploads for ${f.topic}[${f.partition}] are failing (retrying): ${f.error}`);
    const stall = this.stallAfterMs();
    for (const a of this.progress.stalled(stall)) why.push(`${a.topic}[${a.partition}] stalled at offset ${a.next} with lag ${a.lag} for ${Math.round(a.stalledMs / 1000)} s`);
    const unread = Date.now() - this.watermarksReadAt;
    if (s.joined && this.progress.size > 0 && unread > stall + this.plan.source.lagPollMs) {
      why.push(`high watermarks not read from Kafka for ${Math.round(unread / 1000)} s${this.watermarkError ? `: ${this.watermarkError}` : ""}`);
    }
    return { ready: why.length === 0, why };
  }

  private stallAfterMs(): number {
    return this.settings.stallAfterMs ?? this.plan.source.stallAfterMs;
  }

  /** Total lag over the assigned partitions (for the demo's "drained" check). */
  totalLag(): number {
    return this.progress.total();
  }

  /**
   * The lag poll (`source.lag_poll`): one ListOffsets request per topic with assigned partitions, so
   * lag and readiness move even when no batch arrives — a consumer that stopped fetching, a
   * partition paused for good. Sequential ticks: never more than one poll in flight.
   */
  private watchLag(): void {
    const tick = async () => {
      try {
        await this.pollWatermarks();
      } finally {
        if (!this.abort.signal.aborted && this.stopping === undefined) {
          this.lagTimer = setTimeout(() => void tick(), this.plan.source.lagPollMs);
          this.lagTimer.unref();
        }
      }
    };
    this.lagTimer = setTimeout(() => void tick(), this.plan.source.lagPollMs);
    this.lagTimer.unref();
  }

  private async pollWatermarks(): Promise<void> {
    const topics = this.progress.topics().filter((t) => this.subscribedTopics.has(t));
    let error: string | undefined;
    for (const topic of topics) {
      try {
        for (const o of await this.admin.fetchTopicOffsets(topic)) this.progress.observeHigh(topic, o.partition, Number(o.high), true);
      } catch (err) {
        error = `${topic}: ${(err as Error).message}`;
      }
    }
    if (error === undefined) this.watermarksReadAt = Date.now();
    else this.log.warn({ err: error }, "reading high watermarks failed (lag and readiness use the last ones read)");
    this.watermarkError = error;
  }

  /** Graceful stop: finish the chunk in flight, commit, publish outstanding dead letters, disconnect. */
  async stop(): Promise<void> {
    this.stopping ??= (async () => {
      if (this.topicTimer) clearTimeout(this.topicTimer);
      if (this.lagTimer) clearTimeout(this.lagTimer);
      // A run in flight against an unreachable database is not waited for beyond the bound.
      await bounded(this.partitionMaintenance.stop(), STOP_STEP_MS, () => this.log.warn({ ms: STOP_STEP_MS }, "a partition maintenance run was still going; shutting down anyway"));
      if (this.parquet) {
        // Stop taking new batches, let the one in flight finish, upload what the Parquet sink
        // holds, and commit Kafka offsets as far as both sinks got — while still a group member.
        this.draining = true;
        const assigned = [...this.partitions.keys()].map((k) => k.split("\u0000")[0]!);
        const pausable = [...new Set(assigned)].filter((t) => this.subscribedTopics.has(t));
        try {
          if (pausable.length > 0) this.consumer.pause(pausable.map((topic) => ({ topic })));
        } catch (err) {
          this.log.warn({ err: (err as Error).message }, "pausing at shutdown failed; waiting for the batches in flight anyway");
        }
        const deadline = Date.now() + 20_000;
        while (this.inflightBatches > 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
        await this.parquet.close(15_000);
        await this.commitKafkaHints();
      }
      // Bounded: a consumer caught in a rejoin waits at the coordinator for every member — also one
      // that died and whose session has not expired yet (up to session_timeout). Nothing depends on
      // it: what is stored is committed, and the group drops a member that never leaves.
      await bounded(this.consumer.stop(), STOP_STEP_MS, () => this.log.warn({ ms: STOP_STEP_MS }, "the consumer did not stop in time (a rebalance waiting for other members?); shutting down anyway"));
      this.abort.abort(new Error("worker stopping"));
      const stores = this.stores();
      await Promise.all(stores.map(async (st) => {
        await st.dlq.stop();
        await st.alerts?.stop();
        await st.alerts?.flush().catch((err: unknown) => this.log.warn({ err, store: st.name }, "alert flush at shutdown failed; they stay in the outbox"));
      }));
      this.webhookTargets?.stop();
      await this.webhooks?.stop();
      await Promise.all(
        stores.map((st) => st.dlq.flush().catch((err: unknown) => this.log.warn({ err, store: st.name }, "dead-letter flush at shutdown failed; they stay in the outbox"))),
      );
      // Give up the outboxes' lead (another replica takes it on its next turn) and their producers.
      await bounded(Promise.allSettled(stores.flatMap((st) => [st.dlq.close(), st.alerts?.close()])), STOP_STEP_MS, () => this.log.warn({ ms: STOP_STEP_MS }, "outbox relays did not close in time; shutting down anyway"));
      await bounded(Promise.allSettled([this.consumer.disconnect(), this.admin.disconnect()]), STOP_STEP_MS, () => this.log.warn({ ms: STOP_STEP_MS }, "Kafka clients did not disconnect in time; shutting down anyway"));
      await this.databases.end();
      await this.pool.end().catch(() => {});
    })();
    await this.stopping;
  }

  /** Kafka's committed offset per partition = as far as every sink holds the records (a hint for lag tools). */
  private async commitKafkaHints(): Promise<void> {
    const offsets = [];
    for (const [k, st] of this.partitions) {
      const [topic, part] = k.split("\u0000") as [string, string];
      const partition = Number(part);
      if (st.next === undefined) continue;
      const pq = this.parquet?.committed(topic, partition);
      offsets.push({ topic, partition, offset: String(pq === undefined ? st.next : Math.min(st.next, pq)) });
    }
    await this.commitHint(offsets);
  }

  /** For tests: the dead-letter publisher's drain (publish everything recorded so far). */
  async drainDeadLetters(): Promise<number> {
    let n = 0;
    for (const st of this.stores()) n += await st.dlq.drain();
    return n;
  }
}

/** The offsets tombstone of a tenant whose store moved away (migrations/009_moved_offsets.sql). */
const MOVED = -1;
/** How often a partition of a moving tenant looks again for the switch. */
const MOVE_WAIT_MS = 500;

/** Bound of the Kafka steps of a shutdown (consumer stop, disconnects), well inside the 25 s grace. */
const STOP_STEP_MS = 5_000;

/** Waits for `p` at most `ms` (then calls `onTimeout`); never rejects. */
async function bounded(p: Promise<unknown>, ms: number, onTimeout?: () => void): Promise<void> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<"timeout">((r) => {
    timer = setTimeout(() => r("timeout"), ms);
    timer.unref();
  });
  const outcome = await Promise.race([p.then(() => "done", () => "done"), timeout]);
  clearTimeout(timer);
  if (outcome === "timeout") onTimeout?.();
}
