import { Command, CommanderError } from "commander";
import type pg from "pg";
import { describe, expect, it } from "vitest";
import { updateTenant } from "../tenants/lifecycle.ts";
import { confirmPurge, registerTenantCommands, updateRequestOf, type UpdateOptions } from "./tenants.ts";

const ID = "3f1c2d4e-5a6b-4c7d-8e9f-0a1b2c3d4e5f";

describe("millrace tenants delete --purge confirmation", () => {
  it("goes ahead with --yes without asking", async () => {
    let asked = 0;
    await confirmPurge(ID, { yes: true, interactive: false, ask: async () => String(++asked) });
    expect(asked).toBe(0);
  });

  it("refuses without a terminal and without --yes, naming the flag", async () => {
    await expect(confirmPurge(ID, { yes: false, interactive: false, ask: async () => ID })).rejects.toThrow(/confirm with --yes/);
  });

  it("asks on a terminal: the typed tenant id confirms, anything else refuses", async () => {
    const questions: string[] = [];
    await confirmPurge(ID, { yes: false, interactive: true, ask: async (q) => (questions.push(q), ` ${ID.toUpperCase()}\n`) });
    expect(questions).toHaveLength(1);
    expect(questions[0]).toContain(ID);
    await expect(confirmPurge(ID, { yes: false, interactive: true, ask: async () => "y" })).rejects.toThrow(/not confirmed.*nothing was changed/);
  });
});

describe("millrace tenants update --retention-days", () => {
  /** Parse a `tenants update` command line; the options the action would get (no database). */
  async function updateOptions(...args: string[]): Promise<UpdateOptions> {
    const program = new Command().exitOverride().configureOutput({ writeErr: () => {}, writeOut: () => {} });
    registerTenantCommands(program);
    const update = program.commands.find((c) => c.name() === "tenants")!.commands.find((c) => c.name() === "update")!;
    let got: UpdateOptions | undefined;
    update.action((_id: string, o: UpdateOptions) => {
      got = o;
    });
    await program.parseAsync(["tenants", "update", ID, ...args], { from: "user" });
    return got!;
  }

  /** What updateTenant sends to the database for these options. */
  async function storedValues(o: UpdateOptions): Promise<{ sql: string; values: unknown[] }> {
    let sent: { sql: string; values: unknown[] } | undefined;
    const db = {
      query: async (sql: string, values: unknown[]) => {
        sent = { sql, values };
        return { rows: [{ tenant_id: ID }] };
      },
    } as unknown as pg.Pool;
    await updateTenant(db, ID, updateRequestOf(o));
    return sent!;
  }

  it("unlimited (any case) stores retention NULL", async () => {
    for (const word of ["unlimited", "UNLIMITED", "Unlimited"]) {
      const o = await updateOptions("--retention-days", word);
      const { sql, values } = await storedValues(o);
      expect(sql).toContain("retention_policy_days = $2");
      expect(values).toEqual([ID, null]);
    }
  });

  it("a number of days is stored as given; 0, negative and other words are refused", async () => {
    expect((await storedValues(await updateOptions("--retention-days", "30"))).values).toEqual([ID, 30]);
    expect(updateRequestOf({ name: "x" })).toEqual({ name: "x" });
    for (const bad of ["0", "-1", "forever", "1.5", ""]) {
      await expect(updateOptions("--retention-days", bad)).rejects.toThrow(CommanderError);
      await expect(updateOptions("--retention-days", bad)).rejects.toThrow(/positive number of days or 'unlimited'/);
    }
  });
});
