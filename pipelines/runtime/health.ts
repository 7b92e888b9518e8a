/**
 * The worker's HTTP port: /metrics (Prometheus), /healthz (the process is alive), /readyz (joined,
 * database reachable, no partition stuck with lag — 503 with the reasons otherwise).
 */
import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import type { IngestWorker } from "./worker.ts";

export async function startHealthServer(worker: IngestWorker, port: number, host = "0.0.0.0"): Promise<{ server: Server; port: number; close: () => Promise<void> }> {
  const server = createServer((req, res) => {
    const url = (req.url ?? "/").split("?")[0];
    if (url === "/healthz") {
      res.writeHead(200, { "content-type": "text/plain" }).end("ok\n");
    } else if (url === "/readyz") {
      const r = worker.ready();
      res.writeHead(r.ready ? 200 : 503, { "content-type": "application/json" }).end(`${JSON.stringify({ ready: r.ready, why: r.why, status: worker.status() })}\n`);
    } else if (url === "/metrics") {
      worker.metrics.registry
        .metrics()
        .then((body) => res.writeHead(200, { "content-type": worker.metrics.registry.contentType }).end(body))
        .catch((err: unknown) => res.writeHead(500).end(String(err)));
    } else {
      res.writeHead(404, { "content-type": "text/plain" }).end("not found: try /metrics, /healthz or /readyz\n");
    }
  });
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(port, host, () => resolve());
  });
  return {
    server,
    port: (server.address() as AddressInfo).port,
    close: () => new Promise<void>((resolve) => server.close(() => resolve())),
  };
}
