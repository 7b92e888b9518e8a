/**
 * The frozen result of loading topology.yaml: what the engine builds from. Produced only by the
 * loader after every check passed; nothing downstream re-reads the YAML.
 *
 * The data flow is one way: source → processors (a linear chain, in order) → sinks. Each sink
 * names the component it takes readings from; the dead-letter sink receives the rejections of
 * every processor and sink.
 */
import type { Tier } from "../../tenants/tiers.ts";
import type { ThresholdRule } from "../processors/threshold-rules.ts";

export interface RetryPlan {
  initialDelayMs: number;
  maxDelayMs: number;
  factor: number;
  /** Retries after the first attempt; Infinity = until the worker stops (never drop). */
  maxRetries: number;
}

export interface BatchPlan {
  /** Most rows written in one sink transaction. */
  maxRows: number;
  /** Most encoded bytes in one sink transaction (approximate: payload bytes). */
  maxBytes: number;
}

export interface SourcePlan {
  id: string;
  type: "kafka_tenant_topics";
  /** Contains `{tenant_id}`, e.g. `sensor-data-{tenant_id}`. */
  topicPattern: string;
  consumerGroup: string;
  fromBeginning: boolean;
  sessionTimeoutMs: number;
  heartbeatIntervalMs: number;
  maxBytesPerPartition: number;
  maxBytes: number;
  partitionsConsumedConcurrently: number;
  /** How often the worker looks for new tenant topics (live onboarding). */
  topicRefreshMs: number;
  /** How often the worker reads its assigned partitions' high watermarks (lag, readiness). */
  lagPollMs: number;
  /** A partition with lag and no progress for this long makes the worker not ready. */
  stallAfterMs: number;
}

export type ProcessorPlan =
  | { id: string; type: "avro_decode"; input: string; schemaFile: string; unknownSchemaTtlMs: number }
  | { id: string; type: "validate_reading"; input: string; maxFutureSkewMs: number; tenantRefreshMs: number }
  | {
      id: string;
      type: "equipment_quota";
      input: string;
      rejectionTtlMs: number;
      warnPercent: number;
      /** Per tier; null = unlimited. */
      rateLimits: Readonly<Record<Tier, { perSecond: number; burst: number } | null>>;
    }
  | { id: string; type: "thresholds"; input: string; rulesRefreshMs: number; rules: readonly ThresholdRule[] };

export type SinkPlan =
  | {
      id: string;
      type: "timescale_copy";
      input: string;
      batch: BatchPlan;
      retry: RetryPlan;
      poolSize: number;
      statementTimeoutMs: number;
      /** How often the worker runs the partition maintenance step on its databases. */
      partitionMaintenanceMs: number;
    }
  | { id: string; type: "kafka_dead_letter"; topicPattern: string; retry: RetryPlan; publishIntervalMs: number; maxBatch: number }
  | {
      id: string;
      type: "s3_parquet";
      input: string;
      retry: RetryPlan;
      maxRows: number;
      maxBytes: number;
      maxSpanMs: number;
      idleFlushMs: number;
      rowGroupRows: number;
      /** Stage-wide bound of the rows buffered for files (estimated bytes); the largest buffers are cut beyond it. */
      maxBufferedBytes: number;
      /** Per partition: buffered + unuploaded bytes beyond which the partition is paused. */
      maxPendingBytes: number;
      /** Over all partitions: buffered + unuploaded bytes beyond which every partition adding to them is paused. */
      maxMemoryBytes: number;
      multipartThreshold: number;
      sharedBucket: string;
      keyPrefix: string;
    };

export interface TopologyPlan {
  /** Absolute path of the file it came from (for messages). */
  file: string;
  source: SourcePlan;
  /** In flow order. */
  processors: ProcessorPlan[];
  sinks: SinkPlan[];
}

/** One problem found while loading, with where it is. */
export interface TopologyProblem {
  /** e.g. `sinks.timescale.batch.max_rows` */
  path: string;
  /** 1-based line and column in the YAML file, when known. */
  line?: number;
  column?: number;
  message: string;
}

export class TopologyError extends Error {
  constructor(
    readonly file: string,
    readonly problems: TopologyProblem[],
  ) {
    super(
      `${file}: ${problems.length} problem${problems.length === 1 ? "" : "s"}:\n` +
        problems.map((p) => `  ${p.line !== undefined ? `${p.line}:${p.column ?? 1} ` : ""}${p.path}: ${p.message}`).join("\n"),
    );
    this.name = "TopologyError";
  }
}
