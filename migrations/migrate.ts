/**
 * Forward-only migrations: `NNN_name.sql` files in this folder, applied in order, each in its own
 * transaction together with its row in millrace_schema_migrations. A session-level advisory lock
 * makes concurrent runs (two workers starting at once) wait for each other; a second run applies
 * nothing. An applied file whose content changed is refused (write a new migration instead).
 * Every run ends with the time-partition maintenance step (migrations/partitions.ts), still under
 * the lock, so a `millrace migrate` also tops up the partitions ahead of now.
 */
import { createHash } from "node:crypto";
import { readdirSync, readFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import pg from "pg";
import { hasPartitionMaintenance, maintainPartitionsOn } from "./partitions.ts";

const MIGRATIONS_DIR = dirname(fileURLToPath(import.meta.url));
/** Arbitrary constant identifying millrace's migration lock (pg_advisory_lock key). */
const LOCK_KEY = 0x6d696c6c; // "mill"

export interface Migration {
  version: number;
  name: string;
  sql: string;
  checksum: string;
}

export interface MigrateResult {
  applied: Migration[];
  alreadyApplied: number;
  /** Daily partitions of sensor_data_raw the closing maintenance step created (vanilla PostgreSQL). */
  partitionsCreated: string[];
}

export function loadMigrations(dir = MIGRATIONS_DIR): Migration[] {
  const files = readdirSync(dir).filter((f) => /^\d{3}_[a-z0-9_]+\.sql$/.test(f)).sort();
  const seen = new Set<number>();
  return files.map((file) => {
    const version = Number.parseInt(file.slice(0, 3), 10);
    if (seen.has(version)) throw new Error(`two migrations share version ${version} (${file})`);
    seen.add(version);
    const sql = readFileSync(join(dir, file), "utf8");
    return { version, name: file.replace(/\.sql$/, ""), sql, checksum: createHash("sha256").update(sql).digest("hex") };
  });
}

export async function migrate(
  connectionString: string,
  opts: { log?: (msg: string) => void; migrations?: Migration[] } = {},
): Promise<MigrateResult> {
  const log = opts.log ?? (() => {});
  const migrations = opts.migrations ?? loadMigrations();
  const client = new pg.Client({ connectionString, application_name: "millrace-migrate" });
  await client.connect();
  try {
    await client.query("SELECT pg_advisory_lock($1)", [LOCK_KEY]);
    await client.query(`CREATE TABLE IF NOT EXISTS public.millrace_schema_migrations (
      version integer PRIMARY KEY, name text NOT NULL, checksum text NOT NULL,
      applied_at timestamptz NOT NULL DEFAULT now())`);
    const { rows } = await client.query<{ version: number; name: string; checksum: string }>(
      "SELECT version, name, checksum FROM public.millrace_schema_migrations ORDER BY version",
    );
    const done = new Map(rows.map((r) => [r.version, r]));
    for (const r of rows) {
      const m = migrations.find((x) => x.version === r.version);
      if (!m) throw new Error(`database has migration ${r.name} that this checkout does not know; is this checkout older than the database?`);
      if (m.checksum !== r.checksum) {
        throw new Error(`migration ${m.name} was changed after it was applied (checksum differs); migrations are forward-only: add a new file instead`);
      }
    }
    const applied: Migration[] = [];
    for (const m of migrations) {
      if (done.has(m.version)) continue;
      log(`migrate: applying ${m.name}`);
      await client.query("BEGIN");
      try {
        await client.query(m.sql);
        await client.query("INSERT INTO public.millrace_schema_migrations (version, name, checksum) VALUES ($1, $2, $3)", [
          m.version,
          m.name,
          m.checksum,
        ]);
        await client.query("COMMIT");
      } catch (err) {
        await client.query("ROLLBACK");
        const e = err as Error & { position?: string };
        throw new Error(`migration ${m.name} failed: ${e.message}`, { cause: err });
      }
      applied.push(m);
    }
    const partitionsCreated = (await hasPartitionMaintenance(client)) ? await maintainPartitionsOn(client) : [];
    if (partitionsCreated.length > 0) log(`migrate: created ${partitionsCreated.length} time partitions (${partitionsCreated.join(", ")})`);
    return { applied, alreadyApplied: done.size, partitionsCreated };
  } finally {
    await client.query("SELECT pg_advisory_unlock($1)", [LOCK_KEY]).catch(() => {});
    await client.end();
  }
}

/** A database older than the code: the error says which migration is missing and how to apply it. */
export class SchemaBehindError extends Error {
  override readonly name = "SchemaBehindError";
}

/**
 * Refuse to work on a database whose schema is older than this code's migrations (e.g. a worker
 * upgraded before `millrace migrate` ran, whose COPY would otherwise fail on a missing column for
 * ever). `where` names the database in the message. Needs SELECT on millrace_schema_migrations,
 * which migration 012 grants to millrace_writer: a database before 012 cannot grant it, and is
 * reported as behind as well.
 */
export async function assertMigrated(db: Pick<pg.Pool, "query">, where: string, migrations: readonly Migration[] = loadMigrations()): Promise<void> {
  const latest = migrations.at(-1);
  if (latest === undefined) return;
  const fix = "Run `millrace migrate` (it migrates the shared database and every dedicated one), then start the worker again.";
  let applied: Set<number>;
  try {
    const r = await db.query<{ version: number }>("SELECT version FROM public.millrace_schema_migrations");
    applied = new Set(r.rows.map((x) => x.version));
  } catch (err) {
    const code = (err as { code?: string }).code;
    if (code === "42P01") throw new SchemaBehindError(`${where} is not migrated: no migration recorded, this code needs up to ${latest.name}. ${fix}`);
    // insufficient_privilege: the grant this check relies on came with 012, so the schema is older.
    if (code === "42501") throw new SchemaBehindError(`${where} is not migrated to this version of millrace: its schema predates 012_flow_rate, this code needs up to ${latest.name}. ${fix}`);
    throw err;
  }
  const missing = migrations.filter((m) => !applied.has(m.version));
  if (missing.length === 0) return;
  throw new SchemaBehindError(
    `${where} is not migrated to this version of millrace: at ${Math.max(0, ...applied)}, missing ${missing.map((m) => m.name).join(", ")}. ${fix}`,
  );
}
