/**
 * One tenant's slow bucket does not stall another tenant's Parquet uploads on the same endpoint and
 * credentials (issue 4 §2, docs/parquet.md "Tenant isolation").
 *
 * Two tenants reach S3 through one endpoint with the same credentials: a small HTTP proxy written
 * here (node:http, path-style) in front of the stack's S3. The slow tenant's dedicated bucket is
 * slow: every request under `/<slow-bucket>` that arrives within SLOW_MS of the first one is held
 * at the proxy until that window ends (bounded; the proxy never delays anything else), then
 * forwarded. The stage runs with 2 connections per S3 client (`maxSockets: 2`) and the slow tenant
 * has 4 partitions uploading at once, so its requests fill a pool. Each bucket has its own client
 * and pool, so the fast tenant's file (shared bucket) is uploaded while the slow ones are still
 * held; with one client per endpoint and credentials (the old keying) it waits behind them and
 * this test fails. Once the window passes, every slow file is uploaded too: nothing dropped.
 */
import { randomUUID } from "node:crypto";
import http from "node:http";
import type { AddressInfo } from "node:net";
import { CreateBucketCommand, DeleteBucketCommand, DeleteObjectsCommand, ListObjectsV2Command, S3Client } from "@aws-sdk/client-s3";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { requireEnv } from "../../lib/env.ts";
import { silentLogger } from "../../lib/log.ts";
import { PipelineMetrics } from "../../lib/metrics.ts";
import type { StoredReading } from "../../pipelines/reading.ts";
import { ParquetStage } from "../../pipelines/runtime/parquet-stage.ts";
import type { SinkPlan } from "../../pipelines/topology/plan.ts";
import { createTestDatabase, insertTenant, type TestDatabase } from "../helpers/db.ts";
import { stackS3Client } from "../helpers/s3.ts";
import { waitUntil } from "../helpers/wait.ts";
import { testPlan } from "../helpers/worker.ts";

const SLOW_MS = 20_000;
/** The fast tenant's file must be in S3 well within the slow window. */
const FAST_BOUND_MS = 10_000;
const MAX_SOCKETS = 2;
const SLOW_PARTITIONS = 4;
const ROWS = 20;

/** A path-style S3 forwarding proxy that holds one bucket's requests during a window. */
class SlowBucketProxy {
  private readonly server: http.Server;
  private readonly upstream = new http.Agent({ keepAlive: false });
  private readonly forwarded = new Set<http.ClientRequest>();
  private windowEnd: Promise<void> | undefined;
  private endWindow: (() => void) | undefined;
  private windowTimer: NodeJS.Timeout | undefined;
  /** The window is over: requests pass at once. */
  over = false;
  /** Slow-bucket requests held right now, and the most held at once. */
  heldNow = 0;
  maxHeld = 0;
  slowSeen = 0;
  otherSeen = 0;

  constructor(
    private readonly target: URL,
    private readonly slowBucket: string,
  ) {
    this.server = http.createServer((req, res) => void this.handle(req, res));
  }

  async listen(): Promise<string> {
    await new Promise<void>((res) => this.server.listen(0, "127.0.0.1", res));
    return `http://127.0.0.1:${(this.server.address() as AddressInfo).port}`;
  }

  private isSlow(url: string): boolean {
    return url === `/${this.slowBucket}` || url.startsWith(`/${this.slowBucket}/`) || url.startsWith(`/${this.slowBucket}?`);
  }

  private async handle(req: http.IncomingMessage, res: http.ServerResponse): Promise<void> {
    const url = req.url ?? "/";
    if (this.isSlow(url)) {
      this.slowSeen++;
      if (!this.over) {
        this.windowEnd ??= new Promise<void>((resolve) => {
          this.endWindow = resolve;
          this.windowTimer = setTimeout(() => this.end(), SLOW_MS);
        });
        this.heldNow++;
        this.maxHeld = Math.max(this.maxHeld, this.heldNow);
        await this.windowEnd;
        this.heldNow--;
      }
    } else {
      this.otherSeen++;
    }
    if (req.destroyed || res.destroyed) return;
    // Headers unchanged (Host included: the request is signed for the proxy's address).
    const up = http.request({ host: this.target.hostname, port: this.target.port, method: req.method, path: url, headers: req.headers, agent: this.upstream }, (r) => {
      res.writeHead(r.statusCode ?? 502, r.headers);
      r.pipe(res);
    });
    this.forwarded.add(up);
    up.on("close", () => this.forwarded.delete(up));
    up.on("error", () => res.destroy());
    res.on("close", () => up.destroy());
    req.pipe(up);
  }

  /** End the slow window: held requests are forwarded, later ones pass at once. */
  end(): void {
    this.over = true;
    clearTimeout(this.windowTimer);
    this.endWindow?.();
  }

  async close(): Promise<void> {
    this.end();
    for (const r of this.forwarded) r.destroy();
    this.server.closeAllConnections();
    await new Promise<void>((res) => this.server.close(() => res()));
    this.upstream.destroy();
  }
}

describe("Parquet uploads: a slow bucket on a shared endpoint", () => {
  const run = randomUUID().slice(0, 8);
  const sharedBucket = `millrace-sf-${run}`;
  const slowBucket = `millrace-ss-${run}`;
  const fastTenant = randomUUID();
  const slowTenant = randomUUID();
  let db: TestDatabase;
  let s3: S3Client;
  let proxy: SlowBucketProxy | undefined;
  let stage: ParquetStage | undefined;

  beforeAll(async () => {
    db = await createTestDatabase();
    s3 = stackS3Client();
    for (const Bucket of [sharedBucket, slowBucket]) await s3.send(new CreateBucketCommand({ Bucket }));
  });

  afterAll(async () => {
    proxy?.end();
    await stage?.close(10_000);
    await proxy?.close();
    if (s3) {
      for (const Bucket of [sharedBucket, slowBucket]) {
        const listed = await s3.send(new ListObjectsV2Command({ Bucket })).catch(() => undefined);
        const keys = (listed?.Contents ?? []).map((o) => ({ Key: o.Key! }));
        if (keys.length > 0) await s3.send(new DeleteObjectsCommand({ Bucket, Delete: { Objects: keys } })).catch(() => undefined);
        await s3.send(new DeleteBucketCommand({ Bucket })).catch(() => undefined);
      }
      s3.destroy();
    }
    await db?.drop();
  });

  it("the fast tenant's file is uploaded while the slow bucket holds every socket of its pool; the slow files follow once it recovers", async () => {
    await insertTenant(db.admin, { tenantId: fastTenant });
    await insertTenant(db.admin, { tenantId: slowTenant });
    await db.admin.query("UPDATE tenants SET deployment_type = 'single-tenant', storage_mode = 'dedicated', storage_bucket = $2, kms_key_id = 'test-key' WHERE tenant_id = $1", [slowTenant, slowBucket]);

    proxy = new SlowBucketProxy(new URL(requireEnv("MILLRACE_S3_ENDPOINT")), slowBucket);
    const endpoint = await proxy.listen();
    // Both tenants' places on one endpoint (the proxy) with the platform's credentials.
    const env = { ...process.env, MILLRACE_S3_ENDPOINT: endpoint, MILLRACE_S3_FORCE_PATH_STYLE: "true", MILLRACE_S3_SHARED_BUCKET: sharedBucket };
    const plan = testPlan().sinks.find((s) => s.type === "s3_parquet") as Extract<SinkPlan, { type: "s3_parquet" }>;
    Object.assign(plan, { maxRows: ROWS, idleFlushMs: 200, retry: { ...plan.retry, initialDelayMs: 100, maxDelayMs: 1000 } });
    const lost: string[] = [];
    stage = new ParquetStage(plan, db.admin, () => db.admin, "slow-bucket-test", silentLogger, new PipelineMetrics(), (t, p) => lost.push(`${t}[${p}]`), env, undefined, {
      maxSockets: MAX_SOCKETS,
    });
    await stage.start();

    const rows = (tenantId: string, p: number): StoredReading[] =>
      Array.from({ length: ROWS }, (_, offset) => ({ offset, time: Date.UTC(2024, 5, 1, 8) + offset * 1000, tenantId, equipmentId: `eq-${p}`, facilityId: "fac-01", temperature: 20, vibration: offset, pressure: null, flow_rate: null }));
    const slowTopic = `sensor-data-${slowTenant}`;
    const fastTopic = `sensor-data-${fastTenant}`;

    // The slow tenant: several partitions uploading at once, until its requests fill a pool.
    for (let p = 0; p < SLOW_PARTITIONS; p++) {
      expect(await stage.assign(slowTopic, p, slowTenant, 0)).toBeUndefined();
      stage.append(slowTopic, p, rows(slowTenant, p), ROWS - 1, 0);
    }
    await waitUntil(`${MAX_SOCKETS} of the slow bucket's requests held at the proxy`, async () => proxy!.heldNow >= MAX_SOCKETS, FAST_BOUND_MS, 50);

    // The fast tenant, same endpoint and credentials, another bucket.
    const t0 = Date.now();
    expect(await stage.assign(fastTopic, 0, fastTenant, 0)).toBeUndefined();
    stage.append(fastTopic, 0, rows(fastTenant, 0), ROWS - 1, 0);
    await waitUntil("the fast tenant's file uploaded while the slow bucket holds its requests", async () => stage!.committed(fastTopic, 0) === ROWS, FAST_BOUND_MS, 50);
    const fastMs = Date.now() - t0;
    // ... and the slow ones really are still in flight: held, none uploaded.
    expect(proxy.over, "the slow window is still open").toBe(false);
    expect(proxy.heldNow).toBeGreaterThan(0);
    for (let p = 0; p < SLOW_PARTITIONS; p++) expect(stage.committed(slowTopic, p), `slow partition ${p}`).toBe(0);
    // The slow client's pool is the configured size: never more than MAX_SOCKETS requests at once.
    expect(proxy.maxHeld).toBe(MAX_SOCKETS);
    const fastObjects = await s3.send(new ListObjectsV2Command({ Bucket: sharedBucket, Prefix: `${fastTenant}/` }));
    expect(fastObjects.KeyCount).toBe(1);
    expect(fastMs).toBeLessThan(SLOW_MS);

    // Once the slow window passes, every slow file is uploaded, none dropped or duplicated.
    await waitUntil(
      "every slow partition uploaded after the slow window",
      async () => Array.from({ length: SLOW_PARTITIONS }, (_, p) => stage!.committed(slowTopic, p)).every((c) => c === ROWS),
      SLOW_MS + 60_000,
      200,
    );
    expect(proxy.over).toBe(true);
    expect(lost).toEqual([]);
    const files = await db.admin.query<{ tenant_id: string; bucket: string; partition: number; row_count: number; status: string }>(
      "SELECT tenant_id, bucket, partition, row_count, status FROM millrace.parquet_files WHERE consumer_group = 'slow-bucket-test' ORDER BY tenant_id = $1 DESC, partition",
      [fastTenant],
    );
    expect(files.rows).toEqual([
      { tenant_id: fastTenant, bucket: sharedBucket, partition: 0, row_count: ROWS, status: "uploaded" },
      ...Array.from({ length: SLOW_PARTITIONS }, (_, p) => ({ tenant_id: slowTenant, bucket: slowBucket, partition: p, row_count: ROWS, status: "uploaded" })),
    ]);
    const slowObjects = await s3.send(new ListObjectsV2Command({ Bucket: slowBucket, Prefix: `${slowTenant}/` }));
    expect(slowObjects.KeyCount).toBe(SLOW_PARTITIONS);
    expect(stage.heldBytes()).toBe(0);
    process.stdout.write(`[parquet-slow-bucket] fast tenant uploaded in ${fastMs} ms with the slow bucket held (${SLOW_MS} ms window); slow requests seen ${proxy.slowSeen}, others ${proxy.otherSeen}, at most ${proxy.maxHeld} held at once\n`);
  });
});
