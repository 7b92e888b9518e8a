/**
 * Kafka read ceilings on the same topics: the no-op kafkajs drain (bench/drain.ts, a child process)
 * and Kafka's own org.apache.kafka.tools.ConsumerPerformance (the broker's jars, same fetch size).
 * Both rates exclude the group join: kafkajs timed from its GROUP_JOIN event, Kafka's tool's fetch.nMsg.sec.
 */
import { randomBytes } from "node:crypto";
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { KAFKA_VERSION } from "../stack/kafka.ts";
import { stackContext } from "../stack/context.ts";
import { requireEnv } from "../lib/env.ts";
import { javaClientProperties, kafkaAuthFromEnv } from "../lib/kafka-client.ts";
import { cpuSecondsOf } from "./procstat.ts";
import { lastJsonLine, spawnLogged, spawnNode, waitExit } from "./spawn.ts";

export interface DrainAnchor {
  records: number;
  seconds: number;
  recordsPerSecond: number;
  cpuSecondsPerMillion: number | null;
  complete: boolean;
}

export async function nodeDrain(opts: { topics: string[]; records: number; logDir: string; timeoutMs: number; group?: string }): Promise<DrainAnchor> {
  const group = opts.group ?? `millrace-bench-drain-${randomBytes(4).toString("hex")}`;
  const c = spawnNode({
    script: join(import.meta.dirname, "drain.ts"),
    args: ["--topics", opts.topics.join(","), "--records", String(opts.records), "--group", group, "--timeout-ms", String(opts.timeoutMs)],
    logFile: join(opts.logDir, "drain.log"),
    captureStdout: true,
  });
  const code = await waitExit(c, opts.timeoutMs + 60_000);
  if (code !== 0) throw new Error(`drain exited ${code}; see ${c.logFile}`);
  return lastJsonLine<DrainAnchor>(c.stdout());
}

export interface ConsumerPerfAnchor {
  records: number;
  recordsPerSecond: number;
  /** Including the group join (the tool's nMsg.sec). */
  recordsPerSecondWithJoin: number;
  fetchMs: number;
  cpuSecondsPerMillion: number | null;
  raw: string;
}

export function kafkaLibs(): string {
  return join(stackContext().cacheDir, `kafka-${KAFKA_VERSION}`, "libs");
}

/** `--command-config <file>` with the SASL settings (MILLRACE_KAFKA_*), or nothing for a PLAINTEXT broker. */
function commandConfig(dir: string): string[] {
  const props = javaClientProperties(kafkaAuthFromEnv());
  if (Object.keys(props).length === 0) return [];
  const file = join(dir, "consumer-performance.properties");
  writeFileSync(file, `${Object.entries(props).map(([k, v]) => `${k}=${v}`).join("\n")}\n`, { mode: 0o600 });
  return ["--command-config", file];
}

export async function consumerPerformance(opts: { topics: string[]; records: number; logDir: string; timeoutMs: number; group?: string }): Promise<ConsumerPerfAnchor> {
  const group = opts.group ?? `millrace-bench-cperf-${randomBytes(4).toString("hex")}`;
  const include = `^(${opts.topics.map((t) => t.replace(/[.*+?^${}()|[\]\\-]/g, "\\$&")).join("|")})$`;
  const c = spawnLogged(
    "java",
    [
      "-Xms256m",
      "-Xmx1g",
      "-cp",
      `${kafkaLibs()}/*`,
      `-Dlog4j2.configurationFile=${join(stackContext().root, "bench", "connect", "log4j2.properties")}`,
      `-Dkafka.logs.dir=${opts.logDir}`,
      "org.apache.kafka.tools.ConsumerPerformance",
      "--bootstrap-server",
      requireEnv("MILLRACE_KAFKA_BROKERS"),
      "--include",
      include,
      "--num-records",
      String(opts.records),
      "--group",
      group,
      "--timeout",
      "20000",
      "--command-property",
      "auto.offset.reset=earliest",
      ...commandConfig(opts.logDir),
    ],
    { logFile: join(opts.logDir, "consumer-performance.log"), captureStdout: true },
  );
  let cpu: number | undefined;
  const sampler = setInterval(() => (cpu = cpuSecondsOf(c.pid) ?? cpu), 100);
  const code = await waitExit(c, opts.timeoutMs);
  clearInterval(sampler);
  const out = c.stdout();
  if (code !== 0) throw new Error(`ConsumerPerformance exited ${code}: ${out.slice(-400)}; see ${c.logFile}`);
  // start.time, end.time, data.consumed.in.MB, MB.sec, data.consumed.in.nMsg, nMsg.sec, rebalance.time.ms, fetch.time.ms, fetch.MB.sec, fetch.nMsg.sec
  const line = out.trim().split("\n").filter((l) => /^\d{4}-/.test(l.trim())).pop();
  if (!line) throw new Error(`ConsumerPerformance printed no result line: ${out.slice(-400)}`);
  const f = line.split(",").map((s) => s.trim());
  const records = Number(f[4]);
  return {
    records,
    recordsPerSecond: Number(f[9]),
    recordsPerSecondWithJoin: Number(f[5]),
    fetchMs: Number(f[7]),
    // Whole-JVM CPU (start-up and join included): an upper bound.
    cpuSecondsPerMillion: cpu !== undefined && records > 0 ? (cpu / records) * 1e6 : null,
    raw: line,
  };
}
