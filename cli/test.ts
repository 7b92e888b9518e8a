/**
 * `millrace test`: the whole test suite on a fresh machine — brings the local stack up (installing
 * what is missing), then typecheck, lint, and every vitest project (unit and integration) with the
 * stack's settings in the environment. Exit code is the suite's.
 */
import { spawnSync } from "node:child_process";
import { existsSync, readFileSync, rmSync } from "node:fs";
import { join } from "node:path";
import type { Command } from "commander";
import { repoRoot, stackContext } from "../stack/context.ts";
import { stackUp } from "../stack/stack.ts";
import { ensurePythonTestDeps } from "../stack/python.ts";

function run(step: string, cmd: string, args: string[], env: NodeJS.ProcessEnv): void {
  process.stderr.write(`\n== ${step}: ${cmd} ${args.join(" ")}\n`);
  const res = spawnSync(cmd, args, { cwd: repoRoot, env, stdio: "inherit" });
  if (res.status !== 0) {
    throw new Error(`${step} failed (exit ${res.status ?? res.signal})`);
  }
}

/** The one closing line CI reads: "tests: N passed, N failed, N skipped". */
function printSummary(file: string): void {
  if (!existsSync(file)) return;
  try {
    const r = JSON.parse(readFileSync(file, "utf8")) as { numPassedTests: number; numFailedTests: number; numPendingTests: number; numTodoTests: number };
    process.stdout.write(`\ntests: ${r.numPassedTests} passed, ${r.numFailedTests} failed, ${r.numPendingTests + r.numTodoTests} skipped\n`);
  } catch {
    /* the runner's own output stands */
  }
}

export function registerTestCommand(program: Command): void {
  program
    .command("test")
    .description("run the whole test suite (typecheck, lint, unit and integration tests) against the local stack")
    .option("--no-stack", "do not start the local stack (use the MILLRACE_* settings already in the environment)")
    .argument("[vitestArgs...]", "extra arguments for vitest (e.g. a file filter)")
    .action(async (vitestArgs: string[], opts: { stack: boolean }) => {
      const env: NodeJS.ProcessEnv = { ...process.env };
      if (opts.stack) Object.assign(env, await stackUp(stackContext()));
      env.MILLRACE_PYTHON = ensurePythonTestDeps(stackContext(), env.MILLRACE_PYTHON);
      rmSync(join(stackContext().stateDir, "test-results.json"), { force: true });
      const bin = (name: string) => join(repoRoot, "node_modules", ".bin", name);
      run("typecheck", bin("tsc"), ["--noEmit", "-p", "tsconfig.json"], env);
      run("lint", bin("eslint"), ["."], env);
      const results = join(stackContext().stateDir, "test-results.json");
      try {
        run("tests", bin("vitest"), ["run", "--reporter=default", "--reporter=json", `--outputFile.json=${results}`, ...vitestArgs], env);
      } finally {
        printSummary(results);
      }
    });
}
