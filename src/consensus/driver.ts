/**
 * The consensus driver ("reactor"): moves messages between the pure machine
 * (src/core/consensus/machine.ts) and the world, through ports only (./ports.ts).
 *
 * Inbound: bytes from a peer are decoded (strict, size-limited), checked against the height's
 * validator set, their signatures verified, and only then fed to the machine, which asserts what the
 * driver promised (the sender is a validator). Messages for the next height wait in a bounded buffer;
 * messages for an older height get the decision of that height back (so a peer that missed the
 * precommits can finish it); a decision for a later height calls the application's catch-up hook.
 *
 * Outbound, the WAL rule: for every proposal or vote the machine asks for, the driver
 *   1. refuses if the WAL already holds a different signed value for that (height, round, type)
 *      (NoDoubleSign across crashes; the same value is simply re-sent),
 *   2. appends the block the message names (so a restart can re-propose a locked value),
 *   3. signs, appends the signed message (durable before anything leaves the node),
 *   4. broadcasts it, and feeds it back to the machine as if received (a node counts its own vote).
 *
 * Gossip is minimal here, but it keeps the paper's assumption that a message one correct node
 * received every correct node eventually receives: every `rebroadcastIntervalMs` until the height is
 * decided, the driver re-sends its own messages of the height and relays the messages of others that
 * still matter: those of the current round, and the prevotes of the rounds that justify a lock or a
 * re-proposal (validRound, lockedRound, the polRound of current proposals). Without the relay a
 * Byzantine validator that shows its prevote to some nodes only can keep the others from ever seeing
 * the polka behind a re-proposed value, and the height stalls. (The p2p step replaces this with
 * per-peer gossip of what each peer lacks.)
 */
import type { Commit } from "../core/block.ts";
import { verifyCommit } from "../core/consensus/commit.ts";
import {
  type ConsensusState,
  defaultMachineOptions,
  type Effect,
  hasVote,
  initialState,
  type MachineInput,
  type MachineOptions,
  type MachineView,
  proposerOf,
  step,
  validatorOf,
  verdictFor,
  viewOf,
} from "../core/consensus/machine.ts";
import { ProposerSchedule } from "../core/consensus/proposer.ts";
import {
  type ConsensusMessage,
  consensusLimits,
  decodeConsensusMessage,
  encodeConsensusMessage,
  type Proposal,
  proposalSignBytes,
  sameValue,
  type UnsignedProposal,
  type UnsignedVote,
  type Vote,
  valueKey,
  voteSignBytes,
  voteTypePrecommit,
  voteTypePrevote,
} from "../core/consensus/types.ts";
import { assert } from "../core/errors.ts";
import type {
  Application,
  PeerId,
  SignerPort,
  TimerClock,
  TimerId,
  TransportPort,
  VerifierPort,
  Wal,
} from "./ports.ts";
import type { WalRecord } from "./wal.ts";

export interface DriverOptions {
  readonly chainId: string;
  readonly machine: MachineOptions;
  readonly blockBytesMax: number;
  /** Own messages of an undecided height are re-sent this often (eventual delivery over loss). */
  readonly rebroadcastIntervalMs: number;
  /** Own messages re-sent per interval, newest first (a long height has many rounds). */
  readonly rebroadcastMessagesMax: number;
  /** Others' messages kept for relay at the current height (one per sender and slot). */
  readonly relayMessagesMax: number;
  /** Pause after a decision before the next height starts (CometBFT's timeout_commit). */
  readonly timeoutCommitMs: number;
  /**
   * Start a height only when there is something to put in it (CometBFT's create_empty_blocks=false):
   * the application has pending transactions, a peer has moved on to that height, or the WAL shows
   * this node already signed at it. An idle chain then makes no blocks at all.
   */
  readonly waitForWork: boolean;
  /** Messages for the next height held until this node gets there. */
  readonly futureMessagesMax: number;
  /** Block bytes held for the current height (proposals, own values). */
  readonly blocksCachedMax: number;
  /** A lagging peer gets at most one decision per height per this interval. */
  readonly catchUpReplyIntervalMs: number;
  /**
   * Votes of the height just decided keep arriving for a moment from peers that are deciding too;
   * only after this grace does such a vote mean its sender is stuck and needs the decision.
   */
  readonly catchUpGraceMs: number;
  /** Peers remembered for that rate limit. */
  readonly catchUpPeersMax: number;
  /**
   * Still waiting for round 0's proposal this long after entering a height (0 = never): send the
   * proposer the previous height's decision. A proposer that missed that decision waits for a
   * proposal of a height its peers have finished, while they wait for its proposal, and nothing else
   * would move either before their propose timeouts (seen at light load: 1 s lost, p99 1–2 s).
   * The wait grows to twice the slowest of the last `proposalDelaysKept` round-0 proposals (at most
   * half the propose timeout), so a proposer that is merely busy (large blocks) is not sent a block
   * it does not need.
   */
  readonly proposerNudgeMs: number;
}

export const defaultDriverOptions: Omit<DriverOptions, "chainId"> = {
  machine: defaultMachineOptions,
  blockBytesMax: consensusLimits.blockBytesMax,
  rebroadcastIntervalMs: 1000,
  rebroadcastMessagesMax: 64,
  relayMessagesMax: 4096,
  timeoutCommitMs: 0,
  waitForWork: false,
  futureMessagesMax: 1024,
  blocksCachedMax: 16,
  catchUpReplyIntervalMs: 500,
  catchUpGraceMs: 500,
  catchUpPeersMax: 1024,
  proposerNudgeMs: 100,
};

/** Round-0 proposal delays remembered for the nudge's wait (see proposerNudgeMs). */
export const proposalDelaysKept = 8;

/**
 * Steps of a height, for an optional timeline (the node logs them at debug level; bench/timeline.ts
 * reads them). The port reads the clock, not the driver.
 */
export type DriverStep =
  | "enter"
  | "build-start"
  | "build-end"
  | "proposal-sent"
  | "proposal-received"
  | "check-start"
  | "check-end"
  | "prevote-sent"
  | "precommit-sent"
  | "commit-start"
  | "commit-end";

export interface DriverPorts {
  readonly clock: TimerClock;
  /** Called at each step of a height when set; must not throw. */
  readonly trace?: (step: DriverStep, height: number) => void;
  readonly transport: TransportPort;
  /** null for an observer, which follows consensus without signing. */
  readonly signer: SignerPort | null;
  readonly verifier: VerifierPort;
  readonly wal: Wal;
  readonly app: Application;
}

/** What the driver dropped or did, by reason: tests and metrics read these. */
export interface DriverCounters {
  malformed: number;
  nonValidator: number;
  badSignature: number;
  notProposer: number;
  blockMismatch: number;
  /** Fresh proposals whose block time was not plausible by this node's clock (prevoted nil). */
  untimely: number;
  wrongChain: number;
  futureBuffered: number;
  futureDropped: number;
  stale: number;
  duplicate: number;
  catchUpReplies: number;
  proposerNudges: number;
  behind: number;
  refusedDoubleSign: number;
  evidence: number;
  decided: number;
  rebroadcasts: number;
}

interface SignedSlot {
  readonly value: string;
  readonly wire: Uint8Array;
}

/** A verified message of another validator, kept to relay. `polRound` is -1 except for proposals. */
interface RelayEntry {
  readonly round: number;
  readonly polRound: number;
  readonly wire: Uint8Array;
}

export class ConsensusDriver {
  private state: ConsensusState;
  private readonly queue: MachineInput[] = [];
  private draining = false;
  private stopped = true;
  private readonly timers = new Set<TimerId>();
  /** Block bytes of the current height by hash hex, in arrival order. */
  private readonly blocks = new Map<string, Uint8Array>();
  private readonly blocksInWal = new Set<string>();
  /** NoDoubleSign: what this node signed at the current height, by slot ("p/round", "v/round/type"). */
  private readonly signed = new Map<string, SignedSlot>();
  private readonly relay = new Map<string, RelayEntry>();
  private readonly future: {
    readonly from: PeerId;
    readonly message: ConsensusMessage;
    readonly wire: Uint8Array;
  }[] = [];
  private readonly catchUpReplies = new Map<PeerId, { height: number; atMs: number }>();
  /**
   * Per validator: the peer that last delivered one of its verified votes (where to reach it), and
   * the last height at which it precommitted a block (it holds that block).
   */
  private readonly validatorSeen = new Map<string, { peer: PeerId; blockPrecommitHeight: number }>();
  /**
   * Entering a height to its round-0 proposal, ms, for the last heights (newest last); heights whose
   * proposer was nudged are left out.
   */
  private readonly proposalDelays: number[] = [];
  /** The height whose round-0 delay is settled: recorded, or not to be (its proposer was nudged). */
  private proposalDelayHeight = -1;
  private nextHeight = -1;
  /** The height this node will enter when its pause after a decision (timeoutCommitMs) ends, or -1. */
  private pausedBefore = -1;
  /** Round 0's proposer of the height paused before, once a proposal for it asked (endsPause). */
  private pauseProposer: { readonly height: number; readonly id: Uint8Array } | null = null;
  /** The height this node will enter once there is work (waitForWork), or -1. */
  private idleHeight = -1;
  /** When the pause after the decision before idleHeight ends (clock ms): work may not cut it short. */
  private idlePauseEndsAtMs = 0;
  /** The height for which onPeerAhead was last called (once per height). */
  private peerAheadAt = -1;
  private enteredHeightAtMs = 0;
  readonly counters: DriverCounters = {
    malformed: 0,
    nonValidator: 0,
    badSignature: 0,
    notProposer: 0,
    blockMismatch: 0,
    untimely: 0,
    wrongChain: 0,
    futureBuffered: 0,
    futureDropped: 0,
    stale: 0,
    duplicate: 0,
    catchUpReplies: 0,
    proposerNudges: 0,
    behind: 0,
    refusedDoubleSign: 0,
    evidence: 0,
    decided: 0,
    rebroadcasts: 0,
  };

  constructor(
    private readonly ports: DriverPorts,
    readonly options: DriverOptions,
  ) {
    assert(
      options.rebroadcastIntervalMs > 0 && options.catchUpReplyIntervalMs >= 0,
      "driver intervals are positive",
    );
    assert(
      options.blocksCachedMax >= 4 && options.futureMessagesMax >= 0,
      "driver bounds leave room to work",
    );
    this.state = initialState({
      chainId: options.chainId,
      self: ports.signer?.validatorId ?? null,
      options: options.machine,
    });
  }

  /** Starts (or, after a crash, resumes) at the height after the application's last block. */
  start(): void {
    assert(this.stopped, "start once");
    this.stopped = false;
    const height = this.ports.app.height() + 1;
    if (this.ports.wal.replay(height).length > 0) this.enterHeight(height);
    else this.advanceTo(height, 0);
  }

  /** Enters `height` after `delayMs`, or waits for work first when the options say so. */
  private advanceTo(height: number, delayMs: number): void {
    if (this.options.waitForWork && this.ports.app.hasPendingWork?.() === false) {
      this.idleHeight = height;
      this.idlePauseEndsAtMs = this.ports.clock.now() + delayMs;
      return;
    }
    if (delayMs === 0) this.nextHeight = height;
    else this.pauseBefore(height, delayMs);
    if (this.nextHeight > 0 && !this.draining) {
      this.nextHeight = -1;
      this.enterHeight(height);
    }
  }

  /**
   * The application has work (a transaction arrived), or a peer is at the next height: an idle node
   * starts that height, once the pause after its decision has run out. Work that comes during the
   * pause does not cut it short, as it does not for a node that had work all along: the height's
   * proposer would propose before it gathered what the pause is for, and a node entering early starts
   * its propose timeout early, which with a pause near timeoutProposeMs ran out before the paused
   * proposer proposed (rounds lost at timeoutCommitMs = 1000). The round-0 proposal ends the pause as
   * usual (route).
   */
  wake(): void {
    if (this.stopped || this.idleHeight < 0) return;
    const height = this.idleHeight;
    this.idleHeight = -1;
    const remainingMs = this.idlePauseEndsAtMs - this.ports.clock.now();
    if (remainingMs <= 0) this.enterHeight(height);
    else this.pauseBefore(height, remainingMs);
  }

  /** Enters `height` once `ms` have passed, unless its proposal or its decision ends the pause first. */
  private pauseBefore(height: number, ms: number): void {
    this.pausedBefore = height;
    this.after(ms, () => this.enterHeight(height));
  }

  /** Enters the height this node is pausing before now (after the current input if one is running). */
  private endPause(height: number): void {
    this.pausedBefore = -1;
    if (this.draining) this.nextHeight = height;
    else this.enterHeight(height);
  }

  stop(): void {
    this.stopped = true;
    for (const id of this.timers) this.ports.clock.cancel(id);
    this.timers.clear();
    this.queue.length = 0;
  }

  view(): MachineView | null {
    return viewOf(this.state);
  }

  // ---- heights ----

  private enterHeight(height: number): void {
    this.ports.trace?.("enter", height);
    this.pausedBefore = -1;
    for (const id of this.timers) this.ports.clock.cancel(id);
    this.timers.clear();
    this.blocks.clear();
    this.blocksInWal.clear();
    this.signed.clear();
    this.relay.clear();
    this.enteredHeightAtMs = this.ports.clock.now();
    const validatorSet = this.ports.app.validatorSet(height);
    const recovery = this.recover(height);
    const recovered = [...this.signed.values()];
    this.feed({ kind: "start", height, validatorSet, recovery });
    // Whatever the WAL says was signed may never have left the node: send it (again).
    for (const slot of recovered) this.ports.transport.broadcast(slot.wire);
    this.scheduleRebroadcast(height);
    if (this.options.proposerNudgeMs > 0 && height > 1)
      this.after(this.nudgeWaitMs(), () => this.nudgeProposer(height));
    this.drainFuture(height);
  }

  /**
   * How long a height waits for round 0's proposal before nudging its proposer: proposerNudgeMs, or
   * twice the slowest recent round-0 proposal if longer; never more than half the propose timeout,
   * which the nudge exists to beat. (Public for tests and metrics.)
   */
  nudgeWaitMs(): number {
    const slowest = Math.max(0, ...this.proposalDelays);
    const cap = Math.max(this.options.proposerNudgeMs, this.options.machine.timeoutProposeMs / 2);
    return Math.min(cap, Math.max(this.options.proposerNudgeMs, 2 * slowest));
  }

  /** Round 0 of `height` has no proposal yet: the proposer may have missed the last decision. */
  private nudgeProposer(height: number): void {
    const view = this.view();
    if (view === null || view.height !== height || view.round !== 0 || view.step !== "propose") return;
    const proposer = proposerOf(this.state, 0);
    if (proposer === null) return;
    const signer = this.ports.signer;
    if (signer !== null && sameValue(proposer, signer.validatorId)) return;
    const seen = this.validatorSeen.get(valueKey(proposer));
    // One that precommitted the decided height's block has it, and the precommits (broadcast and
    // re-sent) let it decide alone: it is slow, not lost, and the block need not go to it again.
    if (seen === undefined || seen.blockPrecommitHeight >= height - 1) return;
    if (this.sendDecision(seen.peer, height - 1)) {
      this.counters.proposerNudges++;
      // The proposal that follows measures a lost proposer, not a busy one: not a delay to learn.
      this.proposalDelayHeight = height;
    }
  }

  /** Reads back what this node signed at `height` before a crash (empty on a clean start). */
  private recover(height: number): { proposals: Proposal[]; votes: Vote[] } {
    const proposals: Proposal[] = [];
    const votes: Vote[] = [];
    for (const record of this.ports.wal.replay(height)) {
      if (record.kind === "block") {
        this.cacheBlock(record.blockHash, record.blockBytes);
        this.blocksInWal.add(valueKey(record.blockHash));
      } else if (record.kind === "proposal") {
        proposals.push(record.proposal);
        this.signed.set(`p/${record.proposal.round}`, {
          value: valueKey(record.proposal.blockHash),
          wire: this.proposalWire(record.proposal),
        });
      } else {
        votes.push(record.vote);
        this.signed.set(`v/${record.vote.round}/${record.vote.type}`, {
          value: valueKey(record.vote.blockHash),
          wire: encodeConsensusMessage({ kind: "vote", vote: record.vote }),
        });
      }
    }
    return { proposals, votes };
  }

  private proposalWire(proposal: Proposal): Uint8Array {
    const blockBytes = this.blocks.get(valueKey(proposal.blockHash));
    assert(blockBytes !== undefined, "the WAL holds the block of every own proposal before the proposal");
    return encodeConsensusMessage({ kind: "proposal", proposal, blockBytes });
  }

  private currentHeight(): number {
    return this.state.current?.height ?? -1;
  }

  // ---- the machine loop: one input at a time, effects in order ----

  private feed(input: MachineInput): void {
    this.queue.push(input);
    if (this.draining) return;
    this.draining = true;
    try {
      while (this.queue.length > 0 && !this.stopped) {
        const result = step(this.state, this.queue.shift()!);
        this.state = result.state;
        if (result.dropped === "duplicate") this.counters.duplicate++;
        else if (result.dropped !== null) this.counters.stale++;
        for (const effect of result.effects) this.execute(effect);
      }
    } finally {
      this.draining = false;
    }
    if (this.nextHeight > 0 && !this.stopped) {
      const height = this.nextHeight;
      this.nextHeight = -1;
      this.enterHeight(height);
    }
  }

  private execute(effect: Effect): void {
    switch (effect.kind) {
      case "requestValue":
        this.provideValue(effect.height, effect.round);
        break;
      case "broadcastProposal":
        this.signProposal(effect.proposal);
        break;
      case "broadcastVote":
        this.signVote(effect.vote);
        break;
      case "scheduleTimeout": {
        const { step: s, height, round } = effect;
        this.after(effect.durationMs, () => {
          const before = this.view();
          this.feed({ kind: "timeout", step: s, height, round });
          const after = this.view();
          if (
            before !== null &&
            after !== null &&
            (after.round !== before.round || after.step !== before.step)
          )
            this.ports.app.onTimeout?.({ step: s, height, round });
        });
        break;
      }
      case "validateBlock":
        this.validate(effect.height, effect.blockHash);
        break;
      case "decide":
        this.decide(effect.height, effect.blockHash, effect.commit);
        break;
      case "evidence":
        this.counters.evidence++;
        this.ports.app.onEvidence?.(effect.evidence);
        break;
    }
  }

  private after(durationMs: number, callback: () => void): void {
    const id = this.ports.clock.schedule(this.ports.clock.now() + durationMs, () => {
      this.timers.delete(id);
      if (!this.stopped) callback();
    });
    this.timers.add(id);
  }

  private provideValue(height: number, round: number): void {
    this.ports.trace?.("build-start", height);
    const block = this.ports.app.proposeBlock(height, round);
    this.ports.trace?.("build-end", height);
    const hash = this.ports.app.hashBlock(block.bytes);
    assert(
      hash !== null && sameValue(hash, block.hash),
      "the application's proposed block hashes to its hash",
    );
    this.cacheBlock(block.hash, block.bytes);
    this.feed({ kind: "value", height, round, blockHash: block.hash });
  }

  private validate(height: number, blockHash: Uint8Array): void {
    const bytes = this.blocks.get(valueKey(blockHash));
    if (bytes === undefined) return; // the bytes come later with a proposal or a decision message
    this.ports.trace?.("check-start", height);
    const valid = this.ports.app.validateBlock(height, bytes);
    this.ports.trace?.("check-end", height);
    this.feed({ kind: "blockVerdict", blockHash, valid });
  }

  private decide(height: number, blockHash: Uint8Array, commit: Commit): void {
    const bytes = this.blocks.get(valueKey(blockHash));
    assert(bytes !== undefined, "a decided block's bytes are held: it was judged valid from them");
    this.ports.trace?.("commit-start", height);
    this.ports.app.commit(height, blockHash, bytes, commit);
    this.ports.trace?.("commit-end", height);
    this.ports.wal.truncateBelow(height + 1);
    this.counters.decided++;
    // With no pause the next height is entered once the current input is fully handled.
    this.advanceTo(height + 1, this.options.timeoutCommitMs);
  }

  // ---- signing under the WAL rule ----

  private signProposal(unsigned: UnsignedProposal): void {
    const signer = this.ports.signer;
    assert(
      signer !== null && sameValue(unsigned.proposer, signer.validatorId),
      "only this node's proposals are signed",
    );
    const slot = `p/${unsigned.round}`;
    if (this.refuseOrResend(slot, valueKey(unsigned.blockHash))) return;
    const blockBytes = this.blocks.get(valueKey(unsigned.blockHash));
    assert(blockBytes !== undefined, "the driver holds the bytes of every value the machine proposes");
    const proposal: Proposal = { ...unsigned, signature: signer.sign(proposalSignBytes(unsigned)) };
    this.appendToWal(this.blockRecord(unsigned.height, unsigned.blockHash, blockBytes), {
      kind: "proposal",
      proposal,
    });
    const wire = encodeConsensusMessage({ kind: "proposal", proposal, blockBytes });
    this.signed.set(slot, { value: valueKey(unsigned.blockHash), wire });
    this.ports.trace?.("proposal-sent", unsigned.height);
    this.ports.transport.broadcast(wire);
    this.feed({ kind: "proposal", proposal });
  }

  private signVote(unsigned: UnsignedVote): void {
    const signer = this.ports.signer;
    assert(
      signer !== null && sameValue(unsigned.validatorId, signer.validatorId),
      "only this node's votes are signed",
    );
    const slot = `v/${unsigned.round}/${unsigned.type}`;
    if (this.refuseOrResend(slot, valueKey(unsigned.blockHash))) return;
    let block: WalRecord | null = null;
    if (unsigned.blockHash !== null) {
      const bytes = this.blocks.get(valueKey(unsigned.blockHash));
      if (bytes !== undefined) block = this.blockRecord(unsigned.height, unsigned.blockHash, bytes);
    }
    const vote: Vote = { ...unsigned, signature: signer.sign(voteSignBytes(this.options.chainId, unsigned)) };
    this.appendToWal(block, { kind: "vote", vote });
    const wire = encodeConsensusMessage({ kind: "vote", vote });
    this.signed.set(slot, { value: valueKey(unsigned.blockHash), wire });
    this.ports.trace?.(
      unsigned.type === voteTypePrevote ? "prevote-sent" : "precommit-sent",
      unsigned.height,
    );
    this.ports.transport.broadcast(wire);
    this.feed({ kind: "vote", vote });
  }

  /** True when the slot was signed before: the same value is re-sent, a different one refused. */
  private refuseOrResend(slot: string, value: string): boolean {
    const previous = this.signed.get(slot);
    if (previous === undefined) return false;
    if (previous.value === value) this.ports.transport.broadcast(previous.wire);
    else this.counters.refusedDoubleSign++;
    return true;
  }

  /** The WAL record of a block a signature names, or null when the WAL holds it already. */
  private blockRecord(height: number, blockHash: Uint8Array, blockBytes: Uint8Array): WalRecord | null {
    if (this.blocksInWal.has(valueKey(blockHash))) return null;
    return { kind: "block", height, blockHash, blockBytes };
  }

  /** The signed message, with the block it names if that is new to the WAL, durable in one write. */
  private appendToWal(block: WalRecord | null, signed: WalRecord): void {
    if (block === null) {
      this.ports.wal.append([signed]);
      return;
    }
    assert(block.kind === "block", "only a block record goes with a signed message");
    this.ports.wal.append([block, signed]);
    this.blocksInWal.add(valueKey(block.blockHash));
  }

  private cacheBlock(blockHash: Uint8Array, bytes: Uint8Array): void {
    const key = valueKey(blockHash);
    if (this.blocks.has(key)) return;
    if (this.blocks.size >= this.options.blocksCachedMax) this.evictBlock();
    this.blocks.set(key, bytes);
  }

  /** Evicts the oldest block that no lock, valid value or own signature refers to. */
  private evictBlock(): void {
    const view = viewOf(this.state);
    const keep = new Set<string>(this.blocksInWal);
    if (view?.lockedValue) keep.add(valueKey(view.lockedValue));
    if (view?.validValue) keep.add(valueKey(view.validValue));
    for (const key of this.blocks.keys()) {
      if (!keep.has(key)) {
        this.blocks.delete(key);
        return;
      }
    }
  }

  // ---- gossip ----

  private scheduleRebroadcast(height: number): void {
    this.after(this.options.rebroadcastIntervalMs, () => {
      if (this.currentHeight() !== height || this.view()?.decided) return;
      const own = [...this.signed.values()]
        .slice(-this.options.rebroadcastMessagesMax)
        .map((slot) => slot.wire);
      const relayed = this.relayable();
      for (const wire of [...own, ...relayed]) this.ports.transport.broadcast(wire);
      this.counters.rebroadcasts += own.length + relayed.length;
      this.scheduleRebroadcast(height);
    });
  }

  /** Others' messages of the rounds that still matter (see the header): current, valid, locked, POL. */
  private relayable(): Uint8Array[] {
    const view = this.view();
    if (view === null) return [];
    const rounds = new Set<number>([view.round, view.validRound, view.lockedRound]);
    for (const entry of this.relay.values()) {
      if (entry.round === view.round && entry.polRound >= 0) rounds.add(entry.polRound);
    }
    const out: Uint8Array[] = [];
    for (const entry of this.relay.values()) if (rounds.has(entry.round)) out.push(entry.wire);
    return out;
  }

  private remember(slot: string, entry: RelayEntry): void {
    if (this.relay.has(slot) || this.relay.size >= this.options.relayMessagesMax) return;
    this.relay.set(slot, entry);
  }

  private replyWithDecision(from: PeerId, height: number): void {
    const now = this.ports.clock.now();
    const justDecided = height === this.currentHeight() - 1;
    if (justDecided && now - this.enteredHeightAtMs < this.options.catchUpGraceMs) return;
    if (this.sendDecision(from, height)) this.counters.catchUpReplies++;
  }

  /** Sends `height`'s decision to a peer, at most once per peer and height per interval. */
  private sendDecision(to: PeerId, height: number): boolean {
    const now = this.ports.clock.now();
    const last = this.catchUpReplies.get(to);
    if (last !== undefined && last.height === height && now - last.atMs < this.options.catchUpReplyIntervalMs)
      return false;
    const decision = this.ports.app.decisionAt(height);
    if (decision === undefined) return false;
    if (last === undefined && this.catchUpReplies.size >= this.options.catchUpPeersMax) {
      this.catchUpReplies.delete(this.catchUpReplies.keys().next().value as PeerId);
    }
    this.catchUpReplies.set(to, { height, atMs: now });
    this.ports.transport.send(to, encodeConsensusMessage({ kind: "decision", height, ...decision }));
    return true;
  }

  // ---- inbound ----

  /** Bytes from a peer. Never throws on anything a peer can send. */
  receive(from: PeerId, bytes: Uint8Array): void {
    if (this.stopped) return;
    let message: ConsensusMessage;
    try {
      message = decodeConsensusMessage(bytes, this.options.blockBytesMax);
    } catch {
      this.counters.malformed++;
      return;
    }
    this.route(from, message, bytes);
  }

  private route(from: PeerId, message: ConsensusMessage, wire: Uint8Array): void {
    const height =
      message.kind === "proposal"
        ? message.proposal.height
        : message.kind === "vote"
          ? message.vote.height
          : message.height;
    // A peer at the height we are idling before has work: join it.
    if (this.idleHeight > 0 && height >= this.idleHeight) this.wake();
    // That height's decision needs no pause before it: the height is over; take it now (below).
    if (message.kind === "decision" && height === this.pausedBefore) this.endPause(height);
    const current = this.currentHeight();
    if (message.kind === "decision") {
      if (height === current) this.acceptDecision(message.blockBytes, message.commit);
      else if (height > current) this.behind(height);
      return;
    }
    if (height < current) this.replyWithDecision(from, height);
    else if (height === current + 1) {
      this.bufferFuture(from, message, wire);
      if (message.kind === "proposal" && this.endsPause(message.proposal)) {
        // The next height's proposer has proposed: pausing longer would only delay this node's
        // vote, and a node still pausing when the height is decided without it falls behind.
        this.endPause(height);
        return;
      }
      if (this.peerAheadAt !== current && !(this.view()?.decided ?? false)) {
        this.peerAheadAt = current;
        this.ports.app.onPeerAhead?.(current, from);
      }
    } else if (height > current) this.behind(height);
    else if (message.kind === "vote") this.acceptVote(message.vote, wire, from);
    else this.acceptProposal(message.proposal, message.blockBytes, wire);
  }

  /**
   * Whether a proposal for the height this node is pausing before ends the pause: one of round 0,
   * naming that height's round-0 proposer, which is not this node (a proposer pauses to gather
   * transactions, and no one else's proposal may cut that short). Its signature is checked when it
   * is accepted, right after; a forged one only makes this node enter the height a little early.
   */
  private endsPause(proposal: Proposal): boolean {
    if (this.pausedBefore !== proposal.height || proposal.round !== 0) return false;
    // Once per pause, however many proposals a peer sends for that height.
    if (this.pauseProposer?.height !== proposal.height) {
      const id = new ProposerSchedule(this.ports.app.validatorSet(proposal.height)).proposer(0).id;
      this.pauseProposer = { height: proposal.height, id };
    }
    const expected = this.pauseProposer.id;
    const self = this.ports.signer?.validatorId;
    return sameValue(expected, proposal.proposer) && (self === undefined || !sameValue(expected, self));
  }

  private behind(height: number): void {
    this.counters.behind++;
    this.ports.app.onBehind?.(height);
  }

  private bufferFuture(from: PeerId, message: ConsensusMessage, wire: Uint8Array): void {
    if (this.future.length >= this.options.futureMessagesMax) {
      this.counters.futureDropped++;
      return;
    }
    this.counters.futureBuffered++;
    this.future.push({ from, message, wire });
  }

  /**
   * The messages for the next height this driver holds, for the driver that replaces it (after
   * catch-up or a change of role): the new one starts at that height with them instead of waiting
   * for their senders' rebroadcasts.
   */
  handOver(): Array<{ readonly from: PeerId; readonly wire: Uint8Array }> {
    return this.future.splice(0, this.future.length).map(({ from, wire }) => ({ from, wire }));
  }

  private drainFuture(height: number): void {
    const ready = this.future.splice(0, this.future.length);
    for (const { from, message, wire } of ready) {
      if (this.currentHeight() !== height) break;
      this.route(from, message, wire);
    }
  }

  private acceptVote(vote: Vote, wire: Uint8Array, from: PeerId): void {
    if (hasVote(this.state, vote)) {
      this.counters.duplicate++; // re-sent or duplicated by the network: verified already
      return;
    }
    const validator = validatorOf(this.state, vote.validatorId);
    if (validator === undefined) {
      this.counters.nonValidator++;
      return;
    }
    if (
      !this.ports.verifier.verify(
        validator.publicKeySpki,
        voteSignBytes(this.options.chainId, vote),
        vote.signature,
      )
    ) {
      this.counters.badSignature++;
      return;
    }
    // Bounded by the validator set (only verified votes of validators get here); a larger set than
    // the bound only loses the nudge (see nudgeProposer), never a message.
    const key = valueKey(vote.validatorId);
    const seen = this.validatorSeen.get(key);
    if (seen === undefined && this.validatorSeen.size >= this.options.catchUpPeersMax)
      this.validatorSeen.clear();
    this.validatorSeen.set(key, {
      peer: from,
      blockPrecommitHeight:
        vote.type === voteTypePrecommit && vote.blockHash !== null
          ? Math.max(vote.height, seen?.blockPrecommitHeight ?? 0)
          : (seen?.blockPrecommitHeight ?? 0),
    });
    const slot = `v/${valueKey(vote.validatorId)}/${vote.round}/${vote.type}/${valueKey(vote.blockHash)}`;
    this.remember(slot, { round: vote.round, polRound: -1, wire });
    this.feed({ kind: "vote", vote });
  }

  private acceptProposal(proposal: Proposal, blockBytes: Uint8Array, wire: Uint8Array): void {
    if (proposal.chainId !== this.options.chainId) {
      this.counters.wrongChain++;
      return;
    }
    const validator = validatorOf(this.state, proposal.proposer);
    if (validator === undefined) {
      this.counters.nonValidator++;
      return;
    }
    const expected = proposerOf(this.state, proposal.round);
    if (expected === null || !sameValue(expected, proposal.proposer)) {
      this.counters.notProposer++;
      return;
    }
    if (
      !this.ports.verifier.verify(validator.publicKeySpki, proposalSignBytes(proposal), proposal.signature)
    ) {
      this.counters.badSignature++;
      return;
    }
    const hash = this.ports.app.hashBlock(blockBytes);
    if (hash === null || !sameValue(hash, proposal.blockHash)) {
      this.counters.blockMismatch++; // the block is not the one the proposal signs: drop both
      return;
    }
    // Received, checked and its block decoded: a forged proposal leaves no step behind.
    this.ports.trace?.("proposal-received", proposal.height);
    this.cacheBlock(hash, blockBytes);
    if (proposal.round === 0 && this.proposalDelayHeight !== proposal.height) {
      this.proposalDelayHeight = proposal.height;
      this.proposalDelays.push(this.ports.clock.now() - this.enteredHeightAtMs);
      if (this.proposalDelays.length > proposalDelaysKept) this.proposalDelays.shift();
    }
    this.remember(`p/${proposal.round}/${valueKey(hash)}/${proposal.polRound}`, {
      round: proposal.round,
      polRound: proposal.polRound,
      wire,
    });
    // Judged at arrival, once: a fresh proposal's time against this node's clock (line 22 only).
    const timely = proposal.polRound !== -1 || (this.ports.app.isTimely?.(blockBytes) ?? true);
    if (!timely) this.counters.untimely++;
    this.feed({ kind: "proposal", proposal, timely });
    this.validateIfAwaited(hash);
  }

  /**
   * The machine may have asked for valid(v) before any bytes of v arrived (a precommit quorum for a
   * block this node never saw); it does not ask twice, so new bytes answer the old question here.
   */
  private validateIfAwaited(blockHash: Uint8Array): void {
    const height = this.currentHeight();
    if (height > 0 && verdictFor(this.state, blockHash) === "pending") this.validate(height, blockHash);
  }

  private acceptDecision(blockBytes: Uint8Array, commit: Commit): void {
    if (this.view()?.decided) return;
    const hash = this.ports.app.hashBlock(blockBytes);
    if (hash === null || !sameValue(hash, commit.blockHash)) {
      this.counters.blockMismatch++;
      return;
    }
    const validators = this.state.current!.validatorSet.validators;
    const check = verifyCommit(this.options.chainId, validators, commit, this.ports.verifier);
    if (!check.ok) {
      this.counters.badSignature++;
      return;
    }
    this.cacheBlock(hash, blockBytes);
    this.feed({ kind: "commitCertificate", commit });
    this.validateIfAwaited(hash);
  }
}
