/**
 * A/B drain: the same preloaded topics drained by the worker of two (or more) source trees, turn
 * about (A B A B …), each drain into a fresh database and bucket — so a change is measured as a
 * ratio against its baseline in one run, on the same rows, under the same background load.
 *
 *   git archive <base> | tar -x -C /tmp/base && ln -s $PWD/node_modules /tmp/base/node_modules
 *   node --import tsx bench/ab.ts --roots /tmp/base,. --records 300000 --rounds 3 [--pg-only] [--parquet-max-rows 10000]
 *
 * A root may carry node flags for its worker after `@`, space-separated: `.@--max-semi-space-size=32`.
 *
 * Prints one JSON line per drain and a summary (median records/s per root, ratio to the first).
 */
import { randomBytes } from "node:crypto";
import { join, resolve } from "node:path";
import { mkdtempSync, writeFileSync, readFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { parseArgs } from "node:util";
import { pathToFileURL } from "node:url";
import { parse as parseYaml, stringify as stringifyYaml } from "yaml";
import { SensorPublisher } from "../produce/publisher.ts";
import { createTenant, tenantTopics } from "../tenants/provision.ts";
import { createBenchDatabase, insertTenants, tableChecksum, type BenchDatabase } from "./db.ts";
import { measureDrain, type DrainResult } from "./e2e.ts";
import { fixtureReadings, makeFixture } from "./fixtures.ts";
import { benchKafka, deleteGroupsQuietly, deleteTopicsQuietly, endOffsets, sumOffsets } from "./kafka-util.ts";
import { benchS3, createBucket, removeBucket } from "./s3.ts";
import { freePort, spawnLogged, waitExit } from "./spawn.ts";

const { values } = parseArgs({
  options: {
    roots: { type: "string", default: "." },
    records: { type: "string", default: "300000" },
    rounds: { type: "string", default: "3" },
    tenants: { type: "string", default: "4" },
    partitions: { type: "string", default: "3" },
    "pg-only": { type: "boolean", default: false },
    // Files closing while the drain runs (as under steady load), instead of after it on idle_flush.
    "parquet-max-rows": { type: "string" },
    "cpu-prof": { type: "string" },
  },
});
const variants = values.roots!.split(",");
const roots = variants.map((v) => resolve(v.split("@")[0]!));
const flagsOf = (i: number) => (variants[i]!.split("@")[1] ?? "").split(" ").filter(Boolean);
const names = variants.map((v, i) => (v.includes("@") ? `${roots[i]}@${v.split("@")[1]}` : roots[i]!));
const records = Number(values.records);
const rounds = Number(values.rounds);
const runId = randomBytes(4).toString("hex");
const workDir = mkdtempSync(join(tmpdir(), "millrace-ab-"));
const log = (m: string) => process.stderr.write(`${new Date().toISOString()} ${m}\n`);

function topologyFor(root: string, pgOnly: boolean): string {
  const doc = parseYaml(readFileSync(join(root, "topology.yaml"), "utf8")) as Record<string, Record<string, Record<string, unknown>>>;
  const parquetIds = pgOnly ? Object.entries(doc.sinks ?? {}).filter(([, v]) => v.type === "s3_parquet").map(([k]) => k) : [];
  for (const id of parquetIds) delete doc.sinks![id];
  if (values["parquet-max-rows"]) for (const v of Object.values(doc.sinks ?? {})) if (v.type === "s3_parquet") v.max_rows = Number(values["parquet-max-rows"]);
  for (const section of ["processors", "sinks"]) {
    for (const c of Object.values(doc[section] ?? {})) {
      if (Array.isArray(c.inputs)) c.inputs = c.inputs.filter((i: unknown) => !parquetIds.includes(String(i)));
      if (typeof c.schema === "string" && !c.schema.startsWith("/")) c.schema = join(root, c.schema);
    }
  }
  const file = join(workDir, `topology-${randomBytes(3).toString("hex")}.yaml`);
  writeFileSync(file, stringifyYaml(doc));
  return file;
}

const kafka = benchKafka(`millrace-ab-${runId}`);
const admin = kafka.admin();
await admin.connect();
const s3 = benchS3();
const fx = makeFixture({ count: records, tenants: Number(values.tenants), seed: "millrace-bench" });
const setupDb = await createBenchDatabase("ab_setup");
const topics: string[] = [];
const groups: string[] = [];
const results: Array<{ variant: number; root: string; round: number; drain: DrainResult; rows: number; checksum: string }> = [];
try {
  for (const t of fx.tenants) {
    await createTenant(setupDb.admin, admin, { tenantId: t, name: `ab ${t.slice(0, 8)}`, partitions: Number(values.partitions), retentionDays: 30, maxEquipment: 10_000 });
    const tt = tenantTopics(t);
    topics.push(tt.sensorData, tt.alerts, tt.deadLetters);
  }
  const sensorTopics = fx.tenants.map((t) => tenantTopics(t).sensorData);
  const pub = new SensorPublisher({ kafka, batchSize: 2000 });
  const st = await pub.publish(fixtureReadings(fx));
  await pub.disconnect();
  log(`preloaded ${st.records} records at ${Math.round(st.recordsPerSecond)}/s; logs in ${workDir}`);
  const end = await endOffsets(admin, sensorTopics);
  if (sumOffsets(end) !== records) throw new Error(`topics hold ${sumOffsets(end)}, expected ${records}`);
  for (let round = 0; round < rounds; round++) {
    for (let i = 0; i < roots.length; i++) {
      const root = roots[i]!;
      const db: BenchDatabase = await createBenchDatabase(`ab${i}`);
      const bucket = `millrace-ab-${runId}-${round}-${i}`;
      if (!values["pg-only"]) await createBucket(s3, bucket);
      const group = `millrace-ab-${runId}-${round}-${i}`;
      groups.push(group);
      try {
        await insertTenants(db.admin, fx.tenants);
        const logFile = join(workDir, `worker-${round}-${i}.log`);
        const nodeArgs = [...flagsOf(i), ...(values["cpu-prof"] ? ["--cpu-prof", `--cpu-prof-dir=${join(values["cpu-prof"], `${round}-${i}`)}`] : [])];
        const loader = pathToFileURL(join(root, "node_modules", "tsx", "dist", "loader.mjs")).href;
        const spawnedAt = Date.now();
        const child = spawnLogged(
          process.execPath,
          [...nodeArgs, "--import", loader, join(root, "cli", "main.ts"), "run", "--consumer-group", group, "--tenants", fx.tenants.join(","), "--metrics-port", String(await freePort()), "--topology", topologyFor(root, values["pg-only"]!)],
          {
            logFile,
            cwd: root,
            env: {
              MILLRACE_PG_URL: db.adminUrl,
              MILLRACE_PG_ROLE: "millrace_writer",
              MILLRACE_LOG_LEVEL: "info",
              MILLRACE_INSTANCE_ID: `ab-${round}-${i}`,
              AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED: "true",
              ...(values["pg-only"] ? {} : { MILLRACE_S3_SHARED_BUCKET: bucket }),
            },
          },
        );
        try {
          const drain = await measureDrain({ worker: { child, group, metricsPort: 0 }, pool: db.admin, dbName: db.name, end, pollMs: 50, timeoutMs: 600_000, spawnedAt });
          const cs = await tableChecksum(db.admin);
          results.push({ variant: i, root, round, drain, rows: cs.rows, checksum: cs.checksum });
          const rss = drain.rssSamples.map((s) => Math.round(s.bytes / 2 ** 20));
          console.log(JSON.stringify({ root: names[i], round, rps: Math.round(drain.recordsPerSecond), steady: Math.round(drain.steadyRecordsPerSecond), seconds: drain.seconds, workerCpuPerM: drain.cpu.perMillionRecords.worker, pgCpuPerM: drain.cpu.perMillionRecords.postgresCluster, peakRssMiB: Math.round((drain.peakRssBytes ?? 0) / 2 ** 20), rssMiB: rss, background: drain.backgroundCores, rows: cs.rows, checksum: cs.checksum }));
        } finally {
          child.child.kill("SIGTERM");
          await waitExit(child, 30_000);
        }
      } finally {
        await db.drop().catch(() => {});
        if (!values["pg-only"]) await removeBucket(s3, bucket).catch(() => {});
      }
    }
  }
} finally {
  await setupDb.drop().catch(() => {});
  await deleteGroupsQuietly(admin, groups).catch(() => {});
  await deleteTopicsQuietly(admin, topics).catch(() => {});
  await admin.disconnect();
}
const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
const base = median(results.filter((r) => r.variant === 0).map((r) => r.drain.recordsPerSecond));
for (let i = 0; i < roots.length; i++) {
  const rs = results.filter((r) => r.variant === i);
  const m = median(rs.map((r) => r.drain.recordsPerSecond));
  const cpu = median(rs.map((r) => r.drain.cpu.perMillionRecords.worker ?? 0));
  const rss = median(rs.map((r) => r.drain.peakRssBytes ?? 0)) / 2 ** 20;
  const sameRows = new Set(results.map((r) => `${r.rows}/${r.checksum}`)).size === 1;
  console.log(JSON.stringify({ summary: names[i], medianRps: Math.round(m), ratioToFirst: +(m / base).toFixed(2), medianWorkerCpuPerM: +cpu.toFixed(1), medianPeakRssMiB: Math.round(rss), sameRowsAllDrains: sameRows }));
}
