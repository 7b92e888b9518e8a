/**
 * Real input (also in Parquet on S3, below): the SKAB valve1 experiments (../shared/datasets/skab/valve1, 16 files) replayed with
 * `millrace produce csv`'s reader as equipment of two tenants land row for row in sensor_data_raw:
 * per file the count equals the CSV's, and every value equals the CSV's (as float32, the schema's
 * measure type), at the CSV's own timestamps (2020, UTC — kept because the tenants have unlimited
 * retention; older days get their partitions on demand). The uploaded objects are read back by two
 * independent readers: pyarrow over the S3 API, and DuckDB over a local copy of each tenant's prefix
 * (GetObject of every object the worker uploaded; DuckDB's httpfs cannot be installed offline).
 *
 * The chosen threshold rule (`valve_flow_low` on flow_rate, test/helpers/skab.ts), set for both
 * tenants with `millrace rules set`'s code, runs in the worker over the replay: the alarms it raises
 * (alerts table, and once each on the alerts topics) are scored against the files' anomaly labels
 * and must give what the pure evaluator gives (test/unit/skab-thresholds.test.ts, docs/alerts.md §7).
 */
import { randomUUID } from "node:crypto";
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { GetObjectCommand, ListObjectsV2Command, S3Client } from "@aws-sdk/client-s3";
import type { Admin } from "kafkajs";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { IngestWorker } from "../../pipelines/runtime/worker.ts";
import { ruleFlags, setRule } from "../../cli/rules.ts";
import { readCsvReadings } from "../../produce/csv.ts";
import { SensorPublisher, type ProduceRecord } from "../../produce/publisher.ts";
import { repoRoot } from "../../stack/context.ts";
import { createTenant } from "../../tenants/provision.ts";
import { createTestDatabase, type TestDatabase } from "../helpers/db.ts";
import { deleteTopics, testKafka } from "../helpers/kafka.ts";
import { waitUntil } from "../helpers/wait.ts";
import { openDuckDb, readS3DatasetWithPyarrow, type ReadRow } from "../helpers/parquet-readers.ts";
import { requireEnv } from "../../lib/env.ts";
import { testPlan, testWorker } from "../helpers/worker.ts";
import { alertEventsInTable, expectAlertMessageCount, readAlertsTopic, waitOutboxPublished } from "../helpers/alerts-topic.ts";
import { anomalyWindows, readLabels, scoreRaised, VALVE_FLOW_LOW } from "../helpers/skab.ts";

const SKAB = join(repoRoot, "..", "shared", "datasets", "skab", "valve1");

interface CsvRow {
  time: number;
  temperature: number;
  vibration: number;
  pressure: number;
  flow_rate: number;
}

/** An independent parse of the CSV (not the reader under test). */
function parseSkab(file: string): CsvRow[] {
  const [header, ...lines] = readFileSync(file, "utf8").trim().split("\n");
  const cols = header!.split(";");
  const at = (name: string) => cols.indexOf(name);
  return lines.map((l) => {
    const f = l.split(";");
    return {
      time: Date.parse(`${f[at("datetime")]!.replace(" ", "T")}Z`),
      temperature: Math.fround(Number(f[at("Temperature")])),
      vibration: Math.fround(Number(f[at("Accelerometer1RMS")])),
      pressure: Math.fround(Number(f[at("Pressure")])),
      flow_rate: Math.fround(Number(f[at("Volume Flow RateRMS")])),
    };
  });
}

describe("SKAB valve1 replay", () => {
  let db: TestDatabase;
  let admin: Admin;
  let worker: IngestWorker | undefined;
  const tenants = [randomUUID(), randomUUID()];
  const files = readdirSync(SKAB).filter((f) => f.endsWith(".csv")).sort((a, b) => Number.parseInt(a) - Number.parseInt(b));
  // Files alternate between the two tenants: equipment `valve1-<n>` of tenant n % 2.
  const owner = (f: string) => tenants[Number.parseInt(f) % 2]!;
  const equipment = (f: string) => `valve1-${String(Number.parseInt(f)).padStart(2, "0")}`;

  beforeAll(async () => {
    expect(files.length).toBe(16);
    db = await createTestDatabase();
    const kafka = testKafka();
    admin = kafka.admin();
    await admin.connect();
    for (const t of tenants) await createTenant(db.admin, admin, { tenantId: t, name: "skab", tier: "enterprise", partitions: 3 });
    // The chosen rule, stored as `millrace rules set --id valve_flow_low --measure flow_rate …` stores it.
    const plan = testPlan();
    const defaults = plan.processors.flatMap((p) => (p.type === "thresholds" ? p.rules : []));
    for (const t of tenants) {
      const res = await setRule(db.admin, t, VALVE_FLOW_LOW.id, defaults, ruleFlags(VALVE_FLOW_LOW));
      expect(res, `rules set ${VALVE_FLOW_LOW.id} for ${t}`).toMatchObject({ ok: true, stored: VALVE_FLOW_LOW });
    }
    async function* all(): AsyncGenerator<ProduceRecord> {
      for (const f of files) yield* readCsvReadings(join(SKAB, f), { tenantId: owner(f), equipmentId: equipment(f), facilityId: "skab-testbed" });
    }
    const publisher = new SensorPublisher({ kafka });
    await publisher.connect();
    await publisher.publish(all());
    await publisher.disconnect();
  });
  afterAll(async () => {
    await worker?.stop();
    await deleteTopics(admin, (t) => tenants.some((x) => t.endsWith(x)));
    await admin.disconnect();
    await db?.drop();
  });

  it("every CSV row is stored once with its values, under the tenant that published it", async () => {
    const expected = new Map(files.map((f) => [f, parseSkab(join(SKAB, f))]));
    const total = [...expected.values()].reduce((n, rows) => n + rows.length, 0);
    worker = testWorker(testPlan(), db.adminUrl, tenants.map((t) => `sensor-data-${t}`));
    await worker.start();
    await waitUntil(`${total} SKAB rows stored`, async () => (await db.admin.query("SELECT count(*)::int AS n FROM sensor_data_raw")).rows[0].n === total, 120_000);

    for (const f of files) {
      const rows = expected.get(f)!;
      const got = await db.admin.query<{ ms: string; temperature: number; vibration: number; pressure: number; flow_rate: number; tenant_id: string }>(
        `SELECT (extract(epoch FROM time) * 1000)::bigint AS ms, temperature, vibration, pressure, flow_rate, tenant_id
         FROM sensor_data_raw WHERE equipment_id = $1 ORDER BY time`,
        [equipment(f)],
      );
      expect(got.rows.length, f).toBe(rows.length);
      for (const [i, r] of rows.entries()) {
        const g = got.rows[i]!;
        expect(g.tenant_id).toBe(owner(f));
        expect(Number(g.ms)).toBe(r.time);
        expect(Math.fround(g.temperature)).toBe(r.temperature);
        expect(Math.fround(g.vibration)).toBe(r.vibration);
        expect(Math.fround(g.pressure)).toBe(r.pressure);
        expect(Math.fround(g.flow_rate)).toBe(r.flow_rate);
      }
    }

    // …and row for row in Parquet on S3 too (read back with pyarrow), under the right tenant's prefix.
    const group = worker.plan.source.consumerGroup;
    await waitUntil("the SKAB rows to be in S3", async () => {
      const r = await db.admin.query<{ n: string }>(
        "SELECT coalesce(sum(row_count), 0)::bigint AS n FROM millrace.parquet_files WHERE consumer_group = $1 AND status = 'uploaded'",
        [group],
      );
      return Number(r.rows[0]!.n) === total;
    }, 120_000);
    const s3 = {
      endpoint: requireEnv("MILLRACE_S3_ENDPOINT"),
      region: process.env.MILLRACE_S3_REGION ?? "us-east-1",
      accessKeyId: requireEnv("MILLRACE_S3_ACCESS_KEY_ID"),
      secretAccessKey: requireEnv("MILLRACE_S3_SECRET_ACCESS_KEY"),
    };
    const compare = (reader: string, t: string, rows: ReadRow[]) => {
      expect(rows.length, `${reader}: rows of tenant ${t.slice(0, 8)}`).toBe(files.filter((x) => owner(x) === t).reduce((n, f) => n + expected.get(f)!.length, 0));
      for (const f of files.filter((x) => owner(x) === t)) {
        const want = expected.get(f)!;
        const got = rows.filter((r) => r.equipment_id === equipment(f)).sort((a, b) => a.time - b.time);
        expect(got.length, `${reader}: ${f} in Parquet`).toBe(want.length);
        for (const [i, r] of want.entries()) {
          const g = got[i]!;
          expect(g.tenant_id).toBe(t);
          expect(g.facility_id).toBe("skab-testbed");
          expect(g.time).toBe(r.time);
          expect(Math.fround(g.temperature!)).toBe(r.temperature);
          expect(Math.fround(g.vibration!)).toBe(r.vibration);
          expect(Math.fround(g.pressure!)).toBe(r.pressure);
          expect(Math.fround(g.flow_rate!)).toBe(r.flow_rate);
        }
      }
    };
    const client = new S3Client({ endpoint: s3.endpoint, region: s3.region, credentials: { accessKeyId: s3.accessKeyId, secretAccessKey: s3.secretAccessKey }, forcePathStyle: true });
    const duck = await openDuckDb();
    const dir = mkdtempSync(join(tmpdir(), "millrace-skab-"));
    try {
      for (const t of tenants) {
        const py = readS3DatasetWithPyarrow(`millrace-shared/${t}/sensor-data/`, s3).rows;
        compare("pyarrow", t, py);
        // The very objects the worker uploaded, byte for byte, into a local copy of the prefix.
        const keys: string[] = [];
        let token: string | undefined;
        do {
          const page = await client.send(new ListObjectsV2Command({ Bucket: "millrace-shared", Prefix: `${t}/`, ContinuationToken: token }));
          keys.push(...(page.Contents ?? []).map((o) => o.Key!));
          token = page.IsTruncated ? page.NextContinuationToken : undefined;
        } while (token);
        const manifest = await db.admin.query<{ object_key: string }>("SELECT object_key FROM millrace.parquet_files WHERE tenant_id = $1 AND consumer_group = $2 AND status = 'uploaded' ORDER BY 1", [t, group]);
        expect(keys.sort()).toEqual(manifest.rows.map((r) => r.object_key));
        for (const key of keys) {
          const body = await (await client.send(new GetObjectCommand({ Bucket: "millrace-shared", Key: key }))).Body!.transformToByteArray();
          mkdirSync(dirname(join(dir, key)), { recursive: true });
          writeFileSync(join(dir, key), body);
        }
        const glob = join(dir, t, "sensor-data", "*", "*", "*.parquet").replaceAll("'", "''");
        const rows = await duck.rows(`read_parquet('${glob}', hive_partitioning = true)`);
        compare("DuckDB", t, rows);
        // Both readers agree on every column of every row, the Kafka offset included.
        const byKey = (r: ReadRow) => `${r.equipment_id}\u0000${r.source_offset}`;
        const strip = ({ date: _d, hour: _h, ...r }: ReadRow) => r;
        const sortRows = (rs: ReadRow[]) => rs.map(strip).sort((a, b) => (byKey(a) < byKey(b) ? -1 : byKey(a) > byKey(b) ? 1 : 0));
        expect(sortRows(rows)).toEqual(sortRows(py));
        const types = await duck.query(`SELECT column_name, column_type FROM (DESCRIBE SELECT time FROM read_parquet('${glob}'))`);
        expect(types).toEqual([{ column_name: "time", column_type: "TIMESTAMP WITH TIME ZONE" }]);
      }
    } finally {
      duck.close();
      client.destroy();
      rmSync(dir, { recursive: true, force: true });
    }
  });
  it("the chosen rule's alarms, raised by the worker, fall inside the labelled anomaly windows (precision 1.00, recall 15/16)", async () => {
    // Runs on the replay the first test ingested: every alarm step was committed with its batch.
    expect(worker, "the replay test ran first").toBeDefined();
    const windowsOf = new Map(files.map((f) => [equipment(f), anomalyWindows(readLabels(join(SKAB, f)))]));
    const rows = await db.admin.query<{ tenant_id: string; equipment_id: string; rule_id: string; step: string; severity: string; ms: string }>(
      `SELECT tenant_id::text, equipment_id, rule_id, step, severity, (extract(epoch FROM event_time) * 1000)::bigint AS ms
       FROM alerts WHERE tenant_id = ANY($1::uuid[]) AND kind = 'threshold' ORDER BY alert_id, seq`,
      [tenants],
    );
    // Each alarm under the tenant whose topic carried its equipment's readings.
    for (const r of rows.rows) expect(r.tenant_id, `${r.equipment_id}'s alarm`).toBe(owner(`${Number(r.equipment_id.slice("valve1-".length))}.csv`));
    const raised = rows.rows.filter((r) => r.step === "raised").map((r) => ({ equipmentId: r.equipment_id, ruleId: r.rule_id, time: Number(r.ms) }));
    const s = scoreRaised(raised, windowsOf, [VALVE_FLOW_LOW.id]);
    // Only the chosen rule raises anything (the topology's defaults never trip on this test bed).
    expect(Object.keys(s.byRule)).toEqual([VALVE_FLOW_LOW.id]);
    expect({ raised: s.raised, inside: s.inside, windows: s.windows, windowsHit: s.windowsHit }).toEqual({ raised: 15, inside: 15, windows: 16, windowsHit: 15 });
    expect(s.precision).toBe(1);
    expect(s.recall).toBe(15 / 16);
    const steps: Record<string, number> = {};
    for (const r of rows.rows) {
      const k = r.step === "escalated" ? `escalated_to_${r.severity}` : r.step;
      steps[k] = (steps[k] ?? 0) + 1;
    }
    expect(steps).toEqual({ raised: 15, escalated_to_major: 7, escalated_to_critical: 2, de_escalated: 9, cleared: 15 });

    // …and every step is on the tenant's alerts topic exactly once.
    const kafka = testKafka();
    for (const t of tenants) {
      const ids = (await alertEventsInTable(db.admin, t)).map((e) => e.eventId);
      expect(ids.length, `tenant ${t.slice(0, 8)} has alarm steps`).toBeGreaterThan(0);
      await waitOutboxPublished(db.admin, t, ids.length);
      expectAlertMessageCount(await readAlertsTopic(kafka, admin, `alerts-${t}`), ids);
    }
  });
});
