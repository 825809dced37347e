/**
 * Binary Merkle tree over an ordered list (transactions of a block, their results), shaped as in
 * RFC 6962 §2.1: leaf = H(0x00 || data), node = H(0x01 || left || right), split at the largest power
 * of two below n. An empty list hashes to H(""). Domain-separated leaves and nodes make a second
 * preimage (an inner node passed off as a leaf) impossible.
 */
import { bytesEqual } from "./encoding.ts";
import { sha256 } from "./hash.ts";

const leafPrefix = new Uint8Array([0]);
const nodePrefix = new Uint8Array([1]);

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
  // Bottom-up pairing gives the RFC 6962 shape: a lone last node is promoted unchanged.
  let level = leafHashes.slice();
  while (level.length > 1) {
    const next: Uint8Array[] = [];
    for (let i = 0; i < level.length; i += 2) {
      next.push(i + 1 < level.length ? nodeHash(level[i]!, level[i + 1]!) : level[i]!);
    }
    level = next;
  }
  return level[0]!;
}

export function merkleRoot(items: readonly Uint8Array[]): Uint8Array {
  return merkleRootOfLeafHashes(items.map(merkleLeafHash));
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
