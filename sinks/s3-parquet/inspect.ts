/**
 * Reading a Parquet object's footer from S3 without downloading it: HeadObject for the size and
 * metadata, then a ranged GET of the file's tail (64 KiB, more if the footer is larger).
 */
import { GetObjectCommand, HeadObjectCommand, type S3Client } from "@aws-sdk/client-s3";
import { parquetFooterLength, readParquetFooter, type ParquetFooter } from "./footer.ts";
import { SHA256_METADATA_KEY } from "./uploader.ts";

export interface ObjectFooter {
  bucket: string;
  key: string;
  size: number;
  /** x-amz-meta-sha256 as stored with the object. */
  metadataSha256: string | undefined;
  lastModified: Date | undefined;
  footer: ParquetFooter;
}

const TAIL = 64 * 1024;

async function getRange(s3: S3Client, bucket: string, key: string, start: number, end: number): Promise<Buffer> {
  const res = await s3.send(new GetObjectCommand({ Bucket: bucket, Key: key, Range: `bytes=${start}-${end}` }));
  return Buffer.from(await res.Body!.transformToByteArray());
}

export async function readObjectFooter(s3: S3Client, bucket: string, key: string): Promise<ObjectFooter> {
  const head = await s3.send(new HeadObjectCommand({ Bucket: bucket, Key: key })).catch((err: unknown) => {
    // A 404 to HEAD has no body, so the SDK's own message is just "UnknownError".
    const status = (err as { $metadata?: { httpStatusCode?: number } }).$metadata?.httpStatusCode;
    if (status === 404 || (err as Error).name === "NotFound" || (err as Error).name === "NoSuchBucket") {
      throw new Error(`no object s3://${bucket}/${key} (wrong key or bucket? list a tenant's files with: ./millrace parquet ls --tenant <id>)`, { cause: err });
    }
    if (status === 403) throw new Error(`access to s3://${bucket}/${key} is denied (HTTP 403): check the S3 credentials`, { cause: err });
    throw err;
  });
  const size = head.ContentLength ?? 0;
  if (size < 12) throw new Error(`s3://${bucket}/${key} has ${size} bytes: not a Parquet file`);
  let tail = await getRange(s3, bucket, key, Math.max(0, size - TAIL), size - 1);
  const need = parquetFooterLength(tail.subarray(-8)) + 8;
  if (need > tail.length) {
    if (need > size - 4) throw new Error(`s3://${bucket}/${key}: footer length ${need - 8} does not fit in ${size} bytes`);
    tail = await getRange(s3, bucket, key, size - need, size - 1);
  }
  return { bucket, key, size, metadataSha256: head.Metadata?.[SHA256_METADATA_KEY], lastModified: head.LastModified, footer: readParquetFooter(tail) };
}
