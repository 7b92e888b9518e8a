/**
 * Integration tests need the local stack's services. Their addresses come from the environment
 * (`./millrace test` provides them; or eval "$(./millrace stack env)"). Without them — or when they
 * do not answer, e.g. a stale `.stack/env` of a stopped stack — the suite fails at once with the way
 * to start them; it never skips.
 */
import { cameFromStackFile, loadStackEnv } from "../../lib/env.ts";
import { describeUnreachable, stackAddresses, unreachable } from "./reachability.ts";

const REQUIRED = ["MILLRACE_KAFKA_BROKERS", "MILLRACE_SCHEMA_REGISTRY_URL", "MILLRACE_PG_ADMIN_URL", "MILLRACE_S3_ENDPOINT"];
const HOW_TO_START =
  `Run the whole suite with ./millrace test (starts the stack), or start it with ./millrace stack up and load ` +
  `its settings with: eval "$(./millrace stack env)"`;
/** Per address; all addresses are probed at once. */
const PROBE_TIMEOUT_MS = 2_000;

export default async function setup(): Promise<void> {
  loadStackEnv();
  const missing = REQUIRED.filter((k) => !process.env[k]);
  if (missing.length > 0) {
    throw new Error(`integration tests need the local stack; missing ${missing.join(", ")}.\n${HOW_TO_START}`);
  }
  const down = await unreachable(stackAddresses(process.env), PROBE_TIMEOUT_MS);
  if (down.length > 0) throw new Error(`${describeUnreachable(down, cameFromStackFile)}${HOW_TO_START}`);
}
