/**
 * Field builders for component config schemas. Each carries a `docType` (what docs/topology.md
 * prints in its Type column) and a message that says what a good value looks like; callers add
 * the default (`.prefault(...)`, in YAML form) and `.describe(...)`.
 */
import { z } from "zod";
import { formatDuration, formatSize, parseDuration, parseSize } from "./units.ts";

/** What docs/topology.md prints as a field's type. */
export type DocType = "duration" | "size" | "integer" | "number" | "string" | "boolean" | "topic pattern" | "path" | "integer or `unlimited`";

declare module "zod" {
  interface GlobalMeta {
    docType?: DocType;
  }
}

export const TENANT_PLACEHOLDER = "{tenant_id}";
/** Tenant ids are lower-case UUIDs (see pipelines/runtime/tenant-directory.ts). */
const TENANT_ID_LENGTH = 36;
const KAFKA_TOPIC_MAX = 249;

export function duration(bounds: { min?: number; max?: number } = {}) {
  return z
    .unknown()
    .transform((raw, ctx) => {
      const r = parseDuration(raw);
      if (!r.ok) {
        ctx.addIssue({ code: "custom", message: r.message });
        return z.NEVER;
      }
      if (bounds.min !== undefined && r.value < bounds.min) ctx.addIssue({ code: "custom", message: `must be at least ${formatDuration(bounds.min)}` });
      if (bounds.max !== undefined && r.value > bounds.max) ctx.addIssue({ code: "custom", message: `must be at most ${formatDuration(bounds.max)}` });
      return r.value;
    })
    .meta({ docType: "duration" });
}

export function size(bounds: { min?: number } = {}) {
  return z
    .unknown()
    .transform((raw, ctx) => {
      const r = parseSize(raw);
      if (!r.ok) {
        ctx.addIssue({ code: "custom", message: r.message });
        return z.NEVER;
      }
      if (bounds.min !== undefined && r.value < bounds.min) ctx.addIssue({ code: "custom", message: `must be at least ${formatSize(bounds.min)}` });
      return r.value;
    })
    .meta({ docType: "size" });
}

export function integer(bounds: { min: number; max?: number }) {
  let s = z
    .number({ error: "expected an integer" })
    .int({ error: "expected an integer" })
    .min(bounds.min, { error: `must be at least ${bounds.min}` });
  if (bounds.max !== undefined) s = s.max(bounds.max, { error: `must be at most ${bounds.max}` });
  return s.meta({ docType: "integer" });
}

export function number(bounds: { min: number }) {
  return z.number({ error: "expected a number" }).min(bounds.min, { error: `must be at least ${bounds.min}` }).meta({ docType: "number" });
}

export function boolean() {
  return z.boolean({ error: "expected true or false" }).meta({ docType: "boolean" });
}

export function text() {
  return z.string({ error: "expected a string" }).min(1, { error: "must not be empty" }).meta({ docType: "string" });
}

/** A file path, relative to the topology file's directory (the loader checks that it exists). */
export function path() {
  return z.string({ error: "expected a file path" }).min(1, { error: "must not be empty" }).meta({ docType: "path" });
}

/** A non-negative integer or `unlimited` (→ Infinity: retry until the worker stops, never drop). */
export function retries() {
  return z
    .unknown()
    .transform((raw, ctx) => {
      if (raw === "unlimited") return Number.POSITIVE_INFINITY;
      if (typeof raw === "number" && Number.isSafeInteger(raw) && raw >= 0) return raw;
      ctx.addIssue({ code: "custom", message: "expected a non-negative integer or `unlimited`" });
      return z.NEVER;
    })
    .meta({ docType: "integer or `unlimited`" });
}

/** Problems with a Kafka topic pattern, e.g. `sensor-data-{tenant_id}`; empty when it is fine. */
export function topicPatternProblems(pattern: string): string[] {
  const out: string[] = [];
  const count = pattern.split(TENANT_PLACEHOLDER).length - 1;
  if (count !== 1) out.push(`must contain ${TENANT_PLACEHOLDER} exactly once (found ${count === 0 ? "none" : `${count} times`})`);
  const rest = pattern.replaceAll(TENANT_PLACEHOLDER, "");
  const bad = [...new Set(rest.replace(/[A-Za-z0-9._-]/g, ""))];
  if (bad.length > 0) {
    out.push(`contains ${bad.map((c) => JSON.stringify(c)).join(", ")}: Kafka topic names allow only letters, digits, '.', '_' and '-' (the only placeholder is ${TENANT_PLACEHOLDER})`);
  }
  if (rest.length + TENANT_ID_LENGTH > KAFKA_TOPIC_MAX) out.push(`is too long: with a ${TENANT_ID_LENGTH}-character tenant id it exceeds Kafka's ${KAFKA_TOPIC_MAX}-character topic name limit`);
  return out;
}

export function topicPattern() {
  return z
    .string({ error: `expected a topic pattern containing ${TENANT_PLACEHOLDER}` })
    .superRefine((p, ctx) => {
      for (const message of topicPatternProblems(p)) ctx.addIssue({ code: "custom", message });
    })
    .meta({ docType: "topic pattern" });
}
