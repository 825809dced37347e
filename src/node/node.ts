/**
 * One department's node: admits signed transactions into the mempool, produces blocks, commits them
 * and tells waiting clients. In this single-validator form the node is its own proposer and signs
 * its own commit; the consensus issue replaces `produceBlock` with Tendermint rounds across nodes.
 */
import { EventEmitter } from "node:events";
import {
  type Block,
  type Commit,
  decodeCommit,
  totalPower,
  validatorIdOf,
  voteSigningBytes,
  voteTypePrecommit,
} from "../core/block.ts";
import { bytesEqual, encodeCanonical } from "../core/encoding.ts";
import { assert, CodedError } from "../core/errors.ts";
import { findCertificate, type Identity, resolveIdentity } from "../core/identity.ts";
import { decodeTx, type Tx } from "../core/tx.ts";
import type { Clock } from "./clock.ts";
import type { NodeSigner } from "./crypto-node.ts";
import type { Ledger, PreparedBlock } from "./ledger.ts";
import { defaultMempoolOptions, Mempool, type MempoolOptions } from "./mempool.ts";

export interface NodeOptions {
  /** Pause after a block before the next one, so a block gathers many transactions. */
  readonly blockIntervalMs: number;
  /** Longest a client may wait for its transaction to commit. */
  readonly commitWaitMsMax: number;
  /** Clients waiting for commits at once. */
  readonly commitWaitersMax: number;
  readonly mempool: MempoolOptions;
  /**
   * Transactions this node puts in one block it makes, below the chain's blockTxsMax: building and
   * re-executing a block must fit well inside timeoutProposeMs on a loaded machine (a 4,000-transaction
   * burst took longer than 1 s and cost a round), and smaller blocks pipeline better.
   */
  readonly proposalTxsMax: number;
  /**
   * "solo": this node is the chain's only validator and makes every block itself.
   * "consensus": blocks come from Tendermint rounds among the validators (src/node/network-node.ts).
   */
  readonly production: "solo" | "consensus";
}

export const defaultNodeOptions: NodeOptions = {
  production: "solo",
  blockIntervalMs: 25,
  commitWaitMsMax: 60_000,
  commitWaitersMax: 100_000,
  mempool: defaultMempoolOptions,
  proposalTxsMax: 2_000,
};

export type TxStatus =
  | { readonly txId: string; readonly status: "pending" }
  | {
      readonly txId: string;
      readonly status: "committed";
      readonly height: number;
      readonly index: number;
      readonly code: string;
      readonly message: string;
      readonly data: Uint8Array;
    }
  | { readonly txId: string; readonly status: "rejected"; readonly code: string; readonly message: string };

interface Waiter {
  resolve(status: TxStatus): void;
}

export interface NodeEvents {
  block: [Block];
}

export class ChainNode extends EventEmitter<NodeEvents> {
  readonly mempool: Mempool;
  private readonly waiters = new Map<string, Waiter[]>();
  private waiterCount = 0;
  private readonly rejected = new Map<string, TxStatus>();
  private timer: NodeJS.Timeout | null = null;
  private producing = false;
  private stopped = false;
  private lastCommit: Commit | null;
  readonly validatorId: Uint8Array;
  /** Set by the network layer: a newly admitted transaction, with its bytes' key, to pass on to peers. */
  onAdmitted: ((tx: Tx, bytesKey: string) => void) | null = null;
  /** Set by the network layer while the node fetches blocks it missed. */
  syncing = false;

  constructor(
    readonly ledger: Ledger,
    private readonly signer: NodeSigner,
    private readonly clock: Clock,
    readonly options: NodeOptions = defaultNodeOptions,
  ) {
    super();
    assert(options.proposalTxsMax >= 1, "a block this node makes holds at least one transaction");
    this.mempool = new Mempool(options.mempool);
    ledger.knowPending(this.mempool);
    this.validatorId = validatorIdOf(signer.publicKeySpki);
    const height = ledger.height();
    const commitBytes = ledger.store.commitBytes(height);
    this.lastCommit = commitBytes === undefined ? null : decodeCommit(commitBytes);
    if (
      options.production === "solo" &&
      !ledger.validators().some((v) => bytesEqual(v.id, this.validatorId))
    ) {
      throw new CodedError("FORBIDDEN", "this node's key is not in the validator set");
    }
  }

  start(): void {
    this.stopped = false;
    this.schedule();
  }

  get isStopped(): boolean {
    return this.stopped;
  }

  async stop(): Promise<void> {
    this.stopped = true;
    if (this.timer !== null) clearTimeout(this.timer);
    this.timer = null;
    while (this.producing) await new Promise((r) => setTimeout(r, 5));
  }

  // ---- admission ----

  /** Authenticates the transaction's signers at the node's current time. */
  resolveSigners(tx: Tx, atMs: number): Identity[] {
    const { ledger } = this;
    return tx.signatures.map((s) =>
      s.signer.kind === "certId"
        ? ledger.identityAt(findCertificate(ledger.state, s.signer), atMs)
        : resolveIdentity(ledger.x509, ledger.state, s.signer.der, atMs),
    );
  }

  /**
   * Admits a transaction. Idempotent: a transaction already pending or committed answers with its
   * status instead of an error, so a client may resend after a timeout without fear. `bytesKey` is
   * the bytes' `txBytesKey` when the caller has computed it (gossip has).
   */
  async submit(bytes: Uint8Array, bytesKey?: string): Promise<TxStatus> {
    if (this.stopped) throw new CodedError("NODE_STOPPING", "the node is stopping");
    const params = this.ledger.params();
    // A copy of a transaction a block check decoded (and verified) is that very object, verdicts
    // and all. The key is the hash of these exact bytes, so nothing else can pass for it.
    const tx =
      (bytesKey === undefined ? undefined : this.ledger.rememberedTx(bytesKey)) ??
      decodeTx(bytes, params.txBytesMax);
    const known = this.status(tx.id);
    if (known.status !== "rejected") return known;
    const now = this.clock.now();
    if (tx.body.chainId !== params.chainId)
      throw new CodedError("TX_WRONG_CHAIN", `this node serves ${params.chainId}`, "chainId");
    if (tx.body.expiresAtMs < now)
      throw new CodedError("TX_EXPIRED", "transaction has expired", "expiresAtMs");
    if (tx.body.expiresAtMs > now + params.txTtlMsMax) {
      throw new CodedError(
        "TX_EXPIRY_TOO_FAR",
        `expiry is more than ${params.txTtlMsMax} ms ahead`,
        "expiresAtMs",
      );
    }
    this.mempool.checkRoom(tx);
    const signers = this.resolveSigners(tx, now);
    const heightBefore = this.ledger.height();
    // Most transactions have one signer: its check is awaited alone, without Promise.all's arrays.
    const verdicts =
      signers.length === 1
        ? [await this.ledger.verifySignature(tx, 0, signers[0]!.publicKeySpki)]
        : await Promise.all(signers.map((id, i) => this.ledger.verifySignature(tx, i, id.publicKeySpki)));
    const bad = verdicts.indexOf(false);
    if (bad >= 0)
      throw new CodedError("SIGNATURE_INVALID", `signature ${bad} does not verify`, `signatures[${bad}]`);
    // While this one was verifying, another request may have admitted the same transaction, or a
    // block may have committed it (it came back by gossip): either way it must not enter the mempool.
    // Only a commit in the meantime can have done the latter, and the store lookup is skipped without
    // one (it was ~4 % of a validator's main thread at saturation).
    if (
      this.mempool.has(tx.id) ||
      (this.ledger.height() !== heightBefore && this.ledger.store.isCommitted(tx.id))
    )
      return this.status(tx.id);
    this.mempool.add(tx);
    // A peer's proposal carrying it finds this object, with its verdicts, instead of decoding again.
    const key = this.ledger.rememberDecoded(tx, bytesKey);
    this.rejected.delete(tx.id);
    this.onAdmitted?.(tx, key);
    this.schedule();
    return { txId: tx.id, status: "pending" };
  }

  status(txId: string): TxStatus {
    // Every commit path (consensus, catch-up, solo) removes a block's transactions from the mempool
    // in the same synchronous step as it stores them (afterCommit), so a pending transaction is not
    // committed, and the store lookup is spared for it: a client that waits for its commit asks
    // right after submitting.
    if (this.mempool.has(txId)) return { txId, status: "pending" };
    const stored = this.ledger.store.getTx(txId);
    if (stored !== undefined) {
      return {
        txId,
        status: "committed",
        height: stored.height,
        index: stored.index,
        code: stored.code,
        message: stored.message,
        data: stored.data,
      };
    }
    return (
      this.rejected.get(txId) ?? {
        txId,
        status: "rejected",
        code: "TX_NOT_FOUND",
        message: "unknown transaction",
      }
    );
  }

  /** Resolves when the transaction commits or is rejected, or with "pending" after `timeoutMs`. */
  waitFor(txId: string, timeoutMs: number): Promise<TxStatus> {
    const now = this.status(txId);
    if (now.status !== "pending") return Promise.resolve(now);
    if (this.waiterCount >= this.options.commitWaitersMax) {
      throw new CodedError("RATE_LIMITED", "too many clients are waiting for commits");
    }
    return new Promise((resolve) => {
      let done = false;
      const timer = setTimeout(
        () => finish(this.status(txId)),
        Math.min(timeoutMs, this.options.commitWaitMsMax),
      );
      const finish = (status: TxStatus) => {
        if (done) return;
        done = true;
        clearTimeout(timer);
        this.removeWaiter(txId, waiter);
        resolve(status);
      };
      const waiter: Waiter = { resolve: finish };
      const list = this.waiters.get(txId) ?? [];
      list.push(waiter);
      this.waiters.set(txId, list);
      this.waiterCount++;
    });
  }

  private removeWaiter(txId: string, waiter: Waiter): void {
    const list = this.waiters.get(txId);
    if (list === undefined) return;
    const i = list.indexOf(waiter);
    if (i < 0) return;
    list.splice(i, 1);
    this.waiterCount--;
    if (list.length === 0) this.waiters.delete(txId);
  }

  private notify(txId: string, known?: TxStatus): void {
    const list = this.waiters.get(txId);
    if (list === undefined) return;
    const status = known ?? this.status(txId);
    for (const w of [...list]) w.resolve(status);
  }

  // ---- block production ----

  private schedule(): void {
    if (this.options.production !== "solo") return;
    if (this.stopped || this.timer !== null || this.producing || this.mempool.size === 0) return;
    this.timer = setTimeout(() => {
      this.timer = null;
      this.produceBlock();
    }, this.options.blockIntervalMs);
  }

  private produceBlock(): void {
    if (this.stopped || this.mempool.size === 0 || !this.soloHoldsQuorum()) return;
    this.producing = true;
    try {
      const prepared = this.ledger.buildBlock(
        this.candidates(),
        this.clock.now(),
        this.validatorId,
        this.lastCommit,
      );
      const commit = this.signCommit(prepared.block);
      this.ledger.commit(prepared, commit);
      this.afterCommit(prepared, commit);
    } finally {
      this.producing = false;
    }
    this.schedule();
  }

  /**
   * A solo node's own signature is the whole commit, so it makes blocks only while it holds more
   * than two thirds of the voting power. Validator changes can take that away (each moves less than
   * a third, but several can); then the chain needs its validators in consensus mode, and a block
   * made here would carry a commit no one could accept.
   */
  soloHoldsQuorum(): boolean {
    const validators = this.ledger.validators();
    const own = validators.find((v) => bytesEqual(v.id, this.validatorId))?.power ?? 0;
    return own * 3 > totalPower(validators) * 2;
  }

  /** The oldest pending transactions that fit in a block. */
  candidates(): Tx[] {
    const params = this.ledger.params();
    return this.mempool.peek(
      Math.min(params.blockTxsMax, this.options.proposalTxsMax),
      params.blockBytesMax - 64 * 1024,
    );
  }

  /** After a block is durable: drop its transactions from the mempool and answer their waiters. */
  afterCommit(prepared: PreparedBlock, commit: Commit): void {
    this.lastCommit = commit;
    for (const r of prepared.execution.rejected) {
      this.mempool.remove(r.txId);
      this.rememberRejected({
        txId: r.txId,
        status: "rejected",
        code: r.error.code,
        message: r.error.message,
      });
      this.notify(r.txId);
    }
    const height = prepared.block.header.height;
    const { included, results } = prepared.execution;
    assert(included.length === results.length, "one result per included transaction");
    for (let index = 0; index < included.length; index++) {
      const tx = included[index]!;
      const result = results[index]!;
      this.mempool.remove(tx.id);
      if (!this.waiters.has(tx.id)) continue;
      // The block's own results, not a read back from the store: the store holds the same.
      this.notify(tx.id, {
        txId: tx.id,
        status: "committed",
        height,
        index,
        code: result.code,
        message: result.message,
        data: encodeCanonical(result.data),
      });
    }
    this.emit("block", prepared.block);
  }

  /** This node's precommit of `block` as a one-signature commit: a solo node's whole certificate. */
  signCommit(block: Block): Commit {
    const bytes = voteSigningBytes(
      block.header.chainId,
      voteTypePrecommit,
      block.header.height,
      0,
      block.hash,
    );
    const signature = this.signer.signSync(bytes);
    return {
      height: block.header.height,
      round: 0,
      blockHash: block.hash,
      signatures: [{ validatorId: this.validatorId, signature }],
    };
  }

  private rememberRejected(status: TxStatus): void {
    // Bounded: rejected ids are a courtesy for clients polling status, not a ledger record.
    if (this.rejected.size >= 100_000) this.rejected.delete(this.rejected.keys().next().value as string);
    this.rejected.set(status.txId, status);
  }
}
