import { describe, expect, it } from "vitest";
import { DEDICATED_DATABASE_NAME, databaseUrl, describeDatabaseRef, newDedicatedDatabaseName, parseDatabaseRef } from "./database.ts";

describe("dedicated database references", () => {
  it("generates random names that the validator accepts, never the tenant id", () => {
    const a = newDedicatedDatabaseName();
    const b = newDedicatedDatabaseName();
    expect(a).toMatch(DEDICATED_DATABASE_NAME);
    expect(a).not.toBe(b);
    expect(parseDatabaseRef({ database: a })).toEqual({ database: a });
  });

  it("accepts only the two documented shapes, with validated values", () => {
    expect(parseDatabaseRef({ env: "MILLRACE_TENANT_ACME_PG_URL" })).toEqual({ env: "MILLRACE_TENANT_ACME_PG_URL" });
    for (const bad of [
      null,
      "millrace_t_0123456789abcdef",
      {},
      { database: "postgres" },
      { database: 'millrace_t_0123456789abcdef"; DROP DATABASE x; --' },
      { database: "millrace_t_0123456789ABCDEF" },
      { env: "PATH" },
      { env: "MILLRACE_x" },
      { database: "millrace_t_0123456789abcdef", env: "MILLRACE_A" },
    ]) {
      expect(() => parseDatabaseRef(bad), JSON.stringify(bad)).toThrow(/database_ref/);
    }
  });

  it("builds the URL from the caller's own settings with only the database replaced", () => {
    const url = databaseUrl({ database: "millrace_t_0123456789abcdef" }, "postgres://admin:s%40cret@127.0.0.1:5432/millrace?sslmode=disable");
    const u = new URL(url);
    expect(u.pathname).toBe("/millrace_t_0123456789abcdef");
    expect([u.username, decodeURIComponent(u.password), u.host, u.searchParams.get("sslmode")]).toEqual(["admin", "s@cret", "127.0.0.1:5432", "disable"]);
  });

  it("reads an env reference from the environment and says what to set when it is missing", () => {
    expect(databaseUrl({ env: "MILLRACE_T_PG" }, "postgres://x/y", { MILLRACE_T_PG: "postgres://other:5432/acme" })).toBe("postgres://other:5432/acme");
    expect(() => databaseUrl({ env: "MILLRACE_T_PG" }, "postgres://x/y", {})).toThrow(/\$MILLRACE_T_PG, which is not set/);
    expect(describeDatabaseRef({ env: "MILLRACE_T_PG" })).toContain("$MILLRACE_T_PG");
  });
});
