/**
 * The local stack: real services (Kafka, a schema registry, PostgreSQL, an S3-compatible server)
 * installed from the package registries this machine reaches and run as plain processes under a
 * project-owned directory. No Docker.
 *
 * Each service implements {@link StackService}. The orchestrator (stack/stack.ts) calls
 * install → start → waitReady for `stack up`, and stop for `stack down`. Every method is idempotent.
 */

export interface StackPorts {
  kafka: number;
  kafkaController: number;
  registry: number;
  postgres: number;
  s3: number;
}

export interface StackContext {
  /** Repository root (where package.json lives). */
  root: string;
  /** Per-checkout state: data directories, pid files, logs. Default `<root>/.stack`. */
  stateDir: string;
  /** Per-machine cache for downloads and builds (Maven repo, Go builds). Default `~/.cache/millrace`. */
  cacheDir: string;
  ports: StackPorts;
  /** Loopback address every service binds to. */
  host: string;
  /**
   * Kafka only, for fault tests: a second client listener on `port` whose advertised address is
   * `advertisedPort` — a TCP fault proxy there forwards to `port`, so the clients that bootstrap
   * through the proxy keep using it (Kafka answers metadata with the listener's own advertised
   * address) while the others use the main listener. Never set by `millrace stack`.
   */
  kafkaProxiedListener?: { port: number; advertisedPort: number };
  log: (msg: string) => void;
}

export interface ServiceStatus {
  name: string;
  running: boolean;
  pid?: number;
  /** One line for humans: address, version, why it is down. */
  detail: string;
}

export interface StackService {
  readonly name: string;
  /** Install binaries/artifacts if missing (cached in cacheDir). Safe to call every time. */
  install(ctx: StackContext): Promise<void>;
  /** Start the process if it is not already running (and initialise data on first start). */
  start(ctx: StackContext): Promise<void>;
  /** Resolve once the service really answers a request; reject with a clear message after timeoutMs. */
  waitReady(ctx: StackContext, timeoutMs: number): Promise<void>;
  /** Stop the process. `force` sends SIGKILL at once (used by crash-recovery tests). */
  stop(ctx: StackContext, opts?: { force?: boolean }): Promise<void>;
  status(ctx: StackContext): Promise<ServiceStatus>;
  /** Connection settings as environment variables (MILLRACE_*), printed by `stack up` and `stack env`. */
  env(ctx: StackContext): Record<string, string>;
  /** Path of the service's log file. */
  logFile(ctx: StackContext): string;
}
