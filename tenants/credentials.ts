/**
 * Tenant-scoped Kafka producer identities (docs/tenancy.md, "Kafka credentials").
 *
 * Each tenant gets a SCRAM user `tenant-{tenant_id}` (built only from a validated UUID) with ACLs
 * that let it write only its own sensor topic and read only its own alerts topic:
 *   TOPIC  LITERAL  sensor-data-{id}   WRITE, DESCRIBE
 *   TOPIC  LITERAL  alerts-{id}        READ, DESCRIBE
 *   GROUP  PREFIXED tenant-{id}        READ, DESCRIBE   (consumer groups of the tenant's alert readers)
 *
 * ACLs are made with kafkajs (createAcls/deleteAcls). kafkajs cannot create SCRAM credentials (it
 * has no AlterUserScramCredentials), so those are set with Kafka's own ConfigCommand
 * (`kafka-configs --alter --add-config SCRAM-SHA-256=[…] --entity-type users`), run with a JVM and
 * Kafka's jars: MILLRACE_KAFKA_TOOLS_CLASSPATH (the local stack exports it), MILLRACE_JAVA (default
 * `java` on PATH). Passwords are never stored by millrace: they are printed once, when created or
 * rotated; the broker keeps only the salted SCRAM hashes.
 */
import { execFile } from "node:child_process";
import { randomBytes } from "node:crypto";
import { existsSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import kafkajs, { type AclEntry, type Admin } from "kafkajs";
import { brokersFromEnv, javaClientProperties, kafkaAuthFromEnv, type KafkaAuth, type KafkaSaslMechanism } from "../lib/kafka-client.ts";
import { UUID } from "../pipelines/runtime/tenant-directory.ts";

const { AclOperationTypes: OP, AclPermissionTypes, AclResourceTypes: RT, ResourcePatternTypes: PT } = kafkajs;
const run = promisify(execFile);

function checkId(tenantId: string): string {
  if (!UUID.test(tenantId)) throw new Error(`not a tenant id (lower-case UUID): ${JSON.stringify(tenantId)}`);
  return tenantId;
}

/** The tenant's Kafka user name. */
export function tenantKafkaUser(tenantId: string): string {
  return `tenant-${checkId(tenantId)}`;
}

/** Consumer groups of the tenant's alert readers must start with this (a PREFIXED group ACL). */
export function tenantGroupPrefix(tenantId: string): string {
  return `tenant-${checkId(tenantId)}`;
}

export function tenantAcls(tenantId: string): AclEntry[] {
  const id = checkId(tenantId);
  const principal = `User:${tenantKafkaUser(id)}`;
  const allow = (resourceType: number, resourceName: string, resourcePatternType: number, operation: number): AclEntry =>
    ({ principal, host: "*", resourceType, resourceName, resourcePatternType, operation, permissionType: AclPermissionTypes.ALLOW }) as AclEntry;
  return [
    allow(RT.TOPIC, `sensor-data-${id}`, PT.LITERAL, OP.WRITE),
    allow(RT.TOPIC, `sensor-data-${id}`, PT.LITERAL, OP.DESCRIBE),
    allow(RT.TOPIC, `alerts-${id}`, PT.LITERAL, OP.READ),
    allow(RT.TOPIC, `alerts-${id}`, PT.LITERAL, OP.DESCRIBE),
    allow(RT.GROUP, tenantGroupPrefix(id), PT.PREFIXED, OP.READ),
    allow(RT.GROUP, tenantGroupPrefix(id), PT.PREFIXED, OP.DESCRIBE),
  ];
}

/** Sets and removes SCRAM credentials (the broker side of a user); ConfigCommand by default. */
export interface ScramAdmin {
  /** Whether the user has a credential for the mechanism. */
  exists(user: string): Promise<boolean>;
  /** Create or replace the user's credential. */
  upsert(user: string, password: string): Promise<void>;
  /** Remove the user's credential (no-op if none). */
  remove(user: string): Promise<void>;
}

function scramName(mechanism: KafkaSaslMechanism): string {
  if (mechanism === "plain") return "SCRAM-SHA-256";
  return mechanism.toUpperCase();
}

/**
 * Kafka's ConfigCommand (org.apache.kafka.tools.ConfigCommand) with the admin credentials.
 * Settings: MILLRACE_KAFKA_TOOLS_CLASSPATH (Kafka's libs, e.g. `/opt/kafka/libs/*`), MILLRACE_JAVA.
 */
export function configCommandScramAdmin(o: { env?: NodeJS.ProcessEnv; brokers?: string[]; auth?: KafkaAuth; mechanism?: string } = {}): ScramAdmin {
  const env = o.env ?? process.env;
  const auth = o.auth ?? kafkaAuthFromEnv("default", env);
  const mechanism = o.mechanism ?? scramName(auth?.mechanism ?? "scram-sha-256");
  const classpath = () => {
    const cp = env.MILLRACE_KAFKA_TOOLS_CLASSPATH;
    if (!cp) {
      throw new Error(
        "creating tenant Kafka credentials needs Kafka's ConfigCommand (kafkajs cannot set SCRAM credentials): set MILLRACE_KAFKA_TOOLS_CLASSPATH " +
          "to Kafka's jars, e.g. '/opt/kafka/libs/*' (the local stack sets it), and MILLRACE_JAVA if java is not on PATH",
      );
    }
    const dir = cp.endsWith("/*") ? cp.slice(0, -2) : undefined;
    if (dir !== undefined && !existsSync(dir)) throw new Error(`MILLRACE_KAFKA_TOOLS_CLASSPATH=${cp}: ${dir} does not exist`);
    return cp;
  };
  const invoke = async (args: string[], files: Record<string, string> = {}): Promise<string> => {
    const cp = classpath();
    const dir = mkdtempSync(join(tmpdir(), "millrace-kafka-configs-"));
    try {
      const commandConfig = join(dir, "client.properties");
      const props = javaClientProperties(auth);
      writeFileSync(commandConfig, Object.entries(props).map(([k, v]) => `${k}=${v}`).join("\n") + "\n", { mode: 0o600 });
      const extra: string[] = [];
      for (const [flag, content] of Object.entries(files)) {
        const f = join(dir, `${flag.replace(/^-+/, "")}.properties`);
        writeFileSync(f, content, { mode: 0o600 });
        extra.push(flag, f);
      }
      const brokers = (o.brokers ?? brokersFromEnv(env)).join(",");
      const { stdout } = await run(
        env.MILLRACE_JAVA ?? "java",
        ["-Xms64m", "-Xmx256m", "-XX:TieredStopAtLevel=1", "-XX:+UseSerialGC", "-Dlog4j2.level=WARN", "-cp", cp, "org.apache.kafka.tools.ConfigCommand", "--bootstrap-server", brokers, "--command-config", commandConfig, ...args, ...extra],
        { timeout: 60_000, maxBuffer: 4 << 20 },
      );
      return stdout;
    } catch (err) {
      const e = err as Error & { stderr?: string; stdout?: string };
      const detail = (e.stderr || e.stdout || e.message).trim().split("\n").filter((l) => !/^\s+at /.test(l)).slice(0, 6).join("\n");
      throw new Error(`kafka ConfigCommand ${args.slice(0, 2).join(" ")} failed: ${detail}`);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  };
  const user = (u: string) => ["--entity-type", "users", "--entity-name", u];
  return {
    async exists(u) {
      const out = await invoke(["--describe", ...user(u)]);
      return out.includes(`${mechanism}=`);
    },
    async upsert(u, password) {
      // On the JVM's command line: visible in the process list of this host while it runs (about
      // two seconds). ConfigCommand's --add-config-file refuses SCRAM entries ("Invalid credential property").
      await invoke(["--alter", ...user(u), "--add-config", `${mechanism}=[iterations=8192,password=${password}]`]);
    },
    async remove(u) {
      if (!(await this.exists(u))) return;
      await invoke(["--alter", ...user(u), "--delete-config", mechanism]);
    },
  };
}

export interface TenantCredentials {
  username: string;
  /** Only when created or rotated now. */
  password?: string;
  mechanism: KafkaSaslMechanism;
  sensorTopic: string;
  alertsTopic: string;
  groupPrefix: string;
  created: boolean;
  rotated: boolean;
}

export interface CredentialsContext {
  kafka: Pick<Admin, "createAcls" | "deleteAcls">;
  scram: ScramAdmin;
  mechanism?: KafkaSaslMechanism;
}

function newPassword(): string {
  return randomBytes(24).toString("base64url");
}

/**
 * The tenant's producer identity: ACLs (always re-applied; idempotent), and the SCRAM credential if
 * missing or `rotate`. A rerun completes a partial run; an existing password is kept (and cannot be
 * shown again: rotate to get a new one).
 */
export async function ensureTenantCredentials(ctx: CredentialsContext, tenantId: string, o: { rotate?: boolean } = {}): Promise<TenantCredentials> {
  const id = checkId(tenantId);
  const username = tenantKafkaUser(id);
  await ctx.kafka.createAcls({ acl: tenantAcls(id) });
  const exists = await ctx.scram.exists(username);
  let password: string | undefined;
  if (!exists || o.rotate) {
    password = newPassword();
    await ctx.scram.upsert(username, password);
  }
  return {
    username,
    password,
    mechanism: ctx.mechanism === "scram-sha-512" ? "scram-sha-512" : "scram-sha-256",
    sensorTopic: `sensor-data-${id}`,
    alertsTopic: `alerts-${id}`,
    groupPrefix: tenantGroupPrefix(id),
    created: !exists,
    rotated: exists && o.rotate === true,
  };
}

/** Remove the tenant's ACLs (the bindings {@link tenantAcls} makes) and its SCRAM credential. */
export async function removeTenantCredentials(ctx: CredentialsContext, tenantId: string): Promise<{ aclsDeleted: number }> {
  const id = checkId(tenantId);
  // Exactly the bindings tenantAcls() makes (kafkajs' deleteAcls wants a resource name per filter).
  const r = await ctx.kafka.deleteAcls({ filters: tenantAcls(id) });
  const aclsDeleted = r.filterResponses.reduce((n, f) => n + f.matchingAcls.length, 0);
  await ctx.scram.remove(tenantKafkaUser(id));
  return { aclsDeleted };
}

/** How many of the bindings {@link tenantAcls} makes are in place (describeAcls; no JVM). */
export async function tenantAclsInPlace(kafka: Pick<Admin, "describeAcls">, tenantId: string): Promise<{ present: number; expected: number }> {
  const want = tenantAcls(tenantId);
  const r = await kafka.describeAcls({
    principal: want[0]!.principal,
    host: "*",
    resourceType: RT.ANY,
    resourcePatternType: PT.ANY,
    operation: OP.ANY,
    permissionType: AclPermissionTypes.ANY,
  } as Parameters<Admin["describeAcls"]>[0]);
  const have = new Set(r.resources.flatMap((res) => res.acls.map((a) => `${res.resourceType}|${res.resourceName}|${res.resourcePatternType}|${a.operation}|${a.permissionType}`)));
  const present = want.filter((w) => have.has(`${w.resourceType}|${w.resourceName}|${w.resourcePatternType}|${w.operation}|${w.permissionType}`)).length;
  return { present, expected: want.length };
}
