/**
 * The worker's periodic partition maintenance (sinks.timescale.partition_maintenance, default 1h):
 * every interval, the maintenance step (migrations/partitions.ts) on each database the worker
 * writes to — the shared one and the dedicated databases it has used — so the partitions ahead of
 * now never run out while workers run, whether or not anyone runs `millrace migrate` or a cron job.
 *
 * A failure (database down, a dedicated database unreachable) is logged and counted, never thrown:
 * the next tick tries again, and the writer still creates a missing day's partition on demand
 * before a batch. The timer is unref'd (it never keeps the process alive) and runs are never
 * concurrent: the next one is scheduled when the previous one has finished. {@link stop} cancels
 * the timer and waits for a run in flight.
 */
import type pg from "pg";
import client from "prom-client";
import type { Logger } from "../../lib/log.ts";
import { maintainPartitions } from "../../migrations/partitions.ts";

export interface MaintenanceTarget {
  /** "shared", or the dedicated database (for logs). */
  name: string;
  pool: pg.Pool;
}

export interface MaintenanceOutcome {
  store: string;
  created?: string[];
  error?: string;
}

export class PartitionMaintenanceMetrics {
  readonly runs: client.Counter<"outcome">;
  readonly created: client.Counter;

  constructor(registry: client.Registry) {
    const r = [registry];
    this.runs = new client.Counter({ name: "millrace_partition_maintenance_runs_total", help: "Partition maintenance runs per database, by outcome (ok, failed)", labelNames: ["outcome"], registers: r });
    this.created = new client.Counter({ name: "millrace_partitions_created_total", help: "Daily partitions of sensor_data_raw created by the worker's maintenance", registers: r });
  }
}

export interface PartitionMaintenanceOptions {
  everyMs: number;
  /** The databases to maintain, read at every run (dedicated stores appear as the worker uses them). */
  targets: () => readonly MaintenanceTarget[];
  log: Logger;
  metrics?: PartitionMaintenanceMetrics;
  /** The step itself (tests replace it); default {@link maintainPartitions}. */
  maintain?: (pool: pg.Pool) => Promise<string[]>;
}

export class PartitionMaintenance {
  private timer: NodeJS.Timeout | undefined;
  private running: Promise<unknown> | undefined;
  private stopped = false;
  private readonly maintain: (pool: pg.Pool) => Promise<string[]>;

  constructor(private readonly opts: PartitionMaintenanceOptions) {
    if (!Number.isFinite(opts.everyMs) || opts.everyMs <= 0) throw new Error(`partition maintenance interval must be positive (got ${opts.everyMs})`);
    this.maintain = opts.maintain ?? ((pool) => maintainPartitions(pool));
  }

  /** Schedules the first run one interval from now (the worker runs the step itself at start). */
  start(): void {
    if (this.stopped || this.timer) return;
    this.schedule();
  }

  /** Whether a next run is scheduled, and whether it would keep the process alive. */
  get scheduled(): { pending: boolean; keepsProcessAlive: boolean } {
    return { pending: this.timer !== undefined, keepsProcessAlive: this.timer?.hasRef() ?? false };
  }

  /** One run over every target; never rejects. */
  async runOnce(): Promise<MaintenanceOutcome[]> {
    const out: MaintenanceOutcome[] = [];
    for (const t of this.opts.targets()) {
      try {
        const created = await this.maintain(t.pool);
        this.opts.metrics?.runs.inc({ outcome: "ok" });
        if (created.length > 0) {
          this.opts.metrics?.created.inc(created.length);
          this.opts.log.info({ store: t.name, created }, `partition maintenance created ${created.length} time partitions`);
        } else {
          this.opts.log.debug({ store: t.name }, "partition maintenance: nothing to create");
        }
        out.push({ store: t.name, created });
      } catch (err) {
        const error = (err as Error).message ?? String(err);
        this.opts.metrics?.runs.inc({ outcome: "failed" });
        this.opts.log.warn({ store: t.name, err: error, retryInMs: this.opts.everyMs }, "partition maintenance failed; trying again at the next interval");
        out.push({ store: t.name, error });
      }
    }
    return out;
  }

  /** Cancels the timer and waits for a run in flight. */
  async stop(): Promise<void> {
    this.stopped = true;
    if (this.timer) clearTimeout(this.timer);
    this.timer = undefined;
    await this.running;
  }

  private schedule(): void {
    this.timer = setTimeout(() => {
      this.timer = undefined;
      const run = this.runOnce().finally(() => {
        this.running = undefined;
        if (!this.stopped) this.schedule();
      });
      this.running = run;
    }, this.opts.everyMs);
    this.timer.unref();
  }
}
