/**
 * A token bucket: `ratePerSecond` tokens flow in continuously up to `burst`; spending more than is
 * there fails. Inbound budgets use one per peer for messages and one for bytes, so a peer may burst
 * (a block, a round's votes) but not sustain more than its rate. Time comes from the caller, so the
 * bucket runs on any clock.
 */
import { assert } from "../core/errors.ts";

export class TokenBucket {
  private tokens: number;
  private lastRefillMs: number;

  constructor(
    readonly ratePerSecond: number,
    readonly burst: number,
    nowMs: number,
  ) {
    assert(ratePerSecond > 0 && Number.isFinite(ratePerSecond), "a bucket's rate is positive");
    assert(burst > 0 && Number.isFinite(burst), "a bucket's burst is positive");
    this.tokens = burst;
    this.lastRefillMs = nowMs;
  }

  /** Takes `count` tokens if they are there; a refused take leaves the bucket as it was. */
  take(count: number, nowMs: number): boolean {
    assert(count >= 0, "a take is not negative");
    this.refill(nowMs);
    if (count > this.tokens) return false;
    this.tokens -= count;
    return true;
  }

  get available(): number {
    return this.tokens;
  }

  private refill(nowMs: number): void {
    // A clock that steps backwards (NTP) must not mint tokens or panic: it just adds none.
    const elapsedMs = Math.max(0, nowMs - this.lastRefillMs);
    this.lastRefillMs = Math.max(this.lastRefillMs, nowMs);
    this.tokens = Math.min(this.burst, this.tokens + (elapsedMs * this.ratePerSecond) / 1000);
  }
}
