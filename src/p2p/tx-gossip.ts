/**
 * Transaction gossip over the peer network.
 *
 * - Each transaction is handled once while its id is in a bounded seen-cache: admitted once (the
 *   node's mempool decides), forwarded once to each peer, and never to a peer that sent it to us.
 *   A transaction the mempool refuses is not forwarded at all, so gossip cannot loop even after the
 *   cache forgets an id: the mempool's own de-duplication stops it.
 * - A node offers a transaction from its own API to every peer at once. One that arrived by gossip
 *   is relayed only after `relayDelayMs`, if the node still holds it then, and only to peers that
 *   have not sent it meanwhile. Validators and observers are meshed, so the first offer reaches
 *   everyone and the relay is the fallback for a link that is down; relaying at once made each
 *   transaction cross the network ~6.7 times among four validators, where 3 copies do.
 * - Forwarded transactions wait briefly in a batch per peer and go out many to a frame (up to
 *   batchTxsMax / batchBytesMax), so gossip at thousands of transactions per second costs tens of
 *   frames, not thousands. A peer that sends us a transaction while it waits in that peer's batch
 *   already has it, so it is taken out again.
 * - Batches use the send queue's gossip lane: when a peer is slow they are dropped, oldest first,
 *   and consensus traffic is never held up by them.
 */
import { hash } from "node:crypto";
import { assert } from "../core/errors.ts";
import type { DropReason } from "./errors.ts";
import { envelopeBytesOverhead, type MessageLimits, type PeerMessage, type TxMessage } from "./messages.ts";
import type { PeerNetworkHandlers, SendResult } from "./peer-network.ts";
import {
  type Logger,
  type NetworkClock,
  silentLogger,
  systemNetworkClock,
  type TimerHandle,
} from "./ports.ts";

/**
 * The node's verdict on a gossiped transaction. "misbehaving" is for what no honest peer forwards
 * (malformed, a signature that does not verify): the peer is dropped. Anything an honest peer could
 * have sent (expired here, mempool full, already known) is "rejected".
 */
export type TxAdmission = "accepted" | "rejected" | "misbehaving";

/** The part of PeerNetwork gossip uses, so tests can hand in their own. */
export interface GossipNetwork {
  readonly limits: Pick<MessageLimits, "frameBytesMax" | "txsPerMessageMax" | "txBytesMax">;
  send(peerId: string, message: PeerMessage): SendResult;
  peerIds(): readonly string[];
  subscribe(handlers: Partial<PeerNetworkHandlers>): () => void;
  disconnect(peerId: string, reason: DropReason, detail?: string): void;
}

export interface TxGossipOptions {
  /** Must not throw: a throw or rejection is logged and counted as "rejected". `txId` is `txIdOf`'s. */
  readonly admit: (
    txBytes: Uint8Array,
    fromPeerId: string,
    txId: string,
  ) => TxAdmission | Promise<TxAdmission>;
  /** Gossip's notion of a transaction's identity; default: SHA-256 (base64) of its bytes. */
  readonly txIdOf?: (txBytes: Uint8Array) => string;
  /** Transaction ids remembered, oldest forgotten first. */
  readonly seenTxsMax?: number;
  /** Most transactions in one gossip frame (at most the network's txsPerMessageMax). */
  readonly batchTxsMax?: number;
  /** Most transaction bytes in one gossip frame. */
  readonly batchBytesMax?: number;
  /** Longest a forwarded transaction waits for company before its batch is sent, ms. */
  readonly batchDelayMs?: number;
  /** How long a transaction received by gossip waits before it is relayed, ms; 0 relays at once. */
  readonly relayDelayMs?: number;
  /** Relays waiting at once; beyond it a transaction is relayed without waiting. */
  readonly relaysWaitingMax?: number;
  /**
   * Whether the node still holds a transaction (by gossip's id) when its relay is due; one it has
   * committed or dropped meanwhile is not relayed. Default: always.
   */
  readonly stillPending?: (txId: string) => boolean;
  /** Admissions awaiting the node's verdict at once; beyond it new gossip is ignored. */
  readonly admissionsInFlightMax?: number;
  readonly clock?: NetworkClock;
  readonly logger?: Logger;
}

export interface TxGossipStats {
  /** Transactions that arrived in gossip, duplicates included. */
  received: number;
  duplicates: number;
  accepted: number;
  rejected: number;
  misbehaving: number;
  /** Gossip ignored because too many admissions were in flight. */
  overloaded: number;
  /** Transaction copies handed to peers' send queues, and the frames that carried them. */
  forwardedTxs: number;
  forwardedBatches: number;
  /** Relays that were due and sent, and those dropped because the node no longer held the transaction. */
  relayed: number;
  relaysSkipped: number;
}

interface Relay {
  readonly txBytes: Uint8Array;
  /** Peers that sent the transaction to us, before and while the relay waited. */
  readonly senders: Set<string>;
  readonly dueMs: number;
}

interface Batch {
  readonly txs: Map<string, Uint8Array>;
  bytes: number;
}

const defaults = {
  seenTxsMax: 100_000,
  batchBytesMax: 1024 * 1024,
  batchDelayMs: 10,
  relayDelayMs: 1000,
  relaysWaitingMax: 100_000,
  admissionsInFlightMax: 10_000,
} as const;

export class TxGossip {
  readonly stats: TxGossipStats = {
    received: 0,
    duplicates: 0,
    accepted: 0,
    rejected: 0,
    misbehaving: 0,
    overloaded: 0,
    forwardedTxs: 0,
    forwardedBatches: 0,
    relayed: 0,
    relaysSkipped: 0,
  };
  private readonly seen = new Map<string, true>();
  /** Transactions awaiting the node's verdict, with every peer that sent them meanwhile. */
  private readonly admitting = new Map<string, Set<string>>();
  private readonly batches = new Map<string, Batch>();
  /** Relays by transaction id; the delay is fixed, so insertion order is due order. */
  private readonly relays = new Map<string, Relay>();
  private readonly txIdOf: (txBytes: Uint8Array) => string;
  private readonly seenTxsMax: number;
  private readonly batchTxsMax: number;
  private readonly batchBytesMax: number;
  private readonly batchDelayMs: number;
  private readonly relayDelayMs: number;
  private readonly relaysWaitingMax: number;
  private readonly admissionsInFlightMax: number;
  private readonly clock: NetworkClock;
  private readonly logger: Logger;
  private readonly unsubscribe: () => void;
  private flushTimer: TimerHandle | null = null;
  private relayTimer: TimerHandle | null = null;

  constructor(
    private readonly network: GossipNetwork,
    private readonly options: TxGossipOptions,
  ) {
    this.txIdOf = options.txIdOf ?? sha256Base64;
    this.seenTxsMax = options.seenTxsMax ?? defaults.seenTxsMax;
    this.batchTxsMax = options.batchTxsMax ?? network.limits.txsPerMessageMax;
    this.batchBytesMax = options.batchBytesMax ?? defaults.batchBytesMax;
    this.batchDelayMs = options.batchDelayMs ?? defaults.batchDelayMs;
    this.relayDelayMs = options.relayDelayMs ?? defaults.relayDelayMs;
    this.relaysWaitingMax = options.relaysWaitingMax ?? defaults.relaysWaitingMax;
    this.admissionsInFlightMax = options.admissionsInFlightMax ?? defaults.admissionsInFlightMax;
    this.clock = options.clock ?? systemNetworkClock;
    this.logger = options.logger ?? silentLogger;
    assert(
      this.seenTxsMax >= 1 && this.admissionsInFlightMax >= 1 && this.relaysWaitingMax >= 1,
      "gossip bounds are positive",
    );
    assert(this.relayDelayMs >= 0, "relayDelayMs is not negative");
    assert(
      this.batchTxsMax >= 1 && this.batchTxsMax <= network.limits.txsPerMessageMax,
      "batchTxsMax is 1..txsPerMessageMax",
    );
    // A batch holds at most batchBytesMax, or one transaction larger than that; each transaction
    // adds a byte-string header of up to 5 bytes.
    const batchFrameBytesMax =
      Math.max(this.batchBytesMax, network.limits.txBytesMax) + this.batchTxsMax * 5 + envelopeBytesOverhead;
    assert(
      this.batchBytesMax >= 1 && batchFrameBytesMax <= network.limits.frameBytesMax,
      "a full batch fits in a frame",
    );
    this.unsubscribe = network.subscribe({
      onMessage: (peerId, message) => {
        if (message.type === "tx") this.receive(peerId, message);
      },
      onPeerDown: (peerId) => this.batches.delete(peerId),
    });
  }

  /**
   * A transaction the node admitted itself (from its API): offered to every peer. `txId`, when the
   * caller has it, must be what `txIdOf` gives for these bytes.
   */
  publish(txBytes: Uint8Array, txId: string = this.txIdOf(txBytes)): boolean {
    if (this.seen.has(txId)) return false;
    this.remember(txId);
    this.forward(txId, txBytes, new Set());
    return true;
  }

  /** Sends what is batched now; close() and tests use it, the timer does the rest. */
  flush(): void {
    this.flushTimer?.cancel();
    this.flushTimer = null;
    for (const peerId of [...this.batches.keys()]) this.flushPeer(peerId);
  }

  close(): void {
    this.unsubscribe();
    this.flushTimer?.cancel();
    this.flushTimer = null;
    this.relayTimer?.cancel();
    this.relayTimer = null;
    this.batches.clear();
    this.relays.clear();
  }

  // ---- inbound ----

  private receive(fromPeerId: string, message: TxMessage): void {
    for (const txBytes of message.txs) {
      this.stats.received++;
      this.receiveOne(fromPeerId, txBytes);
    }
  }

  private receiveOne(fromPeerId: string, txBytes: Uint8Array): void {
    const txId = this.txIdOf(txBytes);
    if (this.seen.has(txId)) {
      this.stats.duplicates++;
      (this.admitting.get(txId) ?? this.relays.get(txId)?.senders)?.add(fromPeerId);
      this.unbatch(fromPeerId, txId);
      return;
    }
    if (this.admitting.size >= this.admissionsInFlightMax) {
      // Not remembered: the next copy, once the node has caught up, gets its chance.
      this.stats.overloaded++;
      return;
    }
    this.remember(txId);
    this.admitting.set(txId, new Set([fromPeerId]));
    this.admit(txId, txBytes, fromPeerId);
  }

  private admit(txId: string, txBytes: Uint8Array, fromPeerId: string): void {
    let verdict: TxAdmission | Promise<TxAdmission>;
    try {
      verdict = this.options.admit(txBytes, fromPeerId, txId);
    } catch (error) {
      verdict = Promise.reject(error);
    }
    if (typeof verdict === "string") {
      this.onVerdict(txId, txBytes, fromPeerId, verdict);
      return;
    }
    verdict.then(
      (settled) => this.onVerdict(txId, txBytes, fromPeerId, settled),
      (error: unknown) => {
        this.logger.error({ txId, detail: String(error) }, "p2p: tx admission hook failed");
        this.onVerdict(txId, txBytes, fromPeerId, "rejected");
      },
    );
  }

  private onVerdict(txId: string, txBytes: Uint8Array, fromPeerId: string, verdict: TxAdmission): void {
    const senders = this.admitting.get(txId) ?? new Set([fromPeerId]);
    this.admitting.delete(txId);
    switch (verdict) {
      case "accepted":
        this.stats.accepted++;
        this.relayLater(txId, txBytes, senders);
        return;
      case "rejected":
        this.stats.rejected++;
        return;
      case "misbehaving":
        this.stats.misbehaving++;
        this.network.disconnect(fromPeerId, "invalid-tx", `transaction ${txId} is invalid`);
        return;
    }
  }

  // ---- outbound ----

  private relayLater(txId: string, txBytes: Uint8Array, senders: Set<string>): void {
    if (this.relayDelayMs === 0 || this.relays.size >= this.relaysWaitingMax) {
      this.forward(txId, txBytes, senders);
      return;
    }
    this.relays.set(txId, { txBytes, senders, dueMs: this.clock.now() + this.relayDelayMs });
    this.armRelayTimer();
  }

  private armRelayTimer(): void {
    if (this.relayTimer !== null) return;
    const next = this.relays.values().next();
    if (next.done === true) return;
    this.relayTimer = this.clock.setTimer(Math.max(0, next.value.dueMs - this.clock.now()), () => {
      this.relayTimer = null;
      this.relayDue();
    });
  }

  private relayDue(): void {
    const now = this.clock.now();
    for (const [txId, relay] of this.relays) {
      if (relay.dueMs > now) break;
      this.relays.delete(txId);
      if (this.options.stillPending?.(txId) === false) {
        this.stats.relaysSkipped++;
        continue;
      }
      this.stats.relayed++;
      this.forward(txId, relay.txBytes, relay.senders);
    }
    this.armRelayTimer();
  }

  private forward(txId: string, txBytes: Uint8Array, except: ReadonlySet<string>): void {
    for (const peerId of this.network.peerIds()) {
      if (!except.has(peerId)) this.batch(peerId, txId, txBytes);
    }
  }

  private batch(peerId: string, txId: string, txBytes: Uint8Array): void {
    let batch = this.batches.get(peerId);
    if (batch !== undefined && batch.bytes + txBytes.length > this.batchBytesMax) {
      this.flushPeer(peerId);
      batch = undefined;
    }
    if (batch === undefined) {
      batch = { txs: new Map(), bytes: 0 };
      this.batches.set(peerId, batch);
    }
    batch.txs.set(txId, txBytes);
    batch.bytes += txBytes.length;
    if (batch.txs.size >= this.batchTxsMax || batch.bytes >= this.batchBytesMax) this.flushPeer(peerId);
    else this.armFlushTimer();
  }

  private unbatch(peerId: string, txId: string): void {
    const batch = this.batches.get(peerId);
    const txBytes = batch?.txs.get(txId);
    if (batch === undefined || txBytes === undefined) return;
    batch.txs.delete(txId);
    batch.bytes -= txBytes.length;
  }

  private flushPeer(peerId: string): void {
    const batch = this.batches.get(peerId);
    this.batches.delete(peerId);
    if (batch === undefined || batch.txs.size === 0) return;
    this.network.send(peerId, { type: "tx", txs: [...batch.txs.values()] });
    this.stats.forwardedBatches++;
    this.stats.forwardedTxs += batch.txs.size;
  }

  private armFlushTimer(): void {
    if (this.flushTimer !== null) return;
    this.flushTimer = this.clock.setTimer(this.batchDelayMs, () => {
      this.flushTimer = null;
      this.flush();
    });
  }

  private remember(txId: string): void {
    this.seen.set(txId, true);
    if (this.seen.size > this.seenTxsMax) this.seen.delete(this.seen.keys().next().value as string);
  }
}

/** One-shot and base64: a Hash object per transaction was ~2 % of a validator's main thread. */
function sha256Base64(bytes: Uint8Array): string {
  return hash("sha256", bytes, "base64");
}
