/**
 * The settings the engine owns, not the component: `inputs` (wiring), `batch` (how many rows go into
 * one sink transaction) and `retry` (how transient failures back off). A component's own config
 * never sees them; its spec lists which of `batch`/`retry` it takes, and the engine carries them out.
 */
import { z } from "zod";
import type { BatchPlan, RetryPlan } from "./plan.ts";
import { duration, integer, number, retries, size } from "./fields.ts";

export const INPUTS_DESCRIPTION =
  "Ids of the components this one takes its data from (processors and data sinks: exactly one, see the rules above); for kafka_dead_letter, the components whose rejections it receives.";

/** Shape only; the graph checks decide whether the ids exist and fit. */
export const inputsSchema = z
  .array(z.string({ error: "expected a component id" }).min(1, { error: "expected a component id" }), {
    error: "expected a list of component ids, e.g. [decode]",
  })
  .describe(INPUTS_DESCRIPTION);

export const batchSchema = z
  .strictObject({
    max_rows: integer({ min: 1, max: 1_000_000 }).prefault(5000).describe("Most rows written in one sink transaction."),
    max_bytes: size({ min: 1024 }).prefault("4MiB").describe("Most payload bytes in one sink transaction (approximate)."),
  })
  .describe("When the engine closes a batch and hands it to the sink: whichever limit is reached first.");

export const retrySchema = z
  .strictObject({
    initial_delay: duration({ min: 1 }).prefault("100ms").describe("Delay before the first retry."),
    max_delay: duration({ min: 1 }).prefault("10s").describe("Longest delay between two retries."),
    factor: number({ min: 1 }).prefault(2).describe("Each delay is the previous one times this (exponential backoff, with jitter)."),
    max_retries: retries()
      .prefault("unlimited")
      .describe("Retries after the first attempt; `unlimited` retries until the worker stops, so nothing is dropped (the partition waits)."),
  })
  .superRefine((r, ctx) => {
    if (r.max_delay < r.initial_delay) ctx.addIssue({ code: "custom", path: ["max_delay"], message: "must be at least initial_delay" });
  })
  .describe("How the engine retries a transient failure (connection lost, serialization failure, 5xx); data errors are dead-lettered, not retried.");

export type FrameworkSetting = "batch" | "retry";

export const FRAMEWORK_SCHEMAS = { batch: batchSchema, retry: retrySchema } as const;

export function batchPlan(b: z.output<typeof batchSchema>): BatchPlan {
  return { maxRows: b.max_rows, maxBytes: b.max_bytes };
}

export function retryPlan(r: z.output<typeof retrySchema>): RetryPlan {
  return { initialDelayMs: r.initial_delay, maxDelayMs: r.max_delay, factor: r.factor, maxRetries: r.max_retries };
}
