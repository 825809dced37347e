/**
 * Blocks for chain-store tests: commits the next height with the given state writes and the tree
 * nodes they make, as the Ledger does (a made-up hash and block bytes; no transactions).
 */
import { utf8 } from "../../src/core/encoding.ts";
import type { SparseMerkleTree } from "../../src/core/smt.ts";
import type { ChainStore } from "../../src/storage/chain-store.ts";

/** Commits block latestHeight + 1 and its tree batch; returns its state root. */
export function commitWrites(
  store: ChainStore,
  tree: SparseMerkleTree,
  writes: ReadonlyMap<string, Uint8Array | null>,
): Uint8Array {
  const height = store.latestHeight() + 1;
  const batch = tree.applyBatch([...writes].map(([key, value]) => ({ key: utf8(key), value })));
  store.commitBlock({
    height,
    hash: Uint8Array.from({ length: 32 }, (_, i) => (height * 31 + i) & 0xff),
    timeMs: height,
    blockBytes: new Uint8Array([height & 0xff]),
    txCount: 0,
    commitBytes: null,
    txs: [],
    stateWrites: writes,
    treeWrites: batch.nodeWrites,
    stateRoot: batch.root,
  });
  tree.commit(batch);
  return batch.root;
}
