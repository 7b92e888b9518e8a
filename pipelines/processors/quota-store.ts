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
    const out: AdmissionResult = { admitted: [], rejected: [], registered: 0, maxEquipment: 0, warningRaised: false };
    for (const r of res.rows) {
      (r.admitted ? out.admitted : out.rejected).push(r.equipment_id);
      out.registered = r.registered;
      out.maxEquipment = r.max_equipment;
      out.warningRaised ||= r.warning_raised;
    }
    return out;
  }
}
