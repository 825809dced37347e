/**
 * The authenticated world-state tree: a binary sparse Merkle tree of depth 256 over SHA-256(key),
 * compacted so that a subtree holding one leaf is that leaf (as in Diem's Jellyfish Merkle Tree).
 * The exact rules, node layout and proof format are in docs/spec/state-tree.md; they are consensus.
 *
 * Storage groups four bit-levels into one 16-ary stored node, so a change in a tree of a million
 * keys rewrites about six stored nodes instead of about twenty binary ones. The tree never writes:
 * applyBatch returns the node writes, the caller stores them in the block's transaction, then calls
 * commit. Pure: no clock, no randomness, no I/O but the node store handed in.
 *
 * Hot path (section 5 of the spec has the figures): hashes are read out of a one-shot digest into
 * preallocated buffers; a batch is one sorted array of 64-byte records; decoded nodes are cached as
 * a tree of their own (each node points at its cached children), so a cache hit is a pointer read,
 * with no key string, no map and no re-hashing: a node is checked against its parent once, when it
 * is read from the store.
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
   * Decoded stored nodes kept in memory besides the root. When full, a node of the deepest cached
   * level is dropped, the least recently used of that level: upper nodes are shared by many more
   * keys, so they are kept first. An entry costs its stored bytes, 32 bytes per kept hash and ~0.3
   * KiB of object overhead: ~0.6 KiB for a 2-leaf bottom node, ~2.3 KiB for a full one.
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
/** A batch record: keyHash || valueHash, the layout of a leaf slot (valueHash unused for a delete). */
const recordBytes = leafSlotBytes;

// ---- Hashing ----------------------------------------------------------------------------------

/**
 * SHA-256 as a string of one char per byte ("binary" is latin1): node's one-shot hash where present
 * (Node >= 20.12), else createHash. A "buffer" digest allocates an off-heap ArrayBuffer per call,
 * which measured ~3/4 of the cost of hashing 65 bytes; a short string lives on the young heap.
 */
const sha256Binary: (data: Uint8Array) => string =
  typeof nodeCrypto.hash === "function"
    ? (data) => nodeCrypto.hash("sha256", data, "binary")
    : (data) => nodeCrypto.createHash("sha256").update(data).digest("binary");

/** Writes SHA-256(data) into out[at, at + 32). */
function hashInto(data: Uint8Array, out: Uint8Array, at: number): void {
  const digest = sha256Binary(data);
  for (let i = 0; i < smtHashBytes; i++) out[at + i] = digest.charCodeAt(i);
}

/** SHA-256 into a fresh array. */
export function smtSha256(data: Uint8Array): Uint8Array {
  const out = new Uint8Array(smtHashBytes);
  hashInto(data, out, 0);
  return out;
}

// Scratch inputs: every hash of the tree has the same 65-byte shape, so nothing is allocated for it.
const leafInput = new Uint8Array(1 + 2 * smtHashBytes);
leafInput[0] = smtLeafTag;
const internalInput = new Uint8Array(1 + 2 * smtHashBytes);
internalInput[0] = smtInternalTag;
const emptyHash = new Uint8Array(smtHashBytes);
const hashScratch = new Uint8Array(smtHashBytes);

/** Copies `length` bytes with a plain loop: for 32 or 64 bytes it beats subarray + set. */
function copyBytes(
  from: Uint8Array,
  fromOffset: number,
  to: Uint8Array,
  toOffset: number,
  length: number,
): void {
  for (let i = 0; i < length; i++) to[toOffset + i] = from[fromOffset + i]!;
}

function equalAt(a: Uint8Array, aOffset: number, b: Uint8Array, bOffset: number, length: number): boolean {
  for (let i = 0; i < length; i++) if (a[aOffset + i] !== b[bOffset + i]) return false;
  return true;
}

function compareHashesAt(a: Uint8Array, aOffset: number, b: Uint8Array, bOffset: number): number {
  for (let i = 0; i < smtHashBytes; i++) {
    const d = a[aOffset + i]! - b[bOffset + i]!;
    if (d !== 0) return d;
  }
  return 0;
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

/** Nibble `index` of the 32-byte key hash at `offset` in `bytes`. */
function nibbleAt(bytes: Uint8Array, offset: number, index: number): number {
  const byte = bytes[offset + (index >> 1)]!;
  return (index & 1) === 0 ? byte >> 4 : byte & 0x0f;
}

function hexOf(bytes: Uint8Array): string {
  return Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).toString("hex");
}

// ---- Node keys --------------------------------------------------------------------------------

const byteHex = Array.from({ length: 256 }, (_, b) => b.toString(16).padStart(2, "0"));
const pathLengthHex = byteHex.slice(0, nodePathNibblesMax + 2);
const highNibbleHex = Array.from({ length: 16 }, (_, n) => `${n.toString(16)}0`);

/**
 * A stored node's key: its nibble count (1 byte), then its nibbles packed two per byte, high nibble
 * first, the last byte padded with a zero nibble. `ref[refOffset..]` is any key hash on the path.
 */
function nodeKeyHex(pathNibbles: number, ref: Uint8Array, refOffset: number): string {
  let hex = pathLengthHex[pathNibbles]!;
  const whole = pathNibbles >> 1;
  for (let i = 0; i < whole; i++) hex += byteHex[ref[refOffset + i]!]!;
  if ((pathNibbles & 1) === 1) hex += highNibbleHex[ref[refOffset + whole]! >> 4]!;
  return hex;
}

function nodeKeyBytes(pathNibbles: number, ref: Uint8Array, refOffset: number): Uint8Array {
  const key = new Uint8Array(1 + ((pathNibbles + 1) >> 1));
  key[0] = pathNibbles;
  const whole = pathNibbles >> 1;
  copyBytes(ref, refOffset, key, 1, whole);
  if ((pathNibbles & 1) === 1) key[1 + whole] = ref[refOffset + whole]! & 0xf0;
  return key;
}

export function smtNodeKeyFromHex(hex: string): Uint8Array {
  return Buffer.from(hex, "hex");
}

export function smtNodeKeyToHex(nodeKey: Uint8Array): string {
  return hexOf(nodeKey);
}

// ---- Node layout ------------------------------------------------------------------------------

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

/** The index of the lowest set bit of a non-zero mask. */
function lowestBit(mask: number): number {
  return 31 - Math.clz32(mask & -mask);
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
  let kept = leafMask << slotsPerNode;
  for (let p = 1; p < slotsPerNode; p++) {
    const under = childMask & slotsUnder[p]!;
    if (under !== 0 && !isLoneLeaf(under, leafMask)) kept |= 1 << p;
  }
  return kept;
}

function slotOffsetIn(childMask: number, leafMask: number, slot: number): number {
  const below = bitsBelow(slot);
  return nodeHeaderBytes + childSlotBytes * (popCount32(childMask & below) + popCount32(leafMask & below));
}

function keptOffsetIn(keptMask: number, position: number): number {
  return popCount32(keptMask & bitsBelow(position)) * smtHashBytes;
}

/**
 * One stored node, decoded, with the hashes of its internal 4-level binary subtree kept beside it,
 * so that proofs need no hashing and an update rehashes only the positions above the slots it
 * changed. Positions are in heap order: 1 is the node's top, 2p and 2p+1 are p's children, and
 * 16 + i is slot i. Bytes and hashes never change once built: a change builds a new node.
 *
 * The mutable fields are the cache's: a committed node in memory is "linked" (the root, or a cached
 * node), reachable from the root through `children`, and sits in its level's recency list.
 */
class TreeNode {
  readonly pathNibbles: number;
  /** The stored bytes (smtNodeFormatVersion layout); slot data is read from here. */
  readonly bytes: Uint8Array;
  readonly childMask: number;
  readonly leafMask: number;
  /** Positions present in `hashes`, 32 bytes each in increasing position order. */
  readonly keptMask: number;
  readonly hashes: Uint8Array;
  /** For a node built by applyBatch: the slots that differ from the committed node at its path. */
  readonly dirty: number;
  /** Children in memory, by slot; for a batch's new node, its new children until commit. */
  children: (TreeNode | null)[] | null = null;
  parent: TreeNode | null = null;
  parentSlot = 0;
  linked = false;
  newer: TreeNode | null = null;
  older: TreeNode | null = null;

  constructor(pathNibbles: number, bytes: Uint8Array, childMask: number, leafMask: number, dirty: number) {
    this.pathNibbles = pathNibbles;
    this.bytes = bytes;
    this.childMask = childMask;
    this.leafMask = leafMask;
    this.keptMask = keptPositions(childMask, leafMask);
    this.hashes = new Uint8Array(popCount32(this.keptMask) * smtHashBytes);
    this.dirty = dirty;
  }

  /** A copy of the node's hash: the hash of the subtree at its path. */
  get hash(): Uint8Array {
    const out = new Uint8Array(smtHashBytes);
    positionHashInto(this, 1, out, 0);
    return out;
  }
}

function newChildren(): (TreeNode | null)[] {
  return [null, null, null, null, null, null, null, null, null, null, null, null, null, null, null, null];
}

/** Writes the hash of `position` (the compaction rules of section 1 of the spec) into `to`. */
function positionHashInto(node: TreeNode, position: number, to: Uint8Array, toOffset: number): void {
  const kept = node.keptMask;
  if (hasBit(kept, position)) {
    copyBytes(node.hashes, keptOffsetIn(kept, position), to, toOffset, smtHashBytes);
    return;
  }
  const under = node.childMask & slotsUnder[position]!;
  if (under === 0) {
    to.fill(0, toOffset, toOffset + smtHashBytes);
  } else if (position >= slotsPerNode) {
    const at = slotOffsetIn(node.childMask, node.leafMask, position - slotsPerNode);
    copyBytes(node.bytes, at, to, toOffset, childSlotBytes);
  } else {
    const leafPosition = slotsPerNode + 31 - Math.clz32(under);
    copyBytes(node.hashes, keptOffsetIn(kept, leafPosition), to, toOffset, smtHashBytes);
  }
}

/** True when the node's hash equals the 32 bytes at `offset` in `bytes`. */
function nodeHashEquals(node: TreeNode, bytes: Uint8Array, offset: number): boolean {
  positionHashInto(node, 1, hashScratch, 0);
  return equalAt(hashScratch, 0, bytes, offset, smtHashBytes);
}

/**
 * Fills `node.hashes`, children before parents: a position whose slots are all outside `dirty` is
 * copied from `base` (which keeps it too: keeping depends only on the slots below), a dirty leaf
 * slot whose hash the frame knows is copied, and everything else is hashed.
 */
function fillHashes(node: TreeNode, base: TreeNode | null, dirty: number, frame: Frame | null): void {
  const kept = node.keptMask;
  const hashes = node.hashes;
  let next = hashes.length;
  for (let p = positionsPerNode - 1; p >= 1; p--) {
    if (!hasBit(kept, p)) continue;
    next -= smtHashBytes;
    if (base !== null && (slotsUnder[p]! & dirty) === 0) {
      assert(hasBit(base.keptMask, p), "an unchanged position keeps its hash");
      copyBytes(base.hashes, keptOffsetIn(base.keptMask, p), hashes, next, smtHashBytes);
    } else if (p >= slotsPerNode) {
      const slot = p - slotsPerNode;
      const known = frame === null ? null : frame.hashBuf[slot]!;
      if (known !== null) {
        copyBytes(known, frame!.hashOff[slot]!, hashes, next, smtHashBytes);
      } else {
        copyBytes(node.bytes, slotOffsetIn(node.childMask, node.leafMask, slot), leafInput, 1, leafSlotBytes);
        hashInto(leafInput, hashes, next);
      }
    } else {
      positionHashInto(node, 2 * p, internalInput, 1);
      positionHashInto(node, 2 * p + 1, internalInput, 1 + smtHashBytes);
      hashInto(internalInput, hashes, next);
    }
  }
}

function writeHeader(bytes: Uint8Array, childMask: number, leafMask: number): void {
  bytes[0] = smtNodeFormatVersion;
  bytes[1] = childMask >> 8;
  bytes[2] = childMask & 0xff;
  bytes[3] = leafMask >> 8;
  bytes[4] = leafMask & 0xff;
}

/**
 * Decodes stored bytes at a known path (`ref[refOffset..]`: a key hash that starts with the path's
 * nibbles) and checks every rule a well-formed node obeys; a broken one is STORAGE_CORRUPT, never a
 * wrong root. The caller checks the node's hash against its parent.
 */
function decodeNode(
  pathNibbles: number,
  bytes: Uint8Array,
  ref: Uint8Array,
  refOffset: number,
  key: Uint8Array,
): TreeNode {
  const name = (): string => hexOf(key);
  if (bytes.length < nodeHeaderBytes || bytes.length > smtNodeBytesMax) corrupt(`node ${name()}: bad length`);
  if (bytes[0] !== smtNodeFormatVersion) corrupt(`node ${name()}: unknown format version ${bytes[0]}`);
  if (pathNibbles > nodePathNibblesMax) corrupt(`node ${name()}: path too long`);
  const childMask = (bytes[1]! << 8) | bytes[2]!;
  const leafMask = (bytes[3]! << 8) | bytes[4]!;
  if ((leafMask & ~childMask) !== 0) corrupt(`node ${name()}: leaf mask outside child mask`);
  const length = slotOffsetIn(childMask, leafMask, slotsPerNode);
  if (length !== bytes.length) corrupt(`node ${name()}: length ${bytes.length}, layout needs ${length}`);
  if (childMask === 0) corrupt(`node ${name()}: stored but empty`);
  // Only the root may hold a lone leaf: anywhere else that leaf belongs in the parent's slot.
  if (pathNibbles > 0 && popCount32(childMask) === 1 && leafMask === childMask) {
    corrupt(`node ${name()}: holds a single leaf`);
  }
  let offset = nodeHeaderBytes;
  for (let i = 0; i < slotsPerNode; i++) {
    if (!hasBit(childMask, i)) continue;
    if (!hasBit(leafMask, i)) {
      if (equalAt(bytes, offset, emptyHash, 0, smtHashBytes))
        corrupt(`node ${name()}: child ${i} has the empty hash`);
      offset += childSlotBytes;
      continue;
    }
    for (let n = 0; n < pathNibbles; n++) {
      if (nibbleAt(bytes, offset, n) !== nibbleAt(ref, refOffset, n))
        corrupt(`node ${name()}: leaf in slot ${i} is off its path`);
    }
    if (nibbleAt(bytes, offset, pathNibbles) !== i)
      corrupt(`node ${name()}: leaf in slot ${i} is off its path`);
    offset += leafSlotBytes;
  }
  // Our own copy: cached nodes must not change if the store reuses or hands out shared buffers.
  const node = new TreeNode(pathNibbles, copyOf(bytes), childMask, leafMask, 0);
  fillHashes(node, null, 0xffff, null);
  return node;
}

// ---- Node cache -------------------------------------------------------------------------------

/**
 * The decoded nodes in memory besides the root, as a tree: a cached node is reachable from the
 * root through `children`, so a hit costs a pointer read. When over budget it drops the least
 * recently used node of the deepest non-empty level. That node has no cached children (they would
 * be deeper), so the tree stays connected, and the upper levels, which every change passes
 * through, stay cached while the bottom ones take what budget is left.
 */
class NodeCache {
  private readonly entriesMax: number;
  /** Per level (path length): the most and least recently used cached node. */
  private readonly newest: (TreeNode | null)[] = new Array(nodePathNibblesMax + 1).fill(null);
  private readonly oldest: (TreeNode | null)[] = new Array(nodePathNibblesMax + 1).fill(null);
  private deepest = 0;
  size = 0;

  constructor(entriesMax: number) {
    assert(Number.isSafeInteger(entriesMax) && entriesMax >= 0, "nodeCacheEntriesMax is a count >= 0");
    this.entriesMax = entriesMax;
  }

  /** Caches `node`, just read from the store or just committed, as the child at `slot` of `parent`. */
  attach(parent: TreeNode, slot: number, node: TreeNode): void {
    if (!parent.linked || this.entriesMax === 0) return;
    if (parent.children === null) parent.children = newChildren();
    parent.children[slot] = node;
    node.parent = parent;
    node.parentSlot = slot;
    node.linked = true;
    this.pushNewest(node);
    this.size++;
    if (node.pathNibbles > this.deepest) this.deepest = node.pathNibbles;
    if (this.size > this.entriesMax) this.evictOne();
  }

  /** Marks a cached node used (the root, pinned outside the lists, is left alone). */
  touch(node: TreeNode): void {
    if (node.parent === null || node.newer === null) return;
    this.unlinkFromList(node);
    this.pushNewest(node);
  }

  /** Takes a cached node out, leaving its `children` as they are (commit still reads them). */
  detach(node: TreeNode): void {
    if (!node.linked || node.parent === null) return;
    this.unlinkFromList(node);
    this.size--;
    const siblings = node.parent.children!;
    if (siblings[node.parentSlot] === node) siblings[node.parentSlot] = null;
    node.parent = null;
    node.linked = false;
  }

  /** Takes out a cached node and everything cached below it. */
  dropSubtree(node: TreeNode): void {
    const children = node.children;
    if (children !== null) {
      for (let slot = 0; slot < slotsPerNode; slot++) {
        const child = children[slot]!;
        if (child !== null && child.parent === node) this.dropSubtree(child);
      }
    }
    this.detach(node);
  }

  clear(): void {
    this.newest.fill(null);
    this.oldest.fill(null);
    this.deepest = 0;
    this.size = 0;
  }

  private evictOne(): void {
    let level = this.deepest;
    while (level > 0 && this.oldest[level] === null) level--;
    this.deepest = level;
    const victim = this.oldest[level];
    assert(victim !== null && victim !== undefined, "an over-full cache has a node to drop");
    this.detach(victim);
  }

  private pushNewest(node: TreeNode): void {
    const level = node.pathNibbles;
    const newest = this.newest[level]!;
    node.older = newest;
    node.newer = null;
    if (newest !== null) newest.newer = node;
    else this.oldest[level] = node;
    this.newest[level] = node;
  }

  private unlinkFromList(node: TreeNode): void {
    const level = node.pathNibbles;
    if (node.newer === null) this.newest[level] = node.older;
    else node.newer.older = node.older;
    if (node.older === null) this.oldest[level] = node.newer;
    else node.older.newer = node.newer;
    node.newer = null;
    node.older = null;
  }
}

// ---- Batches ----------------------------------------------------------------------------------

const kindUnchanged = 0;
const kindEmpty = 1;
const kindLeaf = 2;
const kindNode = 3;

/**
 * The new content of one node's changed slots while the node is rebuilt: one frame per depth, reused
 * (a descent builds at most one node per depth at a time). A leaf is 64 bytes keyHash || valueHash
 * at `buf[off..]`, and its hash is at `hashBuf[hashOff..]` when already known.
 */
class Frame {
  readonly kind = new Uint8Array(slotsPerNode);
  readonly node: (TreeNode | null)[] = newChildren();
  readonly buf: (Uint8Array | null)[] = new Array(slotsPerNode).fill(null);
  readonly off = new Int32Array(slotsPerNode);
  readonly hashBuf: (Uint8Array | null)[] = new Array(slotsPerNode).fill(null);
  readonly hashOff = new Int32Array(slotsPerNode);

  take(slot: number, kind: number, work: BatchWork): void {
    this.kind[slot] = kind;
    this.node[slot] = work.node;
    this.buf[slot] = work.buf;
    this.off[slot] = work.off;
    this.hashBuf[slot] = work.hashBuf;
    this.hashOff[slot] = work.hashOff;
  }

  /** Drops the references held for the slots in `mask`, so old nodes are not kept alive. */
  release(mask: number): void {
    for (let slot = 0; slot < slotsPerNode; slot++) {
      if (!hasBit(mask, slot)) continue;
      this.node[slot] = null;
      this.buf[slot] = null;
      this.hashBuf[slot] = null;
    }
  }
}

const frames: Frame[] = [];

function frameAt(pathNibbles: number): Frame {
  while (frames.length <= pathNibbles) frames.push(new Frame());
  return frames[pathNibbles]!;
}

/**
 * The leaves below a slot that held at most one leaf, merged with the batch's changes there: the
 * input of a fresh subtree (whose descent never merges again, so one shared list does).
 */
const merged = {
  count: 0,
  buf: [] as Uint8Array[],
  off: [] as number[],
  hashBuf: [] as (Uint8Array | null)[],
  hashOff: [] as number[],
};

function pushMerged(buf: Uint8Array, off: number, hashBuf: Uint8Array | null, hashOff: number): void {
  const i = merged.count++;
  merged.buf[i] = buf;
  merged.off[i] = off;
  merged.hashBuf[i] = hashBuf;
  merged.hashOff[i] = hashOff;
}

/**
 * One applyBatch: its changes as sorted, distinct records, the writes so far, and the result of the
 * last slot update (`kind` is returned; a leaf's or node's details are left here).
 */
class BatchWork {
  readonly records: Uint8Array;
  readonly puts: Uint8Array;
  readonly count: number;
  readonly writes = new Map<string, Uint8Array | null>();
  node: TreeNode | null = null;
  buf: Uint8Array | null = null;
  off = 0;
  hashBuf: Uint8Array | null = null;
  hashOff = 0;

  constructor(records: Uint8Array, puts: Uint8Array, count: number) {
    this.records = records;
    this.puts = puts;
    this.count = count;
  }

  leaf(buf: Uint8Array, off: number, hashBuf: Uint8Array | null, hashOff: number): number {
    this.node = null;
    this.buf = buf;
    this.off = off;
    this.hashBuf = hashBuf;
    this.hashOff = hashOff;
    return kindLeaf;
  }

  built(node: TreeNode): number {
    this.node = node;
    this.buf = null;
    this.hashBuf = null;
    return kindNode;
  }

  empty(): number {
    this.node = null;
    this.buf = null;
    this.hashBuf = null;
    return kindEmpty;
  }
}

/** What commit needs of a batch: the new root node (null for the empty tree), if it changed. */
interface PendingBatch {
  readonly changed: boolean;
  readonly root: TreeNode | null;
}

/**
 * Hashes the changes and sorts them by key hash as records keyHash || valueHash, keeping each key's
 * last change. Sorted numerically on a 52-bit number: the key hash's leading bits, then the change's
 * index; runs that tie on those bits are then ordered by the whole key hash.
 */
function prepareChanges(changes: readonly SmtChange[]): BatchWork {
  const n = changes.length;
  const keyHashes = new Uint8Array(n * smtHashBytes);
  const valueHashes = new Uint8Array(n * smtHashBytes);
  const isPut = new Uint8Array(n);
  for (let i = 0; i < n; i++) {
    const change = changes[i]!;
    assert(change.key instanceof Uint8Array, "a change's key is bytes");
    assert(change.value === null || change.value instanceof Uint8Array, "a change's value is bytes or null");
    hashInto(change.key, keyHashes, i * smtHashBytes);
    if (change.value !== null) {
      hashInto(change.value, valueHashes, i * smtHashBytes);
      isPut[i] = 1;
    }
  }
  const indexBits = n <= 1 ? 1 : 32 - Math.clz32(n - 1);
  const indexScale = 2 ** indexBits;
  const prefixScale = 2 ** (32 - Math.min(32, 53 - indexBits));
  const sortKeys = new Float64Array(n);
  for (let i = 0; i < n; i++) {
    const o = i * smtHashBytes;
    const prefix =
      ((keyHashes[o]! << 24) | (keyHashes[o + 1]! << 16) | (keyHashes[o + 2]! << 8) | keyHashes[o + 3]!) >>>
      0;
    sortKeys[i] = Math.floor(prefix / prefixScale) * indexScale + i;
  }
  sortKeys.sort();
  const order: number[] = new Array(n);
  for (let j = 0; j < n; j++) order[j] = sortKeys[j]! % indexScale;
  const byKeyHashThenIndex = (a: number, b: number): number =>
    compareHashesAt(keyHashes, a * smtHashBytes, keyHashes, b * smtHashBytes) || a - b;
  for (let j = 0; j < n; ) {
    const high = Math.floor(sortKeys[j]! / indexScale);
    let k = j + 1;
    while (k < n && Math.floor(sortKeys[k]! / indexScale) === high) k++;
    if (k - j > 1) {
      const run = order.slice(j, k).sort(byKeyHashThenIndex);
      for (let r = 0; r < run.length; r++) order[j + r] = run[r]!;
    }
    j = k;
  }
  const records = new Uint8Array(n * recordBytes);
  const puts = new Uint8Array(n);
  let count = 0;
  for (let j = 0; j < n; j++) {
    const i = order[j]!;
    const next = j + 1 < n ? order[j + 1]! : -1;
    // Equal key hashes are adjacent, in input order: the last one wins.
    if (next >= 0 && equalAt(keyHashes, i * smtHashBytes, keyHashes, next * smtHashBytes, smtHashBytes))
      continue;
    copyBytes(keyHashes, i * smtHashBytes, records, count * recordBytes, smtHashBytes);
    copyBytes(valueHashes, i * smtHashBytes, records, count * recordBytes + smtHashBytes, smtHashBytes);
    puts[count] = isPut[i]!;
    count++;
  }
  return new BatchWork(records, puts, count);
}

// ---- The tree ---------------------------------------------------------------------------------

/**
 * Sparse Merkle tree over a node store. Reads see only committed state: applyBatch computes a new
 * root without changing anything, commit adopts it once the caller has stored its node writes.
 */
export class SparseMerkleTree {
  private readonly store: SmtNodeStore;
  private readonly cache: NodeCache;
  private readonly batchChangesMax: number;
  /** New nodes of uncommitted batches, handed to the cache on commit (weak: abandoned is fine). */
  private readonly pending = new WeakMap<SmtBatchResult, PendingBatch>();
  /** The root node is pinned outside the cache: every operation starts there. */
  private rootNode: TreeNode | null = null;
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
    const key = smtNodeKeyFromHex(rootNodeKeyHex);
    const bytes = this.store.get(key);
    this.rootNode = bytes === undefined ? null : decodeNode(0, bytes, emptyHash, 0, key);
    if (this.rootNode !== null) this.rootNode.linked = true;
    this.rootHash = this.rootNode === null ? emptyHash : this.rootNode.hash;
  }

  /**
   * Computes the root after `changes` against the committed tree, hashing each touched node once.
   * A key listed twice takes its last change. Changes nothing: store nodeWrites, then commit.
   */
  applyBatch(changes: readonly SmtChange[]): SmtBatchResult {
    assert(Array.isArray(changes), "changes is an array");
    assert(changes.length <= this.batchChangesMax, `at most ${this.batchChangesMax} changes per batch`);
    const work = prepareChanges(changes);
    let kind = kindUnchanged;
    if (work.count > 0) {
      kind =
        this.rootNode === null
          ? this.updateLeafOrEmpty(work, 0, null, 0, null, 0, 0, work.count)
          : this.updateNode(work, this.rootNode, 0, work.count);
    }
    assert(kind !== kindLeaf, "the tree's root is a stored node or nothing");
    let root: Uint8Array;
    if (kind === kindUnchanged) root = this.rootHash.slice();
    else if (kind === kindEmpty) root = emptyHash.slice();
    else root = work.node!.hash;
    const result: SmtBatchResult = { baseRoot: this.rootHash.slice(), root, nodeWrites: work.writes };
    this.pending.set(result, { changed: kind !== kindUnchanged, root: kind === kindNode ? work.node : null });
    return result;
  }

  /** Adopts a batch whose nodeWrites the caller has already stored. */
  commit(batch: SmtBatchResult): void {
    const pending = this.pending.get(batch);
    assert(pending !== undefined, "commit of a batch this tree did not produce, or committed twice");
    if (!bytesEqual(batch.baseRoot, this.rootHash)) {
      throw new CodedError("CONFLICT", "state tree: batch was computed against another root");
    }
    this.checkRootWritten(batch);
    if (pending.changed) {
      const old = this.rootNode;
      const root = pending.root;
      if (root === null) {
        this.cache.clear();
      } else {
        root.linked = true;
        this.adopt(root, old);
      }
      if (old !== null) old.linked = false;
      this.rootNode = root;
    }
    this.rootHash = batch.root.slice();
    this.pending.delete(batch);
  }

  /** The proof for `key` against the committed root, with the key's value hash if present. */
  getProof(key: Uint8Array): SmtProofResult {
    const keyHash = smtSha256(key);
    const siblings: (Uint8Array | null)[] = [];
    const leaf = this.locate(keyHash, siblings);
    let terminal: SmtProofTerminal;
    let valueHash: Uint8Array | null = null;
    if (leaf === null) terminal = { kind: "empty" };
    else if (equalAt(leaf.bytes, leaf.offset, keyHash, 0, smtHashBytes)) {
      terminal = { kind: "inclusion" };
      valueHash = leaf.bytes.slice(leaf.offset + smtHashBytes, leaf.offset + leafSlotBytes);
    } else {
      terminal = {
        kind: "leaf",
        keyHash: leaf.bytes.slice(leaf.offset, leaf.offset + smtHashBytes),
        valueHash: leaf.bytes.slice(leaf.offset + smtHashBytes, leaf.offset + leafSlotBytes),
      };
    }
    return { keyHash, valueHash, proof: { siblings, terminal } };
  }

  /** The committed value hash of `key`, or null when absent. */
  getValueHash(key: Uint8Array): Uint8Array | null {
    const keyHash = smtSha256(key);
    const leaf = this.locate(keyHash, null);
    if (leaf === null || !equalAt(leaf.bytes, leaf.offset, keyHash, 0, smtHashBytes)) return null;
    return leaf.bytes.slice(leaf.offset + smtHashBytes, leaf.offset + leafSlotBytes);
  }

  /** Returns kindUnchanged when nothing below changed, so the parent keeps its slot. */
  private updateNode(work: BatchWork, node: TreeNode, lo: number, hi: number): number {
    const depth = node.pathNibbles;
    const frame = frameAt(depth);
    const records = work.records;
    const byteIndex = depth >> 1;
    const shift = (depth & 1) === 0 ? 4 : 0;
    let dirty = 0;
    for (let j = lo; j < hi; ) {
      const slot = (records[j * recordBytes + byteIndex]! >> shift) & 0x0f;
      let k = j + 1;
      while (k < hi && ((records[k * recordBytes + byteIndex]! >> shift) & 0x0f) === slot) k++;
      const kind = this.updateSlot(work, node, slot, j, k);
      if (kind !== kindUnchanged) {
        frame.take(slot, kind, work);
        dirty |= 1 << slot;
      }
      j = k;
    }
    if (dirty === 0) return kindUnchanged;
    return this.assemble(work, depth, node, dirty, frame, records, lo * recordBytes);
  }

  private updateSlot(work: BatchWork, node: TreeNode, slot: number, lo: number, hi: number): number {
    const depth = node.pathNibbles + 1;
    if (!hasBit(node.childMask, slot)) return this.updateLeafOrEmpty(work, depth, null, 0, null, 0, lo, hi);
    if (hasBit(node.leafMask, slot)) {
      const at = slotOffsetIn(node.childMask, node.leafMask, slot);
      const hashAt = keptOffsetIn(node.keptMask, slotsPerNode + slot);
      return this.updateLeafOrEmpty(work, depth, node.bytes, at, node.hashes, hashAt, lo, hi);
    }
    let child = node.children === null ? null : node.children[slot]!;
    if (child !== null) this.cache.touch(child);
    else child = this.loadChild(node, slot, work.records, lo * recordBytes);
    return this.updateNode(work, child, lo, hi);
  }

  /**
   * A slot that held one leaf (`leaf[leafOffset..]`, its hash at `leafHash[leafHashOffset..]`) or
   * nothing, after changes[lo..hi): unchanged, empty, a leaf, or a fresh subtree at `depth`.
   */
  private updateLeafOrEmpty(
    work: BatchWork,
    depth: number,
    leaf: Uint8Array | null,
    leafOffset: number,
    leafHash: Uint8Array | null,
    leafHashOffset: number,
    lo: number,
    hi: number,
  ): number {
    const records = work.records;
    const puts = work.puts;
    if (hi - lo === 1 && depth > 0) {
      // The common case: one change meets the leaf or the empty slot.
      const at = lo * recordBytes;
      const sameKey = leaf !== null && equalAt(leaf, leafOffset, records, at, smtHashBytes);
      if (leaf === null || sameKey) {
        if (puts[lo] === 0) return leaf === null ? kindUnchanged : work.empty();
        if (sameKey && equalAt(leaf, leafOffset + smtHashBytes, records, at + smtHashBytes, smtHashBytes))
          return kindUnchanged;
        return work.leaf(records, at, null, 0);
      }
    }
    merged.count = 0;
    let pending = leaf !== null;
    for (let j = lo; j < hi; j++) {
      const at = j * recordBytes;
      if (pending) {
        const order = compareHashesAt(leaf!, leafOffset, records, at);
        if (order <= 0) {
          if (order < 0) pushMerged(leaf!, leafOffset, leafHash, leafHashOffset);
          pending = false; // equal: the change replaces or deletes the old leaf
        }
      }
      if (puts[j] === 1) pushMerged(records, at, null, 0);
    }
    if (pending) pushMerged(leaf!, leafOffset, leafHash, leafHashOffset);
    const count = merged.count;
    if (count === 0) return leaf === null ? kindUnchanged : work.empty();
    if (
      count === 1 &&
      leaf !== null &&
      equalAt(merged.buf[0]!, merged.off[0]!, leaf, leafOffset, leafSlotBytes)
    )
      return kindUnchanged;
    return this.build(work, depth, 0, count);
  }

  /** A fresh subtree at `depth` for the sorted, distinct leaves merged[lo..hi), hi > lo. */
  private build(work: BatchWork, depth: number, lo: number, hi: number): number {
    if (hi - lo === 1 && depth > 0) {
      return work.leaf(merged.buf[lo]!, merged.off[lo]!, merged.hashBuf[lo]!, merged.hashOff[lo]!);
    }
    assert(depth <= nodePathNibblesMax, "two leaves share a whole key hash");
    const frame = frameAt(depth);
    let dirty = 0;
    for (let j = lo; j < hi; ) {
      const slot = nibbleAt(merged.buf[j]!, merged.off[j]!, depth);
      let k = j + 1;
      while (k < hi && nibbleAt(merged.buf[k]!, merged.off[k]!, depth) === slot) k++;
      frame.take(slot, this.build(work, depth + 1, j, k), work);
      dirty |= 1 << slot;
      j = k;
    }
    return this.assemble(work, depth, null, dirty, frame, merged.buf[lo]!, merged.off[lo]!);
  }

  /**
   * Builds the node at `depth` from `base` with the slots in `dirty` replaced by the frame's, and
   * records its write; or records its deletion when it emptied or (below the root) kept one leaf,
   * in which case that leaf is the result and no bytes or hashes are built.
   * Layout: version u8 | childMask u16 BE | leafMask u16 BE | per present slot in ascending order,
   * a leaf's keyHash and valueHash (64 bytes) or a child node's hash (32 bytes).
   */
  private assemble(
    work: BatchWork,
    depth: number,
    base: TreeNode | null,
    dirty: number,
    frame: Frame,
    ref: Uint8Array,
    refOffset: number,
  ): number {
    let childMask = base === null ? 0 : base.childMask;
    let leafMask = base === null ? 0 : base.leafMask;
    childMask &= ~dirty;
    leafMask &= ~dirty;
    for (let slot = 0; slot < slotsPerNode; slot++) {
      if (!hasBit(dirty, slot)) continue;
      const kind = frame.kind[slot]!;
      if (kind !== kindEmpty) childMask |= 1 << slot;
      if (kind === kindLeaf) leafMask |= 1 << slot;
    }
    const present = popCount32(childMask);
    if (present === 0 || (depth > 0 && present === 1 && leafMask === childMask)) {
      assert(base !== null, "a fresh node holds two leaves or more");
      work.writes.set(nodeKeyHex(depth, ref, refOffset), null);
      let kind: number;
      if (present === 0) kind = work.empty();
      else {
        const slot = lowestBit(childMask);
        if (hasBit(dirty, slot)) {
          kind = work.leaf(frame.buf[slot]!, frame.off[slot]!, frame.hashBuf[slot]!, frame.hashOff[slot]!);
        } else {
          const at = slotOffsetIn(base.childMask, base.leafMask, slot);
          kind = work.leaf(base.bytes, at, base.hashes, keptOffsetIn(base.keptMask, slotsPerNode + slot));
        }
      }
      frame.release(dirty);
      return kind;
    }
    const bytes = new Uint8Array(slotOffsetIn(childMask, leafMask, slotsPerNode));
    writeHeader(bytes, childMask, leafMask);
    let at = nodeHeaderBytes;
    let baseAt = nodeHeaderBytes;
    let children: (TreeNode | null)[] | null = null;
    for (let slot = 0; slot < slotsPerNode; slot++) {
      const baseLength =
        base === null || !hasBit(base.childMask, slot)
          ? 0
          : hasBit(base.leafMask, slot)
            ? leafSlotBytes
            : childSlotBytes;
      if (hasBit(childMask, slot)) {
        if (!hasBit(dirty, slot)) {
          copyBytes(base!.bytes, baseAt, bytes, at, baseLength);
          at += baseLength;
        } else if (frame.kind[slot] === kindLeaf) {
          copyBytes(frame.buf[slot]!, frame.off[slot]!, bytes, at, leafSlotBytes);
          at += leafSlotBytes;
        } else {
          const child = frame.node[slot]!;
          positionHashInto(child, 1, bytes, at);
          if (children === null) children = newChildren();
          children[slot] = child;
          at += childSlotBytes;
        }
      }
      baseAt += baseLength;
    }
    const node = new TreeNode(depth, bytes, childMask, leafMask, base === null ? 0xffff : dirty);
    fillHashes(node, base, dirty, frame);
    node.children = children;
    frame.release(dirty);
    work.writes.set(nodeKeyHex(depth, ref, refOffset), bytes);
    return work.built(node);
  }

  /**
   * Links the batch's new `node` into the cache's tree in place of `old`, the committed node at its
   * path (null if none): cached children of unchanged slots move over, new children are cached in
   * turn, and whatever was cached under a changed slot is dropped.
   */
  private adopt(node: TreeNode, old: TreeNode | null): void {
    const oldChildren = old === null ? null : old.children;
    const freshChildren = node.children;
    node.children = null;
    for (let slot = 0; slot < slotsPerNode; slot++) {
      const was = oldChildren === null ? null : oldChildren[slot]!;
      if (hasBit(node.dirty, slot)) {
        const fresh = freshChildren === null ? null : freshChildren[slot]!;
        if (was !== null) this.cache.detach(was);
        if (fresh !== null) {
          this.cache.attach(node, slot, fresh);
          this.adopt(fresh, was);
        } else if (was !== null) {
          this.cache.dropSubtree(was);
        }
      } else if (was !== null) {
        if (node.linked) {
          if (node.children === null) node.children = newChildren();
          node.children[slot] = was;
          was.parent = node;
        } else {
          this.cache.dropSubtree(was);
        }
      }
    }
  }

  /** Reads, checks and caches the child node at `slot` of `parent`; `ref[refOffset..]` is on its path. */
  private loadChild(parent: TreeNode, slot: number, ref: Uint8Array, refOffset: number): TreeNode {
    const depth = parent.pathNibbles + 1;
    const key = nodeKeyBytes(depth, ref, refOffset);
    const bytes = this.store.get(key);
    if (bytes === undefined) corrupt(`node ${hexOf(key)} is missing`);
    const node = decodeNode(depth, bytes, ref, refOffset, key);
    if (!nodeHashEquals(node, parent.bytes, slotOffsetIn(parent.childMask, parent.leafMask, slot))) {
      corrupt(`node ${hexOf(key)} does not hash to what its parent holds`);
    }
    this.cache.attach(parent, slot, node);
    return node;
  }

  /**
   * Walks the committed tree along `keyHash` to where its path ends and returns the leaf there, or
   * null for an empty subtree; pushes the siblings met on the way when `siblings` is given.
   */
  private locate(
    keyHash: Uint8Array,
    siblings: (Uint8Array | null)[] | null,
  ): { bytes: Uint8Array; offset: number } | null {
    let node = this.rootNode;
    while (node !== null) {
      const slot = nibbleAt(keyHash, 0, node.pathNibbles);
      let position = 1;
      for (let level = 0; level < 4; level++) {
        const under = node.childMask & slotsUnder[position]!;
        if (under === 0) return null;
        if (isLoneLeaf(under, node.leafMask)) {
          const leafSlot = 31 - Math.clz32(under);
          return { bytes: node.bytes, offset: slotOffsetIn(node.childMask, node.leafMask, leafSlot) };
        }
        const bit = (slot >> (3 - level)) & 1;
        if (siblings !== null) {
          const sibling = 2 * position + 1 - bit;
          if ((node.childMask & slotsUnder[sibling]!) === 0) siblings.push(null);
          else {
            const hash = new Uint8Array(smtHashBytes);
            positionHashInto(node, sibling, hash, 0);
            siblings.push(hash);
          }
        }
        position = 2 * position + bit;
      }
      if (!hasBit(node.childMask, slot)) return null;
      if (hasBit(node.leafMask, slot)) {
        return { bytes: node.bytes, offset: slotOffsetIn(node.childMask, node.leafMask, slot) };
      }
      let child = node.children === null ? null : node.children[slot]!;
      if (child !== null) this.cache.touch(child);
      else child = this.loadChild(node, slot, keyHash, 0);
      node = child;
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
  const rootKey = smtNodeKeyFromHex(rootNodeKeyHex);
  const rootBytes = store.get(rootKey);
  if (rootBytes === undefined) return { root: emptyHash.slice(), nodeCount: 0, leafCount: 0 };
  const root = decodeNode(0, rootBytes, emptyHash, 0, rootKey);
  const counts = { nodeCount: 0, leafCount: 0 };
  auditNode(store, root, new Uint8Array(smtHashBytes), counts);
  return { root: root.hash, ...counts };
}

function auditNode(
  store: SmtNodeStore,
  node: TreeNode,
  pathRef: Uint8Array,
  counts: { nodeCount: number; leafCount: number },
): void {
  counts.nodeCount++;
  counts.leafCount += popCount32(node.leafMask);
  for (let slot = 0; slot < slotsPerNode; slot++) {
    if (!hasBit(node.childMask, slot) || hasBit(node.leafMask, slot)) continue;
    const childRef = pathRef.slice();
    const byteIndex = node.pathNibbles >> 1;
    childRef[byteIndex] = (node.pathNibbles & 1) === 0 ? slot << 4 : childRef[byteIndex]! | slot;
    const key = nodeKeyBytes(node.pathNibbles + 1, childRef, 0);
    const bytes = store.get(key);
    if (bytes === undefined) corrupt(`node ${hexOf(key)} is missing`);
    const decoded = decodeNode(node.pathNibbles + 1, bytes, childRef, 0, key);
    if (!nodeHashEquals(decoded, node.bytes, slotOffsetIn(node.childMask, node.leafMask, slot))) {
      corrupt(`node ${hexOf(key)} does not hash to what its parent holds`);
    }
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
