/**
 * Subject compatibility repair for schema registration.
 *
 * @kafkajs/confluent-schema-registry registers a subject's first schema in two calls: POST the
 * schema, then PUT /config/{subject} = BACKWARD. A process killed between the two leaves a subject
 * with a schema but no compatibility of its own, which Apicurio's Confluent API reports as NONE —
 * and from then on every `register` for that subject throws "Compatibility does not match the
 * configuration (BACKWARD != NONE)", for every process, forever (seen in CI: a worker SIGKILLed
 * while registering its first alert schema wedged the tenant's alert publishing).
 *
 * {@link withCompatibilityRepair} finishes that interrupted second step: on exactly that error it
 * sets the subject to BACKWARD and registers again, once. Any other level (an operator's FULL,
 * FORWARD…) is left alone and the error is raised with what to do.
 */
import { SchemaType } from "@kafkajs/confluent-schema-registry";
import type { Logger } from "./log.ts";

export interface Registrar {
  register(schema: { type: SchemaType.AVRO; schema: string }, opts: { subject: string }): Promise<{ id: number }>;
}

const LEFT_BY_A_CRASH = /Compatibility does not match the configuration \(BACKWARD != NONE\)/;

export function withCompatibilityRepair(
  registry: Registrar,
  registryUrl: string,
  o: { log?: Logger; fetch?: typeof fetch } = {},
): Registrar {
  const fetchFn = o.fetch ?? fetch;
  return {
    async register(schema, opts) {
      try {
        return await registry.register(schema, opts);
      } catch (err) {
        if (!LEFT_BY_A_CRASH.test((err as Error).message ?? "")) throw err;
        o.log?.warn({ subject: opts.subject }, "schema subject has no compatibility of its own (a registration was interrupted); setting it to BACKWARD");
        const url = `${registryUrl.replace(/\/+$/, "")}/config/${encodeURIComponent(opts.subject)}`;
        const res = await fetchFn(url, {
          method: "PUT",
          headers: { "content-type": "application/vnd.schemaregistry.v1+json" },
          body: JSON.stringify({ compatibility: "BACKWARD" }),
          signal: AbortSignal.timeout(10_000),
        });
        if (!res.ok) {
          throw new Error(`schema subject ${opts.subject} is left at compatibility NONE and setting it to BACKWARD failed (HTTP ${res.status}); set it by hand: PUT ${url} {"compatibility":"BACKWARD"}`, { cause: err });
        }
        return await registry.register(schema, opts);
      }
    },
  };
}
