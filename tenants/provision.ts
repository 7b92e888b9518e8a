/**
 * Tenant provisioning (the part the ingest worker needs; the full lifecycle CLI builds on it):
 * the tenants row (bound parameters only) and the tenant's topics. Every step is idempotent, so a
 * rerun after a partial failure completes the job.
 */
import { createTopicsAndWait } from "../lib/kafka-topics.ts";
import { randomUUID } from "node:crypto";
import type { Admin } from "kafkajs";
import type pg from "pg";
import { UUID } from "../pipelines/runtime/tenant-directory.ts";
import { TIERS, type Tier } from "./tiers.ts";
import { ensureDedicatedDatabase, newDedicatedDatabaseName, tenantDatabaseRef, type DatabaseRef } from "./database.ts";

export interface NewTenant {
  tenantId?: string;
  name: string;
  tier?: Tier;
  deploymentType?: "multi-tenant" | "single-tenant" | "hybrid";
  /** Overrides the tier's retention; null = unlimited. */
  retentionDays?: number | null;
  maxEquipment?: number;
  partitions?: number;
  dataRegion?: string;
  /**
   * A dedicated database for the tenant's store (tenants/database.ts): created on the shared
   * database's server (`adminUrl`, a superuser or CREATEDB URL of the shared database) and migrated,
   * or — with `ref` — an existing one by reference. A rerun reuses the database the row names.
   */
  dedicatedDatabase?: { adminUrl: string; ref?: DatabaseRef; log?: (line: string) => void };
}

export function tenantTopics(tenantId: string): { sensorData: string; alerts: string; deadLetters: string } {
  if (!UUID.test(tenantId)) throw new Error(`not a tenant id (lower-case UUID): ${JSON.stringify(tenantId)}`);
  return { sensorData: `sensor-data-${tenantId}`, alerts: `alerts-${tenantId}`, deadLetters: `dead-letters-${tenantId}` };
}

export async function createTenant(db: pg.Pool, admin: Admin, t: NewTenant): Promise<{ tenantId: string; topics: ReturnType<typeof tenantTopics> }> {
  const tenantId = (t.tenantId ?? randomUUID()).toLowerCase();
  const tier = t.tier ?? "basic";
  const policy = TIERS[tier];
  const topics = tenantTopics(tenantId);
  const dedicated = t.dedicatedDatabase;
  // The row first (with the database it will use), then the database, then the topics: a worker
  // only sees the tenant's topics once its store exists, and a rerun completes each step.
  await db.query(
    `INSERT INTO tenants (tenant_id, tenant_name, deployment_type, data_region, retention_policy_days, max_equipment, subscription_tier, database_mode, database_ref)
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
     ON CONFLICT (tenant_id) DO NOTHING`,
    [
      tenantId,
      t.name,
      t.deploymentType ?? "multi-tenant",
      t.dataRegion ?? "local",
      t.retentionDays === undefined ? policy.retentionDays : t.retentionDays,
      t.maxEquipment ?? policy.maxEquipment,
      tier,
      dedicated ? "dedicated" : "shared",
      dedicated ? JSON.stringify(dedicated.ref ?? { database: newDedicatedDatabaseName() }) : null,
    ],
  );
  if (dedicated) {
    const ref = await tenantDatabaseRef(db, tenantId);
    if (!ref) throw new Error(`tenant ${tenantId} exists with a shared database; moving a tenant between databases is not supported (docs/tenancy.md)`);
    await ensureDedicatedDatabase(db, dedicated.adminUrl, tenantId, ref, dedicated.log);
  }
  const partitions = t.partitions ?? policy.partitions;
  const existing = new Set(await admin.listTopics());
  const wanted = [
    { topic: topics.sensorData, numPartitions: partitions },
    { topic: topics.alerts, numPartitions: Math.min(partitions, 3) },
    { topic: topics.deadLetters, numPartitions: Math.min(partitions, 3) },
  ].filter((x) => !existing.has(x.topic));
  await createTopicsAndWait(admin, wanted);
  return { tenantId, topics };
}
