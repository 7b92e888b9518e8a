/**
 * The loop both outbox publishers share (dead letters → dead-letter topics, alert events → alerts
 * topics): rows are written to a PostgreSQL outbox in the batch's transaction, and a pump drains
 * the outbox to Kafka — on a timer, and soon after a batch wrote something ({@link trigger}).
 * Triggers coalesce: at most one drain runs, and a trigger during it schedules exactly one more.
 * A failed drain is logged and retried on the next turn; rows stay in the outbox until published.
 */
export abstract class OutboxPump {
  private timer: NodeJS.Timeout | undefined;
  private running: Promise<number> | undefined;
  private again = false;
  protected stopped = false;
  /** Set when the last publish attempt failed (readiness, logs). */
  lastError: Error | undefined;

  protected constructor(private readonly pump: { intervalMs: number; maxBatch: number }) {}

  /** One claim → send → mark round of at most maxBatch rows; returns how many were published. */
  protected abstract publishOnce(): Promise<number>;

  /** A drain failed (it is retried on the next turn). */
  protected abstract onDrainError(err: unknown): void;

  start(): void {
    const tick = () => {
      if (this.stopped) return;
      this.trigger();
      this.timer = setTimeout(tick, this.pump.intervalMs);
      this.timer.unref();
    };
    tick();
  }

  /** Publish soon (after a batch wrote to the outbox). Coalesces concurrent triggers. */
  trigger(): void {
    if (this.running) {
      this.again = true;
      return;
    }
    this.running = this.drain()
      .catch((err: unknown) => {
        this.lastError = err as Error;
        this.onDrainError(err);
        return 0;
      })
      .finally(() => {
        this.running = undefined;
        if (this.again && !this.stopped) {
          this.again = false;
          this.trigger();
        }
      });
  }

  /** Publish until the outbox is empty (or another replica holds the turn); returns how many were published. */
  async drain(): Promise<number> {
    let total = 0;
    while (!this.stopped) {
      const n = await this.publishOnce();
      total += n;
      if (n < this.pump.maxBatch) break;
    }
    return total;
  }

  async stop(): Promise<void> {
    this.stopped = true;
    if (this.timer) clearTimeout(this.timer);
    await this.running;
  }

  /** Publish what is left (at shutdown), ignoring the stopped flag. */
  async flush(): Promise<void> {
    await this.running;
    while ((await this.publishOnce()) === this.pump.maxBatch);
  }
}
