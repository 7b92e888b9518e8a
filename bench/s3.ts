/** The benchmark's own S3 bucket on the local stack (the Parquet sink's output), made and removed per run. */
import { CreateBucketCommand, DeleteBucketCommand, DeleteObjectsCommand, ListObjectsV2Command, S3Client } from "@aws-sdk/client-s3";
import { requireEnv } from "../lib/env.ts";

export function benchS3(): S3Client {
  return new S3Client({
    endpoint: requireEnv("MILLRACE_S3_ENDPOINT"),
    region: process.env.MILLRACE_S3_REGION || "us-east-1",
    forcePathStyle: true,
    credentials: { accessKeyId: requireEnv("MILLRACE_S3_ACCESS_KEY_ID"), secretAccessKey: requireEnv("MILLRACE_S3_SECRET_ACCESS_KEY") },
  });
}

export async function createBucket(s3: S3Client, bucket: string): Promise<void> {
  await s3.send(new CreateBucketCommand({ Bucket: bucket }));
}

/** Objects (count, bytes) under `prefix`. */
export async function listObjects(s3: S3Client, bucket: string, prefix = ""): Promise<{ keys: string[]; bytes: number; lastModified: Date[] }> {
  const keys: string[] = [];
  const lastModified: Date[] = [];
  let bytes = 0;
  let token: string | undefined;
  do {
    const r = await s3.send(new ListObjectsV2Command({ Bucket: bucket, Prefix: prefix, ContinuationToken: token }));
    for (const o of r.Contents ?? []) {
      if (o.Key) keys.push(o.Key);
      if (o.LastModified) lastModified.push(o.LastModified);
      bytes += o.Size ?? 0;
    }
    token = r.IsTruncated ? r.NextContinuationToken : undefined;
  } while (token);
  return { keys, bytes, lastModified };
}

export async function deleteObjects(s3: S3Client, bucket: string, keys: string[]): Promise<void> {
  for (let i = 0; i < keys.length; i += 1000) {
    await s3.send(new DeleteObjectsCommand({ Bucket: bucket, Delete: { Objects: keys.slice(i, i + 1000).map((Key) => ({ Key })), Quiet: true } }));
  }
}

export async function removeBucket(s3: S3Client, bucket: string): Promise<void> {
  const { keys } = await listObjects(s3, bucket);
  await deleteObjects(s3, bucket, keys);
  await s3.send(new DeleteBucketCommand({ Bucket: bucket }));
}
