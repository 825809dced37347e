/**
 * Binary Merkle tree over an ordered list (transactions of a block, their results), shaped as in
 * RFC 6962 §2.1: leaf = H(0x00 || data), node = H(0x01 || left || right), split at the largest power
 * of two below n. An empty list hashes to H(""). Domain-separated leaves and nodes make a second
 * preimage (an inner node passed off as a leaf) impossible.
 */
import { bytesEqual } from "./encoding.ts";
import { hashBytesLength, sha256, sha256TaggedInto } from "./hash.ts";

const leafTag = 0;
const nodeTag = 1;
const leafPrefix = new Uint8Array([leafTag]);
const nodePrefix = new Uint8Array([nodeTag]);

export function merkleLeafHash(data: Uint8Array): Uint8Array {
  return sha256(leafPrefix, data);
}

function nodeHash(left: Uint8Array, right: Uint8Array): Uint8Array {
  return sha256(nodePrefix, left, right);
}

function splitPoint(n: number): number {
  let k = 1;
  while (k * 2 < n) k *= 2;
  return k;
}

/** Root over leaf hashes already computed with merkleLeafHash. */
export function merkleRootOfLeafHashes(leafHashes: readonly Uint8Array[]): Uint8Array {
  if (leafHashes.length === 0) return sha256(new Uint8Array(0));
  const level = new Uint8Array(leafHashes.length * hashBytesLength);
  for (let i = 0; i < leafHashes.length; i++) {
    const hash = leafHashes[i]!;
    if (hash.length !== hashBytesLength)
      throw new RangeError(`leaf hash ${i} is not ${hashBytesLength} bytes`);
    level.set(hash, i * hashBytesLength);
  }
  return rootOfLevel(level, leafHashes.length);
}

export function merkleRoot(items: readonly Uint8Array[]): Uint8Array {
  return merkleRootOf(items.length, (i) => items[i]!);
}

/**
 * Root over `count` leaves whose data `leaf(i)` gives; the data may be a transient view (it is hashed
 * before the next call). Leaf and inner hashes are written into one buffer, not an array each: a
 * block's transaction and result roots hash two nodes a transaction on every validator.
 */
export function merkleRootOf(count: number, leaf: (index: number) => Uint8Array): Uint8Array {
  if (count === 0) return sha256(new Uint8Array(0));
  const level = new Uint8Array(count * hashBytesLength);
  for (let i = 0; i < count; i++) {
    const data = leaf(i);
    sha256TaggedInto(leafTag, data, 0, data.length, level, i * hashBytesLength);
  }
  return rootOfLevel(level, count);
}

/**
 * Reduces `count` hashes at the start of `level` to the root, in place. Bottom-up pairing gives the
 * RFC 6962 shape: a lone last node is promoted unchanged. Node j of the next level is written at
 * j * 32, never past the pair (2j, 2j + 1) it comes from, so no unread hash is overwritten.
 */
function rootOfLevel(level: Uint8Array, count: number): Uint8Array {
  let n = count;
  while (n > 1) {
    let next = 0;
    for (let i = 0; i < n; i += 2) {
      const from = i * hashBytesLength;
      const to = next * hashBytesLength;
      if (i + 1 < n) sha256TaggedInto(nodeTag, level, from, 2 * hashBytesLength, level, to);
      else level.copyWithin(to, from, from + hashBytesLength);
      next++;
    }
    n = next;
  }
  return level.slice(0, hashBytesLength);
}

/** Audit path for leaf `index` (RFC 6962 §2.1.1), siblings listed from the leaf up. */
export function merkleProof(leafHashes: readonly Uint8Array[], index: number): Uint8Array[] {
  if (!Number.isInteger(index) || index < 0 || index >= leafHashes.length) {
    throw new RangeError(`leaf index ${index} out of range 0..${leafHashes.length - 1}`);
  }
  return auditPath(leafHashes, index).reverse();
}

function auditPath(leaves: readonly Uint8Array[], index: number): Uint8Array[] {
  if (leaves.length <= 1) return [];
  const k = splitPoint(leaves.length);
  if (index < k) return [merkleRootOfLeafHashes(leaves.slice(k)), ...auditPath(leaves.slice(0, k), index)];
  return [merkleRootOfLeafHashes(leaves.slice(0, k)), ...auditPath(leaves.slice(k), index - k)];
}

/** Recomputes the root from a leaf and its audit path (RFC 9162 §2.1.3.2). */
export function verifyMerkleProof(
  root: Uint8Array,
  leafHash: Uint8Array,
  index: number,
  size: number,
  path: readonly Uint8Array[],
): boolean {
  if (!Number.isInteger(index) || !Number.isInteger(size) || index < 0 || index >= size) return false;
  if (path.length > 64) return false;
  let fn = index;
  let sn = size - 1;
  let r = leafHash;
  for (const p of path) {
    if (p.length !== 32 || sn === 0) return false;
    if ((fn & 1) === 1 || fn === sn) {
      r = nodeHash(p, r);
      if ((fn & 1) === 0) {
        while ((fn & 1) === 0 && fn !== 0) {
          fn >>= 1;
          sn >>= 1;
        }
      }
    } else {
      r = nodeHash(r, p);
    }
    fn >>= 1;
    sn >>= 1;
  }
  return sn === 0 && bytesEqual(r, root);
}
