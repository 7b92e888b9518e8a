/** Subscription tiers: retention, limits and topic sizing (one table, used by provisioning and docs). */
export type Tier = "basic" | "professional" | "enterprise";

export interface TierPolicy {
  /** null = unlimited. */
  retentionDays: number | null;
  maxEquipment: number;
  /** Partitions of the tenant's sensor-data topic. */
  partitions: number;
}

export const TIERS: Record<Tier, TierPolicy> = {
  basic: { retentionDays: 30, maxEquipment: 100, partitions: 3 },
  professional: { retentionDays: 90, maxEquipment: 1_000, partitions: 6 },
  enterprise: { retentionDays: null, maxEquipment: 10_000, partitions: 12 },
};
