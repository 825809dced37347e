/**
 * The consensus driver's view of the world. Everything that waits, reads the clock, touches a disk or
 * a socket, signs or verifies is one of these ports: the node hands in real ones, test/sim/ simulated
 * ones, and the driver cannot tell them apart.
 *
 * All ports are synchronous on purpose: the driver then handles one input at a time to completion,
 * which keeps it deterministic under the simulator and makes "persist before send" a plain sequence
 * of calls. (A port may do its work on another thread, e.g. verify a batch in advance, but it answers
 * synchronously.)
 */
import type { Commit } from "../core/block.ts";
import type { ValidatorSet } from "../core/consensus/proposer.ts";
import type { Evidence } from "../core/consensus/types.ts";
import type { WalRecord } from "./wal.ts";

export type TimerId = number;

/** Time and timers. Milliseconds; the simulator's are virtual ticks. */
export interface TimerClock {
  now(): number;
  /** Calls `callback` once at `atMs` (or as soon after as the clock can). */
  schedule(atMs: number, callback: () => void): TimerId;
  /** Cancelling a timer that already fired or was cancelled is a no-op. */
  cancel(id: TimerId): void;
}

/** Opaque peer name given by the transport (the node's p2p layer uses the peer's validator id). */
export type PeerId = string;

export interface TransportPort {
  /** To every connected peer (not to this node: the driver feeds its own messages back itself). */
  broadcast(bytes: Uint8Array): void;
  /** To one peer; used to answer a lagging peer with a decision. */
  send(peer: PeerId, bytes: Uint8Array): void;
}

export interface SignerPort {
  /** SHA-256 of this node's SPKI public key: its id in the validator set. */
  readonly validatorId: Uint8Array;
  /** A canonical (low-S) P-256 signature over `message`. */
  sign(message: Uint8Array): Uint8Array;
}

export interface VerifierPort {
  verify(publicKeySpki: Uint8Array, message: Uint8Array, signature: Uint8Array): boolean;
}

/**
 * The write-ahead log of what this node signed. `append` returns only once the record is durable
 * (fsync'd): the driver sends a signed proposal or vote only after its record is appended, so a node
 * that crashes and restarts can never sign a different value for a (height, round, type) it already
 * signed.
 */
export interface Wal {
  /**
   * Makes the records durable together (one disk sync): a vote and the block it names cost one
   * sync, not two, on the path every height waits on.
   */
  append(records: readonly WalRecord[]): void;
  /** Every record of `height`, in append order. */
  replay(height: number): readonly WalRecord[];
  /**
   * The records of heights below `height` are no longer needed (decided and in the block store); the
   * log may drop them now or later, since `replay` is only ever asked for the current height.
   */
  truncateBelow(height: number): void;
}

export interface ProposedBlock {
  readonly hash: Uint8Array;
  readonly bytes: Uint8Array;
}

/** The application side: the ledger builds, checks and stores blocks; consensus only orders them. */
export interface Application {
  /** The last committed height (0 at genesis). */
  height(): number;
  /** The validator set that votes at `height`, with proposer priorities (the application stores them). */
  validatorSet(height: number): ValidatorSet;
  /** Builds a block for (height, round): the proposer's getValue(). */
  proposeBlock(height: number, round: number): ProposedBlock;
  /** Cheap: decodes and hashes, null when the bytes are not a block at all. */
  hashBlock(bytes: Uint8Array): Uint8Array | null;
  /** The full check of valid(v) at `height` (re-execution). Must be deterministic. */
  validateBlock(height: number, bytes: Uint8Array): boolean;
  /**
   * Proposer-based timestamps: whether the block's time is plausible by this node's clock now, asked
   * once when a fresh proposal (polRound -1) arrives. Not deterministic, and not part of valid(v):
   * it only decides this node's prevote for that proposal (machine line 22). Absent: always timely.
   */
  isTimely?(bytes: Uint8Array): boolean;
  /** Stores the decided block with its commit certificate, atomically. */
  commit(height: number, blockHash: Uint8Array, blockBytes: Uint8Array, commit: Commit): void;
  /** A decided block and its commit, to help a lagging peer; undefined when not kept. */
  decisionAt(height: number): { readonly blockBytes: Uint8Array; readonly commit: Commit } | undefined;
  /** False when there is nothing to put in a block (no pending transactions); see waitForWork. */
  hasPendingWork?(): boolean;
  /** A peer proved a height above ours exists: the catch-up hook (fetching blocks is a later step). */
  onBehind?(height: number): void;
  /**
   * A peer sent a message for the height after ours, so it has decided `decidedHeight` (ours): if
   * this node does not finish that height soon itself, fetching the block is quicker than waiting
   * for timeouts. Called once per height.
   */
  onPeerAhead?(decidedHeight: number, from: PeerId): void;
  /** A validator signed two different messages for one slot; kept for punishment by governance. */
  onEvidence?(evidence: Evidence): void;
  /**
   * A timeout moved the machine (it was still waiting in that step): what an operator needs to see
   * why a height took more than one round (a late proposal, missing votes).
   */
  onTimeout?(timeout: TimeoutNotice): void;
}

/** A timeout that moved the machine on (Application.onTimeout). */
export interface TimeoutNotice {
  readonly step: string;
  readonly height: number;
  readonly round: number;
}
