// The Parquet encoder in a worker thread (encode-pool.ts): the same pure encodeParquet (rows in,
// bytes out), off the worker's main thread. Plain JavaScript, so that it starts under any parent
// (the CLI, vitest); it registers tsx itself to load the encoder's TypeScript.
import { parentPort } from "node:worker_threads";
import { register } from "tsx/esm/api";

register();
const { encodeParquet } = await import("./encoder.ts");

parentPort.on("message", async ({ id, rows, opts }) => {
  try {
    const body = await encodeParquet(rows, opts);
    // A buffer of its own, so it can be transferred (the encoder's may be a slice of a larger one).
    const bytes = new Uint8Array(body.length);
    bytes.set(body);
    parentPort.postMessage({ id, bytes }, [bytes.buffer]);
  } catch (err) {
    parentPort.postMessage({ id, error: { name: err?.name ?? "Error", message: String(err?.message ?? err) } });
  }
});
parentPort.postMessage({ ready: true });
