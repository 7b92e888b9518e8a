/**
 * Soak: one worker (the repository's topology, PostgreSQL + Parquet into a bucket of its own)
 * under a steady produced load for several minutes, sampling every few seconds the worker's RSS,
 * its V8 heap (used/total, from its /metrics) and the lag — to tell a leak (heap used after GC
 * climbing with the records) from heap sizing (RSS settling at a level set by configuration).
 *
 *   node --import tsx bench/soak.ts --seconds 300 --rate 12000 [--root .] [--node-options "--max-old-space-size=256"] [--out bench/results/soak.json]
 */
import { randomBytes } from "node:crypto";
import { mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { parseArgs } from "node:util";
import { pathToFileURL } from "node:url";
import { createTenant, tenantTopics } from "../tenants/provision.ts";
import { createBenchDatabase } from "./db.ts";
import { committedOffsets, producePaced, tenantEncoders } from "./e2e.ts";
import { fixtureReadings, fixtureSpanMs, makeFixture } from "./fixtures.ts";
import { benchKafka, deleteGroupsQuietly, deleteTopicsQuietly, sumOffsets } from "./kafka-util.ts";
import { rssBytes, peakRssBytes } from "./procstat.ts";
import { benchS3, createBucket, removeBucket } from "./s3.ts";
import { freePort, sleep, spawnLogged, waitExit } from "./spawn.ts";

const { values } = parseArgs({
  options: {
    root: { type: "string", default: "." },
    seconds: { type: "string", default: "300" },
    rate: { type: "string", default: "12000" },
    tenants: { type: "string", default: "4" },
    partitions: { type: "string", default: "3" },
    "sample-ms": { type: "string", default: "5000" },
    "node-options": { type: "string", default: "" },
    out: { type: "string" },
  },
});
const root = resolve(values.root!);
const seconds = Number(values.seconds);
const rate = Number(values.rate);
const runId = randomBytes(4).toString("hex");
const workDir = mkdtempSync(join(tmpdir(), "millrace-soak-"));
const log = (m: string) => process.stderr.write(`${new Date().toISOString()} ${m}\n`);
const total = rate * seconds;
const fx = makeFixture({ count: total, tenants: Number(values.tenants), seed: "millrace-soak" });
const kafka = benchKafka(`millrace-soak-${runId}`);
const admin = kafka.admin();
await admin.connect();
const s3 = benchS3();
const bucket = `millrace-soak-${runId}`;
await createBucket(s3, bucket);
const db = await createBenchDatabase("soak");
const topics: string[] = [];
const group = `millrace-soak-${runId}`;
type Sample = { t: number; rssMiB: number; heapUsedMiB: number | null; heapTotalMiB: number | null; externalMiB: number | null; produced: number; committed: number };
const samples: Sample[] = [];
let peak: number | undefined;
try {
  for (const t of fx.tenants) {
    await createTenant(db.admin, admin, { tenantId: t, name: `soak ${t.slice(0, 8)}`, partitions: Number(values.partitions), retentionDays: 30, maxEquipment: 10_000 });
    const tt = tenantTopics(t);
    topics.push(tt.sensorData, tt.alerts, tt.deadLetters);
  }
  const encoders = await tenantEncoders(fx.tenants);
  const port = await freePort();
  const loader = pathToFileURL(join(root, "node_modules", "tsx", "dist", "loader.mjs")).href;
  const nodeOpts = values["node-options"] ? values["node-options"].split(" ").filter(Boolean) : [];
  const child = spawnLogged(process.execPath, [...nodeOpts, "--import", loader, join(root, "cli", "main.ts"), "run", "--consumer-group", group, "--tenants", fx.tenants.join(","), "--metrics-port", String(port)], {
    logFile: join(workDir, "worker.log"),
    cwd: root,
    env: { MILLRACE_PG_URL: db.adminUrl, MILLRACE_PG_ROLE: "millrace_writer", MILLRACE_LOG_LEVEL: "info", MILLRACE_INSTANCE_ID: `soak-${runId}`, MILLRACE_S3_SHARED_BUCKET: bucket, AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED: "true" },
  });
  let produced = 0;
  const t0 = Date.now();
  let producing = true;
  const heap = async () => {
    try {
      const text = await (await fetch(`http://127.0.0.1:${port}/metrics`)).text();
      const g = (name: string) => {
        const m = text.match(new RegExp(`^millrace_process_${name}(?:\\{[^}]*\\})? ([0-9.e+]+)$`, "m"));
        return m ? +(Number(m[1]) / 2 ** 20).toFixed(1) : null;
      };
      return { heapUsedMiB: g("nodejs_heap_size_used_bytes"), heapTotalMiB: g("nodejs_heap_size_total_bytes"), externalMiB: g("nodejs_external_memory_bytes") };
    } catch {
      return { heapUsedMiB: null, heapTotalMiB: null, externalMiB: null };
    }
  };
  const sampler = (async () => {
    while (producing || samples.length === 0) {
      await sleep(Number(values["sample-ms"]));
      const r = rssBytes(child.pid);
      if (r === undefined) break;
      const committed = sumOffsets(await committedOffsets(db.admin, group));
      const s: Sample = { t: Math.round((Date.now() - t0) / 1000), rssMiB: Math.round(r / 2 ** 20), ...(await heap()), produced, committed };
      samples.push(s);
      log(JSON.stringify(s));
    }
  })();
  // Produce in 10-second segments along one timeline, so the producer holds little at a time.
  const seg = rate * 10;
  for (let off = 0; off < total; off += seg) {
    const count = Math.min(seg, total - off);
    const r = await producePaced(kafka, encoders, fixtureReadings(fx, { count, start: fx.start + fixtureSpanMs(fx, off) , seed: `soak-${off}` }), rate);
    produced += r.records;
  }
  producing = false;
  await sampler;
  const deadline = Date.now() + 300_000;
  while (sumOffsets(await committedOffsets(db.admin, group)) < produced && Date.now() < deadline) await sleep(500);
  peak = peakRssBytes(child.pid);
  child.child.kill("SIGTERM");
  await waitExit(child, 60_000);
  const half = samples.filter((s) => s.t >= seconds / 2);
  const slope = half.length >= 2 ? ((half[half.length - 1]!.rssMiB - half[0]!.rssMiB) / (half[half.length - 1]!.t - half[0]!.t)) * 60 : null;
  const result = {
    root,
    nodeOptions: values["node-options"],
    seconds,
    rate,
    produced,
    peakRssMiB: peak === undefined ? null : Math.round(peak / 2 ** 20),
    rssSecondHalf: { min: Math.min(...half.map((s) => s.rssMiB)), max: Math.max(...half.map((s) => s.rssMiB)), slopeMiBPerMin: slope === null ? null : +slope.toFixed(1) },
    heapUsedSecondHalf: { min: Math.min(...half.map((s) => s.heapUsedMiB ?? Infinity)), max: Math.max(...half.map((s) => s.heapUsedMiB ?? 0)) },
    samples,
  };
  console.log(JSON.stringify({ ...result, samples: undefined }));
  if (values.out) writeFileSync(values.out, JSON.stringify(result, null, 2) + "\n");
} finally {
  await db.drop().catch(() => {});
  await removeBucket(s3, bucket).catch(() => {});
  await deleteGroupsQuietly(admin, [group]).catch(() => {});
  await deleteTopicsQuietly(admin, topics).catch(() => {});
  await admin.disconnect();
}
