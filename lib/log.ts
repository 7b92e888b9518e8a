/** Structured logging (pino, JSON lines on stderr). Components get a child logger named after them. */
import { pino, type Logger } from "pino";

export type { Logger };

export function createLogger(opts: { level?: string; name?: string } = {}): Logger {
  return pino(
    { name: opts.name ?? "millrace", level: opts.level ?? process.env.MILLRACE_LOG_LEVEL ?? "info", base: { pid: process.pid } },
    pino.destination({ dest: 2, sync: false }),
  );
}

/** A logger that writes nothing (tests). */
export const silentLogger: Logger = pino({ level: "silent" });
