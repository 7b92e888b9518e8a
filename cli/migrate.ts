/** `millrace migrate`: apply the numbered SQL migrations (idempotent, locked against concurrent runs). */
import type { Command } from "commander";
import { migrate } from "../migrations/migrate.ts";
import { requireEnv } from "../lib/env.ts";

export function registerMigrateCommands(program: Command): void {
  program
    .command("migrate")
    .description("apply the database migrations in migrations/ (safe to run twice and concurrently)")
    .option("--url <url>", "admin connection string (default: $MILLRACE_PG_ADMIN_URL)")
    .action(async (opts: { url?: string }) => {
      const url = opts.url ?? requireEnv("MILLRACE_PG_ADMIN_URL");
      const res = await migrate(url, { log: (m) => process.stderr.write(`${m}\n`) });
      process.stderr.write(`migrate: ${res.applied.length} applied, ${res.alreadyApplied} already applied\n`);
    });
}
