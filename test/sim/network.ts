/**
 * The simulated network: every message is an event on the virtual clock. Faults are active inside
 * the fault window [0, faultWindowMs); after it the network only delays (by at most
 * baseDelayMs + jitterMs), which is the "global stabilization time" the liveness checker waits for.
 *
 *   delay       baseDelayMs + uniform [0, jitterMs]      (always)
 *   reorder     + uniform [0, reorderJitterMs]           (window; later messages overtake earlier)
 *   loss        dropped with lossProbability             (window)
 *   duplicate   delivered twice with duplicateProbability (window)
 *   partition   cut between groups on a schedule         (window; checked when sent)
 */
import type { Prng } from "./prng.ts";

export interface Partition {
  readonly startMs: number;
  readonly endMs: number;
  /** Node indices per side; a message between different sides is lost. */
  readonly groups: readonly (readonly number[])[];
}

export interface NetworkConfig {
  readonly baseDelayMs: number;
  readonly jitterMs: number;
  readonly faultWindowMs: number;
  readonly reorderJitterMs: number;
  readonly lossProbability: number;
  readonly duplicateProbability: number;
  readonly partitions: readonly Partition[];
}

export interface NetworkStats {
  sent: number;
  delivered: number;
  lost: number;
  duplicated: number;
  cut: number;
  bytes: number;
}

export type Scheduler = (atMs: number, action: () => void) => void;
export type Deliver = (to: number, from: number, bytes: Uint8Array) => void;

export class SimNetwork {
  readonly stats: NetworkStats = { sent: 0, delivered: 0, lost: 0, duplicated: 0, cut: 0, bytes: 0 };

  constructor(
    private readonly config: NetworkConfig,
    private readonly prng: Prng,
    private readonly schedule: Scheduler,
    private readonly deliver: Deliver,
  ) {}

  isCut(from: number, to: number, atMs: number): boolean {
    for (const p of this.config.partitions) {
      if (atMs < p.startMs || atMs >= p.endMs) continue;
      const side = (n: number) => p.groups.findIndex((g) => g.includes(n));
      if (side(from) !== side(to)) return true;
    }
    return false;
  }

  send(from: number, to: number, bytes: Uint8Array, nowMs: number): void {
    this.stats.sent++;
    this.stats.bytes += bytes.length;
    const inWindow = nowMs < this.config.faultWindowMs;
    if (inWindow && this.isCut(from, to, nowMs)) {
      this.stats.cut++;
      return;
    }
    if (inWindow && this.prng.chance(this.config.lossProbability)) {
      this.stats.lost++;
      return;
    }
    const copies = inWindow && this.prng.chance(this.config.duplicateProbability) ? 2 : 1;
    if (copies === 2) this.stats.duplicated++;
    for (let c = 0; c < copies; c++) {
      const extra = inWindow ? this.prng.float() * this.config.reorderJitterMs : 0;
      const delay = this.config.baseDelayMs + this.prng.float() * this.config.jitterMs + extra;
      this.schedule(nowMs + Math.round(delay), () => {
        this.stats.delivered++;
        this.deliver(to, from, bytes);
      });
    }
  }
}
