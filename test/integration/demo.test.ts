/**
 * The README's first command, `./millrace demo`, as a newcomer runs it (against the stack the
 * suite runs on): exit 0, a summary with one tenant of each deployment type (the single-tenant one
 * in its own database), readings stored this run for each, the bad records as dead letters with their reasons, Parquet files in each tenant's
 * place, the SKAB run's valve alarm, and lag 0. Run twice: the second run works too (idempotent set-up, new readings).
 */
import { execFile } from "node:child_process";
import { join } from "node:path";
import { promisify } from "node:util";
import { describe, expect, it } from "vitest";
import { repoRoot } from "../../stack/context.ts";

const run = promisify(execFile);

async function demo(): Promise<string> {
  const { stdout } = await run(join(repoRoot, "millrace"), ["demo", "--count", "1500", "--timeout", "300"], { cwd: repoRoot, timeout: 420_000, maxBuffer: 16 * 1024 * 1024, env: { ...process.env, MILLRACE_LOG_LEVEL: "warn" } });
  return stdout;
}

describe("millrace demo", () => {
  it("runs end to end twice: one tenant per deployment type, rows this run, dead letters, Parquet, lag 0", { timeout: 900_000 }, async () => {
    for (let round = 1; round <= 2; round++) {
      const out = await demo();
      expect(out, `round ${round}`).toContain("millrace demo — summary");
      for (const [name, deployment, database] of [
        ["Acme Pumps (demo)", "multi-tenant", "shared"],
        ["Borealis Foundry (demo)", "hybrid", "shared"],
        ["Cobalt Pharma (demo)", "single-tenant", "dedicated"],
      ] as const) {
        const line = out.split("\n").find((l) => l.startsWith(name));
        expect(line, `${name} in round ${round}:\n${out}`).toBeDefined();
        const cols = line!.slice(name.length).trim().split(/\s+/);
        // tier, deployment, database, stored now, this run, parquet files/rows, dead letters…
        expect(cols[1]).toBe(deployment);
        expect(cols[2], `${name}'s database`).toBe(database);
        expect(Number(cols[4]), `${name} stored this run`).toBeGreaterThan(0);
        expect(cols[5]).toMatch(/^[1-9]\d*\/[1-9]\d*$/);
      }
      expect(out).toMatch(/Rows of Cobalt Pharma \(demo\): database millrace_t_[0-9a-f]{16}/);
      expect(out).toMatch(/Acme Pumps \(demo\).*(undecodable|not_avro|bad_magic_byte|decode)/);
      expect(out).toMatch(/tenant_mismatch=\d+/);
      // The SKAB run's valve closure, found by valve_flow_low, escalating to critical and clearing.
      expect(out).toMatch(/^ {2}Cobalt Pharma \(demo\): valve_flow_low on skab-valve1-13-[0-9a-z]+: raised warning → escalated major → escalated critical → .*cleared warning$/m);
      expect(out).toContain("final lag: 0");
      expect(out).toContain("s3://millrace-demo-cobalt/a8c4e1f3-2d7b-4f6e-8a9c-0b5d3e7f1c03/sensor-data/");
    }
  });
});
