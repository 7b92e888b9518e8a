/**
 * The equipment quota's I/O: one call to millrace.admit_equipment (migrations/007) per chunk that
 * has equipment the gate has not seen — one round trip, the ids as an array parameter. The function
 * serialises admissions per tenant in PostgreSQL, so the answer is exact across replicas.
 */
import type pg from "pg";

export interface AdmissionResult {
  /** The ids asked about that are registered (already, or just now). */
  admitted: string[];
  /** The ids asked about that are not registered: the tenant is at its limit (or not active). */
  rejected: string[];
  /** Registered equipment of the tenant after this admission. */
  registered: number;
  /** tenants.max_equipment as the database read it (0 for an unknown or inactive tenant). */
  maxEquipment: number;
  /** This call recorded the tenant's warning for this limit (exactly one call ever gets true). */
  warningRaised: boolean;
  /**
   * The tenant's status as the database saw it. Not `active` means nothing was admitted because the
   * tenant is suspended, deleted or unknown — not because of its limit (the worker's tenant
   * directory can lag the database by up to tenant_refresh).
   */
  tenantStatus: "active" | "suspended" | "deleted" | "unknown";
}

/** What the gate needs (the PostgreSQL store, or a fake in unit tests). */
export interface QuotaStore {
  /** Register what fits of `equipmentIds` (new ones in the order given); one answer per distinct id. */
  admit(tenantId: string, equipmentIds: readonly string[]): Promise<AdmissionResult>;
}

interface Row {
  equipment_id: string;
  admitted: boolean;
  registered: number;
  max_equipment: number;
  warning_raised: boolean;
}

export class PgQuotaStore implements QuotaStore {
  constructor(
    private readonly pool: pg.Pool,
    private readonly opts: { warnPercent?: number } = {},
  ) {}

  async admit(tenantId: string, equipmentIds: readonly string[]): Promise<AdmissionResult> {
    const res = await this.pool.query<Row>(
      "SELECT equipment_id, admitted, registered, max_equipment, warning_raised FROM millrace.admit_equipment($1::uuid, $2::text[], $3::integer)",
      [tenantId, equipmentIds, this.opts.warnPercent ?? 80],
    );
    const out: AdmissionResult = { admitted: [], rejected: [], registered: 0, maxEquipment: 0, warningRaised: false, tenantStatus: "active" };
    for (const r of res.rows) {
      (r.admitted ? out.admitted : out.rejected).push(r.equipment_id);
      out.registered = r.registered;
      out.maxEquipment = r.max_equipment;
      out.warningRaised ||= r.warning_raised;
    }
    // The function answers an inactive tenant with max_equipment 0 and nothing admitted; a second
    // query, only on that rare path, tells it apart from a tenant whose limit really is 0.
    if (out.maxEquipment === 0 && out.admitted.length === 0 && out.rejected.length > 0) {
      const t = await this.pool.query<{ status: "active" | "suspended" | "deleted" }>("SELECT status FROM tenants WHERE tenant_id = $1", [tenantId]);
      out.tenantStatus = t.rows[0]?.status ?? "unknown";
    }
    return out;
  }
}
