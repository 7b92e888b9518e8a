import { describe, expect, it } from "vitest";
import type { S3Client } from "@aws-sdk/client-s3";
import { bucketNameProblem, locationObjectKey, parquetStorageConfig, resolveParquetLocation, S3ClientCache, TenantStorageError, type TenantStorage } from "./location.ts";

const T = "3f1c2a9e-8b7d-4c6e-9a5f-1e2d3c4b5a69";
const env = {
  MILLRACE_S3_ENDPOINT: "http://127.0.0.1:19000",
  MILLRACE_S3_REGION: "us-east-1",
  MILLRACE_S3_ACCESS_KEY_ID: "platform-key",
  MILLRACE_S3_SECRET_ACCESS_KEY: "platform-secret",
  MILLRACE_S3_FORCE_PATH_STYLE: "true",
};
const config = parquetStorageConfig(env);
const shared: TenantStorage = { tenantId: T, deploymentType: "multi-tenant", storageMode: "shared", storageBucket: null, storageRef: null, kmsKeyId: null };
const dedicated: TenantStorage = { tenantId: T, deploymentType: "single-tenant", storageMode: "dedicated", storageBucket: "acme-data", storageRef: null, kmsKeyId: "alias/acme" };

function problems(t: TenantStorage, e: Record<string, string> = {}): readonly string[] {
  try {
    resolveParquetLocation(t, config, e);
  } catch (err) {
    expect(err).toBeInstanceOf(TenantStorageError);
    return (err as TenantStorageError).problems;
  }
  return [];
}

describe("tenant Parquet locations", () => {
  it("reads the platform settings; the shared bucket defaults to millrace-shared", () => {
    expect(config).toEqual({
      sharedBucket: "millrace-shared",
      keyPrefix: "",
      platform: { endpoint: "http://127.0.0.1:19000", region: "us-east-1", forcePathStyle: true, credentials: { accessKeyIdEnv: "MILLRACE_S3_ACCESS_KEY_ID", secretAccessKeyEnv: "MILLRACE_S3_SECRET_ACCESS_KEY" } },
    });
    expect(parquetStorageConfig({}).platform).toEqual({ endpoint: undefined, region: "us-east-1", forcePathStyle: false, credentials: "sdk-default" });
    expect(() => parquetStorageConfig({ MILLRACE_S3_SHARED_BUCKET: "Bad_Bucket", MILLRACE_S3_KEY_PREFIX: "../" })).toThrow(/MILLRACE_S3_SHARED_BUCKET.*MILLRACE_S3_KEY_PREFIX/);
  });

  it("puts a multi-tenant tenant in the shared bucket under its own prefix, without KMS", () => {
    const loc = resolveParquetLocation(shared, config);
    expect(loc).toMatchObject({ mode: "shared", bucket: "millrace-shared", tenantPrefix: `${T}/sensor-data/`, kmsKeyId: undefined, connection: config.platform });
    const key = locationObjectKey(loc, { topic: `sensor-data-${T}`, partition: 0, firstOffset: 0, lastOffset: 1, firstTime: 0 });
    expect(key.startsWith(loc.tenantPrefix)).toBe(true);
  });

  it("puts a single-tenant tenant in its dedicated bucket with its KMS key, on the platform's S3 unless told otherwise", () => {
    expect(resolveParquetLocation(dedicated, config)).toMatchObject({ mode: "dedicated", bucket: "acme-data", kmsKeyId: "alias/acme", tenantPrefix: `${T}/sensor-data/`, connection: config.platform });
  });

  it("takes a dedicated tenant's endpoint, region, credentials and prefix by reference", () => {
    const loc = resolveParquetLocation(
      { ...dedicated, deploymentType: "hybrid", storageRef: { endpoint_env: "ACME_S3_ENDPOINT", region: "eu-central-1", access_key_id_env: "ACME_KEY", secret_access_key_env: "ACME_SECRET", prefix: "millrace/" } },
      config,
      { ACME_S3_ENDPOINT: "https://s3.acme.example" },
    );
    expect(loc.connection).toEqual({ endpoint: "https://s3.acme.example", region: "eu-central-1", forcePathStyle: true, credentials: { accessKeyIdEnv: "ACME_KEY", secretAccessKeyEnv: "ACME_SECRET" } });
    expect(loc.tenantPrefix).toBe(`millrace/${T}/sensor-data/`);
  });

  it("reports every problem of a misconfigured tenant at once", () => {
    expect(problems({ ...shared, storageMode: "dedicated" })).toEqual([
      "a multi-tenant tenant's files go to the shared bucket (storage_mode must be 'shared')",
      "dedicated storage needs tenants.storage_bucket",
      "dedicated storage needs tenants.kms_key_id (every object is written with SSE-KMS)",
    ]);
    expect(problems({ ...dedicated, storageMode: "shared" })).toEqual(["a single-tenant tenant's files go to its dedicated bucket (storage_mode must be 'dedicated')"]);
    expect(problems({ ...dedicated, storageBucket: "millrace-shared" })).toEqual(["storage_bucket millrace-shared is the shared bucket"]);
    expect(problems({ ...dedicated, storageBucket: "../etc", storageRef: { endpoint: "ftp://x", access_key_id_env: "A", secret_access_key_env: "B", prefix: "Up/" } })).toHaveLength(3);
  });

  it("never stores or sends secrets: literal secrets refused, a tenant endpoint needs its own credentials", () => {
    expect(problems({ ...dedicated, storageRef: { secret_access_key: "hunter2", access_key_id: "AKIA…" } })[0]).toMatch(/secrets are never stored.*secret_access_key_env/);
    expect(problems({ ...dedicated, storageRef: { endpoint: "https://s3.acme.example" } })).toEqual([
      "storage_ref: a tenant endpoint needs its own credentials (access_key_id_env, secret_access_key_env)",
    ]);
    expect(problems({ ...dedicated, storageRef: { access_key_id_env: "A" } })).toEqual(["storage_ref: access_key_id_env and secret_access_key_env go together"]);
    expect(problems({ ...dedicated, storageRef: { endpoint_env: "lower_case", typo: 1 } }).join("\n")).toMatch(/endpoint_env.*environment variable[\s\S]*typo/);
    expect(problems({ ...dedicated, storageRef: { endpoint_env: "ACME_S3_ENDPOINT", access_key_id_env: "A", secret_access_key_env: "B" } })).toEqual([
      "environment variable ACME_S3_ENDPOINT (storage_ref.endpoint_env) is not set",
    ]);
  });

  it("checks bucket names", () => {
    for (const b of ["millrace-shared", "a.b-c", "abc"]) expect(bucketNameProblem(b)).toBeUndefined();
    for (const b of ["ab", "Upper", "a_b", "-ab", "a..b", "192.168.0.1", "x".repeat(64)]) expect(bucketNameProblem(b), b).toBeDefined();
  });

  it("caches one client per endpoint and credentials, and a new one when the credentials rotate", () => {
    const e: Record<string, string> = { ...env, ACME_KEY: "k1", ACME_SECRET: "s1" };
    const cache = new S3ClientCache(e);
    try {
      const a = cache.clientFor(config.platform);
      expect(cache.clientFor({ ...config.platform })).toBe(a);
      const acme = { ...config.platform, endpoint: "https://s3.acme.example", credentials: { accessKeyIdEnv: "ACME_KEY", secretAccessKeyEnv: "ACME_SECRET" } };
      const b = cache.clientFor(acme);
      expect(b).not.toBe(a);
      expect(cache.size).toBe(2);
      e.ACME_SECRET = "s2";
      const c = cache.clientFor(acme);
      expect(c).not.toBe(b);
      expect(cache.clientFor(acme)).toBe(c);
      expect(() => cache.clientFor({ ...acme, credentials: { accessKeyIdEnv: "NOPE_KEY", secretAccessKeyEnv: "NOPE_SECRET" } })).toThrow(/NOPE_KEY, NOPE_SECRET not set/);
    } finally {
      cache.destroy();
    }
  });

  it("gives every bucket its own client (and connection pool) on the same endpoint and credentials, rotation per bucket, destroy() all", () => {
    const e: Record<string, string> = { ...env, ACME_KEY: "k1", ACME_SECRET: "s1" };
    const made: Array<{ client: S3Client; bucket: string | undefined }> = [];
    const cache = new S3ClientCache(e, { maxSockets: 3, onCreate: (client, _c, bucket) => made.push({ client, bucket }) });
    const destroyed = new Set<S3Client>();
    try {
      const tenant = (id: string, bucket: string): TenantStorage => ({
        tenantId: id,
        deploymentType: "single-tenant",
        storageMode: "dedicated",
        storageBucket: bucket,
        storageRef: { access_key_id_env: "ACME_KEY", secret_access_key_env: "ACME_SECRET" },
        kmsKeyId: "k",
      });
      const one = resolveParquetLocation(tenant("0b1e9d3c-0000-4000-8000-000000000001", "bucket-one"), config, e);
      const two = resolveParquetLocation(tenant("0b1e9d3c-0000-4000-8000-000000000002", "bucket-two"), config, e);
      expect(one.connection).toEqual(two.connection); // same endpoint, region, addressing, credentials
      const a = cache.clientForLocation(one);
      const b = cache.clientForLocation(two);
      expect(b).not.toBe(a);
      expect(cache.clientForLocation(one)).toBe(a);
      expect(cache.clientFor(one.connection, "bucket-one")).toBe(a);
      const general = cache.clientFor(one.connection);
      expect(general).not.toBe(a);
      expect(made.map((m) => m.bucket)).toEqual(["bucket-one", "bucket-two", undefined]);
      expect(cache.size).toBe(3);
      // Rotation: each bucket's next call makes a new client; the old ones are retired, not dropped.
      e.ACME_SECRET = "s2";
      const a2 = cache.clientForLocation(one);
      expect(a2).not.toBe(a);
      expect(cache.clientForLocation(one)).toBe(a2);
      expect(cache.clientForLocation(two)).not.toBe(b);
      expect(cache.size).toBe(3);
      for (const m of made) {
        const orig = m.client.destroy.bind(m.client);
        m.client.destroy = () => {
          destroyed.add(m.client);
          orig();
        };
      }
    } finally {
      cache.destroy();
    }
    // Every client made (current and retired) is destroyed with the cache.
    expect(made).toHaveLength(5);
    expect(made.every((m) => destroyed.has(m.client))).toBe(true);
    expect(cache.size).toBe(0);
  });
});
