import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { sha256 } from "@noble/hashes/sha2.js";
import type { SmtBatchResult, SmtChange } from "../../src/core/smt.ts";
import {
  auditSmtStore,
  MemorySmtNodeStore,
  SparseMerkleTree,
  smtNodeKeyFromHex,
  smtSha256,
} from "../../src/core/smt.ts";
import type { SmtProof } from "../../src/core/smt-proof.ts";
import {
  decodeProof,
  encodeProof,
  proofFromJson,
  proofToJson,
  smtLeafHash,
  verifyProof,
  verifyProofHashes,
} from "../../src/core/smt-proof.ts";
import { prng } from "../helpers/prng.ts";

const text = (s: string): Uint8Array => new TextEncoder().encode(s);
const hex = (b: Uint8Array): string => Buffer.from(b).toString("hex");
const zero32 = new Uint8Array(32);

// ---- Reference: the spec read literally, over a plain map of keyHash -> valueHash -------------

interface RefLeaf {
  keyHash: Uint8Array;
  valueHash: Uint8Array;
}

const bit = (h: Uint8Array, i: number): number => (h[i >> 3]! >> (7 - (i & 7))) & 1;

function tagged(tag: number, a: Uint8Array, b: Uint8Array): Uint8Array {
  const input = new Uint8Array(65);
  input[0] = tag;
  input.set(a, 1);
  input.set(b, 33);
  return sha256(input);
}

function refSubtree(leaves: RefLeaf[], depth: number): Uint8Array {
  if (leaves.length === 0) return zero32;
  if (leaves.length === 1) return tagged(0, leaves[0]!.keyHash, leaves[0]!.valueHash);
  const left = leaves.filter((l) => bit(l.keyHash, depth) === 0);
  const right = leaves.filter((l) => bit(l.keyHash, depth) === 1);
  return tagged(1, refSubtree(left, depth + 1), refSubtree(right, depth + 1));
}

class Reference {
  readonly leaves = new Map<string, RefLeaf>();

  apply(changes: readonly SmtChange[]): void {
    for (const { key, value } of changes) {
      const keyHash = sha256(key);
      if (value === null) this.leaves.delete(hex(keyHash));
      else this.leaves.set(hex(keyHash), { keyHash, valueHash: sha256(value) });
    }
  }

  root(): Uint8Array {
    return refSubtree([...this.leaves.values()], 0);
  }

  proof(key: Uint8Array): SmtProof {
    const keyHash = sha256(key);
    let subset = [...this.leaves.values()];
    const siblings: (Uint8Array | null)[] = [];
    for (let depth = 0; subset.length > 1; depth++) {
      const mine = subset.filter((l) => bit(l.keyHash, depth) === bit(keyHash, depth));
      const other = subset.filter((l) => bit(l.keyHash, depth) !== bit(keyHash, depth));
      siblings.push(other.length === 0 ? null : refSubtree(other, depth + 1));
      subset = mine;
    }
    if (subset.length === 0) return { siblings, terminal: { kind: "empty" } };
    const leaf = subset[0]!;
    if (hex(leaf.keyHash) === hex(keyHash)) return { siblings, terminal: { kind: "inclusion" } };
    return { siblings, terminal: { kind: "leaf", keyHash: leaf.keyHash, valueHash: leaf.valueHash } };
  }
}

// ---- Helpers ----------------------------------------------------------------------------------

function commitBatch(
  tree: SparseMerkleTree,
  store: MemorySmtNodeStore,
  changes: SmtChange[],
): SmtBatchResult {
  const batch = tree.applyBatch(changes);
  store.write(batch.nodeWrites);
  tree.commit(batch);
  return batch;
}

function freshTree(options = {}): { tree: SparseMerkleTree; store: MemorySmtNodeStore } {
  const store = new MemorySmtNodeStore();
  return { tree: new SparseMerkleTree(store, options), store };
}

const put = (key: string, value: string): SmtChange => ({ key: text(key), value: text(value) });
const del = (key: string): SmtChange => ({ key: text(key), value: null });

function checkProof(tree: SparseMerkleTree, key: Uint8Array, value: Uint8Array | null): Uint8Array {
  const { proof, valueHash } = tree.getProof(key);
  assert.deepEqual(valueHash, value === null ? null : sha256(value));
  const bytes = encodeProof(proof);
  assert.equal(verifyProof(tree.root(), key, value, bytes), true, "bytes proof verifies");
  assert.equal(verifyProof(tree.root(), key, value, proof), true, "object proof verifies");
  assert.deepEqual(encodeProof(decodeProof(bytes)), bytes, "bytes round-trip");
  const json = JSON.parse(JSON.stringify(proofToJson(proof)));
  assert.deepEqual(encodeProof(proofFromJson(json)), bytes, "JSON round-trip");
  return bytes;
}

/** Keys "k<i>" whose hashes share at least `bits` leading bits (birthday search, deterministic). */
function keysSharingPrefix(bits: number): [string, string] {
  const seen = new Map<number, string>();
  for (let i = 0; ; i++) {
    const key = `k${i}`;
    const h = sha256(text(key));
    const prefix = ((h[0]! << 24) | (h[1]! << 16) | (h[2]! << 8) | h[3]!) >>> (32 - bits);
    const other = seen.get(prefix);
    if (other !== undefined) return [other, key];
    seen.set(prefix, key);
  }
}

// ---- Tests ------------------------------------------------------------------------------------

describe("sparse Merkle tree", () => {
  it("empty tree: zero root, empty-slot proofs, nothing stored", () => {
    const { tree, store } = freshTree();
    assert.deepEqual(tree.root(), zero32);
    const { proof, valueHash } = tree.getProof(text("x"));
    assert.equal(valueHash, null);
    assert.deepEqual(proof, { siblings: [], terminal: { kind: "empty" } });
    checkProof(tree, text("x"), null);
    assert.equal(verifyProof(tree.root(), text("x"), text("v"), proof), false);
    const noop = commitBatch(tree, store, [del("x")]);
    assert.equal(noop.nodeWrites.size, 0, "deleting a missing key writes nothing");
    assert.deepEqual(auditSmtStore(store), { root: zero32, nodeCount: 0, leafCount: 0 });
  });

  it("one key: the root is the leaf hash", () => {
    const { tree, store } = freshTree();
    const batch = commitBatch(tree, store, [put("k", "v")]);
    assert.deepEqual(tree.root(), smtLeafHash(sha256(text("k")), sha256(text("v"))));
    assert.equal(batch.nodeWrites.size, 1);
    assert.equal(checkProof(tree, text("k"), text("v")).length, 4, "no siblings, no payload");
    const absent = tree.getProof(text("other")).proof;
    assert.equal(absent.terminal.kind, "leaf");
    checkProof(tree, text("other"), null);
    assert.deepEqual(tree.getValueHash(text("k")), sha256(text("v")));
    assert.equal(tree.getValueHash(text("other")), null);
  });

  it("fixed vector: a=1, b=2, c=3 (the hashing must never change silently)", () => {
    const { tree, store } = freshTree();
    commitBatch(tree, store, [put("a", "1"), put("b", "2"), put("c", "3")]);
    // Computed once and cross-checked with an independent Python script of the spec; never edit.
    const expected = "8e2a164a410203f51300d7c6645b7a37f549768457be109acc126c63573a9e0a";
    assert.equal(hex(tree.root()), expected);
    const reference = new Reference();
    reference.apply([put("a", "1"), put("b", "2"), put("c", "3")]);
    assert.equal(hex(reference.root()), expected);
    // The proof bytes quoted in docs/spec/state-tree.md, so the format cannot drift from the spec.
    assert.equal(
      hex(encodeProof(tree.getProof(text("a")).proof)),
      "010000018068b9d91d8dd078a757107b3148b7ca18ee66a9c9c8b843e0da351ad44c2a45ce",
    );
    assert.equal(
      hex(encodeProof(tree.getProof(text("d")).proof)),
      "01010003a0565388d4bc00257133f799d9366ac97f6e949c18acc53d17457f8859ba0f08d3" +
        "44ebb3d0f7604913f94789f54965210118cb621490e4279a2f512ea8ecf280a4",
    );
  });

  it("two keys sharing a 24-bit prefix: a chain of nodes, then a delete collapses it", () => {
    const [a, b] = keysSharingPrefix(24);
    const { tree, store } = freshTree();
    commitBatch(tree, store, [put(a, "A")]);
    const oneKeyRoot = tree.root();
    const oneKeyNodes = new Map(store.nodes);
    const batch = commitBatch(tree, store, [put(b, "B")]);
    const reference = new Reference();
    reference.apply([put(a, "A"), put(b, "B")]);
    assert.deepEqual(tree.root(), reference.root());
    assert.ok(batch.nodeWrites.size >= 7, "root plus one node per shared nibble");
    const { proof } = tree.getProof(text(a));
    assert.ok(proof.siblings.length > 24);
    assert.ok(
      proof.siblings.slice(0, 24).every((s) => s === null),
      "the shared prefix has empty siblings",
    );
    checkProof(tree, text(a), text("A"));
    checkProof(tree, text(b), text("B"));
    assert.deepEqual(encodeProof(proof), encodeProof(reference.proof(text(a))));
    commitBatch(tree, store, [del(b)]);
    assert.deepEqual(tree.root(), oneKeyRoot);
    assert.deepEqual(store.nodes, oneKeyNodes, "the chain is gone from the store");
  });

  it("deletes collapse back to exactly the tree that never had those keys", () => {
    const random = prng(7);
    const base = Array.from({ length: 300 }, (_, i) => put(`base${i}`, `v${i}`));
    const extra = Array.from({ length: 300 }, (_, i) => put(`extra${i}`, `w${i}`));
    const { tree, store } = freshTree();
    commitBatch(tree, store, base);
    const baseRoot = tree.root();
    const baseNodes = new Map(store.nodes);
    commitBatch(tree, store, extra);
    assert.notDeepEqual(tree.root(), baseRoot);
    const deletes = extra.map((c) => ({ key: c.key, value: null }));
    while (deletes.length > 0) commitBatch(tree, store, deletes.splice(0, 1 + Math.floor(random() * 40)));
    assert.deepEqual(tree.root(), baseRoot);
    assert.deepEqual(store.nodes, baseNodes);
    const all = base.map((c) => ({ key: c.key, value: null }));
    commitBatch(tree, store, all);
    assert.deepEqual(tree.root(), zero32);
    assert.equal(store.nodes.size, 0);
  });

  it("inclusion and non-inclusion proofs verify and match the reference byte for byte", () => {
    const changes = Array.from({ length: 300 }, (_, i) => put(`key${i}`, `value${i}`));
    const { tree, store } = freshTree();
    commitBatch(tree, store, changes);
    const reference = new Reference();
    reference.apply(changes);
    const kinds = new Set<string>();
    for (let i = 0; i < 300; i += 7) {
      const bytes = checkProof(tree, text(`key${i}`), text(`value${i}`));
      assert.deepEqual(bytes, encodeProof(reference.proof(text(`key${i}`))));
    }
    for (let i = 0; i < 150; i++) {
      const key = text(`absent${i}`);
      const bytes = checkProof(tree, key, null);
      assert.deepEqual(bytes, encodeProof(reference.proof(key)));
      kinds.add(decodeProof(bytes).terminal.kind);
    }
    assert.deepEqual([...kinds].sort(), ["empty", "leaf"], "both kinds of non-inclusion occur");
  });

  it("tampered proofs fail and never throw", () => {
    const changes = Array.from({ length: 200 }, (_, i) => put(`key${i}`, `value${i}`));
    const { tree, store } = freshTree();
    commitBatch(tree, store, changes);
    const root = tree.root();
    const cases: [Uint8Array, Uint8Array | null][] = [
      [text("key5"), text("value5")],
      [text("nope"), null],
    ];
    for (const [key, value] of cases) {
      const bytes = encodeProof(tree.getProof(key).proof);
      assert.equal(verifyProof(root, key, value, bytes), true);
      for (let i = 0; i < bytes.length; i++) {
        for (const mask of [0x01, 0x80]) {
          const flipped = bytes.slice();
          flipped[i]! ^= mask;
          assert.equal(verifyProof(root, key, value, flipped), false, `flip byte ${i}`);
        }
      }
      for (let n = 0; n < bytes.length; n++)
        assert.equal(verifyProof(root, key, value, bytes.subarray(0, n)), false);
      assert.equal(verifyProof(root, key, value, Uint8Array.from([...bytes, 0])), false, "extra byte");
      const wrongRoot = root.slice();
      wrongRoot[31]! ^= 1;
      assert.equal(verifyProof(wrongRoot, key, value, bytes), false, "wrong root");
      assert.equal(verifyProof(root, text("key6"), value, bytes), false, "another key");
    }
    const inclusion = encodeProof(tree.getProof(text("key5")).proof);
    assert.equal(verifyProof(root, text("key5"), text("value6"), inclusion), false, "wrong value");
    assert.equal(verifyProof(root, text("key5"), null, inclusion), false, "inclusion is no absence");
    const absence = encodeProof(tree.getProof(text("nope")).proof);
    assert.equal(verifyProof(root, text("nope"), text("x"), absence), false, "absence is no inclusion");
    const random = prng(3);
    for (let i = 0; i < 500; i++) {
      const junk = Uint8Array.from({ length: Math.floor(random() * 200) }, () => Math.floor(random() * 256));
      assert.equal(verifyProof(root, text("key5"), text("value5"), junk), false);
    }
    const garbage = [null, undefined, 5, "x", {}, { siblings: "x" }, { siblings: [], terminal: null }];
    for (const g of garbage)
      assert.equal(verifyProof(root, text("k"), null, g as unknown as SmtProof), false);
    assert.equal(verifyProofHashes(root.subarray(1), sha256(text("key5")), null, absence), false);
  });

  it("an absence proof cannot name the key itself or a leaf off the key's path", () => {
    const { tree, store } = freshTree();
    commitBatch(tree, store, [put("a", "1")]);
    const root = tree.root();
    const self = {
      siblings: [],
      terminal: { kind: "leaf", keyHash: sha256(text("a")), valueHash: sha256(text("1")) },
    };
    assert.equal(verifyProof(root, text("a"), null, self as SmtProof), false);
    // A root forged so that the hash chain works, with the leaf on the wrong side of y's first bit:
    // only the verifier's path rule rejects it.
    const y = text("y");
    const yHash = sha256(y);
    let x = 0;
    while (bit(sha256(text(`x${x}`)), 0) === bit(yHash, 0)) x++;
    const xHash = sha256(text(`x${x}`));
    const sibling = new Uint8Array(32).fill(5);
    const leaf = smtLeafHash(xHash, sha256(text("1")));
    const forgedRoot = bit(yHash, 0) === 0 ? tagged(1, leaf, sibling) : tagged(1, sibling, leaf);
    const offPath: SmtProof = {
      siblings: [sibling],
      terminal: { kind: "leaf", keyHash: xHash, valueHash: sha256(text("1")) },
    };
    assert.equal(verifyProof(forgedRoot, y, null, offPath), false);
  });

  it("decoding is bounded, exact and canonical", () => {
    assert.throws(
      () => decodeProof(Uint8Array.from([1, 0, 1, 1])),
      { code: "PROOF_MALFORMED" },
      "257 siblings",
    );
    assert.throws(() => decodeProof(Uint8Array.from([2, 0, 0, 0])), { code: "PROOF_MALFORMED" }, "version");
    assert.throws(() => decodeProof(Uint8Array.from([1, 3, 0, 0])), { code: "PROOF_MALFORMED" }, "kind");
    assert.throws(
      () => decodeProof(Uint8Array.from([1, 1, 0, 1, 0])),
      { code: "PROOF_MALFORMED" },
      "last empty",
    );
    const padded = Uint8Array.from([1, 1, 0, 1, 0xc0, ...new Array(64).fill(7)]);
    assert.throws(() => decodeProof(padded), { code: "PROOF_MALFORMED" }, "padding bit set");
    const zeroSibling = Uint8Array.from([1, 1, 0, 1, 0x80, ...zero32]);
    assert.throws(() => decodeProof(zeroSibling), { code: "PROOF_MALFORMED" }, "present but empty");
    const siblings = Array.from({ length: 256 }, () => new Uint8Array(32).fill(9));
    const longest = encodeProof({ siblings, terminal: { kind: "leaf", keyHash: zero32, valueHash: zero32 } });
    assert.equal(longest.length, 4 + 32 + 256 * 32 + 64);
    assert.deepEqual(encodeProof(decodeProof(longest)), longest);
    const json = proofToJson({ siblings: [siblings[0]!], terminal: { kind: "empty" } });
    assert.throws(() => proofFromJson({ ...json, extra: 1 }), { code: "PROOF_MALFORMED" });
    assert.throws(() => proofFromJson({ ...json, siblings: ["AB".repeat(32)] }), { code: "PROOF_MALFORMED" });
    assert.throws(() => proofFromJson({ ...json, version: 2 }), { code: "PROOF_MALFORMED" });
  });

  it("batches: last write wins, no-ops write nothing, nothing changes before commit", () => {
    const { tree, store } = freshTree();
    const batch = tree.applyBatch([put("a", "1"), put("a", "2"), del("b"), put("c", "3"), del("c")]);
    assert.deepEqual(tree.root(), zero32, "applyBatch alone changes nothing");
    assert.equal(store.nodes.size, 0);
    store.write(batch.nodeWrites);
    tree.commit(batch);
    const reference = new Reference();
    reference.apply([put("a", "2")]);
    assert.deepEqual(tree.root(), reference.root());
    assert.equal(commitBatch(tree, store, [put("a", "2")]).nodeWrites.size, 0, "same value rewrites nothing");
    assert.equal(commitBatch(tree, store, [del("zz")]).nodeWrites.size, 0);
    assert.equal(commitBatch(tree, store, []).nodeWrites.size, 0);
  });

  it("commit refuses a stale batch and one whose writes were not stored", () => {
    const { tree, store } = freshTree();
    const first = tree.applyBatch([put("a", "1")]);
    const second = tree.applyBatch([put("b", "2")]);
    assert.throws(() => tree.commit(first), { code: "INVARIANT_BROKEN" }, "writes not stored");
    store.write(first.nodeWrites);
    tree.commit(first);
    assert.throws(() => tree.commit(second), { code: "CONFLICT" });
    assert.throws(() => tree.commit(first), { code: "INVARIANT_BROKEN" }, "twice");
  });

  it("a corrupt or missing stored node throws STORAGE_CORRUPT", () => {
    const changes = Array.from({ length: 2000 }, (_, i) => put(`key${i}`, `value${i}`));
    const { store } = freshTree();
    const tree = new SparseMerkleTree(store);
    commitBatch(tree, store, changes);
    const victimKey = [...store.nodes.keys()].find((k) => k.startsWith("02"))!;
    const original = store.nodes.get(victimKey)!;
    const attempts: [string, Uint8Array | undefined][] = [
      ["flipped hash byte", original.map((b, i) => (i === original.length - 1 ? b ^ 1 : b))],
      ["bad version", original.map((b, i) => (i === 0 ? 9 : b))],
      ["truncated", original.subarray(0, original.length - 1)],
      ["missing", undefined],
    ];
    for (const [what, bytes] of attempts) {
      if (bytes === undefined) store.nodes.delete(victimKey);
      else store.nodes.set(victimKey, bytes);
      const cold = new SparseMerkleTree(store);
      const touch = (): void => {
        for (let i = 0; i < 2000; i++) cold.getProof(text(`key${i}`));
      };
      assert.throws(touch, { code: "STORAGE_CORRUPT" }, what);
      assert.throws(() => auditSmtStore(store), { code: "STORAGE_CORRUPT" }, what);
    }
    store.nodes.set(victimKey, original);
    store.nodes.set(
      "00",
      store.nodes.get("00")!.map((b, i) => (i === 2 ? b ^ 0xff : b)),
    );
    assert.throws(() => new SparseMerkleTree(store), { code: "STORAGE_CORRUPT" }, "root layout");
    assert.ok(smtNodeKeyFromHex(victimKey).length === 2);
  });

  it("a non-root node holding one leaf is refused even though its hash fits", () => {
    // Same root, non-canonical storage: the leaf of "a" pushed down into a node of its own. The root
    // is unchanged when the other key sits in the neighbouring slot, so only the shape rule catches it.
    const a = sha256(text("a"));
    let other = 0;
    while (sha256(text(`k${other}`))[0]! >> 4 !== (a[0]! >> 4) + 1) other++;
    const b = sha256(text(`k${other}`));
    const { tree, store } = freshTree();
    commitBatch(tree, store, [put("a", "1"), put(`k${other}`, "2")]);
    const slotA = a[0]! >> 4;
    const mask = (bits: number): number[] => [bits >> 8, bits & 0xff];
    const leafA = smtLeafHash(a, sha256(text("1")));
    const root = [1, ...mask(3 << slotA), ...mask(2 << slotA), ...leafA, ...b, ...sha256(text("2"))];
    const child = [1, ...mask(1 << (a[0]! & 15)), ...mask(1 << (a[0]! & 15)), ...a, ...sha256(text("1"))];
    store.nodes.set("00", Uint8Array.from(root));
    store.nodes.set(`01${slotA.toString(16)}0`, Uint8Array.from(child));
    const reopened = new SparseMerkleTree(store);
    assert.deepEqual(reopened.root(), tree.root(), "the forged layout hashes to the same root");
    assert.throws(() => reopened.getProof(text("a")), { code: "STORAGE_CORRUPT" });
  });

  it("random operations agree with the reference (seeded property test)", () => {
    const seed = 20240601;
    const random = prng(seed);
    const small = freshTree({ nodeCacheEntriesMax: 4 });
    const store = small.store;
    const big = new SparseMerkleTree(store);
    const reference = new Reference();
    const keyPool = 400;
    let operations = 0;
    for (let round = 0; operations < 6000; round++) {
      const size = 1 + Math.floor(random() * (random() < 0.1 ? 120 : 20));
      const changes: SmtChange[] = [];
      for (let i = 0; i < size; i++) {
        const key = `p${Math.floor(random() * keyPool)}`;
        changes.push(random() < 0.35 ? del(key) : put(key, `v${Math.floor(random() * 5)}`));
      }
      operations += size;
      const batch = small.tree.applyBatch(changes);
      const same = big.applyBatch(changes);
      assert.deepEqual(same.root, batch.root, `seed ${seed} round ${round}: caches agree`);
      assert.deepEqual(same.nodeWrites, batch.nodeWrites);
      store.write(batch.nodeWrites);
      small.tree.commit(batch);
      big.commit(same);
      reference.apply(changes);
      assert.deepEqual(batch.root, reference.root(), `seed ${seed} round ${round}: root`);
      assert.ok(small.tree.cachedNodeEntries <= 4, "the node cache stays within its bound");
      if (round % 25 === 0) {
        const audit = auditSmtStore(store);
        assert.equal(audit.nodeCount, store.nodes.size, "no orphan nodes");
        assert.equal(audit.leafCount, reference.leaves.size);
        assert.deepEqual(new SparseMerkleTree(store).root(), batch.root, "reopened from the store");
        for (let i = 0; i < 10; i++) {
          const key = text(`p${Math.floor(random() * keyPool)}`);
          const got = big.getProof(key);
          assert.deepEqual(encodeProof(got.proof), encodeProof(reference.proof(key)));
          const expected = reference.leaves.get(hex(sha256(key)));
          assert.equal(
            verifyProofHashes(big.root(), sha256(key), expected?.valueHash ?? null, got.proof),
            true,
          );
        }
      }
    }
  });

  it("the same key set gives the same root and stored nodes regardless of order and batching", () => {
    const entries = Array.from({ length: 1500 }, (_, i) => put(`order${i}`, `value${i}`));
    const { tree: once, store: onceStore } = freshTree();
    commitBatch(once, onceStore, entries);
    for (const seed of [1, 2, 3]) {
      const random = prng(seed);
      const shuffled = entries.slice();
      for (let i = shuffled.length - 1; i > 0; i--) {
        const j = Math.floor(random() * (i + 1));
        [shuffled[i], shuffled[j]] = [shuffled[j]!, shuffled[i]!];
      }
      const { tree, store } = freshTree({ nodeCacheEntriesMax: 16 });
      while (shuffled.length > 0)
        commitBatch(tree, store, shuffled.splice(0, 1 + Math.floor(random() * 100)));
      assert.deepEqual(tree.root(), once.root(), `seed ${seed}`);
      assert.deepEqual(store.nodes, onceStore.nodes, `seed ${seed}`);
    }
  });

  it("the hot path's SHA-256 agrees with @noble/hashes for every input length", () => {
    const random = prng(11);
    for (let length = 0; length <= 300; length++) {
      const input = Uint8Array.from({ length }, () => Math.floor(random() * 256));
      assert.equal(hex(smtSha256(input)), hex(sha256(input)), `length ${length}`);
    }
    const all = Uint8Array.from({ length: 256 }, (_, i) => i); // every byte value, in and out
    assert.equal(hex(smtSha256(all)), hex(sha256(all)));
  });

  it("keys whose hashes share 32 leading bits sort and hash like the reference", () => {
    // Ties on the leading 32 bits take the sort's slow path (whole key hash, then input order).
    const [a, b] = keysSharingPrefix(32);
    const others = Array.from({ length: 50 }, (_, i) => put(`other${i}`, `o${i}`));
    const changes = [put(b, "B1"), ...others, put(a, "A"), del(b), put(b, "B2"), put(a, "A2")];
    const { tree, store } = freshTree();
    commitBatch(tree, store, changes);
    const reference = new Reference();
    reference.apply(changes);
    assert.deepEqual(tree.root(), reference.root());
    assert.deepEqual(tree.getValueHash(text(a)), sha256(text("A2")));
    assert.deepEqual(tree.getValueHash(text(b)), sha256(text("B2")));
    assert.deepEqual(encodeProof(tree.getProof(text(a)).proof), encodeProof(reference.proof(text(a))));
  });

  it("a batch's node writes keep their bytes through later batches and cache churn", () => {
    const { tree, store } = freshTree({ nodeCacheEntriesMax: 8 });
    const first = commitBatch(
      tree,
      store,
      Array.from({ length: 500 }, (_, i) => put(`w${i}`, "1")),
    );
    const copies = new Map([...first.nodeWrites].map(([k, v]) => [k, v === null ? null : v.slice()]));
    for (let round = 0; round < 20; round++) {
      commitBatch(
        tree,
        store,
        Array.from({ length: 100 }, (_, i) => put(`w${(i * 7 + round) % 600}`, `${round}`)),
      );
      for (let i = 0; i < 50; i++) tree.getProof(text(`w${i * 11}`));
    }
    assert.deepEqual(first.nodeWrites, copies, "written bytes never change afterwards");
  });

  it("cache budgets from 0 up agree with the reference through reads, abandoned batches and reloads", () => {
    for (const budget of [0, 1, 3, 17, 100_000]) {
      const seed = 4242 + budget;
      const random = prng(seed);
      const { tree, store } = freshTree({ nodeCacheEntriesMax: budget });
      const reference = new Reference();
      const keyPool = 300;
      for (let round = 0; round < 120; round++) {
        const size = 1 + Math.floor(random() * (random() < 0.1 ? 150 : 12));
        const changes: SmtChange[] = [];
        for (let i = 0; i < size; i++) {
          const key = `c${Math.floor(random() * keyPool)}`;
          changes.push(random() < 0.3 ? del(key) : put(key, `v${Math.floor(random() * 4)}`));
        }
        const batch = tree.applyBatch(changes);
        if (random() < 0.1) continue; // abandoned: never stored nor committed
        // Reads between applyBatch and commit see the committed tree and may churn the cache.
        for (let i = 0; i < 5; i++) {
          const key = text(`c${Math.floor(random() * keyPool)}`);
          const got = tree.getProof(key);
          assert.deepEqual(
            encodeProof(got.proof),
            encodeProof(reference.proof(key)),
            `seed ${seed} round ${round}`,
          );
        }
        store.write(batch.nodeWrites);
        tree.commit(batch);
        reference.apply(changes);
        assert.deepEqual(tree.root(), reference.root(), `seed ${seed} round ${round}: root`);
        assert.ok(tree.cachedNodeEntries <= budget, "the node cache stays within its bound");
        if (random() < 0.05) tree.reload();
        if (round % 20 === 0) {
          assert.equal(auditSmtStore(store).leafCount, reference.leaves.size);
          for (let i = 0; i < 20; i++) {
            const key = text(`c${Math.floor(random() * keyPool)}`);
            const expected = reference.leaves.get(hex(sha256(key)));
            assert.deepEqual(tree.getValueHash(key), expected?.valueHash ?? null);
          }
        }
      }
    }
  });

  it("one changed key rewrites only the stored nodes on its path", () => {
    const entries = Array.from({ length: 20_000 }, (_, i) => put(`n${i}`, "v"));
    const { tree, store } = freshTree();
    for (let i = 0; i < entries.length; i += 5000) commitBatch(tree, store, entries.slice(i, i + 5000));
    const batch = commitBatch(tree, store, [put("n123", "changed")]);
    const depth = tree.getProof(text("n123")).proof.siblings.length;
    assert.ok(batch.nodeWrites.size <= Math.ceil(depth / 4) + 1, `${batch.nodeWrites.size} writes`);
    assert.ok(batch.nodeWrites.size <= 5);
  });
});
