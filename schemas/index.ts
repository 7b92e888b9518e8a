/** The contracts: .avsc files parsed once at start-up (never per message). */
import { readFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import avro from "avsc";

const DIR = dirname(fileURLToPath(import.meta.url));

export type { SensorReading } from "./generated.ts";

export function loadSchemaText(file: string): string {
  return readFileSync(join(DIR, file), "utf8");
}

/** Parse a schema with avsc, rejecting what Avro forbids (e.g. a union default not of its first branch). */
export function parseAvroSchema(text: string): avro.Type {
  return avro.Type.forSchema(JSON.parse(text) as avro.Schema, { wrapUnions: false });
}

export const SENSOR_READING_SCHEMA_TEXT = loadSchemaText("sensor-reading.avsc");
export const SENSOR_READING_SUBJECT_SUFFIX = "-value";
