import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import { stackContext } from "../../stack/context.ts";

describe("stackContext ports", () => {
  const dirs: string[] = [];
  afterEach(() => {
    for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
  });
  const dir = () => {
    const d = mkdtempSync(join(tmpdir(), "millrace-ctx-"));
    dirs.push(d);
    return d;
  };
  const quiet = () => {};

  it("uses the defaults for a state directory the stack never ran in", () => {
    expect(stackContext({ MILLRACE_STACK_DIR: dir() }, quiet).ports).toEqual({ kafka: 19092, kafkaController: 19093, registry: 18081, postgres: 15432, s3: 19000 });
  });

  it("uses the ports the stack was brought up on (ports.json) when no variable is set, so stack env describes the running stack", () => {
    const d = dir();
    writeFileSync(join(d, "ports.json"), JSON.stringify({ kafka: 49092, kafkaController: 49093, registry: 48081, postgres: 45432, s3: 49000 }));
    expect(stackContext({ MILLRACE_STACK_DIR: d }, quiet).ports).toEqual({ kafka: 49092, kafkaController: 49093, registry: 48081, postgres: 45432, s3: 49000 });
    // A variable still wins.
    expect(stackContext({ MILLRACE_STACK_DIR: d, MILLRACE_STACK_POSTGRES_PORT: "5555" }, quiet).ports.postgres).toBe(5555);
  });

  it("ignores an unreadable or invalid ports.json", () => {
    const d = dir();
    writeFileSync(join(d, "ports.json"), "{not json");
    expect(stackContext({ MILLRACE_STACK_DIR: d }, quiet).ports.kafka).toBe(19092);
    writeFileSync(join(d, "ports.json"), JSON.stringify({ kafka: "x", s3: 70000 }));
    expect(stackContext({ MILLRACE_STACK_DIR: d }, quiet).ports).toMatchObject({ kafka: 19092, s3: 19000 });
  });
});
