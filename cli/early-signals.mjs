// Preloaded with `node --import` before the TypeScript loader, so that for `millrace run` a
// SIGTERM/SIGINT arriving while the process is still starting is remembered (and becomes a clean
// exit once the command takes over, lib/early-signals.ts) instead of killing it. Plain JavaScript,
// no imports: it must load in a millisecond.
if (process.argv.includes("run")) {
  const state = { received: undefined, handler: undefined };
  state.handler = (signal) => {
    state.received ??= signal;
  };
  process.on("SIGTERM", state.handler);
  process.on("SIGINT", state.handler);
  globalThis[Symbol.for("millrace.earlySignals")] = state;
}
