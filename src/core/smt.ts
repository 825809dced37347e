/**
 * The authenticated world-state tree: a binary sparse Merkle tree of depth 256 over SHA-256(key),
 * compacted so that a subtree holding one leaf is that leaf (as in Diem's Jellyfish Merkle Tree).
 * The exact rules, node layout and proof format are in docs/spec/state-tree.md; they are consensus.
 *
 * Storage groups four bit-levels into one 16-ary stored node, so a change in a tree of a million
 * keys rewrites about six stored nodes instead of about twenty binary ones. The tree never writes:
 * applyBatch returns the node writes, the caller stores them in the block's transaction, then calls
 * commit. Pure: no clock, no randomness, no I/O but the node store handed in.
 */
import * as nodeCrypto from "node:crypto";
import { bytesEqual } from "./encoding.ts";
import { assert, CodedError } from "./errors.ts";
import type { SmtProof, SmtProofTerminal } from "./smt-proof.ts";
import { smtHashBytes, smtInternalTag, smtLeafTag } from "./smt-proof.ts";

/** Reads stored nodes by key; synchronous because it is backed by better-sqlite3. */
export interface SmtNodeStore {
  get(nodeKey: Uint8Array): Uint8Array | undefined;
}

export interface SmtChange {
  readonly key: Uint8Array;
  /** null deletes the key; deleting an absent key is a no-op. */
  readonly value: Uint8Array | null;
}

export interface SmtBatchResult {
  /** The committed root this batch was computed against; commit refuses it on any other root. */
  readonly baseRoot: Uint8Array;
  readonly root: Uint8Array;
  /** Stored-node writes keyed by the node key's lower-case hex; null deletes the node. */
  readonly nodeWrites: Map<string, Uint8Array | null>;
}

export interface SmtProofResult {
  readonly keyHash: Uint8Array;
  /** The key's value hash, or null when the key is absent. */
  readonly valueHash: Uint8Array | null;
  readonly proof: SmtProof;
}

export interface SmtOptions {
  /** Decoded stored nodes kept in memory (least recently used dropped first); ~2 KiB each. */
  readonly nodeCacheEntriesMax?: number;
  /** Changes accepted by one applyBatch call, counted before duplicates are merged. */
  readonly batchChangesMax?: number;
}

export const smtDefaults = {
  nodeCacheEntriesMax: 65_536,
  batchChangesMax: 1_000_000,
} as const satisfies Required<SmtOptions>;

export const smtNodeFormatVersion = 1;
const nodeHeaderBytes = 5;
const slotsPerNode = 16;
const leafSlotBytes = 2 * smtHashBytes;
const childSlotBytes = smtHashBytes;
/** A key hash has 64 nibbles; a stored node's slots sit one nibble below it, so nodes stop at 63. */
const nodePathNibblesMax = 63;
export const smtNodeBytesMax = nodeHeaderBytes + slotsPerNode * leafSlotBytes;
/** Positions 1..31 of a node's 4-level binary subtree, heap order: 1 is its top, 16 + i is slot i. */
const positionsPerNode = 32;
const rootNodeKeyHex = "00";

/** SHA-256 on the hot path: node's one-shot hash where present (Node >= 20.12), else createHash. */
export const smtSha256: (data: Uint8Array) => Uint8Array =
  typeof nodeCrypto.hash === "function"
    ? (data) => nodeCrypto.hash("sha256", data, "buffer")
    : (data) => nodeCrypto.createHash("sha256").update(data).digest();

// Scratch inputs: every hash of the tree has the same 65-byte shape, so nothing is allocated for it.
const leafInput = new Uint8Array(1 + 2 * smtHashBytes);
leafInput[0] = smtLeafTag;
const internalInput = new Uint8Array(1 + 2 * smtHashBytes);
internalInput[0] = smtInternalTag;
const emptyHash = new Uint8Array(smtHashBytes);

/**
 * Copies `length` bytes. A plain loop: for 32 or 64 bytes it beats subarray + set, whose view
 * allocation dominated node building in profiles.
 */
function copyBytes(from: Uint8Array, fromOffset: number, to: Uint8Array, toOffset: number, length: number): void {
  for (let i = 0; i < length; i++) to[toOffset + i] = from[fromOffset + i]!;
}

/** Leaf hash of the 64 bytes keyHash || valueHash found at `offset` in `slotBytes`. */
function leafHashAt(slotBytes: Uint8Array, offset: number): Uint8Array {
  copyBytes(slotBytes, offset, leafInput, 1, leafSlotBytes);
  return smtSha256(leafInput);
}

function corrupt(message: string): never {
  throw new CodedError("STORAGE_CORRUPT", `state tree: ${message}`);
}

function hasBit(mask: number, bit: number): boolean {
  return ((mask >>> bit) & 1) === 1;
}

function bitCount16(mask: number): number {
  let count = 0;
  for (let m = mask; m !== 0; m &= m - 1) count++;
  return count;
}

function nibbleAt(keyHash: Uint8Array, index: number): number {
  const byte = keyHash[index >> 1]!;
  return (index & 1) === 0 ? byte >> 4 : byte & 0x0f;
}

function hexOf(bytes: Uint8Array): string {
  return Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).toString("hex");
}

const pathLengthHex = Array.from({ length: nodePathNibblesMax + 2 }, (_, i) =>
  i.toString(16).padStart(2, "0"),
);

/**
 * A stored node's key: its nibble count (1 byte), then its nibbles packed two per byte, high nibble
 * first, the last byte padded with a zero nibble. Built as hex straight from the key hash's hex.
 */
function nodeKeyHex(pathNibbles: number, keyHashHex: string): string {
  const path = keyHashHex.slice(0, pathNibbles);
  return pathLengthHex[pathNibbles] + path + ((pathNibbles & 1) === 1 ? "0" : "");
}

export function smtNodeKeyFromHex(hex: string): Uint8Array {
  return Buffer.from(hex, "hex");
}

export function smtNodeKeyToHex(nodeKey: Uint8Array): string {
  return hexOf(nodeKey);
}

/**
 * One stored node, decoded, with the hashes of its internal binary subtree kept beside it so that
 * proofs need no hashing and an update rehashes only the positions above the slots it changed.
 * Immutable once constructed: a change builds a new node from the old one.
 */
class StoredNode {
  readonly pathNibbles: number;
  /** The stored bytes (smtNodeFormatVersion layout); slot data is read from here. */
  readonly bytes: Uint8Array;
  readonly childMask: number;
  readonly leafMask: number;
  readonly offsets: Uint16Array;
  /** 32 bytes per position 0..31 (0 unused). */
  readonly hashes: Uint8Array;
  /** Bit p set when position p holds at least one leaf. */
  nonEmpty: number;
  /** Bit p set when position p holds exactly one leaf (its hash is then that leaf's hash). */
  singleLeaf: number;

  constructor(
    pathNibbles: number,
    bytes: Uint8Array,
    masks: { childMask: number; leafMask: number },
    offsets: Uint16Array,
    base: StoredNode | null,
    dirtySlots: number,
  ) {
    this.pathNibbles = pathNibbles;
    this.bytes = bytes;
    this.childMask = masks.childMask;
    this.leafMask = masks.leafMask;
    this.offsets = offsets;
    this.hashes = base === null ? new Uint8Array(positionsPerNode * smtHashBytes) : base.hashes.slice();
    this.nonEmpty = base === null ? 0 : base.nonEmpty;
    this.singleLeaf = base === null ? 0 : base.singleLeaf;
    for (let i = 0; i < slotsPerNode; i++) if (hasBit(dirtySlots, i)) this.setSlotHash(i);
    let dirtyPositions = dirtySlots << 16;
    for (let p = 15; p >= 1; p--) {
      if (((dirtyPositions >>> (2 * p)) & 3) === 0) continue;
      this.combine(p);
      dirtyPositions |= 1 << p;
    }
  }

  get hash(): Uint8Array {
    return this.hashes.subarray(smtHashBytes, 2 * smtHashBytes);
  }

  private setSlotHash(slot: number): void {
    const position = 16 + slot;
    const at = position * smtHashBytes;
    const offset = this.offsets[slot]!;
    this.singleLeaf &= ~(1 << position);
    if (!hasBit(this.childMask, slot)) {
      this.hashes.fill(0, at, at + smtHashBytes);
      this.nonEmpty &= ~(1 << position);
      return;
    }
    this.nonEmpty |= 1 << position;
    if (hasBit(this.leafMask, slot)) {
      this.hashes.set(leafHashAt(this.bytes, offset), at);
      this.singleLeaf |= 1 << position;
    } else {
      copyBytes(this.bytes, offset, this.hashes, at, childSlotBytes);
    }
  }

  /** The compaction rule: an empty side next to a lone leaf lifts the leaf; otherwise hash both. */
  private combine(p: number): void {
    const left = 2 * p;
    const right = left + 1;
    const at = p * smtHashBytes;
    const bit = 1 << p;
    const leftFull = hasBit(this.nonEmpty, left);
    const rightFull = hasBit(this.nonEmpty, right);
    this.nonEmpty |= bit;
    this.singleLeaf &= ~bit;
    if (!leftFull && !rightFull) {
      this.nonEmpty &= ~bit;
      this.hashes.fill(0, at, at + smtHashBytes);
    } else if (!leftFull && hasBit(this.singleLeaf, right)) {
      copyBytes(this.hashes, right * smtHashBytes, this.hashes, at, smtHashBytes);
      this.singleLeaf |= bit;
    } else if (!rightFull && hasBit(this.singleLeaf, left)) {
      copyBytes(this.hashes, left * smtHashBytes, this.hashes, at, smtHashBytes);
      this.singleLeaf |= bit;
    } else {
      copyBytes(this.hashes, left * smtHashBytes, internalInput, 1, 2 * smtHashBytes);
      this.hashes.set(smtSha256(internalInput), at);
    }
  }
}

type Slot = null | LeafSlot | ChildSlot;

interface LeafSlot {
  readonly kind: "leaf";
  readonly keyHash: Uint8Array;
  readonly valueHash: Uint8Array;
}

interface ChildSlot {
  readonly kind: "node";
  readonly hash: Uint8Array;
  /** Known when the node was just built or is the root; otherwise loaded by path on demand. */
  readonly node: StoredNode | null;
}

function readSlot(node: StoredNode, slot: number): Slot {
  if (!hasBit(node.childMask, slot)) return null;
  const offset = node.offsets[slot]!;
  const bytes = node.bytes;
  if (hasBit(node.leafMask, slot)) {
    return {
      kind: "leaf",
      keyHash: bytes.subarray(offset, offset + smtHashBytes),
      valueHash: bytes.subarray(offset + smtHashBytes, offset + leafSlotBytes),
    };
  }
  return { kind: "node", hash: bytes.subarray(offset, offset + childSlotBytes), node: null };
}

/**
 * Builds a node from `base` with the slots in `changed` replaced (undefined = keep the base's slot).
 * Layout: version u8 | childMask u16 BE | leafMask u16 BE | per present slot in ascending order,
 * a leaf's keyHash and valueHash (64 bytes) or a child node's hash (32 bytes).
 */
function buildNode(
  pathNibbles: number,
  base: StoredNode | null,
  changed: readonly (Slot | undefined)[],
): StoredNode {
  let childMask = base?.childMask ?? 0;
  let leafMask = base?.leafMask ?? 0;
  let dirty = 0;
  for (let i = 0; i < slotsPerNode; i++) {
    const slot = changed[i];
    if (slot === undefined) continue;
    dirty |= 1 << i;
    childMask &= ~(1 << i);
    leafMask &= ~(1 << i);
    if (slot !== null) childMask |= 1 << i;
    if (slot?.kind === "leaf") leafMask |= 1 << i;
  }
  let size = nodeHeaderBytes;
  for (let i = 0; i < slotsPerNode; i++) {
    if (hasBit(childMask, i)) size += hasBit(leafMask, i) ? leafSlotBytes : childSlotBytes;
  }
  const bytes = new Uint8Array(size);
  writeHeader(bytes, childMask, leafMask);
  const offsets = new Uint16Array(slotsPerNode);
  let offset = nodeHeaderBytes;
  for (let i = 0; i < slotsPerNode; i++) {
    if (!hasBit(childMask, i)) continue;
    offsets[i] = offset;
    const slot = changed[i];
    if (slot === undefined) {
      const length = hasBit(leafMask, i) ? leafSlotBytes : childSlotBytes;
      const from = base!.offsets[i]!;
      copyBytes(base!.bytes, from, bytes, offset, length);
    } else if (slot?.kind === "leaf") {
      bytes.set(slot.keyHash, offset);
      bytes.set(slot.valueHash, offset + smtHashBytes);
    } else if (slot?.kind === "node") {
      bytes.set(slot.hash, offset);
    }
    offset += hasBit(leafMask, i) ? leafSlotBytes : childSlotBytes;
  }
  return new StoredNode(pathNibbles, bytes, { childMask, leafMask }, offsets, base, dirty);
}

function writeHeader(bytes: Uint8Array, childMask: number, leafMask: number): void {
  bytes[0] = smtNodeFormatVersion;
  bytes[1] = childMask >> 8;
  bytes[2] = childMask & 0xff;
  bytes[3] = leafMask >> 8;
  bytes[4] = leafMask & 0xff;
}

function sharesNibblePrefix(a: Uint8Array, b: Uint8Array, nibbles: number): boolean {
  for (let i = 0; i < nibbles; i++) if (nibbleAt(a, i) !== nibbleAt(b, i)) return false;
  return true;
}

/**
 * Decodes stored bytes at a known path (`pathRef`: any 32 bytes that start with the path's nibbles)
 * and checks every rule a well-formed node obeys; a broken one is STORAGE_CORRUPT, never a wrong root.
 */
function decodeNode(pathNibbles: number, bytes: Uint8Array, pathRef: Uint8Array, key: string): StoredNode {
  if (bytes.length < nodeHeaderBytes || bytes.length > smtNodeBytesMax) corrupt(`node ${key}: bad length`);
  if (bytes[0] !== smtNodeFormatVersion) corrupt(`node ${key}: unknown format version ${bytes[0]}`);
  if (pathNibbles > nodePathNibblesMax) corrupt(`node ${key}: path too long`);
  const childMask = (bytes[1]! << 8) | bytes[2]!;
  const leafMask = (bytes[3]! << 8) | bytes[4]!;
  if ((leafMask & ~childMask) !== 0) corrupt(`node ${key}: leaf mask outside child mask`);
  const offsets = new Uint16Array(slotsPerNode);
  let offset = nodeHeaderBytes;
  for (let i = 0; i < slotsPerNode; i++) {
    if (!hasBit(childMask, i)) continue;
    offsets[i] = offset;
    offset += hasBit(leafMask, i) ? leafSlotBytes : childSlotBytes;
  }
  if (offset !== bytes.length) corrupt(`node ${key}: length ${bytes.length}, layout needs ${offset}`);
  checkNodeShape(pathNibbles, bytes, childMask, leafMask, offsets, pathRef, key);
  return new StoredNode(pathNibbles, bytes, { childMask, leafMask }, offsets, null, 0xffff);
}

function checkNodeShape(
  pathNibbles: number,
  bytes: Uint8Array,
  childMask: number,
  leafMask: number,
  offsets: Uint16Array,
  pathRef: Uint8Array,
  key: string,
): void {
  if (childMask === 0) corrupt(`node ${key}: stored but empty`);
  // Only the root may hold a lone leaf: anywhere else that leaf belongs in the parent's slot.
  if (pathNibbles > 0 && bitCount16(childMask) === 1 && leafMask === childMask) {
    corrupt(`node ${key}: holds a single leaf`);
  }
  for (let i = 0; i < slotsPerNode; i++) {
    if (!hasBit(childMask, i)) continue;
    const slot = bytes.subarray(offsets[i]!, offsets[i]! + smtHashBytes);
    if (!hasBit(leafMask, i)) {
      if (bytesEqual(slot, emptyHash)) corrupt(`node ${key}: child ${i} has the empty hash`);
      continue;
    }
    if (!sharesNibblePrefix(slot, pathRef, pathNibbles) || nibbleAt(slot, pathNibbles) !== i) {
      corrupt(`node ${key}: leaf in slot ${i} is off its path`);
    }
  }
}

/** Least-recently-used cache of decoded nodes; a Map keeps insertion order, so the first is oldest. */
class NodeCache {
  private readonly entries = new Map<string, StoredNode>();
  private readonly entriesMax: number;

  constructor(entriesMax: number) {
    assert(Number.isSafeInteger(entriesMax) && entriesMax >= 0, "nodeCacheEntriesMax is a count >= 0");
    this.entriesMax = entriesMax;
  }

  get size(): number {
    return this.entries.size;
  }

  get(key: string): StoredNode | undefined {
    const node = this.entries.get(key);
    if (node !== undefined) {
      this.entries.delete(key);
      this.entries.set(key, node);
    }
    return node;
  }

  set(key: string, node: StoredNode): void {
    this.entries.delete(key);
    if (this.entriesMax === 0) return;
    this.entries.set(key, node);
    if (this.entries.size > this.entriesMax) this.entries.delete(this.entries.keys().next().value!);
  }

  delete(key: string): void {
    this.entries.delete(key);
  }

  clear(): void {
    this.entries.clear();
  }
}

interface PreparedChange {
  readonly keyHash: Uint8Array;
  readonly keyHashHex: string;
  readonly valueHash: Uint8Array | null;
}

interface PreparedLeaf {
  readonly keyHash: Uint8Array;
  readonly keyHashHex: string;
  readonly valueHash: Uint8Array;
}

interface BatchContext {
  /** Sorted by key hash, one entry per key hash. */
  readonly changes: readonly PreparedChange[];
  readonly writes: Map<string, Uint8Array | null>;
  readonly nodes: Map<string, StoredNode | null>;
}

/** Ends of the runs of `items[lo..hi)` that share the nibble at `index` (items share all before it). */
function nibbleRuns(
  items: readonly { keyHash: Uint8Array }[],
  lo: number,
  hi: number,
  index: number,
): number[] {
  const ends: number[] = [];
  for (let j = lo; j < hi; ) {
    const nibble = nibbleAt(items[j]!.keyHash, index);
    let k = j + 1;
    while (k < hi && nibbleAt(items[k]!.keyHash, index) === nibble) k++;
    ends.push(k);
    j = k;
  }
  return ends;
}

/**
 * Sparse Merkle tree over a node store. Reads see only committed state: applyBatch computes a new
 * root without changing anything, commit adopts it once the caller has stored its node writes.
 */
export class SparseMerkleTree {
  private readonly store: SmtNodeStore;
  private readonly cache: NodeCache;
  private readonly batchChangesMax: number;
  /** Decoded nodes of uncommitted batches, handed to the cache on commit (weak: abandoned is fine). */
  private readonly pending = new WeakMap<SmtBatchResult, Map<string, StoredNode | null>>();
  /** The root node is pinned outside the cache: every operation starts there. */
  private rootNode: StoredNode | null = null;
  private rootHash: Uint8Array = emptyHash;

  constructor(store: SmtNodeStore, options: SmtOptions = {}) {
    this.store = store;
    this.cache = new NodeCache(options.nodeCacheEntriesMax ?? smtDefaults.nodeCacheEntriesMax);
    this.batchChangesMax = options.batchChangesMax ?? smtDefaults.batchChangesMax;
    this.reload();
  }

  /** The committed root; 32 zero bytes for the empty tree. */
  root(): Uint8Array {
    return this.rootHash.slice();
  }

  get cachedNodeEntries(): number {
    return this.cache.size;
  }

  /** Forgets everything in memory and reads the root again (after a restore or a rolled-back write). */
  reload(): void {
    this.cache.clear();
    const bytes = this.store.get(smtNodeKeyFromHex(rootNodeKeyHex));
    this.rootNode = bytes === undefined ? null : decodeNode(0, bytes, emptyHash, rootNodeKeyHex);
    this.rootHash = this.rootNode === null ? emptyHash : this.rootNode.hash.slice();
  }

  /**
   * Computes the root after `changes` against the committed tree, hashing each touched node once.
   * A key listed twice takes its last change. Changes nothing: store nodeWrites, then commit.
   */
  applyBatch(changes: readonly SmtChange[]): SmtBatchResult {
    const prepared = this.prepare(changes);
    const context: BatchContext = { changes: prepared, writes: new Map(), nodes: new Map() };
    const before: Slot =
      this.rootNode === null ? null : { kind: "node", hash: this.rootHash, node: this.rootNode };
    const after = prepared.length === 0 ? before : this.updateSubtree(context, 0, before, 0, prepared.length);
    let root = emptyHash.slice();
    if (after !== null) {
      assert(after.kind === "node", "the tree's root is a stored node or nothing");
      root = after.hash.slice();
    }
    const result: SmtBatchResult = { baseRoot: this.rootHash, root, nodeWrites: context.writes };
    this.pending.set(result, context.nodes);
    return result;
  }

  /** Adopts a batch whose nodeWrites the caller has already stored. */
  commit(batch: SmtBatchResult): void {
    const nodes = this.pending.get(batch);
    assert(nodes !== undefined, "commit of a batch this tree did not produce, or committed twice");
    if (!bytesEqual(batch.baseRoot, this.rootHash)) {
      throw new CodedError("CONFLICT", "state tree: batch was computed against another root");
    }
    this.checkRootWritten(batch);
    for (const [key, node] of nodes) {
      if (key === rootNodeKeyHex) this.rootNode = node;
      else if (node === null) this.cache.delete(key);
      else this.cache.set(key, node);
    }
    this.rootHash = batch.root;
    this.pending.delete(batch);
  }

  /** The proof for `key` against the committed root, with the key's value hash if present. */
  getProof(key: Uint8Array): SmtProofResult {
    const keyHash = smtSha256(key);
    const siblings: (Uint8Array | null)[] = [];
    const leaf = this.locate(keyHash, hexOf(keyHash), siblings);
    let terminal: SmtProofTerminal;
    let valueHash: Uint8Array | null = null;
    if (leaf === null) terminal = { kind: "empty" };
    else if (bytesEqual(leaf.keyHash, keyHash)) {
      terminal = { kind: "inclusion" };
      valueHash = leaf.valueHash.slice();
    } else terminal = { kind: "leaf", keyHash: leaf.keyHash.slice(), valueHash: leaf.valueHash.slice() };
    return { keyHash: keyHash.slice(), valueHash, proof: { siblings, terminal } };
  }

  /** The committed value hash of `key`, or null when absent. */
  getValueHash(key: Uint8Array): Uint8Array | null {
    const keyHash = smtSha256(key);
    const leaf = this.locate(keyHash, hexOf(keyHash), null);
    return leaf !== null && bytesEqual(leaf.keyHash, keyHash) ? leaf.valueHash.slice() : null;
  }

  private prepare(changes: readonly SmtChange[]): PreparedChange[] {
    assert(Array.isArray(changes), "changes is an array");
    assert(changes.length <= this.batchChangesMax, `at most ${this.batchChangesMax} changes per batch`);
    const byKeyHash = new Map<string, PreparedChange>();
    for (const change of changes) {
      assert(change.key instanceof Uint8Array, "a change's key is bytes");
      assert(
        change.value === null || change.value instanceof Uint8Array,
        "a change's value is bytes or null",
      );
      const keyHash = smtSha256(change.key);
      const keyHashHex = hexOf(keyHash);
      const valueHash = change.value === null ? null : smtSha256(change.value);
      byKeyHash.set(keyHashHex, { keyHash, keyHashHex, valueHash }); // last write wins
    }
    const prepared = [...byKeyHash.values()];
    // Lower-case hex sorts like the bytes, so runs sharing a nibble prefix are contiguous.
    prepared.sort((a, b) => (a.keyHashHex < b.keyHashHex ? -1 : 1));
    return prepared;
  }

  private updateSubtree(
    context: BatchContext,
    pathNibbles: number,
    before: Slot,
    lo: number,
    hi: number,
  ): Slot {
    if (before?.kind === "node") {
      const first = context.changes[lo]!;
      const node = before.node ?? this.loadNode(pathNibbles, first.keyHash, first.keyHashHex, before.hash);
      return this.updateNode(context, node, before, lo, hi);
    }
    return this.updateLeafOrEmpty(context, pathNibbles, before, lo, hi);
  }

  /** Returns `before` itself when nothing below changed, so parents skip rewriting. */
  private updateNode(
    context: BatchContext,
    node: StoredNode,
    before: ChildSlot,
    lo: number,
    hi: number,
  ): Slot {
    const changed: (Slot | undefined)[] = new Array(slotsPerNode).fill(undefined);
    let anyChanged = false;
    let start = lo;
    for (const end of nibbleRuns(context.changes, lo, hi, node.pathNibbles)) {
      const slot = nibbleAt(context.changes[start]!.keyHash, node.pathNibbles);
      const slotBefore = readSlot(node, slot);
      const slotAfter = this.updateSubtree(context, node.pathNibbles + 1, slotBefore, start, end);
      if (slotAfter !== slotBefore) {
        changed[slot] = slotAfter;
        anyChanged = true;
      }
      start = end;
    }
    if (!anyChanged) return before;
    const keyHashHex = context.changes[lo]!.keyHashHex;
    return this.record(context, buildNode(node.pathNibbles, node, changed), keyHashHex);
  }

  private updateLeafOrEmpty(
    context: BatchContext,
    pathNibbles: number,
    before: LeafSlot | null,
    lo: number,
    hi: number,
  ): Slot {
    const leaves = mergeLeaves(before, context.changes, lo, hi);
    if (before === null && leaves.length === 0) return before;
    if (before !== null && leaves.length === 1) {
      const only = leaves[0]!;
      if (bytesEqual(only.keyHash, before.keyHash) && bytesEqual(only.valueHash, before.valueHash))
        return before;
    }
    return this.build(context, pathNibbles, leaves, 0, leaves.length);
  }

  /** A fresh subtree for sorted, distinct leaves where nothing was stored before. */
  private build(
    context: BatchContext,
    pathNibbles: number,
    leaves: PreparedLeaf[],
    lo: number,
    hi: number,
  ): Slot {
    if (hi === lo) return null;
    const first = leaves[lo]!;
    if (hi - lo === 1 && pathNibbles > 0)
      return { kind: "leaf", keyHash: first.keyHash, valueHash: first.valueHash };
    assert(pathNibbles <= nodePathNibblesMax, "two leaves share a whole key hash");
    const slots: Slot[] = new Array(slotsPerNode).fill(null);
    let start = lo;
    for (const end of nibbleRuns(leaves, lo, hi, pathNibbles)) {
      slots[nibbleAt(leaves[start]!.keyHash, pathNibbles)] = this.build(
        context,
        pathNibbles + 1,
        leaves,
        start,
        end,
      );
      start = end;
    }
    return this.record(context, buildNode(pathNibbles, null, slots), first.keyHashHex);
  }

  /** Records the node's write, or its deletion when it emptied or (below the root) kept one leaf. */
  private record(context: BatchContext, node: StoredNode, keyHashHex: string): Slot {
    const key = nodeKeyHex(node.pathNibbles, keyHashHex);
    const present = bitCount16(node.childMask);
    if (present === 0 || (node.pathNibbles > 0 && present === 1 && node.leafMask === node.childMask)) {
      context.writes.set(key, null);
      context.nodes.set(key, null);
      return present === 0 ? null : readSlot(node, 31 - Math.clz32(node.childMask));
    }
    context.writes.set(key, node.bytes);
    context.nodes.set(key, node);
    return { kind: "node", hash: node.hash, node };
  }

  private loadNode(
    pathNibbles: number,
    keyHash: Uint8Array,
    keyHashHex: string,
    expected: Uint8Array,
  ): StoredNode {
    const key = nodeKeyHex(pathNibbles, keyHashHex);
    const cached = this.cache.get(key);
    if (cached !== undefined) {
      assert(bytesEqual(cached.hash, expected), `cached node ${key} matches its parent`);
      return cached;
    }
    const bytes = this.store.get(smtNodeKeyFromHex(key));
    if (bytes === undefined) corrupt(`node ${key} is missing`);
    const node = decodeNode(pathNibbles, bytes, keyHash, key);
    if (!bytesEqual(node.hash, expected)) corrupt(`node ${key} does not hash to what its parent holds`);
    this.cache.set(key, node);
    return node;
  }

  /**
   * Walks the committed tree along `keyHash` to where its path ends and returns the leaf there, or
   * null for an empty subtree; pushes the siblings met on the way when `siblings` is given.
   */
  private locate(
    keyHash: Uint8Array,
    keyHashHex: string,
    siblings: (Uint8Array | null)[] | null,
  ): LeafSlot | null {
    let node = this.rootNode;
    while (node !== null) {
      const slot = nibbleAt(keyHash, node.pathNibbles);
      let position = 1;
      for (let level = 0; level < 4; level++) {
        if (!hasBit(node.nonEmpty, position)) return null;
        if (hasBit(node.singleLeaf, position)) return leafUnder(node, position, level);
        const bit = (slot >> (3 - level)) & 1;
        const sibling = 2 * position + 1 - bit;
        const at = sibling * smtHashBytes;
        siblings?.push(hasBit(node.nonEmpty, sibling) ? node.hashes.slice(at, at + smtHashBytes) : null);
        position = 2 * position + bit;
      }
      const child = readSlot(node, slot);
      if (child === null || child.kind === "leaf") return child;
      node = this.loadNode(node.pathNibbles + 1, keyHash, keyHashHex, child.hash);
    }
    return null;
  }

  /** Throws unless the store already holds the batch's root-node write: commit comes after the writes. */
  private checkRootWritten(batch: SmtBatchResult): void {
    if (!batch.nodeWrites.has(rootNodeKeyHex)) return;
    const written = batch.nodeWrites.get(rootNodeKeyHex)!;
    const stored = this.store.get(smtNodeKeyFromHex(rootNodeKeyHex));
    const same =
      written === null ? stored === undefined : stored !== undefined && bytesEqual(stored, written);
    assert(same, "commit called before the batch's node writes were stored");
  }
}

/** The one leaf below `position` (at `level` within the node), which the node marks as a lone leaf. */
function leafUnder(node: StoredNode, position: number, level: number): LeafSlot {
  const width = 1 << (4 - level);
  const firstSlot = position * width - slotsPerNode;
  const slots = node.childMask & (((1 << width) - 1) << firstSlot);
  const slot = 31 - Math.clz32(slots);
  assert(bitCount16(slots) === 1 && hasBit(node.leafMask, slot), "a lone-leaf position holds one leaf slot");
  return readSlot(node, slot) as LeafSlot;
}

/** The leaves below a slot that held `before` (a leaf or nothing) after `changes[lo..hi)`, sorted. */
function mergeLeaves(
  before: LeafSlot | null,
  changes: readonly PreparedChange[],
  lo: number,
  hi: number,
): PreparedLeaf[] {
  const leaves: PreparedLeaf[] = [];
  let pending: PreparedLeaf | null =
    before === null
      ? null
      : { keyHash: before.keyHash, keyHashHex: hexOf(before.keyHash), valueHash: before.valueHash };
  for (let j = lo; j < hi; j++) {
    const change = changes[j]!;
    if (pending !== null && pending.keyHashHex <= change.keyHashHex) {
      if (pending.keyHashHex < change.keyHashHex) leaves.push(pending);
      pending = null; // equal: the change replaces or deletes the old leaf
    }
    if (change.valueHash !== null) {
      leaves.push({ keyHash: change.keyHash, keyHashHex: change.keyHashHex, valueHash: change.valueHash });
    }
  }
  if (pending !== null) leaves.push(pending);
  return leaves;
}

export interface SmtAudit {
  readonly root: Uint8Array;
  readonly nodeCount: number;
  readonly leafCount: number;
}

/**
 * Reads every node reachable from the stored root, checks each against the format and its parent's
 * hash, and counts them: a consistency check for tests and an offline `fsck`, not for the hot path.
 */
export function auditSmtStore(store: SmtNodeStore): SmtAudit {
  const rootBytes = store.get(smtNodeKeyFromHex(rootNodeKeyHex));
  if (rootBytes === undefined) return { root: emptyHash.slice(), nodeCount: 0, leafCount: 0 };
  const root = decodeNode(0, rootBytes, emptyHash, rootNodeKeyHex);
  const counts = { nodeCount: 0, leafCount: 0 };
  auditNode(store, root, new Uint8Array(smtHashBytes), counts);
  return { root: root.hash.slice(), ...counts };
}

function auditNode(
  store: SmtNodeStore,
  node: StoredNode,
  pathRef: Uint8Array,
  counts: { nodeCount: number; leafCount: number },
): void {
  counts.nodeCount++;
  counts.leafCount += bitCount16(node.leafMask);
  for (let slot = 0; slot < slotsPerNode; slot++) {
    const child = readSlot(node, slot);
    if (child?.kind !== "node") continue;
    const childRef = pathRef.slice();
    const byteIndex = node.pathNibbles >> 1;
    childRef[byteIndex] = (node.pathNibbles & 1) === 0 ? slot << 4 : childRef[byteIndex]! | slot;
    const key = nodeKeyHex(node.pathNibbles + 1, hexOf(childRef));
    const bytes = store.get(smtNodeKeyFromHex(key));
    if (bytes === undefined) corrupt(`node ${key} is missing`);
    const decoded = decodeNode(node.pathNibbles + 1, bytes, childRef, key);
    if (!bytesEqual(decoded.hash, child.hash)) corrupt(`node ${key} does not hash to what its parent holds`);
    auditNode(store, decoded, childRef, counts);
  }
}

/** A Map-backed node store for tests, benchmarks and tools; `write` applies a batch's nodeWrites. */
export class MemorySmtNodeStore implements SmtNodeStore {
  readonly nodes = new Map<string, Uint8Array>();

  get(nodeKey: Uint8Array): Uint8Array | undefined {
    return this.nodes.get(hexOf(nodeKey));
  }

  write(nodeWrites: ReadonlyMap<string, Uint8Array | null>): void {
    for (const [key, bytes] of nodeWrites) {
      if (bytes === null) this.nodes.delete(key);
      else this.nodes.set(key, bytes);
    }
  }
}
