/**
 * Kafka for the local stack: a single KRaft node (combined broker + controller) run as a plain
 * `java -cp '<libs>/*' kafka.Kafka <config>` process. The jars come from Maven Central through
 * stack/kafka/pom.xml and are cached per version in `<cacheDir>/kafka-<version>/libs`; data, the
 * generated server.properties, the cluster id, the pid file and the log live in `<stateDir>/kafka/`.
 *
 * Storage is formatted once (static quorum: `controller.quorum.voters` + `--cluster-id`), so restarts,
 * including after SIGKILL, keep topics and committed offsets; Kafka recovers unflushed segments itself.
 */
import { createHash, randomBytes } from "node:crypto";
import { chmodSync, existsSync, readFileSync, renameSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import kafkajs, { logLevel, type AclEntry, type AclOperationTypes, type AclResourceTypes, type ResourcePatternTypes } from "kafkajs";
import { createKafka, type KafkaAuth } from "../lib/kafka-client.ts";
import {
  aptInstall,
  commandExists,
  ensureDir,
  isAlive,
  portOpen,
  readPid,
  runLogged,
  startDetached,
  stopPid,
  waitFor,
} from "./process.ts";
import type { ServiceStatus, StackContext, StackService } from "./types.ts";

// The ACL enums are not named exports of kafkajs' CommonJS module under ESM.
const { AclOperationTypes: OP, AclPermissionTypes, AclResourceTypes: RT, ResourcePatternTypes: PT } = kafkajs;

export const KAFKA_VERSION = "4.4.0";

/** stack/kafka/: pom.xml and log4j2.properties. */
const supportDir = fileURLToPath(new URL("./kafka/", import.meta.url));
const pomFile = join(supportDir, "pom.xml");
const log4jFile = join(supportDir, "log4j2.properties");

const JVM_OPTS = [
  "-Xms256m",
  "-Xmx1g",
  "-XX:+UseG1GC",
  "-XX:MaxGCPauseMillis=20",
  "-XX:+ExitOnOutOfMemoryError",
  "-Djava.awt.headless=true",
];

/** SIGTERM → clean shutdown (flushes logs, writes the clean-shutdown marker) within this, else SIGKILL. */
const STOP_GRACE_MS = 30_000;
/** How long a dead broker's listeners may take to disappear before the ports count as taken by someone else. */
const PORT_RELEASE_MS = 10_000;

interface KafkaPaths {
  dir: string;
  dataDir: string;
  configFile: string;
  clusterIdFile: string;
  pidFile: string;
  logFile: string;
  credentialsFile: string;
  home: string;
  libs: string;
  marker: string;
}

function paths(ctx: StackContext): KafkaPaths {
  const dir = join(ctx.stateDir, "kafka");
  const home = join(ctx.cacheDir, `kafka-${KAFKA_VERSION}`);
  return {
    dir,
    dataDir: join(dir, "data"),
    configFile: join(dir, "server.properties"),
    clusterIdFile: join(dir, "cluster-id"),
    pidFile: join(dir, "kafka.pid"),
    logFile: join(dir, "kafka.log"),
    credentialsFile: join(dir, "credentials.json"),
    home,
    libs: join(home, "libs"),
    marker: join(home, ".installed"),
  };
}

function brokers(ctx: StackContext): string {
  return `${ctx.host}:${ctx.ports.kafka}`;
}

// ---------------------------------------------------------------------------------------------
// Configuration. Clients and the broker itself (inter-broker) use the SASL_SCRAM listener
// (SASL_PLAINTEXT, SCRAM-SHA-256); the KRaft controller listener is PLAINTEXT on loopback (SCRAM
// cannot authenticate controller connections: its credentials live in the metadata the controller
// serves), and its principal, User:ANONYMOUS, is a super user — so whoever reaches the loopback
// controller port is trusted. ACLs: StandardAuthorizer, deny when no ACL matches.

export type KafkaSecurityProtocol = "PLAINTEXT" | "SASL_PLAINTEXT" | "SSL" | "SASL_SSL";

export interface KafkaListener {
  /** Listener name as used in `listeners`, e.g. PLAINTEXT, CONTROLLER, SASL_SCRAM. */
  name: string;
  protocol: KafkaSecurityProtocol;
  host: string;
  port: number;
  /** Clients reach it (goes into advertised.listeners); false for the controller listener. */
  advertised: boolean;
  /** Advertised at this port instead of `port` (a proxy in front of it). */
  advertisedPort?: number;
}

export const KAFKA_NODE_ID = 1;
const CONTROLLER_LISTENER = "CONTROLLER";
const INTER_BROKER_LISTENER = "SASL_SCRAM";
/** The SCRAM mechanism of the local stack (kafkajs: `scram-sha-256`). */
export const KAFKA_SCRAM_MECHANISM = "SCRAM-SHA-256";
/** Super users: the admin identity, the broker's own inter-broker identity. */
export const KAFKA_ADMIN_USER = "millrace-admin";
export const KAFKA_BROKER_USER = "millrace-broker";
/** The ingest worker's identity; its ACLs are in {@link workerAcls}. */
export const KAFKA_WORKER_USER = "millrace-worker";

export function kafkaListeners(ctx: StackContext): KafkaListener[] {
  return [
    { name: INTER_BROKER_LISTENER, protocol: "SASL_PLAINTEXT", host: ctx.host, port: ctx.ports.kafka, advertised: true },
    { name: CONTROLLER_LISTENER, protocol: "PLAINTEXT", host: ctx.host, port: ctx.ports.kafkaController, advertised: false },
    ...(ctx.kafkaProxiedListener
      ? [{ name: "PROXIED", protocol: "SASL_PLAINTEXT" as const, host: ctx.host, port: ctx.kafkaProxiedListener.port, advertised: true, advertisedPort: ctx.kafkaProxiedListener.advertisedPort }]
      : []),
  ];
}

/** The local stack's Kafka passwords, generated once per data directory (kept in `<stateDir>/kafka/credentials.json`, mode 0600, never in git). */
export interface KafkaStackCredentials {
  admin: KafkaAuth;
  broker: KafkaAuth;
  worker: KafkaAuth;
}

function scramIdentity(username: string): KafkaAuth {
  return { mechanism: "scram-sha-256", username, password: randomBytes(18).toString("hex") };
}

function readCredentials(p: KafkaPaths): KafkaStackCredentials | undefined {
  if (!existsSync(p.credentialsFile)) return undefined;
  return JSON.parse(readFileSync(p.credentialsFile, "utf8")) as KafkaStackCredentials;
}

function ensureCredentials(p: KafkaPaths): KafkaStackCredentials {
  const existing = readCredentials(p);
  if (existing) return existing;
  const created = { admin: scramIdentity(KAFKA_ADMIN_USER), broker: scramIdentity(KAFKA_BROKER_USER), worker: scramIdentity(KAFKA_WORKER_USER) };
  writeFileSync(p.credentialsFile, `${JSON.stringify(created, null, 2)}\n`, { mode: 0o600 });
  return created;
}

/** The stack's credentials (admin, broker, worker); throws if the broker has never been started here. */
export function kafkaStackCredentials(ctx: StackContext): KafkaStackCredentials {
  const p = paths(ctx);
  const c = readCredentials(p);
  if (!c) throw new Error(`kafka: no credentials in ${p.credentialsFile} (start the broker first: ./millrace stack up)`);
  return c;
}

function jaasLine(auth?: KafkaAuth): string {
  const creds = auth ? ` username="${auth.username}" password="${auth.password}"` : "";
  return `org.apache.kafka.common.security.scram.ScramLoginModule required${creds};`;
}

/** SASL and authorizer properties for the listeners (the broker logs in to itself as {@link KAFKA_BROKER_USER}). */
export function kafkaSecurityProperties(listeners: KafkaListener[], creds: KafkaStackCredentials): Record<string, string> {
  const props: Record<string, string> = {
    "sasl.enabled.mechanisms": KAFKA_SCRAM_MECHANISM,
    "sasl.mechanism.inter.broker.protocol": KAFKA_SCRAM_MECHANISM,
    "authorizer.class.name": "org.apache.kafka.metadata.authorizer.StandardAuthorizer",
    "allow.everyone.if.no.acl.found": "false",
    // ANONYMOUS: the PLAINTEXT controller listener's principal (the broker's own controller channel).
    "super.users": [KAFKA_ADMIN_USER, KAFKA_BROKER_USER, "ANONYMOUS"].map((u) => `User:${u}`).join(";"),
  };
  for (const l of listeners.filter((x) => x.protocol === "SASL_PLAINTEXT")) {
    props[`listener.name.${l.name.toLowerCase()}.${KAFKA_SCRAM_MECHANISM.toLowerCase()}.sasl.jaas.config`] = jaasLine(l.name === INTER_BROKER_LISTENER ? creds.broker : undefined);
  }
  return props;
}

const acl = (principal: string, resourceType: AclResourceTypes, resourceName: string, patternType: ResourcePatternTypes, operation: AclOperationTypes): AclEntry => ({
  principal: `User:${principal}`,
  host: "*",
  resourceType,
  resourceName,
  resourcePatternType: patternType,
  operation,
  permissionType: AclPermissionTypes.ALLOW,
});

/**
 * The ingest worker's ACLs: read every tenant sensor topic, write alerts and dead letters (creating
 * alerts and dead-letter topics on demand, as their publishers do), use any consumer group (the group is a deployment's choice,
 * `--consumer-group`; in production grant just yours), idempotent producing, and the outbox
 * relays' transactions (sinks/outbox/relay.ts): transactional ids `millrace-outbox-*` and their
 * marker offsets on `millrace-outbox-relay` (groups `millrace-outbox-*`, covered by the group ACLs).
 */
export function workerAcls(user = KAFKA_WORKER_USER): AclEntry[] {
  const T = RT.TOPIC;
  const P = PT.PREFIXED;
  const O = OP;
  return [
    acl(user, T, "sensor-data-", P, O.READ),
    acl(user, T, "sensor-data-", P, O.DESCRIBE),
    acl(user, T, "alerts-", P, O.WRITE),
    acl(user, T, "alerts-", P, O.DESCRIBE),
    acl(user, T, "alerts-", P, O.CREATE),
    acl(user, T, "dead-letters-", P, O.WRITE),
    acl(user, T, "dead-letters-", P, O.DESCRIBE),
    acl(user, T, "dead-letters-", P, O.CREATE),
    acl(user, RT.GROUP, "*", PT.LITERAL, O.READ),
    acl(user, RT.GROUP, "*", PT.LITERAL, O.DESCRIBE),
    acl(user, RT.CLUSTER, "kafka-cluster", PT.LITERAL, O.IDEMPOTENT_WRITE),
    acl(user, RT.TRANSACTIONAL_ID, "millrace-outbox-", P, O.WRITE),
    acl(user, RT.TRANSACTIONAL_ID, "millrace-outbox-", P, O.DESCRIBE),
    acl(user, T, "millrace-outbox-relay", PT.LITERAL, O.READ),
    acl(user, T, "millrace-outbox-relay", PT.LITERAL, O.DESCRIBE),
    acl(user, T, "millrace-outbox-relay", PT.LITERAL, O.CREATE),
  ];
}

/** The broker's server.properties as key/value pairs; `extra` overrides or adds (e.g. sasl.*, authorizer). */
export function kafkaServerProperties(
  ctx: StackContext,
  listeners: KafkaListener[] = kafkaListeners(ctx),
  extra: Record<string, string> = {},
): Record<string, string> {
  const controller = listeners.find((l) => l.name === CONTROLLER_LISTENER);
  if (!controller) throw new Error(`kafka: no ${CONTROLLER_LISTENER} listener`);
  const endpoint = (l: KafkaListener) => `${l.name}://${l.host}:${l.port}`;
  return {
    "process.roles": "broker,controller",
    "node.id": String(KAFKA_NODE_ID),
    // Static single-voter quorum: the voter endpoint comes from this file on every start, so a changed
    // controller port needs no re-format (a --standalone dynamic quorum stores it in the metadata log).
    "controller.quorum.voters": `${KAFKA_NODE_ID}@${controller.host}:${controller.port}`,
    listeners: listeners.map(endpoint).join(","),
    "advertised.listeners": listeners.filter((l) => l.advertised).map((l) => endpoint({ ...l, port: l.advertisedPort ?? l.port })).join(","),
    "listener.security.protocol.map": listeners.map((l) => `${l.name}:${l.protocol}`).join(","),
    "controller.listener.names": CONTROLLER_LISTENER,
    "inter.broker.listener.name": INTER_BROKER_LISTENER,
    "log.dirs": paths(ctx).dataDir,
    // Single node: everything replicated once.
    "num.partitions": "3",
    "default.replication.factor": "1",
    "min.insync.replicas": "1",
    "offsets.topic.replication.factor": "1",
    "transaction.state.log.replication.factor": "1",
    "transaction.state.log.min.isr": "1",
    "share.coordinator.state.topic.replication.factor": "1",
    "share.coordinator.state.topic.min.isr": "1",
    "group.initial.rebalance.delay.ms": "0",
    // After a SIGKILL the restarted broker cannot register until the controller expires the old
    // incarnation's session (DUPLICATE_BROKER_REGISTRATION); the default 9 s makes every crash-restart
    // wait ~10 s. On loopback with one node a shorter session is safe.
    "broker.heartbeat.interval.ms": "1000",
    "broker.session.timeout.ms": "4000",
    "auto.create.topics.enable": "false",
    "delete.topic.enable": "true",
    "num.recovery.threads.per.data.dir": "2",
    "log.retention.hours": "168",
    ...extra,
  };
}

function escapeProperty(value: string): string {
  return value.replace(/\\/g, "\\\\").replace(/\n/g, "\\n").replace(/^ /, "\\ ");
}

export function renderProperties(props: Record<string, string>): string {
  const lines = Object.entries(props).map(([k, v]) => `${k}=${escapeProperty(v)}`);
  return `# Generated by stack/kafka.ts on every start; edits are overwritten.\n${lines.join("\n")}\n`;
}

// ---------------------------------------------------------------------------------------------
// Helpers.

function installStamp(): string {
  return createHash("sha256").update(KAFKA_VERSION).update(readFileSync(pomFile)).digest("hex");
}

function isInstalled(p: KafkaPaths): boolean {
  return (
    existsSync(p.marker) &&
    readFileSync(p.marker, "utf8").trim() === installStamp() &&
    existsSync(join(p.libs, `kafka_2.13-${KAFKA_VERSION}.jar`))
  );
}

/** The pid in the pid file if that process is alive and really is this stack's broker (guards against pid reuse). */
function kafkaPid(p: KafkaPaths): number | undefined {
  const pid = readPid(p.pidFile);
  if (!isAlive(pid) || pid === undefined) return undefined;
  try {
    const argv = readFileSync(`/proc/${pid}/cmdline`, "utf8").split("\0");
    return argv.includes("kafka.Kafka") && argv.includes(p.configFile) ? pid : undefined;
  } catch {
    return pid; // no /proc: trust the pid file
  }
}

/** A Kafka cluster id: 16 random bytes, URL-safe base64 without padding, not starting with '-' (like Uuid.randomUuid). */
function newClusterId(): string {
  for (;;) {
    const id = randomBytes(16).toString("base64url");
    if (!id.startsWith("-")) return id;
  }
}

function clusterId(p: KafkaPaths): string {
  if (existsSync(p.clusterIdFile)) {
    const id = readFileSync(p.clusterIdFile, "utf8").trim();
    if (id) return id;
  }
  const id = newClusterId();
  writeFileSync(p.clusterIdFile, `${id}\n`);
  return id;
}

function javaArgs(p: KafkaPaths, mainClass: string, args: string[]): string[] {
  return [...JVM_OPTS, `-Dlog4j2.configurationFile=${log4jFile}`, "-cp", `${p.libs}/*`, mainClass, ...args];
}

function logTail(file: string, lines = 20): string {
  if (!existsSync(file)) return "";
  return readFileSync(file, "utf8").split("\n").slice(-lines).join("\n");
}

/**
 * One readiness probe: an admin client connects, describes the cluster, lists topics, the group
 * coordinator answers, and every partition has a leader. The last matters after a crash: the broker answers metadata requests a
 * moment before the controller has re-elected it leader of its partitions (they sit leaderless in
 * the ELR meanwhile), and clients would get NOT_LEADER_OR_FOLLOWER.
 */
async function adminAnswers(ctx: StackContext): Promise<boolean> {
  const kafka = createKafka({
    clientId: "millrace-stack",
    brokers: [brokers(ctx)],
    auth: kafkaStackCredentials(ctx).admin,
    connectionTimeout: 2000,
    requestTimeout: 5000,
    retry: { retries: 0 },
    logLevel: logLevel.NOTHING,
  });
  const admin = kafka.admin();
  try {
    await admin.connect();
    const cluster = await admin.describeCluster();
    const topics = await admin.listTopics();
    if (!cluster.brokers.some((b) => b.nodeId === KAFKA_NODE_ID)) return false;
    // The group coordinator answers: on a fresh broker the first FindCoordinator creates
    // __consumer_offsets (COORDINATOR_NOT_AVAILABLE until its partitions have leaders), and the
    // first consumer group to join would otherwise meet that instead of the broker being "ready".
    await admin.describeGroups(["millrace-stack-ready"]);
    if (topics.length === 0) return true;
    const { topics: metadata } = await admin.fetchTopicMetadata({ topics });
    const leaderless = metadata.flatMap((t) => t.partitions.filter((p) => p.leader !== KAFKA_NODE_ID).map((p) => `${t.name}-${p.partitionId}`));
    if (leaderless.length > 0) throw new Error(`partitions without a leader yet: ${leaderless.slice(0, 5).join(", ")}${leaderless.length > 5 ? ", ..." : ""}`);
    return true;
  } finally {
    await admin.disconnect().catch(() => undefined);
  }
}

/** Grant the worker identity its ACLs (createAcls is idempotent: an existing binding is kept as it is). */
async function ensureWorkerAcls(ctx: StackContext): Promise<void> {
  const c = kafkaStackCredentials(ctx);
  const admin = createKafka({ clientId: "millrace-stack", brokers: [brokers(ctx)], auth: c.admin, logLevel: logLevel.NOTHING, retry: { retries: 5 } }).admin();
  await admin.connect();
  try {
    await admin.createAcls({ acl: workerAcls(c.worker.username) });
  } finally {
    await admin.disconnect().catch(() => undefined);
  }
}

/**
 * A SIGKILLed JVM shows as a zombie (so isAlive() is false) while its other threads are still being
 * torn down and its sockets are still bound; wait for the listeners to go away.
 */
async function waitPortsClosed(ctx: StackContext, timeoutMs: number): Promise<void> {
  const ports = [ctx.ports.kafka, ctx.ports.kafkaController, ...(ctx.kafkaProxiedListener ? [ctx.kafkaProxiedListener.port] : [])];
  await waitFor(
    `release of ${ports.map((port) => `${ctx.host}:${port}`).join(" and ")}`,
    async () => {
      for (const port of ports) if (await portOpen(ctx.host, port, 500)) return false;
      return true;
    },
    timeoutMs,
    "",
    100,
  );
}

// ---------------------------------------------------------------------------------------------

export const kafkaService: StackService = {
  name: "kafka",

  logFile(ctx) {
    return paths(ctx).logFile;
  },

  async install(ctx) {
    const p = paths(ctx);
    if (isInstalled(p)) return;
    const missing = [
      ...(commandExists("java") ? [] : ["openjdk-17-jre-headless"]),
      ...(commandExists("mvn") ? [] : ["maven"]),
    ];
    if (missing.length) {
      ctx.log(`kafka: installing ${missing.join(", ")} with apt`);
      aptInstall(missing, p.logFile);
    }
    ctx.log(`kafka: resolving Kafka ${KAFKA_VERSION} jars with Maven into ${p.libs} (log: ${p.logFile})`);
    ensureDir(p.home);
    // Resolve into a private directory and move it into place, so a failed or concurrent run never
    // leaves a half-filled libs/ that looks installed. The marker is written last.
    const tmp = `${p.libs}.tmp-${process.pid}`;
    rmSync(tmp, { recursive: true, force: true });
    try {
      runLogged(
        "mvn",
        [
          "-B",
          "-q",
          "-Dstyle.color=never",
          "-f",
          pomFile,
          "dependency:copy-dependencies",
          `-DoutputDirectory=${tmp}`,
          `-Dkafka.version=${KAFKA_VERSION}`,
        ],
        p.logFile,
      );
      rmSync(p.libs, { recursive: true, force: true });
      renameSync(tmp, p.libs);
    } finally {
      rmSync(tmp, { recursive: true, force: true });
    }
    writeFileSync(p.marker, `${installStamp()}\n`);
  },

  async start(ctx) {
    const p = paths(ctx);
    const running = kafkaPid(p);
    if (running !== undefined && !existsSync(p.credentialsFile)) {
      throw new Error(
        `kafka: the broker running here (pid ${running}) was started by a millrace before SASL/SCRAM credentials and has no users: ` +
          `start the local stack afresh: ./millrace stack down, then rm -rf ${ctx.stateDir}, then ./millrace stack up`,
      );
    }
    if (running !== undefined) {
      if (await portOpen(ctx.host, ctx.ports.kafka)) return;
      ctx.log(`kafka: pid ${running} is alive but ${brokers(ctx)} does not answer yet; leaving it to start`);
      return;
    }
    try {
      await waitPortsClosed(ctx, PORT_RELEASE_MS);
    } catch {
      throw new Error(
        `kafka: ${ctx.host}:${ctx.ports.kafka} or :${ctx.ports.kafkaController} is in use by a process this stack did not start ` +
          `(no live broker in ${p.pidFile})`,
      );
    }
    if (!isInstalled(p)) await kafkaService.install(ctx);

    ensureDir(p.dataDir);
    const formatted = existsSync(join(p.dataDir, "meta.properties"));
    if (formatted && !existsSync(p.credentialsFile)) {
      // Formatted before the stack had SASL/SCRAM: its metadata has no users, so nobody could log in.
      throw new Error(
        `kafka: ${p.dataDir} was formatted without SASL/SCRAM users (by a millrace before tenant-scoped Kafka credentials); ` +
          `nobody could log in to it. Start afresh: ./millrace stack down, then rm -rf ${ctx.stateDir}, then ./millrace stack up ` +
          `(or ./millrace demo). Removing only ${p.dir} keeps PostgreSQL's stored offsets of the old topics, which recreated topics ` +
          "of the same names (the demo's tenants) would not match",
      );
    }
    const creds = ensureCredentials(p);
    const listeners = kafkaListeners(ctx);
    writeFileSync(p.configFile, renderProperties(kafkaServerProperties(ctx, listeners, kafkaSecurityProperties(listeners, creds))), { mode: 0o600 });
    chmodSync(p.configFile, 0o600); // it holds the broker's password; an older file may have been 0644

    if (!formatted) {
      const id = clusterId(p);
      ctx.log(`kafka: formatting ${p.dataDir} (cluster id ${id}; SCRAM users ${Object.values(creds).map((c) => c.username).join(", ")})`);
      const scram = Object.values(creds).flatMap((c) => ["--add-scram", `${KAFKA_SCRAM_MECHANISM}=[name=${c.username},password=${c.password}]`]);
      runLogged(
        "java",
        javaArgs(p, "kafka.tools.StorageTool", ["format", "--config", p.configFile, "--cluster-id", id, "--ignore-formatted", ...scram]),
        p.logFile,
        { cwd: p.dir },
      );
    }

    const pid = startDetached({
      command: "java",
      args: javaArgs(p, "kafka.Kafka", [p.configFile]),
      pidFile: p.pidFile,
      logFile: p.logFile,
      cwd: p.dir,
    });
    ctx.log(`kafka: started pid ${pid} on ${brokers(ctx)} (log: ${p.logFile})`);
  },

  async waitReady(ctx, timeoutMs) {
    const p = paths(ctx);
    let exited = false;
    await waitFor(
      `Kafka on ${brokers(ctx)}`,
      async () => {
        if (kafkaPid(p) === undefined) {
          exited = true;
          return true;
        }
        return await adminAnswers(ctx);
      },
      timeoutMs,
      `see ${p.logFile}`,
      500,
    );
    if (exited) {
      throw new Error(`Kafka on ${brokers(ctx)} is not running (no live process in ${p.pidFile}); see ${p.logFile}:\n${logTail(p.logFile)}`);
    }
    await ensureWorkerAcls(ctx);
  },

  async stop(ctx, opts = {}) {
    const p = paths(ctx);
    if (kafkaPid(p) === undefined) {
      rmSync(p.pidFile, { force: true }); // stale (dead or reused pid): never signal a stranger
      return;
    }
    await stopPid(p.pidFile, { force: opts.force ?? false, graceMs: STOP_GRACE_MS });
    await waitPortsClosed(ctx, PORT_RELEASE_MS);
  },

  async status(ctx): Promise<ServiceStatus> {
    const p = paths(ctx);
    const pid = kafkaPid(p);
    if (pid === undefined) {
      return { name: "kafka", running: false, detail: isInstalled(p) ? "not running" : `not running (Kafka ${KAFKA_VERSION} not installed)` };
    }
    const answering = await portOpen(ctx.host, ctx.ports.kafka);
    return {
      name: "kafka",
      running: answering,
      pid,
      detail: answering
        ? `${brokers(ctx)} (Kafka ${KAFKA_VERSION}, KRaft)`
        : `pid ${pid} alive but ${brokers(ctx)} not answering (starting, or see ${p.logFile})`,
    };
  },

  env(ctx): Record<string, string> {
    const c = readCredentials(paths(ctx));
    if (!c) return { MILLRACE_KAFKA_BROKERS: brokers(ctx) };
    return {
      MILLRACE_KAFKA_BROKERS: brokers(ctx),
      MILLRACE_KAFKA_SASL_MECHANISM: c.admin.mechanism,
      MILLRACE_KAFKA_USERNAME: c.admin.username,
      MILLRACE_KAFKA_PASSWORD: c.admin.password,
      MILLRACE_WORKER_KAFKA_USERNAME: c.worker.username,
      MILLRACE_WORKER_KAFKA_PASSWORD: c.worker.password,
      MILLRACE_KAFKA_TOOLS_CLASSPATH: `${paths(ctx).libs}/*`,
    };
  },
};
