/**
 * The stack's registry service on its own: an isolated instance (temporary state directory, its own
 * port) started, killed with SIGKILL right after a registration, started again — the H2 file
 * database reopens and the schema is still there under the same id.
 */
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { SchemaRegistry, SchemaType } from "@kafkajs/confluent-schema-registry";
import { stackContext } from "../../stack/context.ts";
import { registryService } from "../../stack/registry.ts";
import type { StackContext } from "../../stack/types.ts";

const READY_MS = 150_000;
const PORT = 28081;

describe("stack registry service (Apicurio, H2 file storage)", () => {
  const base = stackContext(process.env, () => undefined);
  const stateDir = mkdtempSync(join(tmpdir(), "millrace-registry-"));
  const ctx: StackContext = { ...base, stateDir, ports: { ...base.ports, registry: PORT } };
  const url = registryService.env(ctx).MILLRACE_SCHEMA_REGISTRY_URL!;
  const pidFile = join(stateDir, "registry", "registry.pid");
  const schema = {
    type: "record",
    name: "Survivor",
    namespace: "millrace.test",
    fields: [{ name: "n", type: "long" }],
  };
  const subject = "crash-test-value";

  beforeAll(async () => {
    await registryService.install(ctx);
  }, 600_000);

  afterAll(async () => {
    try {
      await registryService.stop(ctx, { force: true });
    } finally {
      rmSync(stateDir, { recursive: true, force: true });
    }
  });

  it("points MILLRACE_SCHEMA_REGISTRY_URL at the ccompat API on its own port", () => {
    expect(url).toBe(`http://127.0.0.1:${PORT}/apis/ccompat/v7`);
  });

  let id = 0;
  let firstPid = 0;

  it("starts, answers, reports BACKWARD globally and registers a schema", async () => {
    await registryService.start(ctx);
    await registryService.waitReady(ctx, READY_MS);
    firstPid = Number(readFileSync(pidFile, "utf8").trim());

    const status = await registryService.status(ctx);
    expect(status).toMatchObject({ name: "registry", running: true, pid: firstPid });

    // start() on a running registry does nothing.
    await registryService.start(ctx);
    expect(Number(readFileSync(pidFile, "utf8").trim())).toBe(firstPid);

    const config = (await (await fetch(`${url}/config`)).json()) as { compatibilityLevel?: string };
    expect(config.compatibilityLevel).toBe("BACKWARD");

    const registry = new SchemaRegistry({ host: url, retry: { retries: 0 } });
    ({ id } = await registry.register({ type: SchemaType.AVRO, schema: JSON.stringify(schema) }, { subject }));
    expect(id).toBeGreaterThan(0);
  });

  it("keeps the schema under the same id after SIGKILL and a restart", async () => {
    // Killed right after the registration was acknowledged: nothing had time to flush lazily.
    await registryService.stop(ctx, { force: true });
    expect((await registryService.status(ctx)).running).toBe(false);

    await registryService.start(ctx);
    await registryService.waitReady(ctx, READY_MS);
    expect(Number(readFileSync(pidFile, "utf8").trim())).not.toBe(firstPid);

    const registry = new SchemaRegistry({ host: url, retry: { retries: 0 } });
    expect(await registry.getLatestSchemaId(subject)).toBe(id);
    expect(await registry.getRegistryIdBySchema(subject, { type: SchemaType.AVRO, schema: JSON.stringify(schema) })).toBe(id);
    const buf = await registry.encode(id, { n: 42 });
    expect(await registry.decode(buf)).toEqual({ n: 42 });

    // Registering it again after the crash gives the same id, not a new one.
    expect((await registry.register({ type: SchemaType.AVRO, schema: JSON.stringify(schema) }, { subject })).id).toBe(id);
  });

  it("stops gracefully", async () => {
    await registryService.stop(ctx);
    const status = await registryService.status(ctx);
    expect(status.running).toBe(false);
    expect(status.pid).toBeUndefined();
  });
});
