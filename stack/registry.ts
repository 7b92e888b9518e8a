/**
 * The schema registry of the local stack: Apicurio Registry 3.0.9 (the Quarkus "all" assembly from
 * Maven Central) run as a plain `java -jar apicurio-registry-app-3.0.9-runner.jar` process. Clients
 * use its Confluent-compatible API at `/apis/ccompat/v7` (see docs/stack-registry.md for why this
 * registry and how it differs from Confluent's).
 *
 * The assembly is resolved with `mvn dependency:get` into the local Maven repository and unpacked once
 * into `<cacheDir>/apicurio-registry-<version>/`; the H2 file database, the pid file and the log live in
 * `<stateDir>/registry/`. H2 commits are written at once (WRITE_DELAY=0) and H2 holds its file lock
 * through the OS, so a SIGKILL loses no acknowledged registration and leaves no lock behind.
 */
import { createHash } from "node:crypto";
import { spawnSync } from "node:child_process";
import { existsSync, readFileSync, realpathSync, renameSync, rmSync, statSync, writeFileSync } from "node:fs";
import { createServer } from "node:net";
import { homedir } from "node:os";
import { dirname, join } from "node:path";
import {
  aptInstall,
  commandExists,
  ensureDir,
  isAlive,
  portOpen,
  readPid,
  runLogged,
  startDetached,
  stopPid,
  waitFor,
} from "./process.ts";
import type { ServiceStatus, StackContext, StackService } from "./types.ts";

export const APICURIO_VERSION = "3.0.9";
const ARTIFACT = `io.apicurio:apicurio-registry-app:${APICURIO_VERSION}:tar.gz:all`;
const RUNNER_JAR = `apicurio-registry-app-${APICURIO_VERSION}-runner.jar`;

/** Global compatibility level the local stack enforces (and reports) — Confluent's default. */
export const GLOBAL_COMPATIBILITY = "BACKWARD";

/** SIGTERM → Quarkus shuts down (closes H2 cleanly) within this, else SIGKILL. */
const STOP_GRACE_MS = 20_000;

const JVM_OPTS = [
  "-Xms64m",
  "-Xmx512m",
  // Two cores and a tiny heap: the serial collector starts fastest and has the smallest footprint.
  "-XX:+UseSerialGC",
  // C1 only: the JIT's C2 compilations are most of the start-up CPU; a local registry never needs them.
  "-XX:TieredStopAtLevel=1",
  "-XX:+ExitOnOutOfMemoryError",
  "-Djava.awt.headless=true",
];

interface RegistryPaths {
  dir: string;
  dataDir: string;
  /** H2 database path without the `.mv.db` suffix. */
  dbPath: string;
  pidFile: string;
  logFile: string;
  home: string;
  jar: string;
  marker: string;
  tarball: string;
  /** Dynamic AppCDS archive made by a training run at install (halves the start time). */
  cdsArchive: string;
  cdsStamp: string;
}

function paths(ctx: StackContext): RegistryPaths {
  const dir = join(ctx.stateDir, "registry");
  const home = join(ctx.cacheDir, `apicurio-registry-${APICURIO_VERSION}`);
  const m2 = join(homedir(), ".m2", "repository", "io", "apicurio", "apicurio-registry-app", APICURIO_VERSION);
  return {
    dir,
    dataDir: join(dir, "data"),
    dbPath: join(dir, "data", "registry"),
    pidFile: join(dir, "registry.pid"),
    logFile: join(dir, "registry.log"),
    home,
    jar: join(home, RUNNER_JAR),
    marker: join(home, ".installed"),
    cdsArchive: join(home, "app-cds.jsa"),
    cdsStamp: join(home, "app-cds.stamp"),
    tarball: join(m2, `apicurio-registry-app-${APICURIO_VERSION}-all.tar.gz`),
  };
}

/** Base URL of the Confluent-compatible API (what MILLRACE_SCHEMA_REGISTRY_URL points at). */
export function registryUrl(ctx: StackContext): string {
  return `http://${ctx.host}:${ctx.ports.registry}/apis/ccompat/v7`;
}

/** The `-D` settings the registry runs with (all runtime properties of the Quarkus app). */
export function registrySystemProperties(ctx: StackContext): Record<string, string> {
  const p = paths(ctx);
  if (/[;\s]/.test(p.dbPath)) throw new Error(`registry: the state directory ${p.dir} must not contain ';' or whitespace (H2 URL)`);
  return {
    "quarkus.http.host": ctx.host,
    "quarkus.http.port": String(ctx.ports.registry),
    // Persistent H2 file database (the default is in-memory). WRITE_DELAY=0: every commit is on disk
    // before the HTTP answer, so a registration acknowledged to a client survives kill -9.
    "apicurio.datasource.url": `jdbc:h2:file:${p.dbPath};WRITE_DELAY=0`,
    // The app's default pool opens 20 connections at start; one developer needs a few.
    "apicurio.datasource.jdbc.initial-size": "2",
    "apicurio.datasource.jdbc.min-size": "2",
    "apicurio.datasource.jdbc.max-size": "20",
    // Same schema with different whitespace/key order → the existing id, as Confluent does.
    "apicurio.ccompat.use-canonical-hash": "true",
    // Quiet log: no access log line and no audit line per request; readable timestamps.
    "quarkus.http.access-log.enabled": "false",
    'quarkus.log.category."io.apicurio.registry.logging.audit".level': "WARN",
    'quarkus.log.category."io.apicurio.registry.storage.metrics".level': "WARN",
    "quarkus.log.console.format": "%d{yyyy-MM-dd HH:mm:ss,SSS} %-5p [%c{3.}] (%t) %s%e%n",
    "quarkus.banner.enabled": "false",
    // The dynamic log-level job polls the database every second by default.
    "apicurio.logconfigjob.every": "60s",
    // Kafka-SQL snapshots are not used with SQL storage; keep anything it writes out of /tmp.
    "apicurio.storage.snapshot.location": p.dir,
  };
}

function javaArgs(ctx: StackContext): string[] {
  const p = paths(ctx);
  const props = Object.entries(registrySystemProperties(ctx)).map(([k, v]) => `-D${k}=${v}`);
  const cds = cdsState(p) === "ok" ? [`-XX:SharedArchiveFile=${p.cdsArchive}`] : [];
  return [...JVM_OPTS, ...cds, ...props, "-jar", p.jar];
}

// ---------------------------------------------------------------------------------------------
// Class-data sharing. A CDS archive only fits the exact JVM that wrote it, so its stamp names that
// JVM (resolved java binary + its module image); a different JVM means a new training run. A JVM
// given a mismatched archive would only warn and run without it, so a stale archive is never fatal.

function javaStamp(): string {
  const found = spawnSync("sh", ["-c", "command -v java"], { encoding: "utf8" }).stdout.trim();
  if (!found) return "no-java";
  const java = realpathSync(found);
  const modules = join(dirname(dirname(java)), "lib", "modules");
  const st = existsSync(modules) ? statSync(modules) : undefined;
  return `${java} ${st ? `${st.size} ${Math.round(st.mtimeMs)}` : "?"} ${APICURIO_VERSION}`;
}

/** "ok": archive fits this JVM; "failed": the training run failed with this JVM (don't retry); "missing". */
function cdsState(p: RegistryPaths): "ok" | "failed" | "missing" {
  if (!existsSync(p.cdsStamp)) return "missing";
  const [state, ...rest] = readFileSync(p.cdsStamp, "utf8").trim().split(" ");
  if (rest.join(" ") !== javaStamp()) return "missing";
  if (state === "ok" && existsSync(p.cdsArchive)) return "ok";
  return state === "failed" ? "failed" : "missing";
}

async function freePort(host: string): Promise<number> {
  return await new Promise((resolve, reject) => {
    const srv = createServer();
    srv.once("error", reject);
    srv.listen(0, host, () => {
      const addr = srv.address();
      const port = typeof addr === "object" && addr ? addr.port : 0;
      srv.close(() => (port ? resolve(port) : reject(new Error("no free port"))));
    });
  });
}

/**
 * Training run: start the registry once with an in-memory database, exercise registration and the
 * compatibility check, stop it with SIGTERM; the JVM writes the classes it loaded to a dynamic CDS
 * archive at exit. Later starts map that archive instead of loading ~15k classes from the jars.
 */
async function buildCdsArchive(ctx: StackContext, p: RegistryPaths): Promise<void> {
  const tmp = `${p.cdsArchive}.tmp-${process.pid}`;
  const pidFile = join(p.home, `cds-training-${process.pid}.pid`);
  rmSync(tmp, { force: true });
  const port = await freePort(ctx.host);
  const base = `http://${ctx.host}:${port}/apis/ccompat/v7`;
  ctx.log(`registry: training run for the class-data archive on ${ctx.host}:${port} (~15 s, once per JVM)`);
  const t0 = Date.now();
  startDetached({
    command: "java",
    args: [
      ...JVM_OPTS,
      `-XX:ArchiveClassesAtExit=${tmp}`,
      `-Dquarkus.http.host=${ctx.host}`,
      `-Dquarkus.http.port=${port}`,
      "-Dquarkus.http.access-log.enabled=false",
      "-Dquarkus.banner.enabled=false",
      "-Dapicurio.ccompat.use-canonical-hash=true",
      '-Dquarkus.log.category."io.apicurio.registry.logging.audit".level=WARN',
      "-jar",
      p.jar,
    ],
    pidFile,
    logFile: p.logFile,
    cwd: p.home,
  });
  try {
    await waitFor(`registry training run on ${base}`, async () => (await request(`${base}/subjects`)).status === 200, 120_000, `see ${p.logFile}`);
    const json = { "content-type": "application/vnd.schemaregistry.v1+json" };
    const v1 = { type: "record", name: "Training", namespace: "millrace.stack", fields: [{ name: "a", type: "int" }] };
    const v2 = { ...v1, fields: [...v1.fields, { name: "b", type: "string", default: "" }] };
    const bad = { ...v1, fields: [...v1.fields, { name: "c", type: "int" }] };
    await request(`${base}/config`, { method: "PUT", headers: json, body: JSON.stringify({ compatibility: GLOBAL_COMPATIBILITY }) });
    for (const schema of [v1, v1, v2, bad]) {
      await request(`${base}/subjects/training-value/versions`, { method: "POST", headers: json, body: JSON.stringify({ schema: JSON.stringify(schema) }) });
    }
    await request(`${base}/schemas/ids/1`);
    await request(`${base}/schemas/ids/999`);
    await request(`${base}/subjects/training-value/versions/latest`);
  } finally {
    await stopPid(pidFile, { graceMs: 60_000 });
  }
  if (!existsSync(tmp)) throw new Error(`the JVM wrote no archive at ${tmp}; see ${p.logFile}`);
  renameSync(tmp, p.cdsArchive);
  ctx.log(`registry: class-data archive written (${((Date.now() - t0) / 1000).toFixed(1)} s)`);
}

async function ensureCdsArchive(ctx: StackContext, p: RegistryPaths): Promise<void> {
  if (cdsState(p) !== "missing") return;
  try {
    await buildCdsArchive(ctx, p);
    writeFileSync(p.cdsStamp, `ok ${javaStamp()}\n`);
  } catch (err) {
    rmSync(p.cdsArchive, { force: true });
    writeFileSync(p.cdsStamp, `failed ${javaStamp()}\n`);
    ctx.log(`registry: no class-data archive (starts take longer): ${err instanceof Error ? err.message : String(err)}`);
  } finally {
    rmSync(`${p.cdsArchive}.tmp-${process.pid}`, { force: true });
  }
}

function installStamp(): string {
  return createHash("sha256").update(ARTIFACT).digest("hex");
}

function isInstalled(p: RegistryPaths): boolean {
  return existsSync(p.marker) && readFileSync(p.marker, "utf8").trim() === installStamp() && existsSync(p.jar);
}

/** The pid in the pid file if that process is alive and really is this stack's registry (guards against pid reuse). */
function registryPid(p: RegistryPaths): number | undefined {
  const pid = readPid(p.pidFile);
  if (pid === undefined || !isAlive(pid)) return undefined;
  try {
    const argv = readFileSync(`/proc/${pid}/cmdline`, "utf8").split("\0");
    return argv.includes(p.jar) && argv.some((a) => a.includes(p.dbPath)) ? pid : undefined;
  } catch {
    return pid; // no /proc: trust the pid file
  }
}

function logTail(file: string, lines = 20): string {
  if (!existsSync(file)) return "";
  return readFileSync(file, "utf8").split("\n").slice(-lines).join("\n");
}

async function request(url: string, init: RequestInit = {}, timeoutMs = 3000): Promise<Response> {
  return await fetch(url, { ...init, signal: AbortSignal.timeout(timeoutMs) });
}

/** One readiness probe: GET /subjects answers 200. */
async function subjectsAnswer(ctx: StackContext): Promise<boolean> {
  const res = await request(`${registryUrl(ctx)}/subjects`);
  await res.arrayBuffer();
  return res.status === 200;
}

/**
 * A fresh Apicurio reports NONE from GET /config while it enforces BACKWARD on subjects; setting the
 * global level explicitly makes both agree (and matches Confluent). Done on every start, only written
 * when it differs.
 */
async function ensureGlobalCompatibility(ctx: StackContext): Promise<void> {
  const url = `${registryUrl(ctx)}/config`;
  const got = await request(url);
  const body = (await got.json().catch(() => ({}))) as { compatibilityLevel?: string; compatibility?: string };
  if (got.ok && (body.compatibilityLevel ?? body.compatibility) === GLOBAL_COMPATIBILITY) return;
  const put = await request(url, {
    method: "PUT",
    headers: { "content-type": "application/vnd.schemaregistry.v1+json" },
    body: JSON.stringify({ compatibility: GLOBAL_COMPATIBILITY }),
  });
  const text = await put.text();
  if (!put.ok) throw new Error(`registry: PUT ${url} {"compatibility":"${GLOBAL_COMPATIBILITY}"} answered ${put.status}: ${text}`);
  ctx.log(`registry: global compatibility set to ${GLOBAL_COMPATIBILITY}`);
}

export const registryService: StackService = {
  name: "registry",

  logFile(ctx) {
    return paths(ctx).logFile;
  },

  async install(ctx) {
    const p = paths(ctx);
    if (isInstalled(p)) {
      await ensureCdsArchive(ctx, p);
      return;
    }
    const missing = [
      ...(commandExists("java") ? [] : ["openjdk-17-jre-headless"]),
      ...(commandExists("mvn") ? [] : ["maven"]),
    ];
    if (missing.length) {
      ctx.log(`registry: installing ${missing.join(", ")} with apt`);
      aptInstall(missing, p.logFile);
    }
    if (!existsSync(p.tarball)) {
      ctx.log(`registry: resolving ${ARTIFACT} (~108 MB) with Maven (log: ${p.logFile})`);
      runLogged("mvn", ["-B", "-q", "-Dstyle.color=never", "dependency:get", `-Dartifact=${ARTIFACT}`, "-Dtransitive=false"], p.logFile, {
        cwd: ensureDir(p.dir),
      });
      if (!existsSync(p.tarball)) {
        throw new Error(`registry: mvn dependency:get succeeded but ${p.tarball} is missing (a custom Maven localRepository?)`);
      }
    }
    ctx.log(`registry: unpacking Apicurio Registry ${APICURIO_VERSION} into ${p.home}`);
    // Unpack into a private directory and move it into place, so a failed or concurrent run never
    // leaves a half-filled directory that looks installed. The marker is written last.
    ensureDir(ctx.cacheDir);
    const tmp = `${p.home}.tmp-${process.pid}`;
    rmSync(tmp, { recursive: true, force: true });
    try {
      ensureDir(tmp);
      runLogged("tar", ["-xzf", p.tarball, "-C", tmp], p.logFile);
      if (!existsSync(join(tmp, RUNNER_JAR))) throw new Error(`registry: ${p.tarball} has no ${RUNNER_JAR}`);
      rmSync(p.home, { recursive: true, force: true });
      renameSync(tmp, p.home);
    } finally {
      rmSync(tmp, { recursive: true, force: true });
    }
    writeFileSync(p.marker, `${installStamp()}\n`);
    await ensureCdsArchive(ctx, p);
  },

  async start(ctx) {
    const p = paths(ctx);
    const running = registryPid(p);
    if (running !== undefined) {
      if (await portOpen(ctx.host, ctx.ports.registry)) return;
      ctx.log(`registry: pid ${running} is alive but ${ctx.host}:${ctx.ports.registry} does not answer yet; leaving it to start`);
      return;
    }
    if (await portOpen(ctx.host, ctx.ports.registry)) {
      throw new Error(`registry: ${ctx.host}:${ctx.ports.registry} is already in use by a process this stack did not start (${p.pidFile})`);
    }
    if (!isInstalled(p)) await registryService.install(ctx);
    ensureDir(p.dataDir);
    const pid = startDetached({ command: "java", args: javaArgs(ctx), pidFile: p.pidFile, logFile: p.logFile, cwd: p.dir });
    ctx.log(`registry: started pid ${pid} on ${registryUrl(ctx)} (log: ${p.logFile})`);
  },

  async waitReady(ctx, timeoutMs) {
    const p = paths(ctx);
    let exited = false;
    await waitFor(
      `schema registry at ${registryUrl(ctx)}`,
      async () => {
        if (registryPid(p) === undefined) {
          exited = true;
          return true;
        }
        return await subjectsAnswer(ctx);
      },
      timeoutMs,
      `see ${p.logFile}`,
      250,
    );
    if (exited) {
      throw new Error(`schema registry is not running (no live process in ${p.pidFile}); see ${p.logFile}:\n${logTail(p.logFile)}`);
    }
    await ensureGlobalCompatibility(ctx);
  },

  async stop(ctx, opts = {}) {
    const p = paths(ctx);
    if (registryPid(p) === undefined) {
      rmSync(p.pidFile, { force: true }); // stale (dead or reused pid): never signal a stranger
      return;
    }
    await stopPid(p.pidFile, { force: opts.force ?? false, graceMs: STOP_GRACE_MS });
    // The next start() refuses a port that still answers; wait until the listener is really gone.
    await waitFor(
      `registry port ${ctx.host}:${ctx.ports.registry} to close after stop`,
      async () => !(await portOpen(ctx.host, ctx.ports.registry, 500)),
      10_000,
      `see ${p.logFile}`,
      100,
    );
  },

  async status(ctx): Promise<ServiceStatus> {
    const p = paths(ctx);
    const pid = registryPid(p);
    if (pid === undefined) {
      return {
        name: "registry",
        running: false,
        detail: isInstalled(p) ? "not running" : `not running (Apicurio Registry ${APICURIO_VERSION} not installed)`,
      };
    }
    const answering = await subjectsAnswer(ctx).catch(() => false);
    return {
      name: "registry",
      running: answering,
      pid,
      detail: answering
        ? `${registryUrl(ctx)} (Apicurio Registry ${APICURIO_VERSION}, Confluent-compatible API)`
        : `pid ${pid} alive but ${registryUrl(ctx)} not answering (starting, or see ${p.logFile})`,
    };
  },

  env(ctx) {
    return { MILLRACE_SCHEMA_REGISTRY_URL: registryUrl(ctx) };
  },
};
