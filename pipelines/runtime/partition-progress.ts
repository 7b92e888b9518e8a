/**
 * Lag and progress of the partitions assigned to this worker — what `/readyz` and
 * `millrace_consumer_lag_records` report.
 *
 * lag = high watermark − next offset to process (the database's stored next offset once known,
 * before that where the assignment positioned the partition). The high watermark comes from every
 * fetched batch and from the worker's periodic watermark poll (`source.lag_poll`), so a consumer
 * that stopped fetching still shows the records that arrived since; the next offset moves only when
 * a batch commits. A partition with lag whose next offset stands still is stalled; the clock starts
 * when work appears (an idle partition is never stalled).
 *
 * The gauge has exactly one series per partition this worker holds: a new assignment removes the
 * series of every partition not in it, and a revoked or fenced partition's series is removed at
 * once, so two replicas never both report one partition.
 */
import type { Gauge } from "prom-client";

export interface PartitionLag {
  topic: string;
  partition: number;
  /** Next offset to process; undefined until known (no stored offset and not positioned yet). */
  next: number | undefined;
  /** Highest high watermark seen in this assignment; undefined until the first fetch or poll. */
  high: number | undefined;
  /** high − next (0 while either is unknown). */
  lag: number;
  /** Since when a partition with lag has had no progress (0 without lag). */
  stalledMs: number;
}

interface Entry {
  topic: string;
  partition: number;
  next: number | undefined;
  high: number | undefined;
  lag: number;
  lastProgressAt: number;
}

export class PartitionProgress {
  private readonly entries = new Map<string, Entry>();

  constructor(
    private readonly gauge: Gauge<"topic" | "partition">,
    private readonly now: () => number = Date.now,
  ) {}

  private static key(topic: string, partition: number): string {
    return `${topic}\u0000${partition}`;
  }

  private entry(topic: string, partition: number): Entry {
    const k = PartitionProgress.key(topic, partition);
    let e = this.entries.get(k);
    if (!e) {
      e = { topic, partition, next: undefined, high: undefined, lag: 0, lastProgressAt: this.now() };
      this.entries.set(k, e);
    }
    return e;
  }

  private labels(e: { topic: string; partition: number }) {
    return { topic: e.topic, partition: String(e.partition) };
  }

  private recompute(e: Entry): void {
    if (e.next === undefined || e.high === undefined) return;
    const lag = Math.max(0, e.high - e.next);
    // The stall clock starts when there is work to do, not when the partition was last idle.
    if (e.lag === 0 && lag > 0) e.lastProgressAt = this.now();
    e.lag = lag;
    this.gauge.set(this.labels(e), lag);
  }

  /** A new assignment (group generation): exactly these partitions, each starting afresh. */
  assign(assignment: Readonly<Record<string, readonly number[]>>): void {
    this.dropAll();
    for (const [topic, parts] of Object.entries(assignment)) for (const p of parts) this.entry(topic, p);
  }

  /** The partition is not this worker's any more (fenced, revoked, its topic deleted). */
  drop(topic: string, partition: number): void {
    const k = PartitionProgress.key(topic, partition);
    const e = this.entries.get(k);
    if (!e) return;
    this.entries.delete(k);
    this.gauge.remove(this.labels(e));
  }

  /** Every partition revoked (an eager rebalance, a crashed consumer). */
  dropAll(): void {
    for (const e of this.entries.values()) this.gauge.remove(this.labels(e));
    this.entries.clear();
  }

  /** Where the partition's processing stands (positioned, loaded from the database, or a batch committed). */
  advance(topic: string, partition: number, next: number): void {
    const e = this.entry(topic, partition);
    if (e.next !== next) e.lastProgressAt = this.now();
    e.next = next;
    // A committed next offset is at most the high watermark: a watermark read before the commit is stale.
    if (e.high === undefined || e.high < next) e.high = next;
    this.recompute(e);
  }

  /**
   * A high watermark read from a fetch response or the poll. Kept monotonic within an assignment
   * (a poll answered after a newer fetch must not lower the lag). `onlyIfHeld`: ignore partitions
   * not held (the poll must not re-create a partition dropped meanwhile).
   */
  observeHigh(topic: string, partition: number, high: number, onlyIfHeld = false): void {
    if (onlyIfHeld && !this.entries.has(PartitionProgress.key(topic, partition))) return;
    const e = this.entry(topic, partition);
    if (e.high === undefined || high > e.high) e.high = high;
    this.recompute(e);
  }

  /** Topics with at least one held partition (what the watermark poll asks about). */
  topics(): string[] {
    return [...new Set([...this.entries.values()].map((e) => e.topic))].sort();
  }

  get size(): number {
    return this.entries.size;
  }

  list(): PartitionLag[] {
    const now = this.now();
    return [...this.entries.values()]
      .map((e) => ({ topic: e.topic, partition: e.partition, next: e.next, high: e.high, lag: e.lag, stalledMs: e.lag > 0 ? now - e.lastProgressAt : 0 }))
      .sort((a, b) => (a.topic === b.topic ? a.partition - b.partition : a.topic < b.topic ? -1 : 1));
  }

  /** Partitions with lag and no progress for longer than `ms`. */
  stalled(ms: number): PartitionLag[] {
    return this.list().filter((p) => p.stalledMs > ms);
  }

  total(): number {
    let n = 0;
    for (const e of this.entries.values()) n += e.lag;
    return n;
  }
}
