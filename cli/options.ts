/** Option parsers shared by several commands (commander `argParser`s: they throw InvalidArgumentError). */
import { InvalidArgumentError } from "commander";

/** An integer ≥ 1 (≥ 0 with allowZero); `name` is how the message names the option. */
export function positiveInt(name: string, allowZero = false) {
  return (raw: string): number => {
    const n = Number(raw);
    if (!Number.isInteger(n) || n < (allowZero ? 0 : 1)) throw new InvalidArgumentError(`${name} must be an integer ≥ ${allowZero ? 0 : 1}, got ${raw}`);
    return n;
  };
}
