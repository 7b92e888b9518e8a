/** `millrace stack up|down|status|env|logs`: the local stack of real services. */
import { InvalidArgumentError, type Command } from "commander";
import { stackContext } from "../stack/context.ts";
import { envFile, formatEnv, stackDown, stackEnv, stackLogs, stackStatus, stackUp } from "../stack/stack.ts";

export function registerStackCommands(program: Command): void {
  const stack = program
    .command("stack")
    .description("the local stack: Kafka (KRaft), schema registry, PostgreSQL and an S3-compatible server, no Docker");

  stack
    .command("up")
    .description("install (cached) and start every service, wait until each answers, print the connection settings")
    .argument("[services...]", "only these services (default: all)")
    .action(async (names: string[]) => {
      const ctx = stackContext();
      const env = await stackUp(ctx, names);
      process.stdout.write(`${formatEnv(env)}\n`);
      process.stderr.write(`stack: up. Settings also in ${envFile(ctx)}; load them with: eval "$(./millrace stack env)"\n`);
    });

  stack
    .command("down")
    .description("stop every service (data is kept)")
    .option("--force", "SIGKILL instead of a clean shutdown")
    .argument("[services...]", "only these services (default: all)")
    .action(async (names: string[], opts: { force?: boolean }) => {
      await stackDown(stackContext(), { force: opts.force, names });
    });

  stack
    .command("status")
    .description("show which services run")
    .action(async () => {
      const rows = await stackStatus(stackContext());
      for (const r of rows) {
        process.stdout.write(`${r.name.padEnd(10)} ${(r.running ? "running" : "stopped").padEnd(8)} ${r.pid ?? "-"}\t${r.detail}\n`);
      }
      if (!rows.every((r) => r.running)) process.exitCode = 3;
    });

  stack
    .command("env")
    .description("print the connection settings as shell exports")
    .action(() => {
      process.stdout.write(`${formatEnv(stackEnv(stackContext()))}\n`);
    });

  stack
    .command("logs")
    .description("print the end of a service's log")
    .argument("<service>", "kafka, registry, postgres or s3")
    .option("-n, --lines <n>", "lines to show (a positive integer)", (v: string) => {
      if (!/^[1-9]\d*$/.test(v)) throw new InvalidArgumentError(`--lines must be a positive integer, got ${JSON.stringify(v)}`);
      return Number(v);
    }, 100)
    .action((name: string, opts: { lines: number }) => {
      process.stdout.write(`${stackLogs(stackContext(), name, opts.lines)}\n`);
    });
}
