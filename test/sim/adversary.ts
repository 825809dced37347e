/**
 * Byzantine behaviour. A Byzantine node runs the same production driver as everyone (so it takes part
 * in every round and looks normal), but its transport is this adversary, which rewrites what leaves
 * the node and signs extra messages with the node's key behind the driver's back (no WAL, no
 * double-sign guard):
 *
 *   equivocate        its proposal goes to half of the honest nodes; a second block to the other half
 *   conflictingVotes  each vote goes to one half; a vote for another value to the other half
 *   invalidBlocks     some proposals carry a block that fails valid(v)
 *   garbage           random bytes, oversized messages, bit-flipped and truncated copies
 *   nonValidator      votes signed by a key outside the set, and votes forged in a member's name
 *
 * With `coalition` set (the > 1/3 negative control), Byzantine nodes coordinate: a Byzantine
 * proposer's two blocks are registered, and every Byzantine voter votes the first block to one half
 * and the second to the other, which is how a coalition above 1/3 splits honest nodes.
 */

import type { PeerId, TransportPort } from "../../src/consensus/ports.ts";
import {
  type ConsensusMessage,
  decodeConsensusMessage,
  encodeConsensusMessage,
  proposalSignBytes,
  type Vote,
  valueKey,
  voteSignBytes,
} from "../../src/core/consensus/types.ts";
import type { SignRecord } from "./checkers.ts";
import type { SimKey } from "./keys.ts";
import type { Prng } from "./prng.ts";
import { decodeSimBlock, encodeSimBlock, simBlockHash, syntheticTxs } from "./sim-app.ts";

export type ByzantineBehavior =
  | "equivocate"
  | "conflictingVotes"
  | "invalidBlocks"
  | "garbage"
  | "nonValidator";
export const allBehaviors: readonly ByzantineBehavior[] = [
  "equivocate",
  "conflictingVotes",
  "invalidBlocks",
  "garbage",
  "nonValidator",
];

/** Per outgoing message, the chance of each side attack (probabilities, not counts). */
const invalidBlockProbability = 0.5;
const garbageProbability = 0.3;
const nonValidatorProbability = 0.5;
const garbageBytesMax = 512;

export interface AdversaryContext {
  readonly chainId: string;
  readonly nodeCount: number;
  readonly honestNodes: readonly number[];
  readonly prng: Prng;
  /** Shared by colluding Byzantine nodes: (height/round) -> the two blocks of an equivocation. */
  readonly coalition: Map<string, { readonly a: Uint8Array; readonly b: Uint8Array }> | null;
  readonly outsider: SimKey;
  /** A message one byte over the receivers' limit. */
  readonly oversized: Uint8Array;
  send(from: number, to: number, bytes: Uint8Array): void;
  logSign(record: SignRecord): void;
}

export class Adversary implements TransportPort {
  constructor(
    private readonly node: number,
    private readonly key: SimKey,
    private readonly behaviors: ReadonlySet<ByzantineBehavior>,
    private readonly ctx: AdversaryContext,
  ) {}

  send(peer: PeerId, bytes: Uint8Array): void {
    this.ctx.send(this.node, Number(peer), bytes);
  }

  broadcast(bytes: Uint8Array): void {
    const message = decodeConsensusMessage(bytes);
    if (message.kind === "proposal") this.broadcastProposal(message, bytes);
    else if (message.kind === "vote") this.broadcastVote(message.vote, bytes);
    else this.toAll(bytes);
    if (this.behaviors.has("garbage") && this.ctx.prng.chance(garbageProbability)) this.sendGarbage(bytes);
  }

  private peers(): number[] {
    const out: number[] = [];
    for (let i = 0; i < this.ctx.nodeCount; i++) if (i !== this.node) out.push(i);
    return out;
  }

  /** Honest nodes alternate between half A (true) and half B; Byzantine peers count as A. */
  private inHalfA(peer: number): boolean {
    const position = this.ctx.honestNodes.indexOf(peer);
    return position < 0 || position % 2 === 0;
  }

  private toAll(bytes: Uint8Array): void {
    for (const p of this.peers()) this.ctx.send(this.node, p, bytes);
  }

  private split(a: Uint8Array, b: Uint8Array): void {
    for (const p of this.peers()) this.ctx.send(this.node, p, this.inHalfA(p) ? a : b);
  }

  private broadcastProposal(
    message: Extract<ConsensusMessage, { kind: "proposal" }>,
    bytes: Uint8Array,
  ): void {
    const { proposal, blockBytes } = message;
    const block = decodeSimBlock(blockBytes);
    if (block === null) {
      this.toAll(bytes);
    } else if (this.behaviors.has("equivocate")) {
      const alt = encodeSimBlock({
        ...block,
        txs: syntheticTxs(this.node, block.height, block.round, "/alt"),
      });
      const altWire = this.proposalWire(proposal, alt);
      this.ctx.coalition?.set(`${proposal.height}/${proposal.round}`, {
        a: proposal.blockHash,
        b: simBlockHash(alt),
      });
      this.split(bytes, altWire);
    } else if (this.behaviors.has("invalidBlocks") && this.ctx.prng.chance(invalidBlockProbability)) {
      this.toAll(this.proposalWire(proposal, encodeSimBlock({ ...block, valid: false })));
    } else {
      this.toAll(bytes);
    }
  }

  private proposalWire(
    proposal: Extract<ConsensusMessage, { kind: "proposal" }>["proposal"],
    blockBytes: Uint8Array,
  ): Uint8Array {
    const unsigned = { ...proposal, blockHash: simBlockHash(blockBytes) };
    const signed = { ...unsigned, signature: this.key.sign(proposalSignBytes(unsigned)) };
    this.ctx.logSign({
      node: this.node,
      honest: false,
      kind: "proposal",
      height: signed.height,
      round: signed.round,
      value: `${valueKey(signed.blockHash)}/${signed.polRound}`,
    });
    return encodeConsensusMessage({ kind: "proposal", proposal: signed, blockBytes });
  }

  private broadcastVote(vote: Vote, bytes: Uint8Array): void {
    if (this.behaviors.has("conflictingVotes")) {
      const pair = this.ctx.coalition?.get(`${vote.height}/${vote.round}`);
      if (pair !== undefined)
        this.split(this.resign(vote, pair.a, this.key), this.resign(vote, pair.b, this.key));
      else if (this.ctx.coalition !== null)
        this.toAll(bytes); // keep honest nodes in step until a split pays
      else
        this.split(
          bytes,
          this.resign(vote, vote.blockHash === null ? this.ctx.prng.bytes(32) : null, this.key),
        );
    } else {
      this.toAll(bytes);
    }
    if (this.behaviors.has("nonValidator") && this.ctx.prng.chance(nonValidatorProbability)) {
      const outsider = this.ctx.outsider;
      this.toAll(this.resign({ ...vote, validatorId: outsider.id }, vote.blockHash, outsider));
      this.toAll(this.resign(vote, vote.blockHash, outsider)); // a member's name, the wrong key
    }
  }

  private resign(vote: Vote, blockHash: Uint8Array | null, key: SimKey): Uint8Array {
    const unsigned = { ...vote, blockHash };
    const signed = { ...unsigned, signature: key.sign(voteSignBytes(this.ctx.chainId, unsigned)) };
    if (key === this.key) {
      this.ctx.logSign({
        node: this.node,
        honest: false,
        kind: vote.type === 1 ? "prevote" : "precommit",
        height: vote.height,
        round: vote.round,
        value: valueKey(blockHash),
      });
    }
    return encodeConsensusMessage({ kind: "vote", vote: signed });
  }

  private sendGarbage(bytes: Uint8Array): void {
    const prng = this.ctx.prng;
    const peer = prng.pick(this.peers());
    const kind = prng.int(4);
    let junk: Uint8Array;
    if (kind === 0) junk = prng.bytes(prng.between(1, garbageBytesMax));
    else if (kind === 1) junk = this.ctx.oversized;
    else if (kind === 2) {
      junk = new Uint8Array(bytes); // a copy: Buffer#slice would share, and flip the original for everyone
      const i = prng.int(junk.length);
      junk[i]! ^= 1 << prng.int(8);
    } else junk = bytes.subarray(0, prng.int(bytes.length));
    this.ctx.send(this.node, peer, junk);
  }
}
