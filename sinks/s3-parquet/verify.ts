/**
 * Verifying a tenant's Parquet files against the manifest (what `millrace parquet verify` runs):
 *  - every uploaded entry's object exists in the tenant's place, under the key its boundaries give,
 *    with the recorded size, SHA-256 (of the downloaded bytes, and the x-amz-meta-sha256 stored with
 *    it), row count and time range (from the Parquet footer);
 *  - per (topic, partition) the entries' offset ranges follow each other with no gap or overlap;
 *  - no object under the tenant's prefix is unknown to the manifest (a reader of the prefix would
 *    count its rows too), and a dedicated tenant has nothing under its prefix in the shared bucket;
 *  - the sink offset is not behind the last uploaded file.
 * Planned entries (an upload in progress, or waiting to be rebuilt after a crash) are reported as
 * notes, not problems.
 */
import { createHash } from "node:crypto";
import { GetObjectCommand, ListObjectsV2Command, type S3Client } from "@aws-sdk/client-s3";
import type pg from "pg";
import { readParquetFooter } from "./footer.ts";
import { parseParquetObjectKey } from "./keys.ts";
import { describeLocation, loadTenantStorage, resolveParquetLocation, type Env, type ParquetLocation, type ParquetStorageConfig, type S3ClientCache } from "./location.ts";
import { listFiles, PARQUET_SINK, sinkOffset, type ManifestEntry } from "./manifest.ts";
import { readObjectFooter } from "./inspect.ts";
import { s3StatusCode } from "./s3-errors.ts";

export type ProblemKind = "missing" | "size" | "checksum" | "rows" | "time" | "key" | "place" | "gap" | "overlap" | "orphan" | "offset" | "unreadable";

export interface VerifyProblem {
  kind: ProblemKind;
  message: string;
  key?: string;
}

export interface VerifyReport {
  tenantId: string;
  location: string;
  files: number;
  uploaded: number;
  planned: number;
  rows: number;
  bytes: number;
  problems: VerifyProblem[];
  notes: string[];
}

/** Gaps and overlaps between consecutive entries of each (topic, partition) (pure). */
export function rangeProblems(entries: readonly ManifestEntry[]): VerifyProblem[] {
  const byPartition = new Map<string, ManifestEntry[]>();
  for (const e of entries) {
    const k = `${e.topic}[${e.partition}]`;
    let list = byPartition.get(k);
    if (!list) byPartition.set(k, (list = []));
    list.push(e);
  }
  const problems: VerifyProblem[] = [];
  for (const [k, list] of [...byPartition].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))) {
    list.sort((a, b) => a.firstOffset - b.firstOffset);
    for (let i = 1; i < list.length; i++) {
      const prev = list[i - 1]!;
      const cur = list[i]!;
      if (cur.firstOffset > prev.lastOffset + 1) {
        problems.push({ kind: "gap", key: cur.objectKey, message: `${k}: offsets ${prev.lastOffset + 1}-${cur.firstOffset - 1} are in no file (between ${prev.firstOffset}-${prev.lastOffset} and ${cur.firstOffset}-${cur.lastOffset})` });
      } else if (cur.firstOffset <= prev.lastOffset) {
        problems.push({ kind: "overlap", key: cur.objectKey, message: `${k}: offsets ${cur.firstOffset}-${Math.min(prev.lastOffset, cur.lastOffset)} are in two files (${prev.firstOffset}-${prev.lastOffset} and ${cur.firstOffset}-${cur.lastOffset})` });
      }
    }
  }
  return problems;
}

async function listKeys(s3: S3Client, bucket: string, prefix: string): Promise<Map<string, number>> {
  const out = new Map<string, number>();
  let token: string | undefined;
  do {
    const page = await s3.send(new ListObjectsV2Command({ Bucket: bucket, Prefix: prefix, ContinuationToken: token }));
    for (const o of page.Contents ?? []) if (o.Key) out.set(o.Key, o.Size ?? 0);
    token = page.IsTruncated ? page.NextContinuationToken : undefined;
  } while (token);
  return out;
}

export interface VerifyOptions {
  /** The control plane (tenants). */
  pool: pg.Pool;
  /** The tenant's store (its manifest and sink offsets); default `pool` (a shared-database tenant). */
  store?: pg.Pool;
  cache: S3ClientCache;
  config: ParquetStorageConfig;
  env: Env;
  tenantId: string;
  /** Download every object and hash it (default true); false checks size, metadata and footer only. */
  download?: boolean;
  sink?: string;
}

export async function verifyTenant(o: VerifyOptions): Promise<VerifyReport> {
  const storage = await loadTenantStorage(o.pool, o.tenantId);
  if (!storage) throw new Error(`tenant ${o.tenantId} is not in the tenants table`);
  const loc: ParquetLocation = resolveParquetLocation(storage, o.config, o.env);
  const s3 = o.cache.clientForLocation(loc);
  const entries = await listFiles(o.store ?? o.pool, { tenantId: o.tenantId });
  const problems: VerifyProblem[] = [];
  const notes: string[] = [];
  const report: VerifyReport = { tenantId: o.tenantId, location: describeLocation(loc), files: entries.length, uploaded: 0, planned: 0, rows: 0, bytes: 0, problems, notes };

  for (const e of entries) {
    const parsed = parseParquetObjectKey(e.objectKey);
    const where = `s3://${e.bucket}/${e.objectKey}`;
    if (e.bucket !== loc.bucket || !e.objectKey.startsWith(loc.tenantPrefix)) {
      problems.push({ kind: "place", key: e.objectKey, message: `${where} is not in the tenant's place (s3://${loc.bucket}/${loc.tenantPrefix})` });
    }
    if (!parsed || parsed.tenantId !== e.tenantId || parsed.topic !== e.topic || parsed.partition !== e.partition || parsed.firstOffset !== e.firstOffset || parsed.lastOffset !== e.lastOffset) {
      problems.push({ kind: "key", key: e.objectKey, message: `${where}: the key does not name the entry's tenant, topic, partition and offsets ${e.topic}[${e.partition}] ${e.firstOffset}-${e.lastOffset}` });
    }
    if (e.status === "planned") {
      report.planned++;
      notes.push(`${e.topic}[${e.partition}] ${e.firstOffset}-${e.lastOffset} is planned, not uploaded yet (an upload in progress, or to be rebuilt by the worker)`);
      continue;
    }
    report.uploaded++;
    report.rows += e.rowCount;
    report.bytes += e.byteSize ?? 0;
    try {
      let rows: number;
      let minTime: number | undefined;
      let maxTime: number | undefined;
      if (o.download !== false) {
        const res = await s3.send(new GetObjectCommand({ Bucket: e.bucket, Key: e.objectKey }));
        const body = Buffer.from(await res.Body!.transformToByteArray());
        if (body.length !== e.byteSize) problems.push({ kind: "size", key: e.objectKey, message: `${where}: ${body.length} bytes, the manifest says ${e.byteSize}` });
        const hex = createHash("sha256").update(body).digest("hex");
        if (hex !== e.sha256) problems.push({ kind: "checksum", key: e.objectKey, message: `${where}: SHA-256 ${hex}, the manifest says ${e.sha256}` });
        const meta = res.Metadata?.sha256;
        if (meta !== e.sha256) problems.push({ kind: "checksum", key: e.objectKey, message: `${where}: x-amz-meta-sha256 ${String(meta)}, the manifest says ${e.sha256}` });
        const footer = readParquetFooter(body);
        ({ rows, minTime, maxTime } = footer);
      } else {
        const f = await readObjectFooter(s3, e.bucket, e.objectKey);
        if (f.size !== e.byteSize) problems.push({ kind: "size", key: e.objectKey, message: `${where}: ${f.size} bytes, the manifest says ${e.byteSize}` });
        if (f.metadataSha256 !== e.sha256) problems.push({ kind: "checksum", key: e.objectKey, message: `${where}: x-amz-meta-sha256 ${String(f.metadataSha256)}, the manifest says ${e.sha256}` });
        ({ rows, minTime, maxTime } = f.footer);
      }
      if (rows !== e.rowCount) problems.push({ kind: "rows", key: e.objectKey, message: `${where}: ${rows} rows, the manifest says ${e.rowCount}` });
      if (minTime !== e.minTime || maxTime !== e.maxTime) {
        const iso = (t: number | undefined) => (t === undefined ? "?" : new Date(t).toISOString());
        problems.push({ kind: "time", key: e.objectKey, message: `${where}: time ${iso(minTime)}..${iso(maxTime)}, the manifest says ${iso(e.minTime)}..${iso(e.maxTime)}` });
      }
    } catch (err) {
      const status = s3StatusCode(err);
      if (status === 404 || (err as { name?: string }).name === "NoSuchKey" || (err as { name?: string }).name === "NotFound") {
        problems.push({ kind: "missing", key: e.objectKey, message: `${where} does not exist` });
      } else {
        problems.push({ kind: "unreadable", key: e.objectKey, message: `${where}: ${(err as Error).message ?? String(err)}` });
      }
    }
  }

  problems.push(...rangeProblems(entries));

  const known = new Set(entries.filter((e) => e.bucket === loc.bucket).map((e) => e.objectKey));
  for (const key of (await listKeys(s3, loc.bucket, loc.tenantPrefix)).keys()) {
    if (!known.has(key)) problems.push({ kind: "orphan", key, message: `s3://${loc.bucket}/${key} is under the tenant's prefix but not in the manifest (readers of the prefix would count its rows)` });
  }
  if (loc.mode === "dedicated") {
    const shared = o.cache.clientFor(o.config.platform, o.config.sharedBucket);
    const prefix = `${o.config.keyPrefix}${o.tenantId}/`;
    const stray = await listKeys(shared, o.config.sharedBucket, prefix).catch((err: unknown) => {
      if (s3StatusCode(err) === 404) return new Map<string, number>();
      throw err;
    });
    for (const key of stray.keys()) problems.push({ kind: "place", key, message: `s3://${o.config.sharedBucket}/${key}: a dedicated tenant's object in the shared bucket` });
  }

  const lastUploaded = new Map<string, ManifestEntry>();
  for (const e of entries) {
    if (e.status !== "uploaded") continue;
    const k = JSON.stringify([e.consumerGroup, e.topic, e.partition]);
    const cur = lastUploaded.get(k);
    if (!cur || e.lastOffset > cur.lastOffset) lastUploaded.set(k, e);
  }
  for (const e of lastUploaded.values()) {
    const next = await sinkOffset(o.store ?? o.pool, o.sink ?? PARQUET_SINK, e.consumerGroup, e.topic, e.partition);
    if (next === undefined || next < e.lastOffset + 1) {
      problems.push({ kind: "offset", key: e.objectKey, message: `${e.topic}[${e.partition}] (group ${e.consumerGroup}): sink offset ${String(next)} is behind the last uploaded file's end ${e.lastOffset}` });
    }
  }
  return report;
}
