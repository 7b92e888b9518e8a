import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { loadTopology, TopologyError } from "../pipelines/topology/index.ts";
import { repoRoot } from "../stack/context.ts";
import { formatProblems } from "./topology.ts";

describe("millrace topology check", () => {
  it("prints each problem as file:line:col: path: message, then the count", () => {
    const file = join(repoRoot, "test", "fixtures", "topology", "unknown-input.yaml");
    let err: unknown;
    try {
      loadTopology(file);
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(TopologyError);
    expect(formatProblems(err as TopologyError, repoRoot)).toBe(
      "test/fixtures/topology/unknown-input.yaml:12:14: processors.validate.inputs[0]: unknown input `decod` (did you mean `decode`?)\n" +
        "test/fixtures/topology/unknown-input.yaml:19:36: sinks.dlq.inputs[3]: `db` is listed twice\n" +
        "2 problems\n",
    );
  });
});
