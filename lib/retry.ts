/**
 * One retry policy for the whole pipeline, on p-retry: exponential backoff with jitter, a cap on the
 * delay, an optional cap on attempts; non-retriable errors bail at once; an abort signal stops it.
 */
import pRetry from "p-retry";

export interface RetryPolicy {
  /** Retries after the first attempt; Infinity retries until aborted. */
  retries: number;
  initialDelayMs: number;
  maxDelayMs: number;
  factor: number;
}

export const defaultRetryPolicy: RetryPolicy = { retries: Infinity, initialDelayMs: 100, maxDelayMs: 10_000, factor: 2 };

export async function retry<T>(
  fn: (attempt: number) => Promise<T>,
  policy: RetryPolicy,
  opts: { retriable: (err: unknown) => boolean; onRetry?: (err: unknown, attempt: number) => void; signal?: AbortSignal },
): Promise<T> {
  return await pRetry(fn, {
    retries: policy.retries,
    factor: policy.factor,
    minTimeout: policy.initialDelayMs,
    maxTimeout: policy.maxDelayMs,
    randomize: policy.initialDelayMs > 0,
    signal: opts.signal,
    shouldRetry: ({ error }) => opts.retriable(error),
    onFailedAttempt: ({ error, attemptNumber, retriesLeft }) => {
      if (retriesLeft > 0 && opts.retriable(error)) opts.onRetry?.(error, attemptNumber);
    },
  });
}
