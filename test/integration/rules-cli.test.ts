/** `millrace rules list|set|delete` against a fresh database, through the real command line. */
import { execFile } from "node:child_process";
import { randomUUID } from "node:crypto";
import { join } from "node:path";
import { promisify } from "node:util";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { loadRuleOverrides } from "../../pipelines/processors/alarm-store.ts";
import { loadTopology } from "../../pipelines/topology/index.ts";
import { deleteRule, setRule } from "../../cli/rules.ts";
import { repoRoot } from "../../stack/context.ts";
import { createTestDatabase, insertTenant, type TestDatabase } from "../helpers/db.ts";

const run = promisify(execFile);

describe("millrace rules", () => {
  let db: TestDatabase;
  const tenant = randomUUID();
  const other = randomUUID();

  const cli = async (...args: string[]) => {
    const env = { ...process.env, MILLRACE_PG_ADMIN_URL: db.adminUrl, MILLRACE_PG_URL: "", MILLRACE_PG_ROLE: "" };
    try {
      const r = await run(join(repoRoot, "millrace"), ["rules", ...args], { env, cwd: repoRoot, timeout: 60_000 });
      return { code: 0, stdout: r.stdout, stderr: r.stderr };
    } catch (err) {
      const e = err as { code: number; stdout: string; stderr: string };
      return { code: e.code, stdout: e.stdout, stderr: e.stderr };
    }
  };

  beforeAll(async () => {
    db = await createTestDatabase();
    await insertTenant(db.admin, { tenantId: tenant });
    await insertTenant(db.admin, { tenantId: other });
  });
  afterAll(async () => {
    await db?.drop();
  });

  it("list shows the defaults; set overrides one and adds one; delete restores the default; all under the tenant's RLS", async () => {
    const before = await cli("list", "--tenant", tenant, "--json");
    expect(before.code).toBe(0);
    expect(JSON.parse(before.stdout).map((r: { id: string; source: string }) => `${r.id}:${r.source}`)).toEqual(["vibration_high:default", "temperature_high:default"]);

    const set = await cli("set", "--tenant", tenant, "--id", "vibration_high", "--warning", "2", "--sustain", "20s");
    expect(set).toMatchObject({ code: 0 });
    expect(set.stdout).toContain("sustain: 20s");
    const add = await cli("set", "--tenant", tenant, "--id", "pump_pressure", "--measure", "pressure", "--comparison", "outside", "--warning", "2:8", "--critical", "1:9", "--deadband", "0.2");
    expect(add.code).toBe(0);
    const off = await cli("set", "--tenant", tenant, "--id", "temperature_high", "--disable");
    expect(off.code).toBe(0);

    const listed = JSON.parse((await cli("list", "--tenant", tenant, "--json")).stdout) as Array<{ id: string; source: string; rule: { levels?: unknown; sustain?: string } }>;
    expect(listed.map((r) => `${r.id}:${r.source}`)).toEqual(["vibration_high:override", "pump_pressure:tenant", "temperature_high:disabled"]);
    expect(listed[0]!.rule).toMatchObject({ levels: { warning: 2, major: 2.5, critical: 4 }, sustain: "20s" });

    // What the workers read (same RLS path), and nothing for the other tenant.
    expect((await loadRuleOverrides(db.writer, tenant)).overrides.map((o) => o.id)).toEqual(["pump_pressure", "temperature_high", "vibration_high"]);
    expect((await loadRuleOverrides(db.writer, other)).overrides).toEqual([]);

    expect((await cli("delete", "--tenant", tenant, "--id", "vibration_high")).stdout).toBe("deleted vibration_high\n");
    expect(JSON.parse((await cli("list", "--tenant", tenant, "--json")).stdout)[0]).toMatchObject({ id: "vibration_high", source: "default" });
  });

  it("refuses an invalid rule with every problem, an unknown tenant, and a bad id", async () => {
    const bad = await cli("set", "--tenant", tenant, "--id", "new_rule", "--measure", "flow", "--comparison", "above");
    expect(bad.code).toBe(1);
    expect(bad.stderr).toContain("measure: expected one of temperature, vibration, pressure");
    expect((await cli("set", "--tenant", tenant, "--id", "Bad-Id")).stderr).toMatch(/snake_case/);
    // The same checks without a process each (the command calls these).
    const defaults = loadTopology(join(repoRoot, "topology.yaml")).processors.find((p) => p.type === "thresholds")!.rules;
    expect(await setRule(db.writer, tenant, "vibration_high", defaults, { levels: { critical: "1" } })).toEqual({
      ok: false,
      problems: ["levels.critical: must be above major (2.5): severity rises with the value"],
    });
    expect(await setRule(db.writer, tenant, "not_a_default", defaults, { disable: true })).toEqual({ ok: false, problems: ["not_a_default is not a default rule: delete it instead of disabling it"] });
    await expect(deleteRule(db.writer, randomUUID(), "vibration_high")).rejects.toThrow(/is not registered/);
  });
});
