/**
 * Tenant-scoped Kafka credentials on the real broker (SASL/SCRAM, StandardAuthorizer): a tenant's
 * producer writes only its own sensor topic and reads only its own alerts topic; the worker identity
 * reads sensor topics and writes alerts and dead letters; wrong or missing credentials are refused;
 * rotation and `delete --purge` take the old identity away. Lifecycle: `createTenantLifecycle`
 * provisions the identity once (a rerun keeps it), `deleteTenant --purge` removes it.
 */
import { execFile } from "node:child_process";
import { randomUUID } from "node:crypto";
import { join } from "node:path";
import { promisify } from "node:util";
import type { Admin, Consumer, Kafka } from "kafkajs";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { logLevel } from "kafkajs";
import { createKafka, kafkaAuthFromEnv, type KafkaAuth } from "../../lib/kafka-client.ts";
import { createTopicsAndWait } from "../../lib/kafka-topics.ts";
import { parquetStorageConfig, S3ClientCache } from "../../sinks/s3-parquet/location.ts";
import { configCommandScramAdmin, ensureTenantCredentials, removeTenantCredentials, tenantKafkaUser, type CredentialsContext } from "../../tenants/credentials.ts";
import { createTenantLifecycle, deleteTenant, tenantCredentials, type LifecycleContext } from "../../tenants/lifecycle.ts";
import { createTestDatabase, type TestDatabase } from "../helpers/db.ts";
import { testKafka } from "../helpers/kafka.ts";
import { repoRoot } from "../../stack/context.ts";

const run = promisify(execFile);

const WAIT_MS = 30_000;

function client(auth: KafkaAuth | null, clientId = "kafka-auth-test"): Kafka {
  return createKafka({ clientId, auth, logLevel: logLevel.NOTHING, connectionTimeout: 3000, retry: { retries: 0 } });
}

function scram(username: string, password: string): KafkaAuth {
  return { mechanism: "scram-sha-256", username, password };
}

/** Resolve with the first message consumed from `topic` in `groupId`, or reject with the consumer's crash / after WAIT_MS. */
async function firstMessage(kafka: Kafka, groupId: string, topic: string): Promise<{ value: string; consumer: Consumer }> {
  const consumer = kafka.consumer({ groupId, sessionTimeout: 10_000, heartbeatInterval: 1000, retry: { retries: 0 } });
  const result = new Promise<string>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`no message on ${topic} within ${WAIT_MS} ms`)), WAIT_MS);
    consumer.on(consumer.events.CRASH, (e) => {
      clearTimeout(timer);
      reject(e.payload.error);
    });
    void (async () => {
      try {
        await consumer.connect();
        await consumer.subscribe({ topic, fromBeginning: true });
        await consumer.run({
          eachMessage: async ({ message }) => {
            clearTimeout(timer);
            resolve(message.value?.toString() ?? "");
          },
        });
      } catch (err) {
        clearTimeout(timer);
        reject(err);
      }
    })();
  });
  try {
    return { value: await result, consumer };
  } catch (err) {
    await consumer.disconnect().catch(() => undefined);
    throw err;
  }
}

async function produceOne(kafka: Kafka, topic: string, value: string): Promise<void> {
  const producer = kafka.producer({ idempotent: true, maxInFlightRequests: 1, allowAutoTopicCreation: false, retry: { retries: 2, initialRetryTime: 200, maxRetryTime: 1000 } });
  await producer.connect();
  try {
    await producer.send({ topic, acks: -1, messages: [{ key: "k", value }] });
  } finally {
    await producer.disconnect().catch(() => undefined);
  }
}

const errorText = (err: unknown) => `${(err as { type?: string }).type ?? ""} ${(err as Error).message}`;

describe("Kafka: tenant-scoped credentials (SASL/SCRAM + ACLs)", () => {
  const A = randomUUID();
  const B = randomUUID();
  let admin: Admin;
  let ctx: CredentialsContext;
  let passA = "";
  let passB = "";
  const consumers: Consumer[] = [];

  beforeAll(async () => {
    if (!kafkaAuthFromEnv()) throw new Error("these tests need a SASL broker: MILLRACE_KAFKA_USERNAME/PASSWORD (the local stack sets them)");
    admin = testKafka("kafka-auth-admin").admin();
    await admin.connect();
    await createTopicsAndWait(
      admin,
      [A, B].flatMap((t) => [
        { topic: `sensor-data-${t}`, numPartitions: 1 },
        { topic: `alerts-${t}`, numPartitions: 1 },
        { topic: `dead-letters-${t}`, numPartitions: 1 },
      ]),
    );
    ctx = { kafka: admin, scram: configCommandScramAdmin() };
    const [ca, cb] = await Promise.all([ensureTenantCredentials(ctx, A), ensureTenantCredentials(ctx, B)]);
    expect(ca).toMatchObject({ username: `tenant-${A}`, created: true, rotated: false, sensorTopic: `sensor-data-${A}`, alertsTopic: `alerts-${A}`, groupPrefix: `tenant-${A}` });
    passA = ca.password!;
    passB = cb.password!;
    const adminKafka = testKafka("kafka-auth-alerts");
    await produceOne(adminKafka, `alerts-${A}`, "alert-for-A");
    await produceOne(adminKafka, `alerts-${B}`, "alert-for-B");
  }, 120_000);

  afterAll(async () => {
    for (const c of consumers) await c.disconnect().catch(() => undefined);
    if (admin) {
      for (const t of [A, B]) await removeTenantCredentials(ctx, t).catch(() => undefined);
      await admin.deleteTopics({ topics: [A, B].flatMap((t) => [`sensor-data-${t}`, `alerts-${t}`, `dead-letters-${t}`]) }).catch(() => undefined);
      await admin.disconnect();
    }
  }, 60_000);

  it("tenant A's producer writes its own sensor topic and reads its own alerts topic", async () => {
    const a = client(scram(`tenant-${A}`, passA));
    await produceOne(a, `sensor-data-${A}`, "reading-of-A");
    const { value, consumer } = await firstMessage(a, `tenant-${A}-alert-reader`, `alerts-${A}`);
    consumers.push(consumer);
    expect(value).toBe("alert-for-A");
  });

  it("tenant A cannot write tenant B's sensor topic (TOPIC_AUTHORIZATION_FAILED)", async () => {
    const a = client(scram(`tenant-${A}`, passA));
    const err = await produceOne(a, `sensor-data-${B}`, "forged").then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(err, "the write to B's topic must fail").toBeDefined();
    expect(errorText(err)).toMatch(/TOPIC_AUTHORIZATION_FAILED|Not authorized to access topics/);
  });

  it("tenant A cannot read tenant B's alerts, nor any sensor topic (its own included), nor use a group outside its prefix", async () => {
    const a = client(scram(`tenant-${A}`, passA));
    const b = await firstMessage(a, `tenant-${A}-snoop`, `alerts-${B}`).then(
      (r) => (consumers.push(r.consumer), r.value),
      (e: unknown) => e,
    );
    expect(typeof b, "reading B's alerts must fail").not.toBe("string");
    expect(errorText(b)).toMatch(/TOPIC_AUTHORIZATION_FAILED|Not authorized/);
    for (const topic of [`sensor-data-${B}`, `sensor-data-${A}`]) {
      const r = await firstMessage(a, `tenant-${A}-sensor`, topic).then(
        (x) => (consumers.push(x.consumer), x.value),
        (e: unknown) => e,
      );
      expect(typeof r, `reading ${topic} must fail`).not.toBe("string");
      expect(errorText(r)).toMatch(/AUTHORIZATION_FAILED|Not authorized/);
    }
    const g = await firstMessage(a, "someone-elses-group", `alerts-${A}`).then(
      (x) => (consumers.push(x.consumer), x.value),
      (e: unknown) => e,
    );
    // kafkajs reports FindCoordinator's GROUP_AUTHORIZATION_FAILED only as "Failed to find group
    // coordinator" (it drops the broker's error); the same identity with a tenant-{id}* group works (first test).
    expect(typeof g, "a group outside tenant-{id}* must be refused").not.toBe("string");
    expect(errorText(g)).toMatch(/GROUP_AUTHORIZATION_FAILED|Not authorized|Failed to find group coordinator/);
  }, 120_000);

  it("tenant B's own identity is scoped the same way (reads its alerts, not A's)", async () => {
    const b = client(scram(`tenant-${B}`, passB));
    const own = await firstMessage(b, `tenant-${B}-reader`, `alerts-${B}`);
    consumers.push(own.consumer);
    expect(own.value).toBe("alert-for-B");
    const err = await produceOne(b, `sensor-data-${A}`, "forged").then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(errorText(err)).toMatch(/TOPIC_AUTHORIZATION_FAILED|Not authorized/);
  }, 60_000);

  it("the worker identity reads sensor topics and writes alerts and dead letters, but cannot write sensor topics", async () => {
    const auth = kafkaAuthFromEnv("worker");
    expect(auth?.username).toBe("millrace-worker");
    const w = client(auth!);
    await produceOne(w, `alerts-${A}`, "from-worker");
    await produceOne(w, `dead-letters-${A}`, "dl-from-worker");
    await produceOne(testKafka("kafka-auth-admin-2"), `sensor-data-${B}`, "reading-of-B");
    const { value, consumer } = await firstMessage(w, `millrace-auth-test-${randomUUID().slice(0, 8)}`, `sensor-data-${B}`);
    consumers.push(consumer);
    expect(value).toBe("reading-of-B");
    const err = await produceOne(w, `sensor-data-${A}`, "forged").then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(errorText(err)).toMatch(/TOPIC_AUTHORIZATION_FAILED|Not authorized/);
  }, 60_000);

  it("refuses a wrong password and an unauthenticated client", async () => {
    const wrong = client(scram(`tenant-${A}`, `${passA}x`)).admin();
    await expect(wrong.connect()).rejects.toThrow(/SASL|authentic/i);
    // Without SASL the broker answers ApiVersions (kafkajs' connect) and nothing else: it closes the connection.
    const none = client(null).admin();
    await expect(none.connect().then(() => none.listTopics())).rejects.toThrow();
    await none.disconnect().catch(() => undefined);
  });

  it("rotation: the old password stops working, the new one works; removal takes the identity away", async () => {
    const again = await ensureTenantCredentials(ctx, A);
    expect(again).toMatchObject({ created: false, rotated: false, password: undefined });
    const rotated = await ensureTenantCredentials(ctx, A, { rotate: true });
    expect(rotated).toMatchObject({ created: false, rotated: true });
    expect(rotated.password).toBeDefined();
    expect(rotated.password).not.toBe(passA);
    const old = client(scram(`tenant-${A}`, passA)).admin();
    await expect(old.connect()).rejects.toThrow(/SASL|authentic/i);
    await produceOne(client(scram(`tenant-${A}`, rotated.password!)), `sensor-data-${A}`, "after-rotate");

    const { aclsDeleted } = await removeTenantCredentials(ctx, A);
    expect(aclsDeleted).toBe(6);
    const gone = client(scram(`tenant-${A}`, rotated.password!)).admin();
    await expect(gone.connect()).rejects.toThrow(/SASL|authentic/i);
    expect(await ctx.scram.exists(tenantKafkaUser(A))).toBe(false);
  }, 120_000);
});

describe("Kafka credentials in the tenant lifecycle", () => {
  let db: TestDatabase;
  let admin: Admin;
  let cache: S3ClientCache;
  let lc: LifecycleContext;
  const T = randomUUID();

  beforeAll(async () => {
    db = await createTestDatabase();
    admin = testKafka("kafka-auth-lifecycle").admin();
    await admin.connect();
    cache = new S3ClientCache(process.env);
    lc = { db: db.admin, kafka: admin, s3: cache, storageConfig: parquetStorageConfig(process.env), env: process.env };
  }, 60_000);

  afterAll(async () => {
    cache?.destroy();
    await admin?.disconnect();
    await db?.drop();
  }, 60_000);

  it("the CLI: tenants create --json prints the credentials; millrace produce with them writes the own topic, and is refused another tenant's", async () => {
    const own = randomUUID();
    const cli = async (args: string[], env: NodeJS.ProcessEnv = {}) =>
      await run(join(repoRoot, "millrace"), args, { cwd: repoRoot, timeout: 120_000, env: { ...process.env, MILLRACE_PG_ADMIN_URL: db.adminUrl, ...env } });
    const created = JSON.parse((await cli(["tenants", "create", "--name", "auth-cli", "--tenant-id", own, "--json"])).stdout) as { kafka: { username: string; password: string | null } };
    expect(created.kafka.username).toBe(`tenant-${own}`);
    expect(created.kafka.password).toEqual(expect.any(String));
    const rerun = JSON.parse((await cli(["tenants", "create", "--name", "auth-cli", "--tenant-id", own, "--json"])).stdout) as { kafka: { password: string | null } };
    expect(rerun.kafka.password).toBeNull();
    expect((await cli(["tenants", "show", own])).stdout).toContain(`kafka       user tenant-${own}: 6 of 6 ACLs in place`);
    const auth = { MILLRACE_PRODUCER_KAFKA_PASSWORD: created.kafka.password! };
    const ok = await cli(["produce", "synthetic", "--tenants", own, "--count", "20", "--kafka-username", `tenant-${own}`], auth);
    expect(ok.stdout + ok.stderr).toMatch(/20 records acknowledged/);
    const other = randomUUID();
    await cli(["tenants", "create", "--name", "auth-cli-other", "--tenant-id", other]);
    const refused = await cli(["produce", "synthetic", "--tenants", other, "--count", "20", "--kafka-username", `tenant-${own}`], auth).then(
      () => undefined,
      (e: { stderr?: string }) => e.stderr ?? "",
    );
    expect(refused, "producing to another tenant's topic must fail").toBeDefined();
    expect(refused).toMatch(new RegExp(`Kafka user tenant-${own} may not see it`));
    for (const t of [own, other]) await deleteTenant(lc, t, { purge: true });
  }, 240_000);

  it("create provisions the identity once (a rerun keeps the password); credentials --rotate; delete --purge removes it", async () => {
    const first = await createTenantLifecycle(lc, { tenantId: T, name: "auth-lifecycle" });
    expect(first.kafkaCredentials).toMatchObject({ username: `tenant-${T}`, created: true });
    const pass = first.kafkaCredentials!.password!;
    await produceOne(client(scram(`tenant-${T}`, pass)), `sensor-data-${T}`, "x");

    const rerun = await createTenantLifecycle(lc, { tenantId: T, name: "auth-lifecycle" });
    expect(rerun.kafkaCredentials).toMatchObject({ created: false, password: undefined });
    expect(rerun.notes.join("\n")).toMatch(/existed already/);
    await produceOne(client(scram(`tenant-${T}`, pass)), `sensor-data-${T}`, "still-works");

    const rotated = await tenantCredentials(lc, T, { rotate: true });
    expect(rotated.password).toBeDefined();

    const del = await deleteTenant(lc, T, { purge: true });
    expect(del.kafkaAclsDeleted).toBe(6);
    await expect(client(scram(`tenant-${T}`, rotated.password!)).admin().connect()).rejects.toThrow(/SASL|authentic/i);
    await expect(tenantCredentials(lc, T)).rejects.toThrow(/deleted/);
  }, 180_000);
});
