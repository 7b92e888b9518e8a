/**
 * Metrics. Every pipeline instance owns its own prom-client Registry (two instances in one process
 * — as in tests — never collide with "already registered"). Labels are bounded: tenant, reason,
 * sink, outcome, topic/partition — never equipment.
 */
import client from "prom-client";

export class PipelineMetrics {
  readonly registry = new client.Registry();
  readonly records: client.Counter<"tenant" | "outcome">;
  readonly deadLetters: client.Counter<"tenant" | "reason">;
  readonly batchRows: client.Histogram<"sink">;
  readonly batchDuration: client.Histogram<"sink">;
  readonly sinkRetries: client.Counter<"sink">;
  readonly lag: client.Gauge<"topic" | "partition">;
  readonly produceToCommit: client.Histogram<"tenant">;
  readonly fenced: client.Counter<"topic">;
  readonly deadLettersPublished: client.Counter<"tenant">;

  constructor(labels: Record<string, string> = {}) {
    this.registry.setDefaultLabels(labels);
    client.collectDefaultMetrics({ register: this.registry, prefix: "millrace_process_" });
    const r = [this.registry];
    this.records = new client.Counter({ name: "millrace_records_total", help: "Records processed, by tenant and outcome (stored, duplicate, dead_lettered)", labelNames: ["tenant", "outcome"], registers: r });
    this.deadLetters = new client.Counter({ name: "millrace_dead_letters_total", help: "Records dead-lettered, by tenant and reason", labelNames: ["tenant", "reason"], registers: r });
    this.batchRows = new client.Histogram({ name: "millrace_sink_batch_rows", help: "Rows per sink batch", labelNames: ["sink"], buckets: [1, 10, 100, 500, 1000, 2500, 5000, 10000, 50000], registers: r });
    this.batchDuration = new client.Histogram({ name: "millrace_sink_batch_duration_seconds", help: "Duration of one sink batch write (including retries)", labelNames: ["sink"], buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30], registers: r });
    this.sinkRetries = new client.Counter({ name: "millrace_sink_retries_total", help: "Transient sink failures retried", labelNames: ["sink"], registers: r });
    this.lag = new client.Gauge({ name: "millrace_consumer_lag_records", help: "Records behind the partition's high watermark (from fetches and the lag poll): high watermark minus the next offset to process; one series per partition this worker holds", labelNames: ["topic", "partition"], registers: r });
    this.produceToCommit = new client.Histogram({ name: "millrace_produce_to_commit_seconds", help: "Time from the record's Kafka timestamp to its database commit", labelNames: ["tenant"], buckets: [0.01, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 300], registers: r });
    this.fenced = new client.Counter({ name: "millrace_fenced_batches_total", help: "Batches refused because another worker had taken the partition", labelNames: ["topic"], registers: r });
    this.deadLettersPublished = new client.Counter({ name: "millrace_dead_letters_published_total", help: "Dead letters published to their dead-letter topic", labelNames: ["tenant"], registers: r });
  }
}
