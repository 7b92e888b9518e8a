/**
 * The fault harness's quick profile (test/faults/harness.ts, docs/faults.md): 2 tenants × 3
 * partitions, worker processes scaled 1 → 3 → 1, 3 kill -9 at random moments with replacements, one
 * rolling SIGTERM bounce of every replica, a poison record in tenant A, ≥ 1,000 readings per
 * partition. Counted independently per (tenant, equipment): producer acks vs PostgreSQL vs Parquet
 * (pyarrow over S3) vs the dead-letter topics.
 */
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { repoRoot } from "../../stack/context.ts";
import { PROFILES, runFaults, summarise } from "../faults/harness.ts";

describe("fault harness, quick profile", () => {
  it("kills, a rolling bounce, scaling and a poison record: nothing missing, duplicated or out of order", async () => {
    const r = await runFaults({ profile: PROFILES.quick, outFile: join(repoRoot, "bench", "results", "faults-quick.json") });
    process.stdout.write(summarise(r));
    expect(r.errors).toEqual([]);
    expect(r.faults.kill9).toBeGreaterThanOrEqual(3);
    expect(r.faults.rolling_bounce).toBeGreaterThanOrEqual(1);
    expect(r.faults.scale).toBe(2);
    expect(r.faults.poison).toBe(1);
    expect(r.records.perPartitionMin).toBeGreaterThanOrEqual(1000);
    expect(r.missing).toBe(0);
    expect(r.duplicated).toBe(0);
    expect(r.inversions).toBe(0);
    for (const t of r.tenants) {
      expect(t.parquetRows, `tenant ${t.tenant}: Parquet rows = PG rows`).toBe(t.pgRows);
      expect(t.foreignRows).toBe(0);
      expect(t.deadLetters, `tenant ${t.tenant}: dead letters on the topic`).toBe(t.deadLettersExpected);
    }
    expect(r.parquetEqualsPg).toBe(true);
    // Alert events (one temperature alarm raised and cleared per complete cycle of every equipment).
    expect(r.alerts.cyclesChecked, "complete alarm cycles to check").toBeGreaterThan(0);
    expect({ missingOnTopic: r.alerts.missingOnTopic, notInTable: r.alerts.notInTable, contradictory: r.alerts.contradictory, redelivered: r.alerts.redelivered, lifecycleErrors: r.alerts.lifecycleErrors, cyclesWrong: r.alerts.cyclesWrong })
      .toEqual({ missingOnTopic: 0, notInTable: 0, contradictory: 0, redelivered: 0, lifecycleErrors: 0, cyclesWrong: 0 });
    expect(r.alerts.topicDistinct).toBe(r.alerts.pg);
    expect(r.sigtermExits.length).toBeGreaterThanOrEqual(5);
    for (const x of r.sigtermExits) {
      expect(x.code, `${x.name} exit after SIGTERM`).toBe(0);
      expect(x.ms).toBeLessThan(30_000);
    }
  }, 240_000);
});
