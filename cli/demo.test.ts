import { Command, CommanderError } from "commander";
import { describe, expect, it } from "vitest";
import { registerDemoCommand } from "./demo.ts";

/** Parse a `demo` command line; the options its action would get (the real action, the stack, never runs). */
async function demoOptions(...args: string[]): Promise<{ count: number; timeout: number }> {
  const program = new Command().exitOverride().configureOutput({ writeErr: () => {}, writeOut: () => {} });
  registerDemoCommand(program);
  let got: { count: number; timeout: number } | undefined;
  program.commands.find((c) => c.name() === "demo")!.action((o: { count: number; timeout: number }) => {
    got = o;
  });
  await program.parseAsync(["demo", ...args], { from: "user" });
  return got!;
}

describe("millrace demo options", () => {
  it("--count and --timeout are integers (defaults 30000 readings, 300 s)", async () => {
    expect(await demoOptions()).toEqual({ count: 30000, timeout: 300 });
    expect(await demoOptions("--count", "500", "--timeout", "60")).toEqual({ count: 500, timeout: 60 });
  });

  it("refuses a --count or --timeout that is not an integer ≥ 1 before doing anything", async () => {
    for (const [flag, raw] of [["--count", "abc"], ["--count", "0"], ["--count", "1.5"], ["--timeout", "abc"], ["--timeout", "-5"], ["--timeout", ""]] as const) {
      const p = demoOptions(flag, raw);
      await expect(p, `${flag} ${raw}`).rejects.toThrow(CommanderError);
      await expect(p, `${flag} ${raw}`).rejects.toThrow(`${flag} must be an integer ≥ 1, got ${raw}`);
    }
  });
});
