import { describe, expect, it } from "vitest";
import { javaClientProperties, kafkaAuthFromEnv, kafkaClientConfig } from "./kafka-client.ts";
import { kafkaListeners, kafkaSecurityProperties } from "../stack/kafka.ts";
import type { StackContext } from "../stack/types.ts";

const admin = { MILLRACE_KAFKA_BROKERS: "h1:9092, h2:9092", MILLRACE_KAFKA_USERNAME: "millrace-admin", MILLRACE_KAFKA_PASSWORD: "pw" };

describe("kafka client settings", () => {
  it("without a username: PLAINTEXT (no sasl option), brokers split and trimmed", () => {
    const c = kafkaClientConfig({ clientId: "x", env: { MILLRACE_KAFKA_BROKERS: "a:1, b:2" } });
    expect(c.brokers).toEqual(["a:1", "b:2"]);
    expect(c.sasl).toBeUndefined();
  });

  it("with a username: SCRAM-SHA-256 by default; the worker and producer identities fall back to it", () => {
    expect(kafkaClientConfig({ clientId: "x", env: admin }).sasl).toEqual({ mechanism: "scram-sha-256", username: "millrace-admin", password: "pw" });
    expect(kafkaAuthFromEnv("worker", admin)?.username).toBe("millrace-admin");
    const env = { ...admin, MILLRACE_KAFKA_SASL_MECHANISM: "SCRAM-SHA-512", MILLRACE_WORKER_KAFKA_USERNAME: "millrace-worker", MILLRACE_WORKER_KAFKA_PASSWORD: "wpw" };
    expect(kafkaAuthFromEnv("worker", env)).toEqual({ mechanism: "scram-sha-512", username: "millrace-worker", password: "wpw" });
    expect(kafkaAuthFromEnv("producer", env)?.username).toBe("millrace-admin");
  });

  it("auth: null forces PLAINTEXT; explicit auth wins over the environment", () => {
    expect(kafkaClientConfig({ clientId: "x", env: admin, auth: null }).sasl).toBeUndefined();
    expect(kafkaClientConfig({ clientId: "x", env: admin, auth: { mechanism: "plain", username: "u", password: "p" } }).sasl).toMatchObject({ mechanism: "plain", username: "u" });
  });

  it("refuses half-set credentials and unknown mechanisms, naming the variable", () => {
    expect(() => kafkaAuthFromEnv("default", { MILLRACE_KAFKA_USERNAME: "u" })).toThrow(/MILLRACE_KAFKA_PASSWORD/);
    expect(() => kafkaAuthFromEnv("worker", { ...admin, MILLRACE_WORKER_KAFKA_PASSWORD: "x" })).toThrow(/MILLRACE_WORKER_KAFKA_USERNAME/);
    expect(() => kafkaAuthFromEnv("default", { ...admin, MILLRACE_KAFKA_SASL_MECHANISM: "gssapi" })).toThrow(/scram-sha-256/);
    expect(() => kafkaAuthFromEnv("default", { MILLRACE_KAFKA_SASL_MECHANISM: "scram-sha-256" })).toThrow(/MILLRACE_KAFKA_USERNAME/);
  });

  it("Java client properties: SASL_PLAINTEXT with a quoted JAAS line, or none", () => {
    expect(javaClientProperties(undefined)).toEqual({});
    expect(javaClientProperties({ mechanism: "scram-sha-256", username: "u", password: 'p"q' })).toEqual({
      "security.protocol": "SASL_PLAINTEXT",
      "sasl.mechanism": "SCRAM-SHA-256",
      "sasl.jaas.config": 'org.apache.kafka.common.security.scram.ScramLoginModule required username="u" password="p\\"q";',
    });
  });
});

describe("stack broker security properties", () => {
  const ctx = { host: "127.0.0.1", ports: { kafka: 1, kafkaController: 2 }, kafkaProxiedListener: { port: 3, advertisedPort: 4 } } as unknown as StackContext;
  const creds = {
    admin: { mechanism: "scram-sha-256" as const, username: "millrace-admin", password: "a" },
    broker: { mechanism: "scram-sha-256" as const, username: "millrace-broker", password: "b" },
    worker: { mechanism: "scram-sha-256" as const, username: "millrace-worker", password: "w" },
  };
  it("SASL_SCRAM and PROXIED are SASL_PLAINTEXT, the controller PLAINTEXT; deny by default; the broker logs in as millrace-broker", () => {
    const ls = kafkaListeners(ctx);
    expect(ls.map((l) => `${l.name}:${l.protocol}`)).toEqual(["SASL_SCRAM:SASL_PLAINTEXT", "CONTROLLER:PLAINTEXT", "PROXIED:SASL_PLAINTEXT"]);
    const p = kafkaSecurityProperties(ls, creds);
    expect(p).toMatchObject({
      "sasl.enabled.mechanisms": "SCRAM-SHA-256",
      "sasl.mechanism.inter.broker.protocol": "SCRAM-SHA-256",
      "authorizer.class.name": "org.apache.kafka.metadata.authorizer.StandardAuthorizer",
      "allow.everyone.if.no.acl.found": "false",
      "super.users": "User:millrace-admin;User:millrace-broker;User:ANONYMOUS",
    });
    expect(p["listener.name.sasl_scram.scram-sha-256.sasl.jaas.config"]).toContain('username="millrace-broker" password="b"');
    expect(p["listener.name.proxied.scram-sha-256.sasl.jaas.config"]).toBe("org.apache.kafka.common.security.scram.ScramLoginModule required;");
  });
});
