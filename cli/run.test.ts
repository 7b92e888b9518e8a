import { createServer } from "node:net";
import type { AddressInfo } from "node:net";
import { Command, CommanderError } from "commander";
import { describe, expect, it } from "vitest";
import type { IngestWorker } from "../pipelines/runtime/worker.ts";
import { metricsPort, registerRunCommand, resolveMetricsPort, startHealthEndpoints } from "./run.ts";

describe("millrace run --metrics-port / MILLRACE_METRICS_PORT", () => {
  it("is an integer 0–65535 (0: any free port)", () => {
    expect(metricsPort("9464")).toBe(9464);
    expect(metricsPort("0")).toBe(0);
    expect(metricsPort("65535")).toBe(65535);
    for (const raw of ["abc", "", " ", "65536", "-1", "1.5", "0x10", "1e3"]) expect(() => metricsPort(raw), raw).toThrow(/expected a port number 0–65535 \(0: any free port\)/);
  });

  it("the option is refused by commander before the worker starts", async () => {
    const program = new Command().exitOverride().configureOutput({ writeErr: () => {}, writeOut: () => {} });
    registerRunCommand(program);
    program.commands.find((c) => c.name() === "run")!.action(() => {
      throw new Error("the action ran");
    });
    await expect(program.parseAsync(["run", "--metrics-port", "abc"], { from: "user" })).rejects.toThrow(CommanderError);
  });

  it("--metrics-port, else MILLRACE_METRICS_PORT (checked the same way), else 9464", () => {
    expect(resolveMetricsPort(8000, "9000")).toEqual({ port: 8000, from: "--metrics-port" });
    expect(resolveMetricsPort(undefined, "9000")).toEqual({ port: 9000, from: "MILLRACE_METRICS_PORT" });
    expect(resolveMetricsPort(undefined, undefined)).toEqual({ port: 9464, from: "the default" });
    expect(() => resolveMetricsPort(undefined, "abc")).toThrow('MILLRACE_METRICS_PORT: expected a port number 0–65535 (0: any free port), got "abc"');
  });

  it("a port in use is named, with how to choose another", async () => {
    const other = createServer();
    await new Promise<void>((resolve) => other.listen(0, "0.0.0.0", resolve));
    const port = (other.address() as AddressInfo).port;
    try {
      await expect(startHealthEndpoints({} as IngestWorker, port, "MILLRACE_METRICS_PORT")).rejects.toThrow(
        `port ${port} (MILLRACE_METRICS_PORT) for /metrics, /healthz and /readyz is already in use, e.g. by another worker: choose another with --metrics-port <port> or MILLRACE_METRICS_PORT (0: any free port)`,
      );
    } finally {
      await new Promise((resolve) => other.close(resolve));
    }
    // 0: a free port is taken and reported.
    const health = await startHealthEndpoints({} as IngestWorker, 0, "--metrics-port");
    expect(health.port).toBeGreaterThan(0);
    await health.close();
  });
});
