/**
 * The one place that builds kafkajs client options: brokers plus, when configured, SASL.
 *
 * Settings (environment, falling back to the local stack's `.stack/env` like every MILLRACE_*):
 * - `MILLRACE_KAFKA_BROKERS`: bootstrap brokers, comma-separated.
 * - `MILLRACE_KAFKA_SASL_MECHANISM`: `scram-sha-256` (default when a username is set), `scram-sha-512` or `plain`.
 * - `MILLRACE_KAFKA_USERNAME` / `MILLRACE_KAFKA_PASSWORD`: the default identity (the admin one on the
 *   local stack: `millrace tenants`, `migrate`-time topic work, tests, benchmarks).
 * - `MILLRACE_WORKER_KAFKA_USERNAME` / `MILLRACE_WORKER_KAFKA_PASSWORD`: the ingest worker's own
 *   identity (`millrace run`, the demo's worker); falls back to the default identity.
 * - `MILLRACE_PRODUCER_KAFKA_USERNAME` / `MILLRACE_PRODUCER_KAFKA_PASSWORD`: a tenant producer's
 *   identity for `millrace produce` (or its `--kafka-username/--kafka-password` flags); falls back to
 *   the default identity.
 *
 * With no username set the client connects without SASL (PLAINTEXT), as before, so brokers started
 * without SASL keep working. Credentials found only in `.stack/env` are used only with the stack's
 * brokers (also from `.stack/env`), never with brokers the caller set.
 */
import { Kafka, type KafkaConfig, type SASLOptions } from "kafkajs";
import { cameFromStackFile, loadStackEnv } from "./env.ts";

export type KafkaSaslMechanism = "scram-sha-256" | "scram-sha-512" | "plain";
export const KAFKA_SASL_MECHANISMS: readonly KafkaSaslMechanism[] = ["scram-sha-256", "scram-sha-512", "plain"];

export interface KafkaAuth {
  mechanism: KafkaSaslMechanism;
  username: string;
  password: string;
}

/** Whose credentials: the default (admin) identity, the ingest worker's, or a tenant producer's. */
export type KafkaIdentity = "default" | "worker" | "producer";

const PREFIX: Record<KafkaIdentity, string> = { default: "MILLRACE_KAFKA", worker: "MILLRACE_WORKER_KAFKA", producer: "MILLRACE_PRODUCER_KAFKA" };

function val(env: NodeJS.ProcessEnv, name: string): string | undefined {
  const v = env[name];
  return v === undefined || v === "" ? undefined : v;
}

export function parseSaslMechanism(raw: string | undefined, what = "MILLRACE_KAFKA_SASL_MECHANISM"): KafkaSaslMechanism {
  const m = (raw ?? "scram-sha-256").toLowerCase() as KafkaSaslMechanism;
  if (!KAFKA_SASL_MECHANISMS.includes(m)) throw new Error(`${what}=${raw} is not one of ${KAFKA_SASL_MECHANISMS.join(", ")}`);
  return m;
}

/**
 * The SASL credentials of `identity` from `env` (undefined: no SASL). A username without a password
 * (or the other way round) is an error naming the variable to set.
 */
export function kafkaAuthFromEnv(identity: KafkaIdentity = "default", env: NodeJS.ProcessEnv = process.env): KafkaAuth | undefined {
  // The local stack's credentials belong to the stack's broker: with brokers of the caller's own
  // (MILLRACE_KAFKA_BROKERS set, not from .stack/env), credentials only from the stack file are ignored.
  let ignoreFile = false;
  if (env === process.env) {
    loadStackEnv();
    ignoreFile = val(env, "MILLRACE_KAFKA_BROKERS") !== undefined && !cameFromStackFile("MILLRACE_KAFKA_BROKERS");
  }
  const get = (name: string) => (ignoreFile && cameFromStackFile(name) ? undefined : val(env, name));
  const mechanismRaw = get("MILLRACE_KAFKA_SASL_MECHANISM");
  const tryPrefix = (p: string): KafkaAuth | undefined => {
    const username = get(`${p}_USERNAME`);
    const password = get(`${p}_PASSWORD`);
    if (username === undefined && password === undefined) return undefined;
    if (username === undefined) throw new Error(`${p}_PASSWORD is set but ${p}_USERNAME is not`);
    if (password === undefined) throw new Error(`${p}_USERNAME is set but ${p}_PASSWORD is not`);
    return { mechanism: parseSaslMechanism(mechanismRaw), username, password };
  };
  const own = identity === "default" ? undefined : tryPrefix(PREFIX[identity]);
  const auth = own ?? tryPrefix(PREFIX.default);
  if (!auth && mechanismRaw !== undefined) {
    throw new Error(`MILLRACE_KAFKA_SASL_MECHANISM=${mechanismRaw} is set but no credentials are: set MILLRACE_KAFKA_USERNAME and MILLRACE_KAFKA_PASSWORD`);
  }
  return auth;
}

/** kafkajs' `sasl` option for `auth`. */
export function saslOption(auth: KafkaAuth): SASLOptions {
  return { mechanism: auth.mechanism, username: auth.username, password: auth.password } as SASLOptions;
}

export function brokersFromEnv(env: NodeJS.ProcessEnv = process.env): string[] {
  if (env === process.env) loadStackEnv();
  const raw = val(env, "MILLRACE_KAFKA_BROKERS");
  if (raw === undefined) {
    throw new Error(
      "MILLRACE_KAFKA_BROKERS is not set: start the local stack with `./millrace stack up` (it prints the settings; load them with eval \"$(./millrace stack env)\"), or set it to your own brokers",
    );
  }
  return raw
    .split(",")
    .map((b) => b.trim())
    .filter((b) => b !== "");
}

export interface KafkaClientOptions extends Omit<KafkaConfig, "brokers" | "sasl" | "ssl"> {
  /** Default: MILLRACE_KAFKA_BROKERS. */
  brokers?: string[];
  /** Credentials: undefined = from the environment for `identity`; null = no SASL (a PLAINTEXT broker). */
  auth?: KafkaAuth | null;
  identity?: KafkaIdentity;
  env?: NodeJS.ProcessEnv;
}

/** kafkajs options: brokers and SASL resolved as described above, the rest passed through. */
export function kafkaClientConfig(o: KafkaClientOptions): KafkaConfig {
  const { brokers, auth, identity, env, ...rest } = o;
  const resolved = auth === null ? undefined : (auth ?? kafkaAuthFromEnv(identity ?? "default", env ?? process.env));
  return { ...rest, brokers: brokers ?? brokersFromEnv(env ?? process.env), ...(resolved ? { sasl: saslOption(resolved) } : {}) };
}

/** A kafkajs client; every Kafka client of millrace is made here. */
export function createKafka(o: KafkaClientOptions): Kafka {
  return new Kafka(kafkaClientConfig(o));
}

/**
 * Java client properties (Kafka Connect, the perf tools) for the same settings: security.protocol,
 * sasl.mechanism and sasl.jaas.config, or nothing for PLAINTEXT.
 */
export function javaClientProperties(auth: KafkaAuth | undefined): Record<string, string> {
  if (!auth) return {};
  const mechanism = auth.mechanism.toUpperCase();
  const module = auth.mechanism === "plain" ? "org.apache.kafka.common.security.plain.PlainLoginModule" : "org.apache.kafka.common.security.scram.ScramLoginModule";
  const q = (s: string) => `"${s.replace(/\\/g, "\\\\").replace(/"/g, '\\"')}"`;
  return {
    "security.protocol": "SASL_PLAINTEXT",
    "sasl.mechanism": mechanism,
    "sasl.jaas.config": `${module} required username=${q(auth.username)} password=${q(auth.password)};`,
  };
}
