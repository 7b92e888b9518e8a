/**
 * The Parquet sink's S3 I/O: put one object and prove it arrived; clean up abandoned uploads.
 *
 * putObjectVerified:
 *  - below `multipartThreshold` one PutObject, above it a multipart upload (parts of `partSize`,
 *    at least 5 MiB as S3 requires, `concurrency` in flight);
 *  - every request is retried with backoff (lib/retry.ts) when the failure is transient (5xx,
 *    SlowDown/throttling, timeouts, lost connections, BadDigest); others fail at once;
 *  - any failure of a multipart upload — a part, the completion, the verification, an abort signal
 *    — ends with AbortMultipartUpload, so no incomplete upload (and no storage bill for its parts)
 *    is left behind; if even the abort fails, the error says which upload id remains; the worker's
 *    next attempt at that file (or the partition's next owner, rebuilding the planned range) first
 *    aborts every incomplete upload of exactly that key ({@link abortUploadsOfKey}, called by
 *    pipelines/runtime/parquet-stage.ts); {@link abortStaleUploads} is an operator's clean-up under a
 *    prefix (`millrace parquet abort-stale`), not called by the worker;
 *  - integrity: the SHA-256 of the body is computed here and sent as `x-amz-checksum-sha256` (for a
 *    multipart upload, per part; the server refuses a body that does not match, BadDigest) and as
 *    user metadata `x-amz-meta-sha256` (hex, whole object). Success is then verified with HeadObject:
 *    ContentLength equals the body's length, the metadata SHA-256 is ours, and the server's checksum
 *    — the full-object SHA-256 for a single put, or the composite `base64(sha256(part digests))-N`
 *    for a multipart one — equals the one computed here when the server reports it. The ETag is
 *    never used: it is an MD5 of the body only for single, non-KMS puts.
 *
 * With `kmsKeyId` the object (or the multipart upload) is created with
 * `x-amz-server-side-encryption: aws:kms` and that key id.
 */
import { createHash } from "node:crypto";
import {
  AbortMultipartUploadCommand,
  CompleteMultipartUploadCommand,
  CreateMultipartUploadCommand,
  HeadObjectCommand,
  ListMultipartUploadsCommand,
  PutObjectCommand,
  UploadPartCommand,
  type CompletedPart,
  type S3Client,
} from "@aws-sdk/client-s3";
import { MillraceError } from "../../lib/errors.ts";
import { retry, type RetryPolicy } from "../../lib/retry.ts";
import { isRetriableS3Error, s3StatusCode } from "./s3-errors.ts";

export const MiB = 1024 * 1024;
/** S3's smallest part (all but the last). */
export const MIN_PART_SIZE = 5 * MiB;
/** S3's largest part count. */
export const MAX_PARTS = 10_000;
export const PARQUET_CONTENT_TYPE = "application/vnd.apache.parquet";
/** User metadata key holding the object's SHA-256 (hex); sent as `x-amz-meta-sha256`. */
export const SHA256_METADATA_KEY = "sha256";

export const defaultUploadRetry: RetryPolicy = { retries: 4, initialDelayMs: 200, maxDelayMs: 5_000, factor: 2 };

export interface PutObjectInput {
  bucket: string;
  key: string;
  body: Buffer;
  /** SSE-KMS under this key id (dedicated buckets). */
  kmsKeyId?: string;
  contentType?: string;
  /** Extra user metadata (x-amz-meta-*); `sha256` is set by the uploader. */
  metadata?: Readonly<Record<string, string>>;
}

export interface UploadOptions {
  /** Bodies of at least this many bytes go multipart (default 16 MiB). */
  multipartThreshold?: number;
  /** Part size (default 8 MiB; at least 5 MiB). */
  partSize?: number;
  /** Parts in flight at once (default 2). */
  concurrency?: number;
  retry?: RetryPolicy;
  signal?: AbortSignal;
  onRetry?: (err: unknown, attempt: number, operation: string) => void;
}

export type VerifiedBy = "checksum-sha256" | "checksum-sha256-composite" | "metadata-sha256";

export interface UploadResult {
  bucket: string;
  key: string;
  bytes: number;
  /** SHA-256 of the body, hex. */
  sha256: string;
  /** The checksum the server holds (base64; composite `…-N` for multipart), if it reported one. */
  serverChecksum: string | undefined;
  parts: number;
  etag: string | undefined;
  verifiedBy: VerifiedBy;
}

/** An S3 operation failed (after the retries for a transient failure). */
export class S3UploadError extends MillraceError {
  readonly bucket: string;
  readonly key: string;
  readonly operation: string;
  readonly statusCode: number | undefined;
  /** Set when the multipart upload could not be aborted either (the next attempt at the key aborts it: abortUploadsOfKey). */
  readonly strandedUploadId: string | undefined;
  constructor(
    message: string,
    ctx: { bucket: string; key: string; operation: string; retriable: boolean; statusCode?: number; strandedUploadId?: string; cause?: unknown },
  ) {
    super(message, { retriable: ctx.retriable, stage: "sink", reason: ctx.retriable ? "s3_unavailable" : "s3_upload_failed", cause: ctx.cause });
    this.bucket = ctx.bucket;
    this.key = ctx.key;
    this.operation = ctx.operation;
    this.statusCode = ctx.statusCode;
    this.strandedUploadId = ctx.strandedUploadId;
  }
}

/** The object at the key is not the one uploaded (size or checksum differ); retrying re-uploads it. */
export class UploadVerificationError extends MillraceError {
  constructor(message: string) {
    super(message, { retriable: true, stage: "sink", reason: "s3_verification_failed" });
  }
}

function describeError(err: unknown): string {
  const e = err as { name?: string; message?: string };
  const status = s3StatusCode(err);
  return `${e.name ?? "Error"}${status ? ` (HTTP ${status})` : ""}: ${e.message ?? String(err)}`;
}

export function sha256(body: Buffer): { hex: string; base64: string; raw: Buffer } {
  const raw = createHash("sha256").update(body).digest();
  return { hex: raw.toString("hex"), base64: raw.toString("base64"), raw };
}

/** S3's composite checksum of a multipart object: base64(sha256(concat(part digests)))-N. */
export function compositeSha256(partDigests: readonly Buffer[]): string {
  return `${createHash("sha256").update(Buffer.concat(partDigests)).digest("base64")}-${partDigests.length}`;
}

function checkOptions(o: UploadOptions): Required<Omit<UploadOptions, "signal" | "onRetry">> {
  const partSize = o.partSize ?? 8 * MiB;
  const multipartThreshold = o.multipartThreshold ?? 16 * MiB;
  const concurrency = o.concurrency ?? 2;
  if (!Number.isSafeInteger(partSize) || partSize < MIN_PART_SIZE) throw new RangeError(`partSize must be at least ${MIN_PART_SIZE} bytes (5 MiB), got ${partSize}`);
  if (!Number.isSafeInteger(multipartThreshold) || multipartThreshold < 1) throw new RangeError(`multipartThreshold must be a positive integer`);
  if (!Number.isSafeInteger(concurrency) || concurrency < 1) throw new RangeError(`concurrency must be a positive integer`);
  return { partSize, multipartThreshold, concurrency, retry: o.retry ?? defaultUploadRetry };
}

/**
 * Upload `body` to `bucket`/`key` and verify it (see the module comment). Resolves only when the
 * object at the key has the body's size and checksum; rejects with {@link S3UploadError} or
 * {@link UploadVerificationError} (their `retriable` says whether trying again can help).
 */
export async function putObjectVerified(s3: S3Client, input: PutObjectInput, opts: UploadOptions = {}): Promise<UploadResult> {
  const o = checkOptions(opts);
  const digest = sha256(input.body);
  const metadata = { ...input.metadata, [SHA256_METADATA_KEY]: digest.hex };
  const sse = input.kmsKeyId ? ({ ServerSideEncryption: "aws:kms", SSEKMSKeyId: input.kmsKeyId } as const) : {};
  const contentType = input.contentType ?? PARQUET_CONTENT_TYPE;
  const call = <T>(operation: string, fn: () => Promise<T>): Promise<T> =>
    retry(() => fn(), o.retry, {
      retriable: isRetriableS3Error,
      signal: opts.signal,
      onRetry: (err, attempt) => opts.onRetry?.(err, attempt, operation),
    }).catch((err: unknown) => {
      if (err instanceof MillraceError) throw err;
      throw new S3UploadError(`S3 ${operation} s3://${input.bucket}/${input.key} failed: ${describeError(err)}`, {
        bucket: input.bucket,
        key: input.key,
        operation,
        retriable: isRetriableS3Error(err),
        statusCode: s3StatusCode(err),
        cause: err,
      });
    });

  if (input.body.length < o.multipartThreshold) {
    const put = await call("PutObject", () =>
      s3.send(
        new PutObjectCommand({
          Bucket: input.bucket,
          Key: input.key,
          Body: input.body,
          ContentLength: input.body.length,
          ContentType: contentType,
          ChecksumSHA256: digest.base64,
          Metadata: metadata,
          ...sse,
        }),
        { abortSignal: opts.signal },
      ),
    );
    const verified = await verifyUploaded(s3, input.bucket, input.key, { bytes: input.body.length, sha256: digest.hex, checksum: digest.base64 }, call);
    return { bucket: input.bucket, key: input.key, bytes: input.body.length, sha256: digest.hex, parts: 1, etag: put.ETag, ...verified };
  }

  const partCount = Math.ceil(input.body.length / o.partSize);
  if (partCount > MAX_PARTS) throw new RangeError(`${input.body.length} bytes in parts of ${o.partSize} would need ${partCount} parts (S3 allows ${MAX_PARTS})`);
  const created = await call("CreateMultipartUpload", () =>
    s3.send(
      new CreateMultipartUploadCommand({
        Bucket: input.bucket,
        Key: input.key,
        ContentType: contentType,
        ChecksumAlgorithm: "SHA256",
        Metadata: metadata,
        ...sse,
      }),
      { abortSignal: opts.signal },
    ),
  );
  const uploadId = created.UploadId;
  if (!uploadId) throw new S3UploadError(`CreateMultipartUpload s3://${input.bucket}/${input.key} returned no upload id`, { bucket: input.bucket, key: input.key, operation: "CreateMultipartUpload", retriable: true });

  try {
    const parts: CompletedPart[] = new Array(partCount);
    const digests: Buffer[] = new Array(partCount);
    let next = 0;
    let failed: unknown;
    const worker = async () => {
      while (failed === undefined && next < partCount) {
        const i = next++;
        const chunk = input.body.subarray(i * o.partSize, Math.min((i + 1) * o.partSize, input.body.length));
        const d = sha256(chunk);
        digests[i] = d.raw;
        try {
          const res = await call(`UploadPart ${i + 1}/${partCount}`, () =>
            s3.send(
              new UploadPartCommand({
                Bucket: input.bucket,
                Key: input.key,
                UploadId: uploadId,
                PartNumber: i + 1,
                Body: chunk,
                ContentLength: chunk.length,
                ChecksumSHA256: d.base64,
              }),
              { abortSignal: opts.signal },
            ),
          );
          parts[i] = { PartNumber: i + 1, ETag: res.ETag, ChecksumSHA256: res.ChecksumSHA256 ?? d.base64 };
        } catch (err) {
          failed ??= err;
        }
      }
    };
    // Every worker settles before anything else happens, so no part is in flight when aborting.
    await Promise.all(Array.from({ length: Math.min(o.concurrency, partCount) }, worker));
    if (failed !== undefined) throw failed;
    const done = await call("CompleteMultipartUpload", () =>
      s3.send(
        new CompleteMultipartUploadCommand({ Bucket: input.bucket, Key: input.key, UploadId: uploadId, MultipartUpload: { Parts: parts } }),
        { abortSignal: opts.signal },
      ),
    );
    const verified = await verifyUploaded(s3, input.bucket, input.key, { bytes: input.body.length, sha256: digest.hex, checksum: compositeSha256(digests) }, call);
    return { bucket: input.bucket, key: input.key, bytes: input.body.length, sha256: digest.hex, parts: partCount, etag: done.ETag, ...verified };
  } catch (err) {
    const abortError = await abortUpload(s3, input.bucket, input.key, uploadId, o.retry);
    if (abortError === undefined) throw err;
    const e = err as MillraceError;
    throw new S3UploadError(
      `${e.message ?? String(err)}; and AbortMultipartUpload of upload ${uploadId} failed too (${describeError(abortError)}): it stays until the next attempt at this key aborts it (or millrace parquet abort-stale)`,
      { bucket: input.bucket, key: input.key, operation: "AbortMultipartUpload", retriable: e.retriable ?? false, strandedUploadId: uploadId, cause: err },
    );
  }
}

/** Abort (retried; deliberately not tied to the caller's abort signal). Resolves to the error, if it failed. */
async function abortUpload(s3: S3Client, bucket: string, key: string, uploadId: string, policy: RetryPolicy): Promise<unknown> {
  try {
    await retry(() => s3.send(new AbortMultipartUploadCommand({ Bucket: bucket, Key: key, UploadId: uploadId })), policy, {
      retriable: isRetriableS3Error,
    });
    return undefined;
  } catch (err) {
    // Already gone (completed or aborted by someone else): nothing is stranded.
    if (s3StatusCode(err) === 404 || (err as { name?: string }).name === "NoSuchUpload") return undefined;
    return err;
  }
}

async function verifyUploaded(
  s3: S3Client,
  bucket: string,
  key: string,
  want: { bytes: number; sha256: string; checksum: string },
  call: <T>(operation: string, fn: () => Promise<T>) => Promise<T>,
): Promise<{ serverChecksum: string | undefined; verifiedBy: VerifiedBy }> {
  const head = await call("HeadObject", () => s3.send(new HeadObjectCommand({ Bucket: bucket, Key: key, ChecksumMode: "ENABLED" })));
  const problems: string[] = [];
  if (head.ContentLength !== want.bytes) problems.push(`size ${String(head.ContentLength)} instead of ${want.bytes}`);
  const metaSha = head.Metadata?.[SHA256_METADATA_KEY];
  if (metaSha !== want.sha256) problems.push(`x-amz-meta-sha256 ${JSON.stringify(metaSha)} instead of ${want.sha256}`);
  const serverChecksum = head.ChecksumSHA256;
  if (serverChecksum !== undefined && serverChecksum !== want.checksum) problems.push(`server checksum ${serverChecksum} instead of ${want.checksum}`);
  if (problems.length > 0) throw new UploadVerificationError(`s3://${bucket}/${key} does not hold the uploaded object: ${problems.join("; ")}`);
  const verifiedBy: VerifiedBy = serverChecksum === undefined ? "metadata-sha256" : want.checksum.includes("-") ? "checksum-sha256-composite" : "checksum-sha256";
  return { serverChecksum, verifiedBy };
}

export interface StaleUpload {
  key: string;
  uploadId: string;
  initiated: Date | undefined;
}

/** Abort the incomplete multipart uploads under `prefix` that `select` picks (every page listed). */
async function abortIncompleteUploads(s3: S3Client, bucket: string, prefix: string, select: (u: StaleUpload) => boolean, policy: RetryPolicy): Promise<StaleUpload[]> {
  const aborted: StaleUpload[] = [];
  let keyMarker: string | undefined;
  let uploadIdMarker: string | undefined;
  for (let page = 0; page < 100_000; page++) {
    const res = await retry(
      () => s3.send(new ListMultipartUploadsCommand({ Bucket: bucket, Prefix: prefix, KeyMarker: keyMarker, UploadIdMarker: uploadIdMarker })),
      policy,
      { retriable: isRetriableS3Error },
    );
    for (const u of res.Uploads ?? []) {
      if (!u.Key || !u.UploadId) continue;
      const upload = { key: u.Key, uploadId: u.UploadId, initiated: u.Initiated };
      if (!select(upload)) continue;
      const err = await abortUpload(s3, bucket, u.Key, u.UploadId, policy);
      if (err !== undefined) throw new S3UploadError(`AbortMultipartUpload s3://${bucket}/${u.Key} (${u.UploadId}) failed: ${describeError(err)}`, { bucket, key: u.Key, operation: "AbortMultipartUpload", retriable: isRetriableS3Error(err), statusCode: s3StatusCode(err), strandedUploadId: u.UploadId, cause: err });
      aborted.push(upload);
    }
    if (!res.IsTruncated) break;
    keyMarker = res.NextKeyMarker;
    uploadIdMarker = res.NextUploadIdMarker;
    if (keyMarker === undefined && uploadIdMarker === undefined) break;
  }
  return aborted;
}

/**
 * Abort the incomplete multipart uploads under `prefix` started more than `olderThanMs` ago (default
 * 15 minutes, so a live worker's upload in progress is left alone; 0 aborts all). An operator's
 * clean-up, `millrace parquet abort-stale` (the worker does not call it). Returns what it aborted.
 */
export async function abortStaleUploads(
  s3: S3Client,
  bucket: string,
  prefix: string,
  opts: { olderThanMs?: number; nowMs?: number; retry?: RetryPolicy } = {},
): Promise<StaleUpload[]> {
  const cutoff = (opts.nowMs ?? Date.now()) - (opts.olderThanMs ?? 15 * 60_000);
  return await abortIncompleteUploads(s3, bucket, prefix, (u) => opts.olderThanMs === 0 || u.initiated === undefined || u.initiated.getTime() <= cutoff, opts.retry ?? defaultUploadRetry);
}

/**
 * Abort every incomplete multipart upload of exactly `key`, whatever its age: the leftovers of an
 * earlier attempt at the same file (a worker killed between CreateMultipartUpload and
 * CompleteMultipartUpload, or an attempt whose abort failed). Called before a file whose range was
 * planned earlier is uploaded again, so a crash mid multipart upload leaves nothing behind once the
 * file is rebuilt. An upload of the same key still in progress elsewhere (a zombie of the same
 * range) fails to complete and is retried; its bytes are the same. Returns the upload ids aborted.
 */
export async function abortUploadsOfKey(s3: S3Client, bucket: string, key: string, policy: RetryPolicy = defaultUploadRetry): Promise<string[]> {
  return (await abortIncompleteUploads(s3, bucket, key, (u) => u.key === key, policy)).map((u) => u.uploadId);
}
