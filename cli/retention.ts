/**
 * `millrace retention run [--dry-run] [--every 1h] [--tenant <uuid>…]`: remove data older than each
 * tenant's retention (tenants/retention.ts, docs/tenancy.md). With --every it runs a pass, waits,
 * and repeats until SIGTERM/SIGINT (a pass in progress finishes first).
 * Settings: MILLRACE_PG_ADMIN_URL (or MILLRACE_PG_URL), MILLRACE_S3_*.
 */
import { InvalidArgumentError, type Command } from "commander";
import pg from "pg";
import { loadStackEnv, optionalEnv, requireEnv } from "../lib/env.ts";
import { parquetStorageConfig, S3ClientCache } from "../sinks/s3-parquet/location.ts";
import { parseTenantId } from "../tenants/lifecycle.ts";
import { formatRetentionSummary, runRetention, type RetentionContext } from "../tenants/retention.ts";

/** "90s", "15m", "1h", "1d" → ms. */
export function parseInterval(v: string): number {
  const m = /^(\d+)(s|m|h|d)$/.exec(v.trim());
  if (!m) throw new InvalidArgumentError("an interval like 30s, 15m, 1h or 1d");
  const ms = Number(m[1]) * { s: 1_000, m: 60_000, h: 3_600_000, d: 86_400_000 }[m[2] as "s" | "m" | "h" | "d"];
  if (ms < 1_000) throw new InvalidArgumentError("at least 1s");
  return ms;
}

function tenantIds(v: string, prev: string[] = []): string[] {
  try {
    return [...prev, parseTenantId(v)];
  } catch (err) {
    throw new InvalidArgumentError((err as Error).message);
  }
}

export function registerRetentionCommands(program: Command): void {
  const cmd = program.command("retention").description("per-tenant data retention (docs/tenancy.md)");
  cmd
    .command("run")
    .description("delete each tenant's rows and Parquet objects older than its retention_policy_days (unlimited: untouched)")
    .option("--dry-run", "count what would be removed, remove nothing")
    .option("--every <interval>", "scheduled mode: a pass every interval (e.g. 1h) until SIGTERM", parseInterval)
    .option("--tenant <uuid>", "only this tenant (repeatable)", tenantIds)
    .option("--quiet", "only the summary")
    .action(async (o: { dryRun?: boolean; every?: number; tenant?: string[]; quiet?: boolean }) => {
      loadStackEnv();
      const url = optionalEnv("MILLRACE_PG_ADMIN_URL") ?? requireEnv("MILLRACE_PG_URL");
      const db = new pg.Pool({ connectionString: url, max: 2, application_name: "millrace-retention", options: "-c TimeZone=UTC" });
      const s3 = new S3ClientCache(process.env, { maxAttempts: 3 });
      const ctx: RetentionContext = {
        db,
        s3,
        storageConfig: parquetStorageConfig(process.env),
        env: process.env,
        progress: o.quiet ? undefined : (l) => process.stderr.write(`${l}\n`),
        adminUrl: optionalEnv("MILLRACE_PG_ADMIN_URL"),
      };
      if (o.tenant && o.tenant.length > 0) {
        const known = await db.query<{ tenant_id: string }>("SELECT tenant_id FROM tenants WHERE tenant_id = ANY($1::uuid[])", [o.tenant]);
        const missing = o.tenant.filter((t) => !known.rows.some((r) => r.tenant_id === t));
        if (missing.length > 0) {
          await db.end();
          s3.destroy();
          throw new Error(`tenant ${missing.join(", ")} does not exist (./millrace tenants list)`);
        }
      }
      const pass = async () => {
        const s = await runRetention(ctx, { dryRun: o.dryRun, tenantIds: o.tenant });
        process.stdout.write(`${formatRetentionSummary(s)}\n`);
        return s.tenants.some((t) => t.problems.length > 0);
      };
      try {
        if (o.every === undefined) {
          if (await pass()) process.exitCode = 1;
          return;
        }
        const every = o.every;
        let stop: () => void = () => {};
        const stopped = new Promise<void>((r) => (stop = r));
        let stopping = false;
        const onSignal = (sig: string) => {
          if (stopping) return;
          stopping = true;
          process.stderr.write(`retention: ${sig}, stopping after the current pass\n`);
          stop();
        };
        process.on("SIGTERM", () => onSignal("SIGTERM"));
        process.on("SIGINT", () => onSignal("SIGINT"));
        while (!stopping) {
          try {
            await pass();
          } catch (err) {
            process.stderr.write(`retention pass failed: ${(err as Error).message}\n`);
          }
          if (stopping) break;
          let timer: NodeJS.Timeout | undefined;
          await Promise.race([stopped, new Promise<void>((r) => (timer = setTimeout(r, every)))]);
          clearTimeout(timer);
        }
      } finally {
        s3.destroy();
        await db.end();
      }
    });
}
