/**
 * A department's node on the network: the peer network (mutual TLS, src/p2p), transaction gossip,
 * the Tendermint driver (src/consensus) over the ledger, and catch-up of missed blocks.
 *
 * Peers are judged by the ledger: a node certificate whose key is in the validator set is a
 * validator; any other valid node certificate of a registered department may follow as an observer
 * (a full replica that does not vote); anything else is dropped. A node behind its peers fetches
 * the blocks it lacks one by one, checks each block's commit certificate (> 2/3 of the voting power)
 * and re-executes it before applying it, answers queries meanwhile, and says it is syncing.
 */
import type { Identity } from "../ca/identity.ts";
import {
  ConsensusDriver,
  type DriverOptions,
  type DriverStep,
  defaultDriverOptions,
} from "../consensus/driver.ts";
import type { TimerClock, TimerId } from "../consensus/ports.ts";
import { decodeBlock, decodeCommit, encodeCommit, validatorIdOf } from "../core/block.ts";
import { verifyCommit } from "../core/consensus/commit.ts";
import type { Evidence } from "../core/consensus/types.ts";
import { bytesEqual, toHex } from "../core/encoding.ts";
import { CodedError } from "../core/errors.ts";
import { writesSystemKeys } from "../core/execution.ts";
import { evidencePayload } from "../core/handlers/evidence.ts";
import { resolveIdentity } from "../core/identity.ts";
import { type PeerInfo, type PeerMessage, PeerNetwork, type PeerRole } from "../p2p/index.ts";
import type { Logger } from "../p2p/ports.ts";
import { TokenBucket } from "../p2p/token-bucket.ts";
import { TxGossip } from "../p2p/tx-gossip.ts";
import { buildTx, type TxIdentity } from "../sdk/tx-builder.ts";
import { SqliteWal } from "../storage/consensus-wal.ts";
import type { Clock } from "./clock.ts";
import { LedgerApplication } from "./consensus-app.ts";
import type { NodeSigner } from "./crypto-node.ts";
import { type Ledger, txBytesKey } from "./ledger.ts";
import type { ChainNode } from "./node.ts";

export interface NetworkNodeOptions {
  readonly tls: {
    readonly certPem: string;
    readonly keyPem: string;
    readonly passphrase: string;
    readonly caPems: string[];
  };
  readonly listen: { readonly host: string; readonly port: number } | null;
  readonly peers: readonly string[];
  /** Follow the chain without voting even if this node's key is in the validator set. */
  readonly observer: boolean;
  readonly consensus: Partial<Omit<DriverOptions, "chainId">>;
  /** A block request not answered in this time goes to another peer. */
  readonly syncRequestTimeoutMs: number;
  /**
   * One height behind for this long (the driver did not finish it itself, though a peer has): fetch
   * the block. Long enough for the precommits in flight to arrive, short against timeoutProposeMs:
   * a lagging proposer costs every node its propose timeout.
   */
  readonly syncGraceMs: number;
  readonly logger?: Logger;
  /**
   * Log each consensus step at debug level ("consensus step": step, height, atMs with sub-ms
   * precision), for a timeline of where a height's time goes (bench/timeline.ts). The node turns it
   * on when its log level is debug.
   */
  readonly traceConsensus?: boolean;
  /** The node's own identity: it signs the evidence transactions it reports. */
  readonly identity?: TxIdentity;
}

/** What one peer may take of this node in catch-up answers (see serveBlock). */
export const servedBlocksPerSecond = 500;
export const servedBlocksBurst = 1000;
export const servedBytesPerSecond = 64 * 1024 * 1024;
export const servedBytesBurst = 128 * 1024 * 1024;
/** Peers with a serving budget at once (a bound; the oldest is forgotten first). */
export const serveBudgetsMax = 1024;

/** How long a peer that did not send a block it claimed is not asked, nor believed. */
export const syncDistrustMs = 60_000;
/** Peers remembered as distrusted (a bound; expired entries go first). */
export const distrustedPeersMax = 1024;

/** Consensus messages kept while catching up, for the driver that starts after (oldest dropped). */
export const heldMessagesMax = 1024;
export const heldBytesMax = 64 * 1024 * 1024;

/** Evidence this node has reported, remembered so it reports each once (a bound, oldest dropped). */
export const reportedEvidenceMax = 1024;

/** Real timers behind the driver's clock port. */
class SystemTimerClock implements TimerClock {
  private readonly timers = new Map<TimerId, NodeJS.Timeout>();
  private nextId = 1;

  constructor(private readonly clock: Clock) {}

  now(): number {
    return this.clock.now();
  }

  schedule(atMs: number, callback: () => void): TimerId {
    const id = this.nextId++;
    const timer = setTimeout(
      () => {
        this.timers.delete(id);
        callback();
      },
      Math.max(0, atMs - this.clock.now()),
    );
    this.timers.set(id, timer);
    return id;
  }

  cancel(id: TimerId): void {
    const timer = this.timers.get(id);
    if (timer !== undefined) clearTimeout(timer);
    this.timers.delete(id);
  }

  cancelAll(): void {
    for (const timer of this.timers.values()) clearTimeout(timer);
    this.timers.clear();
  }
}

const consensusKindByCode = { 1: "proposal", 2: "vote", 3: "decision" } as const;

/** The driver's message kind sits in the first element of its CBOR array (a one-byte header). */
function consensusKindOf(bytes: Uint8Array): "proposal" | "vote" | "decision" {
  const kind = consensusKindByCode[bytes[1] as 1 | 2 | 3];
  if (kind === undefined) throw new CodedError("INVARIANT_BROKEN", "consensus message of unknown kind");
  return kind;
}

/** Frames must carry a whole block (proposals, catch-up), and a slow peer's queue two of them. */
function networkLimitsFor(blockBytesMax: number) {
  const frameBytesMax = blockBytesMax + 64 * 1024;
  return {
    frameBytesMax,
    consensusBytesMax: blockBytesMax + 16 * 1024,
    blockBytesMax,
    sendQueueBytesMax: 2 * frameBytesMax + 1024 * 1024,
    inboundBytesBurst: Math.max(64 * 1024 * 1024, 2 * frameBytesMax),
  };
}

/** What `GET /v1/status` says of a node in consensus mode (docs/api.md). */
export interface NetworkStatus {
  /** Whether this node votes (a validator of the current set, not configured as an observer). */
  readonly validator: boolean;
  readonly peers: ReadonlyArray<{
    readonly nodeId: string;
    readonly dept: string;
    readonly role: string;
    readonly direction: string;
    readonly height: number;
    readonly rttMs: number | null;
  }>;
  /** Where this node's consensus is, or null while it is catching up or idle between heights. */
  readonly consensus: { readonly height: number; readonly round: number; readonly step: string } | null;
  /**
   * Since the node started: `consensus.*`, summed over its consensus drivers (catch-up replaces the
   * driver); `sync.*`, catch-up's; `gossip.*`, transaction gossip's.
   */
  readonly counters: Readonly<Record<string, number>>;
}

export class NetworkNode {
  readonly network: PeerNetwork;
  readonly gossip: TxGossip;
  private driver: ConsensusDriver;
  private readonly timerClock: SystemTimerClock;
  private readonly wal: SqliteWal;
  private readonly app: LedgerApplication;
  /** The peer asked for the next block, while a request is in flight. */
  private syncPeer: string | null = null;
  /** The peer asked last, so the next request goes to another (one that stopped answering is passed over). */
  private lastSyncPeer: string | null = null;
  private syncTimer: NodeJS.Timeout | null = null;
  private graceTimer: NodeJS.Timeout | null = null;
  /** The counters of the drivers catch-up replaced, so `consensus.*` never goes back. */
  private readonly retiredCounters: Record<string, number> = {};
  private readonly syncCounters = { started: 0, requests: 0, applied: 0, refused: 0, timeouts: 0 };
  private readonly reportedEvidence = new Set<string>();
  private readonly heldMessages: Array<{ readonly from: string; readonly wire: Uint8Array }> = [];
  private readonly distrustedUntil = new Map<string, number>();
  private readonly serveBudgets = new Map<string, { requests: TokenBucket; bytes: TokenBucket }>();
  private heldBytes = 0;
  /** Whether the running driver signs (this node was a validator of the height it started at). */
  private driverSigns = false;
  private stopped = false;

  constructor(
    private readonly ledger: Ledger,
    private readonly node: ChainNode,
    private readonly signer: NodeSigner,
    private readonly clock: Clock,
    private readonly options: NetworkNodeOptions,
  ) {
    this.timerClock = new SystemTimerClock(clock);
    this.wal = new SqliteWal(ledger.store.db);
    this.app = new LedgerApplication(ledger, node, clock, {
      onBehind: (height) => this.catchUp(height),
      onCommitted: (height, writes) => {
        this.network.broadcast({ type: "status", height });
        this.afterSystemWrites(writes);
      },
      onEvidence: (evidence) => this.reportEvidence(evidence),
      onPeerAhead: (decidedHeight, from) => this.graceCheck(decidedHeight, from),
      onTimeout: (timeout) => options.logger?.info({ ...timeout }, "consensus: timeout moved the round on"),
      onRefused: (height, why) =>
        options.logger?.warn(
          { height, code: why.code, reason: why.message },
          "consensus: proposed block refused (prevoted nil)",
        ),
    });
    this.network = new PeerNetwork({
      chainId: ledger.latest().header.chainId,
      tls: options.tls,
      listen: options.listen,
      peers: options.peers,
      authorizePeer: (identity) => this.authorize(identity),
      height: () => ledger.height(),
      limits: networkLimitsFor(ledger.params().blockBytesMax),
      ...(options.logger === undefined ? {} : { logger: options.logger }),
    });
    this.gossip = new TxGossip(this.network, {
      txIdOf: txBytesKey,
      stillPending: (txId) => {
        const tx = ledger.rememberedTx(txId);
        return tx !== undefined && node.mempool.has(tx.id);
      },
      admit: async (bytes, _from, txId) => {
        try {
          const status = await node.submit(bytes, txId);
          return status.status === "rejected" ? "rejected" : "accepted";
        } catch (error) {
          if (error instanceof CodedError && error.code === "SIGNATURE_INVALID") return "misbehaving";
          return "rejected";
        }
      },
    });
    node.onAdmitted = (tx, bytesKey) => {
      this.gossip.publish(tx.bytes, bytesKey);
      this.driver.wake();
    };
    this.network.subscribe({
      onMessage: (peer, message) => this.onMessage(peer, message),
      onPeerUp: (peer) => this.onPeerUp(peer),
      onPeerDown: (peer) => {
        this.serveBudgets.delete(peer);
        if (this.syncPeer !== peer) return;
        if (this.syncTimer !== null) clearTimeout(this.syncTimer);
        this.syncTimer = null;
        this.syncPeer = null;
        this.continueCatchUp();
      },
    });
    this.driver = this.makeDriver();
  }

  get listenPort(): number | null {
    return this.network.listenPort;
  }

  private isValidator(): boolean {
    return (
      !this.options.observer && this.ledger.validators().some((v) => bytesEqual(v.id, this.node.validatorId))
    );
  }

  private makeDriver(): ConsensusDriver {
    const params = this.ledger.params();
    this.driverSigns = this.isValidator();
    return new ConsensusDriver(
      {
        clock: this.timerClock,
        transport: {
          broadcast: (bytes) => {
            this.network.broadcast({ type: "consensus", kind: consensusKindOf(bytes), bytes });
          },
          send: (peer, bytes) => {
            this.network.send(peer, { type: "consensus", kind: consensusKindOf(bytes), bytes });
          },
        },
        signer: this.driverSigns
          ? { validatorId: this.node.validatorId, sign: (message) => this.signer.signSync(message) }
          : null,
        // Remembered, so the next block's last commit does not verify these precommits again.
        verifier: this.ledger.verifier.consensus,
        wal: this.wal,
        app: this.app,
        ...(this.options.traceConsensus === true && this.options.logger !== undefined
          ? { trace: traceTo(this.options.logger) }
          : {}),
      },
      {
        ...defaultDriverOptions,
        waitForWork: true,
        ...this.options.consensus,
        chainId: params.chainId,
        blockBytesMax: params.blockBytesMax,
      },
    );
  }

  async start(): Promise<void> {
    await this.network.start();
    this.driver.start();
  }

  /**
   * For `GET /v1/status`: the peers (no addresses), where consensus is, and the counters of
   * consensus, catch-up and transaction gossip since the node started.
   */
  status(): NetworkStatus {
    const view = this.node.syncing ? null : this.driver.view();
    const counters: Record<string, number> = {};
    for (const [key, value] of Object.entries(this.driver.counters))
      counters[`consensus.${key}`] = (this.retiredCounters[key] ?? 0) + value;
    for (const [key, value] of Object.entries(this.syncCounters)) counters[`sync.${key}`] = value;
    for (const [key, value] of Object.entries(this.gossip.stats)) counters[`gossip.${key}`] = value;
    return {
      validator: this.isValidator(),
      peers: this.network.peers().map((p) => ({
        nodeId: p.nodeId,
        dept: p.dept,
        role: p.role,
        direction: p.direction,
        height: p.height,
        rttMs: p.rttMs,
      })),
      consensus: view === null ? null : { height: view.height, round: view.round, step: view.step },
      counters,
    };
  }

  async stop(): Promise<void> {
    this.stopped = true;
    this.driver.stop();
    this.timerClock.cancelAll();
    if (this.syncTimer !== null) clearTimeout(this.syncTimer);
    if (this.graceTimer !== null) clearTimeout(this.graceTimer);
    await this.network.close();
  }

  /** Validator if its key is in the set, observer if it is any other valid node of a registered department. */
  private authorize(identity: Identity): PeerRole | null {
    if (identity.kind !== "node") return null;
    try {
      resolveIdentity(this.ledger.x509, this.ledger.state, identity.der, this.clock.now());
    } catch {
      return null;
    }
    const id = validatorIdOf(identity.publicKeySpki);
    return this.ledger.validators().some((v) => bytesEqual(v.id, id)) ? "validator" : "observer";
  }

  private onPeerUp(peer: PeerInfo): void {
    if (peer.height > this.ledger.height() && this.trusted(peer.nodeId)) this.catchUp(peer.height);
  }

  private onMessage(peer: string, message: PeerMessage): void {
    switch (message.type) {
      case "consensus":
        if (!this.node.syncing) this.driver.receive(peer, message.bytes);
        else this.holdDuringCatchUp(peer, message.bytes);
        return;
      case "status":
        if (message.height > this.ledger.height() && this.trusted(peer)) this.catchUp(message.height);
        return;
      case "block-request":
        this.serveBlock(peer, message.height);
        return;
      case "block-response":
        this.applySynced(peer, message.height, message.block, message.commit);
        return;
      default:
        return;
    }
  }

  // ---- catch-up ----
  //
  // Two paths commit blocks: the driver (consensus) and catch-up (verified blocks fetched from
  // peers). They never run at once: catch-up stops the driver before its first request and starts a
  // fresh one (which resumes from the WAL at the ledger's next height) when no peer is ahead any
  // more. Every way out of a request (answer, refusal, stale answer, timeout, peer gone) ends in
  // `continueCatchUp`, so the node cannot stay "syncing" with nothing in flight.

  /**
   * A peer is ahead of us. Two or more heights behind, fetch blocks at once. One height behind is
   * the normal state of a node a few milliseconds slower than its peers, and the driver finishes
   * that height itself from the precommits or the decision its peers send back; fetching only if
   * the gap outlives a grace period keeps it in consensus instead of dropping its messages.
   */
  private catchUp(targetHeight: number): void {
    if (this.stopped || this.syncPeer !== null) return;
    const next = this.ledger.height() + 1;
    if (targetHeight < next) {
      if (this.node.syncing) this.continueCatchUp();
      return;
    }
    if (!this.node.syncing && targetHeight === next) {
      this.graceCheck(targetHeight);
      return;
    }
    this.requestBlock(next, targetHeight);
  }

  /** Fetch the block at `targetHeight` unless the driver has committed it within the grace period. */
  private graceCheck(targetHeight: number, hint?: string): void {
    if (this.graceTimer !== null) return;
    this.graceTimer = setTimeout(() => {
      this.graceTimer = null;
      if (this.stopped || this.syncPeer !== null || this.ledger.height() >= targetHeight) return;
      this.requestBlock(this.ledger.height() + 1, targetHeight, hint);
    }, this.options.syncGraceMs);
  }

  /**
   * Consensus messages that arrive while blocks are fetched are kept (bounded, oldest dropped) for
   * the driver that starts after: it begins its height with the proposal and votes already sent,
   * instead of waiting a timeout for their senders to send them again.
   */
  private holdDuringCatchUp(peer: string, bytes: Uint8Array): void {
    while (
      this.heldMessages.length > 0 &&
      (this.heldMessages.length >= heldMessagesMax || this.heldBytes + bytes.length > heldBytesMax)
    ) {
      this.heldBytes -= this.heldMessages.shift()!.wire.length;
    }
    if (bytes.length > heldBytesMax) return;
    this.heldMessages.push({ from: peer, wire: bytes });
    this.heldBytes += bytes.length;
  }

  /** A fresh driver at the ledger's next height, given what the old one and catch-up held. */
  private restartDriver(): void {
    const held = [...this.driver.handOver(), ...this.heldMessages.splice(0, this.heldMessages.length)];
    this.heldBytes = 0;
    this.driver.stop();
    for (const [key, value] of Object.entries(this.driver.counters))
      this.retiredCounters[key] = (this.retiredCounters[key] ?? 0) + value;
    this.driver = this.makeDriver();
    this.driver.start();
    for (const { from, wire } of held) this.driver.receive(from, wire);
  }

  /**
   * A peer's height is only its claim. One that claimed a block and did not send it in time is not
   * asked again, and its claims do not start catch-up, for `syncDistrustMs`: otherwise a lying peer
   * (a status with a huge height, or a message for a later height, and no answer) could keep a node
   * fetching with its driver stopped, out of consensus, for as long as it kept lying.
   */
  private trusted(peerId: string): boolean {
    const until = this.distrustedUntil.get(peerId);
    if (until === undefined) return true;
    if (this.clock.now() < until) return false;
    this.distrustedUntil.delete(peerId);
    return true;
  }

  private distrust(peerId: string): void {
    if (this.distrustedUntil.size >= distrustedPeersMax) {
      for (const [id, until] of this.distrustedUntil)
        if (until <= this.clock.now()) this.distrustedUntil.delete(id);
      if (this.distrustedUntil.size >= distrustedPeersMax)
        this.distrustedUntil.delete(this.distrustedUntil.keys().next().value as string);
    }
    this.distrustedUntil.set(peerId, this.clock.now() + syncDistrustMs);
  }

  /** The next trusted peer, after the last one asked, that says it has `height`. */
  private pickPeer(height: number): PeerInfo | undefined {
    const able = this.network.peers().filter((p) => p.height >= height && this.trusted(p.nodeId));
    if (able.length === 0) return undefined;
    const after = able.findIndex((p) => p.nodeId === this.lastSyncPeer);
    return able[(after + 1) % able.length];
  }

  private requestBlock(next: number, targetHeight: number, hint?: string): void {
    // A peer that sent a message for a later height has the block even if its status is not in yet.
    const hinted =
      hint === undefined || !this.trusted(hint)
        ? undefined
        : this.network.peers().find((p) => p.nodeId === hint);
    const peer = this.pickPeer(next) ?? hinted;
    if (peer === undefined) {
      this.options.logger?.debug({ height: next, target: targetHeight }, "catch-up: no peer has the block");
      if (this.node.syncing) this.finishCatchUp();
      return;
    }
    if (!this.node.syncing) {
      this.node.syncing = true;
      this.syncCounters.started++;
      this.driver.stop();
      this.options.logger?.info({ height: next, target: targetHeight }, "catch-up: started");
    }
    this.options.logger?.debug(
      { height: next, target: targetHeight, peer: peer.nodeId },
      "catch-up: block requested",
    );
    this.syncPeer = peer.nodeId;
    this.lastSyncPeer = peer.nodeId;
    this.syncCounters.requests++;
    this.network.send(peer.nodeId, { type: "block-request", height: next });
    this.syncTimer = setTimeout(() => {
      this.options.logger?.warn(
        { height: next, peer: peer.nodeId, distrustMs: syncDistrustMs },
        "catch-up: a peer that claimed the block did not send it; its claims are ignored for a while",
      );
      this.distrust(peer.nodeId);
      this.syncCounters.timeouts++;
      this.syncTimer = null;
      this.syncPeer = null;
      this.continueCatchUp();
    }, this.options.syncRequestTimeoutMs);
  }

  /** After each answer, refusal or timeout: fetch the next block, or go back to consensus. */
  private continueCatchUp(): void {
    if (this.stopped || this.syncPeer !== null) return;
    const best = Math.max(
      0,
      ...this.network
        .peers()
        .filter((p) => this.trusted(p.nodeId))
        .map((p) => p.height),
    );
    if (best > this.ledger.height()) this.requestBlock(this.ledger.height() + 1, best);
    else this.finishCatchUp();
  }

  /** Caught up (or nobody can help): consensus resumes at the ledger's next height. */
  private finishCatchUp(): void {
    if (!this.node.syncing || this.stopped) return;
    this.node.syncing = false;
    this.options.logger?.info({ height: this.ledger.height() }, "catch-up: finished");
    this.restartDriver();
  }

  /**
   * Serving a block costs a store read and up to a block's bytes on the wire for a message of a few
   * bytes, so each peer gets a budget: a far-behind peer fetching small blocks asks a few hundred a
   * second, one asking for more is attacking this node's CPU. Over budget, requests go unanswered
   * (the asker's timeout sends it to another peer).
   */
  private serveBlock(peer: string, height: number): void {
    const nowMs = this.clock.now();
    let budget = this.serveBudgets.get(peer);
    if (budget === undefined) {
      if (this.serveBudgets.size >= serveBudgetsMax)
        this.serveBudgets.delete(this.serveBudgets.keys().next().value as string);
      budget = {
        requests: new TokenBucket(servedBlocksPerSecond, servedBlocksBurst, nowMs),
        bytes: new TokenBucket(servedBytesPerSecond, servedBytesBurst, nowMs),
      };
      this.serveBudgets.set(peer, budget);
    }
    if (!budget.requests.take(1, nowMs)) return;
    const decision = this.app.decisionAt(height);
    if (decision === undefined) return;
    if (!budget.bytes.take(decision.blockBytes.length, nowMs)) return;
    this.network.send(peer, {
      type: "block-response",
      height,
      block: decision.blockBytes,
      commit: encodeCommit(decision.commit),
    });
  }

  private applySynced(peer: string, height: number, blockBytes: Uint8Array, commitBytes: Uint8Array): void {
    if (peer !== this.syncPeer) return; // an answer to a request we gave up on
    if (this.syncTimer !== null) clearTimeout(this.syncTimer);
    this.syncTimer = null;
    this.syncPeer = null;
    if (height === this.ledger.height() + 1) {
      try {
        this.applyBlock(height, blockBytes, commitBytes);
        this.syncCounters.applied++;
        this.options.logger?.debug({ height }, "catch-up: block applied");
      } catch (error) {
        // This node's own failures stop it (a broken invariant, a store it cannot trust); the
        // peer's block is what failed otherwise.
        if (
          error instanceof CodedError &&
          (error.code === "INVARIANT_BROKEN" || error.code === "STORAGE_CORRUPT")
        )
          throw error;
        this.syncCounters.refused++;
        this.options.logger?.warn(
          { height, peer, reason: (error as Error).message },
          "catch-up block refused",
        );
        this.network.disconnect(peer, "bad-message", "sent a block that does not verify");
      }
    }
    this.continueCatchUp();
  }

  private applyBlock(height: number, blockBytes: Uint8Array, commitBytes: Uint8Array): void {
    const block = decodeBlock(blockBytes);
    const commit = decodeCommit(commitBytes);
    if (commit.height !== height || !bytesEqual(commit.blockHash, block.hash))
      throw new Error("commit is for another block");
    const check = verifyCommit(block.header.chainId, this.ledger.validators(), commit, this.ledger.verifier);
    if (!check.ok) throw new Error(check.reason);
    // Re-executes and compares every root: a peer cannot make us accept a block we would not make.
    const prepared = this.ledger.checkBlock(block);
    this.ledger.commit(prepared, commit);
    this.node.afterCommit(prepared, commit);
    this.afterSystemWrites(prepared.execution.writes);
  }

  /**
   * The driver saw a validator sign two conflicting messages: put the pair on the ledger
   * (`consensus.evidence`, src/core/handlers/evidence.ts), which records it and removes the validator
   * when the set-change rules allow. Every honest node that saw it reports it; the first to commit
   * wins and the others' are refused as already recorded.
   */
  private reportEvidence(evidence: Evidence): void {
    const { height, round } = evidence.first;
    const id = evidence.kind === "duplicateVote" ? evidence.first.validatorId : evidence.first.proposer;
    const step = evidence.kind === "duplicateVote" ? evidence.first.type : 0;
    const key = `${toHex(id)}/${height}/${round}/${step}`;
    this.options.logger?.warn(
      { kind: evidence.kind, validator: toHex(id), height, round },
      "consensus evidence: a validator signed two conflicting messages",
    );
    if (this.reportedEvidence.has(key) || this.options.identity === undefined) return;
    if (this.reportedEvidence.size >= reportedEvidenceMax)
      this.reportedEvidence.delete(this.reportedEvidence.values().next().value as string);
    this.reportedEvidence.add(key);
    const validator = this.ledger.validators().find((v) => bytesEqual(v.id, id));
    if (validator === undefined) return;
    const payload = evidencePayload(evidence, validator.publicKeySpki);
    const identity = this.options.identity;
    void (async () => {
      const built = await buildTx({
        chainId: this.ledger.params().chainId,
        type: "consensus.evidence",
        payload,
        signers: [identity],
        nowMs: this.clock.now(),
      });
      const status = await this.node.submit(built.bytes);
      this.options.logger?.info({ txId: built.id, status: status.status }, "consensus evidence reported");
    })().catch((error: unknown) =>
      this.options.logger?.warn({ reason: (error as Error).message }, "consensus evidence not reported"),
    );
  }

  /**
   * A block that changed system records (validators, revocations, departments, roots) may change
   * who our peers are and whether this node votes: peers are judged again (a revoked node is
   * dropped, a new validator is one), and the driver is restarted if this node joined or left the
   * validator set. The restart waits for the current call to return (this runs inside the driver's
   * own commit); the new driver resumes at the next height from the WAL, so it cannot double-sign.
   */
  private afterSystemWrites(writes: ReadonlyMap<string, Uint8Array | null>): void {
    if (!writesSystemKeys(writes)) return;
    this.network.reauthorize();
    if (this.isValidator() === this.driverSigns) return;
    setImmediate(() => {
      if (this.stopped || this.node.syncing || this.isValidator() === this.driverSigns) return;
      this.options.logger?.info(
        { height: this.ledger.height(), validator: this.isValidator() },
        "validator set changed: consensus restarts with this node's new role",
      );
      this.restartDriver();
    });
  }
}

/** The driver's step trace as debug log lines; the time is read here, outside the core. */
function traceTo(logger: Logger): (step: DriverStep, height: number) => void {
  return (step, height) => {
    logger.debug({ step, height, atMs: performance.timeOrigin + performance.now() }, "consensus step");
  };
}
