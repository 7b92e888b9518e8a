import { describe, expect, it } from "vitest";
import { SENSOR_READING_SCHEMA_TEXT } from "../schemas/index.ts";
import { registerSensorSchema, sensorSubject, type SchemaRegistrar } from "./registry.ts";

function fakeRegistry(answer: (subject: string, n: number) => Promise<{ id: number }> = async (_s, n) => ({ id: 100 + n })) {
  const calls: { subject: string; schema: string }[] = [];
  const registry: SchemaRegistrar = {
    register: async (schema, opts) => {
      calls.push({ subject: opts.subject, schema: schema.schema });
      return await answer(opts.subject, calls.length);
    },
  };
  return { registry, calls };
}

/** A union whose default (0) does not match its first branch ("null"): Avro forbids it. */
const BAD_UNION_DEFAULT = JSON.stringify({
  type: "record",
  name: "SensorReading",
  namespace: "io.millrace.sensor",
  fields: [{ name: "temperature", type: ["null", "float"], default: 0 }],
});

describe("registerSensorSchema", () => {
  it("uses TopicNameStrategy subjects", () => {
    expect(sensorSubject("sensor-data-3f2b8c1e-6d4a-4b7e-9c0d-1a2b3c4d5e6f")).toBe("sensor-data-3f2b8c1e-6d4a-4b7e-9c0d-1a2b3c4d5e6f-value");
  });

  it("registers the SensorReading schema and returns the id, once per subject", async () => {
    const { registry, calls } = fakeRegistry();
    expect(await registerSensorSchema(registry, "sensor-data-a-value")).toBe(101);
    expect(await registerSensorSchema(registry, "sensor-data-a-value")).toBe(101);
    expect(await registerSensorSchema(registry, "sensor-data-b-value")).toBe(102);
    expect(calls).toEqual([
      { subject: "sensor-data-a-value", schema: SENSOR_READING_SCHEMA_TEXT },
      { subject: "sensor-data-b-value", schema: SENSOR_READING_SCHEMA_TEXT },
    ]);
    // Concurrent first calls share one registration.
    const [x, y] = await Promise.all([registerSensorSchema(registry, "sensor-data-c-value"), registerSensorSchema(registry, "sensor-data-c-value")]);
    expect(x).toBe(y);
    expect(calls).toHaveLength(3);
  });

  it("refuses a schema whose union default does not match the first branch, before the registry sees it", async () => {
    const { registry, calls } = fakeRegistry();
    await expect(registerSensorSchema(registry, "sensor-data-a-value", BAD_UNION_DEFAULT)).rejects.toThrow(/Avro schema is invalid and was not registered/);
    expect(calls).toHaveLength(0);
  });

  it("does not cache a failure, and says when the registry refused the schema as incompatible", async () => {
    let fail = true;
    const { registry, calls } = fakeRegistry(async () => {
      if (fail) throw Object.assign(new Error("Schema being registered is incompatible with an earlier schema"), { status: 409 });
      return { id: 9 };
    });
    await expect(registerSensorSchema(registry, "s-value")).rejects.toThrow(/refused the schema as incompatible.*subject s-value, HTTP 409/);
    fail = false;
    expect(await registerSensorSchema(registry, "s-value")).toBe(9);
    expect(calls).toHaveLength(2);
  });
});
