/**
 * A minimal DER reader: just enough to pick out the fields Node's X509Certificate does not expose
 * (the signature algorithm and our identity extension). It runs only on bytes OpenSSL has already
 * parsed as a certificate, so it needs no BER leniency; it still bounds-checks every length, so bad
 * input throws instead of reading past the end.
 */

export interface DerElement {
  /** The identifier octet (single-byte tags only: X.509 never needs more). */
  readonly tag: number;
  /** Offset of the identifier octet, where the whole element begins. */
  readonly offset: number;
  /** Offset of the first content byte. */
  readonly start: number;
  /** Offset one past the last content byte, which is also where the next element starts. */
  readonly end: number;
}

export const derTag = {
  boolean: 0x01,
  integer: 0x02,
  bitString: 0x03,
  octetString: 0x04,
  oid: 0x06,
  sequence: 0x30,
  explicit0: 0xa0,
  explicit3: 0xa3,
} as const;

/** Longest length field we accept: 4 bytes, far above any certificate we would take. */
const lengthBytesMax = 4;

export class DerError extends Error {
  constructor(message: string) {
    super(`DER: ${message}`);
    this.name = "DerError";
  }
}

/** Reads the element at `offset`, which must end at or before `limit`. */
export function readElement(bytes: Uint8Array, offset: number, limit: number = bytes.length): DerElement {
  if (offset + 2 > limit) throw new DerError("truncated header");
  const tag = bytes[offset]!;
  if ((tag & 0x1f) === 0x1f) throw new DerError("multi-byte tags are not used in X.509");
  const first = bytes[offset + 1]!;
  let length = first;
  let start = offset + 2;
  if (first & 0x80) {
    const count = first & 0x7f;
    if (count === 0 || count > lengthBytesMax) throw new DerError("unsupported length form");
    if (start + count > limit) throw new DerError("truncated length");
    length = 0;
    for (let i = 0; i < count; i++) length = length * 256 + bytes[start + i]!;
    start += count;
  }
  const end = start + length;
  if (end > limit) throw new DerError("content runs past its container");
  return { tag, offset, start, end };
}

/** The children of a constructed element, in order. */
export function readChildren(bytes: Uint8Array, parent: DerElement): DerElement[] {
  const children: DerElement[] = [];
  let offset = parent.start;
  while (offset < parent.end) {
    const child = readElement(bytes, offset, parent.end);
    children.push(child);
    offset = child.end;
  }
  return children;
}

export function expectTag(element: DerElement | undefined, tag: number, what: string): DerElement {
  if (element === undefined || element.tag !== tag) throw new DerError(`expected ${what}`);
  return element;
}

export function contentOf(bytes: Uint8Array, element: DerElement): Uint8Array {
  return bytes.subarray(element.start, element.end);
}

/** DER content bytes of a dotted OBJECT IDENTIFIER (arcs may exceed 2^53, hence bigint). */
export function encodeOidContent(dotted: string): Uint8Array {
  const arcs = dotted.split(".").map((arc) => BigInt(arc));
  if (arcs.length < 2) throw new DerError("an OID has at least two arcs");
  const out: number[] = [];
  const head = arcs[0]! * 40n + arcs[1]!;
  for (const arc of [head, ...arcs.slice(2)]) out.push(...base128(arc));
  return Uint8Array.from(out);
}

function base128(value: bigint): number[] {
  const groups = [Number(value & 0x7fn)];
  let rest = value >> 7n;
  while (rest > 0n) {
    groups.unshift(Number(rest & 0x7fn) | 0x80);
    rest >>= 7n;
  }
  return groups;
}

export function bytesEqual(a: Uint8Array, b: Uint8Array): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}

// ---------------------------------------------------------------------------------------------
// Writing. Only definite-length DER with single-byte tags, which is all X.509 needs.

export function encodeLength(length: number): Uint8Array {
  if (length < 0x80) return Uint8Array.of(length);
  const bytes: number[] = [];
  for (let rest = length; rest > 0; rest = Math.floor(rest / 256)) bytes.unshift(rest % 256);
  if (bytes.length > lengthBytesMax) throw new DerError("content too long");
  return Uint8Array.from([0x80 | bytes.length, ...bytes]);
}

export function concatBytes(parts: readonly Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((sum, part) => sum + part.length, 0));
  let offset = 0;
  for (const part of parts) {
    out.set(part, offset);
    offset += part.length;
  }
  return out;
}

export function tlv(tag: number, ...contents: Uint8Array[]): Uint8Array {
  const content = concatBytes(contents);
  return concatBytes([Uint8Array.of(tag), encodeLength(content.length), content]);
}

export function derSequence(...items: Uint8Array[]): Uint8Array {
  return tlv(derTag.sequence, ...items);
}

/** A non-negative INTEGER from big-endian magnitude bytes, in its minimal DER form. */
export function derUnsignedInteger(magnitude: Uint8Array): Uint8Array {
  let first = 0;
  while (first < magnitude.length - 1 && magnitude[first] === 0) first++;
  const trimmed = magnitude.subarray(first);
  const content =
    trimmed.length === 0 || trimmed[0]! & 0x80 ? concatBytes([Uint8Array.of(0), trimmed]) : trimmed;
  return tlv(derTag.integer, content);
}

export function derOid(dotted: string): Uint8Array {
  return tlv(derTag.oid, encodeOidContent(dotted));
}

export function derOctetString(content: Uint8Array): Uint8Array {
  return tlv(derTag.octetString, content);
}

export function derBitString(content: Uint8Array, unusedBits = 0): Uint8Array {
  return tlv(derTag.bitString, Uint8Array.of(unusedBits), content);
}

export const derTrue: Uint8Array = Uint8Array.of(derTag.boolean, 0x01, 0xff);

export function derUtf8String(text: string): Uint8Array {
  return tlv(0x0c, new TextEncoder().encode(text));
}

export function derSet(...items: Uint8Array[]): Uint8Array {
  return tlv(0x31, ...items);
}

/** RFC 5280 §4.1.2.5: UTCTime through 2049, GeneralizedTime from 2050; whole seconds, "Z". */
export function derTime(ms: number): Uint8Array {
  if (!Number.isSafeInteger(ms) || ms % 1000 !== 0) throw new DerError("times are whole seconds");
  const iso = new Date(ms).toISOString(); // YYYY-MM-DDTHH:MM:SS.000Z
  const year = Number(iso.slice(0, 4));
  const digits = iso.slice(0, 19).replace(/[-T:]/g, "");
  if (year >= 1950 && year < 2050) return tlv(0x17, new TextEncoder().encode(`${digits.slice(2)}Z`));
  return tlv(0x18, new TextEncoder().encode(`${digits}Z`));
}
