/** `type: avro_decode` — Confluent wire format (magic byte, schema id, Avro body) → a reading, resolved to our reader schema. */
import { readFileSync } from "node:fs";
import { resolve } from "node:path";
import avro from "avsc";
import { z } from "zod";
import { defineComponent, type ConfigProblem } from "../component-spec.ts";
import { duration, path } from "../fields.ts";

const config = z.strictObject({
  schema: path()
    .prefault("schemas/sensor-reading.avsc")
    .describe("The reader schema (Avro JSON), relative to the topology file; writer schemas are fetched from the schema registry by id."),
  unknown_schema_ttl: duration({ min: 1_000 })
    .prefault("60s")
    .describe("How long a schema id the registry does not know is remembered as unknown, so a flood of bad ids costs one registry call per TTL."),
});

function checkSchemaFile(file: string, baseDir: string): ConfigProblem[] {
  const abs = resolve(baseDir, file);
  let text: string;
  try {
    text = readFileSync(abs, "utf8");
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    return [{ path: ["schema"], message: code === "ENOENT" ? `schema file ${abs} does not exist` : `cannot read schema file ${abs}: ${(err as Error).message}` }];
  }
  try {
    avro.Type.forSchema(JSON.parse(text) as avro.Schema);
    return [];
  } catch (err) {
    return [{ path: ["schema"], message: `${abs} is not a valid Avro schema: ${(err as Error).message}` }];
  }
}

export const avroDecode = defineComponent({
  type: "avro_decode",
  kind: "processor",
  summary:
    "Decodes Confluent wire-format Avro: reads the schema id, fetches that writer schema once per id from the registry and resolves it to the reader schema, so older and newer compatible producers both work. Undecodable records are rejected (dead-lettered), never dropped.",
  config,
  framework: [],
  accepts: "kafka_records",
  emits: "decoded_readings",
  example: { id: "decode", entry: { inputs: ["tenant_topics"], schema: "schemas/sensor-reading.avsc", unknown_schema_ttl: "60s" } },
  check: (c, { baseDir }) => checkSchemaFile(c.schema, baseDir),
  plan: ({ id, config: c, inputs, baseDir }) => ({
    id,
    type: "avro_decode",
    input: inputs[0]!,
    schemaFile: resolve(baseDir, c.schema),
    unknownSchemaTtlMs: c.unknown_schema_ttl,
  }),
});
