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
  /**
   * Decoded stored nodes kept in memory, least recently used dropped first. An entry costs its
   * stored bytes plus 32 bytes per kept hash: ~0.3 KiB for a 2-leaf node, ~2 KiB for a full one.
   */
  readonly nodeCacheEntriesMax?: number;
  /** Changes accepted by one applyBatch call, counted before duplicates are merged. */
  readonly batchChangesMax?: number;
}

export const smtDefaults = {
  nodeCacheEntriesMax: 131_072,
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
function copyBytes(
  from: Uint8Array,
  fromOffset: number,
  to: Uint8Array,
  toOffset: number,
  length: number,
): void {
  for (let i = 0; i < length; i++) to[toOffset + i] = from[fromOffset + i]!;
}

/** Leaf hash of the 64 bytes keyHash || valueHash found at `offset` in `slotBytes`. */
function leafHashAt(slotBytes: Uint8Array, offset: number): Uint8Array {
  copyBytes(slotBytes, offset, leafInput, 1, leafSlotBytes);
  return smtSha256(leafInput);
}

/** A fresh copy. (`slice` would not do: on a Buffer, such as a store may return, it is a view.) */
function copyOf(bytes: Uint8Array): Uint8Array {
  return new Uint8Array(bytes);
}

function corrupt(message: string): never {
  throw new CodedError("STORAGE_CORRUPT", `state tree: ${message}`);
}

function hasBit(mask: number, bit: number): boolean {
  return ((mask >>> bit) & 1) === 1;
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

/** slotsUnder[p]: the mask of the slots beneath position p of a node's 4-level binary subtree. */
const slotsUnder: Uint16Array = (() => {
  const table = new Uint16Array(positionsPerNode);
  for (let p = positionsPerNode - 1; p >= 1; p--) {
    table[p] = p >= slotsPerNode ? 1 << (p - slotsPerNode) : table[2 * p]! | table[2 * p + 1]!;
  }
  return table;
})();

function popCount32(mask: number): number {
  let x = mask - ((mask >>> 1) & 0x55555555);
  x = (x & 0x33333333) + ((x >>> 2) & 0x33333333);
  return Math.imul((x + (x >>> 4)) & 0x0f0f0f0f, 0x01010101) >>> 24;
}

/** The mask of the bits below `bit`, for bit 0..31 (for 31: 0x7fffffff). */
function bitsBelow(bit: number): number {
  return ~(-1 << bit);
}

/** True when the slots in `under` are exactly one leaf: the position then hashes to that leaf. */
function isLoneLeaf(under: number, leafMask: number): boolean {
  return under !== 0 && (under & (under - 1)) === 0 && (under & leafMask) !== 0;
}

/**
 * The positions whose hash a decoded node keeps: its leaf slots, and the internal positions that
 * hash two or more leaves. The others need no storage: empty ones are zero, a lone leaf's position
 * reuses the leaf's hash, and a child slot's hash is in the node's bytes.
 */
function keptPositions(childMask: number, leafMask: number): number {
  let kept = 0;
  for (let p = 1; p < slotsPerNode; p++) {
    const under = childMask & slotsUnder[p]!;
    if (under !== 0 && !isLoneLeaf(under, leafMask)) kept |= 1 << p;
  }
  for (let slot = 0; slot < slotsPerNode; slot++)
    if (hasBit(leafMask, slot)) kept |= 1 << (slotsPerNode + slot);
  return kept;
}

function slotOffsetIn(childMask: number, leafMask: number, slot: number): number {
  const below = bitsBelow(slot);
  return nodeHeaderBytes + childSlotBytes * (popCount32(childMask & below) + popCount32(leafMask & below));
}

/**
 * One stored node, decoded, with the hashes of its internal 4-level binary subtree kept beside it,
 * so that proofs need no hashing and an update rehashes only the positions above the slots it
 * changed. Positions are in heap order: 1 is the node's top, 2p and 2p+1 are p's children, and
 * 16 + i is slot i. Immutable once built: a change builds a new node from the old one.
 */
class StoredNode {
  readonly pathNibbles: number;
  /** The stored bytes (smtNodeFormatVersion layout); slot data is read from here. */
  readonly bytes: Uint8Array;
  readonly childMask: number;
  readonly leafMask: number;
  /** Positions present in `hashes`, 32 bytes each in increasing position order. */
  private readonly keptMask: number;
  private readonly hashes: Uint8Array;

  /** `dirtySlots`: the slots that differ from `base`; everything above the others is copied. */
  constructor(
    pathNibbles: number,
    bytes: Uint8Array,
    masks: { childMask: number; leafMask: number },
    base: StoredNode | null,
    dirtySlots: number,
  ) {
    this.pathNibbles = pathNibbles;
    this.bytes = bytes;
    this.childMask = masks.childMask;
    this.leafMask = masks.leafMask;
    this.keptMask = keptPositions(this.childMask, this.leafMask);
    this.hashes = new Uint8Array(popCount32(this.keptMask) * smtHashBytes);
    // Children before parents: positions are filled from the bottom of the heap up.
    for (let p = positionsPerNode - 1; p >= 1; p--) {
      if (!hasBit(this.keptMask, p)) continue;
      const at = this.keptOffset(p);
      if (base !== null && (slotsUnder[p]! & dirtySlots) === 0) {
        assert(hasBit(base.keptMask, p), "an unchanged position keeps its hash");
        copyBytes(base.hashes, base.keptOffset(p), this.hashes, at, smtHashBytes);
      } else if (p >= slotsPerNode) {
        this.hashes.set(leafHashAt(bytes, this.slotOffset(p - slotsPerNode)), at);
      } else {
        this.copyPositionHash(2 * p, internalInput, 1);
        this.copyPositionHash(2 * p + 1, internalInput, 1 + smtHashBytes);
        this.hashes.set(smtSha256(internalInput), at);
      }
    }
  }

  /** The node's hash: the hash of the subtree at its path. */
  get hash(): Uint8Array {
    const out = new Uint8Array(smtHashBytes);
    this.copyPositionHash(1, out, 0);
    return out;
  }

  slotOffset(slot: number): number {
    return slotOffsetIn(this.childMask, this.leafMask, slot);
  }

  isEmptyAt(position: number): boolean {
    return (this.childMask & slotsUnder[position]!) === 0;
  }

  /** The slot of the lone leaf under `position`, or -1 when it holds none or several. */
  loneLeafSlotAt(position: number): number {
    const under = this.childMask & slotsUnder[position]!;
    return isLoneLeaf(under, this.leafMask) ? 31 - Math.clz32(under) : -1;
  }

  /** A copy of the hash at `position`, or null when its subtree is empty. */
  positionHash(position: number): Uint8Array | null {
    if (this.isEmptyAt(position)) return null;
    const out = new Uint8Array(smtHashBytes);
    this.copyPositionHash(position, out, 0);
    return out;
  }

  private keptOffset(position: number): number {
    return popCount32(this.keptMask & bitsBelow(position)) * smtHashBytes;
  }

  /** Writes the hash of `position` (the compaction rules of section 1 of the spec) into `to`. */
  private copyPositionHash(position: number, to: Uint8Array, toOffset: number): void {
    if (hasBit(this.keptMask, position)) {
      copyBytes(this.hashes, this.keptOffset(position), to, toOffset, smtHashBytes);
    } else if (this.isEmptyAt(position)) {
      to.fill(0, toOffset, toOffset + smtHashBytes);
    } else if (position >= slotsPerNode) {
      copyBytes(this.bytes, this.slotOffset(position - slotsPerNode), to, toOffset, childSlotBytes);
    } else {
      const leafPosition = slotsPerNode + this.loneLeafSlotAt(position);
      copyBytes(this.hashes, this.keptOffset(leafPosition), to, toOffset, smtHashBytes);
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
  const offset = node.slotOffset(slot);
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
  const bytes = new Uint8Array(slotOffsetIn(childMask, leafMask, slotsPerNode));
  writeHeader(bytes, childMask, leafMask);
  let offset = nodeHeaderBytes;
  for (let i = 0; i < slotsPerNode; i++) {
    if (!hasBit(childMask, i)) continue;
    const slot = changed[i];
    if (slot === undefined) {
      const length = hasBit(leafMask, i) ? leafSlotBytes : childSlotBytes;
      copyBytes(base!.bytes, base!.slotOffset(i), bytes, offset, length);
    } else if (slot?.kind === "leaf") {
      bytes.set(slot.keyHash, offset);
      bytes.set(slot.valueHash, offset + smtHashBytes);
    } else if (slot?.kind === "node") {
      bytes.set(slot.hash, offset);
    }
    offset += hasBit(leafMask, i) ? leafSlotBytes : childSlotBytes;
  }
  return new StoredNode(pathNibbles, bytes, { childMask, leafMask }, base, dirty);
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
  const length = slotOffsetIn(childMask, leafMask, slotsPerNode);
  if (length !== bytes.length) corrupt(`node ${key}: length ${bytes.length}, layout needs ${length}`);
  checkNodeShape(pathNibbles, bytes, childMask, leafMask, pathRef, key);
  // Our own copy: cached nodes must not change if the store reuses or hands out shared buffers.
  return new StoredNode(pathNibbles, copyOf(bytes), { childMask, leafMask }, null, 0xffff);
}

function checkNodeShape(
  pathNibbles: number,
  bytes: Uint8Array,
  childMask: number,
  leafMask: number,
  pathRef: Uint8Array,
  key: string,
): void {
  if (childMask === 0) corrupt(`node ${key}: stored but empty`);
  // Only the root may hold a lone leaf: anywhere else that leaf belongs in the parent's slot.
  if (pathNibbles > 0 && popCount32(childMask) === 1 && leafMask === childMask) {
    corrupt(`node ${key}: holds a single leaf`);
  }
  for (let i = 0; i < slotsPerNode; i++) {
    if (!hasBit(childMask, i)) continue;
    const offset = slotOffsetIn(childMask, leafMask, i);
    const slot = bytes.subarray(offset, offset + smtHashBytes);
    if (!hasBit(leafMask, i)) {
      if (bytesEqual(slot, emptyHash)) corrupt(`node ${key}: child ${i} has the empty hash`);
      continue;
    }
    if (!sharesNibblePrefix(slot, pathRef, pathNibbles) || nibbleAt(slot, pathNibbles) !== i) {
      corrupt(`node ${key}: leaf in slot ${i} is off its path`);
    }
  }
}

interface CacheEntry {
  readonly key: string;
  node: StoredNode;
  newer: CacheEntry | null;
  older: CacheEntry | null;
}

/**
 * Least-recently-used cache of decoded nodes: a Map for lookup and a doubly linked list for age.
 * (Re-inserting into a Map to mark use, and evicting its first key, leaves deleted slots at the
 * front that every eviction walks over; profiles showed it.)
 */
class NodeCache {
  private readonly entries = new Map<string, CacheEntry>();
  private readonly entriesMax: number;
  private newest: CacheEntry | null = null;
  private oldest: CacheEntry | null = null;

  constructor(entriesMax: number) {
    assert(Number.isSafeInteger(entriesMax) && entriesMax >= 0, "nodeCacheEntriesMax is a count >= 0");
    this.entriesMax = entriesMax;
  }

  get size(): number {
    return this.entries.size;
  }

  get(key: string): StoredNode | undefined {
    const entry = this.entries.get(key);
    if (entry === undefined) return undefined;
    this.unlink(entry);
    this.pushNewest(entry);
    return entry.node;
  }

  set(key: string, node: StoredNode): void {
    const existing = this.entries.get(key);
    if (existing !== undefined) {
      existing.node = node;
      this.unlink(existing);
      this.pushNewest(existing);
      return;
    }
    if (this.entriesMax === 0) return;
    const entry: CacheEntry = { key, node, newer: null, older: null };
    this.entries.set(key, entry);
    this.pushNewest(entry);
    if (this.entries.size > this.entriesMax) this.delete(this.oldest!.key);
  }

  delete(key: string): void {
    const entry = this.entries.get(key);
    if (entry === undefined) return;
    this.entries.delete(key);
    this.unlink(entry);
  }

  clear(): void {
    this.entries.clear();
    this.newest = null;
    this.oldest = null;
  }

  private unlink(entry: CacheEntry): void {
    if (entry.newer === null) this.newest = entry.older;
    else entry.newer.older = entry.older;
    if (entry.older === null) this.oldest = entry.newer;
    else entry.older.newer = entry.newer;
    entry.newer = null;
    entry.older = null;
  }

  private pushNewest(entry: CacheEntry): void {
    entry.older = this.newest;
    if (this.newest !== null) this.newest.newer = entry;
    this.newest = entry;
    if (this.oldest === null) this.oldest = entry;
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
    const result: SmtBatchResult = { baseRoot: this.rootHash.slice(), root, nodeWrites: context.writes };
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
    this.rootHash = batch.root.slice();
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
      valueHash = copyOf(leaf.valueHash);
    } else terminal = { kind: "leaf", keyHash: copyOf(leaf.keyHash), valueHash: copyOf(leaf.valueHash) };
    return { keyHash: copyOf(keyHash), valueHash, proof: { siblings, terminal } };
  }

  /** The committed value hash of `key`, or null when absent. */
  getValueHash(key: Uint8Array): Uint8Array | null {
    const keyHash = smtSha256(key);
    const leaf = this.locate(keyHash, hexOf(keyHash), null);
    return leaf !== null && bytesEqual(leaf.keyHash, keyHash) ? copyOf(leaf.valueHash) : null;
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
    const present = popCount32(node.childMask);
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
        if (node.isEmptyAt(position)) return null;
        const loneLeaf = node.loneLeafSlotAt(position);
        if (loneLeaf >= 0) return readSlot(node, loneLeaf) as LeafSlot;
        const bit = (slot >> (3 - level)) & 1;
        siblings?.push(node.positionHash(2 * position + 1 - bit));
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
  counts.leafCount += popCount32(node.leafMask);
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
