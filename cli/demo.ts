/**
 * `millrace demo`: the main job on the local stack, end to end, for a newcomer.
 *   stack up → migrate → three demo tenants (idempotent) → produce a synthetic stream (plus a SKAB
 *   pump run whose valve closes, with the rule that finds it, and a few bad records, so alarms and
 *   dead letters show) → run a worker until every demo partition is drained → per-tenant summary →
 *   exit 0. Safe to run again (new readings each time).
 */
import { existsSync } from "node:fs";
import { join } from "node:path";
import type { Command } from "commander";
import { Kafka, logLevel } from "kafkajs";
import { createKafka, type KafkaAuth } from "../lib/kafka-client.ts";
import pg from "pg";
import { migrate } from "../migrations/migrate.ts";
import { createLogger } from "../lib/log.ts";
import { IngestWorker } from "../pipelines/runtime/worker.ts";
import { loadTopology } from "../pipelines/topology/index.ts";
import { readCsvReadings, SKAB_VALVE_FLOW_RULE } from "../produce/csv.ts";
import { createWireEncoder } from "../produce/encode.ts";
import { SensorPublisher, type ProduceRecord } from "../produce/publisher.ts";
import { createSchemaRegistry, registerSensorSchema, sensorReadingType, sensorSubject } from "../produce/registry.ts";
import { syntheticReadings } from "../produce/synthetic.ts";
import { repoRoot, stackContext } from "../stack/context.ts";
import { stackUp } from "../stack/stack.ts";
import { parquetStorageConfig, S3ClientCache } from "../sinks/s3-parquet/location.ts";
import { positiveInt } from "./options.ts";
import { ruleFlags, setRule } from "./rules.ts";
import { createTenantLifecycle, listTenants, type CreateRequest, type DeploymentType } from "../tenants/lifecycle.ts";
import { TenantDatabases } from "../tenants/database.ts";
import type { Tier } from "../tenants/tiers.ts";

/**
 * One tenant of each deployment type (and tier): multi-tenant in the shared database and bucket;
 * hybrid that chose the shared database and bucket; single-tenant in its own database (created and
 * migrated by `tenants create`) and its own bucket under its own (demo) KMS key id.
 */
export const DEMO_TENANTS: Array<CreateRequest & { tenantId: string; tier: Tier; deploymentType: DeploymentType }> = [
  { tenantId: "0d3f6a52-6b1e-4c59-9a4e-3c1e2b7d8a01", name: "Acme Pumps (demo)", tier: "basic", deploymentType: "multi-tenant" },
  { tenantId: "5b9e2c17-8d4f-4e2a-b6c3-7f1a9d0e4b02", name: "Borealis Foundry (demo)", tier: "professional", deploymentType: "hybrid" },
  {
    tenantId: "a8c4e1f3-2d7b-4f6e-8a9c-0b5d3e7f1c03",
    name: "Cobalt Pharma (demo)",
    tier: "enterprise",
    deploymentType: "single-tenant",
    bucket: "millrace-demo-cobalt",
    kmsKeyId: "arn:aws:kms:us-east-1:000000000000:key/millrace-demo-cobalt",
  },
];
const SKAB_DIR = join(repoRoot, "..", "shared", "datasets", "skab", "valve1");
const SKAB_RUN = "13";

async function* demoRecords(count: number, runStart: number): AsyncGenerator<ProduceRecord> {
  const tenants = DEMO_TENANTS.map((t) => t.tenantId);
  const perTick = tenants.length * 2 * 5;
  // Synthetic readings ending now (a new stretch of time on every run).
  const start = runStart - Math.ceil(count / perTick) * 1000;
  yield* syntheticReadings({ tenants, start, count, seed: runStart });
  // One real pump run (SKAB valve1 experiment 13: the valve closes, the flow falls to critical) for
  // the enterprise tenant, moved to the present. A new equipment id per run: a rerun's readings
  // overlap the last run's in time, and readings older than an equipment's last evaluated one are
  // stored but not evaluated for alarms (docs/alerts.md §3), so the same id would show no alarm.
  const skab = join(SKAB_DIR, `${SKAB_RUN}.csv`);
  if (existsSync(skab)) {
    const equipmentId = `skab-valve1-${SKAB_RUN}-${runStart.toString(36)}`;
    yield* readCsvReadings(skab, { tenantId: DEMO_TENANTS[2]!.tenantId, equipmentId, facilityId: "skab-testbed", startAt: runStart - 3_600_000 });
  }
}

async function waitDrained(group: string, storeOf: (topic: string) => pg.Pool, admin: ReturnType<Kafka["admin"]>, topics: string[], timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    let behind = 0;
    for (const topic of topics) {
      const end = await admin.fetchTopicOffsets(topic);
      const stored = await storeOf(topic).query<{ partition: number; next_offset: string }>(
        "SELECT partition, next_offset FROM millrace.consumer_offsets WHERE consumer_group = $1 AND topic = $2",
        [group, topic],
      );
      const got = new Map(stored.rows.map((r) => [r.partition, Number(r.next_offset)]));
      for (const e of end) behind += Math.max(0, Number(e.high) - (got.get(e.partition) ?? 0));
    }
    if (behind === 0) return;
    process.stderr.write(`\rdemo: worker catching up, ${behind} records to go…   `);
    await new Promise((r) => setTimeout(r, 500));
  }
  throw new Error(`the worker did not drain the demo topics within ${timeoutMs / 1000} s; see ./millrace stack logs postgres|kafka`);
}

export function registerDemoCommand(program: Command): void {
  program
    .command("demo")
    .description("set up the local stack and run the main job end to end: produce, ingest, summarise (safe to run twice)")
    .option("--count <n>", "synthetic readings to produce", positiveInt("--count"), 30000)
    .option("--timeout <seconds>", "give up if the worker has not drained by then", positiveInt("--timeout"), 300)
    .action(async (opts: { count: number; timeout: number }) => {
      const t0 = Date.now();
      const ctx = stackContext();
      const env = await stackUp(ctx);
      Object.assign(process.env, env);
      await migrate(env.MILLRACE_PG_ADMIN_URL!, { log: (m) => process.stderr.write(`${m}\n`) });

      const kafka = createKafka({ clientId: "millrace-demo", logLevel: logLevel.NOTHING });
      const admin = kafka.admin();
      await admin.connect();
      const db = new pg.Pool({ connectionString: env.MILLRACE_PG_ADMIN_URL!, max: 2 });
      // Each tenant's store: the shared database, or its dedicated one.
      const stores = new TenantDatabases(db, { sharedUrl: env.MILLRACE_PG_ADMIN_URL!, pool: { max: 2, applicationName: "millrace-demo" } });
      const log = createLogger({ level: process.env.MILLRACE_LOG_LEVEL ?? "warn" });
      let worker: IngestWorker | undefined;
      const s3 = new S3ClientCache(process.env);
      try {
        const lifecycle = { db, kafka: admin, s3, storageConfig: parquetStorageConfig(process.env), env: process.env, adminUrl: env.MILLRACE_PG_ADMIN_URL! };
        const databaseOf = new Map<string, string>();
        // Each tenant produces under its own Kafka identity (tenant-{id}: its own sensor topic only). A
        // rerun cannot see the old passwords (never stored), so it rotates them.
        const tenantAuth = new Map<string, KafkaAuth | null>();
        for (const t of DEMO_TENANTS) {
          const r = await createTenantLifecycle(lifecycle, { ...t, rotateKafkaPassword: true });
          databaseOf.set(t.tenantId, r.database);
          const c = r.kafkaCredentials;
          tenantAuth.set(t.tenantId, c?.password ? { mechanism: c.mechanism, username: c.username, password: c.password } : null);
        }
        // The rule that finds the SKAB run's valve closure, for the tenant that gets the run (exactly
        // what `millrace rules set --id valve_flow_low --measure flow_rate …` stores; docs/alerts.md §7).
        const plan = loadTopology(join(repoRoot, "topology.yaml"));
        const defaults = plan.processors.find((p) => p.type === "thresholds")?.rules ?? [];
        const rule = await setRule(db, DEMO_TENANTS[2]!.tenantId, SKAB_VALVE_FLOW_RULE.id, defaults, ruleFlags(SKAB_VALVE_FLOW_RULE));
        if (!rule.ok) throw new Error(`demo: rule ${SKAB_VALVE_FLOW_RULE.id} not stored: ${rule.problems.join("; ")}`);
        const tenantKafka = (tenantId: string) =>
          tenantAuth.get(tenantId) ? createKafka({ clientId: `millrace-demo-${tenantId.slice(0, 8)}`, auth: tenantAuth.get(tenantId), logLevel: logLevel.NOTHING }) : kafka;
        const rowsBy = new Map((await listTenants(db)).map((r) => [r.tenant_id, r]));
        const topics = DEMO_TENANTS.map((t) => `sensor-data-${t.tenantId}`);
        const storeBy = new Map<string, pg.Pool>();
        for (const t of DEMO_TENANTS) storeBy.set(t.tenantId, await stores.poolOfTenant(t.tenantId));
        const storeOf = (tenantId: string) => storeBy.get(tenantId)!;
        const countOf = async (tenantId: string) =>
          (await storeOf(tenantId).query<{ n: number }>("SELECT count(*)::int AS n FROM sensor_data_raw WHERE tenant_id = $1", [tenantId])).rows[0]!.n;
        const beforeBy = new Map<string, number>();
        for (const t of DEMO_TENANTS) beforeBy.set(t.tenantId, await countOf(t.tenantId));

        // Produce: the stream, then a few records a real fleet sends by mistake.
        const runStart = Date.now();
        const count = opts.count;
        process.stderr.write(`demo: producing ${count} synthetic readings for ${DEMO_TENANTS.length} tenants and one SKAB pump run…\n`);
        const all: ProduceRecord[] = [];
        for await (const r of demoRecords(count, runStart)) all.push(r);
        const produceStart = Date.now();
        let produced = 0;
        for (const t of DEMO_TENANTS) {
          const publisher = new SensorPublisher({ kafka: tenantKafka(t.tenantId), log });
          await publisher.connect();
          try {
            produced += (await publisher.publish(all.filter((r) => r.tenantId === t.tenantId))).records;
          } finally {
            await publisher.disconnect();
          }
        }
        const stats = { records: produced, recordsPerSecond: produced / Math.max(0.001, (Date.now() - produceStart) / 1000) };
        const registry = createSchemaRegistry(env.MILLRACE_SCHEMA_REGISTRY_URL!);
        const id = await registerSensorSchema(registry, sensorSubject(topics[0]!));
        const enc = createWireEncoder(id, sensorReadingType());
        const bad = tenantKafka(DEMO_TENANTS[0]!.tenantId).producer({ idempotent: true, maxInFlightRequests: 1 });
        await bad.connect();
        await bad.send({
          topic: topics[0]!,
          acks: -1,
          messages: [
            { key: "legacy-gateway", value: Buffer.from('{"equipment_id":"pump-0001","temperature":21.5}') },
            { key: "pump-0001", value: enc.encode({ time: runStart, tenant_id: DEMO_TENANTS[1]!.tenantId, equipment_id: "pump-0001", facility_id: "fac-01", temperature: 1, vibration: null, pressure: null, flow_rate: null }) },
            { key: "pump-0002", value: enc.encode({ time: runStart + 86_400_000, tenant_id: DEMO_TENANTS[0]!.tenantId, equipment_id: "pump-0002", facility_id: "fac-01", temperature: 1, vibration: null, pressure: null, flow_rate: null }) },
          ],
        });
        await bad.disconnect();
        process.stderr.write(`demo: produced ${stats.records + 3} records (${Math.round(stats.recordsPerSecond)} records/s)\n`);

        // Ingest until drained, in the topology's consumer group: a `./millrace run` afterwards
        // continues exactly where the demo stopped (Parquet files are one consumer group's;
        // docs/parquet.md). A stack where an earlier version's demo wrote them under its own group
        // keeps that group.
        const wanted = new Set(topics);
        const owners = new Set<string>();
        for (const t of DEMO_TENANTS) {
          const r = await storeOf(t.tenantId).query<{ consumer_group: string }>("SELECT DISTINCT consumer_group FROM millrace.parquet_files WHERE topic = $1", [`sensor-data-${t.tenantId}`]);
          for (const x of r.rows) owners.add(x.consumer_group);
        }
        const group = owners.size === 1 ? [...owners][0]! : plan.source.consumerGroup;
        if (group !== plan.source.consumerGroup) process.stderr.write(`demo: the demo tenants' Parquet files belong to consumer group ${group} (an earlier demo): continuing in it; \`./millrace run --consumer-group ${group}\` continues them too\n`);
        worker = new IngestWorker(
          { ...plan, source: { ...plan.source, consumerGroup: group } },
          { brokers: env.MILLRACE_KAFKA_BROKERS!.split(","), registryUrl: env.MILLRACE_SCHEMA_REGISTRY_URL!, pgUrl: env.MILLRACE_PG_ADMIN_URL!, pgRole: "millrace_writer", log, topicFilter: (t) => wanted.has(t) },
        );
        const ingestStart = Date.now();
        await worker.start();
        await waitDrained(group, (topic) => storeOf(topic.slice("sensor-data-".length)), admin, topics, opts.timeout * 1000);
        const ingestSeconds = (Date.now() - ingestStart) / 1000;
        await worker.drainDeadLetters();
        process.stderr.write("\ndemo: stopping the worker (uploads the Parquet files it still holds)…\n");
        await worker.stop();
        worker = undefined;

        // Summary.
        const afterBy = new Map<string, number>();
        const dls: Array<{ tenant_id: string; reason: string; n: number }> = [];
        const alarmLines: string[] = [];
        const filesBy = new Map<string, { files: number; rows: string }>();
        for (const t of DEMO_TENANTS) {
          const store = storeOf(t.tenantId);
          afterBy.set(t.tenantId, await countOf(t.tenantId));
          const d = await store.query<{ tenant_id: string; reason: string; n: number }>(
            "SELECT tenant_id, reason, count(*)::int AS n FROM millrace.dead_letters WHERE tenant_id = $1 GROUP BY 1, 2 ORDER BY 1, 2",
            [t.tenantId],
          );
          dls.push(...d.rows);
          const f = await store.query<{ files: number; rows: string }>(
            `SELECT count(*)::int AS files, coalesce(sum(row_count), 0)::bigint AS rows
             FROM millrace.parquet_files WHERE consumer_group = $1 AND tenant_id = $2 AND status = 'uploaded'`,
            [group, t.tenantId],
          );
          if (f.rows[0] && f.rows[0].files > 0) filesBy.set(t.tenantId, f.rows[0]);
          // This run's alarms: one line per alarm, its steps in order.
          const a = await store.query<{ rule_id: string; equipment_id: string; steps: string }>(
            `SELECT rule_id, equipment_id, string_agg(step || ' ' || severity, ' → ' ORDER BY seq) AS steps
             FROM alerts WHERE tenant_id = $1 AND kind = 'threshold' AND created_at >= $2
             GROUP BY alert_id, rule_id, equipment_id ORDER BY min(event_time), rule_id, equipment_id`,
            [t.tenantId, new Date(runStart)],
          );
          for (const r of a.rows.slice(0, 5)) alarmLines.push(`  ${t.name}: ${r.rule_id} on ${r.equipment_id}: ${r.steps}`);
          if (a.rows.length > 5) alarmLines.push(`  ${t.name}: … ${a.rows.length - 5} more`);
        }
        let total = 0;
        const lines = ["", "millrace demo — summary", ""];
        lines.push(`${"tenant".padEnd(26)} ${"tier".padEnd(13)} ${"deployment".padEnd(14)} ${"database".padEnd(9)} ${"stored now".padStart(10)} ${"this run".padStart(9)} ${"parquet files/rows".padStart(19)}  dead letters (all runs)`);
        for (const t of DEMO_TENANTS) {
          const nowN = afterBy.get(t.tenantId) ?? 0;
          const run = nowN - (beforeBy.get(t.tenantId) ?? 0);
          total += run;
          const reasons = dls.filter((d) => d.tenant_id === t.tenantId).map((d) => `${d.reason}=${d.n}`).join(", ") || "none";
          const f = filesBy.get(t.tenantId);
          const pq = f ? `${f.files}/${f.rows}` : "0/0";
          const row = rowsBy.get(t.tenantId);
          lines.push(`${t.name.padEnd(26)} ${(row?.subscription_tier ?? t.tier).padEnd(13)} ${(row?.deployment_type ?? t.deploymentType).padEnd(14)} ${(row?.database_mode ?? "shared").padEnd(9)} ${String(nowN).padStart(10)} ${String(run).padStart(9)} ${pq.padStart(19)}  ${reasons}`);
        }
        lines.push("", "alarms this run (alerts table, and once each on alerts-{tenant_id}; rules: ./millrace rules list --tenant …):");
        lines.push(...(alarmLines.length > 0 ? alarmLines : ["  none"]));
        lines.push("", `final lag: 0 (every demo partition drained)`);
        lines.push(`ingest: ${total} rows in ${ingestSeconds.toFixed(1)} s = ${Math.round(total / ingestSeconds)} records/s (worker start-up included)`);
        lines.push(`total wall time: ${((Date.now() - t0) / 1000).toFixed(1)} s`, "");
        for (const t of DEMO_TENANTS) {
          const row = rowsBy.get(t.tenantId);
          const bucket = row?.storage_bucket ?? lifecycle.storageConfig.sharedBucket;
          const kms = row?.kms_key_id ? ` (SSE-KMS ${row.kms_key_id})` : "";
          lines.push(`Parquet of ${t.name}: s3://${bucket}/${t.tenantId}/sensor-data/date=…/hour=…/${kms} — ./millrace parquet ls --tenant ${t.tenantId}`);
        }
        for (const t of DEMO_TENANTS) if (databaseOf.get(t.tenantId) !== "shared") lines.push(`Rows of ${t.name}: ${databaseOf.get(t.tenantId)} — ./millrace tenants show ${t.tenantId}`);
        lines.push("Look around: ./millrace stack env (connection settings), psql \"$MILLRACE_PG_ADMIN_URL\", ./millrace topology describe", "");
        process.stdout.write(lines.join("\n"));
      } finally {
        await worker?.stop();
        s3.destroy();
        await admin.disconnect();
        await stores.end();
        await db.end();
      }
    });
}
