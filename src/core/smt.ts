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
 * Hot path (section 5 of the spec has the figures and the profiles behind these choices):
 * - Decoded nodes are cached as a tree of their own (each points at its cached children), so a
 *   hit is a pointer read: no key string, no map, no re-hashing. A node is checked against its
 *   parent once, when it is read from the store.
 * - Node data (stored bytes, then the kept hashes) is not a JS object per node: a batch builds its
 *   nodes in a few shared buffers, whose views are the node writes, and commit copies the cached
 *   ones into an arena of large buffers with free lists. Garbage collection, not hashing, was the
 *   largest cost when every node carried its own arrays or strings.
 * - A batch is one sorted array of 64-byte records; each node it touches is built once.
 * - SHA-256 digests are read as binary strings: a Buffer result costs an off-heap allocation.
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
  /**
   * Stored-node writes keyed by the node key's lower-case hex; null deletes the node. The byte
   * arrays are views into a few buffers shared by the batch's writes: a store that keeps them in
   * memory should copy them (as MemorySmtNodeStore does), or it keeps the whole buffers alive.
   */
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
   * level is dropped, one that level's clock finds unused since it last passed: upper nodes are
   * shared by many more keys, so they are kept first. An entry costs its stored bytes plus 32 bytes
   * per kept hash, rounded up to 32, plus ~0.2 KiB of objects: ~0.5 KiB for a typical 2-leaf
   * bottom node, ~1.3 KiB for a typical node above it, ~2.3 KiB for a full one. Measured at a
   * million keys: 131,072 entries took ~145 MiB, the whole tree (359,708 nodes) ~250 MiB.
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
/** Stored bytes plus every position's hash: the most memory one node's data can take. */
const nodeDataBytesMax = smtNodeBytesMax + (positionsPerNode - 1) * smtHashBytes;
export const rootNodeKeyHex = "00";
/** A batch record: keyHash || valueHash, the layout of a leaf slot (valueHash zero for a delete). */
const recordBytes = leafSlotBytes;

// ---- Bytes and hashing ------------------------------------------------------------------------

/**
 * SHA-256 as a binary string (one char per byte): node's one-shot hash where present (Node >=
 * 20.12), else createHash. A "buffer" digest allocates an off-heap ArrayBuffer per call, which
 * measured ~3/4 of the cost of hashing 65 bytes; a short string lives on the young heap.
 */
const sha256Binary: (data: Uint8Array) => string =
  typeof nodeCrypto.hash === "function"
    ? (data) => nodeCrypto.hash("sha256", data, "binary")
    : (data) => nodeCrypto.createHash("sha256").update(data).digest("binary");

/** Copies the 32 bytes of a binary-string digest into `to[at..]`. */
function copyDigest(digest: string, to: Uint8Array, at: number): void {
  for (let i = 0; i < smtHashBytes; i++) to[at + i] = digest.charCodeAt(i);
}

/** Writes SHA-256(data) into out[at, at + 32). */
function hashInto(data: Uint8Array, out: Uint8Array, at: number): void {
  copyDigest(sha256Binary(data), out, at);
}

/** SHA-256 into a fresh array. */
export function smtSha256(data: Uint8Array): Uint8Array {
  const out = new Uint8Array(smtHashBytes);
  hashInto(data, out, 0);
  return out;
}

/**
 * Runs this long or longer are copied natively: ~60 ns flat, but a view to allocate; a loop costs
 * ~1 ns per byte.
 */
const nativeCopyBytesMin = 256;

function copyBytes(
  from: Uint8Array,
  fromOffset: number,
  to: Uint8Array,
  toOffset: number,
  length: number,
): void {
  if (length >= nativeCopyBytesMin) {
    to.set(from.subarray(fromOffset, fromOffset + length), toOffset);
    return;
  }
  for (let i = 0; i < length; i++) to[toOffset + i] = from[fromOffset + i]!;
}

/** A fresh, exact copy (never a view, even of a Buffer). */
function copyOut(from: Uint8Array, offset: number, length: number): Uint8Array {
  const out = new Uint8Array(length);
  copyBytes(from, offset, out, 0, length);
  return out;
}

function equalBytes(a: Uint8Array, aOffset: number, b: Uint8Array, bOffset: number, length: number): boolean {
  for (let i = 0; i < length; i++) if (a[aOffset + i] !== b[bOffset + i]) return false;
  return true;
}

function compareHashes(a: Uint8Array, aOffset: number, b: Uint8Array, bOffset: number): number {
  for (let i = 0; i < smtHashBytes; i++) {
    const d = a[aOffset + i]! - b[bOffset + i]!;
    if (d !== 0) return d;
  }
  return 0;
}

/** Nibble `index` of the key hash at `offset` in `bytes`. */
function nibbleAt(bytes: Uint8Array, offset: number, index: number): number {
  const byte = bytes[offset + (index >> 1)]!;
  return (index & 1) === 0 ? byte >> 4 : byte & 0x0f;
}

function isZeroBytes(bytes: Uint8Array, offset: number, length: number): boolean {
  for (let i = 0; i < length; i++) if (bytes[offset + i] !== 0) return false;
  return true;
}

function hexOf(bytes: Uint8Array): string {
  return Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).toString("hex");
}

// Scratch: every hash of the tree has the same 65-byte shape, so nothing is allocated for inputs.
const leafInput = new Uint8Array(1 + 2 * smtHashBytes);
leafInput[0] = smtLeafTag;
const internalInput = new Uint8Array(1 + 2 * smtHashBytes);
internalInput[0] = smtInternalTag;
const emptyHash = new Uint8Array(smtHashBytes);
const hashScratch = new Uint8Array(smtHashBytes);

function corrupt(message: string): never {
  throw new CodedError("STORAGE_CORRUPT", `state tree: ${message}`);
}

function hasBit(mask: number, bit: number): boolean {
  return ((mask >>> bit) & 1) === 1;
}

// ---- Node keys --------------------------------------------------------------------------------

const byteHex = Array.from({ length: 256 }, (_, b) => b.toString(16).padStart(2, "0"));
const highNibbleHex = Array.from({ length: 16 }, (_, n) => `${n.toString(16)}0`);

/**
 * A stored node's key: its nibble count (1 byte), then its nibbles packed two per byte, high nibble
 * first, the last byte padded with a zero nibble. `ref[refOffset..]` is any key hash on the path.
 */
function nodeKeyHex(pathNibbles: number, ref: Uint8Array, refOffset: number): string {
  let hex = byteHex[pathNibbles]!;
  const whole = pathNibbles >> 1;
  for (let i = 0; i < whole; i++) hex += byteHex[ref[refOffset + i]!]!;
  if ((pathNibbles & 1) === 1) hex += highNibbleHex[ref[refOffset + whole]! >> 4]!;
  return hex;
}

/** Nibble `index` of the path of the node whose key hex is `keyHex`. */
function pathNibbleOfKey(keyHex: string, index: number): number {
  const c = keyHex.charCodeAt(2 + index);
  return c <= 0x39 ? c - 0x30 : c - 0x57; // '0'-'9', 'a'-'f'
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
 * 16 + i is slot i. Its content never changes: a change builds a new node.
 *
 * The content sits at `data[at..]`: the stored bytes, then the kept hashes (32 bytes each, in
 * increasing position order). A batch's new node has it in the batch's buffers until commit
 * moves it into the cache's arena. The other mutable fields are the cache's: a committed node in
 * memory is "linked" (the root, or a cached node), reachable from the root through `children`,
 * and a cached one holds a slot of its level's clock.
 */
class TreeNode {
  readonly pathNibbles: number;
  /** The node key's hex: the node's path, for the cache and for messages. */
  readonly key: string;
  readonly childMask: number;
  readonly leafMask: number;
  /** Positions whose hash is kept after the bytes. */
  readonly keptMask: number;
  readonly bytesLength: number;
  /** bytesLength plus the kept hashes. */
  readonly dataLength: number;
  /** For a node built by applyBatch: the slots that differ from the committed node at its path. */
  readonly dirty: number;
  data: Uint8Array;
  at: number;
  /** The arena block holding the content, or -1 when it is elsewhere. */
  block = -1;
  /** Children in memory, by slot; for a batch's new node, its new children until commit. */
  children: (TreeNode | null)[] | null = null;
  linked = false;
  /** Its slot in its level's clock while cached, else -1. */
  clockSlot = -1;

  constructor(
    pathNibbles: number,
    key: string,
    childMask: number,
    leafMask: number,
    keptMask: number,
    dirty: number,
    data: Uint8Array,
    at: number,
  ) {
    this.pathNibbles = pathNibbles;
    this.key = key;
    this.childMask = childMask;
    this.leafMask = leafMask;
    this.keptMask = keptMask;
    this.bytesLength = slotOffsetIn(childMask, leafMask, slotsPerNode);
    this.dataLength = this.bytesLength + popCount32(keptMask) * smtHashBytes;
    this.dirty = dirty;
    this.data = data;
    this.at = at;
  }

  /** A copy of the node's hash: the hash of the subtree at its path. */
  get hash(): Uint8Array {
    const out = new Uint8Array(smtHashBytes);
    positionHashInto(this, 1, out, 0);
    return out;
  }

  /** Where slot `slot`'s bytes are in `data`. */
  slotAt(slot: number): number {
    return this.at + slotOffsetIn(this.childMask, this.leafMask, slot);
  }

  /** Where the kept hash of `position` is in `data`. */
  keptAt(position: number): number {
    return this.at + this.bytesLength + keptOffsetIn(this.keptMask, position);
  }
}

function newChildren(): (TreeNode | null)[] {
  return [null, null, null, null, null, null, null, null, null, null, null, null, null, null, null, null];
}

/** Writes the hash of `position` (the compaction rules of section 1 of the spec) into `to`. */
function positionHashInto(node: TreeNode, position: number, to: Uint8Array, toOffset: number): void {
  if (hasBit(node.keptMask, position)) {
    copyBytes(node.data, node.keptAt(position), to, toOffset, smtHashBytes);
    return;
  }
  const under = node.childMask & slotsUnder[position]!;
  if (under === 0) {
    to.fill(0, toOffset, toOffset + smtHashBytes);
  } else if (position >= slotsPerNode) {
    copyBytes(node.data, node.slotAt(position - slotsPerNode), to, toOffset, childSlotBytes);
  } else {
    const leafPosition = slotsPerNode + 31 - Math.clz32(under);
    copyBytes(node.data, node.keptAt(leafPosition), to, toOffset, smtHashBytes);
  }
}

/**
 * Fills the kept hashes of `node`, whose bytes are written, children before parents: a position
 * whose slots are all outside `dirty` is copied from `base` (which keeps it too: keeping depends
 * only on the slots below), a dirty leaf slot whose hash the frame knows is copied, the rest is
 * hashed.
 */
function buildHashes(node: TreeNode, base: TreeNode | null, dirty: number, frame: Frame | null): void {
  const kept = node.keptMask;
  const data = node.data;
  const hashesAt = node.at + node.bytesLength;
  let next = popCount32(kept) * smtHashBytes;
  // A run of unchanged positions, contiguous in both nodes: base.data[runFrom, runFrom + runLength)
  // goes to data[hashesAt + runTo, ...); copied when the run ends, before anything reads it.
  let runFrom = -1;
  let runTo = 0;
  let runLength = 0;
  for (let p = positionsPerNode - 1; p >= 1; p--) {
    if (!hasBit(kept, p)) continue;
    next -= smtHashBytes;
    if (base !== null && (slotsUnder[p]! & dirty) === 0) {
      assert(hasBit(base.keptMask, p), "an unchanged position keeps its hash");
      const from = base.keptAt(p);
      if (runLength > 0 && from !== runFrom - smtHashBytes) {
        copyBytes(base.data, runFrom, data, hashesAt + runTo, runLength);
        runLength = 0;
      }
      runFrom = from;
      runTo = next;
      runLength += smtHashBytes;
      continue;
    }
    if (runLength > 0) {
      copyBytes(base!.data, runFrom, data, hashesAt + runTo, runLength);
      runLength = 0;
    }
    if (p >= slotsPerNode) {
      const slot = p - slotsPerNode;
      const known = frame === null ? null : frame.hashSrc[slot]!;
      if (known !== null) {
        copyBytes(known, frame!.hashOff[slot]!, data, hashesAt + next, smtHashBytes);
      } else {
        copyBytes(data, node.slotAt(slot), leafInput, 1, leafSlotBytes);
        hashInto(leafInput, data, hashesAt + next);
      }
    } else {
      positionHashInto(node, 2 * p, internalInput, 1);
      positionHashInto(node, 2 * p + 1, internalInput, 1 + smtHashBytes);
      hashInto(internalInput, data, hashesAt + next);
    }
  }
  if (runLength > 0) copyBytes(base!.data, runFrom, data, hashesAt + runTo, runLength);
}

function writeHeader(data: Uint8Array, at: number, childMask: number, leafMask: number): void {
  data[at] = smtNodeFormatVersion;
  data[at + 1] = childMask >> 8;
  data[at + 2] = childMask & 0xff;
  data[at + 3] = leafMask >> 8;
  data[at + 4] = leafMask & 0xff;
}

/**
 * Decodes stored bytes at a known path (`ref[refOffset..]`: a key hash that starts with the path's
 * nibbles) and checks every rule a well-formed node obeys; a broken one is STORAGE_CORRUPT, never a
 * wrong root. The caller checks the node's hash against its parent. The content is copied (the
 * store may reuse its buffers) into an arena block, or into its own array without an arena.
 */
function decodeNode(
  pathNibbles: number,
  bytes: Uint8Array,
  ref: Uint8Array,
  refOffset: number,
  key: string,
  arena: NodeArena | null,
): TreeNode {
  if (bytes.length < nodeHeaderBytes || bytes.length > smtNodeBytesMax) corrupt(`node ${key}: bad length`);
  if (bytes[0] !== smtNodeFormatVersion) corrupt(`node ${key}: unknown format version ${bytes[0]}`);
  if (pathNibbles > nodePathNibblesMax) corrupt(`node ${key}: path too long`);
  const childMask = (bytes[1]! << 8) | bytes[2]!;
  const leafMask = (bytes[3]! << 8) | bytes[4]!;
  if ((leafMask & ~childMask) !== 0) corrupt(`node ${key}: leaf mask outside child mask`);
  const length = slotOffsetIn(childMask, leafMask, slotsPerNode);
  if (length !== bytes.length) corrupt(`node ${key}: length ${bytes.length}, layout needs ${length}`);
  if (childMask === 0) corrupt(`node ${key}: stored but empty`);
  // Only the root may hold a lone leaf: anywhere else that leaf belongs in the parent's slot.
  if (pathNibbles > 0 && popCount32(childMask) === 1 && leafMask === childMask) {
    corrupt(`node ${key}: holds a single leaf`);
  }
  let offset = nodeHeaderBytes;
  for (let i = 0; i < slotsPerNode; i++) {
    if (!hasBit(childMask, i)) continue;
    if (!hasBit(leafMask, i)) {
      if (isZeroBytes(bytes, offset, smtHashBytes)) corrupt(`node ${key}: child ${i} has the empty hash`);
      offset += childSlotBytes;
      continue;
    }
    let onPath = nibbleAt(bytes, offset, pathNibbles) === i;
    for (let n = 0; n < pathNibbles && onPath; n++)
      onPath = nibbleAt(bytes, offset, n) === nibbleAt(ref, refOffset, n);
    if (!onPath) corrupt(`node ${key}: leaf in slot ${i} is off its path`);
    offset += leafSlotBytes;
  }
  const kept = keptPositions(childMask, leafMask);
  const dataLength = length + popCount32(kept) * smtHashBytes;
  let block = -1;
  let data: Uint8Array;
  let at = 0;
  if (arena === null) data = new Uint8Array(dataLength);
  else {
    block = arena.alloc(dataLength);
    data = arena.segmentOf(block);
    at = arena.offsetOf(block);
  }
  copyBytes(bytes, 0, data, at, length);
  const node = new TreeNode(pathNibbles, key, childMask, leafMask, kept, 0, data, at);
  node.block = block;
  buildHashes(node, null, 0xffff, null);
  return node;
}

// ---- Memory -----------------------------------------------------------------------------------

const arenaSegmentBytes = 1 << 20;
/** Blocks come in sizes that are multiples of this, one free list per size. */
const arenaGrainBytes = 32;

/**
 * Where cached nodes keep their content: 1 MiB segments cut into blocks, a free list per block size.
 * A block's address is segment * 2^20 + offset. Freed blocks are only reused after the operation
 * that freed them (`reuseFreed`): until then, what it is still reading stays as it was.
 */
class NodeArena {
  private readonly segments: Uint8Array[] = [];
  private readonly free: number[][] = Array.from(
    { length: Math.ceil(nodeDataBytesMax / arenaGrainBytes) + 1 },
    () => [],
  );
  private readonly freed: number[] = [];
  private bumpAt = arenaSegmentBytes;

  alloc(length: number): number {
    const size = Math.ceil(length / arenaGrainBytes);
    const reused = this.free[size]!.pop();
    if (reused !== undefined) return reused;
    const bytes = size * arenaGrainBytes;
    if (this.bumpAt + bytes > arenaSegmentBytes) {
      this.segments.push(new Uint8Array(arenaSegmentBytes));
      this.bumpAt = 0;
    }
    const address = (this.segments.length - 1) * arenaSegmentBytes + this.bumpAt;
    this.bumpAt += bytes;
    return address;
  }

  segmentOf(address: number): Uint8Array {
    return this.segments[Math.floor(address / arenaSegmentBytes)]!;
  }

  offsetOf(address: number): number {
    return address % arenaSegmentBytes;
  }

  /** Frees a block once the current operation is over. */
  freeLater(address: number, length: number): void {
    this.freed.push(address, Math.ceil(length / arenaGrainBytes));
  }

  reuseFreed(): void {
    const freed = this.freed;
    for (let i = 0; i < freed.length; i += 2) this.free[freed[i + 1]!]!.push(freed[i]!);
    freed.length = 0;
  }
}

/**
 * One level's cached nodes for the clock (second chance) replacement: a dense array of nodes, a
 * reference bit per node, and the hand that sweeps them. The bits sit apart from the nodes, so a
 * sweep reads memory in order; a removal moves the last node into the gap, so it never meets one.
 */
class ClockLevel {
  readonly nodes: TreeNode[] = [];
  referenced = new Uint8Array(64);
  hand = 0;

  add(node: TreeNode): void {
    const clockSlot = this.nodes.length;
    if (clockSlot === this.referenced.length) {
      const grown = new Uint8Array(2 * clockSlot);
      grown.set(this.referenced);
      this.referenced = grown;
    }
    this.nodes.push(node);
    this.referenced[clockSlot] = 1;
    node.clockSlot = clockSlot;
  }

  /** `node` takes the slot of `replaced`, marked used. */
  replace(replaced: TreeNode, node: TreeNode): void {
    node.clockSlot = replaced.clockSlot;
    replaced.clockSlot = -1;
    this.nodes[node.clockSlot] = node;
    this.referenced[node.clockSlot] = 1;
  }

  remove(node: TreeNode): void {
    const clockSlot = node.clockSlot;
    const last = this.nodes.pop()!;
    if (last !== node) {
      this.nodes[clockSlot] = last;
      this.referenced[clockSlot] = this.referenced[last.clockSlot]!;
      last.clockSlot = clockSlot;
    }
    node.clockSlot = -1;
  }

  /** The next node the hand finds unused, clearing the bits it passes. */
  victim(): TreeNode {
    const nodes = this.nodes;
    for (;;) {
      if (this.hand >= nodes.length) this.hand = 0;
      const at = this.hand++;
      if (this.referenced[at] === 0) return nodes[at]!;
      this.referenced[at] = 0;
    }
  }
}

/**
 * The decoded nodes in memory besides the root, as a tree: a cached node is reachable from the
 * root through `children`, so a hit costs a pointer read. When over budget it drops a node of the
 * deepest non-empty level, chosen by that level's clock: the upper levels, which every change
 * passes through, stay cached while the bottom ones share what budget is left. The dropped node
 * has no cached children (they would be deeper), so the tree stays connected. A node that commit
 * replaces hands its clock slot to its successor, marked used.
 */
class NodeCache {
  private readonly entriesMax: number;
  private readonly levels: ClockLevel[] = [];
  private deepest = 0;
  arena = new NodeArena();
  /** The committed root, where evictions look for a victim's parent. */
  root: TreeNode | null = null;
  size = 0;

  constructor(entriesMax: number) {
    assert(Number.isSafeInteger(entriesMax) && entriesMax >= 0, "nodeCacheEntriesMax is a count >= 0");
    this.entriesMax = entriesMax;
    for (let level = 0; level <= nodePathNibblesMax; level++) this.levels.push(new ClockLevel());
  }

  /** Whether a node read under `parent` would be cached (decoded straight into the arena). */
  accepts(parent: TreeNode): boolean {
    return parent.linked && this.entriesMax > 0;
  }

  /**
   * Caches `node`, just read or committed, as the child at `slot` of the linked `parent` (a no-op
   * for an unlinked one), moving its content into the arena. `replaced` is the cached node it
   * succeeds, if any, whose clock slot it takes. With `trim`, drops a node at once if over
   * budget; commit trims once its new tree is linked.
   */
  attach(parent: TreeNode, slot: number, node: TreeNode, replaced: TreeNode | null, trim: boolean): void {
    if (!this.accepts(parent)) {
      if (replaced !== null) this.forget(replaced);
      return;
    }
    this.own(node);
    if (parent.children === null) parent.children = newChildren();
    parent.children[slot] = node;
    node.linked = true;
    const level = this.levels[node.pathNibbles]!;
    if (replaced !== null && replaced.clockSlot >= 0) {
      level.replace(replaced, node);
      replaced.linked = false;
      this.release(replaced);
    } else {
      level.add(node);
      this.size++;
      if (node.pathNibbles > this.deepest) this.deepest = node.pathNibbles;
    }
    if (trim) this.trim();
  }

  /** Moves a node's content into the arena (the root's too: it is pinned there). */
  own(node: TreeNode): void {
    if (node.block >= 0) return;
    const block = this.arena.alloc(node.dataLength);
    const data = this.arena.segmentOf(block);
    const at = this.arena.offsetOf(block);
    copyBytes(node.data, node.at, data, at, node.dataLength);
    node.data = data;
    node.at = at;
    node.block = block;
  }

  /** Gives a node's arena block back once the current operation is over. */
  release(node: TreeNode): void {
    if (node.block < 0) return;
    this.arena.freeLater(node.block, node.dataLength);
    node.block = -1;
  }

  /** Marks a cached node used. */
  touch(node: TreeNode): void {
    if (node.clockSlot >= 0) this.levels[node.pathNibbles]!.referenced[node.clockSlot] = 1;
  }

  /**
   * Takes a cached node out, leaving its parent's `children` and its own as they are: for a node
   * that commit replaces, whose parent is replaced too and whose children commit reads.
   */
  forget(node: TreeNode): void {
    if (node.clockSlot >= 0) {
      this.levels[node.pathNibbles]!.remove(node);
      this.size--;
    }
    node.linked = false;
    this.release(node);
  }

  /** Forgets a replaced node and everything cached below it. */
  forgetSubtree(node: TreeNode): void {
    const children = node.children;
    if (children !== null) {
      for (let slot = 0; slot < slotsPerNode; slot++) {
        const child = children[slot]!;
        if (child !== null) this.forgetSubtree(child);
      }
    }
    this.forget(node);
  }

  /** Drops nodes until within budget. */
  trim(): void {
    while (this.size > this.entriesMax) this.evictOne();
  }

  /** Forgets everything, the root included (whose content moves to a new arena with `own`). */
  clear(): void {
    this.levels.length = 0;
    for (let level = 0; level <= nodePathNibblesMax; level++) this.levels.push(new ClockLevel());
    this.deepest = 0;
    this.size = 0;
    this.arena = new NodeArena();
  }

  private evictOne(): void {
    let depth = this.deepest;
    while (depth > 0 && this.levels[depth]!.nodes.length === 0) depth--;
    this.deepest = depth;
    assert(depth > 0, "an over-full cache has a node to drop");
    const victim = this.levels[depth]!.victim();
    // Its parent, found along its path: every cached node's ancestors are cached.
    let parent = this.root;
    for (let i = 0; i < depth - 1; i++) parent = parent!.children![pathNibbleOfKey(victim.key, i)]!;
    const slot = pathNibbleOfKey(victim.key, depth - 1);
    assert(parent?.children?.[slot] === victim, "a cached node hangs under its parent");
    parent.children[slot] = null;
    this.forget(victim);
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
 * at `src[off..]`, its hash at `hashSrc[hashOff..]` when known.
 */
class Frame {
  readonly kind = new Uint8Array(slotsPerNode);
  readonly node: (TreeNode | null)[] = newChildren();
  readonly src: (Uint8Array | null)[] = new Array(slotsPerNode).fill(null);
  readonly off = new Int32Array(slotsPerNode);
  readonly hashSrc: (Uint8Array | null)[] = new Array(slotsPerNode).fill(null);
  readonly hashOff = new Int32Array(slotsPerNode);

  take(slot: number, kind: number, work: BatchWork): void {
    this.kind[slot] = kind;
    this.node[slot] = work.node;
    this.src[slot] = work.src;
    this.off[slot] = work.off;
    this.hashSrc[slot] = work.hashSrc;
    this.hashOff[slot] = work.hashOff;
  }

  /** Drops the references held for the slots in `mask`. */
  release(mask: number): void {
    for (let slot = 0; slot < slotsPerNode; slot++) {
      if (!hasBit(mask, slot)) continue;
      this.node[slot] = null;
      this.src[slot] = null;
      this.hashSrc[slot] = null;
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
  src: [] as Uint8Array[],
  off: [] as number[],
  hashSrc: [] as (Uint8Array | null)[],
  hashOff: [] as number[],
};

function pushMerged(src: Uint8Array, off: number, hashSrc: Uint8Array | null, hashOff: number): void {
  const i = merged.count++;
  merged.src[i] = src;
  merged.off[i] = off;
  merged.hashSrc[i] = hashSrc;
  merged.hashOff[i] = hashOff;
}

/** A batch's new nodes are built in buffers of at most this size: one allocation per ~500 nodes. */
const batchChunkBytes = 256 * 1024;
/** A batch's first buffer: this much per change plus the base (the upper nodes its changes share). */
const chunkBytesPerChange = 1024;
const chunkBytesBase = 4096;

/**
 * One applyBatch: its changes as sorted, distinct records, the writes so far, and the result of the
 * last slot update (`kind` is returned; a leaf's or node's details are left here).
 */
class BatchWork {
  /** count × 64 bytes: keyHash || valueHash, sorted by keyHash. */
  readonly records: Uint8Array;
  /** 1 for a put, 0 for a delete, per record. */
  readonly puts: Uint8Array;
  readonly count: number;
  readonly writes = new Map<string, Uint8Array | null>();
  chunk: Uint8Array = new Uint8Array(0);
  private chunkUsed = 0;
  node: TreeNode | null = null;
  src: Uint8Array | null = null;
  off = 0;
  hashSrc: Uint8Array | null = null;
  hashOff = 0;

  constructor(records: Uint8Array, puts: Uint8Array, count: number) {
    this.records = records;
    this.puts = puts;
    this.count = count;
  }

  /** Room for `length` bytes of a new node's content, at the returned offset of `chunk`. */
  take(length: number): number {
    if (this.chunkUsed + length > this.chunk.length) {
      // Sized to the batch at first and doubling after: a small batch must not zero (and pin,
      // through the cached nodes that view it) a buffer hundreds of times its size.
      const size =
        this.chunk.length === 0
          ? Math.min(batchChunkBytes, this.count * chunkBytesPerChange + chunkBytesBase)
          : Math.min(batchChunkBytes, this.chunk.length * 2);
      this.chunk = new Uint8Array(Math.max(size, length));
      this.chunkUsed = 0;
    }
    const at = this.chunkUsed;
    this.chunkUsed += length;
    return at;
  }

  leaf(src: Uint8Array, off: number, hashSrc: Uint8Array | null, hashOff: number): number {
    this.node = null;
    this.src = src;
    this.off = off;
    this.hashSrc = hashSrc;
    this.hashOff = hashOff;
    return kindLeaf;
  }

  built(node: TreeNode): number {
    this.node = node;
    this.src = null;
    this.hashSrc = null;
    return kindNode;
  }

  empty(): number {
    this.node = null;
    this.src = null;
    this.hashSrc = null;
    return kindEmpty;
  }
}

/** What commit needs of a batch: the new root node (null for the empty tree), if it changed. */
interface PendingBatch {
  readonly changed: boolean;
  readonly root: TreeNode | null;
}

/**
 * Hashes the changes and sorts them by key hash, keeping each key's last change. Sorted natively on
 * one number per change, the key hash's leading bits then the change's index; runs that tie on
 * those bits are then ordered by the whole key hash.
 */
function prepareChanges(changes: readonly SmtChange[]): BatchWork {
  const n = changes.length;
  const keyHashes: string[] = new Array(n);
  const valueHashes: (string | null)[] = new Array(n);
  for (let i = 0; i < n; i++) {
    const change = changes[i]!;
    assert(change.key instanceof Uint8Array, "a change's key is bytes");
    assert(change.value === null || change.value instanceof Uint8Array, "a change's value is bytes or null");
    keyHashes[i] = sha256Binary(change.key);
    valueHashes[i] = change.value === null ? null : sha256Binary(change.value);
  }
  const indexBits = n <= 1 ? 1 : 32 - Math.clz32(n - 1);
  const indexScale = 2 ** indexBits;
  const prefixScale = 2 ** (32 - Math.min(32, 53 - indexBits));
  const sortKeys = new Float64Array(n);
  for (let i = 0; i < n; i++) {
    const h = keyHashes[i]!;
    const prefix =
      ((h.charCodeAt(0) << 24) | (h.charCodeAt(1) << 16) | (h.charCodeAt(2) << 8) | h.charCodeAt(3)) >>> 0;
    sortKeys[i] = Math.floor(prefix / prefixScale) * indexScale + i;
  }
  sortKeys.sort();
  const order: number[] = new Array(n);
  for (let j = 0; j < n; j++) order[j] = sortKeys[j]! % indexScale;
  for (let j = 0; j < n; ) {
    const high = Math.floor(sortKeys[j]! / indexScale);
    let k = j + 1;
    while (k < n && Math.floor(sortKeys[k]! / indexScale) === high) k++;
    if (k - j > 1) {
      // Binary strings compare like the bytes they hold.
      const run = order.slice(j, k).sort((a, b) => {
        const ka = keyHashes[a]!;
        const kb = keyHashes[b]!;
        return ka < kb ? -1 : ka > kb ? 1 : a - b;
      });
      for (let r = 0; r < run.length; r++) order[j + r] = run[r]!;
    }
    j = k;
  }
  const records = new Uint8Array(n * recordBytes);
  const puts = new Uint8Array(n);
  let count = 0;
  for (let j = 0; j < n; j++) {
    const i = order[j]!;
    // Equal key hashes are adjacent, in input order: the last one wins.
    if (j + 1 < n && keyHashes[order[j + 1]!] === keyHashes[i]) continue;
    copyDigest(keyHashes[i]!, records, count * recordBytes);
    const valueHash = valueHashes[i]!;
    if (valueHash !== null) {
      copyDigest(valueHash, records, count * recordBytes + smtHashBytes);
      puts[count] = 1;
    }
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
  /** The most changes one applyBatch takes. */
  readonly batchChangesMax: number;
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
    const bytes = this.store.get(smtNodeKeyFromHex(rootNodeKeyHex));
    this.rootNode =
      bytes === undefined ? null : decodeNode(0, bytes, emptyHash, 0, rootNodeKeyHex, this.cache.arena);
    if (this.rootNode !== null) this.rootNode.linked = true;
    this.cache.root = this.rootNode;
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
    this.cache.arena.reuseFreed();
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
      if (old !== null) {
        old.linked = false;
        this.cache.release(old);
      }
      if (root === null) {
        this.cache.clear();
      } else {
        root.linked = true;
        this.cache.own(root);
        this.adopt(root, old);
      }
      this.rootNode = root;
      this.cache.root = root;
      this.cache.trim();
      this.cache.arena.reuseFreed();
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
    else if (equalBytes(leaf.data, leaf.offset, keyHash, 0, smtHashBytes)) {
      terminal = { kind: "inclusion" };
      valueHash = copyOut(leaf.data, leaf.offset + smtHashBytes, smtHashBytes);
    } else {
      terminal = {
        kind: "leaf",
        keyHash: copyOut(leaf.data, leaf.offset, smtHashBytes),
        valueHash: copyOut(leaf.data, leaf.offset + smtHashBytes, smtHashBytes),
      };
    }
    this.cache.arena.reuseFreed();
    return { keyHash, valueHash, proof: { siblings, terminal } };
  }

  /** The committed value hash of `key`, or null when absent. */
  getValueHash(key: Uint8Array): Uint8Array | null {
    const keyHash = smtSha256(key);
    const leaf = this.locate(keyHash, null);
    let valueHash: Uint8Array | null = null;
    if (leaf !== null && equalBytes(leaf.data, leaf.offset, keyHash, 0, smtHashBytes)) {
      valueHash = copyOut(leaf.data, leaf.offset + smtHashBytes, smtHashBytes);
    }
    this.cache.arena.reuseFreed();
    return valueHash;
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
      const at = node.slotAt(slot);
      const hashAt = node.keptAt(slotsPerNode + slot);
      return this.updateLeafOrEmpty(work, depth, node.data, at, node.data, hashAt, lo, hi);
    }
    // No recency update on a hit: the node is about to be replaced, and its successor is cached as
    // the newest on commit.
    const cached = node.children === null ? null : node.children[slot]!;
    const child = cached ?? this.loadChild(node, slot, work.records, lo * recordBytes);
    return this.updateNode(work, child, lo, hi);
  }

  /**
   * A slot that held one leaf (at `leaf[leafOffset..]`, its hash at `leafHash[leafHashOffset..]`)
   * or nothing, after changes[lo..hi): unchanged, empty, a leaf, or a fresh subtree at `depth`.
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
      const sameKey = leaf !== null && equalBytes(leaf, leafOffset, records, at, smtHashBytes);
      if (leaf === null || sameKey) {
        if (puts[lo] === 0) return leaf === null ? kindUnchanged : work.empty();
        if (sameKey && equalBytes(leaf, leafOffset + smtHashBytes, records, at + smtHashBytes, smtHashBytes))
          return kindUnchanged;
        return work.leaf(records, at, null, 0);
      }
    }
    merged.count = 0;
    let pending = leaf !== null;
    for (let j = lo; j < hi; j++) {
      const at = j * recordBytes;
      if (pending) {
        const order = compareHashes(leaf!, leafOffset, records, at);
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
      equalBytes(merged.src[0]!, merged.off[0]!, leaf, leafOffset, leafSlotBytes)
    )
      return kindUnchanged;
    return this.build(work, depth, 0, count);
  }

  /** A fresh subtree at `depth` for the sorted, distinct leaves merged[lo..hi), hi > lo. */
  private build(work: BatchWork, depth: number, lo: number, hi: number): number {
    if (hi - lo === 1 && depth > 0) {
      return work.leaf(merged.src[lo]!, merged.off[lo]!, merged.hashSrc[lo]!, merged.hashOff[lo]!);
    }
    assert(depth <= nodePathNibblesMax, "two leaves share a whole key hash");
    const frame = frameAt(depth);
    let dirty = 0;
    for (let j = lo; j < hi; ) {
      const slot = nibbleAt(merged.src[j]!, merged.off[j]!, depth);
      let k = j + 1;
      while (k < hi && nibbleAt(merged.src[k]!, merged.off[k]!, depth) === slot) k++;
      frame.take(slot, this.build(work, depth + 1, j, k), work);
      dirty |= 1 << slot;
      j = k;
    }
    return this.assemble(work, depth, null, dirty, frame, merged.src[lo]!, merged.off[lo]!);
  }

  /**
   * Builds the node at `depth` from `base` with the slots in `dirty` replaced by the frame's, and
   * records its write; or records its deletion when it emptied or (below the root) kept one leaf,
   * in which case that leaf is the result and nothing is built. `ref[refOffset..]` is a key hash
   * on the node's path.
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
    let childMask = (base === null ? 0 : base.childMask) & ~dirty;
    let leafMask = (base === null ? 0 : base.leafMask) & ~dirty;
    for (let slot = 0; slot < slotsPerNode; slot++) {
      if (!hasBit(dirty, slot)) continue;
      const kind = frame.kind[slot]!;
      if (kind !== kindEmpty) childMask |= 1 << slot;
      if (kind === kindLeaf) leafMask |= 1 << slot;
    }
    // A rebuilt node has its predecessor's path, so its key: that string is flat and its hash known.
    const key = base === null ? nodeKeyHex(depth, ref, refOffset) : base.key;
    const present = popCount32(childMask);
    if (present === 0 || (depth > 0 && present === 1 && leafMask === childMask)) {
      assert(base !== null, "a fresh node holds two leaves or more");
      work.writes.set(key, null);
      let kind: number;
      if (present === 0) kind = work.empty();
      else {
        const slot = lowestBit(childMask);
        if (hasBit(dirty, slot)) {
          kind = work.leaf(frame.src[slot]!, frame.off[slot]!, frame.hashSrc[slot]!, frame.hashOff[slot]!);
        } else {
          kind = work.leaf(base.data, base.slotAt(slot), base.data, base.keptAt(slotsPerNode + slot));
        }
      }
      frame.release(dirty);
      return kind;
    }
    const kept = keptPositions(childMask, leafMask);
    const length = slotOffsetIn(childMask, leafMask, slotsPerNode);
    const at = work.take(length + popCount32(kept) * smtHashBytes);
    const data = work.chunk;
    writeHeader(data, at, childMask, leafMask);
    let to = at + nodeHeaderBytes;
    let baseAt = base === null ? 0 : base.at + nodeHeaderBytes;
    // Unchanged slots are runs of the base's bytes: base.data[runFrom, baseAt) goes to data just
    // before `to`, copied when the run ends.
    let runFrom = baseAt;
    let children: (TreeNode | null)[] | null = null;
    for (let slot = 0; slot < slotsPerNode; slot++) {
      const baseLength =
        base === null || !hasBit(base.childMask, slot)
          ? 0
          : hasBit(base.leafMask, slot)
            ? leafSlotBytes
            : childSlotBytes;
      if (!hasBit(dirty, slot)) {
        to += baseLength;
        baseAt += baseLength;
        continue;
      }
      if (baseAt > runFrom) copyBytes(base!.data, runFrom, data, to - (baseAt - runFrom), baseAt - runFrom);
      baseAt += baseLength;
      runFrom = baseAt;
      if (!hasBit(childMask, slot)) continue;
      if (frame.kind[slot] === kindLeaf) {
        copyBytes(frame.src[slot]!, frame.off[slot]!, data, to, leafSlotBytes);
        to += leafSlotBytes;
      } else {
        const child = frame.node[slot]!;
        positionHashInto(child, 1, data, to);
        if (children === null) children = newChildren();
        children[slot] = child;
        to += childSlotBytes;
      }
    }
    if (baseAt > runFrom) copyBytes(base!.data, runFrom, data, to - (baseAt - runFrom), baseAt - runFrom);
    assert(to === at + length, "a node's bytes are written in full");
    const node = new TreeNode(
      depth,
      key,
      childMask,
      leafMask,
      kept,
      base === null ? 0xffff : dirty,
      data,
      at,
    );
    buildHashes(node, base, dirty, frame);
    node.children = children;
    frame.release(dirty);
    work.writes.set(key, new Uint8Array(data.buffer, data.byteOffset + at, length));
    return work.built(node);
  }

  /**
   * Links the batch's new `node` into the cache in place of `old`, the committed node at its path
   * (null if none): cached children of unchanged slots move over, the new children are cached in
   * turn, and whatever was cached under a changed slot is forgotten. Nothing is evicted meanwhile:
   * commit trims the cache once the new tree is whole.
   */
  private adopt(node: TreeNode, old: TreeNode | null): void {
    const oldChildren = old === null ? null : old.children;
    const fresh = node.children;
    if (!node.linked) {
      // Not cached (no budget): neither is anything below it.
      node.children = null;
      if (oldChildren !== null)
        for (const was of oldChildren) if (was !== null) this.cache.forgetSubtree(was);
      return;
    }
    // Reuse an array: the new children's, else the old node's, which commit retires.
    const children = fresh ?? oldChildren;
    for (let slot = 0; slot < slotsPerNode; slot++) {
      const was = oldChildren === null ? null : oldChildren[slot]!;
      if (hasBit(node.dirty, slot)) {
        const next = fresh === null ? null : fresh[slot]!;
        if (children !== null) children[slot] = null;
        if (next !== null) {
          this.cache.attach(node, slot, next, was, false);
          this.adopt(next, was);
        } else if (was !== null) {
          this.cache.forgetSubtree(was);
        }
      } else if (was !== null && children !== oldChildren) {
        children![slot] = was;
      }
    }
    node.children = children;
  }

  /** Reads, checks and caches the child at `slot` of `parent`; `ref[refOffset..]` is on its path. */
  private loadChild(parent: TreeNode, slot: number, ref: Uint8Array, refOffset: number): TreeNode {
    const depth = parent.pathNibbles + 1;
    const key = nodeKeyHex(depth, ref, refOffset);
    const bytes = this.store.get(smtNodeKeyFromHex(key));
    if (bytes === undefined) corrupt(`node ${key} is missing`);
    const arena = this.cache.accepts(parent) ? this.cache.arena : null;
    const node = decodeNode(depth, bytes, ref, refOffset, key, arena);
    positionHashInto(node, 1, hashScratch, 0);
    if (!equalBytes(parent.data, parent.slotAt(slot), hashScratch, 0, smtHashBytes)) {
      this.cache.release(node);
      corrupt(`node ${key} does not hash to what its parent holds`);
    }
    this.cache.attach(parent, slot, node, null, true);
    return node;
  }

  /**
   * Walks the committed tree along `keyHash` to where its path ends and returns the leaf there, or
   * null for an empty subtree; pushes the siblings met on the way when `siblings` is given.
   */
  private locate(
    keyHash: Uint8Array,
    siblings: (Uint8Array | null)[] | null,
  ): { data: Uint8Array; offset: number } | null {
    let node = this.rootNode;
    while (node !== null) {
      const slot = nibbleAt(keyHash, 0, node.pathNibbles);
      let position = 1;
      for (let level = 0; level < 4; level++) {
        const under = node.childMask & slotsUnder[position]!;
        if (under === 0) return null;
        if (isLoneLeaf(under, node.leafMask))
          return { data: node.data, offset: node.slotAt(31 - Math.clz32(under)) };
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
      if (hasBit(node.leafMask, slot)) return { data: node.data, offset: node.slotAt(slot) };
      const cached = node.children === null ? null : node.children[slot]!;
      if (cached !== null) this.cache.touch(cached);
      node = cached ?? this.loadChild(node, slot, keyHash, 0);
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
  const rootBytes = store.get(smtNodeKeyFromHex(rootNodeKeyHex));
  if (rootBytes === undefined) return { root: emptyHash.slice(), nodeCount: 0, leafCount: 0 };
  const root = decodeNode(0, rootBytes, emptyHash, 0, rootNodeKeyHex, null);
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
    const key = nodeKeyHex(node.pathNibbles + 1, childRef, 0);
    const bytes = store.get(smtNodeKeyFromHex(key));
    if (bytes === undefined) corrupt(`node ${key} is missing`);
    const decoded = decodeNode(node.pathNibbles + 1, bytes, childRef, 0, key, null);
    positionHashInto(decoded, 1, hashScratch, 0);
    if (!equalBytes(node.data, node.slotAt(slot), hashScratch, 0, smtHashBytes)) {
      corrupt(`node ${key} does not hash to what its parent holds`);
    }
    auditNode(store, decoded, childRef, counts);
  }
}

/**
 * A Map-backed node store for tests, benchmarks and tools; `write` applies a batch's nodeWrites,
 * keeping a copy of each node (a batch's writes share buffers, see SmtBatchResult.nodeWrites).
 */
export class MemorySmtNodeStore implements SmtNodeStore {
  readonly nodes = new Map<string, Uint8Array>();

  get(nodeKey: Uint8Array): Uint8Array | undefined {
    return this.nodes.get(hexOf(nodeKey));
  }

  write(nodeWrites: ReadonlyMap<string, Uint8Array | null>): void {
    for (const [key, bytes] of nodeWrites) {
      if (bytes === null) this.nodes.delete(key);
      else this.nodes.set(key, new Uint8Array(bytes));
    }
  }
}
