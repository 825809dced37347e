/**
 * SHA-256 for the core. @noble/hashes runs unchanged in Node and the browser, so the SDK computes
 * exactly the ids and roots the nodes do; under Node the native hash stands in for it. Hot paths that
 * only run on nodes (the state tree) may use node:crypto; both are SHA-256 and agree bit for bit
 * (checked by the encoding test vectors).
 */
import { sha256 as nobleSha256 } from "@noble/hashes/sha2.js";
import { concatBytes, toHex, utf8 } from "./encoding.ts";

export const hashBytesLength = 32;

/**
 * Node's native SHA-256 where the runtime offers it without an import (process.getBuiltinModule,
 * Node >= 20.16), so the browser bundle stays free of node:* modules. Nodes hash every transaction
 * several times (id, certificates, Merkle leaves and nodes). Parts are copied into one scratch
 * array and hashed in one shot, and the digest comes back as a binary string (young heap) copied
 * into a small array: 1.4 µs for a Merkle node against 3 µs through createHash and a Buffer digest,
 * and 8 µs for a 1 KiB certificate in JavaScript. Same function either way.
 */
interface NativeCrypto {
  hash(algorithm: "sha256", data: Uint8Array, encoding: "binary"): string;
}
const nativeCrypto = (() => {
  const runtime = (globalThis as { process?: { getBuiltinModule?: (id: string) => unknown } }).process;
  const crypto = runtime?.getBuiltinModule?.("node:crypto") as NativeCrypto | undefined;
  return typeof crypto?.hash === "function" ? crypto : undefined;
})();

/** Parts up to this many bytes in all are joined in the scratch array; longer ones get their own. */
const scratchBytesMax = 64 * 1024;
const scratch = new Uint8Array(scratchBytesMax);
/**
 * Views of the scratch array's first n bytes, made once per length up to viewsLengthMax: the
 * multi-part hashes (Merkle and state-tree nodes, leaves) are a few lengths, hashed thousands of
 * times a block, and a view is ~100 bytes of garbage each time.
 */
const viewsLengthMax = 1024;
const scratchViews: (Uint8Array | undefined)[] = [];

function scratchView(length: number): Uint8Array {
  if (length > viewsLengthMax) return scratch.subarray(0, length);
  let view = scratchViews[length];
  if (view === undefined) {
    view = scratch.subarray(0, length);
    scratchViews[length] = view;
  }
  return view;
}

function nativeSha256(crypto: NativeCrypto, parts: readonly Uint8Array[]): Uint8Array {
  let input: Uint8Array;
  if (parts.length === 1) {
    input = parts[0]!;
  } else {
    let length = 0;
    for (const part of parts) length += part.length;
    const target = length <= scratchBytesMax ? scratch : new Uint8Array(length);
    let at = 0;
    for (const part of parts) {
      target.set(part, at);
      at += part.length;
    }
    input = target === scratch ? scratchView(length) : target;
  }
  const out = new Uint8Array(hashBytesLength);
  nativeDigestInto(crypto, input, out, 0);
  return out;
}

/** The native digest comes back as a binary string (young heap), copied into `out` at `at`. */
function nativeDigestInto(crypto: NativeCrypto, input: Uint8Array, out: Uint8Array, at: number): void {
  const digest = crypto.hash("sha256", input, "binary");
  for (let i = 0; i < hashBytesLength; i++) out[at + i] = digest.charCodeAt(i);
}

export function sha256(...parts: Uint8Array[]): Uint8Array {
  if (nativeCrypto !== undefined) return nativeSha256(nativeCrypto, parts);
  if (parts.length === 1) return nobleSha256(parts[0]!);
  const h = nobleSha256.create();
  for (const part of parts) h.update(part);
  return h.digest();
}

/**
 * SHA-256 of one tag byte followed by `length` bytes of `source` from `start`, written into `out` at
 * `at`: Merkle levels are hashed inside one buffer instead of an array a node. `out` may be
 * `source` (the input is read before the digest is written).
 */
export function sha256TaggedInto(
  tag: number,
  source: Uint8Array,
  start: number,
  length: number,
  out: Uint8Array,
  at: number,
): void {
  if (nativeCrypto === undefined || length + 1 > scratchBytesMax) {
    const digest = sha256(Uint8Array.of(tag), source.subarray(start, start + length));
    out.set(digest, at);
    return;
  }
  scratch[0] = tag;
  if (length <= 64) {
    for (let i = 0; i < length; i++) scratch[1 + i] = source[start + i]!;
  } else {
    scratch.set(source.subarray(start, start + length), 1);
  }
  nativeDigestInto(nativeCrypto, scratchView(length + 1), out, at);
}

/** Hash with a domain tag, so bytes of one kind can never be replayed as another kind. */
export function taggedHash(tag: string, ...parts: Uint8Array[]): Uint8Array {
  return sha256(utf8(tag), new Uint8Array([0]), ...parts);
}

export function sha256Hex(...parts: Uint8Array[]): string {
  return toHex(sha256(...parts));
}

export const zeroHash: Uint8Array = new Uint8Array(32);

export { concatBytes };
