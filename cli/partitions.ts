/**
 * `millrace partitions maintain`: the time-partition maintenance step (migrations/partitions.ts) on
 * the shared database and every tenant's dedicated database — for ops and cron; `millrace migrate`
 * and every worker (on a timer) run the same step.
 */
import type { Command } from "commander";
import { InvalidArgumentError } from "commander";
import pg from "pg";
import { requireEnv } from "../lib/env.ts";
import { DEFAULT_AHEAD_DAYS, DEFAULT_BEHIND_DAYS, maintainPartitionsOn } from "../migrations/partitions.ts";
import { eachDedicatedDatabase } from "../tenants/database.ts";

function wholeDays(raw: string): number {
  const n = Number(raw);
  if (!/^\d+$/.test(raw) || n > 3650) throw new InvalidArgumentError("a whole number of days, 0 to 3650");
  return n;
}

async function maintainAt(url: string, opts: { behindDays: number; aheadDays: number }): Promise<string[]> {
  const client = new pg.Client({ connectionString: url, application_name: "millrace-partitions" });
  await client.connect();
  try {
    return await maintainPartitionsOn(client, opts);
  } finally {
    await client.end();
  }
}

export function registerPartitionCommands(program: Command): void {
  const partitions = program.command("partitions").description("sensor_data_raw's daily time partitions (vanilla PostgreSQL; docs/data-model.md)");
  partitions
    .command("maintain")
    .description("create the missing daily partitions from --behind days ago to --ahead days ahead, on the shared database and every dedicated database (safe to repeat and to run concurrently)")
    .option("--url <url>", "admin connection string of the shared database (default: $MILLRACE_PG_ADMIN_URL)")
    .option("--shared-only", "only the shared database")
    .option("--behind <days>", "days behind now", wholeDays, DEFAULT_BEHIND_DAYS)
    .option("--ahead <days>", "days ahead of now", wholeDays, DEFAULT_AHEAD_DAYS)
    .action(async (opts: { url?: string; sharedOnly?: boolean; behind: number; ahead: number }) => {
      const url = opts.url ?? requireEnv("MILLRACE_PG_ADMIN_URL");
      const log = (m: string) => process.stderr.write(`${m}\n`);
      const range = { behindDays: opts.behind, aheadDays: opts.ahead };
      const report = (where: string, created: string[]) =>
        log(`partitions: ${where}: ${created.length === 0 ? "nothing to create" : `created ${created.length} (${created.join(", ")})`}`);
      report("shared database", await maintainAt(url, range));
      if (opts.sharedOnly) return;
      let failed = 0;
      const dedicated = await eachDedicatedDatabase(
        url,
        async (dbUrl) => {
          try {
            return { created: await maintainAt(dbUrl, range) };
          } catch (err) {
            failed++;
            return { error: (err as Error).message };
          }
        },
        (line) => log(`partitions: ${line}`),
      );
      for (const d of dedicated) {
        if (d.problem !== undefined) failed++;
        else if (d.result?.error !== undefined) log(`partitions: ${d.database}: failed: ${d.result.error}`);
        else report(d.database, d.result?.created ?? []);
      }
      log(`partitions: ${dedicated.length - failed} dedicated databases maintained${failed ? `; ${failed} failed (above)` : ""}`);
      if (failed) process.exitCode = 1;
    });
}
