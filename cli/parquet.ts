/**
 * `millrace parquet ls|inspect|verify|abort-stale`: a tenant's Parquet files on S3, for operators and analysts.
 *   ls           the manifest's files: status, partition, offsets, rows, time range, size, key
 *   inspect      one object's footer: schema, row groups, rows, time range, writer, size, checksum
 *   verify       every file against the manifest and S3 (see sinks/s3-parquet/verify.ts); exit 1 on any problem
 *   abort-stale  abort the incomplete multipart uploads under the tenant's prefix older than a duration
 * Settings: MILLRACE_PG_URL (or MILLRACE_PG_ADMIN_URL, acting as millrace_writer) and MILLRACE_S3_*.
 */
import { InvalidArgumentError, Option, type Command } from "commander";
import type pg from "pg";
import { loadStackEnv, optionalEnv, requireEnv } from "../lib/env.ts";
import { formatDuration, parseDuration } from "../pipelines/topology/units.ts";
import {
  abortStaleUploads,
  describeLocation,
  listFiles,
  loadTenantStorage,
  parquetStorageConfig,
  parseParquetObjectKey,
  readObjectFooter,
  resolveParquetLocation,
  S3ClientCache,
  TENANT_ID,
  verifyTenant,
  type ManifestEntry,
  type ObjectFooter,
} from "../sinks/s3-parquet/index.ts";
import { createPool } from "../sinks/timescale/pool.ts";
import { TenantDatabases } from "../tenants/database.ts";

function tenantId(raw: string): string {
  const t = raw.trim().toLowerCase();
  if (!TENANT_ID.test(t)) throw new InvalidArgumentError(`not a tenant id (UUID): ${raw}`);
  return t;
}

interface Context {
  /** The shared database (tenants). */
  pool: pg.Pool;
  /** Each tenant's store (the manifest): the shared database or its dedicated one. */
  stores: TenantDatabases;
  cache: S3ClientCache;
  config: ReturnType<typeof parquetStorageConfig>;
  env: NodeJS.ProcessEnv;
  close(): Promise<void>;
}

function context(): Context {
  loadStackEnv();
  const url = optionalEnv("MILLRACE_PG_URL") ?? requireEnv("MILLRACE_PG_ADMIN_URL");
  const role = optionalEnv("MILLRACE_PG_ROLE") ?? (optionalEnv("MILLRACE_PG_URL") ? undefined : "millrace_writer");
  const pool = createPool({ connectionString: url, role, max: 2, applicationName: "millrace-parquet" });
  const stores = new TenantDatabases(pool, { sharedUrl: url, pool: { role, max: 2, applicationName: "millrace-parquet" } });
  const cache = new S3ClientCache(process.env, { maxAttempts: 3 });
  return {
    pool,
    stores,
    cache,
    config: parquetStorageConfig(process.env),
    env: process.env,
    async close() {
      cache.destroy();
      await stores.end();
      await pool.end();
    },
  };
}

const iso = (t: number | undefined) => (t === undefined ? "-" : new Date(t).toISOString());

function humanBytes(n: number | null): string {
  if (n === null) return "-";
  if (n < 1024) return `${n} B`;
  if (n < 1024 * 1024) return `${(n / 1024).toFixed(1)} KiB`;
  return `${(n / 1024 / 1024).toFixed(1)} MiB`;
}

function table(rows: string[][]): string {
  const widths = rows[0]!.map((_, i) => Math.max(...rows.map((r) => r[i]!.length)));
  return rows.map((r) => r.map((c, i) => (i === r.length - 1 ? c : c.padEnd(widths[i]!))).join("  ")).join("\n");
}

function printFooter(f: ObjectFooter): void {
  const out = process.stdout;
  out.write(`object      s3://${f.bucket}/${f.key}\n`);
  out.write(`size        ${f.size} bytes (${humanBytes(f.size)})\n`);
  out.write(`sha256      ${f.metadataSha256 ?? "-"} (x-amz-meta-sha256)\n`);
  out.write(`written by  ${f.footer.createdBy}\n`);
  for (const [k, v] of Object.entries(f.footer.keyValue)) out.write(`metadata    ${k} = ${v}\n`);
  out.write(`rows        ${f.footer.rows}\n`);
  out.write(`time        ${iso(f.footer.minTime)} .. ${iso(f.footer.maxTime)}\n`);
  out.write(`\nschema\n${table([["column", "physical", "logical", "repetition"], ...f.footer.columns.map((c) => [c.name, c.physicalType, c.logicalType || c.convertedType || "-", c.repetition])]).replace(/^/gm, "  ")}\n`);
  out.write(`\nrow groups (${f.footer.rowGroups.length})\n`);
  out.write(`${table([["#", "rows", "compressed", "codec"], ...f.footer.rowGroups.map((g, i) => [String(i), String(g.rows), humanBytes(g.compressedBytes), g.codecs.join(",")])]).replace(/^/gm, "  ")}\n`);
}

/** abort-stale's --older-than default: a worker's upload in progress is much younger. */
const ABORT_STALE_OLDER_THAN_MS = 15 * 60_000;

export function registerParquetCommands(program: Command): void {
  const cmd = program.command("parquet").description("a tenant's Parquet files on S3: list, inspect, verify against the manifest (docs/parquet.md)");

  cmd
    .command("ls")
    .description("list a tenant's files from the manifest: rows, time range, size")
    .requiredOption("--tenant <uuid>", "tenant id", tenantId)
    .option("--json", "one JSON object per file")
    .action(async (opts: { tenant: string; json?: boolean }) => {
      const ctx = context();
      try {
        const storage = await loadTenantStorage(ctx.pool, opts.tenant);
        if (!storage) throw new Error(`tenant ${opts.tenant} is not in the tenants table`);
        const loc = resolveParquetLocation(storage, ctx.config, ctx.env);
        const files = await listFiles(await ctx.stores.poolOfTenant(opts.tenant), { tenantId: opts.tenant });
        if (opts.json) {
          for (const f of files) process.stdout.write(`${JSON.stringify({ ...f, minTime: iso(f.minTime), maxTime: iso(f.maxTime) })}\n`);
          return;
        }
        process.stdout.write(`${describeLocation(loc)}\n`);
        if (files.length === 0) {
          process.stdout.write("no files\n");
          return;
        }
        const rows = files.map((f: ManifestEntry) => [f.status, `${f.partition}`, `${f.firstOffset}-${f.lastOffset}`, String(f.rowCount), iso(f.minTime), iso(f.maxTime), humanBytes(f.byteSize), f.objectKey]);
        process.stdout.write(`${table([["status", "part", "offsets", "rows", "min time", "max time", "size", "key"], ...rows])}\n`);
        const up = files.filter((f) => f.status === "uploaded");
        process.stdout.write(
          `\n${files.length} files (${up.length} uploaded, ${files.length - up.length} planned), ${up.reduce((s, f) => s + f.rowCount, 0)} rows, ${humanBytes(up.reduce((s, f) => s + (f.byteSize ?? 0), 0))}\n`,
        );
      } finally {
        await ctx.close();
      }
    });

  cmd
    .command("inspect")
    .description("show one file's schema, row groups, row count and time range (reads only the footer)")
    .argument("[key]", "object key (its tenant's bucket is looked up; or give --bucket)")
    .option("--tenant <uuid>", "with --file: the tenant whose file to inspect", tenantId)
    .option("--file <name>", "with --tenant: the file name (last key segment) or offsets first-last")
    .option("--bucket <bucket>", "bucket of the key (default: the key's tenant's bucket)")
    .option("--json", "print JSON")
    .action(async (key: string | undefined, opts: { tenant?: string; file?: string; bucket?: string; json?: boolean }) => {
      const ctx = context();
      try {
        let bucket = opts.bucket;
        let tenant = opts.tenant;
        if (!key) {
          if (!opts.tenant || !opts.file) throw new InvalidArgumentError("give an object key, or --tenant and --file");
          const file = opts.file;
          const m = /^(\d+)-(\d+)$/.exec(file);
          const matches = (await listFiles(await ctx.stores.poolOfTenant(opts.tenant), { tenantId: opts.tenant })).filter((f) =>
            m ? f.firstOffset === Number(m[1]) && f.lastOffset === Number(m[2]) : f.objectKey === file || f.objectKey.endsWith(`/${file}`),
          );
          if (matches.length !== 1) throw new Error(`${matches.length === 0 ? "no file" : `${matches.length} files`} of tenant ${opts.tenant} match ${JSON.stringify(file)}`);
          key = matches[0]!.objectKey;
          bucket ??= matches[0]!.bucket;
        }
        tenant ??= parseParquetObjectKey(key)?.tenantId;
        if (!tenant && !bucket) throw new Error(`${key} is not a millrace Parquet key; give --bucket`);
        let client = ctx.cache.clientFor(ctx.config.platform, bucket);
        if (tenant) {
          const storage = await loadTenantStorage(ctx.pool, tenant);
          if (storage) {
            const loc = resolveParquetLocation(storage, ctx.config, ctx.env);
            bucket ??= loc.bucket;
            client = ctx.cache.clientForLocation(loc);
          }
        }
        if (!bucket) throw new Error(`tenant ${tenant} is unknown; give --bucket`);
        const f = await readObjectFooter(client, bucket, key);
        if (opts.json) process.stdout.write(`${JSON.stringify({ ...f, footer: { ...f.footer, minTime: iso(f.footer.minTime), maxTime: iso(f.footer.maxTime) } }, null, 2)}\n`);
        else printFooter(f);
      } finally {
        await ctx.close();
      }
    });

  cmd
    .command("abort-stale")
    .description("abort the incomplete multipart uploads under a tenant's prefix started more than --older-than ago (a worker's upload in progress is younger)")
    .requiredOption("--tenant <uuid>", "tenant id", tenantId)
    .addOption(
      new Option("--older-than <duration>", "only uploads started longer ago than this (0s: all)")
        .argParser((raw: string) => {
          const d = parseDuration(raw);
          if (!d.ok) throw new InvalidArgumentError(d.message);
          return d.value;
        })
        // Shown in --help as 15m, not 900000.
        .default(ABORT_STALE_OLDER_THAN_MS, formatDuration(ABORT_STALE_OLDER_THAN_MS)),
    )
    .action(async (opts: { tenant: string; olderThan: number }) => {
      const ctx = context();
      try {
        const storage = await loadTenantStorage(ctx.pool, opts.tenant);
        if (!storage) throw new Error(`tenant ${opts.tenant} is not in the tenants table`);
        const loc = resolveParquetLocation(storage, ctx.config, ctx.env);
        const aborted = await abortStaleUploads(ctx.cache.clientForLocation(loc), loc.bucket, loc.tenantPrefix, { olderThanMs: opts.olderThan });
        for (const u of aborted) process.stdout.write(`aborted s3://${loc.bucket}/${u.key} upload ${u.uploadId} (started ${u.initiated?.toISOString() ?? "?"})\n`);
        process.stdout.write(`${aborted.length} incomplete upload${aborted.length === 1 ? "" : "s"} older than ${formatDuration(opts.olderThan)} aborted under s3://${loc.bucket}/${loc.tenantPrefix}\n`);
      } finally {
        await ctx.close();
      }
    });

  cmd
    .command("verify")
    .description("check every file of a tenant: object exists with the manifest's size, SHA-256, rows and time range; no gaps, overlaps or unknown objects; exit 1 on any problem")
    .requiredOption("--tenant <uuid>", "tenant id", tenantId)
    .option("--no-download", "check size, stored checksum and footer only (no full download and hash)")
    .option("--json", "print the report as JSON")
    .action(async (opts: { tenant: string; download: boolean; json?: boolean }) => {
      const ctx = context();
      try {
        const report = await verifyTenant({ pool: ctx.pool, store: await ctx.stores.poolOfTenant(opts.tenant), cache: ctx.cache, config: ctx.config, env: ctx.env, tenantId: opts.tenant, download: opts.download });
        if (opts.json) process.stdout.write(`${JSON.stringify(report, null, 2)}\n`);
        else {
          process.stdout.write(`${report.location}\n`);
          process.stdout.write(`${report.files} files: ${report.uploaded} uploaded (${report.rows} rows, ${humanBytes(report.bytes)}), ${report.planned} planned\n`);
          for (const n of report.notes) process.stdout.write(`note: ${n}\n`);
          for (const p of report.problems) process.stdout.write(`problem (${p.kind}): ${p.message}\n`);
          process.stdout.write(report.problems.length === 0 ? "ok: no problems\n" : `${report.problems.length} problem${report.problems.length === 1 ? "" : "s"}\n`);
        }
        if (report.problems.length > 0) process.exitCode = 1;
      } finally {
        await ctx.close();
      }
    });
}
