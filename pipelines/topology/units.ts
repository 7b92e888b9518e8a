/**
 * The units topology.yaml is written in: durations (`100ms`, `30s`, `5m`, `1h`) and sizes
 * (`512KiB`, `4MiB`, a plain integer = bytes). Parsing returns a message instead of throwing, so
 * the loader can report it with its position; formatting is the inverse, used by describe().
 */

const DURATION_UNITS = { ms: 1, s: 1_000, m: 60_000, h: 3_600_000 } as const;
const SIZE_UNITS = { B: 1, KiB: 1024, MiB: 1024 ** 2, GiB: 1024 ** 3 } as const;

export type Parsed = { ok: true; value: number } | { ok: false; message: string };

export const DURATION_HINT = "a duration like 100ms, 30s, 5m or 1h";
export const SIZE_HINT = "a size like 512KiB, 4MiB or a plain number of bytes";

/** `"1.5s"` → 1500. A bare number is refused: `30` could be seconds or milliseconds. */
export function parseDuration(raw: unknown): Parsed {
  if (typeof raw === "number") return { ok: false, message: `${raw} has no unit: expected ${DURATION_HINT}` };
  if (typeof raw !== "string") return { ok: false, message: `expected ${DURATION_HINT}` };
  const m = /^(\d+(?:\.\d+)?)(ms|s|m|h)$/.exec(raw.trim());
  if (!m) return { ok: false, message: `${JSON.stringify(raw)} is not ${DURATION_HINT}` };
  const ms = Number(m[1]) * DURATION_UNITS[m[2] as keyof typeof DURATION_UNITS];
  if (!Number.isSafeInteger(ms)) return { ok: false, message: `${JSON.stringify(raw)} is not a whole number of milliseconds` };
  return { ok: true, value: ms };
}

/** `"4MiB"` → 4194304; `1024` → 1024. Binary (IEC) units only, so `4MB` is not silently 4,000,000. */
export function parseSize(raw: unknown): Parsed {
  if (typeof raw === "number") {
    return Number.isSafeInteger(raw) && raw >= 0 ? { ok: true, value: raw } : { ok: false, message: `${raw} is not ${SIZE_HINT}` };
  }
  if (typeof raw !== "string") return { ok: false, message: `expected ${SIZE_HINT}` };
  const m = /^(\d+(?:\.\d+)?)\s*(B|KiB|MiB|GiB)?$/.exec(raw.trim());
  if (!m) return { ok: false, message: `${JSON.stringify(raw)} is not ${SIZE_HINT} (units: B, KiB, MiB, GiB)` };
  const bytes = Number(m[1]) * SIZE_UNITS[(m[2] ?? "B") as keyof typeof SIZE_UNITS];
  if (!Number.isSafeInteger(bytes)) return { ok: false, message: `${JSON.stringify(raw)} is not a whole number of bytes` };
  return { ok: true, value: bytes };
}

/** 60000 → `1m`, 1500 → `1500ms`: the largest unit that divides exactly. */
export function formatDuration(ms: number): string {
  for (const [unit, factor] of [["h", 3_600_000], ["m", 60_000], ["s", 1_000]] as const) {
    if (ms !== 0 && ms % factor === 0) return `${ms / factor}${unit}`;
  }
  return `${ms}ms`;
}

/** 4194304 → `4MiB`, 1000 → `1000` (bytes). */
export function formatSize(bytes: number): string {
  for (const [unit, factor] of [["GiB", 1024 ** 3], ["MiB", 1024 ** 2], ["KiB", 1024]] as const) {
    if (bytes !== 0 && bytes % factor === 0) return `${bytes / factor}${unit}`;
  }
  return `${bytes}`;
}
