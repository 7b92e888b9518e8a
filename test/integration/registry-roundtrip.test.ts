/**
 * The schema registry of the stack (or whatever MILLRACE_SCHEMA_REGISTRY_URL points at) through the
 * client millrace uses, @kafkajs/confluent-schema-registry: register, encode/decode, idempotent
 * re-registration, BACKWARD evolution with an avsc resolver, rejection of an incompatible schema, and
 * Confluent's error codes.
 */
import { randomUUID } from "node:crypto";
import { describe, expect, it } from "vitest";
import avro from "avsc";
import { SchemaRegistry, SchemaType } from "@kafkajs/confluent-schema-registry";
import { withCompatibilityRepair } from "../../lib/registry-repair.ts";

const url = process.env.MILLRACE_SCHEMA_REGISTRY_URL ?? "";

const v1 = {
  type: "record" as const,
  name: "Reading",
  namespace: "millrace.test",
  fields: [
    { name: "machine", type: "string" },
    { name: "ts", type: { type: "long", logicalType: "timestamp-millis" } },
    { name: "value", type: "double" },
  ],
};
/** BACKWARD compatible: a new field with a default. */
const v2 = { ...v1, fields: [...v1.fields, { name: "unit", type: "string", default: "celsius" }] };
/** Not BACKWARD compatible: a new field without a default (v2 readers cannot read v1 data). */
const incompatible = { ...v1, fields: [...v1.fields, { name: "line", type: "int" }] };

function avroSchema(schema: object, pretty = false): { type: SchemaType.AVRO; schema: string } {
  return { type: SchemaType.AVRO, schema: pretty ? JSON.stringify(schema, null, 2) : JSON.stringify(schema) };
}

/** Confluent wire format: magic byte 0, 4-byte big-endian schema id, then the Avro body. */
function wire(buf: Buffer): { id: number; body: Buffer } {
  expect(buf.readUInt8(0)).toBe(0);
  return { id: buf.readInt32BE(1), body: buf.subarray(5) };
}

describe("schema registry round trip (Confluent-compatible API)", () => {
  const registry = new SchemaRegistry({ host: url, clientId: "millrace-test", retry: { retries: 0 } });
  const subject = `millrace-test-${randomUUID()}-value`;
  const record = { machine: "press-07", ts: 1_733_212_800_000, value: 21.5 };

  it("has a registry URL", () => {
    expect(url, "MILLRACE_SCHEMA_REGISTRY_URL").toMatch(/^https?:\/\//);
  });

  let id1 = 0;

  it("registers a record schema, encodes and decodes a record", async () => {
    ({ id: id1 } = await registry.register(avroSchema(v1), { subject }));
    expect(id1).toBeGreaterThan(0);
    expect(await registry.getLatestSchemaId(subject)).toBe(id1);

    const buf = await registry.encode(id1, record);
    expect(wire(buf).id).toBe(id1);
    expect(await registry.decode(buf)).toEqual(record);
  });

  it("returns the same id for the same schema, also when only its formatting differs", async () => {
    expect((await registry.register(avroSchema(v1), { subject })).id).toBe(id1);
    expect((await registry.register(avroSchema(v1, true), { subject })).id).toBe(id1);
  });

  it("accepts a BACKWARD-compatible evolution; v1 data reads with the v2 schema, giving the default", async () => {
    const { id: id2 } = await registry.register(avroSchema(v2), { subject });
    expect(id2).not.toBe(id1);
    expect(await registry.getLatestSchemaId(subject)).toBe(id2);

    const v1Bytes = await registry.encode(id1, record);
    const { id, body } = wire(v1Bytes);
    // The writer schema comes from the registry by the id in the message; the reader is v2.
    const writer = avro.Type.forSchema(JSON.parse((await fetchJson(`/schemas/ids/${id}`)).schema as string) as avro.Schema);
    const reader = avro.Type.forSchema(v2 as avro.Schema);
    const resolver = reader.createResolver(writer);
    expect(reader.fromBuffer(body, resolver)).toEqual({ ...record, unit: "celsius" });

    // The client does the same with a reader schema.
    expect(await registry.decode(v1Bytes, { [SchemaType.AVRO]: { readerSchema: v2 } })).toEqual({ ...record, unit: "celsius" });
  });

  it("rejects an incompatible evolution with 409", async () => {
    const err = await registry.register(avroSchema(incompatible), { subject }).then(
      () => undefined,
      (e: unknown) => e as Error & { status?: number },
    );
    expect(err, "registering an incompatible schema must fail").toBeInstanceOf(Error);
    expect(err!.status).toBe(409);
    expect(err!.message).toMatch(/incompatible/i);

    // The raw answer carries Confluent's error body.
    const res = await fetch(`${url}/subjects/${encodeURIComponent(subject)}/versions`, {
      method: "POST",
      headers: { "content-type": "application/vnd.schemaregistry.v1+json" },
      body: JSON.stringify({ schema: JSON.stringify(incompatible) }),
    });
    expect(res.status).toBe(409);
    expect(((await res.json()) as { error_code?: number }).error_code).toBe(409);
  });

  it("answers 40403 for an unknown schema id", async () => {
    const unknown = 2_000_000_000;
    const err = await registry.getSchema(unknown).then(
      () => undefined,
      (e: unknown) => e as Error & { status?: number },
    );
    expect(err, "getSchema of an unknown id must fail").toBeInstanceOf(Error);
    expect(err!.status).toBe(404);

    const res = await fetch(`${url}/schemas/ids/${unknown}`);
    expect(res.status).toBe(404);
    expect(((await res.json()) as { error_code?: number }).error_code).toBe(40403);
  });

  it("answers 40401 for an unknown subject, through the client and on the wire", async () => {
    const unknown = `millrace-test-${randomUUID()}-value`;
    const err = await registry.getLatestSchemaId(unknown).then(
      () => undefined,
      (e: unknown) => e as Error & { status?: number },
    );
    expect(err, "getLatestSchemaId of an unknown subject must fail").toBeInstanceOf(Error);
    expect(err!.status).toBe(404);

    for (const path of [`/subjects/${unknown}/versions`, `/subjects/${unknown}/versions/latest`]) {
      const res = await fetch(`${url}${path}`);
      expect(res.status, path).toBe(404);
      expect(((await res.json()) as { error_code?: number }).error_code, path).toBe(40401);
    }
  });

  it("answers 40402 for an unknown version of a known subject", async () => {
    const res = await fetch(`${url}/subjects/${encodeURIComponent(subject)}/versions/999`);
    expect(res.status).toBe(404);
    expect(((await res.json()) as { error_code?: number }).error_code).toBe(40402);
  });

  it("rejects an invalid schema with 42201, and registers nothing for it", async () => {
    const invalid = `millrace-test-${randomUUID()}-value`;
    const bodies = [
      { schemaType: "AVRO", schema: JSON.stringify({ type: "record", name: "Broken", fields: [{ name: "a", type: "no_such_type" }] }) },
      { schema: "this is not a schema" },
    ];
    for (const body of bodies) {
      const res = await fetch(`${url}/subjects/${invalid}/versions`, {
        method: "POST",
        headers: { "content-type": "application/vnd.schemaregistry.v1+json" },
        body: JSON.stringify(body),
      });
      expect(res.status, body.schema).toBe(422);
      expect(((await res.json()) as { error_code?: number }).error_code, body.schema).toBe(42201);
    }
    const after = await fetch(`${url}/subjects/${invalid}/versions`);
    expect(((await after.json()) as { error_code?: number }).error_code).toBe(40401);
  });

  it("a first registration interrupted between its two calls (schema posted, compatibility not set) is finished, not wedged", async () => {
    const torn = `millrace-test-${randomUUID()}-value`;
    // The first of the client's two calls, as a process killed right after it would leave it.
    const posted = await fetch(`${url}/subjects/${torn}/versions`, {
      method: "POST",
      headers: { "content-type": "application/vnd.schemaregistry.v1+json" },
      body: JSON.stringify({ schema: JSON.stringify(v1) }),
    });
    expect(posted.status).toBe(200);
    const level = async () => ((await (await fetch(`${url}/config/${torn}`)).json()) as { compatibilityLevel?: string }).compatibilityLevel;
    expect(await level()).toBe("NONE");
    // The plain client refuses that subject for good…
    await expect(registry.register(avroSchema(v1), { subject: torn })).rejects.toThrow(/BACKWARD != NONE/);
    // …the repairing registrar sets BACKWARD and registers (the same id as the posted schema).
    const { id } = await withCompatibilityRepair(registry, url).register(avroSchema(v1), { subject: torn });
    expect(id).toBe(await registry.getLatestSchemaId(torn));
    expect(await level()).toBe("BACKWARD");
    expect((await registry.register(avroSchema(v1), { subject: torn })).id).toBe(id);
  });
});

async function fetchJson(path: string): Promise<Record<string, unknown>> {
  const res = await fetch(`${url}${path}`);
  const body = (await res.json()) as Record<string, unknown>;
  if (!res.ok) throw new Error(`GET ${path} answered ${res.status}: ${JSON.stringify(body)}`);
  return body;
}
