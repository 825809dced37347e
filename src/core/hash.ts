/**
 * SHA-256 for the core. @noble/hashes runs unchanged in Node and the browser, so the SDK computes
 * exactly the ids and roots the nodes do. Hot paths that only run on nodes (the state tree) may use
 * node:crypto; both are SHA-256 and agree bit for bit (checked by the encoding test vectors).
 */
import { sha256 as nobleSha256 } from "@noble/hashes/sha2.js";
import { concatBytes, toHex, utf8 } from "./encoding.ts";

export const hashBytesLength = 32;

export function sha256(...parts: Uint8Array[]): Uint8Array {
  if (parts.length === 1) return nobleSha256(parts[0]!);
  const h = nobleSha256.create();
  for (const part of parts) h.update(part);
  return h.digest();
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
