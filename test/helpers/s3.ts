/** An S3 client for the local stack's S3 server (path-style), from the settings the stack prints. */
import { S3Client } from "@aws-sdk/client-s3";
import { requireEnv } from "../../lib/env.ts";

export function stackS3Client(): S3Client {
  return new S3Client({
    endpoint: requireEnv("MILLRACE_S3_ENDPOINT"),
    region: process.env.MILLRACE_S3_REGION ?? "us-east-1",
    credentials: { accessKeyId: requireEnv("MILLRACE_S3_ACCESS_KEY_ID"), secretAccessKey: requireEnv("MILLRACE_S3_SECRET_ACCESS_KEY") },
    forcePathStyle: true,
  });
}
