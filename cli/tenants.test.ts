import { describe, expect, it } from "vitest";
import { confirmPurge } from "./tenants.ts";

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
