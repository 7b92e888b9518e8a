/**
 * What every component type exports: one spec object. The loader validates a topology.yaml entry
 * against `config`, docs/topology.md is rendered from it, and `plan` turns the validated config into
 * the entry of the frozen {@link TopologyPlan} the engine builds from.
 */
import type { z } from "zod";
import type { BatchPlan, ProcessorPlan, RetryPlan, SinkPlan, SourcePlan } from "./plan.ts";
import type { FrameworkSetting } from "./framework.ts";

export type ComponentKind = "source" | "processor" | "sink";

/** What flows along an edge; the loader checks that each input emits what its consumer accepts. */
export type DataKind = "kafka_records" | "decoded_readings" | "stored_readings";

export const DATA_KIND_LABEL: Record<DataKind | "rejections", string> = {
  kafka_records: "Kafka records (Confluent wire-format Avro bytes)",
  decoded_readings: "decoded readings",
  stored_readings: "validated readings",
  rejections: "rejections",
};

/** Where a component-specific check found a problem, relative to the component's entry. */
export interface ConfigProblem {
  path: (string | number)[];
  message: string;
}

/** What a component reads or writes that no other component may also write (e.g. a topic pattern). */
export interface ResourceClaim {
  /** Setting that names it, relative to the entry, e.g. `["topic_pattern"]`. */
  path: string[];
  /** Stable key, e.g. `kafka_topic:dead-letters-{tenant_id}`. */
  resource: string;
  /** For messages, e.g. `the topics dead-letters-{tenant_id}`. */
  label: string;
  access: "read" | "write";
}

export interface PlanArgs<Config> {
  id: string;
  config: Config;
  /** The ids under `inputs:`, in order (empty for a source). */
  inputs: readonly string[];
  /** Present when the spec lists `batch` / `retry` in `framework`. */
  batch?: BatchPlan;
  retry?: RetryPlan;
  /** Directory of the topology file: relative paths in the config are resolved against it. */
  baseDir: string;
}

type PlanFor<K extends ComponentKind> = K extends "source" ? SourcePlan : K extends "processor" ? ProcessorPlan : SinkPlan;

export interface ComponentSpec<K extends ComponentKind = ComponentKind, C extends z.ZodObject = z.ZodObject> {
  /** snake_case id used as `type:` in topology.yaml; the file is components/<type in kebab-case>.ts. */
  type: string;
  kind: K;
  /** One or two sentences for docs/topology.md. */
  summary: string;
  /** The component's own settings: a strict object, every field described and defaulted. */
  config: C;
  /** Engine-owned settings this component takes besides `inputs`. */
  framework: readonly FrameworkSetting[];
  /** What it takes from its input (sources take nothing); `rejections` = the dead-letter sink. */
  accepts?: DataKind | "rejections";
  /** What it passes on (sinks emit nothing but rejections). */
  emits?: DataKind;
  /** At most one component of this type per topology. */
  singleton?: boolean;
  /** An entry for docs/topology.md: its id and settings (everything but `type`). */
  example: { id: string; entry: Record<string, unknown> };
  /** Checks that need more than the schema (files on disk); relative to the entry. */
  check?(config: z.output<C>, ctx: { baseDir: string }): ConfigProblem[];
  claims?(config: z.output<C>): ResourceClaim[];
  plan(args: PlanArgs<z.output<C>>): PlanFor<K>;
}

/** Identity, for type inference: `export const avroDecode = defineComponent({ ... })`. */
export function defineComponent<K extends ComponentKind, C extends z.ZodObject>(spec: ComponentSpec<K, C>): ComponentSpec<K, C> {
  return spec;
}
