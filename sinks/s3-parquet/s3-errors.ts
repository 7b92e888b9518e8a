/**
 * Which S3 failures are worth retrying (pure): throttling, server errors, timeouts, lost
 * connections, and a body corrupted in transit (the server's checksum check refused it). Everything
 * else — access denied, no such bucket, a bad request, an invalid KMS key — needs a person.
 */

const RETRIABLE_CODES = new Set([
  "SlowDown",
  "Throttling",
  "ThrottlingException",
  "ThrottledException",
  "RequestThrottled",
  "RequestThrottledException",
  "TooManyRequestsException",
  "RequestLimitExceeded",
  "RequestTimeout",
  "RequestTimeoutException",
  "InternalError",
  "ServiceUnavailable",
  "BadDigest",
  "XAmzContentSHA256Mismatch",
  "TimeoutError",
  "NetworkingError",
]);

const NETWORK_CODES = /^(ECONNRESET|ECONNREFUSED|ECONNABORTED|EPIPE|ETIMEDOUT|EHOSTUNREACH|ENETUNREACH|ENOTFOUND|EAI_AGAIN|ESOCKETTIMEDOUT|UND_ERR_[A-Z_]+)$/;

interface SdkErrorLike {
  name?: unknown;
  code?: unknown;
  message?: unknown;
  $retryable?: unknown;
  $metadata?: { httpStatusCode?: unknown };
  cause?: unknown;
}

export function s3StatusCode(err: unknown): number | undefined {
  const status = (err as SdkErrorLike | undefined)?.$metadata?.httpStatusCode;
  return typeof status === "number" ? status : undefined;
}

export function isRetriableS3Error(err: unknown): boolean {
  if (err === null || typeof err !== "object") return false;
  const e = err as SdkErrorLike;
  if ((e as { retriable?: unknown }).retriable === true) return true;
  if (e.$retryable !== undefined && e.$retryable !== null) return true;
  const status = s3StatusCode(err);
  if (status !== undefined && (status >= 500 || status === 429 || status === 408)) return true;
  for (const c of [e.name, e.code]) if (typeof c === "string" && (RETRIABLE_CODES.has(c) || NETWORK_CODES.test(c))) return true;
  const msg = typeof e.message === "string" ? e.message : "";
  if (/socket hang up|ECONNRESET|ECONNREFUSED|EPIPE|ETIMEDOUT|other side closed|connection (?:reset|closed|timed out)/i.test(msg)) return true;
  return e.cause !== undefined && e.cause !== err ? isRetriableS3Error(e.cause) : false;
}
