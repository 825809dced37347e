/**
 * `citychain verify`: recomputes every hash and root from genesis and names the first thing that
 * was altered by hand.
 *
 * It replays the whole chain into memory, re-verifying every signature, and checks per block: the
 * stored hash, the chain of previous hashes, the transaction root, the commit certificate (>2/3 of
 * the validators' power), the last-commit hash, the results root against re-execution, the state
 * root, and the stored transaction index. Then it compares the replayed state with the state table
 * key by key; checks every stored tree node against its parent and the stored tree's root against
 * the replayed root at the height it was written (`treeHeight`); and checks that the state changes
 * recorded since then carry the stored tree to the replayed latest root. It reads the database and
 * writes nothing.
 */
import fs from "node:fs";
import path from "node:path";
import {
  type Block,
  blockHashOf,
  type Commit,
  commitHash,
  decodeBlock,
  decodeCommit,
  totalPower,
  txRootOf,
  validatorsHashOf,
  voteSigningBytes,
  voteTypePrecommit,
} from "../core/block.ts";
import { bytesEqual, encodeCanonical, toHex } from "../core/encoding.ts";
import { CodedError } from "../core/errors.ts";
import { executeBlock, resultsRootOf } from "../core/execution.ts";
import { checkGenesis, genesisBlock, genesisWrites } from "../core/genesis.ts";
import { builtinHandlers } from "../core/handlers/index.ts";
import { auditSmtStore, MemorySmtNodeStore, type SmtAudit, SparseMerkleTree } from "../core/smt.ts";
import { MemoryState, stateTreeChanges } from "../core/state.ts";
import { readChainParams, readValidators } from "../core/system-state.ts";
import { decodeTx, signingBytes } from "../core/tx.ts";
import { nodeFiles } from "../node/config.ts";
import { NodeSignatureVerifier } from "../node/crypto-node.ts";
import { readGenesisFile } from "../node/genesis-file.ts";
import { nodeX509 } from "../node/x509-port.ts";
import { ChainStore } from "./chain-store.ts";

export interface AuditProblem {
  readonly height?: number;
  readonly key?: string;
  readonly what: string;
}

export interface AuditReport {
  readonly ok: boolean;
  readonly height: number;
  readonly txs: number;
  readonly stateKeys: number;
  /** The first problem found; the audit stops there, as every later root depends on it. */
  readonly problem: AuditProblem | null;
}

export interface AuditOptions {
  readonly onProgress?: (height: number, latest: number) => void;
}

class Found extends Error {
  constructor(readonly problem: AuditProblem) {
    super(problem.what);
  }
}

function fail(problem: AuditProblem): never {
  throw new Found(problem);
}

export function auditDataDir(dir: string, options: AuditOptions = {}): AuditReport {
  const genesisPath = path.join(dir, nodeFiles.genesis);
  if (!fs.existsSync(genesisPath)) throw new CodedError("NOT_FOUND", `no ${genesisPath}`);
  const store = ChainStore.open(dir, { readonly: true });
  try {
    return audit(store, genesisPath, options);
  } finally {
    store.close();
  }
}

function audit(store: ChainStore, genesisPath: string, options: AuditOptions): AuditReport {
  const latest = store.latestHeight();
  const state = new MemoryState();
  const nodes = new MemorySmtNodeStore();
  const tree = new SparseMerkleTree(nodes);
  const verifier = new NodeSignatureVerifier();
  const handlers = builtinHandlers();
  const committed = new Set<string>();
  let txCount = 0;
  let height = -1;
  const treeHeight = store.treeHeight();
  /** The replayed tree's root at treeHeight, which the stored tree must have. */
  let rootAtTreeHeight: Uint8Array | null = null;
  try {
    const doc = readGenesisFile(genesisPath);
    const validators0 = checkGenesis(doc, nodeX509);
    const writes = genesisWrites(doc, validators0);
    const batch = tree.applyBatch(stateTreeChanges(writes));
    nodes.write(batch.nodeWrites);
    tree.commit(batch);
    state.apply(writes);
    const expected0 = genesisBlock(doc, validators0, batch.root);
    let prev = loadBlock(store, 0);
    if (!bytesEqual(prev.hash, expected0.hash))
      fail({ height: 0, what: "genesis block differs from genesis.json" });
    height = 0;
    if (treeHeight === 0) rootAtTreeHeight = tree.root();
    let prevCommit: Commit | null = null;
    let prevValidators = readValidators(state);
    for (let h = 1; h <= latest; h++) {
      const block = loadBlock(store, h);
      checkLinks(block, prev, prevCommit);
      // The set in the state before block h votes on it; block h carries the commit of h - 1, which
      // the set before that signed (they differ after a validator change).
      const validators = readValidators(state);
      if (!bytesEqual(block.header.validatorsHash, validatorsHashOf(validators)))
        fail({ height: h, what: "validatorsHash differs from the validator set in the state" });
      const commit = loadCommit(store, h);
      checkCommit(block, commit, validators, verifier);
      if (block.lastCommit !== null) checkCommit(prev, block.lastCommit, prevValidators, verifier);
      prevValidators = validators;
      const params = readChainParams(state);
      const txs = block.txs.map((bytes) => decodeTx(bytes, params.txBytesMax));
      const execution = executeBlock(
        {
          x509: nodeX509,
          isCommitted: (id) => committed.has(id),
          checkSignature: (tx, i, spki) =>
            verifier.verify(spki, signingBytes(tx.bodyBytes), tx.signatures[i]!.signature),
          verify: (spki, message, signature) => verifier.verify(spki, message, signature),
        },
        handlers,
        state,
        { chainId: params.chainId, height: h, timeMs: block.header.timeMs, params },
        txs,
      );
      if (execution.rejected.length > 0) {
        fail({
          height: h,
          what: `transaction ${execution.rejected[0]!.txId} is not valid: ${execution.rejected[0]!.error.message}`,
        });
      }
      if (!bytesEqual(resultsRootOf(execution.results), block.header.resultsRoot)) {
        fail({ height: h, what: "results root differs from re-execution" });
      }
      const next = tree.applyBatch(stateTreeChanges(execution.writes));
      if (!bytesEqual(next.root, block.header.stateRoot))
        fail({ height: h, what: "state root differs from re-execution" });
      nodes.write(next.nodeWrites);
      tree.commit(next);
      if (h === treeHeight) rootAtTreeHeight = tree.root();
      state.apply(execution.writes);
      for (const r of execution.results) {
        const stored = store.getTx(r.txId);
        if (stored === undefined || stored.height !== h || stored.code !== r.code) {
          fail({ height: h, what: `transaction index entry for ${r.txId} differs from the block` });
        }
        if (!bytesEqual(stored.data, encodeCanonical(r.data)))
          fail({ height: h, what: `stored result of ${r.txId} altered` });
        committed.add(r.txId);
      }
      txCount += txs.length;
      prev = block;
      prevCommit = commit;
      height = h;
      options.onProgress?.(h, latest);
    }
    compareState(store, state);
    const storedRoot = store.getMeta("stateRoot");
    if (storedRoot === undefined || !bytesEqual(storedRoot, tree.root())) {
      fail({ height: latest, what: "stored state root differs from the replayed one" });
    }
    checkStoredTree(store, rootAtTreeHeight, tree.root());
    return { ok: true, height: latest, txs: txCount, stateKeys: state.map.size, problem: null };
  } catch (error) {
    if (error instanceof Found)
      return { ok: false, height, txs: txCount, stateKeys: state.map.size, problem: error.problem };
    if (error instanceof CodedError) {
      return {
        ok: false,
        height,
        txs: txCount,
        stateKeys: state.map.size,
        problem: { height: height + 1, what: error.message },
      };
    }
    throw error;
  }
}

/**
 * The stored tree is block treeHeight's, node by node; the state changes after it give the latest root.
 * Opened read-only, the store holds no unflushed nodes: treeNode reads the table.
 */
function checkStoredTree(store: ChainStore, rootAtTreeHeight: Uint8Array | null, latestRoot: Uint8Array) {
  const treeHeight = store.treeHeight();
  if (rootAtTreeHeight === null)
    fail({ height: treeHeight, what: "stored state tree height is not a block's" });
  const nodes = { get: (k: Uint8Array) => store.treeNode(toHex(k)) };
  let stored: SmtAudit;
  try {
    stored = auditSmtStore(nodes);
  } catch (error) {
    if (!(error instanceof CodedError)) throw error;
    fail({ height: treeHeight, what: `stored state tree nodes were altered (${error.message})` });
  }
  if (!bytesEqual(stored.root, rootAtTreeHeight))
    fail({ height: treeHeight, what: "stored state tree nodes were altered" });
  const carrier = new SparseMerkleTree(nodes);
  let changes: Map<string, Uint8Array | null>;
  try {
    changes = store.stateChangesAfterTree(carrier.batchChangesMax);
  } catch (error) {
    if (!(error instanceof CodedError && error.code === "STORAGE_CORRUPT")) throw error;
    return fail({ height: treeHeight, what: error.message });
  }
  const carried = carrier.applyBatch(stateTreeChanges(changes));
  if (!bytesEqual(carried.root, latestRoot))
    fail({
      height: store.latestHeight(),
      what: "the state changes since the stored tree's height do not give the replayed state root",
    });
}

function loadBlock(store: ChainStore, h: number): Block {
  const row = store.blockByHeight(h);
  if (row === undefined) fail({ height: h, what: "block missing" });
  let block: Block;
  try {
    block = decodeBlock(row.bytes);
  } catch (error) {
    return fail({ height: h, what: `block bytes do not decode: ${(error as Error).message}` });
  }
  if (block.header.height !== h) fail({ height: h, what: `block claims height ${block.header.height}` });
  if (!bytesEqual(row.hash, block.hash) || !bytesEqual(blockHashOf(block.headerBytes), row.hash)) {
    fail({ height: h, what: "block header altered: its hash differs from the stored hash" });
  }
  return block;
}

function loadCommit(store: ChainStore, h: number): Commit {
  const bytes = store.commitBytes(h);
  if (bytes === undefined) fail({ height: h, what: "commit certificate missing" });
  try {
    return decodeCommit(bytes);
  } catch {
    return fail({ height: h, what: "commit certificate does not decode" });
  }
}

function checkLinks(block: Block, prev: Block, prevCommit: Commit | null): void {
  const h = block.header.height;
  if (!bytesEqual(block.header.prevHash, prev.hash)) fail({ height: h, what: "previous-hash link broken" });
  if (block.header.timeMs <= prev.header.timeMs) fail({ height: h, what: "block time does not increase" });
  if (!bytesEqual(txRootOf(block.txs), block.header.txRoot)) {
    fail({ height: h, what: "transactions altered: their root differs from the header's txRoot" });
  }
  if (!bytesEqual(commitHash(block.lastCommit), block.header.lastCommitHash)) {
    fail({ height: h, what: "last commit altered: its hash differs from the header" });
  }
  // Under BFT the commit stored for h-1 and the one block h carries may hold different (equally
  // valid) sets of signatures; the carried one is checked like any commit, in checkCommit.
  if (prevCommit !== null && block.lastCommit === null) fail({ height: h, what: "last commit missing" });
}

function checkCommit(
  block: Block,
  commit: Commit,
  validators: ReturnType<typeof readValidators>,
  verifier: NodeSignatureVerifier,
): void {
  const h = block.header.height;
  if (commit.height !== h || !bytesEqual(commit.blockHash, block.hash))
    fail({ height: h, what: "commit is for another block" });
  const message = voteSigningBytes(block.header.chainId, voteTypePrecommit, h, commit.round, block.hash);
  let power = 0;
  const seen = new Set<string>();
  for (const s of commit.signatures) {
    const v = validators.find((x) => bytesEqual(x.id, s.validatorId));
    const id = toHex(s.validatorId);
    if (v === undefined || seen.has(id)) continue;
    if (!verifier.verify(v.publicKeySpki, message, s.signature))
      fail({ height: h, what: `commit signature of ${id} is invalid` });
    seen.add(id);
    power += v.power;
  }
  if (power * 3 <= totalPower(validators) * 2)
    fail({ height: h, what: "commit lacks > 2/3 of the voting power" });
}

function compareState(store: ChainStore, state: MemoryState): void {
  let storedKeys = 0;
  for (const row of store.allState()) {
    storedKeys++;
    const expected = state.get(row.key);
    if (expected === undefined)
      fail({ key: row.key, what: `state key ${row.key} was added to the store by hand` });
    if (!bytesEqual(expected, row.value)) {
      fail({
        key: row.key,
        height: storedHeight(store, row.key),
        what: `state value of ${row.key} was altered`,
      });
    }
  }
  if (storedKeys === state.map.size) return;
  for (const key of [...state.map.keys()].sort()) {
    if (store.getState(key) === undefined) fail({ key, what: `state key ${key} was deleted from the store` });
  }
}

function storedHeight(store: ChainStore, key: string): number | undefined {
  const row = store.db
    .prepare<[string], { height: number }>("SELECT height FROM state WHERE key = ?")
    .get(key);
  return row?.height;
}
