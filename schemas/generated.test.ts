import { readFileSync } from "node:fs";
import { describe, expect, it } from "vitest";
import { generate } from "./generate.ts";

describe("schemas/generated.ts", () => {
  it("is up to date with the .avsc files (run: npx tsx schemas/generate.ts)", () => {
    expect(readFileSync(new URL("./generated.ts", import.meta.url), "utf8")).toBe(generate());
  });
});
