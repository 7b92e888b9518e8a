/**
 * Equipment quota: the first reading of a new equipment id registers it; once the tenant has
 * max_equipment registered, readings of further new equipment are rejected (`quota_exceeded`,
 * dead-lettered by the engine) while registered equipment keeps flowing.
 *
 * Exact across replicas and restarts: admission happens only in PostgreSQL
 * (millrace.admit_equipment: a per-tenant advisory lock, then a count), never from a cache. The
 * hot path stays off the database: {@link QuotaGate.prepare} is awaited once per chunk and admits
 * that chunk's unknown equipment in one round trip; {@link QuotaGate.check} is synchronous.
 *
 * Caches, and so timing:
 *  - admitted equipment is remembered for the life of the process (admission is permanent);
 *  - a rejection is remembered for `rejectionTtlMs` (default 5 s), or until the tenant's limit as
 *    seen by the tenant directory changes, whichever is first; then the next chunk asks again. So
 *    a raised limit admits waiting equipment within min(rejectionTtlMs, tenant_refresh) plus one
 *    chunk; a lowered limit admits nothing new at once (the database reads the limit itself) and
 *    registered equipment keeps flowing even above the new limit.
 *
 * Rate limits (optional): a token bucket per tenant, sized by its tier (topology.yaml,
 * equipment_quota.*_rate / *_burst). The gate never drops for
 * rate: {@link QuotaGate.rateLimitDelayMs} tells the engine how long to pause the tenant's
 * partitions after a chunk, so an over-rate tenant is slowed to its rate and others are unaffected.
 */
import client from "prom-client";
import type { QuotaStore } from "./quota-store.ts";

export type QuotaDecision = { readonly ok: true } | { ok: false; reason: "quota_exceeded" | "tenant_suspended" | "unknown_tenant"; message: string };

/** The admitted answer, shared (check() runs per record). */
const ADMITTED: QuotaDecision = Object.freeze({ ok: true as const });

/** Messages per second and burst (tokens) of a tier; null = unlimited. */
export interface RateLimit {
  perSecond: number;
  burst: number;
}

export interface QuotaGateOptions {
  store: QuotaStore;
  /** How long a rejection is trusted before the database is asked again. Default 5000 ms. */
  rejectionTtlMs?: number;
  /** The tenant's current limit as the tenant directory knows it: a change invalidates cached rejections at once. */
  limitOf?: (tenantId: string) => number | undefined;
  /** Most rejected ids remembered per tenant (a flood of new ids cannot grow memory without bound). Default 10 000. */
  maxRememberedRejections?: number;
  /** Per-tenant message rate limit (e.g. by tier); undefined/null = unlimited. */
  rateLimitOf?: (tenantId: string) => RateLimit | null | undefined;
  metrics?: QuotaMetrics;
  now?: () => number;
}

interface Rejected {
  at: number;
  limit: number | undefined;
}

interface TenantQuota {
  admitted: Set<string>;
  /** Insertion order = time order (entries are deleted before being set again). */
  rejected: Map<string, Rejected>;
  registered: number;
  maxEquipment: number;
  /**
   * Set when the database said the tenant is not active (the tenant directory had not seen the
   * change yet): readings of equipment not already admitted are refused with this reason instead
   * of quota_exceeded. Never cached beyond the chunk: every later chunk asks again until the
   * database says active.
   */
  inactive: { reason: "tenant_suspended" | "unknown_tenant"; message: string } | undefined;
}

interface Bucket {
  tokens: number;
  at: number;
}

/** Quota metrics, registered in the worker's registry. Labels: tenant only. */
export class QuotaMetrics {
  readonly registered: client.Gauge<"tenant">;
  readonly limit: client.Gauge<"tenant">;
  readonly warnings: client.Counter<"tenant">;
  readonly admissions: client.Counter<"tenant" | "outcome">;
  readonly roundTrips: client.Counter<"tenant">;
  readonly rateLimitDelay: client.Counter<"tenant">;

  constructor(registry: client.Registry) {
    const registers = [registry];
    this.registered = new client.Gauge({ name: "millrace_quota_equipment_registered", help: "Equipment registered for the tenant, as of this worker's last admission call", labelNames: ["tenant"], registers });
    this.limit = new client.Gauge({ name: "millrace_quota_equipment_limit", help: "The tenant's max_equipment, as of this worker's last admission call", labelNames: ["tenant"], registers });
    this.warnings = new client.Counter({ name: "millrace_quota_warnings_total", help: "Equipment quota warnings (80 % of the limit) raised by this worker; once per tenant and limit across all workers", labelNames: ["tenant"], registers });
    this.admissions = new client.Counter({ name: "millrace_quota_admissions_total", help: "Admission answers from the database for equipment not cached, by outcome (admitted, rejected)", labelNames: ["tenant", "outcome"], registers });
    this.roundTrips = new client.Counter({ name: "millrace_quota_round_trips_total", help: "Admission calls to the database (at most one per chunk with unknown equipment)", labelNames: ["tenant"], registers });
    this.rateLimitDelay = new client.Counter({ name: "millrace_rate_limit_delay_seconds_total", help: "Time the tenant's partitions were asked to pause for its message rate limit", labelNames: ["tenant"], registers });
  }
}

export class QuotaGate {
  private readonly tenants = new Map<string, TenantQuota>();
  private readonly buckets = new Map<string, Bucket>();
  private readonly now: () => number;
  private readonly rejectionTtlMs: number;
  private readonly maxRejections: number;

  constructor(private readonly o: QuotaGateOptions) {
    this.now = o.now ?? Date.now;
    this.rejectionTtlMs = o.rejectionTtlMs ?? 5_000;
    this.maxRejections = o.maxRememberedRejections ?? 10_000;
  }

  private tenant(tenantId: string): TenantQuota {
    let t = this.tenants.get(tenantId);
    if (!t) {
      t = { admitted: new Set(), rejected: new Map(), registered: 0, maxEquipment: 0, inactive: undefined };
      this.tenants.set(tenantId, t);
    }
    return t;
  }

  private rejectionValid(tenantId: string, r: Rejected, now: number): boolean {
    return now - r.at < this.rejectionTtlMs && (this.o.limitOf === undefined || this.o.limitOf(tenantId) === r.limit);
  }

  /**
   * Once per chunk, before {@link check}: admit the chunk's equipment this gate has no valid answer
   * for, in one database round trip (none when every id is known). Pass the rows in reading order:
   * when only some new equipment fits, the first to appear is admitted. Throws what the store throws
   * (pg errors: retry the chunk with the engine's policy — nothing was cached).
   */
  async prepare(tenantId: string, rows: Iterable<{ equipmentId: string }>): Promise<void> {
    const t = this.tenant(tenantId);
    const now = this.now();
    const unknown: string[] = [];
    const seen = new Set<string>();
    for (const { equipmentId: id } of rows) {
      if (seen.has(id) || t.admitted.has(id)) continue;
      seen.add(id);
      const r = t.rejected.get(id);
      if (r === undefined || t.inactive !== undefined || !this.rejectionValid(tenantId, r, now)) unknown.push(id);
    }
    if (unknown.length === 0) return;
    const limitSeen = this.o.limitOf?.(tenantId);
    const res = await this.o.store.admit(tenantId, unknown);
    const m = this.o.metrics;
    m?.roundTrips.inc({ tenant: tenantId });
    if (res.tenantStatus !== "active") {
      t.inactive =
        res.tenantStatus === "suspended"
          ? { reason: "tenant_suspended", message: `tenant ${tenantId} is suspended` }
          : { reason: "unknown_tenant", message: `tenant ${tenantId} is not registered (${res.tenantStatus})` };
      for (const id of res.rejected) t.rejected.delete(id);
      return;
    }
    t.inactive = undefined;
    for (const id of res.admitted) {
      t.admitted.add(id);
      t.rejected.delete(id);
    }
    for (const id of res.rejected) {
      t.rejected.delete(id);
      t.rejected.set(id, { at: now, limit: limitSeen });
    }
    this.prune(tenantId, t, now);
    t.registered = res.registered;
    t.maxEquipment = res.maxEquipment;
    if (m) {
      if (res.admitted.length > 0) m.admissions.inc({ tenant: tenantId, outcome: "admitted" }, res.admitted.length);
      if (res.rejected.length > 0) m.admissions.inc({ tenant: tenantId, outcome: "rejected" }, res.rejected.length);
      m.registered.set({ tenant: tenantId }, res.registered);
      m.limit.set({ tenant: tenantId }, res.maxEquipment);
      if (res.warningRaised) m.warnings.inc({ tenant: tenantId });
    }
  }

  private prune(tenantId: string, t: TenantQuota, now: number): void {
    for (const [id, r] of t.rejected) {
      if (t.rejected.size <= this.maxRejections && this.rejectionValid(tenantId, r, now)) break;
      t.rejected.delete(id);
    }
  }

  /**
   * Synchronous: may this equipment's reading pass? {@link prepare} must have been awaited for a
   * chunk containing it; an equipment it never saw is a wiring bug and throws.
   */
  check(tenantId: string, equipmentId: string): QuotaDecision {
    const t = this.tenants.get(tenantId);
    if (t?.admitted.has(equipmentId)) return ADMITTED;
    if (t?.inactive) return { ok: false, reason: t.inactive.reason, message: t.inactive.message };
    if (t?.rejected.has(equipmentId)) {
      return {
        ok: false,
        reason: "quota_exceeded",
        message: `equipment ${JSON.stringify(equipmentId.slice(0, 140))} is not registered and tenant ${tenantId} has ${t.registered} registered equipment, its limit (max_equipment) is ${t.maxEquipment}`,
      };
    }
    throw new Error(`quota: equipment ${JSON.stringify(equipmentId)} of tenant ${tenantId} was not prepared (call prepare() for the chunk first)`);
  }

  /** Equipment this gate has seen admitted for the tenant (tests, status). */
  admittedCount(tenantId: string): number {
    return this.tenants.get(tenantId)?.admitted.size ?? 0;
  }

  /** Forget a tenant's cached answers (e.g. after an operator deregistered equipment); the next chunk asks the database. */
  forget(tenantId?: string): void {
    if (tenantId === undefined) this.tenants.clear();
    else this.tenants.delete(tenantId);
  }

  /**
   * Record `n` messages of the tenant against its rate limit and return how long (ms) the engine
   * should pause the tenant's partitions before fetching more: 0 while within rate. A token bucket
   * in debt: a burst above the rate is let through and paid back by the pause, so nothing is
   * dropped and the long-run rate is the tier's.
   */
  rateLimitDelayMs(tenantId: string, n: number): number {
    const limit = this.o.rateLimitOf?.(tenantId);
    if (!limit || n <= 0) return 0;
    const now = this.now();
    const b = this.buckets.get(tenantId) ?? { tokens: limit.burst, at: now };
    b.tokens = Math.min(limit.burst, b.tokens + ((now - b.at) / 1000) * limit.perSecond) - n;
    b.at = now;
    this.buckets.set(tenantId, b);
    if (b.tokens >= 0) return 0;
    const delay = Math.ceil((-b.tokens / limit.perSecond) * 1000);
    this.o.metrics?.rateLimitDelay.inc({ tenant: tenantId }, delay / 1000);
    return delay;
  }
}
