/**
 * `millrace faults --profile quick|soak`: the fault-injection harness (test/faults/harness.ts) against
 * the local stack — real worker processes, kill -9, rolling SIGTERM bounces, scaling 1 → 3 → 1, a
 * poison record, and (soak) hard and clean restarts of an isolated broker of its own, PostgreSQL
 * connection cuts and a minute-long PostgreSQL outage; alert events are counted too. Writes
 * bench/results/faults-<profile>.json and prints a Markdown summary; exit 1 if any check fails.
 * What is and isn't covered: docs/faults.md.
 */
import { join } from "node:path";
import type { Command } from "commander";
import { loadStackEnv } from "../lib/env.ts";
import { repoRoot } from "../stack/context.ts";
import { PROFILES, runFaults, summarise, type FaultResults } from "../test/faults/harness.ts";

export function faultsPassed(r: FaultResults): boolean {
  return r.missing === 0 && r.duplicated === 0 && r.inversions === 0 && r.parquetEqualsPg && r.badSigtermExits === 0 && r.errors.length === 0
    && r.tenants.every((t) => t.deadLetters === t.deadLettersExpected && t.foreignRows === 0)
    && r.alerts.missingOnTopic === 0 && r.alerts.notInTable === 0 && r.alerts.contradictory === 0 && r.alerts.lifecycleErrors === 0
    && r.alerts.cyclesWrong === 0 && r.alerts.topicDistinct === r.alerts.pg;
}

export function registerFaultCommands(program: Command): void {
  program
    .command("faults")
    .description("inject faults while workers run and count missing/duplicated readings (docs/faults.md); JSON in bench/results/")
    .option("--profile <name>", "quick (about 2 minutes) or soak (longer: ≥ 20 kills, 3 bounce rounds, broker restarts, PostgreSQL cuts and an outage)", "quick")
    .option("--seed <n>", "PRNG seed for the kill moments and victims (default: the profile's)")
    .option("--out <file>", "results file (default bench/results/faults-<profile>.json)")
    .option("--kills <n>", "kill -9 faults (default: the profile's)")
    .option("--broker-kills <n>", "restarts of an isolated broker of the harness's own, alternately SIGKILL and SIGTERM (default: the profile's; 0 = use the shared broker)")
    .option("--pg-outages <n>", "PostgreSQL unreachable for a minute each, through the same proxy (default: the profile's)")
    .option("--pg-cuts <n>", "PostgreSQL connection cuts (during a COPY / a COMMIT reply lost) through a fault proxy in front of the workers (default: the profile's)")
    .option("--keep", "keep the test database afterwards")
    .action(async (opts: { profile: string; seed?: string; out?: string; kills?: string; brokerKills?: string; pgCuts?: string; pgOutages?: string; keep?: boolean }) => {
      if (opts.profile !== "quick" && opts.profile !== "soak") throw new Error(`--profile must be quick or soak, got ${JSON.stringify(opts.profile)}`);
      loadStackEnv();
      const profile = { ...PROFILES[opts.profile] };
      if (opts.seed !== undefined) {
        const n = Number(opts.seed);
        if (!Number.isInteger(n)) throw new Error(`--seed must be an integer, got ${opts.seed}`);
        profile.seed = n;
      }
      const count = (name: string, raw: string | undefined, fallback: number) => {
        if (raw === undefined) return fallback;
        const n = Number(raw);
        if (!Number.isInteger(n) || n < 0) throw new Error(`${name} must be an integer ≥ 0, got ${raw}`);
        return n;
      };
      profile.kills = count("--kills", opts.kills, profile.kills);
      profile.brokerKills = count("--broker-kills", opts.brokerKills, profile.brokerKills);
      profile.pgCuts = count("--pg-cuts", opts.pgCuts, profile.pgCuts);
      profile.pgOutages = count("--pg-outages", opts.pgOutages, profile.pgOutages);
      const outFile = opts.out ?? join(repoRoot, "bench", "results", `faults-${profile.name}.json`);
      const r = await runFaults({ profile, outFile, keep: opts.keep });
      process.stdout.write(summarise(r));
      process.stdout.write(`\nresults: ${outFile}\n`);
      if (!faultsPassed(r)) process.exitCode = 1;
    });
}
