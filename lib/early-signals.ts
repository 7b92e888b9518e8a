/**
 * SIGTERM/SIGINT caught from the first moment of `millrace run`, before the worker's own handlers
 * exist: cli/early-signals.mjs (preloaded with `node --import`, before the TypeScript loader)
 * remembers a stop requested while the process is still starting, and the command turns it into a
 * clean exit (0) instead of the default kill — a rolling restart can hit a process that is still
 * loading.
 */
interface EarlyState {
  received: NodeJS.Signals | undefined;
  handler: ((signal: NodeJS.Signals) => void) | undefined;
}

const KEY = Symbol.for("millrace.earlySignals");

export const earlySignals = {
  /** The command installs its own handlers first, then calls this: returns a signal received meanwhile. */
  takeOver(): NodeJS.Signals | undefined {
    const state = (globalThis as Record<symbol, EarlyState | undefined>)[KEY];
    if (!state?.handler) return undefined;
    process.off("SIGTERM", state.handler);
    process.off("SIGINT", state.handler);
    state.handler = undefined;
    return state.received;
  },
};
