/**
 * The stack's S3 server (versitygw, posix backend) on its own: an isolated instance (temporary state
 * directory, port 29792) gets objects — small ones, an odd key, a completed multipart upload and an
 * upload still in progress — then its process is killed with SIGKILL and started again with the
 * stack's own start code. Every object is still listed with the same bytes, size and ETag, and the
 * interrupted upload can be finished.
 */
import { createHash, randomBytes } from "node:crypto";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  CompleteMultipartUploadCommand,
  CreateBucketCommand,
  CreateMultipartUploadCommand,
  GetObjectCommand,
  HeadObjectCommand,
  ListMultipartUploadsCommand,
  ListObjectsV2Command,
  ListPartsCommand,
  PutObjectCommand,
  UploadPartCommand,
  type S3Client,
} from "@aws-sdk/client-s3";
import { stackContext } from "../../stack/context.ts";
import { isAlive } from "../../stack/process.ts";
import { s3Client, s3Service } from "../../stack/s3.ts";
import type { StackContext } from "../../stack/types.ts";
import { waitUntil } from "../helpers/wait.ts";

const PORT = 29792;
const READY_MS = 60_000;
const MiB = 1024 * 1024;

const sha = (b: Buffer) => createHash("sha256").update(b).digest("hex");

async function bytesOf(client: S3Client, bucket: string, key: string): Promise<Buffer> {
  const res = await client.send(new GetObjectCommand({ Bucket: bucket, Key: key }));
  return Buffer.from(await res.Body!.transformToByteArray());
}

async function listAll(client: S3Client, bucket: string): Promise<string[]> {
  const keys: string[] = [];
  let token: string | undefined;
  do {
    const page = await client.send(new ListObjectsV2Command({ Bucket: bucket, MaxKeys: 2, ContinuationToken: token }));
    keys.push(...(page.Contents ?? []).map((o) => o.Key!));
    token = page.NextContinuationToken;
  } while (token);
  return keys.sort();
}

describe("stack S3 service (versitygw): SIGKILL and restart", () => {
  const base = stackContext(process.env, () => undefined);
  const stateDir = mkdtempSync(join(tmpdir(), "millrace-s3-"));
  const ctx: StackContext = { ...base, stateDir, ports: { ...base.ports, s3: PORT } };
  const pidFile = join(stateDir, "s3", "versitygw.pid");
  const bucket = "crash-test";
  /** What was acknowledged before the kill: key → sha256, size and ETag. */
  const stored = new Map<string, { sha: string; size: number; etag: string }>();
  const inProgress = { key: "multipart/in-progress.bin", uploadId: "", part1: Buffer.alloc(0), etag1: "" };
  let client: S3Client;
  let firstPid = 0;

  beforeAll(async () => {
    await s3Service.install(ctx); // the cached build of the stack (go install only if missing)
  }, 900_000);

  afterAll(async () => {
    client?.destroy();
    try {
      await s3Service.stop(ctx, { force: true });
    } finally {
      rmSync(stateDir, { recursive: true, force: true });
    }
  });

  it("starts on its own port and stores objects, a completed multipart upload and one in progress", async () => {
    expect(s3Service.env(ctx).MILLRACE_S3_ENDPOINT).toBe(`http://127.0.0.1:${PORT}`);
    await s3Service.start(ctx);
    await s3Service.waitReady(ctx, READY_MS);
    firstPid = Number(readFileSync(pidFile, "utf8").trim());
    expect(isAlive(firstPid)).toBe(true);
    client = s3Client(ctx);
    await client.send(new CreateBucketCommand({ Bucket: bucket }));

    const put = async (key: string, body: Buffer) => {
      const res = await client.send(new PutObjectCommand({ Bucket: bucket, Key: key, Body: body, ServerSideEncryption: "aws:kms", SSEKMSKeyId: "crash-test-key" }));
      stored.set(key, { sha: sha(body), size: body.length, etag: res.ETag! });
    };
    await put("small/a.parquet", randomBytes(1_000));
    await put("small/b.parquet", randomBytes(200_000));
    await put("odd keys/with space/plus+star*caret^.bin", randomBytes(3_333));
    await put("empty", Buffer.alloc(0));

    const key = "multipart/completed.bin";
    const parts = [randomBytes(5 * MiB + 17), randomBytes(MiB + 3)];
    const { UploadId } = await client.send(new CreateMultipartUploadCommand({ Bucket: bucket, Key: key }));
    const etags: string[] = [];
    for (const [i, body] of parts.entries()) {
      etags.push((await client.send(new UploadPartCommand({ Bucket: bucket, Key: key, UploadId, PartNumber: i + 1, Body: body }))).ETag!);
    }
    const done = await client.send(
      new CompleteMultipartUploadCommand({ Bucket: bucket, Key: key, UploadId, MultipartUpload: { Parts: etags.map((ETag, i) => ({ ETag, PartNumber: i + 1 })) } }),
    );
    const whole = Buffer.concat(parts);
    stored.set(key, { sha: sha(whole), size: whole.length, etag: done.ETag! });
    expect(done.ETag).toMatch(/-2"?$/); // a multipart ETag: <md5 of the part md5s>-<parts>

    inProgress.part1 = randomBytes(5 * MiB + 1);
    inProgress.uploadId = (await client.send(new CreateMultipartUploadCommand({ Bucket: bucket, Key: inProgress.key }))).UploadId!;
    inProgress.etag1 = (await client.send(new UploadPartCommand({ Bucket: bucket, Key: inProgress.key, UploadId: inProgress.uploadId, PartNumber: 1, Body: inProgress.part1 }))).ETag!;

    expect(await listAll(client, bucket)).toEqual([...stored.keys()].sort());
  });

  it("after SIGKILL of the server process and a start by the stack's code, every object has its bytes, size and ETag", async () => {
    // Killed right after the last acknowledged write, with no warning.
    process.kill(firstPid, "SIGKILL");
    await waitUntil(`versitygw pid ${firstPid} to die`, async () => !isAlive(firstPid), 10_000, 50);
    expect((await s3Service.status(ctx)).running).toBe(false);

    await s3Service.start(ctx);
    await s3Service.waitReady(ctx, READY_MS);
    const secondPid = Number(readFileSync(pidFile, "utf8").trim());
    expect(secondPid).not.toBe(firstPid);
    expect((await s3Service.status(ctx)).running).toBe(true);

    client.destroy();
    client = s3Client(ctx);
    expect(await listAll(client, bucket)).toEqual([...stored.keys()].sort());
    for (const [key, want] of stored) {
      const body = await bytesOf(client, bucket, key);
      expect({ key, size: body.length, sha: sha(body) }).toEqual({ key, size: want.size, sha: want.sha });
      const head = await client.send(new HeadObjectCommand({ Bucket: bucket, Key: key }));
      expect({ key, size: head.ContentLength, etag: head.ETag }).toEqual({ key, size: want.size, etag: want.etag });
    }
  });

  it("the upload in progress at the kill is still listed with its part, and can be completed", async () => {
    const uploads = await client.send(new ListMultipartUploadsCommand({ Bucket: bucket }));
    expect((uploads.Uploads ?? []).map((u) => [u.Key, u.UploadId])).toEqual([[inProgress.key, inProgress.uploadId]]);
    const parts = await client.send(new ListPartsCommand({ Bucket: bucket, Key: inProgress.key, UploadId: inProgress.uploadId }));
    expect((parts.Parts ?? []).map((p) => [p.PartNumber, p.Size, p.ETag])).toEqual([[1, inProgress.part1.length, inProgress.etag1]]);

    const part2 = randomBytes(4_321);
    const etag2 = (await client.send(new UploadPartCommand({ Bucket: bucket, Key: inProgress.key, UploadId: inProgress.uploadId, PartNumber: 2, Body: part2 }))).ETag!;
    await client.send(
      new CompleteMultipartUploadCommand({
        Bucket: bucket,
        Key: inProgress.key,
        UploadId: inProgress.uploadId,
        MultipartUpload: { Parts: [{ ETag: inProgress.etag1, PartNumber: 1 }, { ETag: etag2, PartNumber: 2 }] },
      }),
    );
    expect(sha(await bytesOf(client, bucket, inProgress.key))).toBe(sha(Buffer.concat([inProgress.part1, part2])));
    expect((await client.send(new ListMultipartUploadsCommand({ Bucket: bucket }))).Uploads ?? []).toEqual([]);
  });

  it("stops gracefully", async () => {
    await s3Service.stop(ctx);
    const status = await s3Service.status(ctx);
    expect(status.running).toBe(false);
    expect(status.pid).toBeUndefined();
  });
});
