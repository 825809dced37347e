/**
 * The one definition of the bytes that are hashed and signed.
 *
 * Every consensus structure is encoded as deterministic CBOR (RFC 8949 §4.2.1 "core deterministic
 * encoding": shortest integer forms, definite lengths, map keys sorted bytewise) over a deliberately
 * small data model: null, booleans, safe integers, text, bytes, arrays and text-keyed maps. Floats,
 * undefined, tags and big integers are refused on both sides, because each of them has more than one
 * encoding or none that every platform agrees on.
 *
 * Decoding untrusted bytes re-encodes the result and requires the same bytes back, so two different
 * byte strings can never decode to the same structure (no malleability of hashed objects).
 */

import type { EncodeOptions } from "cborg";
import { decode as cborDecode, encode as cborEncode, rfc8949EncodeOptions } from "cborg";
import { CodedError } from "./errors.ts";

export type Canonical =
  | null
  | boolean
  | number
  | string
  | Uint8Array
  | readonly Canonical[]
  | { readonly [key: string]: Canonical };

/** Nesting beyond this is refused: it bounds recursion on untrusted input. */
export const canonicalDepthMax = 32;

function refuse(what: string): never {
  throw new CodedError("BAD_ENCODING", `canonical encoding refuses ${what}`);
}

const encodeOptions: EncodeOptions = {
  ...rfc8949EncodeOptions,
  typeEncoders: {
    number: (value: unknown) => {
      if (!Number.isSafeInteger(value)) refuse(`the number ${String(value)} (only safe integers)`);
      return null;
    },
    undefined: () => refuse("undefined"),
    bigint: () => refuse("bigint"),
    Map: () => refuse("Map (use a plain object)"),
    Set: () => refuse("Set"),
    Date: () => refuse("Date (use integer milliseconds)"),
  },
};

const decodeOptions = {
  strict: true,
  allowIndefinite: false,
  allowUndefined: false,
  allowInfinity: false,
  allowNaN: false,
  allowBigInt: false,
  rejectDuplicateMapKeys: true,
  useMaps: false,
} as const;

export function encodeCanonical(value: Canonical): Uint8Array {
  return cborEncode(value, encodeOptions);
}

/**
 * Decodes bytes that must already be canonical; anything else is a BAD_ENCODING error.
 * `depth` is where the value sits inside an enclosing structure, for the nesting bound.
 */
export function decodeCanonical(bytes: Uint8Array, bytesMax: number, depth = 0): Canonical {
  const value = decodeStoredCanonical(bytes, bytesMax, depth);
  const again = encodeCanonical(value);
  if (!bytesEqual(again, bytes)) throw new CodedError("BAD_ENCODING", "CBOR is valid but not canonical");
  return value;
}

/**
 * Decodes a record this node's own execution wrote to world state: strict and bounded like
 * decodeCanonical, without re-encoding to compare. The bytes came out of encodeCanonical, and the
 * state root that covers them is checked against the chain at start and by `citychain verify`; the
 * comparison would double the cost of every state read for nothing.
 */
export function decodeStoredCanonical(bytes: Uint8Array, bytesMax: number, depth = 0): Canonical {
  if (bytes.length > bytesMax) {
    throw new CodedError("BAD_ENCODING", `encoded value is ${bytes.length} bytes, limit ${bytesMax}`);
  }
  let value: unknown;
  try {
    value = cborDecode(bytes, decodeOptions);
  } catch (error) {
    throw new CodedError("BAD_ENCODING", `not valid CBOR: ${(error as Error).message}`);
  }
  checkDepth(value, depth);
  return value as Canonical;
}

function checkDepth(value: unknown, depth: number): void {
  if (depth > canonicalDepthMax) refuse(`nesting deeper than ${canonicalDepthMax}`);
  if (Array.isArray(value)) {
    for (const item of value) checkDepth(item, depth + 1);
  } else if (value !== null && typeof value === "object" && !(value instanceof Uint8Array)) {
    for (const item of Object.values(value)) checkDepth(item, depth + 1);
  }
}

/** Above this length Node's native comparison (memcmp) beats the loop; blocks run to megabytes. */
const nativeCompareBytesMin = 64;

export function bytesEqual(a: Uint8Array, b: Uint8Array): boolean {
  if (a.length !== b.length) return false;
  if (NodeBuffer !== undefined && a.length >= nativeCompareBytesMin) return NodeBuffer.compare(a, b) === 0;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}

export function compareBytes(a: Uint8Array, b: Uint8Array): number {
  const n = Math.min(a.length, b.length);
  for (let i = 0; i < n; i++) {
    const d = a[i]! - b[i]!;
    if (d !== 0) return d;
  }
  return a.length - b.length;
}

const hexAlphabet = "0123456789abcdef";
const hexTable: string[] = Array.from({ length: 256 }, (_, i) => hexAlphabet[i >> 4]! + hexAlphabet[i & 15]!);

/** Node's Buffer when present: its hex and base64 codecs are native; browsers take the loops below. */
const NodeBuffer = (globalThis as { Buffer?: typeof Buffer }).Buffer;

export function toHex(bytes: Uint8Array): string {
  if (NodeBuffer !== undefined)
    return NodeBuffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).toString("hex");
  let out = "";
  for (let i = 0; i < bytes.length; i++) out += hexTable[bytes[i]!];
  return out;
}

const hexPattern = /^(?:[0-9a-f]{2})*$/;

/** Lower-case hex only: ids have exactly one spelling. */
export function fromHex(hex: string, field = "hex"): Uint8Array {
  if (!hexPattern.test(hex)) throw new CodedError("BAD_ENCODING", `${field} is not lower-case hex`, field);
  if (NodeBuffer !== undefined) return new Uint8Array(NodeBuffer.from(hex, "hex"));
  const out = new Uint8Array(hex.length / 2);
  for (let i = 0; i < out.length; i++) out[i] = Number.parseInt(hex.slice(i * 2, i * 2 + 2), 16);
  return out;
}

const textEncoder = new TextEncoder();
const textDecoder = new TextDecoder("utf-8", { fatal: true });

export function utf8(text: string): Uint8Array {
  return textEncoder.encode(text);
}

export function fromUtf8(bytes: Uint8Array): string {
  return textDecoder.decode(bytes);
}

export function concatBytes(...parts: Uint8Array[]): Uint8Array {
  let length = 0;
  for (const part of parts) length += part.length;
  const out = new Uint8Array(length);
  let offset = 0;
  for (const part of parts) {
    out.set(part, offset);
    offset += part.length;
  }
  return out;
}

export function toBase64(bytes: Uint8Array): string {
  if (NodeBuffer !== undefined)
    return NodeBuffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).toString("base64");
  let binary = "";
  for (let i = 0; i < bytes.length; i++) binary += String.fromCharCode(bytes[i]!);
  return btoa(binary);
}

const base64Pattern = /^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$/;

/** Strict standard base64 with padding: one spelling per byte string. */
export function fromBase64(text: string, field = "base64"): Uint8Array {
  if (!base64Pattern.test(text)) throw new CodedError("BAD_ENCODING", `${field} is not base64`, field);
  if (NodeBuffer !== undefined) return new Uint8Array(NodeBuffer.from(text, "base64"));
  let binary: string;
  try {
    binary = atob(text);
  } catch {
    throw new CodedError("BAD_ENCODING", `${field} is not base64`, field);
  }
  const out = new Uint8Array(binary.length);
  for (let i = 0; i < binary.length; i++) out[i] = binary.charCodeAt(i);
  return out;
}
