/** The `millrace` command line. Each command lives in its own module; this file only wires them. */
import { Command } from "commander";
import { registerStackCommands } from "./stack.ts";
import { registerMigrateCommands } from "./migrate.ts";
import { registerPartitionCommands } from "./partitions.ts";
import { registerTestCommand } from "./test.ts";
import { registerTopologyCommands } from "./topology.ts";
import { registerProduceCommands } from "./produce.ts";
import { registerRunCommand } from "./run.ts";
import { registerParquetCommands } from "./parquet.ts";
import { registerBenchCommands } from "./bench.ts";
import { registerDemoCommand } from "./demo.ts";
import { registerRulesCommands } from "./rules.ts";
import { registerFaultCommands } from "./faults.ts";
import { registerTenantCommands } from "./tenants.ts";
import { registerRetentionCommands } from "./retention.ts";

const program = new Command();
program
  .name("millrace")
  .description("Multi-tenant manufacturing IoT stream pipeline (Kafka → TimescaleDB/PostgreSQL + Parquet on S3)")
  .showHelpAfterError()
  .enablePositionalOptions();

registerStackCommands(program);
registerMigrateCommands(program);
registerPartitionCommands(program);
registerTopologyCommands(program);
registerDemoCommand(program);
registerRunCommand(program);
registerParquetCommands(program);
registerTestCommand(program);
registerProduceCommands(program);
registerRulesCommands(program);
registerTenantCommands(program);
registerRetentionCommands(program);
registerBenchCommands(program);
registerFaultCommands(program);

program.parseAsync(process.argv).catch((err: unknown) => {
  const e = err as Error;
  process.stderr.write(`millrace: ${e.message ?? String(err)}\n`);
  if (process.env.MILLRACE_DEBUG) process.stderr.write(`${e.stack}\n`);
  process.exit(1);
});
