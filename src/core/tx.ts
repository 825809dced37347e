/**
 * The transaction envelope.
 *
 *   body      = [version, chainId, type, payload, nonce, expiresAtMs, sender]  (canonical CBOR array)
 *   signature = [signerRef, sig]      signerRef = [0, certId(32 bytes)] | [1, certificate DER]
 *   tx        = [bodyBytes, [signature, ...]]
 *
 * The body travels as the exact bytes that were signed, so the id (SHA-256 of those bytes) and every
 * signature check need no re-encoding. Each signer signs SIGNING_TAG || bodyBytes; several signatures
 * carry multi-department approval, and the first signer is the sender. The id excludes signatures:
 * adding or changing a signature never makes a transaction new, so replay protection holds. The body
 * names its sender (the first signer's certificate id), as Fabric binds the creator into its
 * transaction id: nobody else can sign a copy of someone's body and spend its id first.
 */
import {
  bytesEqual,
  type Canonical,
  CanonicalReader,
  decodeCanonical,
  encodeCanonical,
  leaveToStrict,
  toHex,
  utf8,
} from "./encoding.ts";
import { CodedError } from "./errors.ts";
import { sha256 } from "./hash.ts";
import { isCanonicalP256Signature } from "./signature.ts";

export const txVersion = 1;
export const txSigningTag = utf8("citychain/tx/v1\u0000");

/** Limits on one transaction; the chain's parameters may lower them, never raise them. */
export const txLimits = {
  txBytesMax: 128 * 1024,
  signaturesMax: 16,
  chainIdLengthMax: 64,
  typeLengthMax: 64,
  nonceBytesMin: 8,
  nonceBytesMax: 32,
  certificateBytesMax: 4096,
} as const;

export const chainIdPattern = /^[a-z0-9][a-z0-9._-]{0,63}$/;
export const txTypePattern = /^[a-z][a-z0-9]*(?:\.[a-z][a-z0-9-]*){1,4}$/;

export interface TxBody {
  readonly chainId: string;
  readonly type: string;
  readonly payload: Canonical;
  readonly nonce: Uint8Array;
  readonly expiresAtMs: number;
  /** Certificate id (SHA-256 of DER) of the first signer. */
  readonly sender: Uint8Array;
}

export type SignerRef =
  | { readonly kind: "certId"; readonly certId: Uint8Array }
  | { readonly kind: "cert"; readonly der: Uint8Array };

export interface TxSignature {
  readonly signer: SignerRef;
  readonly signature: Uint8Array;
}

/** A decoded, well-formed transaction (signatures not yet verified). */
export interface Tx {
  readonly id: string;
  readonly bytes: Uint8Array;
  readonly bodyBytes: Uint8Array;
  readonly body: TxBody;
  readonly signatures: readonly TxSignature[];
}

function malformed(message: string, field?: string): never {
  throw new CodedError("TX_MALFORMED", message, field);
}

export function encodeTxBody(body: TxBody): Uint8Array {
  checkBody(body);
  return encodeCanonical([
    txVersion,
    body.chainId,
    body.type,
    body.payload,
    body.nonce,
    body.expiresAtMs,
    body.sender,
  ]);
}

function checkBody(body: TxBody): void {
  if (typeof body.chainId !== "string" || !chainIdPattern.test(body.chainId))
    malformed("bad chainId", "chainId");
  if (
    typeof body.type !== "string" ||
    body.type.length > txLimits.typeLengthMax ||
    !txTypePattern.test(body.type)
  ) {
    malformed("bad transaction type", "type");
  }
  if (
    !(body.nonce instanceof Uint8Array) ||
    body.nonce.length < txLimits.nonceBytesMin ||
    body.nonce.length > txLimits.nonceBytesMax
  ) {
    malformed(`nonce must be ${txLimits.nonceBytesMin}..${txLimits.nonceBytesMax} bytes`, "nonce");
  }
  if (!Number.isSafeInteger(body.expiresAtMs) || body.expiresAtMs <= 0)
    malformed("bad expiresAtMs", "expiresAtMs");
  if (!(body.sender instanceof Uint8Array) || body.sender.length !== 32)
    malformed("sender must be 32 bytes", "sender");
}

export function signingBytes(bodyBytes: Uint8Array): Uint8Array {
  const out = new Uint8Array(txSigningTag.length + bodyBytes.length);
  out.set(txSigningTag, 0);
  out.set(bodyBytes, txSigningTag.length);
  return out;
}

export function txIdOf(bodyBytes: Uint8Array): string {
  return toHex(sha256(bodyBytes));
}

function encodeSignerRef(ref: SignerRef): Canonical {
  return ref.kind === "certId" ? [0, ref.certId] : [1, ref.der];
}

export function encodeTx(bodyBytes: Uint8Array, signatures: readonly TxSignature[]): Uint8Array {
  return encodeCanonical([bodyBytes, signatures.map((s) => [encodeSignerRef(s.signer), s.signature])]);
}

/**
 * Decodes a transaction envelope within the limits, or throws the one error the strict decoder
 * names. The fixed-shape envelope is read by hand (decodeTxFast); only its payload goes through
 * the generic canonical decoder. Anything the hand-written reader does not accept as it stands goes
 * to the strict decoder, which then accepts or refuses it with its own error: the fast path can only
 * make a decoding cheaper, never change its outcome (test/unit/tx-decoder.test.ts checks both agree).
 */
export function decodeTx(bytes: Uint8Array, txBytesMax: number = txLimits.txBytesMax): Tx {
  if (bytes.length > txBytesMax) {
    throw new CodedError("TX_TOO_LARGE", `transaction is ${bytes.length} bytes, limit ${txBytesMax}`);
  }
  return decodeTxFast(bytes) ?? decodeTxStrict(bytes, txBytesMax);
}

/** The generic path: canonical CBOR decode with re-encode check, then the shape. */
export function decodeTxStrict(bytes: Uint8Array, txBytesMax: number = txLimits.txBytesMax): Tx {
  if (bytes.length > txBytesMax) {
    throw new CodedError("TX_TOO_LARGE", `transaction is ${bytes.length} bytes, limit ${txBytesMax}`);
  }
  const outer = decodeCanonical(bytes, txBytesMax);
  if (!Array.isArray(outer) || outer.length !== 2) malformed("transaction must be [body, signatures]");
  const [bodyBytes, rawSignatures] = outer as [Canonical, Canonical];
  if (!(bodyBytes instanceof Uint8Array)) malformed("body must be bytes", "body");
  const body = decodeTxBody(bodyBytes);
  if (!Array.isArray(rawSignatures)) malformed("signatures must be an array", "signatures");
  const list = rawSignatures as readonly Canonical[];
  if (list.length < 1 || list.length > txLimits.signaturesMax) {
    malformed(`1..${txLimits.signaturesMax} signatures required`, "signatures");
  }
  const signatures = list.map((s, i) => decodeSignature(s, i));
  checkSigners(body, signatures);
  return { id: txIdOf(bodyBytes), bytes, bodyBytes, body, signatures };
}

function checkSigners(body: TxBody, signatures: readonly TxSignature[]): void {
  // Compared as bytes: every transaction passes here, and at most 16 signers make 120 comparisons.
  const ids = signatures.map((s) => (s.signer.kind === "certId" ? s.signer.certId : sha256(s.signer.der)));
  for (let i = 1; i < ids.length; i++) {
    for (let j = 0; j < i; j++) {
      if (bytesEqual(ids[i]!, ids[j]!)) malformed("the same signer signs twice", "signatures");
    }
  }
  if (!bytesEqual(ids[0]!, body.sender)) {
    malformed("the first signature must be the sender's", "signatures[0]");
  }
}

// ---- the fast path ----

/** CBOR major types (RFC 8949 §3.1) the envelope uses. */
const majorUint = 0;
const majorBytes = 2;
const majorText = 3;
const majorArray = 4;
const majorMap = 5;
const majorSimple = 7;

/** Thrown inside the fast reader to hand the input to the strict decoder; never escapes decodeTxFast. */
const notFast = new Error("not on the fast path");

/**
 * A cursor over canonical CBOR heads: the canonical decoder's reader (shortest forms, definite
 * lengths, safe integers, text as the strict decoder reads it) with a throw where that reader
 * would leave the input to the strict path.
 */
class HeadReader extends CanonicalReader {
  /** Reads one head; sets `major` and returns its argument. */
  need(): number {
    const value = this.head();
    if (value === leaveToStrict) throw notFast;
    return value;
  }

  expect(major: number): number {
    const value = this.need();
    if (this.major !== major) throw notFast;
    return value;
  }

  /** A byte string's contents, as a view on the input (no copy). */
  byteString(): Uint8Array {
    const length = this.expect(majorBytes);
    return this.view(length);
  }

  textString(): string {
    const text = this.text(this.expect(majorText));
    if (text === leaveToStrict) throw notFast;
    return text;
  }

  private view(length: number): Uint8Array {
    if (this.at + length > this.bytes.length) throw notFast;
    const out = new Uint8Array(this.bytes.buffer, this.bytes.byteOffset + this.at, length);
    this.at += length;
    return out;
  }

  /**
   * Steps over one data item of the canonical data model and returns where it started. Only the
   * extent matters here: its canonical form is checked by decoding it.
   */
  skip(): number {
    const start = this.at;
    let items = 1;
    while (items > 0) {
      items--;
      const argument = this.need();
      switch (this.major) {
        case majorBytes:
        case majorText:
          if (this.at + argument > this.bytes.length) throw notFast;
          this.at += argument;
          break;
        case majorArray:
          items += argument;
          break;
        case majorMap:
          items += 2 * argument;
          break;
        case majorSimple:
          if (argument < 20 || argument > 22) throw notFast; // false, true, null only
          break;
        case majorUint:
        case 1:
          break;
        default:
          throw notFast; // tags
      }
      if (items > this.bytes.length) throw notFast; // more items than bytes left: malformed
    }
    return start;
  }

  get done(): boolean {
    return this.at === this.bytes.length;
  }
}

/**
 * Reads the envelope by hand, or returns undefined to leave the input to the strict decoder (which
 * then decides). Accepts only what the strict decoder accepts, and produces the same transaction.
 */
export function decodeTxFast(bytes: Uint8Array): Tx | undefined {
  try {
    const outer = new HeadReader(bytes);
    if (outer.expect(majorArray) !== 2) return undefined;
    const bodyBytes = outer.byteString();
    const count = outer.expect(majorArray);
    if (count < 1 || count > txLimits.signaturesMax) return undefined;
    const signatures: TxSignature[] = [];
    for (let i = 0; i < count; i++) {
      if (outer.expect(majorArray) !== 2 || outer.expect(majorArray) !== 2) return undefined;
      const kind = outer.expect(majorUint);
      const value = outer.byteString();
      const signature = outer.byteString();
      if (!isCanonicalP256Signature(signature)) return undefined;
      if (kind === 0 && value.length === 32)
        signatures.push({ signer: { kind: "certId", certId: value }, signature });
      else if (kind === 1 && value.length > 0 && value.length <= txLimits.certificateBytesMax)
        signatures.push({ signer: { kind: "cert", der: value }, signature });
      else return undefined;
    }
    if (!outer.done) return undefined;
    const body = decodeTxBodyFast(bodyBytes);
    if (body === undefined) return undefined;
    checkSigners(body, signatures);
    return { id: txIdOf(bodyBytes), bytes, bodyBytes, body, signatures };
  } catch {
    return undefined;
  }
}

function decodeTxBodyFast(bodyBytes: Uint8Array): TxBody | undefined {
  const reader = new HeadReader(bodyBytes);
  if (reader.expect(majorArray) !== 7) return undefined;
  if (reader.expect(majorUint) !== txVersion) return undefined;
  const chainId = reader.textString();
  const type = reader.textString();
  const payloadStart = reader.skip();
  const payloadBytes = bodyBytes.subarray(payloadStart, reader.at);
  const nonce = reader.byteString();
  const expiresAtMs = reader.expect(majorUint);
  const sender = reader.byteString();
  if (!reader.done) return undefined;
  // The payload sits one level inside the body, as it does for the strict decoder's depth bound.
  const payload = decodeCanonical(payloadBytes, txLimits.txBytesMax, 1);
  const body: TxBody = { chainId, type, payload, nonce, expiresAtMs, sender };
  checkBody(body);
  return body;
}

export function decodeTxBody(bodyBytes: Uint8Array): TxBody {
  const raw = decodeCanonical(bodyBytes, txLimits.txBytesMax);
  if (!Array.isArray(raw) || raw.length !== 7) malformed("body must be a 7-element array", "body");
  const [version, chainId, type, payload, nonce, expiresAtMs, sender] = raw as Canonical[];
  if (version !== txVersion) malformed(`unsupported transaction version ${String(version)}`, "version");
  const body = { chainId, type, payload, nonce, expiresAtMs, sender } as TxBody;
  checkBody(body);
  return body;
}

function decodeSignature(raw: Canonical, index: number): TxSignature {
  const field = `signatures[${index}]`;
  if (!Array.isArray(raw) || raw.length !== 2) malformed("signature must be [signer, sig]", field);
  const [ref, sig] = raw as [Canonical, Canonical];
  if (!(sig instanceof Uint8Array) || !isCanonicalP256Signature(sig)) {
    throw new CodedError(
      "BAD_SIGNATURE_FORMAT",
      "signature must be 64-byte P1363 with low S",
      `${field}.signature`,
    );
  }
  if (!Array.isArray(ref) || ref.length !== 2) malformed("signer must be [kind, value]", `${field}.signer`);
  const [kind, value] = ref as [Canonical, Canonical];
  if (!(value instanceof Uint8Array)) malformed("signer value must be bytes", `${field}.signer`);
  if (kind === 0 && value.length === 32) return { signer: { kind: "certId", certId: value }, signature: sig };
  if (kind === 1 && value.length > 0 && value.length <= txLimits.certificateBytesMax) {
    return { signer: { kind: "cert", der: value }, signature: sig };
  }
  return malformed("signer must be [0, certId(32)] or [1, certificate DER]", `${field}.signer`);
}

export function signerCertId(ref: SignerRef): string {
  return toHex(ref.kind === "certId" ? ref.certId : sha256(ref.der));
}

export function sameTx(a: Tx, b: Tx): boolean {
  return bytesEqual(a.bytes, b.bytes);
}
