/** Webhook delivery against a real HTTP server on 127.0.0.1 (no external services). */
import { createHmac } from "node:crypto";
import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import client from "prom-client";
import { afterEach, describe, expect, it } from "vitest";
import type { AlertEvent } from "../../schemas/generated.ts";
import { waitUntil } from "../../test/helpers/wait.ts";
import { WebhookMetrics, WebhookNotifier, type WebhookTarget } from "./webhooks.ts";

const TENANT = "6f1c2a4e-3b5d-4c7e-9f80-1a2b3c4d5e6f";

function event(n: number, severity: AlertEvent["severity"] = "major"): AlertEvent {
  return {
    event_id: `a${n}/1`, alert_id: `a${n}`, seq: 1, step: "raised", kind: "threshold", severity, previous_severity: null, tenant_id: TENANT, time: n,
    rule: null, reading: { time: n, equipment_id: "e", facility_id: "f", value: 1 }, quota: null, reason: null,
  };
}

interface Hit {
  body: string;
  headers: IncomingMessage["headers"];
}

/** A local server; `respond` decides each request's fate (status, or hold it open until released). */
async function server(respond: (hit: Hit, n: number, res: ServerResponse) => void): Promise<{ url: string; hits: Hit[]; server: Server }> {
  const hits: Hit[] = [];
  const s = createServer((req, res) => {
    let body = "";
    req.on("data", (c: Buffer) => (body += c.toString("utf8")));
    req.on("end", () => {
      const hit = { body, headers: req.headers };
      hits.push(hit);
      respond(hit, hits.length, res);
    });
  });
  await new Promise<void>((r) => s.listen(0, "127.0.0.1", r));
  return { url: `http://127.0.0.1:${(s.address() as AddressInfo).port}/hook`, hits, server: s };
}

const servers: Server[] = [];
const notifiers: WebhookNotifier[] = [];
afterEach(async () => {
  await Promise.all(notifiers.splice(0).map((n) => n.stop(1000)));
  for (const s of servers.splice(0)) {
    s.closeAllConnections();
    await new Promise((r) => s.close(r));
  }
});

function notifier(target: WebhookTarget, o: Partial<ConstructorParameters<typeof WebhookNotifier>[0]> = {}) {
  const registry = new client.Registry();
  const n = new WebhookNotifier({ targets: { get: (t) => (t === TENANT ? target : undefined) }, initialDelayMs: 10, maxDelayMs: 50, metrics: new WebhookMetrics(registry), ...o });
  notifiers.push(n);
  return { n, metrics: () => registry.metrics() };
}

describe("WebhookNotifier", () => {
  it("retries with backoff until a server that fails the first 3 times accepts; signs the body", async () => {
    const srv = await server((_h, n, res) => res.writeHead(n <= 3 ? 503 : 200).end());
    servers.push(srv.server);
    const { n, metrics } = notifier({ url: srv.url, secret: "s3cret", minSeverity: "warning" });
    n.notify([event(1)]);
    await waitUntil("the webhook to be delivered", async () => (await metrics()).includes(`millrace_webhook_deliveries_total{tenant="${TENANT}",outcome="delivered"} 1`), 10_000, 20);
    expect(srv.hits).toHaveLength(4);
    const body = srv.hits[3]!.body;
    expect(JSON.parse(body)).toEqual(event(1));
    expect(srv.hits[3]!.headers["x-millrace-event-id"]).toBe("a1/1");
    expect(srv.hits[3]!.headers["x-millrace-signature"]).toBe(`sha256=${createHmac("sha256", "s3cret").update(body).digest("hex")}`);
    const text = await metrics();
    expect(text).toContain(`millrace_webhook_attempts_total{tenant="${TENANT}",result="retriable_error"} 3`);
    expect(text).toContain(`millrace_webhook_attempts_total{tenant="${TENANT}",result="ok"} 1`);
  });

  it("a 4xx is not retried; a server that always fails is given up after maxAttempts; both counted as failed", async () => {
    const srv = await server((h, _n, res) => res.writeHead(h.body.includes('"a1/1"') ? 400 : 500).end());
    servers.push(srv.server);
    const { n, metrics } = notifier({ url: srv.url, minSeverity: "warning" }, { maxAttempts: 3 });
    n.notify([event(1), event(2)]);
    await waitUntil("both deliveries to fail", async () => (await metrics()).includes(`millrace_webhook_deliveries_total{tenant="${TENANT}",outcome="failed"} 2`), 10_000, 20);
    expect(srv.hits.filter((h) => h.body.includes('"a1/1"'))).toHaveLength(1);
    expect(srv.hits.filter((h) => h.body.includes('"a2/1"'))).toHaveLength(3);
    expect(n.outstanding).toBe(0);
  });

  it("bounded concurrency, and a full queue drops the oldest waiting delivery (counted); notify never waits", async () => {
    const held: ServerResponse[] = [];
    let inFlight = 0;
    let maxInFlight = 0;
    const srv = await server((_h, _n, res) => {
      inFlight++;
      maxInFlight = Math.max(maxInFlight, inFlight);
      res.on("finish", () => inFlight--);
      held.push(res);
    });
    servers.push(srv.server);
    const { n, metrics } = notifier({ url: srv.url, minSeverity: "warning" }, { concurrency: 2, maxQueued: 3 });
    // notify never waits: it returns (synchronously, no promise) before any request has reached the server.
    const returned = n.notify([1, 2, 3, 4, 5, 6, 7].map((i) => event(i))) as unknown;
    expect(returned).toBeUndefined();
    expect(srv.hits).toHaveLength(0);
    // 1 and 2 in flight; 3..7 offered to a queue of 3: 3 and 4 dropped.
    await waitUntil("two requests held by the server", async () => held.length === 2, 10_000, 10);
    expect((await metrics())).toContain(`millrace_webhook_deliveries_total{tenant="${TENANT}",outcome="dropped"} 2`);
    const release = async (k: number) => {
      await waitUntil(`${k} requests`, async () => held.length >= k, 10_000, 10);
      for (const r of held) if (!r.writableEnded) r.writeHead(200).end();
    };
    await release(2);
    await release(4);
    await release(5);
    await waitUntil("everything delivered", async () => (await metrics()).includes(`outcome="delivered"} 5`), 10_000, 20);
    expect(maxInFlight).toBe(2);
    expect(srv.hits.map((h) => (JSON.parse(h.body) as AlertEvent).alert_id).sort()).toEqual(["a1", "a2", "a5", "a6", "a7"]);
  });

  it("below the tenant's min_severity, or without a webhook, nothing is sent", async () => {
    const srv = await server((_h, _n, res) => res.writeHead(200).end());
    servers.push(srv.server);
    const { n } = notifier({ url: srv.url, minSeverity: "critical" });
    n.notify([event(1, "major"), { ...event(2), tenant_id: "00000000-0000-0000-0000-000000000000" }, event(3, "critical")]);
    await waitUntil("one request", async () => srv.hits.length === 1 && n.outstanding === 0, 10_000, 10);
    expect(JSON.parse(srv.hits[0]!.body).alert_id).toBe("a3");
  });

  it("a request that hangs times out and is retried", async () => {
    const srv = await server((_h, k, res) => {
      if (k > 1) res.writeHead(204).end();
    });
    servers.push(srv.server);
    const { n, metrics } = notifier({ url: srv.url, minSeverity: "warning" }, { timeoutMs: 200 });
    n.notify([event(1)]);
    await waitUntil("delivery after a timeout", async () => (await metrics()).includes('outcome="delivered"} 1'), 10_000, 20);
    expect(srv.hits).toHaveLength(2);
  });
});
