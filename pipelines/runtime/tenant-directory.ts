/**
 * The tenant directory: which tenants exist, their status and limits, refreshed from the tenants
 * table every `refreshMs` (so a suspension or a new limit takes effect without a restart), and the
 * mapping between tenant ids and topic names (built only from validated UUIDs).
 */
import type pg from "pg";
import type { Tier } from "../../tenants/tiers.ts";
import type { TenantInfo } from "../processors/validate.ts";
import { parseDatabaseRef } from "../../tenants/database.ts";

export const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;

/** `sensor-data-{tenant_id}` ↔ tenant ids. */
export class TopicPattern {
  private readonly prefix: string;
  private readonly suffix: string;
  readonly regex: RegExp;

  constructor(readonly pattern: string) {
    const at = pattern.indexOf("{tenant_id}");
    if (at < 0 || pattern.indexOf("{tenant_id}", at + 1) >= 0) throw new Error(`topic pattern ${pattern} must contain {tenant_id} exactly once`);
    this.prefix = pattern.slice(0, at);
    this.suffix = pattern.slice(at + "{tenant_id}".length);
    const esc = (s: string) => s.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");
    this.regex = new RegExp(`^${esc(this.prefix)}([0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})${esc(this.suffix)}$`);
  }

  topicFor(tenantId: string): string {
    if (!UUID.test(tenantId)) throw new Error(`not a tenant id (lower-case UUID): ${JSON.stringify(tenantId)}`);
    return `${this.prefix}${tenantId}${this.suffix}`;
  }

  tenantOf(topic: string): string | undefined {
    return this.regex.exec(topic)?.[1];
  }
}

export class TenantDirectory {
  private tenants = new Map<string, TenantInfo>();
  private loadedAt = 0;
  private inflight: Promise<void> | undefined;

  constructor(
    private readonly pool: pg.Pool,
    private readonly refreshMs: number,
    private readonly now: () => number = Date.now,
  ) {}

  async refresh(): Promise<void> {
    this.inflight ??= (async () => {
      try {
        const res = await this.pool.query<{
          tenant_id: string;
          status: TenantInfo["status"];
          retention_policy_days: number | null;
          max_equipment: number;
          subscription_tier: Tier;
          database_mode: "shared" | "dedicated";
          database_ref: unknown;
        }>("SELECT tenant_id, status, retention_policy_days, max_equipment, subscription_tier, database_mode, database_ref FROM tenants");
        this.tenants = new Map(
          res.rows.map((r) => {
            const info: TenantInfo = { tenantId: r.tenant_id, status: r.status, retentionDays: r.retention_policy_days, maxEquipment: r.max_equipment, tier: r.subscription_tier };
            if (r.database_mode === "dedicated") {
              try {
                info.database = parseDatabaseRef(r.database_ref);
              } catch (err) {
                info.databaseProblem = (err as Error).message;
              }
            }
            return [r.tenant_id, info];
          }),
        );
        this.loadedAt = this.now();
      } finally {
        this.inflight = undefined;
      }
    })();
    await this.inflight;
  }

  /** Refresh if older than refreshMs (awaited once per batch, not per record). */
  async ensureFresh(): Promise<void> {
    if (this.now() - this.loadedAt >= this.refreshMs) await this.refresh();
  }

  get(tenantId: string): TenantInfo | undefined {
    return this.tenants.get(tenantId);
  }

  all(): TenantInfo[] {
    return [...this.tenants.values()];
  }
}
