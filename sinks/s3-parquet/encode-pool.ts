/**
 * Parquet encoding off the worker's main thread: one worker thread (encode-worker.mjs) runs
 * {@link encodeParquet} on the rows it is sent and transfers the bytes back. The encoder is pure
 * and deterministic, so where it runs changes nothing in the file (tested: the same bytes). At
 * about 8 µs a row it is the most expensive stage of the pipeline; on the main thread it stalled
 * ingestion while files were encoded (docs/benchmarks.md).
 *
 * Files are encoded one at a time, in the order asked. The rows are copied into the thread
 * (structured clone, a fraction of the encoding's cost). If the thread dies, the files waiting on it
 * fail (the Parquet stage retries them) and the next one starts a new thread.
 */
import { Worker } from "node:worker_threads";
import type { StoredReading } from "../../pipelines/reading.ts";
import type { ParquetEncodeOptions } from "./encoder.ts";

interface Pending {
  resolve: (b: Buffer) => void;
  reject: (e: Error) => void;
  /** The thread it was sent to (only its own death fails it). */
  thread: Worker;
}

type Reply = { id: number; bytes: Uint8Array } | { id: number; error: { name: string; message: string } } | { ready: true };

export class ParquetEncodePool {
  private worker: Worker | undefined;
  private nextId = 1;
  private readonly pending = new Map<number, Pending>();

  /** Encode in the thread; rejects with the encoder's error (a TypeError stays a TypeError). */
  encode(rows: readonly StoredReading[], opts: ParquetEncodeOptions = {}): Promise<Buffer> {
    const w = this.thread();
    const id = this.nextId++;
    return new Promise<Buffer>((resolve, reject) => {
      this.pending.set(id, { resolve, reject, thread: w });
      w.ref();
      w.postMessage({ id, rows, opts });
    });
  }

  /** Stop the thread; files still waiting fail. */
  async close(): Promise<void> {
    const w = this.worker;
    this.worker = undefined;
    if (!w) return;
    this.failAll(w, new Error("the Parquet encoder was closed"));
    await w.terminate();
  }

  private thread(): Worker {
    if (this.worker) return this.worker;
    // No inherited node flags (the parent's --import loaders): the thread registers what it needs.
    const w = new Worker(new URL("./encode-worker.mjs", import.meta.url), { execArgv: [] });
    w.unref();
    w.on("message", (m: Reply) => {
      if ("ready" in m) return;
      const p = this.pending.get(m.id);
      if (!p) return;
      this.pending.delete(m.id);
      if (![...this.pending.values()].some((x) => x.thread === w)) w.unref();
      if ("bytes" in m) p.resolve(Buffer.from(m.bytes.buffer, m.bytes.byteOffset, m.bytes.byteLength));
      else p.reject(Object.assign(m.error.name === "TypeError" ? new TypeError(m.error.message) : new Error(m.error.message), { name: m.error.name }));
    });
    const gone = (err: Error) => {
      if (this.worker === w) this.worker = undefined;
      this.failAll(w, err);
    };
    w.on("error", (err) => gone(err));
    w.on("exit", (code) => gone(new Error(`the Parquet encoder thread exited (code ${code})`)));
    this.worker = w;
    return w;
  }

  private failAll(thread: Worker, err: Error): void {
    for (const [id, p] of [...this.pending]) {
      if (p.thread !== thread) continue;
      this.pending.delete(id);
      p.reject(err);
    }
  }
}
