/**
 * The simulator's application: a simple in-memory chain per node. It is the node's "disk": it
 * survives a simulated crash (the driver and machine do not).
 *
 *   block = ["citychain/simblock/v2", height, parentHash, proposerId, round, timeMs, [tx...], valid]
 *   hash  = SHA-256("citychain/simblock/v2" 0x00 || block)
 *
 * valid(v) holds when the height follows, the parent is this node's last decided block, the
 * transactions are within limits and the `valid` flag is true: a Byzantine proposer makes an invalid
 * block by clearing it (or by pointing at a wrong parent), and every honest node judges it the same way.
 * A block's time is its proposer's clock; a node finds a proposal timely (Application.isTimely) when
 * that time is within `simBlockTimeSkewMaxMs` of its own clock, as a network node does.
 */

import type { Application, ProposedBlock } from "../../src/consensus/ports.ts";
import type { Commit, Validator } from "../../src/core/block.ts";
import {
  carryPriorities,
  nextHeightValidatorSet,
  type ValidatorSet,
} from "../../src/core/consensus/proposer.ts";
import type { Evidence } from "../../src/core/consensus/types.ts";
import { type Canonical, decodeCanonical, encodeCanonical, utf8 } from "../../src/core/encoding.ts";
import { assert } from "../../src/core/errors.ts";
import { taggedHash } from "../../src/core/hash.ts";

export const simBlockTag = "citychain/simblock/v2";
/** The simulator's timeliness bound (virtual ms) either way, as blockTimeAheadMaxMs / BehindMaxMs. */
export const simBlockTimeSkewMaxMs = 1000;
export const simTxsPerBlockMax = 16;
export const simTxBytesMax = 64;
export const simBlockBytesMax = 4096;
export const genesisParent = taggedHash("citychain/simgenesis/v1", new Uint8Array(0));

export interface SimBlock {
  readonly height: number;
  readonly parent: Uint8Array;
  readonly proposer: Uint8Array;
  readonly round: number;
  /** The proposer's clock when it built the block (virtual ms, offset so it is never negative). */
  readonly timeMs: number;
  readonly txs: readonly Uint8Array[];
  readonly valid: boolean;
}

export function encodeSimBlock(b: SimBlock): Uint8Array {
  return encodeCanonical([
    simBlockTag,
    b.height,
    b.parent,
    b.proposer,
    b.round,
    b.timeMs,
    b.txs as Uint8Array[],
    b.valid,
  ]);
}

export function simBlockHash(bytes: Uint8Array): Uint8Array {
  return taggedHash(simBlockTag, bytes);
}

export function decodeSimBlock(bytes: Uint8Array): SimBlock | null {
  let raw: Canonical;
  try {
    raw = decodeCanonical(bytes, simBlockBytesMax);
  } catch {
    return null;
  }
  if (!Array.isArray(raw) || raw.length !== 8) return null;
  const [tag, height, parent, proposer, round, timeMs, txs, valid] = raw as Canonical[];
  if (tag !== simBlockTag || !Number.isSafeInteger(height) || !Number.isSafeInteger(round)) return null;
  if (!Number.isSafeInteger(timeMs)) return null;
  if (!(parent instanceof Uint8Array) || !(proposer instanceof Uint8Array) || typeof valid !== "boolean")
    return null;
  if (!Array.isArray(txs) || !txs.every((t) => t instanceof Uint8Array)) return null;
  return {
    height: height as number,
    parent,
    proposer,
    round: round as number,
    timeMs: timeMs as number,
    txs: txs as Uint8Array[],
    valid,
  };
}

/** The one validity rule, used by every honest node and by the Validity checker. */
export function isValidSimBlock(bytes: Uint8Array, height: number, parent: Uint8Array): boolean {
  const b = decodeSimBlock(bytes);
  if (b === null || !b.valid || b.height !== height || b.parent.length !== 32) return false;
  if (!b.parent.every((x, i) => x === parent[i])) return false;
  return b.txs.length <= simTxsPerBlockMax && b.txs.every((t) => t.length <= simTxBytesMax);
}

/** Synthetic transactions: a proposer's block differs from every other proposer's and round's. */
export function syntheticTxs(node: number, height: number, round: number, salt: string): Uint8Array[] {
  return [0, 1, 2].map((k) => utf8(`tx/${node}/${height}/${round}/${k}${salt}`));
}

export interface StoredDecision {
  readonly blockHash: Uint8Array;
  readonly blockBytes: Uint8Array;
  readonly commit: Commit;
}

export interface SimChainHooks {
  onCommit(node: number, height: number, decision: StoredDecision): void;
  onEvidence(node: number, evidence: Evidence): void;
  /** The driver learned it is behind: the node's catch-up (block fetch) is the simulation's to play. */
  onBehind?(node: number, from: string | null): void;
}

export class SimChain implements Application {
  private readonly decided: StoredDecision[] = [];
  private readonly sets: ValidatorSet[] = [];
  /**
   * Transactions that reached this node and are not in a block yet (the simulation's work mode: the
   * driver then waits for work, as a network node does). A commit takes them all; a crash loses them.
   */
  pendingWork = 0;

  constructor(
    readonly node: number,
    private readonly proposerId: Uint8Array,
    genesisSet: ValidatorSet,
    private readonly hooks: SimChainHooks,
    /** Validator list from a height on (the chain's membership changes, the same on every node). */
    private readonly changes: ReadonlyMap<number, readonly Validator[]> = new Map(),
    /** This node's clock: the virtual clock, off by this node's skew (SimConfig.skewedClocks). */
    private readonly clockMs: () => number = () => 0,
  ) {
    this.sets[1] = genesisSet;
  }

  height(): number {
    return this.decided.length;
  }

  lastHash(): Uint8Array {
    return this.decided.at(-1)?.blockHash ?? genesisParent;
  }

  validatorSet(height: number): ValidatorSet {
    const set = this.sets[height];
    assert(set !== undefined, `the validator set of height ${height} is known`);
    return set;
  }

  proposeBlock(height: number, round: number): ProposedBlock {
    assert(height === this.height() + 1, "proposals are for the next height");
    const bytes = encodeSimBlock({
      height,
      parent: this.lastHash(),
      proposer: this.proposerId,
      round,
      timeMs: this.clockMs(),
      txs: syntheticTxs(this.node, height, round, ""),
      valid: true,
    });
    return { hash: simBlockHash(bytes), bytes };
  }

  hasPendingWork(): boolean {
    return this.pendingWork > 0;
  }

  hashBlock(bytes: Uint8Array): Uint8Array | null {
    return decodeSimBlock(bytes) === null ? null : simBlockHash(bytes);
  }

  validateBlock(height: number, bytes: Uint8Array): boolean {
    return height === this.height() + 1 && isValidSimBlock(bytes, height, this.lastHash());
  }

  isTimely(bytes: Uint8Array): boolean {
    const block = decodeSimBlock(bytes);
    return block === null || Math.abs(block.timeMs - this.clockMs()) <= simBlockTimeSkewMaxMs;
  }

  commit(height: number, blockHash: Uint8Array, blockBytes: Uint8Array, commit: Commit): void {
    assert(height === this.height() + 1, "DecideOnce: blocks commit once, in order");
    assert(this.validateBlock(height, blockBytes), "only valid blocks commit");
    const decision = { blockHash, blockBytes, commit };
    this.decided.push(decision);
    this.pendingWork = 0;
    const stepped = nextHeightValidatorSet(this.validatorSet(height));
    const change = this.changes.get(height + 1);
    this.sets[height + 1] = change === undefined ? stepped : carryPriorities(stepped, change);
    this.hooks.onCommit(this.node, height, decision);
  }

  decisionAt(height: number): StoredDecision | undefined {
    return this.decided[height - 1];
  }

  onEvidence(evidence: Evidence): void {
    this.hooks.onEvidence(this.node, evidence);
  }

  onBehind(): void {
    this.hooks.onBehind?.(this.node, null);
  }

  onPeerAhead(_decidedHeight: number, from: string): void {
    this.hooks.onBehind?.(this.node, from);
  }
}
