/**
 * The stack's S3 server does what the pipeline's Parquet sink needs, checked with the AWS SDK
 * (path-style) against the running stack (MILLRACE_S3_*): SSE-KMS request headers accepted, ListObjectsV2
 * paging with continuation tokens, keys with space `*` `^` `+`, a two-part multipart upload read back
 * byte-exact, an aborted upload leaving nothing behind. Everything happens in a bucket of its own,
 * removed at the end.
 */
import { randomBytes } from "node:crypto";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  AbortMultipartUploadCommand,
  CompleteMultipartUploadCommand,
  CreateBucketCommand,
  CreateMultipartUploadCommand,
  DeleteBucketCommand,
  DeleteObjectsCommand,
  GetObjectCommand,
  HeadObjectCommand,
  ListMultipartUploadsCommand,
  ListObjectsV2Command,
  ListPartsCommand,
  PutObjectCommand,
  S3Client,
  UploadPartCommand,
} from "@aws-sdk/client-s3";
import { loadStackEnv } from "../../lib/env.ts";

const REQUIRED = [
  "MILLRACE_S3_ENDPOINT",
  "MILLRACE_S3_REGION",
  "MILLRACE_S3_ACCESS_KEY_ID",
  "MILLRACE_S3_SECRET_ACCESS_KEY",
  "MILLRACE_S3_FORCE_PATH_STYLE",
] as const;

const KMS_KEY_ID = "millrace-test-kms-key";
const MiB = 1024 * 1024;

function s3Env(): Record<(typeof REQUIRED)[number], string> {
  loadStackEnv();
  const missing = REQUIRED.filter((k) => !process.env[k]);
  if (missing.length > 0) {
    throw new Error(`missing ${missing.join(", ")}: start the local stack: ./millrace stack up (or eval "$(./millrace stack env)")`);
  }
  return Object.fromEntries(REQUIRED.map((k) => [k, process.env[k]!])) as Record<(typeof REQUIRED)[number], string>;
}

interface SentRequest {
  method: string;
  path: string;
  query: Record<string, unknown>;
  headers: Record<string, string>;
}

/** The client, and every request it sent (as signed, so exactly what went over the wire). */
function recordingClient(): { client: S3Client; sent: SentRequest[] } {
  const env = s3Env();
  const client = new S3Client({
    endpoint: env.MILLRACE_S3_ENDPOINT,
    region: env.MILLRACE_S3_REGION,
    forcePathStyle: env.MILLRACE_S3_FORCE_PATH_STYLE === "true",
    credentials: { accessKeyId: env.MILLRACE_S3_ACCESS_KEY_ID, secretAccessKey: env.MILLRACE_S3_SECRET_ACCESS_KEY },
  });
  const sent: SentRequest[] = [];
  client.middlewareStack.add(
    (next) => async (args) => {
      const req = args.request as { method?: string; path?: string; query?: Record<string, unknown>; headers?: Record<string, string> };
      sent.push({ method: req.method ?? "", path: req.path ?? "", query: { ...req.query }, headers: { ...req.headers } });
      return await next(args);
    },
    { step: "finalizeRequest", name: "recordSentRequests", priority: "low" },
  );
  return { client, sent };
}

function lowerKeys(h: Record<string, string>): Record<string, string> {
  return Object.fromEntries(Object.entries(h).map(([k, v]) => [k.toLowerCase(), v]));
}

async function bodyBytes(client: S3Client, bucket: string, key: string): Promise<Buffer> {
  const res = await client.send(new GetObjectCommand({ Bucket: bucket, Key: key }));
  return Buffer.from(await res.Body!.transformToByteArray());
}

async function statusOf(p: Promise<unknown>): Promise<number> {
  try {
    await p;
    return 200;
  } catch (err) {
    return (err as { $metadata?: { httpStatusCode?: number } }).$metadata?.httpStatusCode ?? -1;
  }
}

describe("stack S3 server", () => {
  const bucket = `millrace-test-${randomBytes(6).toString("hex")}`;
  let client: S3Client;
  let sent: SentRequest[];

  beforeAll(async () => {
    ({ client, sent } = recordingClient());
    await client.send(new CreateBucketCommand({ Bucket: bucket }));
  });

  afterAll(async () => {
    if (!client) return;
    try {
      const uploads = await client.send(new ListMultipartUploadsCommand({ Bucket: bucket }));
      for (const u of uploads.Uploads ?? []) {
        await client.send(new AbortMultipartUploadCommand({ Bucket: bucket, Key: u.Key!, UploadId: u.UploadId! }));
      }
      let token: string | undefined;
      do {
        const page = await client.send(new ListObjectsV2Command({ Bucket: bucket, ContinuationToken: token }));
        const keys = (page.Contents ?? []).map((o) => ({ Key: o.Key! }));
        if (keys.length > 0) await client.send(new DeleteObjectsCommand({ Bucket: bucket, Delete: { Objects: keys, Quiet: true } }));
        token = page.NextContinuationToken;
      } while (token);
      await client.send(new DeleteBucketCommand({ Bucket: bucket }));
    } finally {
      client.destroy();
    }
  });

  it("accepts SSE-KMS headers on put, and get/head read the object back", async () => {
    const key = "sse/kms-object.parquet";
    const body = randomBytes(4096);
    const put = await client.send(
      new PutObjectCommand({ Bucket: bucket, Key: key, Body: body, ServerSideEncryption: "aws:kms", SSEKMSKeyId: KMS_KEY_ID }),
    );
    expect(put.ETag).toBeTruthy();

    // What went over the wire: both SSE-KMS headers, signed.
    const req = sent.find((r) => r.method === "PUT" && decodeURIComponent(r.path).endsWith(`/${bucket}/${key}`));
    expect(req, "the PutObject request was recorded").toBeDefined();
    const headers = lowerKeys(req!.headers);
    expect(headers["x-amz-server-side-encryption"]).toBe("aws:kms");
    expect(headers["x-amz-server-side-encryption-aws-kms-key-id"]).toBe(KMS_KEY_ID);
    expect(headers.authorization).toMatch(/SignedHeaders=[^,]*x-amz-server-side-encryption-aws-kms-key-id/);

    expect((await bodyBytes(client, bucket, key)).equals(body)).toBe(true);
    const head = await client.send(new HeadObjectCommand({ Bucket: bucket, Key: key }));
    expect(head.ContentLength).toBe(body.length);
    // versitygw accepts but does not store SSE settings (docs/stack-s3.md); a server that echoes them
    // must echo what was sent.
    if (head.ServerSideEncryption !== undefined) {
      expect(head.ServerSideEncryption).toBe("aws:kms");
      expect(head.SSEKMSKeyId).toContain(KMS_KEY_ID);
    }
  });

  it("pages ListObjectsV2 with continuation tokens, every key exactly once", async () => {
    const prefix = "paging/";
    const keys = Array.from({ length: 25 }, (_, i) => `${prefix}obj-${String(i).padStart(3, "0")}`);
    for (const key of keys) await client.send(new PutObjectCommand({ Bucket: bucket, Key: key, Body: key }));

    const seen: string[] = [];
    const pageSizes: number[] = [];
    let token: string | undefined;
    let pages = 0;
    do {
      const page = await client.send(new ListObjectsV2Command({ Bucket: bucket, Prefix: prefix, MaxKeys: 10, ContinuationToken: token }));
      pages += 1;
      expect(pages, "ListObjectsV2 paging terminates").toBeLessThanOrEqual(10);
      const got = (page.Contents ?? []).map((o) => o.Key!);
      pageSizes.push(got.length);
      seen.push(...got);
      expect(page.IsTruncated).toBe(page.NextContinuationToken !== undefined);
      token = page.NextContinuationToken;
    } while (token);

    expect(pages).toBeGreaterThan(1);
    expect(pageSizes.every((n) => n <= 10)).toBe(true);
    expect(new Set(seen).size).toBe(seen.length); // no key twice
    expect([...seen].sort()).toEqual([...keys].sort()); // none missing, none extra
  });

  it("keeps keys with space, *, ^ and + exactly as written", async () => {
    const key = "odd keys/with space/star*seg/caret^seg/plus+seg/a b*c^d+e.txt";
    const body = Buffer.from("odd key body");
    await client.send(new PutObjectCommand({ Bucket: bucket, Key: key, Body: body }));

    expect((await bodyBytes(client, bucket, key)).equals(body)).toBe(true);
    const listed = await client.send(new ListObjectsV2Command({ Bucket: bucket, Prefix: "odd keys/" }));
    expect((listed.Contents ?? []).map((o) => o.Key)).toEqual([key]);
    // '+' must not have been decoded as a space (a classic form-decoding bug).
    expect(await statusOf(client.send(new HeadObjectCommand({ Bucket: bucket, Key: key.replaceAll("+", " ") })))).toBe(404);
  });

  it("completes a two-part multipart upload (with SSE-KMS headers) and reads it back byte-exact", async () => {
    const key = "multipart/two-parts.bin";
    const part1 = randomBytes(5 * MiB + 123);
    const part2 = randomBytes(MiB + 7);
    const created = await client.send(
      new CreateMultipartUploadCommand({ Bucket: bucket, Key: key, ServerSideEncryption: "aws:kms", SSEKMSKeyId: KMS_KEY_ID }),
    );
    const uploadId = created.UploadId!;
    expect(uploadId).toBeTruthy();
    const createReq = sent.find((r) => r.method === "POST" && "uploads" in r.query && decodeURIComponent(r.path).endsWith(`/${key}`));
    expect(lowerKeys(createReq!.headers)["x-amz-server-side-encryption"]).toBe("aws:kms");

    const p1 = await client.send(new UploadPartCommand({ Bucket: bucket, Key: key, UploadId: uploadId, PartNumber: 1, Body: part1 }));
    const p2 = await client.send(new UploadPartCommand({ Bucket: bucket, Key: key, UploadId: uploadId, PartNumber: 2, Body: part2 }));
    const done = await client.send(
      new CompleteMultipartUploadCommand({
        Bucket: bucket,
        Key: key,
        UploadId: uploadId,
        MultipartUpload: { Parts: [{ PartNumber: 1, ETag: p1.ETag }, { PartNumber: 2, ETag: p2.ETag }] },
      }),
    );
    expect(done.ETag).toMatch(/-2"?$/);

    const back = await bodyBytes(client, bucket, key);
    expect(back.length).toBe(part1.length + part2.length);
    expect(back.equals(Buffer.concat([part1, part2]))).toBe(true);
    const head = await client.send(new HeadObjectCommand({ Bucket: bucket, Key: key }));
    expect(head.ContentLength).toBe(part1.length + part2.length);
    const uploads = await client.send(new ListMultipartUploadsCommand({ Bucket: bucket, Prefix: key }));
    expect(uploads.Uploads ?? []).toEqual([]);
  });

  it("aborting a started multipart upload leaves no incomplete upload", async () => {
    const key = "multipart/aborted.bin";
    const created = await client.send(new CreateMultipartUploadCommand({ Bucket: bucket, Key: key }));
    const uploadId = created.UploadId!;
    await client.send(new UploadPartCommand({ Bucket: bucket, Key: key, UploadId: uploadId, PartNumber: 1, Body: randomBytes(5 * MiB) }));

    const before = await client.send(new ListMultipartUploadsCommand({ Bucket: bucket }));
    expect((before.Uploads ?? []).map((u) => [u.Key, u.UploadId])).toContainEqual([key, uploadId]);

    await client.send(new AbortMultipartUploadCommand({ Bucket: bucket, Key: key, UploadId: uploadId }));

    const after = await client.send(new ListMultipartUploadsCommand({ Bucket: bucket }));
    expect(after.Uploads ?? []).toEqual([]);
    expect(await statusOf(client.send(new ListPartsCommand({ Bucket: bucket, Key: key, UploadId: uploadId })))).toBe(404);
    expect(await statusOf(client.send(new HeadObjectCommand({ Bucket: bucket, Key: key })))).toBe(404);
  });
});
