/**
 * The stack's PostgreSQL service survives a crash: on its OWN cluster (temp stateDir, port 25432, so
 * the shared stack other tests use is never touched) it creates a table and commits a row, SIGKILLs
 * every server process (stop --force), starts again (stale postmaster.pid, WAL recovery) and finds
 * the row still there; then a clean stop.
 */
import { chmodSync, existsSync, mkdtempSync, readFileSync, rmSync, statSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import pg from "pg";
import { stackContext } from "../../stack/context.ts";
import { postgresService } from "../../stack/postgres.ts";
import { isAlive } from "../../stack/process.ts";
import type { StackContext } from "../../stack/types.ts";

const READY_MS = 120_000;
const PORT = 25432;

function isolatedContext(stateDir: string): StackContext {
  const base = stackContext();
  return { ...base, stateDir, ports: { ...base.ports, postgres: PORT }, log: () => undefined };
}

async function query<T extends pg.QueryResultRow>(ctx: StackContext, sql: string, params: unknown[] = []): Promise<T[]> {
  const client = new pg.Client({ connectionString: postgresService.env(ctx).MILLRACE_PG_ADMIN_URL, connectionTimeoutMillis: 10_000 });
  await client.connect();
  try {
    return (await client.query<T>(sql, params)).rows;
  } finally {
    await client.end();
  }
}

describe("stack postgres service", () => {
  it("keeps committed rows across a SIGKILL of the whole server and restarts cleanly", { timeout: 300_000 }, async () => {
    const stateDir = mkdtempSync(join(tmpdir(), "millrace-pg-test-"));
    // mkdtemp makes 0700 directories; as root the server runs as the postgres OS user, which must reach it.
    chmodSync(stateDir, 0o755);
    const ctx = isolatedContext(stateDir);
    try {
      await postgresService.install(ctx);
      await postgresService.start(ctx);
      await postgresService.waitReady(ctx, READY_MS);

      const env = postgresService.env(ctx);
      expect(env.MILLRACE_PG_PORT).toBe(String(PORT));
      expect(env.MILLRACE_PG_HOST).toBe("127.0.0.1");
      expect(new URL(env.MILLRACE_PG_ADMIN_URL!).pathname).toBe("/millrace");
      const pwFile = join(stateDir, "postgres", "admin-password");
      expect(statSync(pwFile).mode & 0o777).toBe(0o600);
      expect(decodeURIComponent(new URL(env.MILLRACE_PG_ADMIN_URL!).password)).toBe(readFileSync(pwFile, "utf8").trim());

      const [who] = await query<{ usesuper: boolean; enc: string }>(
        ctx,
        "SELECT usesuper, pg_encoding_to_char(encoding) AS enc FROM pg_user, pg_database WHERE usename = current_user AND datname = current_database()",
      );
      expect(who).toEqual({ usesuper: true, enc: "UTF8" });
      const [fsync] = await query<{ fsync: string }>(ctx, "SHOW fsync");
      expect(fsync!.fsync).toBe("on");

      const first = await postgresService.status(ctx);
      expect(first.running).toBe(true);
      await postgresService.start(ctx); // idempotent: already running
      expect((await postgresService.status(ctx)).pid).toBe(first.pid);

      await query(ctx, "CREATE TABLE crash_probe (id int PRIMARY KEY, note text NOT NULL)");
      await query(ctx, "INSERT INTO crash_probe VALUES ($1, $2)", [1, "committed before the crash"]);

      await postgresService.stop(ctx, { force: true });
      expect(isAlive(first.pid)).toBe(false);
      expect((await postgresService.status(ctx)).running).toBe(false);
      // SIGKILL leaves the lock file behind; start must see that its pid is dead.
      expect(existsSync(join(stateDir, "postgres", "data", "postmaster.pid"))).toBe(true);

      await postgresService.start(ctx);
      await postgresService.waitReady(ctx, READY_MS);
      const rows = await query<{ id: number; note: string }>(ctx, "SELECT id, note FROM crash_probe ORDER BY id");
      expect(rows).toEqual([{ id: 1, note: "committed before the crash" }]);
      const log = readFileSync(postgresService.logFile(ctx), "utf8");
      expect(log).toMatch(/not properly shut down; automatic recovery in progress/);

      const second = await postgresService.status(ctx);
      await postgresService.stop(ctx);
      expect(isAlive(second.pid)).toBe(false);
      expect((await postgresService.status(ctx)).running).toBe(false);
      expect(existsSync(join(stateDir, "postgres", "data", "postmaster.pid"))).toBe(false);
    } finally {
      await postgresService.stop(ctx, { force: true }).catch(() => undefined);
      rmSync(stateDir, { recursive: true, force: true });
    }
  });
});
