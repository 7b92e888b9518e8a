import { describe, expect, it } from "vitest";
import type { ManifestEntry } from "./manifest.ts";
import { rangeProblems } from "./verify.ts";
import { isRetriableS3Error } from "./s3-errors.ts";
import { compositeSha256, sha256 } from "./uploader.ts";

function entry(partition: number, first: number, last: number): ManifestEntry {
  return {
    topic: "sensor-data-x",
    partition,
    firstOffset: first,
    lastOffset: last,
    consumerGroup: "g",
    tenantId: "t",
    bucket: "b",
    objectKey: `k-${partition}-${first}`,
    status: "uploaded",
    rowCount: 1,
    byteSize: 1,
    sha256: "0".repeat(64),
    minTime: 0,
    maxTime: 0,
    createdAt: new Date(0),
    uploadedAt: new Date(0),
  };
}

describe("rangeProblems", () => {
  it("accepts consecutive ranges per partition, in any order", () => {
    expect(rangeProblems([entry(0, 10, 19), entry(0, 0, 9), entry(1, 5, 5), entry(1, 6, 100)])).toEqual([]);
  });
  it("names each gap and overlap with its offsets", () => {
    const p = rangeProblems([entry(0, 0, 9), entry(0, 12, 20), entry(0, 18, 30), entry(1, 0, 5)]);
    expect(p.map((x) => [x.kind, x.message])).toEqual([
      ["gap", "sensor-data-x[0]: offsets 10-11 are in no file (between 0-9 and 12-20)"],
      ["overlap", "sensor-data-x[0]: offsets 18-20 are in two files (12-20 and 18-30)"],
    ]);
  });
});

describe("S3 retry table", () => {
  it("retries throttling, 5xx, timeouts, lost connections and corrupted bodies; not access or request errors", () => {
    const sdk = (name: string, status?: number) => Object.assign(new Error(name), { name, $metadata: { httpStatusCode: status } });
    for (const e of [sdk("SlowDown", 503), sdk("InternalError", 500), sdk("Whatever", 502), sdk("RequestTimeout", 400), sdk("BadDigest", 400), sdk("TooManyRequests", 429), Object.assign(new Error("read ECONNRESET"), { code: "ECONNRESET" }), new Error("socket hang up"), sdk("TimeoutError")]) {
      expect(isRetriableS3Error(e), e.message).toBe(true);
    }
    for (const e of [sdk("AccessDenied", 403), sdk("NoSuchBucket", 404), sdk("InvalidRequest", 400), sdk("KMS.NotFoundException", 400), new TypeError("x"), undefined, "string"]) {
      expect(isRetriableS3Error(e), String(e)).toBe(false);
    }
  });
  it("computes S3's composite SHA-256 of a multipart object", () => {
    const parts = [Buffer.from("a"), Buffer.from("b")].map((b) => sha256(b).raw);
    expect(compositeSha256(parts)).toMatch(/^[A-Za-z0-9+/]{43}=-2$/);
  });
});
