/**
 * `millrace produce synthetic|csv`: publish sensor readings to the tenants' topics
 * `sensor-data-{tenant_id}` (Avro, Confluent wire format, keyed by equipment_id). Topics are never
 * created here — tenant provisioning does that.
 */
import { basename } from "node:path";
import { InvalidArgumentError, Option, type Command } from "commander";
import cliProgress from "cli-progress";
import { createLogger } from "../lib/log.ts";
import { optionalEnv } from "../lib/env.ts";
import { kafkaAuthFromEnv, parseSaslMechanism, type KafkaAuth } from "../lib/kafka-client.ts";
import { CsvRowError, equipmentIdFromPath, parseMapping, readCsvReadings, SKAB_DELIMITER, SKAB_MAPPING, type CsvRecord } from "../produce/csv.ts";
import { ID_PATTERN, parseTenantId, produceReadings, type BatchAck, type PublishStats } from "../produce/publisher.ts";
import { syntheticReadings, syntheticReadingsPerTick, syntheticSpanMs, SYNTHETIC_DEFAULTS } from "../produce/synthetic.ts";
import { positiveInt } from "./options.ts";

// ------------------------------------------------------------------------------------- option parsing

function positiveNumber(name: string) {
  return (raw: string): number => {
    const n = Number(raw);
    if (!(Number.isFinite(n) && n > 0)) throw new InvalidArgumentError(`${name} must be a positive number, got ${raw}`);
    return n;
  };
}

function probability(raw: string): number {
  const n = Number(raw);
  if (!(n >= 0 && n <= 1)) throw new InvalidArgumentError(`must be a probability in [0, 1], got ${raw}`);
  return n;
}

/** `1s`, `500ms`, `2.5s`, `1m`, `1h`; a bare number is milliseconds. */
export function parseDuration(raw: string): number {
  const m = /^(\d+(?:\.\d+)?)\s*(ms|s|m|h)?$/.exec(raw.trim());
  if (!m) throw new InvalidArgumentError(`expected a duration like 1s, 500ms, 1m, got ${raw}`);
  const n = Number(m[1]) * { ms: 1, s: 1000, m: 60_000, h: 3_600_000 }[(m[2] ?? "ms") as "ms" | "s" | "m" | "h"];
  if (!(n >= 1)) throw new InvalidArgumentError(`duration must be at least 1 ms, got ${raw}`);
  return Math.round(n);
}

/** ISO 8601, `now`, or `now-<duration>` (e.g. now-2h). */
export function parseTime(raw: string): number {
  const rel = /^now(?:\s*-\s*(.+))?$/.exec(raw.trim());
  if (rel) return Date.now() - (rel[1] === undefined ? 0 : parseDuration(rel[1]));
  const t = Date.parse(raw);
  if (!Number.isFinite(t)) throw new InvalidArgumentError(`expected an ISO 8601 time (e.g. 2026-01-01T00:00:00Z), now or now-<duration> (e.g. now-2h), got ${raw}`);
  return t;
}

function tenantList(raw: string): string[] {
  const ids = raw.split(",").map((s) => s.trim()).filter((s) => s !== "");
  if (ids.length === 0) throw new InvalidArgumentError("at least one tenant UUID is needed");
  try {
    const out = ids.map(parseTenantId);
    if (new Set(out).size !== out.length) throw new Error("a tenant is listed twice");
    return out;
  } catch (err) {
    throw new InvalidArgumentError((err as Error).message);
  }
}

function tenant(raw: string): string {
  try {
    return parseTenantId(raw);
  } catch (err) {
    throw new InvalidArgumentError((err as Error).message);
  }
}

function delimiter(raw: string): string {
  const d = raw === "\\t" || raw === "tab" ? "\t" : raw;
  if (d.length === 0) throw new InvalidArgumentError("the delimiter cannot be empty");
  return d;
}

// ------------------------------------------------------------------------------------------ progress

interface Progress {
  onAck(ack: BatchAck): void;
  stop(): void;
}

function fmtRate(n: number): string {
  return Math.round(n).toLocaleString("en-US");
}

/** A cli-progress bar on a TTY stderr, else a plain line every few seconds. */
function progress(total: number | undefined): Progress {
  if (process.stderr.isTTY) {
    const format =
      total === undefined
        ? "produce |{bar}| {value} records | {rps} rec/s | {duration_formatted}"
        : "produce |{bar}| {percentage}% | {value}/{total} records | {rps} rec/s | ETA {eta_formatted}";
    const bar = new cliProgress.SingleBar(
      { format, stream: process.stderr, hideCursor: true, etaBuffer: 50, fps: 5, clearOnComplete: false },
      cliProgress.Presets.shades_classic,
    );
    // Without a total the bar cannot fill; it shows the count and the rate.
    bar.start(total ?? 0, 0, { rps: "0" });
    return {
      onAck: (ack) => bar.update(ack.stats.records, { rps: fmtRate(ack.stats.recordsPerSecond) }),
      stop: () => bar.stop(),
    };
  }
  let lastLine = performance.now();
  return {
    onAck(ack) {
      const now = performance.now();
      if (now - lastLine < 2000) return;
      lastLine = now;
      const s = ack.stats;
      process.stderr.write(`produce: ${s.records}${total === undefined ? "" : `/${total}`} records, ${fmtRate(s.recordsPerSecond)} rec/s\n`);
    },
    stop() {},
  };
}

function printSummary(stats: PublishStats): void {
  const lines = [
    `produce: ${stats.records} records acknowledged in ${(stats.elapsedMs / 1000).toFixed(1)} s (${fmtRate(stats.recordsPerSecond)} records/s, ` +
      `${stats.batches} batches, ${(stats.bytes / 1024 / 1024).toFixed(1)} MiB)${stats.aborted ? " — interrupted" : ""}`,
  ];
  for (const [t, n] of Object.entries(stats.perTenant)) {
    const machines = Object.keys(stats.maxSeqAcked[t] ?? {}).length;
    lines.push(`  tenant ${t}: ${n} records${machines > 0 ? ` from ${machines} equipment` : ""} → sensor-data-${t}`);
  }
  process.stdout.write(`${lines.join("\n")}\n`);
}

/** Ctrl-C once: stop after the batch in flight and print the summary. Twice: exit at once. */
function interruptible(): { signal: AbortSignal; dispose(): void } {
  const ac = new AbortController();
  const onSigint = () => {
    if (ac.signal.aborted) process.exit(130);
    process.stderr.write("\nproduce: stopping after the batch in flight (Ctrl-C again to quit at once)\n");
    ac.abort();
  };
  process.on("SIGINT", onSigint);
  return { signal: ac.signal, dispose: () => process.off("SIGINT", onSigint) };
}

interface CommonOpts {
  rate?: number;
  count?: number;
  batchSize?: number;
  kafkaUsername?: string;
  kafkaPassword?: string;
}

/**
 * The producer's Kafka identity: --kafka-username / --kafka-password (the password also from
 * MILLRACE_PRODUCER_KAFKA_PASSWORD, better than a flag other users of the host can see in `ps`), else
 * MILLRACE_PRODUCER_KAFKA_USERNAME/PASSWORD, else the default MILLRACE_KAFKA_USERNAME/PASSWORD.
 */
function producerAuth(opts: CommonOpts): KafkaAuth | undefined {
  if (opts.kafkaUsername === undefined) {
    if (opts.kafkaPassword !== undefined) throw new Error("--kafka-password needs --kafka-username");
    return kafkaAuthFromEnv("producer");
  }
  const password = opts.kafkaPassword ?? optionalEnv("MILLRACE_PRODUCER_KAFKA_PASSWORD");
  if (password === undefined) throw new Error(`--kafka-username ${opts.kafkaUsername}: give its password with --kafka-password or MILLRACE_PRODUCER_KAFKA_PASSWORD`);
  return { mechanism: parseSaslMechanism(optionalEnv("MILLRACE_KAFKA_SASL_MECHANISM")), username: opts.kafkaUsername, password };
}

function addAuthOptions(c: Command): Command {
  return c
    .option("--kafka-username <name>", "the tenant's Kafka user (tenant-{id}; see `millrace tenants credentials`); default $MILLRACE_PRODUCER_KAFKA_USERNAME, else $MILLRACE_KAFKA_USERNAME")
    .option("--kafka-password <password>", "its password (prefer $MILLRACE_PRODUCER_KAFKA_PASSWORD)");
}

async function run(source: Parameters<typeof produceReadings>[0], total: number | undefined, opts: CommonOpts): Promise<PublishStats> {
  const log = createLogger({ name: "produce", level: process.env.MILLRACE_LOG_LEVEL ?? "warn" });
  const bar = progress(total);
  const { signal, dispose } = interruptible();
  try {
    return await produceReadings(source, { log, auth: producerAuth(opts) ?? null, rate: opts.rate, count: opts.count, batchSize: opts.batchSize, signal, onAck: (a) => bar.onAck(a) });
  } finally {
    bar.stop();
    dispose();
  }
}

// -------------------------------------------------------------------------------------------- commands

interface SyntheticCliOpts extends CommonOpts {
  tenants: string[];
  count: number;
  equipment: number;
  facilities: number;
  excursionProbability: number;
  dropoutProbability: number;
  seed: string;
  start?: number;
  interval: number;
}

interface CsvCliOpts extends CommonOpts {
  tenant: string;
  equipmentId?: string;
  facilityId: string;
  map?: string;
  delimiter: string;
  skipBadRows?: boolean;
  startAt?: number;
}

export function registerProduceCommands(program: Command): void {
  const produce = program
    .command("produce")
    .description("publish sensor readings (Avro, Confluent wire format) to the tenants' topics sensor-data-{tenant_id}; topics must exist");

  addAuthOptions(produce
    .command("synthetic"))
    .description("generate realistic factory data (seeded, deterministic): drift, noise, a daily cycle, excursions, dropouts")
    .requiredOption("--tenants <uuid,...>", "tenant UUIDs (comma-separated)", tenantList)
    .option("--count <n>", "total readings over all tenants; 0 = until Ctrl-C (paced in real time unless --rate)", positiveInt("count", true), 1000)
    .option("--rate <r>", "records per second (default: as fast as possible)", positiveNumber("rate"))
    .option("--equipment <e>", "equipment per facility", positiveInt("equipment"), SYNTHETIC_DEFAULTS.equipmentPerFacility)
    .option("--facilities <f>", "facilities per tenant", positiveInt("facilities"), SYNTHETIC_DEFAULTS.facilities)
    .option("--excursion-probability <p>", "probability per reading that a spike/step begins", probability, SYNTHETIC_DEFAULTS.excursionProbability)
    .option("--dropout-probability <p>", "probability per reading and sensor of a dropout (null)", probability, SYNTHETIC_DEFAULTS.dropoutProbability)
    .option("--seed <s>", "PRNG seed (same seed and options → same readings)", String(SYNTHETIC_DEFAULTS.seed))
    .option("--start <time>", "time of the first reading: ISO 8601, now or now-<duration> (default: so that the last reading is about now)", parseTime)
    .addOption(
      new Option("--interval <d>", "time between two readings of one machine (e.g. 1s, 500ms, 1m)").argParser(parseDuration).default(SYNTHETIC_DEFAULTS.intervalMs, "1s"),
    )
    .option("--batch-size <n>", "records per Kafka batch", positiveInt("batch size"))
    .action(async (opts: SyntheticCliOpts) => {
      const fleet = { tenants: opts.tenants, facilities: opts.facilities, equipmentPerFacility: opts.equipment, intervalMs: opts.interval };
      const perTick = syntheticReadingsPerTick(fleet);
      const unbounded = opts.count === 0;
      // Unbounded: start now and, unless a rate is given, pace in real time (times never run ahead of the clock).
      const start = opts.start ?? (unbounded ? Date.now() : Date.now() - syntheticSpanMs(fleet, opts.count) + opts.interval);
      const rate = opts.rate ?? (unbounded ? (perTick * 1000) / opts.interval : undefined);
      const source = syntheticReadings({
        ...fleet,
        start,
        count: unbounded ? undefined : opts.count,
        seed: opts.seed,
        excursionProbability: opts.excursionProbability,
        dropoutProbability: opts.dropoutProbability,
      });
      process.stderr.write(
        `produce: ${opts.tenants.length} tenant(s) × ${opts.facilities} facilities × ${opts.equipment} equipment = ${perTick} readings every ${opts.interval} ms from ` +
          `${new Date(start).toISOString()}${unbounded ? ", until Ctrl-C" : `, ${opts.count} readings`}${rate ? ` at ≤ ${fmtRate(rate)} records/s` : ""}\n`,
      );
      printSummary(await run(source, unbounded ? undefined : opts.count, { ...opts, rate, count: undefined }));
    });

  addAuthOptions(produce
    .command("csv"))
    .description("replay CSV files, one equipment per file (default layout: SKAB, ;-separated, zone-less times as UTC)")
    .argument("<file...>", "CSV files with a header row")
    .requiredOption("--tenant <uuid>", "tenant UUID", tenant)
    .option("--equipment-id <ids>", "equipment id, or one per file comma-separated (default from the file name: valve1/3.csv → valve1-03)")
    .option("--facility-id <id>", "facility id", "fac-01")
    .option("--map <field=column,...>", `column mapping (default ${Object.entries(SKAB_MAPPING).map(([k, v]) => `${k}=${v}`).join(",")}; given fields override it, \`field=\` leaves a measure unmapped)`)
    .option("--delimiter <c>", "field delimiter (\\t or tab for a tab)", delimiter, SKAB_DELIMITER)
    .option("--skip-bad-rows", "skip rows that cannot be read (reported on stderr) instead of failing")
    .option(
      "--start-at <time>",
      "move each file in time so that its first row is at this instant: ISO 8601, now or now-<duration> (e.g. now-1h); " +
        "use it to replay old files such as SKAB (2020) into a tenant whose retention would refuse them",
      parseTime,
    )
    .option("--rate <r>", "records per second (default: as fast as possible)", positiveNumber("rate"))
    .option("--count <n>", "stop after this many records", positiveInt("count"))
    .option("--batch-size <n>", "records per Kafka batch", positiveInt("batch size"))
    .action(async (files: string[], opts: CsvCliOpts) => {
      const mapping = opts.map === undefined ? SKAB_MAPPING : parseMapping(opts.map, SKAB_MAPPING);
      if (!ID_PATTERN.test(opts.facilityId)) throw new Error(`--facility-id must be 1-128 characters of [A-Za-z0-9._:/-], got ${JSON.stringify(opts.facilityId)}`);
      const ids = equipmentIds(files, opts.equipmentId);
      let skipped = 0;
      const onSkip = (e: CsvRowError) => {
        skipped++;
        if (skipped <= 20) process.stderr.write(`produce: skipped ${e.message}\n`);
        else if (skipped === 21) process.stderr.write("produce: (more skipped rows are counted, not shown)\n");
      };
      let firstTime: number | undefined;
      async function* all(): AsyncGenerator<CsvRecord> {
        for (const [i, file] of files.entries()) {
          process.stderr.write(`produce: ${file} → equipment ${ids[i]}\n`);
          for await (const rec of readCsvReadings(file, {
            tenantId: opts.tenant,
            equipmentId: ids[i]!,
            facilityId: opts.facilityId,
            mapping,
            delimiter: opts.delimiter,
            onBadRow: opts.skipBadRows ? "skip" : "fail",
            onSkip,
            startAt: opts.startAt,
          })) {
            firstTime ??= rec.reading.time;
            yield rec;
          }
        }
      }
      const stats = await run(all(), opts.count, opts);
      if (skipped > 0) process.stderr.write(`produce: ${skipped} bad row(s) skipped\n`);
      printSummary(stats);
      const hint = oldReplayHint(firstTime, opts.startAt !== undefined, Date.now());
      if (hint !== undefined) process.stderr.write(`${hint}\n`);
    });
}

/** Age of a replay's first reading beyond which {@link oldReplayHint} points at --start-at. */
const OLD_REPLAY_MS = 30 * 86_400_000;

/**
 * After `produce csv`: when the first reading is more than 30 days old and --start-at was not given,
 * a hint line (not an error) that readings older than the tenant's retention are dead-lettered, and
 * how to replay the file as recent data. The producer does not know the tenant's retention.
 */
export function oldReplayHint(firstTime: number | undefined, startAtGiven: boolean, now: number): string | undefined {
  if (firstTime === undefined || startAtGiven || now - firstTime <= OLD_REPLAY_MS) return undefined;
  return (
    `produce: hint: the first reading is from ${new Date(firstTime).toISOString()}, more than 30 days ago; readings older than the tenant's retention ` +
    "are dead-lettered as time_too_old — to replay the file as recent data, give --start-at now-1h"
  );
}

function equipmentIds(files: string[], given: string | undefined): string[] {
  let ids: string[];
  if (given === undefined) {
    ids = files.map(equipmentIdFromPath);
  } else {
    ids = given.split(",").map((s) => s.trim());
    if (ids.length !== files.length) {
      throw new Error(`--equipment-id gives ${ids.length} id(s) for ${files.length} file(s): give one per file (comma-separated), or leave it out to use the file names`);
    }
  }
  for (const id of ids) if (!ID_PATTERN.test(id)) throw new Error(`equipment id must be 1-128 characters of [A-Za-z0-9._:/-], got ${JSON.stringify(id)}`);
  const seen = new Map<string, string>();
  for (const [i, id] of ids.entries()) {
    const prev = seen.get(id);
    if (prev !== undefined) {
      throw new Error(`${basename(prev)} and ${basename(files[i]!)} would both be equipment ${id} (one equipment per file): name them with --equipment-id a,b,…`);
    }
    seen.set(id, files[i]!);
  }
  return ids;
}
