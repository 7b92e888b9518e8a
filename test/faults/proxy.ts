/**
 * A small protocol-aware TCP fault proxy for fault tests (loopback only, node:net). It sits between
 * one worker process and PostgreSQL or S3 and forwards bytes; a test can
 *  - cut every open connection (`cutAll`),
 *  - refuse new connections for a while (`refuse`: accepted and reset at once, like a stopped server),
 *  - watch the traffic and act at an exact point: for PostgreSQL every frontend and backend message is
 *    parsed (type byte + length), so a hook sees e.g. the Query `COMMIT` or the first CopyData and
 *    decides to forward it, drop it, or cut the connection before or after it; for HTTP (S3) every
 *    request head (request line + headers) is seen before its bytes are forwarded; for any other
 *    protocol ("tcp", e.g. Kafka) bytes pass unframed and only cuts and refusals apply.
 * A PostgreSQL client message can also be held ("hold"): it and everything after it from that
 * client wait at the proxy until the test releases them (`ProxyConn.release`) — a write delayed for
 * as long as the test needs, the connection kept open.
 * Hooks are synchronous, so an action (SIGKILL/SIGSTOP of the worker, a cut) happens before the
 * next byte moves. Nothing here sleeps; the proxy never reorders or alters bytes it forwards.
 */
import net from "node:net";

export type Verdict = "forward" | "drop" | "cut" | "forward-then-cut" | "hold";

export interface PgMessage {
  /** The type byte as a character ('Q', 'P', 'd', 'c', 'C', …); "startup" for the untyped first message. */
  type: string;
  /** Query text of a Query ('Q') or Parse ('P'); the command tag of a CommandComplete ('C'). */
  text?: string;
  length: number;
}

export interface HttpRequestHead {
  method: string;
  path: string;
  headers: Record<string, string>;
}

export interface ProxyConn {
  id: number;
  /** Destroy both sides now. */
  cut(): void;
  /** Forward what a "hold" verdict kept back (in order) and stop holding. */
  release(): void;
  /** Free-form per-connection state for hooks. */
  state: Record<string, unknown>;
}

export interface ProxyOptions {
  name: string;
  target: { host: string; port: number };
  protocol: "pg" | "http" | "tcp";
  /** PostgreSQL: each client → server message. */
  onPgClient?: (m: PgMessage, c: ProxyConn) => Verdict | void;
  /** PostgreSQL: each server → client message. */
  onPgServer?: (m: PgMessage, c: ProxyConn) => Verdict | void;
  /** HTTP: each request head, before any of its bytes are forwarded. */
  onHttpRequest?: (r: HttpRequestHead, c: ProxyConn) => Verdict | void;
}

/** Frame a PostgreSQL byte stream into messages (the first client message is untyped). */
class PgFramer {
  private buf: Buffer = Buffer.alloc(0);
  constructor(private untypedFirst: boolean) {}
  push(chunk: Buffer): Array<{ raw: Buffer; msg: PgMessage }> {
    this.buf = this.buf.length === 0 ? chunk : Buffer.concat([this.buf, chunk]);
    const out: Array<{ raw: Buffer; msg: PgMessage }> = [];
    for (;;) {
      if (this.untypedFirst) {
        if (this.buf.length < 4) break;
        const len = this.buf.readUInt32BE(0);
        if (this.buf.length < len) break;
        const raw = this.buf.subarray(0, len);
        this.buf = this.buf.subarray(len);
        // An SSLRequest/GSSENCRequest (8 bytes) is followed by another untyped startup message.
        const code = len === 8 ? raw.readUInt32BE(4) : 0;
        if (code !== 80877103 && code !== 80877104) this.untypedFirst = false;
        out.push({ raw, msg: { type: "startup", length: len } });
        continue;
      }
      if (this.buf.length < 5) break;
      const len = this.buf.readUInt32BE(1);
      if (this.buf.length < 1 + len) break;
      const raw = this.buf.subarray(0, 1 + len);
      this.buf = this.buf.subarray(1 + len);
      const type = String.fromCharCode(raw[0]!);
      let text: string | undefined;
      if (type === "Q" || type === "C") text = raw.subarray(5, raw.length - 1).toString("utf8");
      else if (type === "P") {
        const body = raw.subarray(5);
        const nameEnd = body.indexOf(0);
        const qEnd = body.indexOf(0, nameEnd + 1);
        text = body.subarray(nameEnd + 1, qEnd).toString("utf8");
      }
      out.push({ raw, msg: { type, length: len, ...(text !== undefined ? { text } : {}) } });
    }
    return out;
  }
}

/**
 * Frame HTTP/1.1 requests (Content-Length bodies; `aws-chunked` bodies are sent with a
 * Content-Length too). A request head is reported before its bytes are forwarded.
 */
class HttpFramer {
  private buf: Buffer = Buffer.alloc(0);
  private bodyLeft = 0;
  push(chunk: Buffer): Array<{ raw: Buffer; head?: HttpRequestHead }> {
    const out: Array<{ raw: Buffer; head?: HttpRequestHead }> = [];
    let data: Buffer = this.buf.length === 0 ? chunk : Buffer.concat([this.buf, chunk]);
    this.buf = Buffer.alloc(0);
    while (data.length > 0) {
      if (this.bodyLeft > 0) {
        const n = Math.min(this.bodyLeft, data.length);
        out.push({ raw: data.subarray(0, n) });
        this.bodyLeft -= n;
        data = data.subarray(n);
        continue;
      }
      const end = data.indexOf("\r\n\r\n");
      if (end < 0) {
        this.buf = data;
        break;
      }
      const headText = data.subarray(0, end).toString("latin1");
      const [line, ...rest] = headText.split("\r\n");
      const [method = "", path = ""] = (line ?? "").split(" ");
      const headers: Record<string, string> = {};
      for (const h of rest) {
        const i = h.indexOf(":");
        if (i > 0) headers[h.slice(0, i).trim().toLowerCase()] = h.slice(i + 1).trim();
      }
      if (headers["transfer-encoding"]?.includes("chunked") && headers["content-length"] === undefined) {
        throw new Error(`fault proxy: chunked request bodies without Content-Length are not framed (${method} ${path})`);
      }
      this.bodyLeft = Number(headers["content-length"] ?? 0);
      out.push({ raw: data.subarray(0, end + 4), head: { method, path, headers } });
      data = data.subarray(end + 4);
    }
    return out;
  }
}

export class FaultProxy {
  readonly name: string;
  private server!: net.Server;
  private readonly conns = new Set<{ client: net.Socket; upstream: net.Socket; pc: ProxyConn }>();
  private refuseUntil = 0;
  private nextId = 0;
  /** Connections accepted, refused, and cut by the proxy. */
  readonly stats = { accepted: 0, refused: 0, cut: 0 };
  port = 0;

  private constructor(private readonly opts: ProxyOptions) {
    this.name = opts.name;
  }

  static async start(opts: ProxyOptions): Promise<FaultProxy> {
    const p = new FaultProxy(opts);
    p.server = net.createServer((s) => p.accept(s));
    await new Promise<void>((res, rej) => {
      p.server.once("error", rej);
      p.server.listen(0, "127.0.0.1", () => res());
    });
    p.port = (p.server.address() as net.AddressInfo).port;
    return p;
  }

  /** Hooks can be changed while running (arm a fault for the next matching message). */
  set hooks(h: Pick<ProxyOptions, "onPgClient" | "onPgServer" | "onHttpRequest">) {
    Object.assign(this.opts, { onPgClient: undefined, onPgServer: undefined, onHttpRequest: undefined }, h);
  }

  get openConnections(): number {
    return this.conns.size;
  }

  /** Cut every open connection (both sides destroyed). */
  cutAll(): number {
    const n = this.conns.size;
    for (const c of [...this.conns]) c.pc.cut();
    return n;
  }

  /** Refuse (accept and reset) new connections until `ms` from now; 0 stops refusing. */
  refuse(ms: number): void {
    this.refuseUntil = ms > 0 ? Date.now() + ms : 0;
  }

  get refusing(): boolean {
    return Date.now() < this.refuseUntil;
  }

  async close(): Promise<void> {
    this.cutAll();
    await new Promise<void>((res) => this.server.close(() => res()));
  }

  private accept(client: net.Socket): void {
    if (this.refusing) {
      this.stats.refused++;
      client.on("error", () => {});
      client.resetAndDestroy();
      return;
    }
    this.stats.accepted++;
    const upstream = net.connect(this.opts.target.port, this.opts.target.host);
    let closed = false;
    let held: Buffer[] | undefined;
    const entry = {
      client,
      upstream,
      pc: {
        id: ++this.nextId,
        state: {},
        cut: () => {
          if (closed) return;
          closed = true;
          this.stats.cut++;
          this.conns.delete(entry);
          client.resetAndDestroy();
          upstream.resetAndDestroy();
        },
        release: () => {
          const q = held;
          held = undefined;
          for (const raw of q ?? []) if (!closed) upstream.write(raw);
        },
      } as ProxyConn,
    };
    this.conns.add(entry);
    const end = () => {
      if (closed) return;
      closed = true;
      this.conns.delete(entry);
      client.destroy();
      upstream.destroy();
    };
    // A hook may ask to hear when the server ends the connection (state.onServerEnd).
    upstream.on("end", () => (entry.pc.state.onServerEnd as (() => void) | undefined)?.());
    client.on("error", end).on("close", end);
    upstream.on("error", end).on("close", end);
    client.pause();
    upstream.once("connect", () => client.resume());

    const apply = (v: Verdict | void, raw: Buffer, to: net.Socket): boolean => {
      if (closed) return false;
      if (v === "cut") {
        entry.pc.cut();
        return false;
      }
      if (v === "drop") return true;
      to.write(raw);
      if (v === "forward-then-cut") {
        // Let the bytes reach the kernel before the reset: end() flushes, then destroy both.
        closed = true;
        this.stats.cut++;
        this.conns.delete(entry);
        to.end(() => {
          client.destroy();
          upstream.destroy();
        });
        (to === upstream ? client : upstream).destroy();
        return false;
      }
      return true;
    };

    if (this.opts.protocol === "pg") {
      const fromClient = new PgFramer(true);
      const fromServer = new PgFramer(false);
      client.on("data", (chunk: Buffer) => {
        for (const { raw, msg } of fromClient.push(chunk)) {
          if (held) {
            held.push(raw);
            continue;
          }
          const v = this.opts.onPgClient?.(msg, entry.pc);
          if (v === "hold") {
            held = [raw];
            continue;
          }
          if (!apply(v, raw, upstream)) return;
        }
      });
      upstream.on("data", (chunk: Buffer) => {
        for (const { raw, msg } of fromServer.push(chunk)) if (!apply(this.opts.onPgServer?.(msg, entry.pc), raw, client)) return;
      });
    } else if (this.opts.protocol === "tcp") {
      client.on("data", (chunk: Buffer) => void (!closed && upstream.write(chunk)));
      upstream.on("data", (chunk: Buffer) => void (!closed && client.write(chunk)));
    } else {
      const fromClient = new HttpFramer();
      client.on("data", (chunk: Buffer) => {
        let parts;
        try {
          parts = fromClient.push(chunk);
        } catch {
          entry.pc.cut();
          return;
        }
        for (const { raw, head } of parts) if (!apply(head ? this.opts.onHttpRequest?.(head, entry.pc) : undefined, raw, upstream)) return;
      });
      upstream.on("data", (chunk: Buffer) => {
        if (!closed) client.write(chunk);
      });
    }
  }
}
