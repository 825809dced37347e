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
  return encodeCanonicalFast(value) ?? encodeCanonicalGeneric(value);
}

/** The generic path of encodeCanonical: cborg with the RFC 8949 options and our refusals. */
export function encodeCanonicalGeneric(value: Canonical): Uint8Array {
  return cborEncode(value, encodeOptions);
}

// ---- the fast path of encodeCanonical ----
//
// The data model written straight into one growing scratch buffer, instead of cborg's tokens (its
// encoder was ~4 % of a validator's main thread at saturation: results, messages, blocks). Only
// plain data takes it: null, booleans, safe integers, well-formed strings, Uint8Arrays, arrays and
// plain objects, nested at most encodeFastDepthMax deep. Anything else (a float, undefined, a Map, a
// cycle, a lone surrogate…) goes to cborg, which encodes it or refuses it as before. Both produce
// the same bytes for what the fast path takes (test/unit/canonical-fast.test.ts compares them).

const encodeFastDepthMax = 64;
/** The scratch buffer is kept up to this size between encodings. */
const encodeScratchKeptBytesMax = 8 * 1024 * 1024;
/**
 * Below this length ASCII text is copied by a loop, both ways (characters written, bytes read): cheaper
 * than a TextEncoder or TextDecoder call. For ASCII, characters and bytes are the same count.
 */
const shortAsciiLength = 32;

class CanonicalWriter {
  buffer = new Uint8Array(4096);
  at = 0;
  busy = false;

  reserve(bytes: number): void {
    if (this.at + bytes <= this.buffer.length) return;
    let size = this.buffer.length * 2;
    while (size < this.at + bytes) size *= 2;
    const grown = new Uint8Array(size);
    grown.set(this.buffer.subarray(0, this.at));
    this.buffer = grown;
  }

  head(major: number, argument: number): void {
    this.reserve(9);
    const b = this.buffer;
    const m = major << 5;
    if (argument < 24) b[this.at++] = m | argument;
    else if (argument < 0x100) {
      b[this.at++] = m | 24;
      b[this.at++] = argument;
    } else if (argument < 0x10000) {
      b[this.at++] = m | 25;
      b[this.at++] = argument >>> 8;
      b[this.at++] = argument & 0xff;
    } else if (argument < 0x100000000) {
      b[this.at++] = m | 26;
      this.uint32(argument);
    } else {
      b[this.at++] = m | 27;
      this.uint32(Math.floor(argument / 0x100000000));
      this.uint32(argument >>> 0);
    }
  }

  /** Four bytes, big-endian; the caller reserved them. */
  private uint32(value: number): void {
    const b = this.buffer;
    b[this.at++] = value >>> 24;
    b[this.at++] = (value >>> 16) & 0xff;
    b[this.at++] = (value >>> 8) & 0xff;
    b[this.at++] = value & 0xff;
  }

  bytes(major: number, bytes: Uint8Array): void {
    this.head(major, bytes.length);
    this.reserve(bytes.length);
    this.buffer.set(bytes, this.at);
    this.at += bytes.length;
  }

  /** False for a string with a lone surrogate (left to cborg). */
  text(text: string): boolean {
    if (text.length < shortAsciiLength && isAscii(text)) {
      this.head(3, text.length);
      this.reserve(text.length);
      for (let i = 0; i < text.length; i++) this.buffer[this.at++] = text.charCodeAt(i);
      return true;
    }
    if (!isWellFormed(text)) return false;
    this.bytes(3, textEncoder.encode(text));
    return true;
  }

  value(value: unknown, depth: number): boolean {
    if (depth > encodeFastDepthMax) return false;
    switch (typeof value) {
      case "number":
        if (!Number.isSafeInteger(value)) return false;
        if (value >= 0) this.head(0, value);
        else this.head(1, -1 - value);
        return true;
      case "string":
        return this.text(value);
      case "boolean":
        this.reserve(1);
        this.buffer[this.at++] = value ? 0xf5 : 0xf4;
        return true;
      case "object": {
        if (value === null) {
          this.reserve(1);
          this.buffer[this.at++] = 0xf6;
          return true;
        }
        if (value instanceof Uint8Array) {
          if (value.constructor !== Uint8Array && !(NodeBuffer?.isBuffer(value) ?? false)) return false;
          this.bytes(2, value);
          return true;
        }
        if (Array.isArray(value)) {
          this.head(4, value.length);
          for (const item of value) if (!this.value(item, depth + 1)) return false;
          return true;
        }
        if (Object.getPrototypeOf(value) !== Object.prototype) return false;
        const record = value as Record<string, unknown>;
        const keys = Object.keys(record);
        // RFC 8949 §4.2.1: bytewise order of the encoded keys, which for text is shorter UTF-8
        // first, then bytewise; ASCII keys compare as their characters.
        if (keys.every(isAscii)) keys.sort(compareAsciiKeys);
        else {
          for (const key of keys) if (!isWellFormed(key)) return false;
          const encoded = new Map(keys.map((key) => [key, textEncoder.encode(key)]));
          keys.sort((a, b) => compareUtf8Keys(encoded.get(a)!, encoded.get(b)!));
        }
        this.head(5, keys.length);
        for (const key of keys) {
          if (!this.text(key) || !this.value(record[key], depth + 1)) return false;
        }
        return true;
      }
      default:
        return false; // undefined, bigint, symbol, function
    }
  }
}

function isAscii(text: string): boolean {
  for (let i = 0; i < text.length; i++) if (text.charCodeAt(i) >= 0x80) return false;
  return true;
}

const loneSurrogate = /[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/;

function isWellFormed(text: string): boolean {
  const native = (text as { isWellFormed?: () => boolean }).isWellFormed;
  return native !== undefined ? native.call(text) : !loneSurrogate.test(text);
}

function compareUtf8Keys(a: Uint8Array, b: Uint8Array): number {
  return a.length !== b.length ? a.length - b.length : compareBytes(a, b);
}

function compareAsciiKeys(a: string, b: string): number {
  if (a.length !== b.length) return a.length - b.length;
  return a < b ? -1 : a > b ? 1 : 0;
}

const canonicalWriter = new CanonicalWriter();

/**
 * Encodes plain data into the writer's scratch buffer and returns its length, or -1 to leave the
 * value to cborg. The bytes stay in `canonicalWriter.buffer` until the next encoding. Blocks of a few
 * MiB keep their buffer (no regrowing per block); a rare larger one is dropped before the next.
 */
function encodeIntoScratch(value: Canonical): number {
  const writer = canonicalWriter;
  if (writer.busy) return -1; // re-entered from a getter: not plain data
  writer.busy = true;
  if (writer.buffer.length > encodeScratchKeptBytesMax) writer.buffer = new Uint8Array(4096);
  writer.at = 0;
  try {
    return writer.value(value, 0) ? writer.at : -1;
  } finally {
    writer.busy = false;
  }
}

/** The canonical encoding of plain data, or undefined to leave the value to cborg. Exported for tests. */
export function encodeCanonicalFast(value: Canonical): Uint8Array | undefined {
  const length = encodeIntoScratch(value);
  return length < 0 ? undefined : canonicalWriter.buffer.slice(0, length);
}

/**
 * encodeCanonical's bytes as a view of the encoder's scratch buffer, valid only until the next
 * encoding: for bytes that are hashed at once and dropped (a block's result leaves), without a copy.
 */
export function encodeCanonicalTransient(value: Canonical): Uint8Array {
  const length = encodeIntoScratch(value);
  return length < 0 ? encodeCanonicalGeneric(value) : canonicalWriter.buffer.subarray(0, length);
}

/**
 * Decodes bytes that must already be canonical; anything else is a BAD_ENCODING error.
 * `depth` is where the value sits inside an enclosing structure, for the nesting bound.
 */
export function decodeCanonical(bytes: Uint8Array, bytesMax: number, depth = 0): Canonical {
  if (bytes.length <= bytesMax) {
    const fast = decodeCanonicalFast(bytes, depth);
    if (fast !== undefined) return fast;
  }
  return decodeCanonicalStrict(bytes, bytesMax, depth);
}

/** The generic path of decodeCanonical: decode, then re-encode and require the same bytes. */
export function decodeCanonicalStrict(bytes: Uint8Array, bytesMax: number, depth = 0): Canonical {
  const value = decodeStoredCanonical(bytes, bytesMax, depth);
  const again = encodeCanonical(value);
  if (!bytesEqual(again, bytes)) throw new CodedError("BAD_ENCODING", "CBOR is valid but not canonical");
  return value;
}

// ---- the fast path of decodeCanonical ----
//
// One pass over the bytes that builds the value and checks canonical form as it goes, instead of a
// generic decode followed by a re-encode to compare (that pair, for transaction payloads alone, was
// ~6 % of a validator's main thread at saturation). It accepts only input it knows the strict path
// accepts with the same value: shortest heads, definite lengths, safe integers, false/true/null,
// well-formed UTF-8 text not starting with U+FEFF, text-keyed maps with keys in strictly increasing
// bytewise order of their encodings and none named "__proto__", and nesting within the bound.
// Anything else returns undefined and goes to the strict path, which then accepts or refuses it
// with its own error: the fast path can make decoding cheaper, never change its outcome
// (test/unit/canonical-fast.test.ts compares both on generated and mutated input).

/** Returned by the fast reader for anything it leaves to the strict path; never escapes a decoder. */
export const leaveToStrict: unique symbol = Symbol("leave to the strict decoder");
const fatalUtf8 = new TextDecoder("utf-8", { fatal: true, ignoreBOM: true });

/** A cursor over canonical CBOR; the transaction envelope's hand reader (tx.ts) builds on it. */
export class CanonicalReader {
  at = 0;
  /** The major type of the last head read. */
  major = 0;
  constructor(readonly bytes: Uint8Array) {}

  /** The argument of the head at `at` if it is in shortest form, else leaveToStrict; sets `major`. */
  head(): number | typeof leaveToStrict {
    const bytes = this.bytes;
    if (this.at >= bytes.length) return leaveToStrict;
    const initial = bytes[this.at++]!;
    this.major = initial >> 5;
    const info = initial & 31;
    if (info < 24) return info;
    if (info === 24) {
      if (this.at + 1 > bytes.length) return leaveToStrict;
      const value = bytes[this.at]!;
      this.at += 1;
      return value < 24 ? leaveToStrict : value;
    }
    if (info === 25) {
      if (this.at + 2 > bytes.length) return leaveToStrict;
      const value = (bytes[this.at]! << 8) | bytes[this.at + 1]!;
      this.at += 2;
      return value < 0x100 ? leaveToStrict : value;
    }
    if (info === 26) {
      if (this.at + 4 > bytes.length) return leaveToStrict;
      const value = uint32At(bytes, this.at);
      this.at += 4;
      return value < 0x10000 ? leaveToStrict : value;
    }
    if (info === 27) {
      if (this.at + 8 > bytes.length) return leaveToStrict;
      const high = uint32At(bytes, this.at);
      const low = uint32At(bytes, this.at + 4);
      this.at += 8;
      // Shortest form needs a high word; a safe integer has at most 21 bits in it.
      if (high === 0 || high > 0x1fffff) return leaveToStrict;
      return high * 0x100000000 + low;
    }
    return leaveToStrict; // reserved, or indefinite length
  }

  text(length: number): string | typeof leaveToStrict {
    const bytes = this.bytes;
    const start = this.at;
    const end = start + length;
    if (end > bytes.length) return leaveToStrict;
    this.at = end;
    if (length < shortAsciiLength) {
      // Under Node the bytes go through the scratch Buffer: one string allocated, not one a character.
      for (let i = start; i < end; i++) {
        const c = bytes[i]!;
        if (c >= 0x80) return utf8Text(bytes, start, end);
        if (scratch !== undefined) scratch[i - start] = c;
      }
      return scratch !== undefined
        ? scratch.toString("latin1", 0, length)
        : String.fromCharCode(...bytes.subarray(start, end));
    }
    return utf8Text(bytes, start, end);
  }

  value(depth: number): Canonical | typeof leaveToStrict {
    if (depth > canonicalDepthMax) return leaveToStrict;
    const argument = this.head();
    if (argument === leaveToStrict) return leaveToStrict;
    switch (this.major) {
      case 0:
        return argument;
      case 1:
        // -1 - argument must stay a safe integer.
        return argument > Number.MAX_SAFE_INTEGER - 1 ? leaveToStrict : -1 - argument;
      case 2: {
        if (this.at + argument > this.bytes.length) return leaveToStrict;
        const out = this.bytes.slice(this.at, this.at + argument);
        this.at += argument;
        return out;
      }
      case 3:
        return this.text(argument);
      case 4: {
        if (argument > this.bytes.length - this.at) return leaveToStrict; // each item takes a byte
        const out: Canonical[] = [];
        for (let i = 0; i < argument; i++) {
          const item = this.value(depth + 1);
          if (item === leaveToStrict) return leaveToStrict;
          out.push(item);
        }
        return out;
      }
      case 5: {
        if (argument > (this.bytes.length - this.at) / 2) return leaveToStrict;
        const out: { [key: string]: Canonical } = {};
        let previousKey: Uint8Array | null = null;
        for (let i = 0; i < argument; i++) {
          const keyStart = this.at;
          const length = this.head();
          if (length === leaveToStrict || (this.major as number) !== 3) return leaveToStrict;
          const key = this.text(length);
          if (key === leaveToStrict || key === "__proto__") return leaveToStrict;
          // The key as encoded (head and text): strictly after the previous one, or not canonical.
          const encodedKey = this.bytes.subarray(keyStart, this.at);
          if (previousKey !== null && compareBytes(previousKey, encodedKey) >= 0) return leaveToStrict;
          previousKey = encodedKey;
          const item = this.value(depth + 1);
          if (item === leaveToStrict) return leaveToStrict;
          out[key] = item;
        }
        return out;
      }
      case 7:
        if (argument === 20) return false;
        if (argument === 21) return true;
        if (argument === 22) return null;
        return leaveToStrict; // undefined, other simple values, floats
      default:
        return leaveToStrict; // tags
    }
  }
}

/** Four bytes at `at`, big-endian, as a non-negative number (the caller checked they are there). */
function uint32At(bytes: Uint8Array, at: number): number {
  return bytes[at]! * 0x1000000 + ((bytes[at + 1]! << 16) | (bytes[at + 2]! << 8) | bytes[at + 3]!);
}

function utf8Text(bytes: Uint8Array, start: number, end: number): string | typeof leaveToStrict {
  let text: string;
  try {
    text = fatalUtf8.decode(bytes.subarray(start, end));
  } catch {
    return leaveToStrict; // not UTF-8: the strict path says so
  }
  // A leading U+FEFF is dropped by the strict decoder, so the input is not canonical; it says so.
  return text.charCodeAt(0) === 0xfeff ? leaveToStrict : text;
}

/**
 * The value of canonical `bytes` at nesting `depth`, or undefined to leave them to the strict path.
 * Exported for the tests that compare both paths; callers use decodeCanonical.
 */
export function decodeCanonicalFast(bytes: Uint8Array, depth = 0): Canonical | undefined {
  // Over a plain Uint8Array view, so byte strings come out as Uint8Array copies (as from the strict
  // path) even when the input is a Buffer, whose slice() would share the input's memory.
  const plain =
    bytes.constructor === Uint8Array ? bytes : new Uint8Array(bytes.buffer, bytes.byteOffset, bytes.length);
  const reader = new CanonicalReader(plain);
  const value = reader.value(depth);
  if (value === leaveToStrict || reader.at !== bytes.length) return undefined;
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

/**
 * Short inputs (hashes, ids) are copied into one scratch Buffer and read back from it: no Buffer
 * object a call, and no off-heap copy forced out of a small on-heap array by reading its `.buffer`.
 * Nodes turn several hashes a transaction into hex; this was ~0.9 KB of garbage each.
 */
const scratchBytesMax = 64;
const scratch = NodeBuffer?.allocUnsafeSlow(scratchBytesMax);

export function toHex(bytes: Uint8Array): string {
  if (scratch !== undefined && bytes.length <= scratchBytesMax) {
    scratch.set(bytes);
    return scratch.toString("hex", 0, bytes.length);
  }
  if (NodeBuffer !== undefined)
    return NodeBuffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).toString("hex");
  let out = "";
  for (let i = 0; i < bytes.length; i++) out += hexTable[bytes[i]!];
  return out;
}

const hexPattern = /^(?:[0-9a-f]{2})*$/;

/** The value of a lower-case hex digit's character code ('0'-'9', 'a'-'f'). */
function hexDigit(code: number): number {
  return code <= 0x39 ? code - 0x30 : code - 0x57;
}

/** Lower-case hex only: ids have exactly one spelling. */
export function fromHex(hex: string, field = "hex"): Uint8Array {
  if (!hexPattern.test(hex)) throw new CodedError("BAD_ENCODING", `${field} is not lower-case hex`, field);
  // Ids and hashes: one small array, no Buffer in between (the pattern has checked every digit).
  if (hex.length <= 2 * scratchBytesMax) {
    const out = new Uint8Array(hex.length / 2);
    for (let i = 0; i < out.length; i++)
      out[i] = (hexDigit(hex.charCodeAt(2 * i)) << 4) | hexDigit(hex.charCodeAt(2 * i + 1));
    return out;
  }
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
