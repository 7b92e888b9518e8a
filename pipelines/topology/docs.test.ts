import { readFileSync } from "node:fs";
import { describe, expect, it } from "vitest";
import { stringify } from "yaml";
import { repoRoot } from "../../stack/context.ts";
import { DOCS_FILE, fieldDocs, renderTopologyDocs } from "./docs.ts";
import { FRAMEWORK_SCHEMAS } from "./framework.ts";
import { parseTopology } from "./loader.ts";
import { COMPONENTS } from "./registry.ts";
import { join } from "node:path";

describe("docs/topology.md", () => {
  it("is up to date with the component specs (regenerate: npx tsx pipelines/topology/docs.ts)", () => {
    expect(readFileSync(DOCS_FILE, "utf8")).toBe(renderTopologyDocs());
  });

  it("documents every setting: a description, a type and a default", () => {
    for (const schema of [...COMPONENTS.map((c) => c.config), ...Object.values(FRAMEWORK_SCHEMAS)]) {
      for (const f of fieldDocs(schema)) {
        expect(f.description, f.name).not.toBe("");
        expect(f.type, f.name).not.toMatch(/^(pipe|transform|unknown)$/);
        expect(f.default, f.name).not.toBeUndefined();
      }
    }
  });

  it("has examples that together are a valid topology", () => {
    const sections: Record<string, Record<string, unknown>> = { sources: {}, processors: {}, sinks: {} };
    for (const c of COMPONENTS) sections[`${c.kind}s`]![c.example.id] = { type: c.type, ...c.example.entry };
    const plan = parseTopology(stringify({ version: 1, ...sections }), join(repoRoot, "examples.yaml"));
    expect([plan.source, ...plan.processors, ...plan.sinks].map((n) => n.type)).toEqual(COMPONENTS.map((c) => c.type));
  });
});
