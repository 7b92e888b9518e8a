/**
 * Registering the SensorReading schema with the schema registry (Apicurio's Confluent-compatible API
 * through @kafkajs/confluent-schema-registry), once per subject.
 *
 * The schema is linted with avsc first ({@link parseAvroSchema}): a schema that Avro forbids — e.g. a
 * union whose default does not match its first branch — is refused here, before it reaches the
 * registry (which might accept it and leave every consumer unable to parse it).
 */
import type avro from "avsc";
import { SchemaRegistry, SchemaType } from "@kafkajs/confluent-schema-registry";
import { requireEnv } from "../lib/env.ts";
import { withCompatibilityRepair, type Registrar } from "../lib/registry-repair.ts";
import { parseAvroSchema, SENSOR_READING_SCHEMA_TEXT, SENSOR_READING_SUBJECT_SUFFIX } from "../schemas/index.ts";

/** What {@link registerSensorSchema} needs of a registry client (a SchemaRegistry, or a fake in tests). */
export type SchemaRegistrar = Registrar;

/** TopicNameStrategy: the value subject of a topic. */
export function sensorSubject(topic: string): string {
  return `${topic}${SENSOR_READING_SUBJECT_SUFFIX}`;
}

/**
 * A registry client for MILLRACE_SCHEMA_REGISTRY_URL (which already ends in /apis/ccompat/v7), that
 * also finishes a first registration another producer was killed in the middle of
 * (lib/registry-repair.ts).
 */
export function createSchemaRegistry(url: string = requireEnv("MILLRACE_SCHEMA_REGISTRY_URL")): SchemaRegistrar {
  return withCompatibilityRepair(new SchemaRegistry({ host: url, clientId: "millrace-produce", retry: { retries: 3 } }), url);
}

let sensorType: avro.Type | undefined;

/** The parsed SensorReading type (parsed once per process). */
export function sensorReadingType(): avro.Type {
  sensorType ??= parseAvroSchema(SENSOR_READING_SCHEMA_TEXT);
  return sensorType;
}

/** Lint a schema text with avsc; throws a clear error naming what is wrong. */
export function lintAvroSchema(text: string): avro.Type {
  try {
    return parseAvroSchema(text);
  } catch (err) {
    throw new Error(`the Avro schema is invalid and was not registered: ${(err as Error).message}`, { cause: err });
  }
}

const cache = new WeakMap<SchemaRegistrar, Map<string, Promise<number>>>();

/**
 * Register `schemaText` (default: the SensorReading schema) under `subject` (use
 * {@link sensorSubject}(topic)) and return its id. Cached per registry client and subject; a failed
 * registration is not cached, so a later call tries again.
 */
export async function registerSensorSchema(
  registry: SchemaRegistrar,
  subject: string,
  schemaText: string = SENSOR_READING_SCHEMA_TEXT,
): Promise<number> {
  let perRegistry = cache.get(registry);
  if (perRegistry === undefined) {
    perRegistry = new Map();
    cache.set(registry, perRegistry);
  }
  const key = `${subject}\n${schemaText}`;
  const cached = perRegistry.get(key);
  if (cached !== undefined) return await cached;

  lintAvroSchema(schemaText);
  const pending = registry.register({ type: SchemaType.AVRO, schema: schemaText }, { subject }).then(
    ({ id }) => {
      if (!Number.isInteger(id) || id < 0) throw new Error(`the schema registry answered an invalid id ${JSON.stringify(id)} for subject ${subject}`);
      return id;
    },
    (err: unknown) => {
      const e = err as Error & { status?: number };
      const what = e.status === 409 ? "refused the schema as incompatible with the subject's latest version" : "failed to register the schema";
      throw new Error(`schema registry ${what} (subject ${subject}${e.status ? `, HTTP ${e.status}` : ""}): ${e.message}`, { cause: err });
    },
  );
  perRegistry.set(key, pending);
  try {
    return await pending;
  } catch (err) {
    perRegistry.delete(key);
    throw err;
  }
}
