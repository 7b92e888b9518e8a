/**
 * `millrace test`: the whole test suite on a fresh machine — brings the local stack up (installing
 * what is missing), then typecheck, lint, and every vitest project (unit and integration) with the
 * stack's settings in the environment. Exit code is the suite's.
 */
import { spawnSync } from "node:child_process";
import { join } from "node:path";
import type { Command } from "commander";
import { repoRoot, stackContext } from "../stack/context.ts";
import { stackUp } from "../stack/stack.ts";

function run(step: string, cmd: string, args: string[], env: NodeJS.ProcessEnv): void {
  process.stderr.write(`\n== ${step}: ${cmd} ${args.join(" ")}\n`);
  const res = spawnSync(cmd, args, { cwd: repoRoot, env, stdio: "inherit" });
  if (res.status !== 0) {
    throw new Error(`${step} failed (exit ${res.status ?? res.signal})`);
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
      const bin = (name: string) => join(repoRoot, "node_modules", ".bin", name);
      run("typecheck", bin("tsc"), ["--noEmit", "-p", "tsconfig.json"], env);
      run("lint", bin("eslint"), ["."], env);
      run("tests", bin("vitest"), ["run", ...vitestArgs], env);
    });
}
