/**
 * The chain store writes the state tree's nodes in flushes (src/storage/chain-store.ts): the tree
 * must read the same in between, and come back the same after a crash (from the state rows' heights
 * and the recorded deletions), a clean stop or an upgrade from a store that wrote its tree with
 * every block.
 */
import assert from "node:assert/strict";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { afterEach, beforeEach, describe, it } from "node:test";
import { utf8 } from "../../src/core/encoding.ts";
import {
  auditSmtStore,
  SparseMerkleTree,
  smtDefaults,
  smtNodeKeyToHex,
  smtSha256,
} from "../../src/core/smt.ts";
import { replayTreeChanges } from "../../src/node/ledger.ts";
import { ChainStore, type ChainStoreOptions } from "../../src/storage/chain-store.ts";
import { commitWrites } from "../helpers/chain-blocks.ts";

let dir: string;
beforeEach(() => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), "citychain-tree-flush-"));
});
afterEach(() => fs.rmSync(dir, { recursive: true, force: true }));

/** A store and its tree, committing blocks as the Ledger does; records every block's state root. */
function open(options: ChainStoreOptions = {}) {
  const store = ChainStore.open(dir, options);
  const tree = new SparseMerkleTree({ get: (k) => store.treeNode(smtNodeKeyToHex(k)) });
  const roots = new Map<number, Uint8Array>();
  const commit = (writes: ReadonlyMap<string, Uint8Array | null>) => {
    const height = store.latestHeight() + 1;
    const root = commitWrites(store, tree, writes);
    roots.set(height, root);
    return root;
  };
  return { store, tree, roots, commit };
}

/** Writes of block `h`: new keys, a rewrite of an earlier key, and from block 3 on a deletion. */
function writesOf(h: number): Map<string, Uint8Array | null> {
  const writes = new Map<string, Uint8Array | null>();
  for (let i = 0; i < 20; i++) writes.set(`kv/k/${h}/${i}`, utf8(`v${h}.${i}`));
  writes.set("kv/shared", utf8(`shared at ${h}`));
  if (h >= 3) writes.set(`kv/k/${h - 2}/0`, null);
  return writes;
}

/** The tree's value hash for a key (null: absent), and the hash a value should have. */
const valueHashIn = (tree: SparseMerkleTree, key: string) => tree.getProof(utf8(key)).valueHash;
const hashOf = (value: string) => smtSha256(utf8(value));

/** The tree as tree_nodes alone holds it (another connection: nothing held in memory). */
function storedTableRoot(): Uint8Array {
  const reader = ChainStore.open(dir, { readonly: true });
  try {
    return auditSmtStore({ get: (k) => reader.treeNode(smtNodeKeyToHex(k)) }).root;
  } finally {
    reader.db.close();
  }
}

/**
 * Commits the next block with a change of kv/shared, made to fail inside its SQLite transaction:
 * the same transaction id twice breaks the txs table's primary key.
 */
function commitFailing(s: ReturnType<typeof open>): void {
  const height = s.store.latestHeight() + 1;
  const batch = s.tree.applyBatch([{ key: utf8("kv/shared"), value: utf8("never stored") }]);
  const tx = { id: "cd".repeat(32), index: 0, code: "OK", message: "", data: new Uint8Array(0) };
  assert.throws(() =>
    s.store.commitBlock({
      height,
      hash: new Uint8Array(32).fill(height),
      timeMs: height,
      blockBytes: new Uint8Array([height]),
      txCount: 2,
      commitBytes: null,
      txs: [tx, { ...tx, index: 1 }],
      stateWrites: new Map([["kv/shared", utf8("never stored")]]),
      treeWrites: batch.nodeWrites,
      stateRoot: batch.root,
    }),
  );
}

/** The store's changes since its tree's flush, as a list in its order. */
function changesOf(store: ChainStore): Array<{ key: string; value: Uint8Array | null }> {
  return [...store.stateChangesAfterTree(smtDefaults.batchChangesMax)].map(([key, value]) => ({
    key,
    value,
  }));
}

/** Simulates kill -9: the database handle goes away without the store's close (no flush). */
function crash(store: ChainStore): void {
  store.db.close();
}

describe("state tree flushes", () => {
  it("holds nodes between flushes, reads the latest through them, and writes them every N blocks", () => {
    const { store, tree, roots, commit } = open({ treeFlushBlocks: 4 });
    for (let h = 0; h <= 3; h++) commit(writesOf(h));
    assert.equal(store.treeHeight(), 0, "genesis is flushed at once, blocks 1-3 are not");
    const held = store.treeFlushStatus();
    assert.equal(held.treeHeight, 0);
    assert.ok(held.heldTreeNodes > 0 && held.heldTreeBytes > held.heldTreeNodes * 30, JSON.stringify(held));
    const changes = changesOf(store);
    assert.deepEqual(
      changes.filter((c) => c.value === null).map((c) => c.key),
      ["kv/k/1/0"],
    );
    // Blocks 1-3 wrote 20 keys each and kv/shared; kv/k/1/0 is gone again.
    assert.equal(changes.filter((c) => c.value !== null).length, 60);
    // Through the store (held nodes first) a fresh tree sees block 3; the table alone is block 0's.
    const fresh = new SparseMerkleTree({ get: (k) => store.treeNode(smtNodeKeyToHex(k)) });
    assert.deepEqual(fresh.root(), roots.get(3));
    assert.deepEqual(valueHashIn(fresh, "kv/shared"), hashOf("shared at 3"));
    assert.equal(valueHashIn(fresh, "kv/k/1/0"), null, "deleted at block 3");
    commit(writesOf(4));
    assert.equal(store.treeHeight(), 4);
    assert.deepEqual(store.treeFlushStatus(), { treeHeight: 4, heldTreeNodes: 0, heldTreeBytes: 0 });
    assert.deepEqual(changesOf(store), []);
    assert.equal(
      (store.db.prepare("SELECT count(*) AS n FROM state_deletions").get() as { n: number }).n,
      0,
      "forgotten at the flush",
    );
    assert.deepEqual(tree.root(), roots.get(4));
    store.close();
    assert.deepEqual(storedTableRoot(), roots.get(4));
  });

  it("after a crash between flushes, replays the journal to the last block's root and stores it", () => {
    let s = open({ treeFlushBlocks: 4 });
    for (let h = 0; h <= 6; h++) s.commit(writesOf(h));
    const roots = s.roots;
    assert.equal(s.store.treeHeight(), 4);
    crash(s.store);
    assert.deepEqual(storedTableRoot(), roots.get(4), "the table still holds block 4's tree");

    s = open({ treeFlushBlocks: 4 });
    assert.equal(s.store.latestHeight(), 6);
    assert.equal(s.store.treeHeight(), 4);
    const changes = changesOf(s.store);
    assert.deepEqual(
      changes.filter((c) => c.value === null).map((c) => c.key),
      ["kv/k/3/0", "kv/k/4/0"],
    );
    assert.equal(changes.filter((c) => c.value !== null).length, 41);
    replayTreeChanges(s.store, s.tree, (h) => roots.get(h));
    assert.equal(s.store.treeHeight(), 6);
    assert.deepEqual(changesOf(s.store), []);
    assert.deepEqual(s.tree.root(), roots.get(6));
    assert.deepEqual(valueHashIn(s.tree, "kv/k/6/19"), hashOf("v6.19"));
    assert.equal(valueHashIn(s.tree, "kv/k/4/0"), null, "deleted at block 6");
    // It goes on committing from there, and a replayed key has a proof.
    const root7 = s.commit(writesOf(7));
    assert.notEqual(s.tree.getProof(utf8("kv/k/5/3")).valueHash, null);
    crash(s.store);
    s = open({ treeFlushBlocks: 4 });
    replayTreeChanges(s.store, s.tree, (h) => (h === 7 ? root7 : roots.get(h)));
    assert.deepEqual(s.tree.root(), root7);
    s.store.close();
    assert.deepEqual(storedTableRoot(), root7);
  });

  it("a clean close flushes, so nothing is left to replay", () => {
    const s = open({ treeFlushBlocks: 100 });
    for (let h = 0; h <= 5; h++) s.commit(writesOf(h));
    assert.equal(s.store.treeHeight(), 0);
    s.store.close();
    const again = ChainStore.open(dir);
    assert.equal(again.treeHeight(), 5);
    assert.deepEqual(changesOf(again), []);
    again.close();
    assert.deepEqual(storedTableRoot(), s.roots.get(5));
  });

  it("flushes on the heights of its phase, so nodes given different phases flush apart", () => {
    const s = open({ treeFlushBlocks: 4, treeFlushPhase: 2 });
    const heights: number[] = [];
    for (let h = 0; h <= 10; h++) {
      s.commit(writesOf(h));
      heights.push(s.store.treeHeight());
    }
    assert.deepEqual(heights, [0, 0, 2, 2, 2, 2, 6, 6, 6, 6, 10]);
    s.store.close();
    assert.throws(() => ChainStore.open(dir, { treeFlushBlocks: 4, treeFlushPhase: 4 }), /treeFlushPhase/);
  });

  it("counts a held node once however often later blocks rewrite it", () => {
    const s = open({ treeFlushBlocks: 1000 });
    s.commit(writesOf(0));
    const held: number[] = [];
    for (let h = 1; h <= 12; h++) {
      s.commit(new Map([["kv/shared", utf8(`shared at ${h}`)]]));
      held.push(s.store.treeFlushStatus().heldTreeBytes);
    }
    // One key rewritten: the same nodes on its path each block, so the held bytes stay put.
    assert.ok(held[0]! > 0);
    assert.deepEqual(new Set(held).size, 1, held.join(", "));
    s.store.close();
  });

  it("flushes early when the held nodes pass the byte limit", () => {
    const s = open({ treeFlushBlocks: 1000, treeFlushBytesMax: 8_000 });
    const heights: number[] = [];
    for (let h = 0; h <= 12; h++) {
      s.commit(writesOf(h));
      heights.push(s.store.treeHeight());
    }
    const flushes = new Set(heights).size;
    assert.ok(flushes > 2 && flushes < 13, `flushed at heights ${[...new Set(heights)].join(", ")}`);
    s.store.close();
  });

  it("a flush block whose write fails leaves the table, the height and the held nodes as they were", () => {
    const s = open({ treeFlushBlocks: 4 });
    for (let h = 0; h <= 3; h++) s.commit(writesOf(h));
    const held = s.store.treeFlushStatus();
    commitFailing(s);
    assert.deepEqual(s.store.treeFlushStatus(), held);
    crash(s.store);
    assert.deepEqual(storedTableRoot(), s.roots.get(0), "the table still holds block 0's tree");
    const again = open({ treeFlushBlocks: 4 });
    replayTreeChanges(again.store, again.tree, (h) => s.roots.get(h));
    assert.deepEqual(again.tree.root(), s.roots.get(3));
    again.store.close();
  });

  it("a block whose write fails leaves the held nodes as they were", () => {
    const s = open({ treeFlushBlocks: 100 });
    for (let h = 0; h <= 2; h++) s.commit(writesOf(h));
    const before = s.tree.root();
    commitFailing(s);
    assert.equal(s.store.latestHeight(), 2);
    const fresh = new SparseMerkleTree({ get: (k) => s.store.treeNode(smtNodeKeyToHex(k)) });
    assert.deepEqual(fresh.root(), before);
    assert.deepEqual(valueHashIn(fresh, "kv/shared"), hashOf("shared at 2"));
    const shared = changesOf(s.store).find((c) => c.key === "kv/shared");
    assert.deepEqual(new Uint8Array(shared!.value!), utf8("shared at 2"));
    s.store.close();
  });

  for (const [what, edit] of [
    ["a state row's height lowered", "UPDATE state SET height = 1 WHERE key = 'kv/shared'"],
    ["a recorded deletion removed", "DELETE FROM state_deletions WHERE key = 'kv/k/4/0'"],
  ] as const) {
    it(`refuses a replay whose result is not the last block's root (${what} by hand)`, () => {
      const s = open({ treeFlushBlocks: 4 });
      for (let h = 0; h <= 6; h++) s.commit(writesOf(h));
      assert.equal(s.store.db.prepare(edit).run().changes, 1);
      crash(s.store);
      const again = open({ treeFlushBlocks: 4 });
      assert.throws(
        () => replayTreeChanges(again.store, again.tree, (h) => s.roots.get(h)),
        (error: { code?: string; message: string }) =>
          error.code === "STORAGE_CORRUPT" && /state changes after block 4/.test(error.message),
      );
      again.store.close();
    });
  }

  it("refuses a replay of more changes than one tree batch takes with STORAGE_CORRUPT", () => {
    const s = open({ treeFlushBlocks: 4 });
    for (let h = 0; h <= 6; h++) s.commit(writesOf(h));
    crash(s.store);
    const again = open({ treeFlushBlocks: 4 });
    const small = new SparseMerkleTree(
      { get: (k) => again.store.treeNode(smtNodeKeyToHex(k)) },
      { batchChangesMax: 40 },
    );
    assert.equal(again.store.stateChangesAfterTree(smtDefaults.batchChangesMax).size, 43);
    assert.throws(
      () => replayTreeChanges(again.store, small, (h) => s.roots.get(h)),
      (error: { code?: string; message: string }) =>
        error.code === "STORAGE_CORRUPT" && /more than 40 keys changed after block 4/.test(error.message),
    );
    assert.equal(again.store.treeHeight(), 4, "nothing written");
    again.store.close();
  });

  it("upgrades a store that wrote its tree with every block (schema 2): its tree is its last block's", () => {
    const s = open({ treeFlushBlocks: 1 });
    for (let h = 0; h <= 3; h++) s.commit(writesOf(h));
    s.store.db.prepare("UPDATE meta SET value = ? WHERE key = 'schema'").run(Buffer.from("2"));
    s.store.db.prepare("DELETE FROM meta WHERE key = 'treeHeight'").run();
    s.store.db.exec("DROP TABLE state_deletions");
    s.store.close();
    const readonly = ChainStore.open(dir, { readonly: true });
    assert.equal(readonly.treeHeight(), 3, "read-only, a version-2 store's tree is at its last block");
    readonly.close();
    const upgraded = ChainStore.open(dir);
    assert.equal(upgraded.getMeta("schema")?.toString(), "3");
    assert.equal(upgraded.treeHeight(), 3);
    assert.deepEqual(changesOf(upgraded), []);
    upgraded.close();
  });

  it("refuses a tree height beyond the stored blocks", () => {
    const s = open();
    s.commit(writesOf(0));
    s.store.putMeta("treeHeight", utf8("9"));
    s.store.close();
    assert.throws(
      () => ChainStore.open(dir),
      (error: { code?: string }) => error.code === "STORAGE_CORRUPT",
    );
  });
});
