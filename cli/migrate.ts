/** `millrace migrate`: apply the numbered SQL migrations (idempotent, locked against concurrent runs). */
import type { Command } from "commander";
import { migrate } from "../migrations/migrate.ts";
import { requireEnv } from "../lib/env.ts";
import { migrateDedicatedDatabases } from "../tenants/database.ts";

export function registerMigrateCommands(program: Command): void {
  program
    .command("migrate")
    .description("apply the database migrations in migrations/ to the shared database and every tenant's dedicated database (safe to run twice and concurrently)")
    .option("--url <url>", "admin connection string of the shared database (default: $MILLRACE_PG_ADMIN_URL)")
    .option("--shared-only", "only the shared database")
    .action(async (opts: { url?: string; sharedOnly?: boolean }) => {
      const url = opts.url ?? requireEnv("MILLRACE_PG_ADMIN_URL");
      const log = (m: string) => process.stderr.write(`${m}\n`);
      const res = await migrate(url, { log });
      log(`migrate: ${res.applied.length} applied, ${res.alreadyApplied} already applied`);
      if (opts.sharedOnly) return;
      const dedicated = await migrateDedicatedDatabases(url, log);
      const problems = dedicated.filter((d) => d.problem);
      log(`migrate: ${dedicated.length - problems.length} dedicated databases up to date${problems.length ? `; ${problems.length} could not be reached (above)` : ""}`);
      if (problems.length) process.exitCode = 1;
    });
}
