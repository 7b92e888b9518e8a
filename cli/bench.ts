/** `millrace bench`: the benchmarks (hot path, end to end, anchors, peer) — see docs/benchmarks.md. */
import { readFileSync } from "node:fs";
import type { Command } from "commander";
import { DEFAULT_OUT_DIR, PROFILES, runBench, type BenchProfileName } from "../bench/run.ts";

function positiveInt(name: string, raw: string | undefined): number | undefined {
  if (raw === undefined) return undefined;
  const n = Number(raw);
  if (!Number.isInteger(n) || n <= 0) throw new Error(`${name} must be a positive integer, got ${JSON.stringify(raw)}`);
  return n;
}

export function registerBenchCommands(program: Command): void {
  program
    .command("bench")
    .description("measure the hot path and the whole pipeline against the limits and a peer (JSON, Markdown and a PNG chart in bench/results/)")
    .option("--profile <name>", "smoke (seconds, for the tests) or full (minutes)", "smoke")
    .option("--records <n>", "readings to preload (default: the profile's)")
    .option("--tenants <k>", "tenants (each a topic)")
    .option("--partitions <p>", "partitions per tenant topic")
    .option("--out <dir>", "results directory", DEFAULT_OUT_DIR)
    .option("--no-peer", "skip the Kafka Connect peer")
    .option("--peer", "run the Kafka Connect peer (default in the full profile)")
    .option("--cpu-prof", "add a profiled drain (node --cpu-prof) and its summary (default in the full profile)")
    .option("--keep", "keep the databases, topics and logs it made")
    .action(async (opts: { profile: string; records?: string; tenants?: string; partitions?: string; out: string; peer?: boolean; cpuProf?: boolean; keep?: boolean }, cmd: Command) => {
      if (!(opts.profile in PROFILES)) throw new Error(`--profile must be smoke or full, got ${JSON.stringify(opts.profile)}`);
      const base = PROFILES[opts.profile as BenchProfileName];
      const records = positiveInt("--records", opts.records) ?? base.records;
      const peerSource = cmd.getOptionValueSource("peer");
      const { results, files } = await runBench({
        ...base,
        records,
        naiveRecords: Math.min(base.naiveRecords, records),
        peerRecords: Math.min(base.peerRecords || records, records),
        tenants: positiveInt("--tenants", opts.tenants) ?? base.tenants,
        partitions: positiveInt("--partitions", opts.partitions) ?? base.partitions,
        peer: peerSource === "cli" ? opts.peer !== false : base.peer,
        cpuProfile: opts.cpuProf ?? base.cpuProfile,
        outDir: opts.out,
        keep: opts.keep ?? false,
      });
      process.stdout.write(`${readFileSync(files.markdown, "utf8")}\n`);
      process.stderr.write(`bench: ${files.json}, ${files.markdown}${files.png ? `, ${files.png}` : ""} (${results.meta.elapsedSeconds.toFixed(0)} s)\n`);
    });
}
