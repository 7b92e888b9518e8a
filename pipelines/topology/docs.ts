/**
 * Renders docs/topology.md from the component specs the loader validates with, so the reference
 * cannot drift from the code: `npx tsx pipelines/topology/docs.ts` writes it, and a unit test fails
 * when the committed file differs from {@link renderTopologyDocs}.
 */
import { writeFileSync } from "node:fs";
import { join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { Document, visit } from "yaml";
import { z } from "zod";
import { DATA_KIND_LABEL, type ComponentKind, type ComponentSpec } from "./component-spec.ts";
import { FRAMEWORK_SCHEMAS, INPUTS_DESCRIPTION } from "./framework.ts";
import { GRAPH_RULES } from "./graph-checks.ts";
import { COMPONENTS } from "./registry.ts";

export const DOCS_FILE = join(fileURLToPath(new URL("../..", import.meta.url)), "docs", "topology.md");

const SECTION: Record<ComponentKind, string> = { source: "sources", processor: "processors", sink: "sinks" };
const TITLE: Record<ComponentKind, string> = { source: "Sources", processor: "Processors", sink: "Sinks" };

export interface FieldDoc {
  name: string;
  type: string;
  /** In YAML form, e.g. `"30s"`; undefined = required. */
  default: unknown;
  description: string;
}

/** The fields of a strict object schema, in declaration order, with their docType, default and description. */
export function fieldDocs(schema: z.ZodObject): FieldDoc[] {
  return Object.entries(schema.shape).map(([name, field]) => {
    let s = field as z.ZodType;
    let description = z.globalRegistry.get(s)?.description;
    let def: unknown;
    for (;;) {
      const d = s.def as { type: string; defaultValue?: unknown; innerType?: z.ZodType };
      if ((d.type === "prefault" || d.type === "default") && d.innerType) {
        def = d.defaultValue;
        s = d.innerType;
      } else if (d.type === "optional" && d.innerType) s = d.innerType;
      else break;
      description ??= z.globalRegistry.get(s)?.description;
    }
    const type = z.globalRegistry.get(s)?.docType ?? (s.def.type === "object" ? "mapping" : s.def.type);
    if (!description) throw new Error(`field ${name} has no .describe()`);
    return { name, type, default: def, description };
  });
}

function table(fields: FieldDoc[]): string {
  const cell = (s: string) => s.replaceAll("|", "\\|").replaceAll("\n", " ");
  const rows = fields.map((f) => `| \`${f.name}\` | ${cell(f.type)} | ${f.default === undefined ? "required" : `\`${formatDefault(f.default)}\``} | ${cell(f.description)} |`);
  return ["| Setting | Type | Default | Description |", "| --- | --- | --- | --- |", ...rows].join("\n");
}

function formatDefault(v: unknown): string {
  return typeof v === "string" ? v : JSON.stringify(v);
}

/** An entry as YAML, lists in flow style (`inputs: [decode]`) the way topology.yaml writes them. */
function exampleYaml(spec: ComponentSpec): string {
  const doc = new Document({ [SECTION[spec.kind]]: { [spec.example.id]: { type: spec.type, ...spec.example.entry } } });
  visit(doc, {
    Seq: (_, seq) => {
      seq.flow = true;
    },
  });
  return doc.toString({ lineWidth: 0, flowCollectionPadding: false });
}

function componentSection(spec: ComponentSpec): string {
  const takes = spec.accepts ? `Takes ${DATA_KIND_LABEL[spec.accepts]}` : "Takes no inputs";
  const emits = spec.emits ? `emits ${DATA_KIND_LABEL[spec.emits]}` : "emits nothing";
  const engine = [...(spec.kind === "source" ? [] : ["`inputs`"]), ...spec.framework.map((f) => `[\`${f}\`](#${f})`)];
  const facts = [`${takes}; ${emits}.`, spec.singleton ? "At most one per topology." : "", engine.length > 0 ? `Engine-owned settings: ${engine.join(", ")}.` : ""];
  return [
    `### ${spec.type}`,
    "",
    spec.summary,
    "",
    facts.filter((f) => f !== "").join(" "),
    "",
    table(fieldDocs(spec.config)),
    "",
    "Example:",
    "",
    "```yaml",
    exampleYaml(spec).trimEnd(),
    "```",
  ].join("\n");
}

export function renderTopologyDocs(): string {
  const parts = [
    "# topology.yaml reference",
    "",
    "<!-- Generated from the component specs in pipelines/topology/ by `npx tsx pipelines/topology/docs.ts`. Do not edit: a unit test fails when this file is stale. -->",
    "",
    "`topology.yaml` at the repository root is the only place the pipeline's components are wired. It has three sections, " +
      "`sources`, `processors` and `sinks`, each a mapping from a component id (snake_case) to its settings. `type:` chooses the " +
      "code (`type: avro_decode` is `pipelines/topology/components/avro-decode.ts`), `inputs:` names the components it takes data from, " +
      "and the rest are the component's own settings. Unknown settings are errors.",
    "",
    "`./millrace topology check [file]` loads the file and prints every problem with its line and column; " +
      "`./millrace topology describe [file]` prints the loaded plan: each node with its settings, `-->` successors and `<--` predecessors. " +
      "The worker refuses to start on a topology with a problem.",
    "",
    "## Rules (version 1)",
    "",
    "`version: 1` is required.",
    "",
    ...GRAPH_RULES.map((r) => `- ${r}`),
    "",
    "## Units",
    "",
    "- Durations: a number and a unit, `ms`, `s`, `m` or `h` (`100ms`, `30s`, `5m`, `1h`). A bare number is refused (is `30` seconds or milliseconds?).",
    "- Sizes: `B`, `KiB`, `MiB`, `GiB` (`512KiB`, `4MiB`); a plain integer is bytes. Decimal units (`MB`) are refused so `4MB` never silently means 4,000,000.",
    "- `max_retries`: a non-negative integer, or `unlimited` (retry until the worker stops; nothing is dropped, the partition waits).",
    "",
    "## Engine-owned settings",
    "",
    "The engine, not the component, carries these out; a component's own config never sees them.",
    "",
    "### inputs",
    "",
    `A list of component ids, e.g. \`inputs: [decode]\`. ${INPUTS_DESCRIPTION} Sources take none.`,
    "",
    ...Object.entries(FRAMEWORK_SCHEMAS).flatMap(([name, schema]) => {
      const users = COMPONENTS.filter((c) => (c.framework as readonly string[]).includes(name)).map((c) => `\`${c.type}\``);
      return [`### ${name}`, "", `${z.globalRegistry.get(schema)?.description ?? ""} Taken by ${users.join(", ")}.`, "", table(fieldDocs(schema)), ""];
    }),
  ];
  for (const kind of ["source", "processor", "sink"] as const) {
    parts.push(`## ${TITLE[kind]}`, "");
    for (const spec of COMPONENTS.filter((c) => c.kind === kind)) parts.push(componentSection(spec), "");
  }
  return `${parts.join("\n").trimEnd()}\n`;
}

if (process.argv[1] && resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  writeFileSync(DOCS_FILE, renderTopologyDocs());
  process.stderr.write(`wrote ${DOCS_FILE}\n`);
}
