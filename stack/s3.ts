/**
 * The S3-compatible server of the local stack: Versity S3 Gateway (versitygw, Apache-2.0) with its
 * posix backend — each bucket a directory of `<stateDir>/s3/data`, each object a file, metadata in
 * extended attributes — so data survives restarts and SIGKILL. Path-style addressing, ListObjectsV2
 * with continuation tokens and multipart uploads (incl. abort and ListMultipartUploads) are native.
 * SSE-KMS request headers are accepted but not stored or echoed (versitygw never reads them); why
 * this server anyway, and what was tried, is in docs/stack-s3.md.
 *
 * Installed with `go install github.com/versity/versitygw/cmd/versitygw@<version>` (Go module proxy)
 * into `<cacheDir>/bin`, marked with a version stamp; the Go build cache makes a rebuild quick.
 */
import { existsSync, readFileSync, renameSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { ListBucketsCommand, S3Client } from "@aws-sdk/client-s3";
import { aptInstall, commandExists, ensureDir, isAlive, portOpen, readPid, runLogged, startDetached, stopPid, waitFor } from "./process.ts";
import type { ServiceStatus, StackContext, StackService } from "./types.ts";

export const VERSITYGW_MODULE = "github.com/versity/versitygw";
export const VERSITYGW_VERSION = "v1.8.0";
export const S3_REGION = "us-east-1";
/** Fixed dev credentials of the gateway's root account (loopback only). */
export const S3_ACCESS_KEY_ID = "millrace";
export const S3_SECRET_ACCESS_KEY = "millrace-dev-secret";

const STOP_GRACE_MS = 15_000;
const PORT_RELEASE_MS = 10_000;

interface S3Paths {
  dir: string;
  dataDir: string;
  pidFile: string;
  logFile: string;
  binDir: string;
  binary: string;
  stamp: string;
}

function paths(ctx: StackContext): S3Paths {
  const dir = join(ctx.stateDir, "s3");
  const binDir = join(ctx.cacheDir, "bin");
  return {
    dir,
    dataDir: join(dir, "data"),
    pidFile: join(dir, "versitygw.pid"),
    logFile: join(dir, "versitygw.log"),
    binDir,
    binary: join(binDir, "versitygw"),
    stamp: join(binDir, "versitygw.version"),
  };
}

function endpoint(ctx: StackContext): string {
  return `http://${ctx.host}:${ctx.ports.s3}`;
}

/** Link-time version strings (main.Version etc., normally set by versitygw's Makefile). */
function ldflags(): string {
  return `-X main.Version=${VERSITYGW_VERSION} -X main.Build=go-install -X main.BuildTime=module-proxy`;
}

function installStamp(): string {
  return `${VERSITYGW_MODULE}@${VERSITYGW_VERSION} ${ldflags()}`;
}

function isInstalled(p: S3Paths): boolean {
  return existsSync(p.binary) && existsSync(p.stamp) && readFileSync(p.stamp, "utf8").trim() === installStamp();
}

/** The pid in the pid file if it is alive and really is this stack's gateway (guards against pid reuse). */
function gatewayPid(p: S3Paths): number | undefined {
  const pid = readPid(p.pidFile);
  if (pid === undefined || !isAlive(pid)) return undefined;
  try {
    const argv = readFileSync(`/proc/${pid}/cmdline`, "utf8").split("\0");
    return argv[0] === p.binary && argv.includes(p.dataDir) ? pid : undefined;
  } catch {
    return pid; // no /proc: trust the pid file
  }
}

function logTail(file: string, lines = 20): string {
  if (!existsSync(file)) return "";
  return readFileSync(file, "utf8").split("\n").slice(-lines).join("\n");
}

async function waitPortClosed(ctx: StackContext, timeoutMs: number): Promise<void> {
  await waitFor(`release of ${ctx.host}:${ctx.ports.s3}`, async () => !(await portOpen(ctx.host, ctx.ports.s3, 500)), timeoutMs, "", 100);
}

export function s3Client(ctx: StackContext): S3Client {
  return new S3Client({
    endpoint: endpoint(ctx),
    region: S3_REGION,
    forcePathStyle: true,
    credentials: { accessKeyId: S3_ACCESS_KEY_ID, secretAccessKey: S3_SECRET_ACCESS_KEY },
    maxAttempts: 1,
  });
}

async function listBucketsAnswers(ctx: StackContext): Promise<boolean> {
  const client = s3Client(ctx);
  try {
    const res = await client.send(new ListBucketsCommand({}), { abortSignal: AbortSignal.timeout(5000) });
    return res.$metadata.httpStatusCode === 200;
  } finally {
    client.destroy();
  }
}

// ---------------------------------------------------------------------------------------------

export const s3Service: StackService = {
  name: "s3",

  logFile(ctx) {
    return paths(ctx).logFile;
  },

  async install(ctx) {
    const p = paths(ctx);
    if (isInstalled(p)) return;
    if (!commandExists("go")) {
      // Debian's Go may be older than versitygw's go.mod asks; GOTOOLCHAIN=auto then fetches a newer
      // toolchain through the Go module proxy.
      ctx.log("s3: installing Go with apt");
      aptInstall(["golang-go"], p.logFile);
    }
    ctx.log(`s3: building versitygw ${VERSITYGW_VERSION} with go install into ${p.binDir} (a few minutes the first time; log: ${p.logFile})`);
    ensureDir(p.binDir);
    // Build into a private directory and move the binary into place; the stamp is written last.
    const tmp = join(p.binDir, `.versitygw-build-${process.pid}`);
    rmSync(tmp, { recursive: true, force: true });
    try {
      runLogged("go", ["install", `-ldflags=${ldflags()}`, `${VERSITYGW_MODULE}/cmd/versitygw@${VERSITYGW_VERSION}`], p.logFile, {
        env: { ...process.env, GOBIN: tmp, GOFLAGS: "-buildvcs=false", GOTOOLCHAIN: process.env.GOTOOLCHAIN ?? "auto" },
        cwd: p.binDir,
      });
      renameSync(join(tmp, "versitygw"), p.binary);
    } finally {
      rmSync(tmp, { recursive: true, force: true });
    }
    writeFileSync(p.stamp, `${installStamp()}\n`);
  },

  async start(ctx) {
    const p = paths(ctx);
    if (gatewayPid(p) !== undefined) return;
    try {
      await waitPortClosed(ctx, PORT_RELEASE_MS);
    } catch {
      throw new Error(`s3: ${ctx.host}:${ctx.ports.s3} is in use by a process this stack did not start (no live versitygw in ${p.pidFile})`);
    }
    if (!isInstalled(p)) await s3Service.install(ctx);
    ensureDir(p.dataDir);
    const pid = startDetached({
      command: p.binary,
      args: ["--port", `${ctx.host}:${ctx.ports.s3}`, "--region", S3_REGION, "posix", p.dataDir],
      pidFile: p.pidFile,
      logFile: p.logFile,
      cwd: p.dir,
      // Credentials through the environment, not argv (ps shows argv).
      env: { ...process.env, ROOT_ACCESS_KEY_ID: S3_ACCESS_KEY_ID, ROOT_SECRET_ACCESS_KEY: S3_SECRET_ACCESS_KEY },
    });
    ctx.log(`s3: started versitygw pid ${pid} on ${endpoint(ctx)} (data: ${p.dataDir}, log: ${p.logFile})`);
  },

  async waitReady(ctx, timeoutMs) {
    const p = paths(ctx);
    let exited = false;
    await waitFor(
      `S3 (versitygw) on ${endpoint(ctx)}`,
      async () => {
        if (gatewayPid(p) === undefined) {
          exited = true;
          return true;
        }
        return await listBucketsAnswers(ctx);
      },
      timeoutMs,
      `see ${p.logFile}`,
      200,
    );
    if (exited) {
      throw new Error(`S3 (versitygw) on ${endpoint(ctx)} is not running (no live process in ${p.pidFile}); see ${p.logFile}:\n${logTail(p.logFile)}`);
    }
  },

  async stop(ctx, opts = {}) {
    const p = paths(ctx);
    if (gatewayPid(p) === undefined) {
      rmSync(p.pidFile, { force: true }); // stale (dead or reused pid): never signal a stranger
      return;
    }
    await stopPid(p.pidFile, { force: opts.force ?? false, graceMs: STOP_GRACE_MS });
    await waitPortClosed(ctx, PORT_RELEASE_MS);
  },

  async status(ctx): Promise<ServiceStatus> {
    const p = paths(ctx);
    const pid = gatewayPid(p);
    if (pid === undefined) {
      return { name: "s3", running: false, detail: isInstalled(p) ? "not running" : `not running (versitygw ${VERSITYGW_VERSION} not built yet)` };
    }
    const answering = await portOpen(ctx.host, ctx.ports.s3);
    return {
      name: "s3",
      running: answering,
      pid,
      detail: answering
        ? `${endpoint(ctx)} (versitygw ${VERSITYGW_VERSION}, posix backend on ${p.dataDir})`
        : `pid ${pid} alive but ${endpoint(ctx)} not answering (starting, or see ${p.logFile})`,
    };
  },

  env(ctx) {
    return {
      MILLRACE_S3_ENDPOINT: endpoint(ctx),
      MILLRACE_S3_REGION: S3_REGION,
      MILLRACE_S3_ACCESS_KEY_ID: S3_ACCESS_KEY_ID,
      MILLRACE_S3_SECRET_ACCESS_KEY: S3_SECRET_ACCESS_KEY,
      MILLRACE_S3_FORCE_PATH_STYLE: "true",
    };
  },
};

