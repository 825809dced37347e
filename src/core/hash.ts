/**
 * SHA-256 for the core. @noble/hashes runs unchanged in Node and the browser, so the SDK computes
 * exactly the ids and roots the nodes do; under Node the native hash stands in for it. Hot paths that
 * only run on nodes (the state tree) may use node:crypto; both are SHA-256 and agree bit for bit
 * (checked by the encoding test vectors).
 */
import { sha256 as nobleSha256 } from "@noble/hashes/sha2.js";
import { concatBytes, toHex, utf8 } from "./encoding.ts";

export const hashBytesLength = 32;

interface NativeHash {
  update(data: Uint8Array): NativeHash;
  digest(): Uint8Array;
}

/**
 * Node's native SHA-256 where the runtime offers it without an import (process.getBuiltinModule,
 * Node >= 20.16), so the browser bundle stays free of node:* modules. Measured: 1.6 µs for a
 * 200-byte body and 1.7 µs for a 1 KiB certificate natively, against 2.7 µs and 8 µs in JavaScript;
 * nodes hash every transaction several times (id, certificates, Merkle leaves). Same function.
 */
interface NativeCrypto {
  hash(algorithm: "sha256", data: Uint8Array, encoding: "buffer"): Uint8Array;
  createHash(algorithm: "sha256"): NativeHash;
}
const nativeCrypto = (() => {
  const runtime = (globalThis as { process?: { getBuiltinModule?: (id: string) => unknown } }).process;
  const crypto = runtime?.getBuiltinModule?.("node:crypto") as NativeCrypto | undefined;
  return typeof crypto?.hash === "function" ? crypto : undefined;
})();

function asPlainBytes(digest: Uint8Array): Uint8Array {
  return new Uint8Array(digest.buffer, digest.byteOffset, digest.byteLength);
}

export function sha256(...parts: Uint8Array[]): Uint8Array {
  if (nativeCrypto !== undefined) {
    if (parts.length === 1) return asPlainBytes(nativeCrypto.hash("sha256", parts[0]!, "buffer"));
    const h = nativeCrypto.createHash("sha256");
    for (const part of parts) h.update(part);
    return asPlainBytes(h.digest());
  }
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
