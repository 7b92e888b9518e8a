import { createServer, type Server } from "node:net";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import setup from "../helpers/global-setup.ts";
import { describeUnreachable, stackAddresses, unreachable } from "../helpers/reachability.ts";

async function listen(): Promise<{ server: Server; port: number }> {
  const server = createServer((s) => s.destroy());
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  return { server, port: (server.address() as { port: number }).port };
}

describe("the integration suite's reachability probe (test/helpers/global-setup.ts)", () => {
  let open: { server: Server; port: number };
  let closedPort = 0;

  beforeAll(async () => {
    open = await listen();
    // A port that was just free: listen, note it, close.
    const gone = await listen();
    closedPort = gone.port;
    await new Promise((r) => gone.server.close(r));
  });
  afterAll(async () => {
    await new Promise((r) => open.server.close(r));
  });

  it("reads every service's address from the settings", () => {
    expect(
      stackAddresses({
        MILLRACE_KAFKA_BROKERS: "127.0.0.1:19092, broker-2:9093",
        MILLRACE_SCHEMA_REGISTRY_URL: "http://127.0.0.1:18081/apis/ccompat/v7",
        MILLRACE_PG_ADMIN_URL: "postgres://u:p@127.0.0.1:15432/millrace",
        MILLRACE_S3_ENDPOINT: "https://s3.example.com",
      }),
    ).toEqual([
      { service: "kafka", setting: "MILLRACE_KAFKA_BROKERS", host: "127.0.0.1", port: 19092 },
      { service: "kafka", setting: "MILLRACE_KAFKA_BROKERS", host: "broker-2", port: 9093 },
      { service: "registry", setting: "MILLRACE_SCHEMA_REGISTRY_URL", host: "127.0.0.1", port: 18081 },
      { service: "postgres", setting: "MILLRACE_PG_ADMIN_URL", host: "127.0.0.1", port: 15432 },
      { service: "s3", setting: "MILLRACE_S3_ENDPOINT", host: "s3.example.com", port: 443 },
    ]);
    // A PostgreSQL Unix socket is not probed over TCP; the default port is 5432.
    expect(stackAddresses({ MILLRACE_PG_ADMIN_URL: "postgres://u@/millrace?host=/var/run/postgresql" })).toEqual([]);
    expect(stackAddresses({ MILLRACE_PG_ADMIN_URL: "postgres://u@db.internal/millrace" })[0]!.port).toBe(5432);
    expect(() => stackAddresses({ MILLRACE_KAFKA_BROKERS: "no-port" })).toThrow(/not host:port/);
  });

  it("names exactly the services that do not answer, quickly", async () => {
    const env = {
      MILLRACE_KAFKA_BROKERS: `127.0.0.1:${open.port}`,
      MILLRACE_SCHEMA_REGISTRY_URL: `http://127.0.0.1:${closedPort}/apis/ccompat/v7`,
      MILLRACE_PG_ADMIN_URL: `postgres://u:p@127.0.0.1:${open.port}/millrace`,
      MILLRACE_S3_ENDPOINT: `http://127.0.0.1:${closedPort}`,
    };
    const started = Date.now();
    const down = await unreachable(stackAddresses(env), 2_000);
    expect(Date.now() - started).toBeLessThan(2_000); // a refused connection does not wait for the timeout
    expect(down.map((d) => d.service)).toEqual(["registry", "s3"]);
    const msg = describeUnreachable(down, (s) => s === "MILLRACE_S3_ENDPOINT");
    expect(msg).toContain("integration tests need the local stack, but registry, s3 do not answer:");
    expect(msg).toContain(`registry: 127.0.0.1:${closedPort} (MILLRACE_SCHEMA_REGISTRY_URL)`);
    expect(msg).toContain(`s3: 127.0.0.1:${closedPort} (MILLRACE_S3_ENDPOINT, from the stack's env file)`);
    expect(await unreachable(stackAddresses({ MILLRACE_KAFKA_BROKERS: `127.0.0.1:${open.port}` }))).toEqual([]);
  });

  it("global setup fails at once with the how-to-start message when the settings name a stopped stack", async () => {
    const keys = ["MILLRACE_KAFKA_BROKERS", "MILLRACE_SCHEMA_REGISTRY_URL", "MILLRACE_PG_ADMIN_URL", "MILLRACE_S3_ENDPOINT"] as const;
    const saved = Object.fromEntries(keys.map((k) => [k, process.env[k]]));
    Object.assign(process.env, {
      MILLRACE_KAFKA_BROKERS: `127.0.0.1:${closedPort}`,
      MILLRACE_SCHEMA_REGISTRY_URL: `http://127.0.0.1:${closedPort}/apis/ccompat/v7`,
      MILLRACE_PG_ADMIN_URL: `postgres://u:p@127.0.0.1:${open.port}/millrace`,
      MILLRACE_S3_ENDPOINT: `http://127.0.0.1:${closedPort}`,
    });
    try {
      const err = await setup().then(() => undefined, (e: unknown) => e as Error);
      expect(err, "global setup must refuse a stack that does not answer").toBeInstanceOf(Error);
      expect(err!.message).toContain("integration tests need the local stack, but kafka, registry, s3 do not answer:");
      expect(err!.message).not.toContain("postgres:");
      expect(err!.message).toContain("./millrace stack up");
    } finally {
      for (const k of keys) {
        if (saved[k] === undefined) delete process.env[k];
        else process.env[k] = saved[k];
      }
    }
  });
});
