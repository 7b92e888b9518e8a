/**
 * A tenant's place for Parquet files, and the S3 clients that reach it.
 *
 *  shared     multi-tenant tenants (and hybrid ones that chose it): the shared bucket
 *             (MILLRACE_S3_SHARED_BUCKET, default `millrace-shared`), under `{prefix}{tenant_id}/`,
 *             on the platform's S3 (MILLRACE_S3_*).
 *  dedicated  single-tenant tenants (and hybrid ones that chose it): `tenants.storage_bucket`, every
 *             object encrypted with SSE-KMS under `tenants.kms_key_id`; optionally the tenant's own
 *             endpoint, region and credentials, given by reference in `tenants.storage_ref`:
 *               {"endpoint_env": "ACME_S3_ENDPOINT", "region": "eu-central-1",
 *                "access_key_id_env": "ACME_S3_KEY_ID", "secret_access_key_env": "ACME_S3_SECRET"}
 *             Keys: endpoint | endpoint_env, region | region_env, access_key_id_env +
 *             secret_access_key_env (+ session_token_env), force_path_style, prefix. Secrets are
 *             never stored — only the names of environment variables, read when a client is made.
 *
 * A misconfigured tenant gets one {@link TenantStorageError} listing every problem. Nothing here
 * reads process.env: settings and environment are passed in.
 */
import { createHash } from "node:crypto";
import { S3Client, type S3ClientConfig } from "@aws-sdk/client-s3";
import type pg from "pg";
import { z } from "zod";
import { MillraceError } from "../../lib/errors.ts";
import { parquetObjectKey, tenantKeyPrefix, TENANT_ID, validateKeyPrefix, type ParquetKeyParts } from "./keys.ts";

export type Env = Readonly<Record<string, string | undefined>>;

/** A tenant's storage is misconfigured (not retriable: an operator must fix the tenants row or the environment). */
export class TenantStorageError extends MillraceError {
  readonly tenantId: string;
  readonly problems: readonly string[];
  constructor(tenantId: string, problems: readonly string[]) {
    super(`tenant ${tenantId}: Parquet storage is misconfigured: ${problems.join("; ")}`, { retriable: false, stage: "tenant", reason: "invalid_storage_config" });
    this.tenantId = tenantId;
    this.problems = problems;
  }
}

/** Credentials by reference: environment variable names, or the SDK's default provider chain. */
export type CredentialsRef = { accessKeyIdEnv: string; secretAccessKeyEnv: string; sessionTokenEnv?: string } | "sdk-default";

export interface S3ConnectionSettings {
  /** undefined: the AWS endpoint of the region. */
  endpoint: string | undefined;
  region: string;
  forcePathStyle: boolean;
  credentials: CredentialsRef;
}

export interface ParquetStorageConfig {
  sharedBucket: string;
  /** Key prefix before the tenant id ("" or e.g. "raw/"). */
  keyPrefix: string;
  /** The platform's S3: the shared bucket, and dedicated buckets without their own endpoint. */
  platform: S3ConnectionSettings;
}

export interface TenantStorage {
  tenantId: string;
  deploymentType: "multi-tenant" | "single-tenant" | "hybrid";
  storageMode: "shared" | "dedicated";
  storageBucket: string | null;
  storageRef: unknown;
  kmsKeyId: string | null;
}

export interface ParquetLocation {
  tenantId: string;
  mode: "shared" | "dedicated";
  bucket: string;
  /** Configured prefix before the tenant id (the argument of {@link parquetObjectKey}). */
  keyPrefix: string;
  /** `{keyPrefix}{tenant_id}/sensor-data/`: all of this tenant's files, nothing else. */
  tenantPrefix: string;
  /** SSE-KMS key id (dedicated: always set). */
  kmsKeyId: string | undefined;
  connection: S3ConnectionSettings;
}

export const DEFAULT_SHARED_BUCKET = "millrace-shared";
const ENV_NAME = /^[A-Z_][A-Z0-9_]{0,127}$/;
const REGION = /^[a-z0-9-]{1,32}$/;
const KMS_KEY_ID = /^[A-Za-z0-9:/_+=.@-]{1,2048}$/;

/** S3 bucket naming rules (general purpose buckets). */
export function bucketNameProblem(bucket: string): string | undefined {
  if (!/^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$/.test(bucket)) return `bucket ${JSON.stringify(bucket)} is not a valid S3 bucket name (3-63 of [a-z0-9.-], starting and ending with a letter or digit)`;
  if (bucket.includes("..") || /^\d+\.\d+\.\d+\.\d+$/.test(bucket) || bucket.startsWith("xn--") || bucket.endsWith("-s3alias")) return `bucket ${JSON.stringify(bucket)} is not a valid S3 bucket name`;
  return undefined;
}

function endpointProblem(url: string): string | undefined {
  try {
    const u = new URL(url);
    if (u.protocol !== "http:" && u.protocol !== "https:") return `endpoint ${JSON.stringify(url)} is not http(s)`;
    if (u.username || u.password) return `endpoint ${JSON.stringify(url)} must not carry credentials`;
    return undefined;
  } catch {
    return `endpoint ${JSON.stringify(url)} is not a URL`;
  }
}

/**
 * The sink's storage settings from the environment (the worker passes process.env, after the stack's
 * env file is loaded): MILLRACE_S3_SHARED_BUCKET, MILLRACE_S3_KEY_PREFIX, MILLRACE_S3_ENDPOINT,
 * MILLRACE_S3_REGION, MILLRACE_S3_FORCE_PATH_STYLE, and the credentials' variable names
 * MILLRACE_S3_ACCESS_KEY_ID / MILLRACE_S3_SECRET_ACCESS_KEY (used when set; else the SDK's chain).
 */
export function parquetStorageConfig(env: Env): ParquetStorageConfig {
  const problems: string[] = [];
  const sharedBucket = env.MILLRACE_S3_SHARED_BUCKET || DEFAULT_SHARED_BUCKET;
  const bp = bucketNameProblem(sharedBucket);
  if (bp) problems.push(`MILLRACE_S3_SHARED_BUCKET: ${bp}`);
  const keyPrefix = env.MILLRACE_S3_KEY_PREFIX ?? "";
  try {
    validateKeyPrefix(keyPrefix);
  } catch (err) {
    problems.push(`MILLRACE_S3_KEY_PREFIX: ${(err as Error).message}`);
  }
  const endpoint = env.MILLRACE_S3_ENDPOINT || undefined;
  if (endpoint) {
    const ep = endpointProblem(endpoint);
    if (ep) problems.push(`MILLRACE_S3_ENDPOINT: ${ep}`);
  }
  const region = env.MILLRACE_S3_REGION || "us-east-1";
  if (!REGION.test(region)) problems.push(`MILLRACE_S3_REGION ${JSON.stringify(region)} is not a region name`);
  const fps = env.MILLRACE_S3_FORCE_PATH_STYLE;
  if (fps !== undefined && fps !== "" && fps !== "true" && fps !== "false") problems.push(`MILLRACE_S3_FORCE_PATH_STYLE must be true or false`);
  if (problems.length > 0) throw new Error(`Parquet sink settings: ${problems.join("; ")}`);
  const hasKeys = Boolean(env.MILLRACE_S3_ACCESS_KEY_ID) && Boolean(env.MILLRACE_S3_SECRET_ACCESS_KEY);
  return {
    sharedBucket,
    keyPrefix,
    platform: {
      endpoint,
      region,
      // A custom endpoint (the local stack, MinIO-likes) is addressed path-style unless told otherwise.
      forcePathStyle: fps === "true" || (fps !== "false" && endpoint !== undefined),
      credentials: hasKeys ? { accessKeyIdEnv: "MILLRACE_S3_ACCESS_KEY_ID", secretAccessKeyEnv: "MILLRACE_S3_SECRET_ACCESS_KEY" } : "sdk-default",
    },
  };
}

const envName = z.string().regex(ENV_NAME, "must name an environment variable ([A-Z_][A-Z0-9_]*)");
const storageRefSchema = z.strictObject({
  endpoint: z.string().optional(),
  endpoint_env: envName.optional(),
  region: z.string().regex(REGION, "must be a region name").optional(),
  region_env: envName.optional(),
  access_key_id_env: envName.optional(),
  secret_access_key_env: envName.optional(),
  session_token_env: envName.optional(),
  force_path_style: z.boolean().optional(),
  prefix: z.string().optional(),
});
type StorageRef = z.infer<typeof storageRefSchema>;

const SECRET_LITERAL_KEYS = ["access_key_id", "secret_access_key", "session_token", "secret", "password", "credentials"];

function parseStorageRef(raw: unknown, problems: string[]): StorageRef | undefined {
  if (raw === null || raw === undefined) return {};
  if (typeof raw === "object" && !Array.isArray(raw)) {
    const literal = Object.keys(raw).filter((k) => SECRET_LITERAL_KEYS.includes(k));
    if (literal.length > 0) {
      problems.push(`storage_ref holds ${literal.join(", ")}: secrets are never stored in the tenants table; name environment variables instead (${literal.map((k) => `${k}_env`).join(", ")})`);
      return undefined;
    }
  }
  const res = storageRefSchema.safeParse(raw);
  if (!res.success) {
    for (const issue of res.error.issues) problems.push(`storage_ref${issue.path.length ? `.${issue.path.join(".")}` : ""}: ${issue.message}`);
    return undefined;
  }
  const ref = res.data;
  if (ref.endpoint !== undefined && ref.endpoint_env !== undefined) problems.push("storage_ref: give endpoint or endpoint_env, not both");
  if (ref.region !== undefined && ref.region_env !== undefined) problems.push("storage_ref: give region or region_env, not both");
  if ((ref.access_key_id_env === undefined) !== (ref.secret_access_key_env === undefined)) problems.push("storage_ref: access_key_id_env and secret_access_key_env go together");
  if (ref.session_token_env !== undefined && ref.access_key_id_env === undefined) problems.push("storage_ref: session_token_env needs access_key_id_env and secret_access_key_env");
  if (ref.endpoint !== undefined) {
    const ep = endpointProblem(ref.endpoint);
    if (ep) problems.push(`storage_ref: ${ep}`);
  }
  if ((ref.endpoint !== undefined || ref.endpoint_env !== undefined) && ref.access_key_id_env === undefined) {
    // Never send the platform's credentials to a tenant's own endpoint.
    problems.push("storage_ref: a tenant endpoint needs its own credentials (access_key_id_env, secret_access_key_env)");
  }
  if (ref.prefix !== undefined) {
    try {
      validateKeyPrefix(ref.prefix);
    } catch (err) {
      problems.push(`storage_ref.prefix: ${(err as Error).message}`);
    }
  }
  return ref;
}

/**
 * Where the tenant's files go. Throws {@link TenantStorageError} with every problem: a multi-tenant
 * tenant set to dedicated storage, a single-tenant one set to shared, a dedicated tenant without a
 * bucket or KMS key, a dedicated bucket that is the shared one, a bad storage_ref.
 */
export function resolveParquetLocation(t: TenantStorage, config: ParquetStorageConfig, env: Env = {}): ParquetLocation {
  const problems: string[] = [];
  if (!TENANT_ID.test(t.tenantId)) throw new TenantStorageError(String(t.tenantId), ["tenant id is not a lower-case UUID"]);
  if (t.deploymentType === "multi-tenant" && t.storageMode !== "shared") problems.push("a multi-tenant tenant's files go to the shared bucket (storage_mode must be 'shared')");
  if (t.deploymentType === "single-tenant" && t.storageMode !== "dedicated") problems.push("a single-tenant tenant's files go to its dedicated bucket (storage_mode must be 'dedicated')");

  if (t.storageMode === "shared") {
    if (problems.length > 0) throw new TenantStorageError(t.tenantId, problems);
    return {
      tenantId: t.tenantId,
      mode: "shared",
      bucket: config.sharedBucket,
      keyPrefix: config.keyPrefix,
      tenantPrefix: tenantKeyPrefix(config.keyPrefix, t.tenantId),
      kmsKeyId: undefined,
      connection: config.platform,
    };
  }

  const bucket = t.storageBucket ?? "";
  if (!bucket) problems.push("dedicated storage needs tenants.storage_bucket");
  else {
    const bp = bucketNameProblem(bucket);
    if (bp) problems.push(`storage_bucket: ${bp}`);
    if (bucket === config.sharedBucket) problems.push(`storage_bucket ${bucket} is the shared bucket`);
  }
  if (!t.kmsKeyId) problems.push("dedicated storage needs tenants.kms_key_id (every object is written with SSE-KMS)");
  else if (!KMS_KEY_ID.test(t.kmsKeyId)) problems.push("kms_key_id is not a KMS key id, alias or ARN");
  const ref = parseStorageRef(t.storageRef, problems);
  let connection = config.platform;
  if (ref) {
    const endpoint = ref.endpoint ?? (ref.endpoint_env !== undefined ? env[ref.endpoint_env] : config.platform.endpoint);
    if (ref.endpoint_env !== undefined && !endpoint) problems.push(`environment variable ${ref.endpoint_env} (storage_ref.endpoint_env) is not set`);
    else if (ref.endpoint_env !== undefined && endpoint) {
      const ep = endpointProblem(endpoint);
      if (ep) problems.push(`${ref.endpoint_env}: ${ep}`);
    }
    const region = ref.region ?? (ref.region_env !== undefined ? env[ref.region_env] : config.platform.region);
    if (ref.region_env !== undefined && (!region || !REGION.test(region))) problems.push(`environment variable ${ref.region_env} (storage_ref.region_env) is not set to a region name`);
    connection = {
      endpoint: endpoint || undefined,
      region: region ?? config.platform.region,
      forcePathStyle: ref.force_path_style ?? (endpoint ? config.platform.forcePathStyle || endpoint !== config.platform.endpoint : config.platform.forcePathStyle),
      credentials:
        ref.access_key_id_env !== undefined && ref.secret_access_key_env !== undefined
          ? { accessKeyIdEnv: ref.access_key_id_env, secretAccessKeyEnv: ref.secret_access_key_env, ...(ref.session_token_env ? { sessionTokenEnv: ref.session_token_env } : {}) }
          : config.platform.credentials,
    };
  }
  if (problems.length > 0) throw new TenantStorageError(t.tenantId, problems);
  const keyPrefix = ref?.prefix ?? config.keyPrefix;
  return {
    tenantId: t.tenantId,
    mode: "dedicated",
    bucket,
    keyPrefix,
    tenantPrefix: tenantKeyPrefix(keyPrefix, t.tenantId),
    kmsKeyId: t.kmsKeyId!,
    connection,
  };
}

/** The object key of a file in this location (tenant id and prefix come from the location only). */
export function locationObjectKey(loc: ParquetLocation, file: Omit<ParquetKeyParts, "prefix" | "tenantId">): string {
  return parquetObjectKey({ ...file, prefix: loc.keyPrefix, tenantId: loc.tenantId });
}

/** One line for logs and describe(): no secrets (there are none here, only variable names). */
export function describeLocation(loc: ParquetLocation): string {
  const c = loc.connection;
  const creds = c.credentials === "sdk-default" ? "sdk default credentials" : `credentials from $${c.credentials.accessKeyIdEnv}/$${c.credentials.secretAccessKeyEnv}`;
  return `${loc.mode} s3://${loc.bucket}/${loc.tenantPrefix}${loc.kmsKeyId ? ` (SSE-KMS ${loc.kmsKeyId})` : ""} via ${c.endpoint ?? `AWS ${c.region}`}${c.forcePathStyle ? " path-style" : ""}, ${creds}`;
}

interface TenantStorageRow {
  tenant_id: string;
  deployment_type: TenantStorage["deploymentType"];
  storage_mode: TenantStorage["storageMode"];
  storage_bucket: string | null;
  storage_ref: unknown;
  kms_key_id: string | null;
}

const TENANT_STORAGE_SQL = "SELECT tenant_id, deployment_type, storage_mode, storage_bucket, storage_ref, kms_key_id FROM tenants";

function fromRow(r: TenantStorageRow): TenantStorage {
  return { tenantId: r.tenant_id, deploymentType: r.deployment_type, storageMode: r.storage_mode, storageBucket: r.storage_bucket, storageRef: r.storage_ref, kmsKeyId: r.kms_key_id };
}

/** The tenant's storage settings (tenants table), or undefined for an unknown tenant. */
export async function loadTenantStorage(pool: pg.Pool, tenantId: string): Promise<TenantStorage | undefined> {
  const res = await pool.query<TenantStorageRow>(`${TENANT_STORAGE_SQL} WHERE tenant_id = $1`, [tenantId]);
  const r = res.rows[0];
  return r ? fromRow(r) : undefined;
}

/** Every tenant's storage settings. */
export async function loadAllTenantStorage(pool: pg.Pool): Promise<TenantStorage[]> {
  const res = await pool.query<TenantStorageRow>(`${TENANT_STORAGE_SQL} ORDER BY tenant_id`);
  return res.rows.map(fromRow);
}

/** Connections per S3 client (per bucket) unless told otherwise: the SDK's own default. */
export const DEFAULT_MAX_SOCKETS = 50;

export interface S3ClientCacheOptions {
  /**
   * The SDK's request timeout (ms, default 30 s). With @smithy/node-http-handler 4.x passing it only
   * logs a warning (the SDK fails the request only with `throwOnRequestTimeout`, not set here).
   */
  requestTimeoutMs?: number;
  connectionTimeoutMs?: number;
  /**
   * SDK-level attempts per request (default 1: the uploader retries with lib/retry.ts, so attempts
   * do not multiply).
   */
  maxAttempts?: number;
  /**
   * Connections per client, i.e. per bucket (the SDK node handler's agent `maxSockets`; default 50,
   * the SDK's own default). A request waiting longer than `connectionTimeoutMs` for a free socket
   * fails (retriable) and is retried by the uploader.
   */
  maxSockets?: number;
  /** Called with every new client (tests add request-recording middleware here). */
  onCreate?: (client: S3Client, connection: S3ConnectionSettings, bucket: string | undefined) => void;
}

/**
 * One S3 client — and so one connection pool (`maxSockets`) — per bucket and distinct endpoint,
 * region, addressing and credentials: a slow bucket whose requests hold every socket of its pool
 * delays only the uploads to that bucket, never another tenant's on the same endpoint (the shared
 * bucket is one bucket: its tenants share its client). Credential variables are read when a client
 * is made; if their values change (rotation), the next call makes a new client.
 */
export class S3ClientCache {
  private readonly clients = new Map<string, { client: S3Client; fingerprint: string }>();
  /** Clients replaced after a credential rotation: requests in flight finish; destroyed with the cache. */
  private readonly retired: S3Client[] = [];

  constructor(
    private readonly env: Env,
    private readonly opts: S3ClientCacheOptions = {},
  ) {}

  get size(): number {
    return this.clients.size;
  }

  /**
   * The client for `bucket` on `connection`. Without a bucket: a client for requests not aimed at
   * one bucket's objects (its own pool, apart from every bucket's).
   */
  clientFor(connection: S3ConnectionSettings, bucket?: string): S3Client {
    let credentials: S3ClientConfig["credentials"];
    let fingerprint = "sdk-default";
    if (connection.credentials !== "sdk-default") {
      const c = connection.credentials;
      const missing = [c.accessKeyIdEnv, c.secretAccessKeyEnv, ...(c.sessionTokenEnv ? [c.sessionTokenEnv] : [])].filter((n) => !this.env[n]);
      if (missing.length > 0) throw new Error(`S3 credentials: environment variable${missing.length > 1 ? "s" : ""} ${missing.join(", ")} not set`);
      credentials = {
        accessKeyId: this.env[c.accessKeyIdEnv]!,
        secretAccessKey: this.env[c.secretAccessKeyEnv]!,
        ...(c.sessionTokenEnv ? { sessionToken: this.env[c.sessionTokenEnv]! } : {}),
      };
      fingerprint = createHash("sha256").update(JSON.stringify(credentials)).digest("hex");
    }
    // Keyed by bucket, where and as whom (variable names, never values); the values' fingerprint detects rotation.
    const key = JSON.stringify([bucket ?? null, connection.endpoint ?? null, connection.region, connection.forcePathStyle, connection.credentials]);
    const cached = this.clients.get(key);
    if (cached && cached.fingerprint === fingerprint) return cached.client;
    if (cached) this.retired.push(cached.client);
    const client = new S3Client({
      ...(connection.endpoint ? { endpoint: connection.endpoint } : {}),
      region: connection.region,
      forcePathStyle: connection.forcePathStyle,
      ...(credentials ? { credentials } : {}),
      maxAttempts: this.opts.maxAttempts ?? 1,
      requestHandler: {
        requestTimeout: this.opts.requestTimeoutMs ?? 30_000,
        connectionTimeout: this.opts.connectionTimeoutMs ?? 5_000,
        // The SDK makes its keep-alive agents from these options (its default maxSockets is 50).
        httpAgent: { maxSockets: this.opts.maxSockets ?? DEFAULT_MAX_SOCKETS },
        httpsAgent: { maxSockets: this.opts.maxSockets ?? DEFAULT_MAX_SOCKETS },
      },
    });
    this.opts.onCreate?.(client, connection, bucket);
    this.clients.set(key, { client, fingerprint });
    return client;
  }

  clientForLocation(loc: ParquetLocation): S3Client {
    return this.clientFor(loc.connection, loc.bucket);
  }

  destroy(): void {
    for (const c of this.clients.values()) c.client.destroy();
    for (const c of this.retired) c.destroy();
    this.clients.clear();
    this.retired.length = 0;
  }
}
