/**
 * The ledger of one node: the embedded store, the authenticated state tree and deterministic
 * execution put together. It builds a block from transactions (proposer side), checks and applies
 * a block made elsewhere (the consensus issue's replicas and catch-up), and commits either in one
 * atomic step. It never reads the clock: block time is an argument.
 */
import { hash as nodeHash } from "node:crypto";
import {
  type Block,
  type Commit,
  commitHash,
  decodeBlock,
  encodeBlock,
  encodeCommit,
  makeBlock,
  txRootOf,
  type Validator,
  validatorsHashOf,
} from "../core/block.ts";
import { verifyCommit } from "../core/consensus/commit.ts";
import {
  carryPriorities,
  genesisValidatorSet,
  nextHeightValidatorSet,
  type ValidatorSet,
} from "../core/consensus/proposer.ts";
import { bytesEqual, decodeCanonical, encodeCanonical, utf8 } from "../core/encoding.ts";
import { assert, CodedError } from "../core/errors.ts";
import {
  type BlockContext,
  type BlockExecution,
  type ExecutionPorts,
  executeBlock,
  type HandlerRegistry,
  resultsRootOf,
} from "../core/execution.ts";
import { checkGenesis, type GenesisDoc, genesisBlock, genesisWrites } from "../core/genesis.ts";
import { builtinHandlers } from "../core/handlers/index.ts";
import { checkValidAt, type Identity, resolveIdentity, type X509Port } from "../core/identity.ts";
import { type LicenseIndexOps, licenseIndexOps } from "../core/license/index-ops.ts";
import { type SmtBatchResult, SparseMerkleTree, smtNodeKeyToHex } from "../core/smt.ts";
import { decodeProof, encodeProof, type SmtProof } from "../core/smt-proof.ts";
import { stateTreeChanges } from "../core/state.ts";
import {
  type ChainParams,
  decodeValidators,
  encodeValidators,
  readChainParams,
  readValidators,
  stateKeys,
} from "../core/system-state.ts";
import { decodeTx, signingBytes, type Tx } from "../core/tx.ts";
import type { ChainStore } from "../storage/chain-store.ts";
import { CachedState } from "./cached-state.ts";
import type { NodeSignatureVerifier } from "./crypto-node.ts";

/**
 * A change of the validator set, as a client that trusts the previous set can check it: the new list
 * took effect at `height`, and `proof` shows it as `sys/validators` in the state root of block
 * `height - 1` (the block whose transaction made the change, committed by the previous set).
 */
export interface ValidatorChange {
  readonly height: number;
  readonly validators: readonly Validator[];
  /** Null only for the record of the set before the first change (height 1, from genesis). */
  readonly proof: SmtProof | null;
}

/**
 * Checks that the stored state tree, written at the store's last flush, has that block's state
 * root, and carries it to the latest block by the state changes since then, storing the result
 * (see the note in chain-store.ts); the result must have the latest block's root. Anything else is
 * a store edited or damaged outside the node.
 */
export function replayTreeChanges(
  store: ChainStore,
  tree: SparseMerkleTree,
  stateRootAt: (height: number) => Uint8Array | undefined,
): void {
  const treeHeight = store.treeHeight();
  const flushedRoot = stateRootAt(treeHeight);
  if (flushedRoot === undefined || !bytesEqual(tree.root(), flushedRoot)) {
    throw new CodedError(
      "STORAGE_CORRUPT",
      `the stored state tree's root differs from block ${treeHeight}'s state root; run \`citychain verify\``,
    );
  }
  const latest = store.latestHeight();
  if (treeHeight === latest) return;
  const batch = tree.applyBatch(stateTreeChanges(store.stateChangesAfterTree(tree.batchChangesMax)));
  const latestRoot = stateRootAt(latest);
  if (latestRoot === undefined || !bytesEqual(batch.root, latestRoot)) {
    throw new CodedError(
      "STORAGE_CORRUPT",
      `the state changes after block ${treeHeight} (the stored tree's) do not give block ${latest}'s state root; run \`citychain verify\``,
    );
  }
  store.flushReplayedTree(batch.nodeWrites);
  tree.commit(batch);
}

export interface PreparedBlock {
  readonly block: Block;
  readonly execution: BlockExecution;
  readonly tree: SmtBatchResult;
}

export class Ledger {
  readonly handlers: HandlerRegistry = builtinHandlers();
  /**
   * Verdicts of signature checks made at admission, so execution does not verify twice, kept on the
   * very transaction object that was checked (its bytes, signatures included, cannot change). Keyed
   * by object, not by id: the id leaves out the signatures, so a block carrying the same body with a
   * forged signature must not inherit an honest copy's verdict. Bounded by the objects' lives (the
   * mempool and decodedTxs hold them, both bounded).
   */
  private readonly verdicts = new WeakMap<Tx, Array<{ readonly spki: Uint8Array; readonly ok: boolean }>>();
  /**
   * Ids known not to be committed: the node's mempool, which every commit path empties of what it
   * stores in the same synchronous step (ChainNode.afterCommit). Execution's replay check answers a
   * transaction found there without a store lookup (one per transaction per block); the answer is
   * the store's either way, so execution stays deterministic.
   */
  private pending: { has(txId: string): boolean } | null = null;
  /** Transactions decoded at admission, by a hash of their bytes, so a block's are not decoded again. */
  private readonly decodedTxs = new Map<string, Tx>();
  /** The decodedTxs key of each transaction in it, so a commit removes them without hashing again. */
  private readonly decodedKeys = new WeakMap<Tx, string>();
  /** identityAt's successes, by certificate bytes, for the block they were resolved after. */
  private identities: { readonly block: Block | null; readonly byDer: Map<Uint8Array, Identity> } = {
    block: null,
    byDer: new Map(),
  };
  readonly tree: SparseMerkleTree;
  readonly state: CachedState;
  /**
   * The proposer priorities the store records for the next height (meta `validatorSet`), read at
   * open and then kept by each commit, so a height does not read and decode them twice.
   */
  private storedPriorities: StoredPriorities | null;
  private latestBlock: Block;
  /** Every validator list the chain has had, by the height it took effect, oldest first (empty: never changed). */
  private validatorHistory: Array<{ readonly height: number; readonly validators: readonly Validator[] }>;

  constructor(
    readonly store: ChainStore,
    readonly x509: X509Port,
    readonly verifier: NodeSignatureVerifier,
  ) {
    this.tree = new SparseMerkleTree({ get: (nodeKey) => store.treeNode(smtNodeKeyToHex(nodeKey)) });
    this.state = new CachedState((key) => store.getState(key));
    const height = store.latestHeight();
    if (height < 0)
      throw new CodedError("NOT_FOUND", "the store has no genesis block; run `citychain node init`");
    this.latestBlock = this.blockAt(height)!;
    replayTreeChanges(store, this.tree, (h) => this.blockAt(h)?.header.stateRoot);
    const priorities = store.getMeta(validatorSetMetaKey);
    this.storedPriorities = priorities === undefined ? null : decodePriorities(priorities);
    this.validatorHistory = store.metaWithPrefix(validatorHistoryPrefix).map((row) => ({
      height: Number(row.key.slice(validatorHistoryPrefix.length)),
      validators: decodeValidators(row.value),
    }));
    this.repairChangeProof();
  }

  /** Writes block 0 from the genesis document into an empty store. */
  static initGenesis(store: ChainStore, doc: GenesisDoc, x509: X509Port): Block {
    if (store.latestHeight() >= 0) throw new CodedError("CONFLICT", "the store already has a genesis block");
    const validators = checkGenesis(doc, x509);
    const writes = genesisWrites(doc, validators);
    const tree = new SparseMerkleTree({ get: (nodeKey) => store.treeNode(smtNodeKeyToHex(nodeKey)) });
    const { root, nodeWrites } = tree.applyBatch(stateTreeChanges(writes));
    const block = genesisBlock(doc, validators, root);
    store.commitBlock({
      height: 0,
      hash: block.hash,
      timeMs: block.header.timeMs,
      blockBytes: encodeBlock(block),
      txCount: 0,
      commitBytes: null,
      txs: [],
      stateWrites: writes,
      treeWrites: nodeWrites,
      stateRoot: root,
      meta: new Map([[validatorSetMetaKey, encodePriorities(1, genesisValidatorSet(validators).priorities)]]),
    });
    store.putMeta("chainId", utf8(doc.chainId));
    return block;
  }

  latest(): Block {
    return this.latestBlock;
  }

  height(): number {
    return this.latestBlock.header.height;
  }

  params(): ChainParams {
    return readChainParams(this.state);
  }

  /**
   * `resolveIdentity` against the committed state at `atMs`, for a certificate the state holds (`der`
   * is the state's own array, as `findCertificate` gives it for a certificate id; bytes carried in a
   * transaction or request go to resolveIdentity). The state's part of the verdict (the profile, a
   * trusted root, revocations, the department) cannot change without a commit, so a success is kept
   * until the next one and only the validity period is checked again: admission and the API resolve
   * the same few certificates for thousands of transactions a block.
   */
  identityAt(der: Uint8Array, atMs: number): Identity {
    if (this.identities.block !== this.latestBlock)
      this.identities = { block: this.latestBlock, byDer: new Map() };
    const known = this.identities.byDer.get(der);
    if (known !== undefined) {
      checkValidAt(known, atMs);
      return known;
    }
    const identity = resolveIdentity(this.x509, this.state, der, atMs);
    if (this.identities.byDer.size < identitiesKeptMax) this.identities.byDer.set(der, identity);
    return identity;
  }

  /** The validators of the next height (the one being decided): the set in the current state. */
  validators(): readonly Validator[] {
    return readValidators(this.state);
  }

  /** The validators that voted on block `height` (1..latest + 1): those whose commit certifies it. */
  votersAt(height: number): readonly Validator[] {
    assert(height >= 1 && height <= this.height() + 1, "voters of a block up to the next one");
    if (height === this.height() + 1) return this.validators();
    let found: readonly Validator[] | undefined;
    for (const entry of this.validatorHistory) {
      if (entry.height > height) break;
      found = entry.validators;
    }
    // No history: the set never changed, so the current one voted on every block.
    return found ?? this.validators();
  }

  /** The changes of the validator set after `height` (exclusive), oldest first, with their proofs. */
  validatorChanges(afterHeight: number, limit: number): ValidatorChange[] {
    const out: ValidatorChange[] = [];
    for (const entry of this.validatorHistory) {
      if (entry.height <= afterHeight || entry.height === 1) continue;
      if (out.length >= limit) break;
      const proof = this.store.getMeta(changeProofKey(entry.height));
      out.push({
        height: entry.height,
        validators: entry.validators,
        proof: proof === undefined ? null : decodeProof(proof),
      });
    }
    return out;
  }

  /**
   * The validator set voting at `height` with its proposer priorities. Priorities are stored for the
   * next height only (they advance one selection step per committed height, the same on every node);
   * for any other height they are not needed for proposer choice and are returned as zeros.
   */
  validatorSetAt(height: number): ValidatorSet {
    const validators = this.votersAt(height);
    const stored = this.storedPriorities;
    if (stored !== null && stored.forHeight === height && stored.priorities.length === validators.length)
      return { validators, priorities: stored.priorities.slice() };
    return { validators, priorities: validators.map(() => 0) };
  }

  blockAt(height: number): Block | undefined {
    const row = this.store.blockByHeight(height);
    return row === undefined ? undefined : decodeStoredBlock(row.bytes);
  }

  proof(key: string): SmtProof {
    return this.tree.getProof(utf8(key)).proof;
  }

  /** Hands in the node's mempool (see `pending`); a ledger without one asks the store each time. */
  knowPending(pending: { has(txId: string): boolean }): void {
    this.pending = pending;
  }

  /**
   * Keeps a transaction decoded at admission for the block that will carry it (bounded), and
   * returns its key (`txBytesKey` of its bytes); a caller that has the key already passes it.
   */
  rememberDecoded(tx: Tx, key: string = txBytesKey(tx.bytes)): string {
    if (this.decodedTxs.size >= decodedTxsMax)
      this.decodedTxs.delete(this.decodedTxs.keys().next().value as string);
    this.decodedTxs.set(key, tx);
    this.decodedKeys.set(tx, key);
    return key;
  }

  /** The admitted, uncommitted transaction with these bytes' key, if still kept. */
  rememberedTx(key: string): Tx | undefined {
    return this.decodedTxs.get(key);
  }

  // ---- signature verdicts ----

  private knownVerdict(tx: Tx, index: number, spki: Uint8Array): boolean | undefined {
    const known = this.verdicts.get(tx)?.[index];
    return known !== undefined && bytesEqual(known.spki, spki) ? known.ok : undefined;
  }

  /**
   * Verifies a signature off the main thread and remembers the verdict for execution; a verdict
   * already on this object (a block check verified it) is answered without verifying again.
   */
  async verifySignature(tx: Tx, index: number, spki: Uint8Array): Promise<boolean> {
    const known = this.knownVerdict(tx, index, spki);
    if (known !== undefined) return known;
    const ok = await this.verifier.verifyAsync(
      spki,
      signingBytes(tx.bodyBytes),
      tx.signatures[index]!.signature,
    );
    this.recordVerdict(tx, index, spki, ok);
    return ok;
  }

  private recordVerdict(tx: Tx, index: number, spki: Uint8Array, ok: boolean): void {
    let list = this.verdicts.get(tx);
    if (list === undefined) {
      list = [];
      this.verdicts.set(tx, list);
    }
    list[index] = { spki, ok };
  }

  private readonly ports: ExecutionPorts = {
    x509: { parse: (der) => this.x509.parse(der), verifyIssuedBy: (c, i) => this.x509.verifyIssuedBy(c, i) },
    isCommitted: (txId) => this.pending?.has(txId) !== true && this.store.isCommitted(txId),
    checkSignature: (tx, index, spki) => {
      const known = this.knownVerdict(tx, index, spki);
      if (known !== undefined) return known;
      const ok = this.verifier.verify(spki, signingBytes(tx.bodyBytes), tx.signatures[index]!.signature);
      this.recordVerdict(tx, index, spki, ok);
      return ok;
    },
    verify: (spki, message, signature) => this.verifier.verify(spki, message, signature),
  };

  // ---- blocks ----

  private context(height: number, timeMs: number): BlockContext {
    const params = this.params();
    return { chainId: params.chainId, height, timeMs, params };
  }

  /** Proposer side: executes candidates, leaves out the rejected ones, and builds the next block. */
  buildBlock(
    candidates: readonly Tx[],
    timeMs: number,
    proposer: Uint8Array,
    lastCommit: Commit | null,
  ): PreparedBlock {
    const prev = this.latestBlock;
    const height = prev.header.height + 1;
    const blockTime = Math.max(timeMs, prev.header.timeMs + 1);
    const execution = executeBlock(
      this.ports,
      this.handlers,
      this.state,
      this.context(height, blockTime),
      candidates,
    );
    return this.seal(execution, height, blockTime, proposer, lastCommit);
  }

  private seal(
    execution: BlockExecution,
    height: number,
    timeMs: number,
    proposer: Uint8Array,
    lastCommit: Commit | null,
  ): PreparedBlock {
    const tree = this.tree.applyBatch(stateTreeChanges(execution.writes));
    const txs = execution.included.map((tx) => tx.bytes);
    const block = makeBlock(
      {
        chainId: this.latestBlock.header.chainId,
        height,
        timeMs,
        prevHash: this.latestBlock.hash,
        txRoot: txRootOf(txs),
        resultsRoot: resultsRootOf(execution.results),
        stateRoot: tree.root,
        validatorsHash: validatorsHashOf(this.validators()),
        proposer,
        lastCommitHash: commitHash(lastCommit),
      },
      txs,
      lastCommit,
    );
    return { block, execution, tree };
  }

  /**
   * Replica side: re-executes a block made by someone else and accepts it only if every transaction
   * is authentic and every root in its header is what this node computes.
   */
  checkBlock(block: Block): PreparedBlock {
    const prev = this.latestBlock;
    const h = block.header;
    if (h.height !== prev.header.height + 1)
      throw invalid(`height ${h.height} does not follow ${prev.header.height}`);
    if (!bytesEqual(h.prevHash, prev.hash)) throw invalid("prevHash does not match the last block");
    if (h.timeMs <= prev.header.timeMs) throw invalid("block time does not increase");
    this.checkLastCommit(block, prev);
    const txBytesMax = this.params().txBytesMax;
    const txs = block.txs.map((bytes) => {
      const key = txBytesKey(bytes);
      const known = this.decodedTxs.get(key);
      if (known !== undefined) return known;
      // Kept like an admitted one, with the verdicts execution records on it: a gossip copy that
      // arrives before this block commits is then admitted without verifying its signatures again.
      const tx = decodeTx(bytes, txBytesMax);
      this.rememberDecoded(tx, key);
      return tx;
    });
    const execution = executeBlock(
      this.ports,
      this.handlers,
      this.state,
      this.context(h.height, h.timeMs),
      txs,
    );
    if (execution.rejected.length > 0) {
      const first = execution.rejected[0]!;
      throw invalid(`transaction ${first.txId} is not valid: ${first.error.message}`);
    }
    const prepared = this.seal(execution, h.height, h.timeMs, h.proposer, block.lastCommit);
    if (!bytesEqual(prepared.block.hash, block.hash)) {
      const mine = prepared.block.header;
      const field = !bytesEqual(mine.txRoot, h.txRoot)
        ? "txRoot"
        : !bytesEqual(mine.stateRoot, h.stateRoot)
          ? "stateRoot"
          : !bytesEqual(mine.resultsRoot, h.resultsRoot)
            ? "resultsRoot"
            : "header";
      throw invalid(`block ${h.height}: ${field} differs from this node's execution`, field);
    }
    return prepared;
  }

  /** Block h carries a commit of block h-1 by > 2/3 of the voting power (any such set of signatures). */
  private checkLastCommit(block: Block, prev: Block): void {
    const last = block.lastCommit;
    if (prev.header.height === 0) {
      if (last !== null) throw invalid("the first block carries no last commit", "lastCommit");
      return;
    }
    if (last === null) throw invalid("last commit missing", "lastCommit");
    if (last.height !== prev.header.height || !bytesEqual(last.blockHash, prev.hash)) {
      throw invalid("last commit is for another block", "lastCommit");
    }
    // Its precommits were most likely verified as votes already: remembered, not verified twice.
    const check = verifyCommit(
      prev.header.chainId,
      this.votersAt(prev.header.height),
      last,
      this.verifier.consensus,
    );
    if (!check.ok) throw invalid(`last commit: ${check.reason}`, "lastCommit");
  }

  /** Writes the block with its results, state, tree nodes and commit in one transaction. */
  commit(prepared: PreparedBlock, commit: Commit | null): void {
    const { block, execution } = prepared;
    assert(block.header.height === this.height() + 1, "blocks commit in order");
    const after = {
      get: (key: string) =>
        execution.writes.has(key) ? (execution.writes.get(key) ?? undefined) : this.state.get(key),
    };
    const licenseIndex = licenseIndexOps(execution, after, block.header.height, block.header.timeMs);
    const height = block.header.height;
    const meta = new Map<string, Uint8Array>();
    const change = this.validatorChangeOf(execution, height);
    const voting = this.validatorSetAt(height);
    const next =
      change === null
        ? nextHeightValidatorSet(voting)
        : carryPriorities(nextHeightValidatorSet(voting), change);
    const nextPriorities: StoredPriorities = { forHeight: height + 1, priorities: next.priorities };
    meta.set(validatorSetMetaKey, encodePriorities(nextPriorities.forHeight, nextPriorities.priorities));
    if (change !== null) {
      // The set before the first change is recorded too, so every height's voters stay known.
      if (this.validatorHistory.length === 0) meta.set(historyKey(1), encodeValidators(voting.validators));
      meta.set(historyKey(height + 1), encodeValidators(change));
    }
    this.store.commitBlock({
      licenseIndex,
      height: block.header.height,
      hash: block.hash,
      timeMs: block.header.timeMs,
      blockBytes: encodeBlock(block),
      txCount: block.txs.length,
      commitBytes: commit === null ? null : encodeCommit(commit),
      txs: execution.results.map((r, index) => ({
        id: r.txId,
        index,
        code: r.code,
        message: r.message,
        data: encodeCanonical(r.data),
      })),
      stateWrites: execution.writes,
      treeWrites: prepared.tree.nodeWrites,
      stateRoot: block.header.stateRoot,
      meta,
    });
    this.storedPriorities = nextPriorities;
    this.tree.commit(prepared.tree);
    this.state.applyCommitted(execution.writes);
    // By the key kept at admission or by the block check, not hashed again.
    for (const tx of execution.included) {
      const key = this.decodedKeys.get(tx);
      if (key !== undefined) this.decodedTxs.delete(key);
    }
    this.latestBlock = block;
    if (change !== null) {
      if (this.validatorHistory.length === 0)
        this.validatorHistory.push({ height: 1, validators: voting.validators });
      this.validatorHistory.push({ height: height + 1, validators: change });
      this.repairChangeProof();
    }
    for (const listener of this.licenseListeners) listener(licenseIndex, block.header.height);
  }

  /** The new validator list if this block's execution changed it, else null. */
  private validatorChangeOf(execution: BlockExecution, height: number): readonly Validator[] | null {
    const written = execution.writes.get(stateKeys.validators);
    if (written === undefined) return null;
    assert(written !== null, `block ${height} deletes the validator set`);
    return bytesEqual(written, encodeValidators(this.validators())) ? null : decodeValidators(written);
  }

  /**
   * The proof of the newest change is made right after the block that made it commits, while the
   * state tree is at that block's root (the tree keeps no older roots). A crash between the two
   * writes leaves the proof missing with the tree still at that root, so the next start makes it.
   */
  private repairChangeProof(): void {
    const last = this.validatorHistory.at(-1);
    if (last === undefined || last.height === 1 || last.height !== this.height() + 1) return;
    if (this.store.getMeta(changeProofKey(last.height)) !== undefined) return;
    this.store.putMeta(changeProofKey(last.height), encodeProof(this.proof(stateKeys.validators)));
  }

  /** Told each committed block's license rows, once durable (the key node acts on forgotten subjects). */
  readonly licenseListeners: Array<(ops: LicenseIndexOps, height: number) => void> = [];
}

const validatorSetMetaKey = "validatorSet";
const validatorHistoryPrefix = "validators/";
const heightDigits = 15;

function historyKey(height: number): string {
  return `${validatorHistoryPrefix}${String(height).padStart(heightDigits, "0")}`;
}

function changeProofKey(height: number): string {
  return `validator-proof/${String(height).padStart(heightDigits, "0")}`;
}

export const decodedTxsMax = 200_000;
/** Certificates identityAt keeps between two commits (the senders of a block's transactions). */
export const identitiesKeptMax = 4096;

/**
 * Identity of transaction bytes: a native hash is ~10x cheaper than decoding them again. Gossip names
 * transactions the same way, so it hands its id to admission instead of hashing twice.
 */
export function txBytesKey(bytes: Uint8Array): string {
  return nodeHash("sha256", bytes, "base64");
}

interface StoredPriorities {
  readonly forHeight: number;
  readonly priorities: readonly number[];
}

function encodePriorities(height: number, priorities: readonly number[]): Uint8Array {
  return encodeCanonical([height, priorities as number[]]);
}

function decodePriorities(bytes: Uint8Array): StoredPriorities {
  const [forHeight, priorities] = decodeCanonical(bytes, 1024 * 1024) as [number, number[]];
  return { forHeight, priorities };
}

function invalid(message: string, field?: string): CodedError {
  return new CodedError("BLOCK_MALFORMED", message, field);
}

export function decodeStoredBlock(bytes: Uint8Array): Block {
  return decodeBlock(bytes);
}
