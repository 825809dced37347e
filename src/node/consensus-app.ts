/**
 * The ledger as the consensus driver's application (src/consensus/ports.ts): the proposer builds a
 * block from its mempool, every validator re-executes a proposed block before it votes for it, and
 * the decided block is committed with its certificate in one atomic step.
 *
 * Blocks that were built or checked are kept by hash (bounded) so the decided one is not executed
 * a second time; the ledger's `buildBlock`/`checkBlock` change nothing until `commit`.
 */

import type { Application, ProposedBlock, TimeoutNotice } from "../consensus/ports.ts";
import { type Block, type Commit, decodeBlock, decodeCommit, encodeBlock } from "../core/block.ts";
import type { ValidatorSet } from "../core/consensus/proposer.ts";
import type { Evidence } from "../core/consensus/types.ts";
import { bytesEqual, toHex } from "../core/encoding.ts";
import { assert, CodedError } from "../core/errors.ts";
import type { Clock } from "./clock.ts";
import type { Ledger, PreparedBlock } from "./ledger.ts";
import type { ChainNode } from "./node.ts";

/** Blocks built or checked at the current height and kept for the decision. */
export const preparedBlocksMax = 16;

/**
 * How far a fresh proposal's block time may be ahead of this node's clock for the node to prevote
 * for it. Block time only has to increase, and every later block's time is at least its
 * predecessor's: a proposer whose clock is wrong (or a Byzantine one) could otherwise set a block a
 * year ahead, and from then on every transaction would be "expired before its block" and every
 * certificate judged at that date. With this rule a block more than this far ahead gets no honest
 * prevote when proposed, so block time stays within this bound of honest clocks. Like CometBFT's
 * proposer-based timestamps (precision plus message delay), it is generous: nodes keep NTP time to
 * well under a second, a proposal travels in under one. It is a prevote-only check (`isTimely`), not
 * part of valid(v): a node whose own clock is slow still locks on, precommits and decides what the
 * others prevoted (docs/spec/consensus.md, "Block time").
 */
export const blockTimeAheadMaxMs = 15_000;

/**
 * How far a fresh proposal's block time may be behind this node's clock for the node to prevote for
 * it. Block time only has to exceed its predecessor's, and a chain that waits for work may sit idle
 * for hours: without this bound a proposer could date a block just after the last one, hours back,
 * and have it judge certificates and transaction expiry at that date (a certificate that expired in
 * between would still sign). The allowance covers the proposal's trip and queue (well under a second
 * here, plus a pause of up to `p2p.timeoutCommitMs` when it waits for this node to enter the height).
 */
export const blockTimeBehindMaxMs = 15_000;

export interface LedgerApplicationHooks {
  onBehind?(height: number): void;
  onEvidence?(evidence: Evidence): void;
  onTimeout?(timeout: TimeoutNotice): void;
  onPeerAhead?(decidedHeight: number, from: string): void;
  /** Why this node judged a proposed block invalid, or its time untimely (it prevotes nil for it). */
  onRefused?(height: number, why: CodedError): void;
  /** After a decided block is durable, with the state it wrote. */
  onCommitted?(height: number, writes: ReadonlyMap<string, Uint8Array | null>): void;
}

export class LedgerApplication implements Application {
  private readonly prepared = new Map<string, PreparedBlock>();
  /**
   * Blocks decoded from the very byte arrays the driver holds: a proposal's bytes are hashed,
   * validated and committed as the same array, so each is decoded once per node (a 4,000-transaction
   * block took ~10 ms a decode, three times a height). Weak: the entry goes with the bytes.
   */
  private readonly decoded = new WeakMap<Uint8Array, Block>();

  constructor(
    private readonly ledger: Ledger,
    private readonly node: ChainNode,
    private readonly clock: Clock,
    private readonly hooks: LedgerApplicationHooks = {},
  ) {}

  height(): number {
    return this.ledger.height();
  }

  hasPendingWork(): boolean {
    return this.node.mempool.size > 0;
  }

  validatorSet(height: number): ValidatorSet {
    return this.ledger.validatorSetAt(height);
  }

  proposeBlock(height: number, _round: number): ProposedBlock {
    assert(height === this.ledger.height() + 1, "proposals are for the next height");
    const lastCommit = this.lastCommit();
    const prepared = this.ledger.buildBlock(
      this.node.candidates(),
      this.clock.now(),
      this.node.validatorId,
      lastCommit,
    );
    this.keep(prepared);
    const bytes = encodeBlock(prepared.block);
    this.decoded.set(bytes, prepared.block);
    return { hash: prepared.block.hash, bytes };
  }

  /** The block these bytes encode, decoded once per byte array; throws on malformed bytes. */
  private blockOf(bytes: Uint8Array): Block {
    let block = this.decoded.get(bytes);
    if (block === undefined) {
      block = decodeBlock(bytes);
      this.decoded.set(bytes, block);
    }
    return block;
  }

  hashBlock(bytes: Uint8Array): Uint8Array | null {
    try {
      return this.blockOf(bytes).hash;
    } catch {
      return null;
    }
  }

  validateBlock(height: number, bytes: Uint8Array): boolean {
    if (height !== this.ledger.height() + 1) return false;
    try {
      const block = this.blockOf(bytes);
      if (this.prepared.has(toHex(block.hash))) return true;
      this.keep(this.ledger.checkBlock(block));
      return true;
    } catch (error) {
      if (
        error instanceof CodedError &&
        error.code !== "INVARIANT_BROKEN" &&
        error.code !== "STORAGE_CORRUPT"
      ) {
        this.hooks.onRefused?.(height, error);
        return false;
      }
      throw error;
    }
  }

  isTimely(bytes: Uint8Array): boolean {
    let block: Block;
    try {
      block = this.blockOf(bytes);
    } catch {
      return true; // not a block: validateBlock refuses it, with the reason
    }
    const aheadMs = block.header.timeMs - this.clock.now();
    if (aheadMs >= -blockTimeBehindMaxMs && aheadMs <= blockTimeAheadMaxMs) return true;
    this.hooks.onRefused?.(
      block.header.height,
      aheadMs > 0
        ? new CodedError(
            "BLOCK_TIME_AHEAD",
            `block time is ${aheadMs} ms ahead of this node's clock (at most ${blockTimeAheadMaxMs})`,
          )
        : new CodedError(
            "BLOCK_TIME_BEHIND",
            `block time is ${-aheadMs} ms behind this node's clock (at most ${blockTimeBehindMaxMs})`,
          ),
    );
    return false;
  }

  commit(height: number, blockHash: Uint8Array, blockBytes: Uint8Array, commit: Commit): void {
    assert(height === this.ledger.height() + 1, "decisions commit in order");
    let prepared = this.prepared.get(toHex(blockHash));
    if (prepared === undefined) prepared = this.ledger.checkBlock(this.blockOf(blockBytes));
    assert(bytesEqual(prepared.block.hash, blockHash), "the decided block is the one prepared");
    this.ledger.commit(prepared, commit);
    this.prepared.clear();
    this.node.afterCommit(prepared, commit);
    this.hooks.onCommitted?.(height, prepared.execution.writes);
  }

  decisionAt(height: number): { readonly blockBytes: Uint8Array; readonly commit: Commit } | undefined {
    if (height < 1 || height > this.ledger.height()) return undefined;
    const row = this.ledger.store.blockByHeight(height);
    const commitBytes = this.ledger.store.commitBytes(height);
    if (row === undefined || commitBytes === undefined) return undefined;
    return { blockBytes: row.bytes, commit: decodeCommit(commitBytes) };
  }

  onBehind(height: number): void {
    this.hooks.onBehind?.(height);
  }

  onEvidence(evidence: Evidence): void {
    this.hooks.onEvidence?.(evidence);
  }

  onTimeout(timeout: TimeoutNotice): void {
    this.hooks.onTimeout?.(timeout);
  }

  onPeerAhead(decidedHeight: number, from: string): void {
    this.hooks.onPeerAhead?.(decidedHeight, from);
  }

  private lastCommit(): Commit | null {
    const height = this.ledger.height();
    if (height === 0) return null;
    const bytes = this.ledger.store.commitBytes(height);
    assert(bytes !== undefined, "the last block's commit is stored");
    return decodeCommit(bytes);
  }

  private keep(prepared: PreparedBlock): void {
    if (this.prepared.size >= preparedBlocksMax)
      this.prepared.delete(this.prepared.keys().next().value as string);
    this.prepared.set(toHex(prepared.block.hash), prepared);
  }
}
