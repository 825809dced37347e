/**
 * A small, strict CBOR decoder for records this node's own execution wrote (the output of
 * encodeCanonical), for reads that sweep many records once — a search page decodes twenty.
 *
 * Why not cborg, which decodeStoredCanonical uses: cborg builds a token object per item and short
 * text strings one character at a time, about 11 KiB of garbage for one 850-byte license record;
 * at a few thousand records a second that garbage made the young-generation collections that showed
 * up as the holder search's p99 (docs/benchmarks.md "Licenses"). This decoder allocates what it
 * returns and little else.
 *
 * It accepts exactly the data model of src/core/encoding.ts — null, booleans, safe integers, text,
 * bytes, arrays and text-keyed maps, with definite lengths and shortest integer forms — and throws
 * BAD_ENCODING on anything else (floats, tags, undefined, indefinite lengths, duplicate keys,
 * non-text keys, non-shortest heads, trailing bytes, nesting deeper than canonicalDepthMax). It
 * does not check map key order: that is the canonical re-encoding check, which stored reads skip
 * (see decodeStoredCanonical). test/unit/record-decoder.test.ts compares it with cborg.
 */
import { type Canonical, canonicalDepthMax } from "./encoding.ts";
import { CodedError } from "./errors.ts";

function bad(message: string): never {
  throw new CodedError("BAD_ENCODING", `not valid CBOR: ${message}`);
}

interface NodeBufferLike {
  toString(encoding: "utf8", start: number, end: number): string;
}
const NodeBuffer = (globalThis as { Buffer?: { isBuffer(value: unknown): boolean } }).Buffer;
const textDecoder = new TextDecoder();

class Reader {
  at = 0;
  private readonly nodeBuffer: NodeBufferLike | null;

  constructor(private readonly bytes: Uint8Array) {
    // Node's Buffer decodes UTF-8 natively into the string alone; elsewhere TextDecoder.
    this.nodeBuffer = NodeBuffer?.isBuffer(bytes) === true ? (bytes as unknown as NodeBufferLike) : null;
  }

  get done(): boolean {
    return this.at === this.bytes.length;
  }

  private byte(): number {
    if (this.at >= this.bytes.length) bad("truncated");
    return this.bytes[this.at++]!;
  }

  /** The argument of a head whose additional information is `info`, in shortest form only. */
  private argument(info: number): number {
    if (info < 24) return info;
    let value: number;
    if (info === 24) {
      value = this.byte();
      if (value < 24) bad("integer not in shortest form");
    } else if (info === 25) {
      value = (this.byte() << 8) | this.byte();
      if (value < 0x100) bad("integer not in shortest form");
    } else if (info === 26) {
      value = ((this.byte() << 24) >>> 0) + ((this.byte() << 16) | (this.byte() << 8) | this.byte());
      if (value < 0x1_0000) bad("integer not in shortest form");
    } else if (info === 27) {
      const high = ((this.byte() << 24) >>> 0) + ((this.byte() << 16) | (this.byte() << 8) | this.byte());
      const low = ((this.byte() << 24) >>> 0) + ((this.byte() << 16) | (this.byte() << 8) | this.byte());
      if (high === 0) bad("integer not in shortest form");
      if (high > 0x1f_ffff) bad("integer beyond the safe range");
      value = high * 0x1_0000_0000 + low;
    } else {
      bad(info === 31 ? "indefinite length" : `reserved additional information ${info}`);
    }
    return value;
  }

  private span(length: number): number {
    const start = this.at;
    if (length > this.bytes.length - start) bad("truncated");
    this.at = start + length;
    return start;
  }

  private text(length: number): string {
    const start = this.span(length);
    if (this.nodeBuffer !== null) return this.nodeBuffer.toString("utf8", start, start + length);
    return textDecoder.decode(this.bytes.subarray(start, start + length));
  }

  value(depth: number): Canonical {
    if (depth > canonicalDepthMax) bad(`nesting deeper than ${canonicalDepthMax}`);
    const head = this.byte();
    const major = head >> 5;
    const info = head & 0x1f;
    switch (major) {
      case 0:
        return this.argument(info);
      case 1: {
        const n = this.argument(info);
        if (n >= Number.MAX_SAFE_INTEGER) bad("integer beyond the safe range");
        return -1 - n;
      }
      case 2: {
        const start = this.span(this.argument(info));
        // A plain Uint8Array copy (slice of a Buffer would be a Buffer): the record must not keep the
        // whole input alive, nor share its memory.
        return new Uint8Array(this.bytes.subarray(start, this.at));
      }
      case 3:
        return this.text(this.argument(info));
      case 4: {
        const length = this.argument(info);
        // Every item takes at least one byte: a longer claim is a lie, refused before allocating.
        if (length > this.bytes.length - this.at) bad("truncated");
        const items: Canonical[] = new Array(length);
        for (let i = 0; i < length; i++) items[i] = this.value(depth + 1);
        return items;
      }
      case 5: {
        const length = this.argument(info);
        if (length > (this.bytes.length - this.at) / 2) bad("truncated");
        const map: { [key: string]: Canonical } = {};
        for (let i = 0; i < length; i++) {
          const keyHead = this.byte();
          if (keyHead >> 5 !== 3) bad("map key is not text");
          const key = this.text(this.argument(keyHead & 0x1f));
          if (Object.hasOwn(map, key)) bad(`duplicate map key ${JSON.stringify(key)}`);
          const value = this.value(depth + 1);
          // A key "__proto__" is data like any other key, never the object's prototype.
          if (key === "__proto__")
            Object.defineProperty(map, key, { value, enumerable: true, writable: true, configurable: true });
          else map[key] = value;
        }
        return map;
      }
      case 7:
        if (info === 20) return false;
        if (info === 21) return true;
        if (info === 22) return null;
        return bad(info >= 25 && info <= 27 ? "floats are not in the data model" : `simple value ${info}`);
      default:
        return bad("tags are not in the data model");
    }
  }
}

/** Decodes one stored record; the whole input must be exactly one value. */
export function decodeStoredRecord(bytes: Uint8Array, bytesMax: number): Canonical {
  if (bytes.length > bytesMax) {
    throw new CodedError("BAD_ENCODING", `encoded value is ${bytes.length} bytes, limit ${bytesMax}`);
  }
  const reader = new Reader(bytes);
  const value = reader.value(0);
  if (!reader.done) bad("trailing bytes");
  return value;
}
