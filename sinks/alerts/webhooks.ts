/**
 * Optional per-tenant webhooks for alert events (millrace.tenant_webhooks: url, min_severity,
 * enabled, and secret_env — the name of an environment variable holding the signing secret).
 *
 * Fire-and-forget from the alert publisher, after the events are on Kafka and marked published:
 * {@link WebhookNotifier.notify} is synchronous and O(1) per event, so a slow or failing endpoint
 * can never slow ingestion or publishing. Delivery runs on a p-queue with bounded concurrency;
 * each attempt has a timeout; 5xx, 408, 429 and network errors are retried with exponential
 * backoff (the retry waits on a timer, not in a delivery slot, so one failing tenant does not hold
 * the others up); other 4xx fail at once.
 *
 * Bounded, best effort: at most `maxQueued` deliveries wait (queued or backing off); when full, the
 * oldest waiting one is dropped and counted. Deliveries live in memory only — a worker restart
 * loses what was waiting (the events themselves are on the alerts topic, exactly once in the alerts
 * table); a consumer needing every event reads the topic. Every outcome is in the metrics.
 *
 * Request: POST, JSON body = the AlertEvent (as on the topic), headers `content-type:
 * application/json`, `x-millrace-event-id: {alert_id}/{seq}` (de-duplicate on it: a retry after a
 * lost response delivers twice), and with a secret `x-millrace-signature: sha256=<hex HMAC-SHA256
 * of the body>`.
 */
import { createHmac } from "node:crypto";
import PQueue from "p-queue";
import type pg from "pg";
import client from "prom-client";
import type { Logger } from "../../lib/log.ts";
import { severityRank, type Severity } from "../../pipelines/processors/threshold-rules.ts";
import type { AlertEvent } from "../../schemas/generated.ts";

export interface WebhookTarget {
  url: string;
  /** HMAC-SHA256 key for x-millrace-signature; undefined = unsigned. */
  secret?: string;
  minSeverity: Severity;
}

/** Synchronous lookup of a tenant's webhook (undefined = none). */
export interface WebhookTargets {
  get(tenantId: string): WebhookTarget | undefined;
}

export class WebhookMetrics {
  readonly deliveries: client.Counter<"tenant" | "outcome">;
  readonly attempts: client.Counter<"tenant" | "result">;
  readonly waiting: client.Gauge;
  readonly duration: client.Histogram<"tenant">;

  constructor(registry: client.Registry) {
    const registers = [registry];
    this.deliveries = new client.Counter({ name: "millrace_webhook_deliveries_total", help: "Webhook deliveries by final outcome: delivered, failed (gave up or permanent error), dropped (queue full)", labelNames: ["tenant", "outcome"], registers });
    this.attempts = new client.Counter({ name: "millrace_webhook_attempts_total", help: "Webhook HTTP attempts by result: ok, retriable_error, permanent_error", labelNames: ["tenant", "result"], registers });
    this.waiting = new client.Gauge({ name: "millrace_webhook_waiting", help: "Webhook deliveries queued or backing off", registers });
    this.duration = new client.Histogram({ name: "millrace_webhook_request_duration_seconds", help: "Webhook request duration", labelNames: ["tenant"], buckets: [0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10], registers });
  }
}

export interface WebhookNotifierOptions {
  targets: WebhookTargets;
  /** Requests in flight at once, over all tenants. Default 4. */
  concurrency?: number;
  /** Deliveries waiting (queued or backing off) before the oldest is dropped. Default 1000. */
  maxQueued?: number;
  /** Attempts per delivery (first included). Default 6. */
  maxAttempts?: number;
  initialDelayMs?: number;
  maxDelayMs?: number;
  /** Per-request timeout. Default 5000 ms. */
  timeoutMs?: number;
  fetch?: typeof fetch;
  metrics?: WebhookMetrics;
  log?: Logger;
}

interface Delivery {
  tenantId: string;
  target: WebhookTarget;
  eventId: string;
  body: string;
  attempt: number;
}

export class WebhookNotifier {
  private readonly queue: PQueue;
  /** Waiting for a delivery slot, oldest first. */
  private readonly ready: Delivery[] = [];
  /** Backing off before a retry. */
  private readonly delayed = new Map<NodeJS.Timeout, Delivery>();
  private stopped = false;
  private readonly fetchFn: typeof fetch;

  constructor(private readonly o: WebhookNotifierOptions) {
    this.queue = new PQueue({ concurrency: o.concurrency ?? 4 });
    this.fetchFn = o.fetch ?? fetch;
  }

  private get waitingCount(): number {
    return this.ready.length + this.delayed.size;
  }

  /** Hand over published events. Never throws, never waits. */
  notify(events: readonly AlertEvent[]): void {
    if (this.stopped) return;
    for (const e of events) {
      const target = this.o.targets.get(e.tenant_id);
      if (!target || severityRank(e.severity) < severityRank(target.minSeverity)) continue;
      this.enqueue({ tenantId: e.tenant_id, target, eventId: e.event_id, body: JSON.stringify(e), attempt: 0 });
    }
  }

  private enqueue(d: Delivery): void {
    const max = this.o.maxQueued ?? 1000;
    while (this.waitingCount >= max && this.ready.length > 0) {
      const dropped = this.ready.shift()!;
      this.o.metrics?.deliveries.inc({ tenant: dropped.tenantId, outcome: "dropped" });
      this.o.log?.warn({ tenant: dropped.tenantId, event: dropped.eventId }, "webhook queue full: dropped the oldest delivery");
    }
    if (this.waitingCount >= max) {
      this.o.metrics?.deliveries.inc({ tenant: d.tenantId, outcome: "dropped" });
      return;
    }
    this.ready.push(d);
    this.o.metrics?.waiting.set(this.waitingCount);
    void this.queue.add(() => this.deliverNext());
  }

  private async deliverNext(): Promise<void> {
    const d = this.ready.shift();
    this.o.metrics?.waiting.set(this.waitingCount);
    if (d === undefined || this.stopped) return; // dropped meanwhile
    d.attempt++;
    const m = this.o.metrics;
    const end = m?.duration.startTimer({ tenant: d.tenantId });
    let retriable: boolean;
    let why: string;
    try {
      const headers: Record<string, string> = { "content-type": "application/json", "x-millrace-event-id": d.eventId };
      if (d.target.secret) headers["x-millrace-signature"] = `sha256=${createHmac("sha256", d.target.secret).update(d.body).digest("hex")}`;
      const res = await this.fetchFn(d.target.url, { method: "POST", headers, body: d.body, signal: AbortSignal.timeout(this.o.timeoutMs ?? 5_000) });
      await res.arrayBuffer().catch(() => undefined);
      end?.();
      if (res.ok) {
        m?.attempts.inc({ tenant: d.tenantId, result: "ok" });
        m?.deliveries.inc({ tenant: d.tenantId, outcome: "delivered" });
        return;
      }
      retriable = res.status >= 500 || res.status === 408 || res.status === 429;
      why = `HTTP ${res.status}`;
    } catch (err) {
      end?.();
      retriable = true;
      why = (err as Error).message;
    }
    m?.attempts.inc({ tenant: d.tenantId, result: retriable ? "retriable_error" : "permanent_error" });
    if (!retriable || d.attempt >= (this.o.maxAttempts ?? 6) || this.stopped) {
      m?.deliveries.inc({ tenant: d.tenantId, outcome: "failed" });
      this.o.log?.warn({ tenant: d.tenantId, event: d.eventId, attempts: d.attempt, why }, "webhook delivery failed");
      return;
    }
    const base = this.o.initialDelayMs ?? 500;
    const delay = Math.min(this.o.maxDelayMs ?? 30_000, base * 2 ** (d.attempt - 1)) * (0.5 + Math.random() / 2);
    const timer = setTimeout(() => {
      this.delayed.delete(timer);
      if (this.stopped) return;
      this.ready.push(d);
      void this.queue.add(() => this.deliverNext());
    }, delay);
    timer.unref();
    this.delayed.set(timer, d);
    this.o.metrics?.waiting.set(this.waitingCount);
  }

  /** Deliveries queued, backing off or in flight (tests, status). */
  get outstanding(): number {
    return this.waitingCount + this.queue.pending;
  }

  /** Stop: no new deliveries or retries; waits (bounded) for requests in flight. */
  async stop(timeoutMs = 5_000): Promise<void> {
    this.stopped = true;
    for (const t of this.delayed.keys()) clearTimeout(t);
    this.delayed.clear();
    this.ready.length = 0;
    this.queue.clear();
    await Promise.race([this.queue.onIdle(), new Promise((r) => setTimeout(r, timeoutMs).unref())]);
  }
}

/**
 * Tenants' webhooks from millrace.tenant_webhooks, re-read every `refreshMs` in the background
 * (lookups are synchronous). Secrets are resolved through `secretOf(envName)`, never stored.
 */
export class PgWebhookTargets implements WebhookTargets {
  private targets = new Map<string, WebhookTarget>();
  private timer: NodeJS.Timeout | undefined;
  private stopped = false;

  constructor(
    private readonly o: { pool: pg.Pool; refreshMs: number; secretOf: (name: string) => string | undefined; log?: Logger },
  ) {}

  get(tenantId: string): WebhookTarget | undefined {
    return this.targets.get(tenantId);
  }

  async refresh(): Promise<void> {
    const res = await this.o.pool.query<{ tenant_id: string; url: string; secret_env: string | null; min_severity: Severity }>(
      "SELECT tenant_id, url, secret_env, min_severity FROM millrace.tenant_webhooks WHERE enabled",
    );
    const next = new Map<string, WebhookTarget>();
    for (const r of res.rows) {
      const secret = r.secret_env ? this.o.secretOf(r.secret_env) : undefined;
      if (r.secret_env && secret === undefined) this.o.log?.warn({ tenant: r.tenant_id, env: r.secret_env }, "webhook secret variable is not set; sending unsigned");
      next.set(r.tenant_id, { url: r.url, secret, minSeverity: r.min_severity });
    }
    this.targets = next;
  }

  /**
   * Loads the targets once and resolves when that first load has finished (or failed, logged), then
   * refreshes every `refreshMs` in the background. Awaited before consuming starts, so an event
   * published right after start-up (a clearing replayed after a crash) finds its tenant's webhook.
   */
  start(): Promise<void> {
    const tick = (): Promise<void> =>
      this.refresh()
        .catch((err: unknown) => this.o.log?.warn({ err }, "webhook targets refresh failed; keeping the last ones"))
        .finally(() => {
          if (this.stopped) return;
          this.timer = setTimeout(() => void tick(), this.o.refreshMs);
          this.timer.unref();
        });
    return tick();
  }

  stop(): void {
    this.stopped = true;
    if (this.timer) clearTimeout(this.timer);
  }
}
