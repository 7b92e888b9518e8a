/**
 * PostgreSQL 15 for the local stack: a private cluster (Debian's postgresql-15 binaries) under
 * `<stateDir>/postgres/`: `data/` (the cluster), `run/` (the unix socket, 0700), `postgres.log`,
 * `postgres.pid` (the postmaster's pid) and `admin-password` (0600).
 *
 * PostgreSQL refuses to run as root, so as root the cluster belongs to the `postgres` OS user and
 * initdb/postgres run as that user (spawned with its uid/gid; no runuser/pg_ctl wrapper, so our pid
 * file is the postmaster itself). As any other user it runs as that user.
 *
 * The cluster is initialised once, atomically (initdb into a temporary directory, `CREATE DATABASE
 * millrace` in single-user mode, then rename), with superuser `millrace_admin`, scram-sha-256 for TCP
 * and the socket, UTF8 and the C.UTF-8 locale (C where it is missing). Settings are regenerated into
 * `data/millrace.conf` (included from postgresql.conf) on every start. fsync and synchronous_commit
 * stay on: after a SIGKILL, a start recovers from the WAL like after a power cut.
 *
 * Only the cluster, the superuser and the `millrace` database are made here; roles, schema and
 * migrations belong to migrations/.
 */
import { randomBytes } from "node:crypto";
import {
  chmodSync,
  chownSync,
  existsSync,
  readdirSync,
  readFileSync,
  readlinkSync,
  realpathSync,
  renameSync,
  rmSync,
  writeFileSync,
} from "node:fs";
import { join } from "node:path";
import { spawnSync } from "node:child_process";
import pg from "pg";
import {
  aptInstall,
  ensureDir,
  isAlive,
  portOpen,
  readPid,
  runLogged,
  sleep,
  startDetached,
  waitFor,
} from "./process.ts";
import type { ServiceStatus, StackContext, StackService } from "./types.ts";

export const PG_MAJOR = 15;
export const PG_BIN = `/usr/lib/postgresql/${PG_MAJOR}/bin`;
export const PG_ADMIN_USER = "millrace_admin";
export const PG_DATABASE = "millrace";
const OS_USER = "postgres";

/** Fast shutdown (SIGINT: roll back sessions, checkpoint, exit) within this, else SIGKILL to the whole group. */
const STOP_GRACE_MS = 60_000;
/** How long a dead postmaster's port may take to close before it counts as taken by someone else. */
const PORT_RELEASE_MS = 10_000;
/** Linux sun_path is 108 bytes including the terminating NUL. */
const MAX_SOCKET_PATH = 107;

interface PgPaths {
  dir: string;
  dataDir: string;
  socketDir: string;
  logFile: string;
  pidFile: string;
  passwordFile: string;
  confFile: string;
}

/**
 * /proc/<pid>/exe of a server started before its package was upgraded reads "<path> (deleted)":
 * still our server (it must be stopped and restarted to load the new binaries).
 */
function sameExecutable(linked: string, expected: string): boolean {
  return linked === expected || linked === `${expected} (deleted)`;
}

function paths(ctx: StackContext): PgPaths {
  const dir = join(ctx.stateDir, "postgres");
  const dataDir = join(dir, "data");
  return {
    dir,
    dataDir,
    socketDir: join(dir, "run"),
    logFile: join(dir, "postgres.log"),
    pidFile: join(dir, "postgres.pid"),
    passwordFile: join(dir, "admin-password"),
    confFile: join(dataDir, "millrace.conf"),
  };
}

function bin(name: string): string {
  return join(PG_BIN, name);
}

function address(ctx: StackContext): string {
  return `${ctx.host}:${ctx.ports.postgres}`;
}

// ---------------------------------------------------------------------------------------------
// Who runs the server.

interface RunAs {
  uid?: number;
  gid?: number;
}

function isRoot(): boolean {
  return process.getuid?.() === 0;
}

function osUserIds(): { uid: number; gid: number } | undefined {
  const res = spawnSync("id", ["-u", OS_USER], { encoding: "utf8" });
  const gidRes = spawnSync("id", ["-g", OS_USER], { encoding: "utf8" });
  if (res.status !== 0 || gidRes.status !== 0) return undefined;
  return { uid: Number.parseInt(res.stdout.trim(), 10), gid: Number.parseInt(gidRes.stdout.trim(), 10) };
}

/** As root: the postgres OS user's ids (created as a system user if missing). Otherwise: run as ourselves. */
function runAs(logFile: string): RunAs {
  if (!isRoot()) return {};
  let ids = osUserIds();
  if (!ids) {
    runLogged("useradd", ["--system", "--user-group", "--no-create-home", "--home-dir", "/var/lib/postgresql", "--shell", "/bin/sh", OS_USER], logFile);
    ids = osUserIds();
    if (!ids) throw new Error(`postgres: could not create the ${OS_USER} OS user; see ${logFile}`);
  }
  return ids;
}

function chownTo(path: string, who: RunAs): void {
  if (who.uid !== undefined && who.gid !== undefined) chownSync(path, who.uid, who.gid);
}

/** The server's environment: no PG* variables of ours leak into it (PGDATA, PGPORT, PGHOST…). */
function serverEnv(): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = { PATH: process.env.PATH ?? "/usr/bin:/bin" };
  if (process.env.TZ) env.TZ = process.env.TZ;
  return env;
}

/** As root, the postgres user needs to reach (search) every ancestor of the state directory. */
function checkReachable(p: PgPaths, who: RunAs): void {
  if (who.uid === undefined) return;
  const res = spawnSync("test", ["-w", p.dir, "-a", "-x", p.dir], { uid: who.uid, gid: who.gid });
  if (res.status !== 0) {
    throw new Error(
      `postgres: the ${OS_USER} OS user cannot reach ${p.dir}; make its parent directories searchable (chmod o+x) or set MILLRACE_STACK_DIR elsewhere`,
    );
  }
}

// ---------------------------------------------------------------------------------------------
// Password, locale, configuration.

function readPassword(p: PgPaths): string | undefined {
  if (!existsSync(p.passwordFile)) return undefined;
  const pw = readFileSync(p.passwordFile, "utf8").trim();
  return pw === "" ? undefined : pw;
}

/** The admin password, generated (and stored 0600) on first use. */
function adminPassword(p: PgPaths): string {
  const existing = readPassword(p);
  if (existing) return existing;
  ensureDir(p.dir);
  const pw = randomBytes(24).toString("base64url");
  writeFileSync(p.passwordFile, `${pw}\n`, { mode: 0o600 });
  chmodSync(p.passwordFile, 0o600);
  return pw;
}

export function adminUrl(ctx: StackContext, password = adminPassword(paths(ctx)), database = PG_DATABASE): string {
  return `postgres://${PG_ADMIN_USER}:${encodeURIComponent(password)}@${ctx.host}:${ctx.ports.postgres}/${database}`;
}

function locale(): string {
  const res = spawnSync("locale", ["-a"], { encoding: "utf8" });
  const names = res.status === 0 ? res.stdout.split("\n").map((l) => l.trim().toLowerCase()) : [];
  return names.includes("c.utf8") || names.includes("c.utf-8") ? "C.UTF-8" : "C";
}

function quote(value: string): string {
  return `'${value.replace(/\\/g, "\\\\").replace(/'/g, "''")}'`;
}

/** postgresql.conf settings for a dev/bench box; ctx-dependent ones (port, socket) included. */
export function postgresSettings(ctx: StackContext): Record<string, string> {
  const p = paths(ctx);
  return {
    listen_addresses: quote(ctx.host),
    port: String(ctx.ports.postgres),
    unix_socket_directories: quote(p.socketDir),
    unix_socket_permissions: "0700",
    max_connections: "200",
    superuser_reserved_connections: "5",
    password_encryption: "scram-sha-256",
    shared_buffers: "256MB",
    work_mem: "16MB",
    maintenance_work_mem: "256MB",
    effective_cache_size: "4GB",
    // Durability stays real: the crash tests rely on it.
    fsync: "on",
    synchronous_commit: "on",
    full_page_writes: "on",
    wal_level: "replica",
    max_wal_size: "2GB",
    min_wal_size: "256MB",
    checkpoint_completion_target: "0.9",
    max_prepared_transactions: "0",
    // Logging to stderr, which goes to postgres.log.
    logging_collector: "off",
    log_destination: quote("stderr"),
    log_line_prefix: quote("%m [%p] %q%u@%d "),
    log_min_duration_statement: "1000",
    log_checkpoints: "on",
    log_lock_waits: "on",
  };
}

function renderConf(settings: Record<string, string>): string {
  const lines = Object.entries(settings).map(([k, v]) => `${k} = ${v}`);
  return `# Generated by stack/postgres.ts on every start; edits are overwritten (use ALTER SYSTEM or postgresql.conf).\n${lines.join("\n")}\n`;
}

const INCLUDE_LINE = "include_if_exists = 'millrace.conf'";

function writeConf(ctx: StackContext, dataDir: string, who: RunAs): void {
  const confFile = join(dataDir, "millrace.conf");
  writeFileSync(confFile, renderConf(postgresSettings(ctx)));
  chownTo(confFile, who);
  const main = join(dataDir, "postgresql.conf");
  const text = readFileSync(main, "utf8");
  if (!text.includes(INCLUDE_LINE)) writeFileSync(main, `${text.trimEnd()}\n\n# millrace: the stack's settings (last, so they win)\n${INCLUDE_LINE}\n`);
}

// ---------------------------------------------------------------------------------------------
// Processes.

function cmdline(pid: number): string[] | undefined {
  try {
    return readFileSync(`/proc/${pid}/cmdline`, "utf8").split("\0");
  } catch {
    return undefined;
  }
}

/** Does pid run the PostgreSQL server binary? */
function isPostgresBinary(pid: number): boolean {
  try {
    return sameExecutable(readlinkSync(`/proc/${pid}/exe`), realpathSync(bin("postgres")));
  } catch {
    return false;
  }
}

/** Is pid a live postmaster of this data directory? (Guards against pid reuse.) */
function isOurPostmaster(pid: number | undefined, p: PgPaths): pid is number {
  if (pid === undefined || !isAlive(pid)) return false;
  const argv = cmdline(pid);
  if (!argv) return true; // no /proc: trust the pid
  return isPostgresBinary(pid) && argv.includes(p.dataDir);
}

/** The postmaster's pid from data/postmaster.pid (first line), if that file exists. */
function lockFilePid(p: PgPaths): number | undefined {
  return readPid(join(p.dataDir, "postmaster.pid"));
}

/** The running postmaster: ours (pid file), or one started otherwise on this data directory (lock file). */
function postmasterPid(p: PgPaths): number | undefined {
  const mine = readPid(p.pidFile);
  if (isOurPostmaster(mine, p)) return mine;
  const locked = lockFilePid(p);
  return isOurPostmaster(locked, p) ? locked : undefined;
}

async function waitPortClosed(ctx: StackContext, timeoutMs: number): Promise<void> {
  await waitFor(`release of ${address(ctx)}`, async () => !(await portOpen(ctx.host, ctx.ports.postgres, 500)), timeoutMs, "", 100);
}

/**
 * Every live PostgreSQL process working in this data directory: the postmaster and its children, which
 * all run the postgres binary with the data directory as their cwd. PostgreSQL puts each child in a session of its own (setsid),
 * so signalling the postmaster's process group does not reach them; this is how we find them, also
 * after the postmaster died and they were reparented.
 */
function dataDirProcesses(p: PgPaths): number[] {
  let target: string;
  let exe: string;
  try {
    target = realpathSync(p.dataDir);
    exe = realpathSync(bin("postgres"));
  } catch {
    return [];
  }
  const pids: number[] = [];
  for (const entry of readdirSync("/proc")) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      // A postgres binary (not, say, a shell someone cd'ed into data/) working in this data directory.
      if (readlinkSync(`/proc/${entry}/cwd`) === target && sameExecutable(readlinkSync(`/proc/${entry}/exe`), exe)) pids.push(Number(entry));
    } catch {
      /* gone, or not ours to read */
    }
  }
  return pids.filter((pid) => pid !== process.pid && isAlive(pid));
}

/**
 * SIGKILL the postmaster (if given) and every process of this data directory, like a power cut.
 * The postmaster is frozen (SIGSTOP) first so that it forks no new child while we collect them.
 */
async function killAll(p: PgPaths, postmaster: number | undefined): Promise<void> {
  const signal = (pid: number, sig: NodeJS.Signals) => {
    try {
      process.kill(pid, sig);
    } catch {
      /* gone */
    }
  };
  if (postmaster !== undefined) signal(postmaster, "SIGSTOP");
  const victims = new Set([...(postmaster !== undefined ? [postmaster] : []), ...dataDirProcesses(p)]);
  for (const pid of victims) signal(pid, "SIGKILL");
  const deadline = Date.now() + 10_000;
  for (;;) {
    const left = [...victims].filter((pid) => isAlive(pid));
    if (left.length === 0) return;
    if (Date.now() > deadline) throw new Error(`postgres: processes ${left.join(", ")} survived SIGKILL for 10 s`);
    await sleep(50);
  }
}

/** After a postmaster died: its orphaned children still hold the shared memory; a new postmaster would refuse to start. */
async function killOrphans(ctx: StackContext, p: PgPaths): Promise<void> {
  const orphans = dataDirProcesses(p);
  if (orphans.length === 0) return;
  ctx.log(`postgres: killing ${orphans.length} leftover process(es) of a dead postmaster on ${p.dataDir}: ${orphans.join(", ")}`);
  await killAll(p, undefined);
}

function logTail(file: string, lines = 25): string {
  if (!existsSync(file)) return "";
  return readFileSync(file, "utf8").split("\n").slice(-lines).join("\n");
}

/** Run SQL in single-user mode on a stopped cluster (initialisation, password reset); errors throw. */
function singleUser(dataDir: string, sql: string, who: RunAs, logFile: string): void {
  const res = spawnSync(bin("postgres"), ["--single", "-D", dataDir, "-c", "exit_on_error=on", "postgres"], {
    input: `${sql}\n`,
    encoding: "utf8",
    env: serverEnv(),
    cwd: dataDir,
    ...who,
  });
  const out = `${res.stdout ?? ""}${res.stderr ?? ""}`;
  writeFileSync(logFile, out.replaceAll(/PASSWORD '[^']*'/g, "PASSWORD '***'"), { flag: "a" });
  if (res.status !== 0 || /\bERROR:|\bFATAL:/.test(out)) {
    throw new Error(`postgres: single-user statement failed (exit ${res.status ?? res.signal}); see ${logFile}:\n${logTail(logFile)}`);
  }
}

function sqlLiteral(value: string): string {
  return `'${value.replace(/'/g, "''")}'`;
}

/** initdb into a temporary directory, create the database, then rename into place: never a half-made data/. */
function initCluster(ctx: StackContext, p: PgPaths, who: RunAs): void {
  const tmp = `${p.dataDir}.init-${process.pid}`;
  const pwFile = join(p.dir, `.initdb-pw-${process.pid}`);
  rmSync(tmp, { recursive: true, force: true });
  const password = adminPassword(p);
  writeFileSync(pwFile, `${password}\n`, { mode: 0o600 });
  chownTo(pwFile, who);
  const loc = locale();
  ctx.log(`postgres: initialising a cluster in ${p.dataDir} (superuser ${PG_ADMIN_USER}, UTF8, locale ${loc})`);
  try {
    runLogged(
      bin("initdb"),
      [
        "-D",
        tmp,
        `--username=${PG_ADMIN_USER}`,
        `--pwfile=${pwFile}`,
        "--auth-host=scram-sha-256",
        "--auth-local=scram-sha-256",
        "--encoding=UTF8",
        `--locale=${loc}`,
        "--data-checksums",
      ],
      p.logFile,
      { env: serverEnv(), cwd: p.dir, ...who },
    );
    writeConf(ctx, tmp, who);
    singleUser(tmp, `CREATE DATABASE ${PG_DATABASE};`, who, p.logFile);
    renameSync(tmp, p.dataDir);
  } finally {
    rmSync(pwFile, { force: true });
    rmSync(tmp, { recursive: true, force: true });
  }
}

async function answers(ctx: StackContext, password: string): Promise<boolean> {
  const client = new pg.Client({ connectionString: adminUrl(ctx, password), connectionTimeoutMillis: 3000, query_timeout: 5000 });
  try {
    await client.connect();
    const res = await client.query<{ one: number }>("SELECT 1 AS one");
    return res.rows[0]?.one === 1;
  } finally {
    await client.end().catch(() => undefined);
  }
}

function serverVersion(): string {
  const res = spawnSync(bin("postgres"), ["--version"], { encoding: "utf8" });
  const m = /(\d+\.\d+)/.exec(res.stdout ?? "");
  return m ? `PostgreSQL ${m[1]}` : `PostgreSQL ${PG_MAJOR}`;
}

// ---------------------------------------------------------------------------------------------

export const postgresService: StackService = {
  name: "postgres",

  logFile(ctx) {
    return paths(ctx).logFile;
  },

  async install(ctx) {
    const p = paths(ctx);
    if (!existsSync(bin("postgres")) || !existsSync(bin("initdb")) || !existsSync(bin("psql"))) {
      ctx.log(`postgres: installing postgresql-${PG_MAJOR} with apt (log: ${p.logFile})`);
      aptInstall([`postgresql-${PG_MAJOR}`, `postgresql-client-${PG_MAJOR}`], p.logFile);
      if (!existsSync(bin("postgres"))) throw new Error(`postgres: ${bin("postgres")} still missing after apt-get install; see ${p.logFile}`);
    }
    runAs(p.logFile); // make sure the OS user exists
  },

  async start(ctx) {
    const p = paths(ctx);
    const running = postmasterPid(p);
    if (running !== undefined) {
      if (readPid(p.pidFile) !== running) writeFileSync(p.pidFile, `${running}\n`);
      return;
    }
    // A dead postmaster (SIGKILL, crash): clean up what it left, then let PostgreSQL recover from the WAL.
    await killOrphans(ctx, p);
    try {
      await waitPortClosed(ctx, PORT_RELEASE_MS);
    } catch {
      throw new Error(`postgres: ${address(ctx)} is in use by a process this stack did not start (no live postmaster for ${p.dataDir})`);
    }
    if (!existsSync(bin("postgres"))) await postgresService.install(ctx);

    ensureDir(p.dir);
    const who = runAs(p.logFile);
    const socketPath = join(p.socketDir, `.s.PGSQL.${ctx.ports.postgres}`);
    if (Buffer.byteLength(socketPath) > MAX_SOCKET_PATH) {
      throw new Error(`postgres: the socket path ${socketPath} is longer than ${MAX_SOCKET_PATH} bytes; use a shorter MILLRACE_STACK_DIR`);
    }
    ensureDir(p.socketDir);
    chmodSync(p.socketDir, 0o700);
    chmodSync(p.dir, 0o755);
    chownTo(p.dir, who);
    chownTo(p.socketDir, who);
    checkReachable(p, who);

    if (!existsSync(join(p.dataDir, "PG_VERSION"))) {
      initCluster(ctx, p, who);
    } else {
      const lock = lockFilePid(p);
      if (lock !== undefined) {
        if (isAlive(lock) && isPostgresBinary(lock)) {
          throw new Error(
            `postgres: ${join(p.dataDir, "postmaster.pid")} names pid ${lock}, a live PostgreSQL process ` +
              `(${(cmdline(lock) ?? []).join(" ").trim()}) this stack does not recognise; stop it first`,
          );
        }
        // The pid is dead (or now another program): a stale lock file from a killed server.
        ctx.log(`postgres: removing stale ${join(p.dataDir, "postmaster.pid")} (pid ${lock} is not running)`);
        rmSync(join(p.dataDir, "postmaster.pid"), { force: true });
      }
      writeConf(ctx, p.dataDir, who);
      if (readPassword(p) === undefined) {
        // The password file was deleted but the cluster kept: set a new one.
        ctx.log(`postgres: ${p.passwordFile} is missing; setting a new password for ${PG_ADMIN_USER}`);
        singleUser(p.dataDir, `ALTER ROLE ${PG_ADMIN_USER} PASSWORD ${sqlLiteral(adminPassword(p))};`, who, p.logFile);
      }
    }

    const pid = startDetached({
      command: bin("postgres"),
      args: ["-D", p.dataDir],
      pidFile: p.pidFile,
      logFile: p.logFile,
      cwd: p.dataDir,
      env: serverEnv(),
      ...who,
    });
    ctx.log(`postgres: started pid ${pid} on ${address(ctx)} (log: ${p.logFile})`);
  },

  async waitReady(ctx, timeoutMs) {
    const p = paths(ctx);
    const password = readPassword(p);
    if (password === undefined) throw new Error(`postgres: no ${p.passwordFile}; start the service first`);
    let exited = false;
    await waitFor(
      `PostgreSQL on ${address(ctx)}`,
      async () => {
        if (postmasterPid(p) === undefined) {
          exited = true;
          return true;
        }
        return await answers(ctx, password);
      },
      timeoutMs,
      `see ${p.logFile}`,
      250,
    );
    if (exited) {
      throw new Error(`PostgreSQL on ${address(ctx)} is not running (no live postmaster for ${p.dataDir}); see ${p.logFile}:\n${logTail(p.logFile)}`);
    }
  },

  async stop(ctx, opts = {}) {
    const p = paths(ctx);
    const pid = postmasterPid(p);
    if (pid === undefined) {
      rmSync(p.pidFile, { force: true }); // stale (dead or reused pid): never signal a stranger
      return;
    }
    if (opts.force) {
      await killAll(p, pid);
    } else {
      // SIGINT to the postmaster = fast shutdown: sessions rolled back, shutdown checkpoint, children waited for.
      try {
        process.kill(pid, "SIGINT");
      } catch {
        /* already gone */
      }
      const deadline = Date.now() + STOP_GRACE_MS;
      while (isAlive(pid) && Date.now() < deadline) await sleep(100);
      if (isAlive(pid)) ctx.log(`postgres: pid ${pid} did not shut down within ${STOP_GRACE_MS / 1000} s; killing it`);
      await killAll(p, isAlive(pid) ? pid : undefined);
    }
    rmSync(p.pidFile, { force: true });
    await waitPortClosed(ctx, PORT_RELEASE_MS);
  },

  async status(ctx): Promise<ServiceStatus> {
    const p = paths(ctx);
    const pid = postmasterPid(p);
    if (pid === undefined) {
      const installed = existsSync(bin("postgres"));
      return { name: "postgres", running: false, detail: installed ? "not running" : `not running (postgresql-${PG_MAJOR} not installed)` };
    }
    const answering = await portOpen(ctx.host, ctx.ports.postgres);
    return {
      name: "postgres",
      running: answering,
      pid,
      detail: answering
        ? `${address(ctx)} (${serverVersion()}, database ${PG_DATABASE}, superuser ${PG_ADMIN_USER})`
        : `pid ${pid} alive but ${address(ctx)} not answering (starting or recovering, or see ${p.logFile})`,
    };
  },

  env(ctx) {
    return {
      MILLRACE_PG_ADMIN_URL: adminUrl(ctx),
      MILLRACE_PG_HOST: ctx.host,
      MILLRACE_PG_PORT: String(ctx.ports.postgres),
    };
  },
};
