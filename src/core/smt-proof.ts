/**
 * Proofs for the world-state tree (docs/spec/state-tree.md): their types, their one canonical byte
 * encoding, their JSON form, and the verifier.
 *
 * The SDK imports this file in the browser, so it must stay free of node:* modules and heavy
 * dependencies: the only ones are @noble/hashes (default hash) and the error registry. The verifier
 * takes the hash function as a parameter so a node can pass its faster native SHA-256.
 */
import { sha256 } from "@noble/hashes/sha2.js";
import { CodedError } from "./errors.ts";

export type SmtHashFn = (data: Uint8Array) => Uint8Array;

export const smtHashBytes = 32;
/** Path length in bits: a key's path is SHA-256(key), so no proof has more siblings than this. */
export const smtDepthBitsMax = 256;
export const smtProofVersion = 1;
export const smtLeafTag = 0x00;
export const smtInternalTag = 0x01;

const proofHeaderBytes = 4;
const kindCodes = { inclusion: 0, empty: 1, leaf: 2 } as const;
/** Largest canonical proof: header, full bitmap, 256 siblings, another leaf's two hashes. */
export const smtProofBytesMax =
  proofHeaderBytes + smtDepthBitsMax / 8 + smtDepthBitsMax * smtHashBytes + 2 * smtHashBytes;

/**
 * Where the key's path ends: in the key's own leaf (inclusion), in an empty subtree, or in the one
 * leaf of another key whose hash shares the path so far (both prove non-inclusion).
 */
export type SmtProofTerminal =
  | { readonly kind: "inclusion" }
  | { readonly kind: "empty" }
  | { readonly kind: "leaf"; readonly keyHash: Uint8Array; readonly valueHash: Uint8Array };

export interface SmtProof {
  /**
   * siblings[i] is the hash of the sibling of the path's subtree at bit depth i + 1 (index 0 is just
   * below the root); null is an empty subtree. Its length is the depth where the path ends.
   */
  readonly siblings: readonly (Uint8Array | null)[];
  readonly terminal: SmtProofTerminal;
}

export interface SmtProofJson {
  readonly version: number;
  readonly kind: SmtProofTerminal["kind"];
  /** Lower-case hex of each sibling, null for an empty subtree, root first. */
  readonly siblings: readonly (string | null)[];
  /** Only for kind "leaf". */
  readonly leafKeyHash?: string;
  readonly leafValueHash?: string;
}

function malformed(message: string): never {
  throw new CodedError("PROOF_MALFORMED", `state proof: ${message}`, "proof");
}

function isZero(bytes: Uint8Array): boolean {
  for (let i = 0; i < bytes.length; i++) if (bytes[i] !== 0) return false;
  return true;
}

function isHash(value: unknown): value is Uint8Array {
  return value instanceof Uint8Array && value.length === smtHashBytes;
}

/**
 * The shape rules shared by encoder, decoder and verifier. They make the encoding canonical: a
 * present sibling is never the empty hash, and the last sibling is never empty because a path ends
 * just below an internal node, whose other side always holds a leaf.
 */
export function checkProofShape(proof: SmtProof): void {
  if (proof === null || typeof proof !== "object") malformed("not an object");
  const { siblings, terminal } = proof;
  if (!Array.isArray(siblings)) malformed("siblings is not an array");
  if (siblings.length > smtDepthBitsMax) malformed(`more than ${smtDepthBitsMax} siblings`);
  for (const sibling of siblings) {
    if (sibling === null) continue;
    if (!isHash(sibling)) malformed("a sibling is not 32 bytes");
    if (isZero(sibling)) malformed("an empty sibling is written as a hash instead of null");
  }
  if (siblings.length > 0 && siblings[siblings.length - 1] === null) malformed("the last sibling is empty");
  if (terminal === null || typeof terminal !== "object") malformed("terminal is missing");
  if (terminal.kind === "leaf") {
    if (!isHash(terminal.keyHash) || !isHash(terminal.valueHash)) malformed("leaf hashes are not 32 bytes");
  } else if (terminal.kind !== "inclusion" && terminal.kind !== "empty") {
    malformed("unknown terminal kind");
  }
}

/**
 * Canonical bytes, version 1:
 *   version u8 (1) | kind u8 (0 inclusion, 1 empty, 2 leaf) | siblingCount u16 big-endian (0..256)
 *   | bitmap ceil(siblingCount/8) bytes (bit i, MSB first, set when sibling i is present; pad bits 0)
 *   | each present sibling, 32 bytes, root first | for kind 2: leafKeyHash 32 | leafValueHash 32
 */
export function encodeProof(proof: SmtProof): Uint8Array {
  checkProofShape(proof);
  const { siblings, terminal } = proof;
  const bitmapBytes = Math.ceil(siblings.length / 8);
  let present = 0;
  for (const sibling of siblings) if (sibling !== null) present++;
  const leafBytes = terminal.kind === "leaf" ? 2 * smtHashBytes : 0;
  const out = new Uint8Array(proofHeaderBytes + bitmapBytes + present * smtHashBytes + leafBytes);
  out[0] = smtProofVersion;
  out[1] = kindCodes[terminal.kind];
  out[2] = siblings.length >> 8;
  out[3] = siblings.length & 0xff;
  let offset = proofHeaderBytes + bitmapBytes;
  siblings.forEach((sibling, i) => {
    if (sibling === null) return;
    out[proofHeaderBytes + (i >> 3)]! |= 0x80 >> (i & 7);
    out.set(sibling, offset);
    offset += smtHashBytes;
  });
  if (terminal.kind === "leaf") {
    out.set(terminal.keyHash, offset);
    out.set(terminal.valueHash, offset + smtHashBytes);
  }
  return out;
}

/** Decodes canonical proof bytes; throws PROOF_MALFORMED on anything else (wrong length, bad bits). */
export function decodeProof(bytes: Uint8Array): SmtProof {
  if (!(bytes instanceof Uint8Array)) malformed("not bytes");
  if (bytes.length < proofHeaderBytes || bytes.length > smtProofBytesMax) malformed("length out of range");
  if (bytes[0] !== smtProofVersion) malformed(`unknown version ${bytes[0]}`);
  const kindCode = bytes[1]!;
  const count = (bytes[2]! << 8) | bytes[3]!;
  if (count > smtDepthBitsMax) malformed(`more than ${smtDepthBitsMax} siblings`);
  const bitmapBytes = Math.ceil(count / 8);
  if (bytes.length < proofHeaderBytes + bitmapBytes) malformed("truncated bitmap");
  const present = (i: number): boolean => (bytes[proofHeaderBytes + (i >> 3)]! & (0x80 >> (i & 7))) !== 0;
  for (let i = count; i < bitmapBytes * 8; i++) if (present(i)) malformed("bitmap padding is not zero");
  const siblings: (Uint8Array | null)[] = [];
  let offset = proofHeaderBytes + bitmapBytes;
  for (let i = 0; i < count; i++) {
    if (!present(i)) {
      siblings.push(null);
      continue;
    }
    if (offset + smtHashBytes > bytes.length) malformed("truncated siblings");
    siblings.push(bytes.slice(offset, offset + smtHashBytes));
    offset += smtHashBytes;
  }
  const terminal = decodeTerminal(kindCode, bytes, offset);
  const proof: SmtProof = { siblings, terminal };
  checkProofShape(proof);
  return proof;
}

function decodeTerminal(kindCode: number, bytes: Uint8Array, offset: number): SmtProofTerminal {
  const rest = bytes.length - offset;
  if (kindCode === kindCodes.inclusion || kindCode === kindCodes.empty) {
    if (rest !== 0) malformed(`${rest} trailing bytes`);
    return { kind: kindCode === kindCodes.inclusion ? "inclusion" : "empty" };
  }
  if (kindCode !== kindCodes.leaf) malformed(`unknown kind ${kindCode}`);
  if (rest !== 2 * smtHashBytes) malformed(`leaf needs 64 bytes, has ${rest}`);
  return {
    kind: "leaf",
    keyHash: bytes.slice(offset, offset + smtHashBytes),
    valueHash: bytes.slice(offset + smtHashBytes, offset + 2 * smtHashBytes),
  };
}

const hashHexPattern = /^[0-9a-f]{64}$/;

function hexOf(bytes: Uint8Array): string {
  let out = "";
  for (let i = 0; i < bytes.length; i++) out += bytes[i]!.toString(16).padStart(2, "0");
  return out;
}

function hashFromHex(value: unknown, field: string): Uint8Array {
  if (typeof value !== "string" || !hashHexPattern.test(value))
    malformed(`${field} is not 64 lower-case hex`);
  const out = new Uint8Array(smtHashBytes);
  for (let i = 0; i < smtHashBytes; i++) out[i] = Number.parseInt(value.slice(2 * i, 2 * i + 2), 16);
  return out;
}

/** The JSON form for the HTTP API; it carries exactly what the canonical bytes carry. */
export function proofToJson(proof: SmtProof): SmtProofJson {
  checkProofShape(proof);
  const siblings = proof.siblings.map((s) => (s === null ? null : hexOf(s)));
  const { terminal } = proof;
  if (terminal.kind !== "leaf") return { version: smtProofVersion, kind: terminal.kind, siblings };
  return {
    version: smtProofVersion,
    kind: "leaf",
    siblings,
    leafKeyHash: hexOf(terminal.keyHash),
    leafValueHash: hexOf(terminal.valueHash),
  };
}

const jsonFieldsOther = ["version", "kind", "siblings"];
const jsonFieldsLeaf = [...jsonFieldsOther, "leafKeyHash", "leafValueHash"];

/** Parses untrusted JSON (already JSON.parse'd); throws PROOF_MALFORMED on anything unexpected. */
export function proofFromJson(json: unknown): SmtProof {
  if (json === null || typeof json !== "object" || Array.isArray(json)) malformed("not an object");
  const record = json as Record<string, unknown>;
  if (record["version"] !== smtProofVersion) malformed("unknown version");
  const kind = record["kind"];
  // One JSON spelling per proof: fields of another kind are refused, not ignored.
  const fields = kind === "leaf" ? jsonFieldsLeaf : jsonFieldsOther;
  for (const name of Object.keys(record)) if (!fields.includes(name)) malformed(`unexpected field ${name}`);
  const rawSiblings = record["siblings"];
  if (!Array.isArray(rawSiblings) || rawSiblings.length > smtDepthBitsMax) malformed("siblings");
  const siblings = rawSiblings.map((s: unknown, i) => (s === null ? null : hashFromHex(s, `siblings[${i}]`)));
  let terminal: SmtProofTerminal;
  if (kind === "inclusion" || kind === "empty") terminal = { kind };
  else if (kind === "leaf") {
    const keyHash = hashFromHex(record["leafKeyHash"], "leafKeyHash");
    terminal = { kind, keyHash, valueHash: hashFromHex(record["leafValueHash"], "leafValueHash") };
  } else malformed("unknown kind");
  const proof: SmtProof = { siblings, terminal };
  checkProofShape(proof);
  return proof;
}

function bitAt(keyHash: Uint8Array, i: number): number {
  return (keyHash[i >> 3]! >> (7 - (i & 7))) & 1;
}

function sharesBitPrefix(a: Uint8Array, b: Uint8Array, bits: number): boolean {
  for (let i = 0; i < bits; i++) if (bitAt(a, i) !== bitAt(b, i)) return false;
  return true;
}

export function smtLeafHash(
  keyHash: Uint8Array,
  valueHash: Uint8Array,
  hash: SmtHashFn = sha256,
): Uint8Array {
  const input = new Uint8Array(1 + 2 * smtHashBytes);
  input[0] = smtLeafTag;
  input.set(keyHash, 1);
  input.set(valueHash, 1 + smtHashBytes);
  return hash(input);
}

/**
 * The root that `proof` implies for the claim "keyHash maps to valueHash" (null: "keyHash is absent"),
 * or null when the proof cannot support that claim at all (inclusion proof for an absence, a leaf
 * that is the key itself or lies off the key's path, ...). Throws PROOF_MALFORMED on a bad shape.
 */
export function computeProofRoot(
  keyHash: Uint8Array,
  valueHash: Uint8Array | null,
  proof: SmtProof,
  hash: SmtHashFn = sha256,
): Uint8Array | null {
  checkProofShape(proof);
  if (!isHash(keyHash) || (valueHash !== null && !isHash(valueHash))) return null;
  const { siblings, terminal } = proof;
  let current: Uint8Array;
  if (terminal.kind === "inclusion") {
    if (valueHash === null) return null;
    current = smtLeafHash(keyHash, valueHash, hash);
  } else if (valueHash !== null) {
    return null;
  } else if (terminal.kind === "empty") {
    current = new Uint8Array(smtHashBytes);
  } else {
    // Another key's leaf proves absence only if it sits on our path and is not our key.
    if (!sharesBitPrefix(terminal.keyHash, keyHash, siblings.length)) return null;
    if (sharesBitPrefix(terminal.keyHash, keyHash, smtDepthBitsMax)) return null;
    current = smtLeafHash(terminal.keyHash, terminal.valueHash, hash);
  }
  // Every node above the end of the path holds at least two leaves, so it is always an internal
  // hash, even when the sibling is empty: no compaction rule applies on the way up.
  const input = new Uint8Array(1 + 2 * smtHashBytes);
  input[0] = smtInternalTag;
  const zero = new Uint8Array(smtHashBytes);
  for (let depth = siblings.length - 1; depth >= 0; depth--) {
    const sibling = siblings[depth] ?? zero;
    const right = bitAt(keyHash, depth) === 1;
    input.set(right ? sibling : current, 1);
    input.set(right ? current : sibling, 1 + smtHashBytes);
    current = hash(input);
  }
  return current;
}

function equalHashes(a: Uint8Array, b: Uint8Array): boolean {
  if (a.length !== b.length) return false;
  let diff = 0;
  for (let i = 0; i < a.length; i++) diff |= a[i]! ^ b[i]!;
  return diff === 0;
}

/** Like verifyProof, for a client that holds the key's and value's hashes instead of the bytes. */
export function verifyProofHashes(
  root: Uint8Array,
  keyHash: Uint8Array,
  valueHash: Uint8Array | null,
  proof: Uint8Array | SmtProof,
  hash: SmtHashFn = sha256,
): boolean {
  try {
    if (!isHash(root)) return false;
    const decoded = proof instanceof Uint8Array ? decodeProof(proof) : proof;
    const computed = computeProofRoot(keyHash, valueHash, decoded, hash);
    return computed !== null && equalHashes(computed, root);
  } catch {
    // Malformed input of any kind is a failed proof, never an exception for the caller.
    return false;
  }
}

/**
 * True when `proof` shows that, in the tree with this root, `key` holds `value` (or, for a null
 * value, that `key` is absent). False for any malformed input; never throws.
 */
export function verifyProof(
  root: Uint8Array,
  key: Uint8Array,
  value: Uint8Array | null,
  proof: Uint8Array | SmtProof,
  hash: SmtHashFn = sha256,
): boolean {
  try {
    if (!(key instanceof Uint8Array) || (value !== null && !(value instanceof Uint8Array))) return false;
    return verifyProofHashes(root, hash(key), value === null ? null : hash(value), proof, hash);
  } catch {
    return false;
  }
}
