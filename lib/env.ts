/** Reading the MILLRACE_* settings, falling back to the local stack's env file. */
import { existsSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { repoRoot } from "../stack/context.ts";

const HOW_TO_START =
  "start the local stack with `./millrace stack up` (it prints the settings; load them with eval \"$(./millrace stack env)\"), or set it to your own service";

let stackFileLoaded = false;

/** Values from `<stateDir>/env` written by `millrace stack up`, used only where the environment has none. */
function stackFileEnv(): Record<string, string> {
  const file = join(process.env.MILLRACE_STACK_DIR ?? join(repoRoot, ".stack"), "env");
  const out: Record<string, string> = {};
  if (!existsSync(file)) return out;
  for (const line of readFileSync(file, "utf8").split("\n")) {
    const m = /^export ([A-Z0-9_]+)='(.*)'$/.exec(line);
    if (m) out[m[1]!] = m[2]!.replaceAll("'\\''", "'");
  }
  return out;
}

const fromFile = new Set<string>();

/** Fill process.env with the stack's settings where they are not already set. */
export function loadStackEnv(): void {
  if (stackFileLoaded) return;
  stackFileLoaded = true;
  for (const [k, v] of Object.entries(stackFileEnv())) {
    if (process.env[k] === undefined) {
      process.env[k] = v;
      fromFile.add(k);
    }
  }
}

/** Whether process.env's `name` was filled in from the stack's env file (not set by the caller). */
export function cameFromStackFile(name: string): boolean {
  return fromFile.has(name) && process.env[name] !== undefined;
}

export function requireEnv(name: string): string {
  loadStackEnv();
  const v = process.env[name];
  if (v === undefined || v === "") throw new Error(`${name} is not set: ${HOW_TO_START}`);
  return v;
}

export function optionalEnv(name: string): string | undefined {
  loadStackEnv();
  const v = process.env[name];
  return v === undefined || v === "" ? undefined : v;
}
