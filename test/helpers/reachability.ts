/**
 * Before the integration tests: does every service the settings name answer? A stale `.stack/env`
 * of a stopped stack would otherwise fail every test on its own with ECONNREFUSED. A bounded TCP
 * connect per address (all at once), so the check costs at most one timeout.
 */
import { portOpen } from "../../stack/process.ts";

export interface ServiceAddress {
  service: "kafka" | "registry" | "postgres" | "s3";
  setting: string;
  host: string;
  port: number;
}

function fromUrl(service: ServiceAddress["service"], setting: string, raw: string, defaultPort: (protocol: string) => number): ServiceAddress[] {
  let u: URL;
  try {
    u = new URL(raw);
  } catch {
    // libpq's socket form `postgres://user@/db?host=/dir` is no WHATWG URL: nothing to probe over TCP.
    if (service === "postgres") return [];
    throw new Error(`${setting}=${raw} is not a URL`);
  }
  // A PostgreSQL URL may name a Unix socket (no host, or ?host=/dir): nothing to probe over TCP.
  const hostParam = u.searchParams.get("host");
  if (u.hostname === "" || hostParam?.startsWith("/")) return [];
  const host = u.hostname.replace(/^\[(.*)\]$/, "$1");
  return [{ service, setting, host: hostParam ?? host, port: u.port ? Number(u.port) : defaultPort(u.protocol) }];
}

/** The TCP addresses of Kafka (every bootstrap broker), the registry, PostgreSQL and S3 in `env`. */
export function stackAddresses(env: NodeJS.ProcessEnv): ServiceAddress[] {
  const out: ServiceAddress[] = [];
  for (const b of (env.MILLRACE_KAFKA_BROKERS ?? "").split(",").map((s) => s.trim()).filter(Boolean)) {
    const m = /^(?:\[(.+)\]|([^:]+)):(\d+)$/.exec(b);
    if (!m) throw new Error(`MILLRACE_KAFKA_BROKERS: ${b} is not host:port`);
    out.push({ service: "kafka", setting: "MILLRACE_KAFKA_BROKERS", host: m[1] ?? m[2]!, port: Number(m[3]) });
  }
  const web = (p: string) => (p === "https:" ? 443 : 80);
  if (env.MILLRACE_SCHEMA_REGISTRY_URL) out.push(...fromUrl("registry", "MILLRACE_SCHEMA_REGISTRY_URL", env.MILLRACE_SCHEMA_REGISTRY_URL, web));
  if (env.MILLRACE_PG_ADMIN_URL) out.push(...fromUrl("postgres", "MILLRACE_PG_ADMIN_URL", env.MILLRACE_PG_ADMIN_URL, () => 5432));
  if (env.MILLRACE_S3_ENDPOINT) out.push(...fromUrl("s3", "MILLRACE_S3_ENDPOINT", env.MILLRACE_S3_ENDPOINT, web));
  return out;
}

/** The addresses that did not accept a TCP connection within `timeoutMs` (probed in parallel). */
export async function unreachable(addresses: readonly ServiceAddress[], timeoutMs = 2_000): Promise<ServiceAddress[]> {
  const open = await Promise.all(addresses.map((a) => portOpen(a.host, a.port, timeoutMs)));
  return addresses.filter((_, i) => !open[i]);
}

export function describeUnreachable(down: readonly ServiceAddress[], fromStackFile: (setting: string) => boolean): string {
  const names = [...new Set(down.map((d) => d.service))].join(", ");
  const lines = down.map((d) => `  ${d.service}: ${d.host}:${d.port} (${d.setting}${fromStackFile(d.setting) ? ", from the stack's env file" : ""})`);
  return `integration tests need the local stack, but ${names} ${down.length === 1 ? "does" : "do"} not answer:\n${lines.join("\n")}\n`;
}
