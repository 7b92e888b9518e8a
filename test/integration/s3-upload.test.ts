/**
 * The s3_parquet sink's I/O against the local stack's S3 (versitygw, path-style) and a fresh
 * database: verified single and multipart puts, a multipart upload failing part-way leaves no
 * incomplete upload (class 15), SSE-KMS headers on every request that creates a dedicated tenant's
 * object (recorded client-side: versitygw accepts but does not echo them), keys read back exactly
 * (class 16), stale-upload cleanup, the manifest's idempotent plans and offset fence, and one file's
 * whole path — roll, plan, encode, upload, mark — replayed after a "crash" into the same object.
 */
import { spawnSync } from "node:child_process";
import { randomBytes, randomUUID } from "node:crypto";
import { join } from "node:path";
import {
  AbortMultipartUploadCommand,
  CreateBucketCommand,
  CreateMultipartUploadCommand,
  DeleteBucketCommand,
  DeleteObjectsCommand,
  GetObjectCommand,
  HeadObjectCommand,
  ListMultipartUploadsCommand,
  ListObjectsV2Command,
  type S3Client,
} from "@aws-sdk/client-s3";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { FencedError } from "../../lib/errors.ts";
import { loadStackEnv } from "../../lib/env.ts";
import type { StoredReading } from "../../pipelines/reading.ts";
import {
  abortStaleUploads,
  encodeParquet,
  listFiles,
  loadTenantStorage,
  ForeignGroupError,
  locationObjectKey,
  ManifestConflictError,
  markUploaded,
  MiB,
  ParquetRoller,
  PARQUET_SINK,
  parquetObjectKey,
  parquetStorageConfig,
  planFile,
  plannedFiles,
  putObjectVerified,
  readParquetFooter,
  resolveParquetLocation,
  S3ClientCache,
  S3UploadError,
  sha256,
  sinkOffset,
  verifyTenant,
  type FilePlan,
  type ParquetLocation,
} from "../../sinks/s3-parquet/index.ts";
import { repoRoot } from "../../stack/context.ts";
import { createTestDatabase, type TestDatabase } from "../helpers/db.ts";
import { pyarrowVersion, readS3DatasetWithPyarrow } from "../helpers/parquet-readers.ts";

interface SentRequest {
  command: string;
  method: string;
  hostname: string;
  path: string;
  query: Record<string, unknown>;
  headers: Record<string, string>;
}

const KMS_KEY = "arn:aws:kms:us-east-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab";
const GROUP = "s3-upload-test";
const fast = { retries: 3, initialDelayMs: 1, maxDelayMs: 5, factor: 2 };

function lower(h: Record<string, string>): Record<string, string> {
  return Object.fromEntries(Object.entries(h).map(([k, v]) => [k.toLowerCase(), v]));
}

async function statusOf(p: Promise<unknown>): Promise<number> {
  try {
    await p;
    return 200;
  } catch (err) {
    return (err as { $metadata?: { httpStatusCode?: number } }).$metadata?.httpStatusCode ?? -1;
  }
}

function readings(tenantId: string, n: number, firstOffset: number, t0 = Date.parse("2024-06-01T08:15:00Z")): StoredReading[] {
  return Array.from({ length: n }, (_, i) => ({
    offset: firstOffset + i,
    time: t0 + i * 500,
    tenantId,
    equipmentId: `pump-${i % 5}`,
    facilityId: "plant-7",
    temperature: i % 9 === 0 ? null : 60 + i / 16,
    vibration: i / 4096,
    pressure: 2.5,
    flow_rate: null,
  }));
}

/** A failure to inject into one command, by a middleware that runs before the request is sent. */
type Injection = (command: string, input: Record<string, unknown>) => unknown;

describe("s3_parquet uploads, locations and manifest", () => {
  const run = randomBytes(4).toString("hex");
  const sharedBucket = `millrace-test-shared-${run}`;
  const dedicatedBucket = `millrace-test-dedicated-${run}`;
  const sharedTenant = randomUUID();
  const dedicatedTenant = randomUUID();
  const sent: SentRequest[] = [];
  let inject: Injection | undefined;
  let cache: S3ClientCache;
  let s3: S3Client;
  let db: TestDatabase;
  let env: Record<string, string | undefined>;

  beforeAll(async () => {
    pyarrowVersion();
    loadStackEnv();
    env = { ...process.env, MILLRACE_S3_SHARED_BUCKET: sharedBucket };
    cache = new S3ClientCache(env, {
      onCreate(client) {
        client.middlewareStack.add(
          (next, context) => async (args) => {
            const failure = inject?.(context.commandName ?? "", args.input as Record<string, unknown>);
            if (failure !== undefined) throw failure;
            return await next(args);
          },
          { step: "initialize", name: "injectFailures", priority: "high" },
        );
        client.middlewareStack.add(
          (next, context) => async (args) => {
            const req = args.request as { method?: string; hostname?: string; path?: string; query?: Record<string, unknown>; headers?: Record<string, string> };
            sent.push({
              command: context.commandName ?? "",
              method: req.method ?? "",
              hostname: req.hostname ?? "",
              path: req.path ?? "",
              query: { ...req.query },
              headers: lower({ ...req.headers }),
            });
            return await next(args);
          },
          { step: "finalizeRequest", name: "recordSentRequests", priority: "low" },
        );
      },
    });
    s3 = cache.clientFor(parquetStorageConfig(env).platform);
    await s3.send(new CreateBucketCommand({ Bucket: sharedBucket }));
    await s3.send(new CreateBucketCommand({ Bucket: dedicatedBucket }));
    db = await createTestDatabase();
    await db.admin.query(
      `INSERT INTO tenants (tenant_id, tenant_name, deployment_type, storage_mode) VALUES ($1, 'shared co', 'multi-tenant', 'shared')`,
      [sharedTenant],
    );
    await db.admin.query(
      `INSERT INTO tenants (tenant_id, tenant_name, deployment_type, storage_mode, storage_bucket, kms_key_id) VALUES ($1, 'dedicated co', 'single-tenant', 'dedicated', $2, $3)`,
      [dedicatedTenant, dedicatedBucket, KMS_KEY],
    );
  });

  afterAll(async () => {
    inject = undefined;
    try {
      for (const bucket of [sharedBucket, dedicatedBucket]) {
        if (!s3) break;
        await abortStaleUploads(s3, bucket, "", { olderThanMs: 0 }).catch(() => []);
        let token: string | undefined;
        do {
          const page = await s3.send(new ListObjectsV2Command({ Bucket: bucket, ContinuationToken: token }));
          const keys = (page.Contents ?? []).map((o) => ({ Key: o.Key! }));
          if (keys.length > 0) await s3.send(new DeleteObjectsCommand({ Bucket: bucket, Delete: { Objects: keys, Quiet: true } }));
          token = page.NextContinuationToken;
        } while (token);
        await s3.send(new DeleteBucketCommand({ Bucket: bucket })).catch(() => {});
      }
    } finally {
      cache?.destroy();
      await db?.drop();
    }
  });

  const getBytes = async (bucket: string, key: string) => Buffer.from(await (await s3.send(new GetObjectCommand({ Bucket: bucket, Key: key }))).Body!.transformToByteArray());
  const uploadsUnder = async (bucket: string, prefix: string) => (await s3.send(new ListMultipartUploadsCommand({ Bucket: bucket, Prefix: prefix }))).Uploads ?? [];
  const location = async (tenantId: string): Promise<ParquetLocation> => resolveParquetLocation((await loadTenantStorage(db.writer, tenantId))!, parquetStorageConfig(env), env);

  it("puts a small object with one verified, path-style PutObject (SHA-256 checked by the server and on HEAD)", async () => {
    const body = randomBytes(10_000);
    const key = `small/${run}/object.parquet`;
    sent.length = 0;
    const res = await putObjectVerified(s3, { bucket: sharedBucket, key, body }, { retry: fast });
    expect(res).toMatchObject({ bytes: body.length, parts: 1, verifiedBy: "checksum-sha256", sha256: sha256(body).hex, serverChecksum: sha256(body).base64 });
    expect((await getBytes(sharedBucket, key)).equals(body)).toBe(true);
    const put = sent.find((r) => r.command === "PutObjectCommand")!;
    expect(put.headers["x-amz-checksum-sha256"]).toBe(sha256(body).base64);
    expect(put.headers["x-amz-meta-sha256"]).toBe(sha256(body).hex);
    expect(put.headers["x-amz-server-side-encryption"]).toBeUndefined(); // shared: no KMS
    // Path-style: the bucket is the first path segment, never a host name.
    expect(put.path.startsWith(`/${sharedBucket}/`)).toBe(true);
    expect(put.hostname).toBe(new URL(env.MILLRACE_S3_ENDPOINT!).hostname);
  });

  it("puts a large object multipart, verified by size, metadata SHA-256 and the composite checksum", async () => {
    const body = randomBytes(11 * MiB + 7);
    const key = `multipart/${run}/object.parquet`;
    const res = await putObjectVerified(s3, { bucket: sharedBucket, key, body }, { multipartThreshold: 6 * MiB, partSize: 5 * MiB, retry: fast });
    expect(res).toMatchObject({ bytes: body.length, parts: 3, verifiedBy: "checksum-sha256-composite" });
    expect(res.serverChecksum).toMatch(/-3$/);
    expect((await getBytes(sharedBucket, key)).equals(body)).toBe(true);
    const head = await s3.send(new HeadObjectCommand({ Bucket: sharedBucket, Key: key }));
    expect(head.Metadata?.sha256).toBe(sha256(body).hex);
    expect(await uploadsUnder(sharedBucket, key)).toEqual([]);
  });

  it("class 15: a part failing for good aborts the multipart upload; nothing incomplete, no object", async () => {
    const body = randomBytes(11 * MiB);
    const key = `multipart/${run}/fails.parquet`;
    let aborts = 0;
    inject = (command, input) => {
      if (command === "AbortMultipartUploadCommand") aborts++;
      if (command === "UploadPartCommand" && input.PartNumber === 2) {
        return Object.assign(new Error("Access Denied (injected)"), { name: "AccessDenied", $metadata: { httpStatusCode: 403 } });
      }
      return undefined;
    };
    try {
      const err = await putObjectVerified(s3, { bucket: sharedBucket, key, body }, { multipartThreshold: 6 * MiB, partSize: 5 * MiB, concurrency: 1, retry: fast }).catch((e: unknown) => e);
      expect(err).toBeInstanceOf(S3UploadError);
      expect(err).toMatchObject({ retriable: false, operation: "UploadPart 2/3", statusCode: 403, strandedUploadId: undefined });
    } finally {
      inject = undefined;
    }
    expect(aborts).toBe(1);
    expect(await uploadsUnder(sharedBucket, key)).toEqual([]);
    expect(await statusOf(s3.send(new HeadObjectCommand({ Bucket: sharedBucket, Key: key })))).toBe(404);
  });

  it("class 15: transient part failures are retried with backoff; an abort signal mid-upload leaves nothing behind", async () => {
    const body = randomBytes(11 * MiB);
    const key = `multipart/${run}/flaky.parquet`;
    let failures = 0;
    const retried: string[] = [];
    inject = (command, input) => {
      if (command === "UploadPartCommand" && input.PartNumber === 2 && failures < 2) {
        failures++;
        return Object.assign(new Error("Slow Down (injected)"), { name: "SlowDown", $metadata: { httpStatusCode: 503 } });
      }
      return undefined;
    };
    try {
      const res = await putObjectVerified(s3, { bucket: sharedBucket, key, body }, {
        multipartThreshold: 6 * MiB,
        partSize: 5 * MiB,
        retry: fast,
        onRetry: (_e, _a, op) => retried.push(op),
      });
      expect(res.parts).toBe(3);
      expect(retried).toEqual(["UploadPart 2/3", "UploadPart 2/3"]);
      expect((await getBytes(sharedBucket, key)).equals(body)).toBe(true);

      const abortedKey = `multipart/${run}/aborted.parquet`;
      const controller = new AbortController();
      inject = (command, input) => {
        if (command === "UploadPartCommand" && input.PartNumber === 2) controller.abort(new Error("worker shutting down"));
        return undefined;
      };
      const err = await putObjectVerified(s3, { bucket: sharedBucket, key: abortedKey, body }, { multipartThreshold: 6 * MiB, partSize: 5 * MiB, concurrency: 1, retry: fast, signal: controller.signal }).catch((e: unknown) => e);
      expect(err).toBeInstanceOf(Error);
      expect(await uploadsUnder(sharedBucket, abortedKey)).toEqual([]);
      expect(await statusOf(s3.send(new HeadObjectCommand({ Bucket: sharedBucket, Key: abortedKey })))).toBe(404);
    } finally {
      inject = undefined;
    }
  });

  it("abortStaleUploads removes abandoned uploads under a prefix, and leaves young ones unless told", async () => {
    const prefix = `stale/${run}/`;
    const a = await s3.send(new CreateMultipartUploadCommand({ Bucket: sharedBucket, Key: `${prefix}a.parquet` }));
    await s3.send(new CreateMultipartUploadCommand({ Bucket: sharedBucket, Key: `other/${run}/b.parquet` }));
    expect(await abortStaleUploads(s3, sharedBucket, prefix)).toEqual([]); // started just now
    const aborted = await abortStaleUploads(s3, sharedBucket, prefix, { olderThanMs: 0 });
    expect(aborted.map((u) => [u.key, u.uploadId])).toEqual([[`${prefix}a.parquet`, a.UploadId]]);
    expect(await uploadsUnder(sharedBucket, prefix)).toEqual([]);
    expect(await uploadsUnder(sharedBucket, `other/${run}/`)).toHaveLength(1); // outside the prefix
    await abortStaleUploads(s3, sharedBucket, `other/${run}/`, { olderThanMs: 0 });
  });

  it("class 16: a key with + reads back under exactly that key; + is not taken for a space", async () => {
    const loc = await location(sharedTenant);
    const key = locationObjectKey(loc, { topic: `sensor-data-${sharedTenant}`, partition: 2, firstOffset: 7, lastOffset: 99, firstTime: Date.parse("2024-06-01T08:00:00Z") });
    expect(key).toBe(`${sharedTenant}/sensor-data/date=2024-06-01/hour=08/sensor-data-${sharedTenant}+2+00000000000000000007-00000000000000000099.parquet`);
    const body = await encodeParquet(readings(sharedTenant, 10, 7).map((r) => ({ ...r, equipmentId: "key-test" })));
    await putObjectVerified(s3, { bucket: loc.bucket, key, body }, { retry: fast });
    const listed = await s3.send(new ListObjectsV2Command({ Bucket: loc.bucket, Prefix: loc.tenantPrefix }));
    expect((listed.Contents ?? []).map((o) => o.Key)).toContain(key);
    expect(await statusOf(s3.send(new HeadObjectCommand({ Bucket: loc.bucket, Key: key.replaceAll("+", " ") })))).toBe(404);
    expect((await getBytes(loc.bucket, key)).equals(body)).toBe(true);
  });

  it("dedicated tenants: their bucket, SSE-KMS headers signed on PutObject and CreateMultipartUpload, never the shared bucket", async () => {
    const loc = await location(dedicatedTenant);
    expect(loc).toMatchObject({ mode: "dedicated", bucket: dedicatedBucket, kmsKeyId: KMS_KEY, tenantPrefix: `${dedicatedTenant}/sensor-data/` });
    const shared = await location(sharedTenant);
    expect(shared).toMatchObject({ mode: "shared", bucket: sharedBucket, kmsKeyId: undefined });
    // Same endpoint and credentials, but another bucket: a client (and connection pool) of its own,
    // so a slow dedicated bucket cannot take the shared bucket's sockets (parquet-slow-bucket.test.ts).
    expect(cache.clientForLocation(loc)).not.toBe(cache.clientForLocation(shared));
    expect(cache.clientForLocation(loc)).toBe(cache.clientForLocation(await location(dedicatedTenant)));
    expect(cache.clientForLocation(shared)).toBe(cache.clientFor(parquetStorageConfig(env).platform, sharedBucket));

    const client = cache.clientForLocation(loc);
    const topic = `sensor-data-${dedicatedTenant}`;
    const small = locationObjectKey(loc, { topic, partition: 0, firstOffset: 0, lastOffset: 9, firstTime: Date.parse("2024-06-01T08:00:00Z") });
    const large = locationObjectKey(loc, { topic, partition: 0, firstOffset: 10, lastOffset: 19, firstTime: Date.parse("2024-06-01T08:00:00Z") });
    sent.length = 0;
    await putObjectVerified(client, { bucket: loc.bucket, key: small, body: randomBytes(4096), kmsKeyId: loc.kmsKeyId }, { retry: fast });
    await putObjectVerified(client, { bucket: loc.bucket, key: large, body: randomBytes(6 * MiB), kmsKeyId: loc.kmsKeyId }, { multipartThreshold: 5 * MiB, partSize: 5 * MiB, retry: fast });
    const creating = sent.filter((r) => r.command === "PutObjectCommand" || r.command === "CreateMultipartUploadCommand");
    expect(creating.map((r) => r.command)).toEqual(["PutObjectCommand", "CreateMultipartUploadCommand"]);
    for (const r of creating) {
      expect(r.headers["x-amz-server-side-encryption"]).toBe("aws:kms");
      expect(r.headers["x-amz-server-side-encryption-aws-kms-key-id"]).toBe(KMS_KEY);
      expect(r.headers.authorization).toMatch(/SignedHeaders=[^,]*x-amz-server-side-encryption;[^,]*x-amz-server-side-encryption-aws-kms-key-id/);
      expect(r.path.startsWith(`/${dedicatedBucket}/${dedicatedTenant}/sensor-data/`)).toBe(true);
    }
    // Every request of these uploads went to the dedicated bucket.
    expect(sent.every((r) => r.path.startsWith(`/${dedicatedBucket}/`))).toBe(true);
    const inShared = await s3.send(new ListObjectsV2Command({ Bucket: sharedBucket, Prefix: `${dedicatedTenant}/` }));
    expect(inShared.KeyCount ?? 0).toBe(0);
  });

  it("manifest: plans are idempotent, ranges never overlap or leave gaps, the offset only advances behind the fence", async () => {
    const manifestTenant = randomUUID(); // entries only: nothing is uploaded for them
    const topic = `sensor-data-${manifestTenant}`;
    const partition = 5;
    const plan = (first: number, last: number, extra: Partial<FilePlan> = {}): FilePlan => ({
      consumerGroup: GROUP,
      topic,
      partition,
      firstOffset: first,
      lastOffset: last,
      tenantId: manifestTenant,
      bucket: sharedBucket,
      objectKey: parquetObjectKey({ tenantId: manifestTenant, topic, partition, firstOffset: first, lastOffset: last, firstTime: 0 }),
      rowCount: last - first + 1,
      minTime: 0,
      maxTime: 1000,
      ...extra,
    });
    const first = await planFile(db.writer, plan(0, 99));
    expect(first).toMatchObject({ created: true, entry: { status: "planned", firstOffset: 0, lastOffset: 99, byteSize: null } });
    // A replay with other boundaries gets the recorded ones back.
    const again = await planFile(db.writer, plan(0, 120));
    expect(again.created).toBe(false);
    expect(again.entry).toEqual(first.entry);
    // Two planners racing for the same start: one plan.
    const racing = await Promise.all([planFile(db.writer, plan(100, 149)), planFile(db.writer, plan(100, 160))]);
    expect(racing.filter((r) => r.created)).toHaveLength(1);
    expect(racing[0]!.entry).toEqual(racing[1]!.entry);
    const second = racing[0]!.entry;
    await expect(planFile(db.writer, plan(120, 200))).rejects.toBeInstanceOf(FencedError); // overlap
    await expect(planFile(db.writer, plan(second.lastOffset + 2, 400))).rejects.toBeInstanceOf(FencedError); // gap
    // Another consumer group over the same partition (docs/parquet.md, one group per Parquet sink):
    // whether it starts at a recorded file, inside one, or past the last, it is told whose files they are.
    for (const [a, b] of [[0, 99], [120, 200], [second.lastOffset + 2, 400]] as const) {
      const err = await planFile(db.writer, plan(a, b, { consumerGroup: "another-group" })).catch((e: unknown) => e);
      expect(err, `another group planning ${a}-${b}`).toBeInstanceOf(ForeignGroupError);
      expect((err as Error).message).toBe(`${topic}[${partition}]: its Parquet files belong to consumer group ${GROUP}; one consumer group per Parquet sink — run this worker with --consumer-group ${GROUP} to continue them (PostgreSQL is not affected; docs/parquet.md)`);
    }
    expect((await plannedFiles(db.writer, GROUP, topic, partition)).map((e) => e.firstOffset)).toEqual([0, 100]);
    expect(await sinkOffset(db.writer, PARQUET_SINK, GROUP, topic, partition)).toBeUndefined();

    const sha = "a".repeat(64);
    expect(await markUploaded(db.writer, { consumerGroup: GROUP, topic, partition, firstOffset: 0, lastOffset: 99, byteSize: 1234, sha256: sha })).toEqual({ nextOffset: 100, alreadyCommitted: false });
    // The same mark again (its COMMIT reply lost): no error, nothing moves.
    expect(await markUploaded(db.writer, { consumerGroup: GROUP, topic, partition, firstOffset: 0, lastOffset: 99, byteSize: 1234, sha256: sha })).toEqual({ nextOffset: 100, alreadyCommitted: true });
    // The same range with other bytes is a determinism bug, not a success.
    await expect(markUploaded(db.writer, { consumerGroup: GROUP, topic, partition, firstOffset: 0, lastOffset: 99, byteSize: 1234, sha256: "b".repeat(64) })).rejects.toBeInstanceOf(ManifestConflictError);
    // Boundaries other than the plan's are refused.
    await expect(markUploaded(db.writer, { consumerGroup: GROUP, topic, partition, firstOffset: 100, lastOffset: second.lastOffset + 1, byteSize: 1, sha256: sha })).rejects.toBeInstanceOf(ManifestConflictError);
    // A stale owner that thinks the offset is elsewhere is fenced, and its mark rolls back.
    await expect(markUploaded(db.writer, { consumerGroup: GROUP, topic, partition, firstOffset: 100, lastOffset: second.lastOffset, byteSize: 1, sha256: sha, expectedOffset: 50 })).rejects.toBeInstanceOf(FencedError);
    expect((await plannedFiles(db.writer, GROUP, topic, partition)).map((e) => e.firstOffset)).toEqual([100]);
    expect(await markUploaded(db.writer, { consumerGroup: GROUP, topic, partition, firstOffset: 100, lastOffset: second.lastOffset, byteSize: 1, sha256: sha })).toEqual({ nextOffset: second.lastOffset + 1, alreadyCommitted: false });
    expect(await sinkOffset(db.writer, PARQUET_SINK, GROUP, topic, partition)).toBe(second.lastOffset + 1);
    expect(await plannedFiles(db.writer, GROUP, topic, partition)).toEqual([]);
    // The next plan must start right after; a late plan from the old range is fenced.
    await expect(planFile(db.writer, plan(50, 60))).rejects.toBeInstanceOf(FencedError);
    expect((await planFile(db.writer, plan(second.lastOffset + 1, second.lastOffset + 10))).created).toBe(true);
    expect((await listFiles(db.writer, { tenantId: manifestTenant, topic, partition })).map((e) => e.status)).toEqual(["uploaded", "uploaded", "planned"]);
  });

  it("one file end to end, then a crash before the mark: the replay rebuilds the same key and bytes; pyarrow reads the prefix from S3", async () => {
    const loc = await location(sharedTenant);
    const client = cache.clientForLocation(loc);
    const topic = `sensor-data-${sharedTenant}`;
    const partition = 0;
    const all = readings(sharedTenant, 900, 0);

    // Attempt 1: the worker rolls a file (offsets 0-499 with 100 and 101 dead-lettered), plans it,
    // uploads it, and dies before markUploaded.
    const buildFile = async (roller: ParquetRoller, chunks: StoredReading[][]) => {
      for (const c of chunks) roller.append(c.filter((r) => r.offset !== 100 && r.offset !== 101), { lastOffset: c.at(-1)!.offset, nowMs: 0 });
      return roller;
    };
    const r1 = await buildFile(new ParquetRoller({ maxRows: 498, maxBytes: 1e9, maxSpanMs: 3_600_000, idleMs: 60_000 }, { startOffset: 0 }), [all.slice(0, 300), all.slice(300, 600)]);
    expect(r1.shouldRoll(0)).toBe("rows");
    const f1 = r1.take()!;
    expect([f1.firstOffset, f1.lastOffset, f1.rows.length]).toEqual([0, 499, 498]);
    const key = locationObjectKey(loc, { topic, partition, firstOffset: f1.firstOffset, lastOffset: f1.lastOffset, firstTime: f1.rows[0]!.time });
    const planned = await planFile(db.writer, { consumerGroup: GROUP, topic, partition, firstOffset: f1.firstOffset, lastOffset: f1.lastOffset, tenantId: loc.tenantId, bucket: loc.bucket, objectKey: key, rowCount: f1.rows.length, minTime: f1.minTime, maxTime: f1.maxTime });
    expect(planned.created).toBe(true);
    const body1 = await encodeParquet(f1.rows);
    const up1 = await putObjectVerified(client, { bucket: loc.bucket, key, body: body1, kmsKeyId: loc.kmsKeyId }, { retry: fast });

    // Restart: read from the sink offset (none yet → 0), rebuild each planned entry exactly — the
    // replay arrives in other chunk sizes — then go on.
    expect(await sinkOffset(db.writer, PARQUET_SINK, GROUP, topic, partition)).toBeUndefined();
    const [entry] = await plannedFiles(db.writer, GROUP, topic, partition);
    expect(entry).toMatchObject({ firstOffset: 0, lastOffset: 499, objectKey: key, rowCount: 498 });
    const r2 = await buildFile(new ParquetRoller({ maxRows: 200, maxBytes: 1e9, maxSpanMs: 3_600_000, idleMs: 60_000 }, { startOffset: entry!.firstOffset }), [all.slice(0, 123), all.slice(123, 777)]);
    const f2 = r2.takeThrough(entry!.lastOffset)!;
    const body2 = await encodeParquet(f2.rows);
    expect(body2.equals(body1)).toBe(true);
    const rekey = locationObjectKey(loc, { topic, partition, firstOffset: f2.firstOffset, lastOffset: f2.lastOffset, firstTime: f2.rows[0]!.time });
    expect(rekey).toBe(entry!.objectKey);
    const up2 = await putObjectVerified(client, { bucket: loc.bucket, key: rekey, body: body2 }, { retry: fast });
    expect(up2.sha256).toBe(up1.sha256);
    expect(await markUploaded(db.writer, { consumerGroup: GROUP, topic, partition, firstOffset: f2.firstOffset, lastOffset: f2.lastOffset, byteSize: up2.bytes, sha256: up2.sha256 })).toEqual({ nextOffset: 500, alreadyCommitted: false });

    // The rest of the replay goes on from 500 in a file of its own.
    r2.append(all.slice(777), { nowMs: 0 });
    const f3 = r2.takeThrough(899)!;
    expect(f3.firstOffset).toBe(500);
    const key3 = locationObjectKey(loc, { topic, partition, firstOffset: 500, lastOffset: 899, firstTime: f3.rows[0]!.time });
    await planFile(db.writer, { consumerGroup: GROUP, topic, partition, firstOffset: 500, lastOffset: 899, tenantId: loc.tenantId, bucket: loc.bucket, objectKey: key3, rowCount: f3.rows.length, minTime: f3.minTime, maxTime: f3.maxTime });
    const up3 = await putObjectVerified(client, { bucket: loc.bucket, key: key3, body: await encodeParquet(f3.rows) }, { retry: fast });
    await markUploaded(db.writer, { consumerGroup: GROUP, topic, partition, firstOffset: 500, lastOffset: 899, byteSize: up3.bytes, sha256: up3.sha256 });

    // Exactly once, read by pyarrow straight from S3 with Hive partitioning over the tenant's prefix.
    const footer = readParquetFooter(await getBytes(loc.bucket, key));
    expect(footer.rows).toBe(498);
    const py = readS3DatasetWithPyarrow(`${loc.bucket}/${loc.tenantPrefix}`, {
      endpoint: env.MILLRACE_S3_ENDPOINT!,
      region: env.MILLRACE_S3_REGION!,
      accessKeyId: env.MILLRACE_S3_ACCESS_KEY_ID!,
      secretAccessKey: env.MILLRACE_S3_SECRET_ACCESS_KEY!,
    });
    const ours = py.rows.filter((r) => r.source_offset <= 899 && r.equipment_id.startsWith("pump-")).filter((r) => r.date === "2024-06-01");
    const offsets = ours.map((r) => r.source_offset).sort((a, b) => a - b);
    expect(offsets).toEqual(all.map((r) => r.offset).filter((o) => o !== 100 && o !== 101));
    expect(new Set(py.rows.map((r) => r.tenant_id))).toEqual(new Set([sharedTenant]));
    expect(py.schema.map(([n]) => n)).toEqual(expect.arrayContaining(["time", "date", "hour"]));
  });

  it("verify: finds objects unknown to the manifest and tampered ones; millrace parquet ls|inspect|verify agree", async () => {
    const loc = await location(sharedTenant);
    const topic = `sensor-data-${sharedTenant}`;
    const config = parquetStorageConfig(env);
    // The class-16 object was uploaded without a manifest entry: an orphan a reader would count.
    const orphanKey = locationObjectKey(loc, { topic, partition: 2, firstOffset: 7, lastOffset: 99, firstTime: Date.parse("2024-06-01T08:00:00Z") });
    const first = await verifyTenant({ pool: db.writer, cache, config, env, tenantId: sharedTenant });
    expect(first).toMatchObject({ files: 2, uploaded: 2, planned: 0, rows: 898 });
    expect(first.problems).toEqual([expect.objectContaining({ kind: "orphan", key: orphanKey })]);
    await s3.send(new DeleteObjectsCommand({ Bucket: loc.bucket, Delete: { Objects: [{ Key: orphanKey }] } }));
    expect((await verifyTenant({ pool: db.writer, cache, config, env, tenantId: sharedTenant })).problems).toEqual([]);
    expect((await verifyTenant({ pool: db.writer, cache, config, env, tenantId: sharedTenant, download: false })).problems).toEqual([]);
    // The dedicated tenant's two test objects have no manifest entries either.
    const ded = await verifyTenant({ pool: db.writer, cache, config, env, tenantId: dedicatedTenant });
    expect(ded.problems.map((p) => p.kind)).toEqual(["orphan", "orphan"]);

    const cliEnv = { ...process.env, MILLRACE_PG_ADMIN_URL: db.adminUrl, MILLRACE_S3_SHARED_BUCKET: sharedBucket, MILLRACE_PG_URL: "" };
    const cli = (...args: string[]) => spawnSync(join(repoRoot, "millrace"), ["parquet", ...args], { env: cliEnv, encoding: "utf8", timeout: 120_000 });
    const [e0] = await listFiles(db.writer, { tenantId: sharedTenant, topic, partition: 0 });
    expect(e0).toMatchObject({ firstOffset: 0, lastOffset: 499 });
    const original = await getBytes(loc.bucket, e0!.objectKey);
    try {
      await putObjectVerified(s3, { bucket: loc.bucket, key: e0!.objectKey, body: await encodeParquet(readings(sharedTenant, 3, 0)) }, { retry: fast });
      const tampered = await verifyTenant({ pool: db.writer, cache, config, env, tenantId: sharedTenant });
      expect(new Set(tampered.problems.map((p) => p.kind))).toEqual(new Set(["size", "checksum", "rows", "time"]));
      expect(tampered.problems.every((p) => p.key === e0!.objectKey)).toBe(true);
      const verify = cli("verify", "--tenant", sharedTenant);
      expect(verify.status, verify.stderr).toBe(1);
      expect(verify.stdout).toMatch(/problem \(rows\): .*: 3 rows, the manifest says 498/);
    } finally {
      await putObjectVerified(s3, { bucket: loc.bucket, key: e0!.objectKey, body: original }, { retry: fast });
    }

    const ls = cli("ls", "--tenant", sharedTenant);
    expect(ls.status, ls.stderr).toBe(0);
    expect(ls.stdout).toContain(e0!.objectKey);
    expect(ls.stdout).toMatch(/uploaded\s+0\s+0-499\s+498\s+2024-06-01T08:15:00.000Z/);
    expect(ls.stdout).toMatch(/2 files \(2 uploaded, 0 planned\), 898 rows/);

    const inspect = cli("inspect", "--tenant", sharedTenant, "--file", "0-499");
    expect(inspect.status, inspect.stderr).toBe(0);
    expect(inspect.stdout).toContain(`s3://${sharedBucket}/${e0!.objectKey}`);
    expect(inspect.stdout).toMatch(/rows\s+498/);
    expect(inspect.stdout).toMatch(/time\s+2024-06-01T08:15:00.000Z \.\. 2024-06-01T08:19:09.500Z/);
    expect(inspect.stdout).toMatch(/time\s+INT64\s+TIMESTAMP\(MILLIS, UTC\)\s+REQUIRED/);
  });

  it("millrace parquet verify (the command line) exits 1 and names a gap and an overlap made in the manifest with SQL", async () => {
    const tenant = randomUUID();
    await db.admin.query(`INSERT INTO tenants (tenant_id, tenant_name, deployment_type, storage_mode) VALUES ($1, 'ranges co', 'multi-tenant', 'shared')`, [tenant]);
    const topic = `sensor-data-${tenant}`;
    const loc = await location(tenant);
    const entry = (partition: number, first: number, last: number) =>
      db.admin.query(
        `INSERT INTO millrace.parquet_files (topic, partition, first_offset, last_offset, consumer_group, tenant_id, bucket, object_key, status, row_count, min_time, max_time)
         VALUES ($1, $2, $3, $4, 'ranges-test', $5, $6, $7, 'planned', $8, to_timestamp(0), to_timestamp(0))`,
        [topic, partition, first, last, tenant, loc.bucket, locationObjectKey(loc, { topic, partition, firstOffset: first, lastOffset: last, firstTime: 0 }), last - first + 1],
      );
    const cliEnv = { ...process.env, MILLRACE_PG_ADMIN_URL: db.adminUrl, MILLRACE_S3_SHARED_BUCKET: sharedBucket, MILLRACE_PG_URL: "" };
    const verify = () => spawnSync(join(repoRoot, "millrace"), ["parquet", "verify", "--tenant", tenant], { env: cliEnv, encoding: "utf8", timeout: 120_000 });
    // Contiguous ranges first: no problem (the planned files are notes).
    await entry(0, 0, 99);
    await entry(1, 0, 99);
    await entry(2, 0, 99);
    await entry(2, 100, 199);
    const clean = verify();
    expect(clean.status, clean.stderr).toBe(0);
    expect(clean.stdout).toContain("ok: no problems");
    expect(clean.stdout).toMatch(/4 files: 0 uploaded .*, 4 planned/);
    // Partition 0: a file over offsets 50-149 overlaps 0-99; partition 1: 100-199 are in no file.
    await entry(0, 50, 149);
    await entry(1, 200, 299);
    const bad = verify();
    expect(bad.status, bad.stderr).toBe(1);
    expect(bad.stdout).toContain(`problem (overlap): ${topic}[0]: offsets 50-99 are in two files (0-99 and 50-149)`);
    expect(bad.stdout).toContain(`problem (gap): ${topic}[1]: offsets 100-199 are in no file (between 0-99 and 200-299)`);
    expect(bad.stdout).toContain("2 problems");
    expect(bad.stdout).not.toMatch(new RegExp(`problem \\(\\w+\\): ${topic}\\[2\\]`));
  });

  it("millrace parquet abort-stale aborts the incomplete multipart uploads under the tenant's prefix older than --older-than, nothing else", async () => {
    const tenant = randomUUID();
    await db.admin.query(`INSERT INTO tenants (tenant_id, tenant_name, deployment_type, storage_mode) VALUES ($1, 'stale co', 'multi-tenant', 'shared')`, [tenant]);
    const loc = await location(tenant);
    const mine = await s3.send(new CreateMultipartUploadCommand({ Bucket: loc.bucket, Key: `${loc.tenantPrefix}sensor-data/stranded.parquet` }));
    const elsewhereKey = `not-${tenant}/stranded.parquet`;
    const elsewhere = await s3.send(new CreateMultipartUploadCommand({ Bucket: loc.bucket, Key: elsewhereKey }));
    const cliEnv = { ...process.env, MILLRACE_PG_ADMIN_URL: db.adminUrl, MILLRACE_S3_SHARED_BUCKET: sharedBucket, MILLRACE_PG_URL: "" };
    const abortStale = (...args: string[]) => spawnSync(join(repoRoot, "millrace"), ["parquet", "abort-stale", "--tenant", tenant, ...args], { env: cliEnv, encoding: "utf8", timeout: 120_000 });
    try {
      // Younger than the default 15 minutes (a live worker's upload would be): left alone.
      const young = abortStale();
      expect(young.status, young.stderr).toBe(0);
      expect(young.stdout).toContain("0 incomplete uploads older than 15m aborted");
      expect((await uploadsUnder(loc.bucket, loc.tenantPrefix)).map((u) => u.UploadId)).toEqual([mine.UploadId]);
      const all = abortStale("--older-than", "0s");
      expect(all.status, all.stderr).toBe(0);
      expect(all.stdout).toContain(`aborted s3://${loc.bucket}/${loc.tenantPrefix}sensor-data/stranded.parquet upload ${mine.UploadId}`);
      expect(all.stdout).toContain("1 incomplete upload older than 0ms aborted");
      expect(await uploadsUnder(loc.bucket, loc.tenantPrefix)).toEqual([]);
      expect((await uploadsUnder(loc.bucket, `not-${tenant}/`)).map((u) => u.UploadId)).toEqual([elsewhere.UploadId]);
      const bad = abortStale("--older-than", "15");
      expect(bad.status).not.toBe(0);
      expect(bad.stderr).toContain("is not a duration like 100ms, 30s, 5m or 1h");
    } finally {
      await s3.send(new AbortMultipartUploadCommand({ Bucket: loc.bucket, Key: elsewhereKey, UploadId: elsewhere.UploadId })).catch(() => {});
    }
  });
});
