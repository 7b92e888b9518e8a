/** `millrace topology check|describe [file]`: load topology.yaml, report every problem, or print the plan. */
import { join, relative } from "node:path";
import type { Command } from "commander";
import { describeTopology, loadTopology, TopologyError, type TopologyPlan } from "../pipelines/topology/index.ts";
import { repoRoot } from "../stack/context.ts";

const DEFAULT_FILE = join(repoRoot, "topology.yaml");

/** `topology.yaml:12:5: sinks.timescale.batch.max_rows: must be at least 1`, one per line (editors jump to it). */
export function formatProblems(err: TopologyError, cwd = process.cwd()): string {
  const file = relative(cwd, err.file) || err.file;
  const lines = err.problems.map((p) => `${file}${p.line !== undefined ? `:${p.line}:${p.column ?? 1}` : ""}: ${p.path}: ${p.message}`);
  return `${lines.join("\n")}\n${err.problems.length} problem${err.problems.length === 1 ? "" : "s"}\n`;
}

/** The plan, or undefined after printing every problem to stderr and setting exit code 1. */
function load(file: string): TopologyPlan | undefined {
  try {
    return loadTopology(file);
  } catch (err) {
    if (!(err instanceof TopologyError)) throw err;
    process.stderr.write(formatProblems(err));
    process.exitCode = 1;
    return undefined;
  }
}

export function registerTopologyCommands(program: Command): void {
  const topology = program.command("topology").description("the pipeline's wiring (topology.yaml; reference: docs/topology.md)");

  topology
    .command("check")
    .description("load a topology file and report every problem with its line and column (exit 1 if any)")
    .argument("[file]", "topology file", DEFAULT_FILE)
    .action((file: string) => {
      const plan = load(file);
      if (plan) process.stdout.write(`ok: ${1 + plan.processors.length + plan.sinks.length} components\n`);
    });

  topology
    .command("describe")
    .description("print the loaded plan: each node with its settings, successors (-->) and predecessors (<--)")
    .argument("[file]", "topology file", DEFAULT_FILE)
    .action((file: string) => {
      const plan = load(file);
      if (plan) process.stdout.write(describeTopology(plan));
    });
}
