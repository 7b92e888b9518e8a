/**
 * `millrace tenants create|list|show|update|suspend|resume|delete` (docs/tenancy.md). Thin: the
 * logic is in tenants/lifecycle.ts. Settings: MILLRACE_PG_ADMIN_URL (or MILLRACE_PG_URL),
 * MILLRACE_KAFKA_BROKERS, MILLRACE_S3_*.
 */
import { createInterface } from "node:readline/promises";
import { InvalidArgumentError, type Command } from "commander";
import { logLevel } from "kafkajs";
import { createKafka } from "../lib/kafka-client.ts";
import pg from "pg";
import { moveTenantDatabase, moveTenantStorage } from "../tenants/move.ts";
import { loadStackEnv, optionalEnv, requireEnv } from "../lib/env.ts";
import { parquetStorageConfig, S3ClientCache } from "../sinks/s3-parquet/location.ts";
import {
  createTenantLifecycle,
  deleteTenant,
  ensureBucket,
  listTenants,
  parseTenantId,
  setTenantStatus,
  showTenant,
  tenantCredentials,
  kafkaUsesSasl,
  updateTenant,
  type DeploymentType,
  type LifecycleContext,
  type TenantRow,
  type UpdateRequest,
} from "../tenants/lifecycle.ts";
import type { Tier } from "../tenants/tiers.ts";
import { tenantAclsInPlace, tenantKafkaUser, type TenantCredentials } from "../tenants/credentials.ts";
import { brokersFromEnv } from "../lib/kafka-client.ts";

function credentialsJson(c: TenantCredentials | undefined) {
  if (!c) return undefined;
  return { username: c.username, password: c.password ?? null, mechanism: c.mechanism, brokers: brokersFromEnv().join(","), sensorTopic: c.sensorTopic, alertsTopic: c.alertsTopic, groupPrefix: c.groupPrefix };
}

function credentialsLines(c: TenantCredentials): string[] {
  return [
    `kafka     user ${c.username} (${c.mechanism}): WRITE ${c.sensorTopic}, READ ${c.alertsTopic}, consumer groups ${c.groupPrefix}*`,
    c.password !== undefined
      ? `password  ${c.password}    (shown once; not stored by millrace — new one: tenants credentials <id> --rotate)`
      : "password  (not shown: it exists already; tenants credentials <id> --rotate sets a new one)",
    ...(c.password !== undefined ? [`produce   MILLRACE_PRODUCER_KAFKA_USERNAME=${c.username} MILLRACE_PRODUCER_KAFKA_PASSWORD=<password> millrace produce …`] : []),
  ];
}

const TIER_NAMES = ["basic", "professional", "enterprise"];
const DEPLOYMENTS = ["multi-tenant", "single-tenant", "hybrid"];

function oneOf<T extends string>(names: readonly string[], what: string): (v: string) => T {
  return (v) => {
    if (!names.includes(v)) throw new InvalidArgumentError(`${what} must be one of ${names.join(", ")}`);
    return v as T;
  };
}

function nonBlank(what: string): (v: string) => string {
  return (v) => {
    const t = v.trim();
    if (t === "") throw new InvalidArgumentError(`${what} must not be empty`);
    return t;
  };
}

function tenantIdArg(v: string): string {
  try {
    return parseTenantId(v);
  } catch (err) {
    throw new InvalidArgumentError((err as Error).message);
  }
}

function positiveInt(v: string): number {
  const n = Number(v);
  if (!/^\d+$/.test(v) || !Number.isSafeInteger(n)) throw new InvalidArgumentError("must be a non-negative integer");
  return n;
}

/**
 * `--retention-days`: a positive number of days, or `unlimited` (any case). It stays the word
 * `unlimited` here (commander stores a parser's null as ""); {@link updateRequestOf} makes it null.
 */
function retentionArg(v: string): number | "unlimited" {
  const t = v.trim();
  if (t.toLowerCase() === "unlimited") return "unlimited";
  const n = Number(t);
  if (!/^\d+$/.test(t) || !Number.isSafeInteger(n) || n <= 0) throw new InvalidArgumentError("must be a positive number of days or 'unlimited'");
  return n;
}

export interface UpdateOptions {
  name?: string;
  tier?: Tier;
  maxEquipment?: number;
  retentionDays?: number | "unlimited";
}

/** `tenants update`'s options as an update request (`--retention-days unlimited`: null, no limit). */
export function updateRequestOf(o: UpdateOptions): UpdateRequest {
  const { retentionDays, ...rest } = o;
  return retentionDays === undefined ? rest : { ...rest, retentionDays: retentionDays === "unlimited" ? null : retentionDays };
}

async function withContext<T>(fn: (ctx: LifecycleContext) => Promise<T>): Promise<T> {
  loadStackEnv();
  const url = optionalEnv("MILLRACE_PG_ADMIN_URL") ?? requireEnv("MILLRACE_PG_URL");
  const db = new pg.Pool({ connectionString: url, max: 2, application_name: "millrace-tenants", options: "-c TimeZone=UTC" });
  const kafka = createKafka({ clientId: "millrace-tenants", logLevel: logLevel.NOTHING }).admin();
  const s3 = new S3ClientCache(process.env, { maxAttempts: 3 });
  await kafka.connect();
  try {
    return await fn({ db, kafka, s3, storageConfig: parquetStorageConfig(process.env), env: process.env, progress: (l) => process.stderr.write(`${l}\n`), adminUrl: optionalEnv("MILLRACE_PG_ADMIN_URL") });
  } finally {
    s3.destroy();
    await kafka.disconnect();
    await db.end();
  }
}

function table(rows: string[][]): string {
  const widths = rows[0]!.map((_, i) => Math.max(...rows.map((r) => r[i]!.length)));
  return rows.map((r) => r.map((c, i) => (i === r.length - 1 ? c : c.padEnd(widths[i]!))).join("  ")).join("\n");
}

const retention = (r: TenantRow) => (r.retention_policy_days === null ? "unlimited" : `${r.retention_policy_days} d`);
const out = (s: string) => process.stdout.write(`${s}\n`);

export function registerTenantCommands(program: Command): void {
  const cmd = program.command("tenants").description("tenant lifecycle: create, list, show, update, suspend, resume, delete (docs/tenancy.md)");

  cmd
    .command("create")
    .description("create a tenant (row, topics, storage); a rerun with the same --tenant-id completes a partial create")
    .requiredOption("--name <name>", "tenant name", nonBlank("--name"))
    .option("--tier <tier>", "basic | professional | enterprise (default basic)", oneOf<Tier>(TIER_NAMES, "--tier"))
    .option("--deployment <type>", "multi-tenant | single-tenant | hybrid (default multi-tenant)", oneOf<DeploymentType>(DEPLOYMENTS, "--deployment"))
    .option("--bucket <bucket>", "dedicated bucket (single-tenant, or hybrid choosing dedicated storage)")
    .option("--kms-key-id <id>", "KMS key for the dedicated bucket's objects (SSE-KMS)")
    .option("--database <mode>", "shared | dedicated: where its rows live (default: dedicated for single-tenant, shared otherwise)", oneOf<"shared" | "dedicated">(["shared", "dedicated"], "--database"))
    .option("--tenant-id <uuid>", "tenant id (default: generated)", tenantIdArg)
    .option("--json", "print the result as JSON")
    .action(async (o: { name: string; tier?: Tier; deployment?: DeploymentType; bucket?: string; kmsKeyId?: string; database?: "shared" | "dedicated"; tenantId?: string; json?: boolean }) => {
      await withContext(async (ctx) => {
        const r = await createTenantLifecycle(ctx, { name: o.name, tier: o.tier, deploymentType: o.deployment, bucket: o.bucket, kmsKeyId: o.kmsKeyId, database: o.database, tenantId: o.tenantId });
        if (o.json)
          return out(
            JSON.stringify({
              tenantId: r.tenantId,
              rowCreated: r.rowCreated,
              topics: r.topics,
              database: r.database,
              bucket: r.location.bucket,
              prefix: r.location.tenantPrefix,
              bucketCreated: r.bucketCreated,
              kafka: credentialsJson(r.kafkaCredentials) ?? null,
            }),
          );
        for (const n of r.notes) out(`note: ${n}`);
        out(`tenant    ${r.tenantId}${r.rowCreated ? " (created)" : " (existed; completed)"}`);
        out(`topics    ${Object.values(r.topics).join(", ")}`);
        out(`database  ${r.database}`);
        out(`storage   s3://${r.location.bucket}/${r.location.tenantPrefix}${r.bucketCreated ? " (bucket created)" : ""}`);
        if (r.kafkaCredentials) for (const l of credentialsLines(r.kafkaCredentials)) out(l);
      });
    });

  cmd
    .command("credentials")
    .description("the tenant's Kafka producer identity (creates it if missing); --rotate sets a new password (the old one stops working)")
    .argument("<id>", "tenant id", tenantIdArg)
    .option("--rotate", "set a new password and print it")
    .option("--json", "print the result as JSON")
    .action(async (id: string, o: { rotate?: boolean; json?: boolean }) => {
      await withContext(async (ctx) => {
        const c = await tenantCredentials(ctx, id, { rotate: o.rotate });
        if (o.json) return out(JSON.stringify({ tenantId: id, created: c.created, rotated: c.rotated, kafka: credentialsJson(c) }));
        if (c.created) out("note: the Kafka user did not exist; created it");
        for (const l of credentialsLines(c)) out(l);
      });
    });

  cmd
    .command("list")
    .description("list tenants")
    .option("--json", "one JSON object per tenant")
    .action(async (o: { json?: boolean }) => {
      await withContext(async (ctx) => {
        const rows = await listTenants(ctx.db);
        if (o.json) return rows.forEach((r) => out(JSON.stringify(r)));
        if (rows.length === 0) return out("no tenants");
        out(
          table([
            ["tenant", "name", "tier", "deployment", "status", "retention", "max eq", "database", "storage"],
            ...rows.map((r) => [r.tenant_id, r.tenant_name, r.subscription_tier, r.deployment_type, r.status, retention(r), String(r.max_equipment), r.database_mode, r.storage_mode === "shared" ? "shared" : `s3://${r.storage_bucket}`]),
          ]),
        );
      });
    });

  cmd
    .command("show")
    .description("a tenant's row, topics and storage place")
    .argument("<id>", "tenant id", tenantIdArg)
    .action(async (id: string) => {
      await withContext(async (ctx) => {
        const d = await showTenant(ctx, id);
        if (!d) throw new Error(`tenant ${id} does not exist`);
        const r = d.row;
        out(`tenant      ${r.tenant_id}`);
        out(`name        ${r.tenant_name}`);
        out(`status      ${r.status}`);
        out(`tier        ${r.subscription_tier}`);
        out(`deployment  ${r.deployment_type} (database ${r.database_mode}, storage ${r.storage_mode})`);
        out(`database    ${d.database}`);
        out(`retention   ${retention(r)}`);
        out(`equipment   max ${r.max_equipment}`);
        out(`region      ${r.data_region}`);
        out(`created     ${r.created_at.toISOString()} (updated ${r.updated_at.toISOString()})`);
        for (const t of d.topics) out(`topic       ${t.name}: ${t.exists ? `${t.partitions} partitions` : "missing"}`);
        out(`parquet     ${d.storage}`);
        if (kafkaUsesSasl(ctx)) {
          const acls = await tenantAclsInPlace(ctx.kafka, id);
          out(`kafka       user ${tenantKafkaUser(id)}: ${acls.present} of ${acls.expected} ACLs in place${acls.present < acls.expected && r.status !== "deleted" ? " (rerun `tenants create` or `tenants credentials` to complete)" : ""}`);
        }
      });
    });

  cmd
    .command("update")
    .description("change name, tier, equipment limit or retention (a new tier brings its limits unless given)")
    .argument("<id>", "tenant id", tenantIdArg)
    .option("--name <name>", "new name", nonBlank("--name"))
    .option("--tier <tier>", "basic | professional | enterprise", oneOf<Tier>(TIER_NAMES, "--tier"))
    .option("--max-equipment <n>", "equipment limit", positiveInt)
    .option("--retention-days <n|unlimited>", "retention in days, or unlimited", retentionArg)
    .action(async (id: string, o: UpdateOptions) => {
      await withContext(async (ctx) => {
        const r = await updateTenant(ctx.db, id, updateRequestOf(o));
        out(`tenant ${r.tenant_id}: name ${JSON.stringify(r.tenant_name)}, tier ${r.subscription_tier}, retention ${retention(r)}, max equipment ${r.max_equipment}`);
      });
    });

  for (const [name, status, what] of [
    ["suspend", "suspended", "workers dead-letter its readings as tenant_suspended (nothing lost)"],
    ["resume", "active", "workers store its readings again"],
  ] as const) {
    cmd
      .command(name)
      .description(`${name} a tenant: ${what}`)
      .argument("<id>", "tenant id", tenantIdArg)
      .action(async (id: string) => {
        await withContext(async (ctx) => {
          const r = await setTenantStatus(ctx.db, id, status);
          out(`tenant ${id}: ${r.changed ? `now ${status}` : `already ${status}`}`);
        });
      });
  }

  cmd
    .command("move")
    .description("move a tenant between the shared database and a dedicated one, and/or its Parquet files between the shared bucket and a dedicated one, while workers run (docs/tenancy.md)")
    .argument("<id>", "tenant id", tenantIdArg)
    .option("--database <mode>", "shared | dedicated: move its rows, offsets, alarm state, alerts and Parquet manifest", oneOf<"shared" | "dedicated">(["shared", "dedicated"], "--database"))
    .option("--bucket <bucket>", "move its Parquet files into this dedicated bucket (with --kms-key-id)")
    .option("--kms-key-id <id>", "KMS key for the dedicated bucket's objects (SSE-KMS)")
    .option("--shared-bucket", "move its Parquet files back into the shared bucket (its own prefix)")
    .option("--consumer-group <group>", "also fence this consumer group's offsets (default: every group with offsets for the tenant's topic)", (v: string, acc: string[] = []) => [...acc, v])
    .option("--json", "print the result as JSON")
    .action(async (id: string, o: { database?: "shared" | "dedicated"; bucket?: string; kmsKeyId?: string; sharedBucket?: boolean; consumerGroup?: string[]; json?: boolean }) => {
      if (!o.database && !o.bucket && !o.kmsKeyId && !o.sharedBucket) throw new InvalidArgumentError("give --database, or --bucket with --kms-key-id, or --shared-bucket");
      if ((o.bucket || o.kmsKeyId) && (!o.bucket || !o.kmsKeyId)) throw new InvalidArgumentError("a dedicated bucket needs both --bucket and --kms-key-id");
      if (o.sharedBucket && o.bucket) throw new InvalidArgumentError("--shared-bucket and --bucket contradict each other");
      await withContext(async (ctx) => {
        const results: unknown[] = [];
        if (o.database) {
          const r = await moveTenantDatabase(ctx, id, { to: o.database, consumerGroups: o.consumerGroup });
          results.push(r);
          if (!o.json) {
            if (!r.moved) out(`database    already ${r.to}; nothing moved`);
            else {
              out(`database    moved from ${r.from} to ${r.to} (${r.deploymentType})`);
              out(`copied      ${Object.entries(r.copied).map(([t, n]) => `${t} ${n}`).join(", ")}; ${r.offsets} partition offsets`);
            }
          }
        }
        if (o.bucket || o.sharedBucket) {
          const to = o.sharedBucket ? ({ mode: "shared" } as const) : ({ mode: "dedicated", bucket: o.bucket!, kmsKeyId: o.kmsKeyId! } as const);
          const r = await moveTenantStorage({ ...ctx, ensureBucket: (loc) => ensureBucket(ctx, loc) }, id, { to, consumerGroups: o.consumerGroup });
          results.push(r);
          if (!o.json) {
            if (!r.moved) out(`storage     already ${r.to}; nothing moved`);
            else out(`storage     moved from ${r.from} to ${r.to} (${r.deploymentType}): ${r.objectsCopied} files copied, ${r.plannedRepointed} planned files repointed`);
          }
        }
        if (o.json) out(JSON.stringify(results));
      });
    });

  cmd
    .command("delete")
    .description("mark a tenant deleted (its readings become unknown_tenant dead letters); --purge also removes its topics, rows and objects")
    .argument("<id>", "tenant id", tenantIdArg)
    .option("--purge", "also delete its topics, its sensor_data_raw and dead-letter rows, and its Parquet objects and manifest rows")
    .option("--yes", "with --purge: do not ask for confirmation (needed when no terminal can be asked)")
    .action(async (id: string, o: { purge?: boolean; yes?: boolean }) => {
      if (o.purge) await confirmPurge(id, { yes: o.yes === true, interactive: process.stdin.isTTY === true && process.stderr.isTTY === true, ask: askOnTerminal });
      await withContext(async (ctx) => {
        const r = await deleteTenant(ctx, id, { purge: o.purge });
        out(`tenant ${id}: ${r.statusChanged ? "marked deleted" : "already deleted"}`);
        if (r.purged) {
          out(`purged: ${r.topicsDeleted.length} topics, ${r.rowsDeleted} rows, ${r.deadLettersDeleted} dead letters, ${r.objectsDeleted} objects, ${r.manifestRowsDeleted} manifest rows, ${r.kafkaAclsDeleted} Kafka ACLs and the Kafka user`);
          out("kept: the tenants row (status deleted), threshold rules, equipment, alerts and alarms, offsets bookkeeping (docs/tenancy.md)");
        }
      });
    });
}

/**
 * `delete --purge` removes a tenant's data for good: it asks for the tenant id to be typed again,
 * or takes `--yes`; with no terminal to ask (a script, CI) and no `--yes` it refuses, saying so.
 */
export async function confirmPurge(id: string, o: { yes: boolean; interactive: boolean; ask: (question: string) => Promise<string> }): Promise<void> {
  if (o.yes) return;
  if (!o.interactive) throw new Error(`--purge deletes tenant ${id}'s topics, rows and Parquet objects for good; there is no terminal to ask, so confirm with --yes`);
  const answer = (await o.ask(`This deletes tenant ${id}'s topics, rows and Parquet objects for good. Type the tenant id to confirm: `)).trim().toLowerCase();
  if (answer !== id.toLowerCase()) throw new Error(`not confirmed (expected ${id}); nothing was changed`);
}

async function askOnTerminal(question: string): Promise<string> {
  const rl = createInterface({ input: process.stdin, output: process.stderr });
  try {
    return await rl.question(question);
  } finally {
    rl.close();
  }
}
