/**
 * What the peer network needs from the world besides sockets: time, randomness and a log. They are
 * ports so tests (and later the simulator) can hand in their own; the defaults below are the only
 * place in src/p2p that reads the real clock or Math.random.
 */

/** A pending timer; cancelling twice or after it fired is harmless. */
export interface TimerHandle {
  cancel(): void;
}

export interface NetworkClock {
  /** Milliseconds since the Unix epoch. */
  now(): number;
  /** Runs `callback` once after `delayMs`. */
  setTimer(delayMs: number, callback: () => void): TimerHandle;
}

export interface Random {
  /** Uniform in [0, 1). */
  float(): number;
}

/** pino's shape (fields first, then the message), so the node can hand in its pino logger as is. */
export interface Logger {
  debug(fields: Record<string, unknown>, message: string): void;
  info(fields: Record<string, unknown>, message: string): void;
  warn(fields: Record<string, unknown>, message: string): void;
  error(fields: Record<string, unknown>, message: string): void;
}

export const systemNetworkClock: NetworkClock = {
  now: () => Date.now(),
  setTimer(delayMs, callback) {
    const timer = setTimeout(callback, delayMs);
    // Timers here are housekeeping (pings, redials, batches): they must not keep a process alive
    // on their own; the listening socket does that while the network runs.
    timer.unref();
    return { cancel: () => clearTimeout(timer) };
  },
};

/** Jitter only needs to spread reconnects out, not to be unpredictable. */
export const mathRandom: Random = { float: () => Math.random() };

const ignore = (): void => {};
export const silentLogger: Logger = { debug: ignore, info: ignore, warn: ignore, error: ignore };
