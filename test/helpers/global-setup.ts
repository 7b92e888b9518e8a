/**
 * Integration tests need the local stack's services. Their addresses come from the environment
 * (`./millrace test` provides them; or eval "$(./millrace stack env)"). Without them the suite fails
 * at once with the way to start them — it never skips.
 */
import { loadStackEnv } from "../../lib/env.ts";

const REQUIRED = ["MILLRACE_KAFKA_BROKERS", "MILLRACE_SCHEMA_REGISTRY_URL", "MILLRACE_PG_ADMIN_URL", "MILLRACE_S3_ENDPOINT"];

export default function setup(): void {
  loadStackEnv();
  const missing = REQUIRED.filter((k) => !process.env[k]);
  if (missing.length > 0) {
    throw new Error(
      `integration tests need the local stack; missing ${missing.join(", ")}.\n` +
        `Run the whole suite with ./millrace test (starts the stack), or start it with ./millrace stack up and load ` +
        `its settings with: eval "$(./millrace stack env)"`,
    );
  }
}
