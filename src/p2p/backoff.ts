/**
 * Redial delays: exponential in the number of failed attempts, capped, with "equal jitter" (half
 * fixed, half random). The jitter keeps nodes that lost a peer at the same moment (it restarted)
 * from redialling in lockstep; the fixed half keeps a flapping peer from being hammered.
 */
import { assert } from "../core/errors.ts";
import type { Random } from "./ports.ts";

export interface BackoffOptions {
  /** Delay ceiling before jitter for the first retry, ms. */
  readonly backoffBaseMs: number;
  /** Largest delay, ms, however many attempts failed. */
  readonly backoffMaxMs: number;
}

/** Doubling stops here; 2^30 times any sane base is already far past any cap. */
const backoffExponentMax = 30;

/** The delay before retry number `attempt` (0 = the first retry after a failure). */
export function backoffDelayMs(attempt: number, options: BackoffOptions, random: Random): number {
  assert(Number.isSafeInteger(attempt) && attempt >= 0, "backoff attempt is a non-negative integer");
  assert(options.backoffBaseMs > 0 && options.backoffMaxMs >= options.backoffBaseMs, "backoff bounds");
  const ceilingMs = Math.min(
    options.backoffMaxMs,
    options.backoffBaseMs * 2 ** Math.min(attempt, backoffExponentMax),
  );
  const jitter = random.float();
  assert(jitter >= 0 && jitter < 1, "random.float() is in [0, 1)");
  return Math.round(ceilingMs / 2 + (jitter * ceilingMs) / 2);
}
