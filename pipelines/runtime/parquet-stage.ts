/**
 * The engine side of the s3_parquet sink: per (topic, partition) a roller fed with the rows the
 * database stored, files cut by the rolling policy, and for each file, in order:
 *   plan (boundaries in PostgreSQL) → encode → upload (verified) → mark uploaded + advance offset.
 *
 * Uploads run in the background, one file at a time per partition, each bucket through its own S3
 * client and connection pool (S3ClientCache), so one tenant's slow or failing bucket never holds up
 * other partitions' uploads to other buckets; a partition whose buffered + unuploaded bytes pass
 * `maxPendingBytes` is paused by the worker until it drains, and when those bytes over all
 * partitions pass `maxMemoryBytes` every partition that would add to them is paused until uploads
 * bring them back under 90% (memory bounded whatever the number of partitions; nothing is dropped:
 * a paused partition's records are fetched again on resume). A failing upload is retried with
 * backoff, never dropped. After a crash or rebalance the worker replays from this sink's stored
 * offset; a file that was planned but not marked is rebuilt with exactly its planned range, so the
 * same key gets the same bytes.
 */
import { CreateBucketCommand, DeleteObjectCommand, HeadBucketCommand, type S3Client } from "@aws-sdk/client-s3";
import type pg from "pg";
import { FencedError, MillraceError } from "../../lib/errors.ts";
import type { Logger } from "../../lib/log.ts";
import type { PipelineMetrics } from "../../lib/metrics.ts";
import {
  abortUploadsOfKey,
  advanceSinkOffset,
  ForeignGroupError,
  loadTenantStorage,
  locationObjectKey,
  markUploaded,
  ParquetEncodePool,
  ParquetRoller,
  parquetStorageConfig,
  PARQUET_SINK,
  plannedFiles,
  planFile,
  RepointedError,
  putObjectVerified,
  resolveParquetLocation,
  S3ClientCache,
  sha256,
  sinkOffset,
  type ManifestEntry,
  type ParquetLocation,
  type ParquetStorageConfig,
  type S3ClientCacheOptions,
  type TakenFile,
} from "../../sinks/s3-parquet/index.ts";
import type { StoredReading } from "../reading.ts";
import type { SinkPlan } from "../topology/plan.ts";

type ParquetPlan = Extract<SinkPlan, { type: "s3_parquet" }>;

interface PartitionStage {
  topic: string;
  partition: number;
  tenantId: string;
  /** The tenant's store as of the assignment (a moved tenant's old store fences this state). */
  store: pg.Pool;
  roller: ParquetRoller;
  /** The sink's stored next offset (everything below is in S3). */
  committed: number;
  /** Planned-but-not-uploaded manifest entries to rebuild exactly, ascending. */
  planned: ManifestEntry[];
  /** Files cut but not yet marked uploaded. */
  pendingBytes: number;
  queue: Promise<void>;
  generation: number;
  onDrained: Array<() => void>;
  /** The last upload failure of this partition, cleared by its next success. */
  lastError?: Error;
}

export class ParquetStage {
  private readonly parts = new Map<string, PartitionStage>();
  /** Partitions whose Parquet files belong to another consumer group (ForeignGroupError), with why; until one of their files is stored. */
  private readonly foreign = new Map<string, { topic: string; partition: number; error: string }>();
  private readonly s3: S3ClientCache;
  /** Parquet encoding in a worker thread, one file at a time. */
  private readonly encoder = new ParquetEncodePool();
  private readonly config: ParquetStorageConfig;
  private readonly locations = new Map<string, { loc: ParquetLocation; at: number }>();
  private generation = 0;
  private timer: NodeJS.Timeout | undefined;
  private closed = false;
  /** Partitions whose uploads are failing right now (readiness). */
  failing(): Array<{ topic: string; partition: number; error: string }> {
    const out = [...this.parts.values()].filter((p) => p.lastError).map((p) => ({ topic: p.topic, partition: p.partition, error: p.lastError!.message }));
    for (const [k, f] of this.foreign) if (!out.some((o) => this.key(o.topic, o.partition) === k)) out.push(f);
    return out;
  }

  constructor(
    private readonly plan: ParquetPlan,
    /** The control plane (tenants: where a tenant's files go). */
    private readonly pool: pg.Pool,
    /** The tenant's store (the manifest and the sink offsets): shared or its dedicated database. */
    private readonly storeOf: (tenantId: string) => pg.Pool,
    private readonly consumerGroup: string,
    private readonly log: Logger,
    private readonly metrics: PipelineMetrics,
    /**
     * Called when a partition's Parquet state is no longer trustworthy (fenced): reload and replay
     * it — from `committed`, the sink offset this state last knew, where given.
     */
    private readonly onLost: (topic: string, partition: number, committed?: number) => void,
    env: NodeJS.ProcessEnv = process.env,
    onS3Client?: (client: S3Client) => void,
    /** S3 client options (e.g. `maxSockets`, the connections per bucket). */
    s3Options: Omit<S3ClientCacheOptions, "onCreate"> = {},
  ) {
    this.config = parquetStorageConfig({ ...env, MILLRACE_S3_SHARED_BUCKET: env.MILLRACE_S3_SHARED_BUCKET || plan.sharedBucket, MILLRACE_S3_KEY_PREFIX: env.MILLRACE_S3_KEY_PREFIX ?? plan.keyPrefix });
    this.s3 = new S3ClientCache(env, { ...s3Options, ...(onS3Client ? { onCreate: (c: S3Client) => onS3Client(c) } : {}) });
  }

  private key(topic: string, partition: number): string {
    return `${topic}\u0000${partition}`;
  }

  /** Create the shared bucket if it is missing (dedicated buckets are made by tenant provisioning). */
  /** Resolved once the shared bucket is known to exist; cleared after a failure so the next upload asks again. */
  private sharedBucket: Promise<void> | undefined;

  private ensureSharedBucket(): Promise<void> {
    this.sharedBucket ??= (async () => {
      const s3 = this.s3.clientFor(this.config.platform, this.config.sharedBucket);
      try {
        await s3.send(new HeadBucketCommand({ Bucket: this.config.sharedBucket }));
        return;
      } catch (err) {
        const status = (err as { $metadata?: { httpStatusCode?: number } }).$metadata?.httpStatusCode;
        if (status !== 404 && (err as Error).name !== "NotFound") throw err; // S3 unreachable: not "missing"
      }
      this.log.warn({ bucket: this.config.sharedBucket }, "shared Parquet bucket missing; creating it");
      await s3.send(new CreateBucketCommand({ Bucket: this.config.sharedBucket })).catch((err: unknown) => {
        if ((err as { name?: string }).name !== "BucketAlreadyOwnedByYou") throw err;
      });
    })().catch((err: unknown) => {
      this.sharedBucket = undefined;
      throw err;
    });
    return this.sharedBucket;
  }

  /**
   * Checks (or creates) the shared bucket, but never fails the worker's start on it: with S3
   * unreachable at start the database keeps being written, uploads retry with backoff (and check
   * the bucket again first), and readiness reports the failing uploads.
   */
  async start(): Promise<void> {
    await this.ensureSharedBucket().catch((err: unknown) =>
      this.log.warn({ bucket: this.config.sharedBucket, err: (err as Error).message }, "could not check the shared Parquet bucket at start (S3 unreachable?); uploads will retry"),
    );
    this.timer = setInterval(() => this.tick(), Math.max(100, Math.min(1000, Math.floor(this.plan.idleFlushMs / 4))));
    this.timer.unref();
  }

  /** Load a partition's state after (re)assignment; returns the sink's stored next offset. */
  async assign(topic: string, partition: number, tenantId: string, fallbackStart: number | undefined): Promise<number | undefined> {
    const store = this.storeOf(tenantId);
    // Where the tenant's files go is read afresh at every assignment (it may have moved).
    this.locations.delete(tenantId);
    const stored = await sinkOffset(store, PARQUET_SINK, this.consumerGroup, topic, partition);
    const start = stored ?? fallbackStart;
    const k = this.key(topic, partition);
    if (start === undefined) {
      this.parts.delete(k);
      return undefined;
    }
    const planned = (await plannedFiles(store, this.consumerGroup, topic, partition)).filter((e) => e.firstOffset >= start).sort((a, b) => a.firstOffset - b.firstOffset);
    this.parts.set(k, {
      topic,
      partition,
      tenantId,
      store,
      roller: this.newRoller(start),
      committed: start,
      planned,
      pendingBytes: 0,
      queue: Promise.resolve(),
      generation: this.generation,
      onDrained: [],
    });
    return stored;
  }

  private newRoller(startOffset: number): ParquetRoller {
    return new ParquetRoller({ maxRows: this.plan.maxRows, maxBytes: this.plan.maxBytes, maxSpanMs: this.plan.maxSpanMs, idleMs: this.plan.idleFlushMs }, { startOffset });
  }

  /** The sink's stored next offset, if the partition is known. */
  committed(topic: string, partition: number): number | undefined {
    return this.parts.get(this.key(topic, partition))?.committed;
  }

  /** Where the roller expects the next appended chunk to start (last consumed + 1). */
  nextToAppend(topic: string, partition: number): number | undefined {
    const p = this.parts.get(this.key(topic, partition));
    return p ? (p.roller.nextOffset ?? p.committed) : undefined;
  }

  /**
   * Rows the database stored for the records `firstOffset`..`lastOffset` (dead-lettered offsets
   * simply absent). A chunk starting after the offset the roller expects next would leave a hole
   * in the file being built (seen: a batch fetched before a seek back, delivered after it): the
   * partition's Parquet state is dropped instead (onLost), so it is reloaded and replayed from the
   * stored offset.
   */
  append(topic: string, partition: number, rows: readonly StoredReading[], lastOffset: number, firstOffset?: number): void {
    const p = this.parts.get(this.key(topic, partition));
    if (!p) return;
    const from = p.roller.nextOffset ?? p.committed;
    if (lastOffset < from) return; // already covered
    if (firstOffset !== undefined && firstOffset > from) {
      // Never accepted, not even when the records are gone from the log (retention): a partition
      // whose Parquet sink is behind the log start keeps reloading (logged) until an operator acts.
      this.log.warn({ topic, partition, expected: from, got: firstOffset }, "records would be missing from the Parquet file being built; reloading the partition's Parquet state");
      this.forget(topic, partition);
      this.onLost(topic, partition);
      return;
    }
    const fresh = rows.filter((r) => r.offset >= from);
    p.roller.append(fresh, { lastOffset, nowMs: Date.now() });
    this.cut(p);
    this.enforceBudget();
  }

  /**
   * Memory bound of the whole stage: when the rows buffered over all partitions pass
   * `max_buffered_bytes`, the largest buffers are cut into files now (as if they had reached
   * max_bytes), so what the worker holds is bounded by configuration whatever the number of
   * partitions or the input volume. A buffer waiting for a planned range to be rebuilt is left.
   */
  private enforceBudget(): void {
    const budget = this.plan.maxBufferedBytes;
    let total = 0;
    for (const p of this.parts.values()) total += p.roller.byteCount;
    while (total > budget) {
      let big: PartitionStage | undefined;
      for (const p of this.parts.values()) if (big === undefined || p.roller.byteCount > big.roller.byteCount) big = p;
      if (big === undefined) return;
      const before = big.roller.byteCount;
      this.cut(big, true);
      const after = big.roller.byteCount;
      if (after >= before) return;
      total -= before - after;
    }
  }

  /** Rows buffered plus files cut but not yet uploaded, over all partitions (estimated bytes). */
  heldBytes(): number {
    let total = 0;
    for (const p of this.parts.values()) total += p.pendingBytes + p.roller.byteCount;
    return total;
  }

  /**
   * A partition rebuilding a planned range must go on consuming until the range is complete (only
   * then can it be cut and uploaded); what it holds is bounded by that range, so the stage-wide
   * bound does not pause it (pausing it could leave it waiting for itself).
   */
  private rebuilding(p: PartitionStage): boolean {
    const next = p.planned[0];
    return next !== undefined && p.roller.pendingFirstOffset === next.firstOffset;
  }

  /**
   * The worker pauses the partition (before and after each chunk) when its own buffered plus
   * unuploaded bytes pass `maxPendingBytes`, or those of all partitions pass `maxMemoryBytes`.
   */
  overLimit(topic: string, partition: number): boolean {
    const p = this.parts.get(this.key(topic, partition));
    if (p === undefined) return false;
    if (p.pendingBytes + p.roller.byteCount > this.plan.maxPendingBytes) return true;
    return !this.rebuilding(p) && this.heldBytes() > this.plan.maxMemoryBytes;
  }

  /** Call `fn` once the partition is back under half its limit and the stage under 90% of its bound. */
  whenDrained(topic: string, partition: number, fn: () => void): void {
    const p = this.parts.get(this.key(topic, partition));
    if (!p) return fn();
    p.onDrained.push(fn);
    this.releaseDrained();
  }

  /** Resume the paused partitions that may go on (after an upload freed memory, or a partition was dropped). */
  private releaseDrained(): void {
    const stageOk = this.heldBytes() <= this.plan.maxMemoryBytes * 0.9;
    for (const p of this.parts.values()) {
      if (p.onDrained.length === 0) continue;
      if (p.pendingBytes + p.roller.byteCount > this.plan.maxPendingBytes / 2) continue;
      if (!stageOk && !this.rebuilding(p)) continue;
      for (const fn of p.onDrained.splice(0)) fn();
    }
  }

  forget(topic: string, partition: number): void {
    const p = this.parts.get(this.key(topic, partition));
    if (p) p.generation = -1;
    this.parts.delete(this.key(topic, partition));
    for (const fn of p?.onDrained ?? []) fn();
    this.releaseDrained();
  }

  forgetAll(): void {
    this.generation++;
    this.foreign.clear();
    for (const p of this.parts.values()) {
      p.generation = -1;
      for (const fn of p.onDrained) fn();
    }
    this.parts.clear();
  }

  /** Cut every file the policy (or a planned range being rebuilt) asks for and queue its upload. */
  private cut(p: PartitionStage, force = false): void {
    for (;;) {
      let file: TakenFile | undefined;
      let plannedEntry: ManifestEntry | undefined;
      const next = p.planned[0];
      if (next && p.roller.pendingFirstOffset === next.firstOffset) {
        file = p.roller.takeThrough(next.lastOffset);
        if (!file) return; // wait until the planned range is consumed
        plannedEntry = p.planned.shift();
      } else if (force ? p.roller.rowCount > 0 : p.roller.shouldRoll(Date.now()) !== false) {
        file = p.roller.take();
      }
      if (!file) return;
      this.enqueue(p, file, plannedEntry);
    }
  }

  private enqueue(p: PartitionStage, file: TakenFile, plannedEntry: ManifestEntry | undefined): void {
    p.pendingBytes += file.bytes;
    const gen = p.generation;
    p.queue = p.queue.then(() => this.upload(p, file, plannedEntry, gen));
  }

  private async locationFor(tenantId: string): Promise<ParquetLocation> {
    const cached = this.locations.get(tenantId);
    if (cached && Date.now() - cached.at < 5000) return cached.loc;
    const storage = await loadTenantStorage(this.pool, tenantId);
    if (!storage) throw new MillraceError(`tenant ${tenantId} is not registered`, { retriable: true, stage: "sink", reason: "unknown_tenant" });
    const loc = resolveParquetLocation(storage, this.config, process.env);
    this.locations.set(tenantId, { loc, at: Date.now() });
    return loc;
  }

  /** Plan, encode, upload, mark — retried with backoff until done, fenced, or forgotten. */
  private async upload(p: PartitionStage, file: TakenFile, plannedEntry: ManifestEntry | undefined, gen: number): Promise<void> {
    const r = this.plan.retry;
    for (let attempt = 1; ; attempt++) {
      if (p.generation !== gen || this.closedHard) return;
      let uploaded: { bucket: string; key: string; client: S3Client } | undefined;
      try {
        const t0 = process.hrtime.bigint();
        const loc = await this.locationFor(p.tenantId);
        if (loc.mode === "shared") await this.ensureSharedBucket();
        const firstTime = file.rows.length > 0 ? file.rows.reduce((m, x) => Math.min(m, x.time), Infinity) : 0;
        // Encoded in a worker thread (encode-pool.ts): the worker's main thread goes on ingesting.
        const body = await this.encoder.encode(file.rows, { rowGroupRows: this.plan.rowGroupRows });
        let entry = plannedEntry;
        // A range planned before (by an earlier owner, or by this one's failed attempt) may have
        // left an incomplete multipart upload of its key: abort it before uploading again.
        let rebuilt = plannedEntry !== undefined || attempt > 1;
        if (!entry) {
          const key = locationObjectKey(loc, { topic: p.topic, partition: p.partition, firstOffset: file.firstOffset, lastOffset: file.lastOffset, firstTime });
          let created: boolean;
          ({ entry, created } = await planFile(p.store, {
            consumerGroup: this.consumerGroup,
            topic: p.topic,
            partition: p.partition,
            firstOffset: file.firstOffset,
            lastOffset: file.lastOffset,
            tenantId: p.tenantId,
            bucket: loc.bucket,
            objectKey: key,
            storageMode: loc.mode,
            rowCount: file.rows.length,
            minTime: file.rows.length > 0 ? file.minTime : 0,
            maxTime: file.rows.length > 0 ? file.maxTime : 0,
          }));
          rebuilt ||= !created;
          if (entry.lastOffset !== file.lastOffset) {
            // A replay met a range planned by an earlier owner with other boundaries: rebuild that one.
            throw new FencedError(`${p.topic}[${p.partition}]: a file planned at ${entry.firstOffset} ends at ${entry.lastOffset}, not ${file.lastOffset}`);
          }
        }
        // Never overwrite an object with other contents: a range rebuilt from a roller that does
        // not hold exactly the planned rows, or bytes that differ from an upload already recorded,
        // means this worker's view of the partition is stale — reload it instead of uploading.
        if (file.rows.length !== entry.rowCount) {
          throw new FencedError(`${p.topic}[${p.partition}] ${entry.firstOffset}-${entry.lastOffset}: planned with ${entry.rowCount} rows, rebuilt with ${file.rows.length}; not uploading`);
        }
        if (entry.sha256 !== null && entry.sha256 !== sha256(body).hex) {
          throw new FencedError(`${p.topic}[${p.partition}] ${entry.firstOffset}-${entry.lastOffset}: already uploaded as sha256 ${entry.sha256}, rebuilt with other bytes; not overwriting it`);
        }
        const s3 = this.s3.clientForLocation(loc);
        if (rebuilt) {
          const aborted = await abortUploadsOfKey(s3, entry.bucket, entry.objectKey);
          if (aborted.length > 0) this.log.warn({ topic: p.topic, partition: p.partition, key: entry.objectKey, uploadIds: aborted }, "aborted incomplete multipart uploads left by an earlier attempt at this file");
        }
        const res = await putObjectVerified(s3, { bucket: entry.bucket, key: entry.objectKey, body, kmsKeyId: loc.kmsKeyId }, { multipartThreshold: this.plan.multipartThreshold });
        uploaded = { bucket: entry.bucket, key: entry.objectKey, client: s3 };
        const mark = await markUploaded(p.store, {
          consumerGroup: this.consumerGroup,
          topic: p.topic,
          partition: p.partition,
          firstOffset: file.firstOffset,
          lastOffset: file.lastOffset,
          byteSize: res.bytes,
          sha256: res.sha256,
          expectedOffset: p.committed,
          bucket: entry.bucket,
          objectKey: entry.objectKey,
        });
        p.committed = mark.nextOffset;
        p.pendingBytes -= file.bytes;
        p.lastError = undefined;
        this.foreign.delete(this.key(p.topic, p.partition));
        this.metrics.batchRows.observe({ sink: this.plan.id }, file.rows.length);
        this.metrics.batchDuration.observe({ sink: this.plan.id }, Number(process.hrtime.bigint() - t0) / 1e9);
        this.releaseDrained();
        return;
      } catch (err) {
        if (err instanceof RepointedError && uploaded) {
          // The tenant's files moved while this one was uploaded to the old place: that object is
          // in no manifest; remove it (the file is rebuilt in the new place after the reload).
          const { bucket, key, client } = uploaded;
          await client.send(new DeleteObjectCommand({ Bucket: bucket, Key: key })).catch((e: unknown) => this.log.warn({ bucket, key, err: (e as Error).message }, "could not delete an object left in the tenant's old place"));
        }
        if (err instanceof ForeignGroupError) {
          // Not a race: this group cannot continue another group's files. Said once per partition
          // (it repeats on every reload), and shown by /readyz until a file is stored.
          if (!this.foreign.has(this.key(p.topic, p.partition))) this.log.error({ topic: p.topic, partition: p.partition, owner: err.ownerGroup }, err.message);
          this.foreign.set(this.key(p.topic, p.partition), { topic: p.topic, partition: p.partition, error: err.message });
        } else if (err instanceof FencedError) {
          this.log.warn({ topic: p.topic, partition: p.partition, err: err.message }, "Parquet file fenced; another worker owns the partition");
        }
        if (err instanceof FencedError) {
          this.metrics.fenced.inc({ topic: p.topic });
          if (p.generation === gen) {
            this.forget(p.topic, p.partition);
            this.onLost(p.topic, p.partition, p.committed);
          }
          return;
        }
        p.lastError = err as Error;
        this.metrics.sinkRetries.inc({ sink: this.plan.id });
        const delay = Math.min(r.maxDelayMs, r.initialDelayMs * r.factor ** Math.min(attempt, 30));
        this.log.warn({ topic: p.topic, partition: p.partition, attempt, delayMs: delay, err: (err as Error).message }, "Parquet upload failed; retrying");
        await new Promise((res) => setTimeout(res, delay).unref());
      }
    }
  }

  /** Idle flushes, and moving the offset over stretches that produced no rows (all dead letters). */
  private tick(): void {
    for (const p of this.parts.values()) {
      this.cut(p);
      const next = p.roller.nextOffset;
      if (p.roller.rowCount === 0 && p.pendingBytes === 0 && p.planned.length === 0 && next !== undefined && next > p.committed) {
        const expected = p.committed;
        const gen = p.generation;
        p.queue = p.queue.then(async () => {
          if (p.generation !== gen || p.committed !== expected || p.roller.rowCount > 0 || p.roller.nextOffset !== next) return;
          try {
            await advanceSinkOffset(p.store, { consumerGroup: this.consumerGroup, topic: p.topic, partition: p.partition, expectedOffset: expected, nextOffset: next });
            p.committed = next;
            // The next file starts after the stretch (the roller is empty, so nothing is lost).
            if (p.roller.rowCount === 0 && p.roller.nextOffset === next) p.roller = this.newRoller(next);
          } catch (err) {
            if (err instanceof FencedError && p.generation === gen) {
              this.forget(p.topic, p.partition);
              this.onLost(p.topic, p.partition, p.committed);
            }
          }
        });
      }
    }
  }

  private closedHard = false;

  /** Shutdown: cut what is buffered, upload it (bounded by `timeoutMs`), stop. */
  async close(timeoutMs: number): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    if (this.timer) clearInterval(this.timer);
    for (const p of this.parts.values()) this.cut(p, true);
    const all = Promise.all([...this.parts.values()].map((p) => p.queue));
    const timeout = new Promise<void>((res) => setTimeout(res, timeoutMs).unref());
    await Promise.race([all, timeout]);
    this.closedHard = true;
    this.s3.destroy();
    await this.encoder.close();
  }
}
