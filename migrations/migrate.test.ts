import { describe, expect, it } from "vitest";
import { assertMigrated, loadMigrations, SchemaBehindError } from "./migrate.ts";

const all = loadMigrations();
const versions = (vs: number[]) => ({ query: async () => ({ rows: vs.map((version) => ({ version })) }) }) as never;
const failing = (code: string) => ({ query: async () => Promise.reject(Object.assign(new Error(`pg ${code}`), { code })) }) as never;

describe("assertMigrated", () => {
  it("passes when every migration is applied, also on a database migrated by newer code", async () => {
    await expect(assertMigrated(versions(all.map((m) => m.version)), "db")).resolves.toBeUndefined();
    await expect(assertMigrated(versions([...all.map((m) => m.version), 999]), "db")).resolves.toBeUndefined();
  });

  it("names the missing migrations and the fix", async () => {
    const upTo11 = all.filter((m) => m.version <= 11).map((m) => m.version);
    const err = await assertMigrated(versions(upTo11), "the shared database").catch((e: unknown) => e);
    expect(err).toBeInstanceOf(SchemaBehindError);
    expect((err as Error).message).toMatch(/^the shared database is not migrated to this version of millrace: at 11, missing 012_flow_rate\. Run `millrace migrate`/);
  });

  it("a database never migrated, or one from before 012 (no SELECT grant yet), is behind too; other errors are not hidden", async () => {
    await expect(assertMigrated(failing("42P01"), "db")).rejects.toThrow(/^db is not migrated: no migration recorded, this code needs up to 012_flow_rate\. Run `millrace migrate`/);
    await expect(assertMigrated(failing("42501"), "db")).rejects.toThrow(/^db is not migrated to this version of millrace: its schema predates 012_flow_rate, this code needs up to 012_flow_rate\. Run `millrace migrate`/);
    await expect(assertMigrated(failing("08006"), "db")).rejects.toThrow(/pg 08006/);
  });
});
