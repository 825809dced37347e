/**
 * The payload of a license's QR code: enough for a verifier to find the version on the ledger and
 * check that what it is shown is what was issued.
 *
 *   CCL1:<CHAIN ID>:<license id>:<content hash>
 *
 * Every character is in the QR alphanumeric set (0-9 A-Z space $ % * + - . / :), which packs 5.5
 * bits per character against 8 in byte mode, so the whole payload is one alphanumeric segment:
 * - `CCL1` names the format and its version;
 * - the chain id is upper-cased, and its `_` written as `*` (chain ids are `[a-z0-9._-]`, so the
 *   mapping is one-to-one and `*` never occurs otherwise);
 * - the license id (GB/T 36904) is upper-case digits, letters and dots already;
 * - the content hash is 32 bytes in RFC 4648 base32 without padding (52 characters, A-Z 2-7), not
 *   hex (64 characters): 12 characters fewer, about a QR version less at the same error correction.
 *   Its 4 unused trailing bits must be zero, so each hash has exactly one spelling.
 * A typical payload is about 145 characters: QR version 6 at error correction level M.
 * Browser-safe: no node:* imports.
 */
import { CodedError } from "../core/errors.ts";
import { parseLicenseId } from "../core/license/identifier.ts";
import { chainIdPattern } from "../core/tx.ts";

export const licenseQrPrefix = "CCL1";
/** Longer payloads are refused before any parsing. */
export const licenseQrCharsMax = 256;
export const contentHashBytes = 32;
const base32Alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
const contentHashBase32Chars = Math.ceil((contentHashBytes * 8) / 5);

export interface LicenseQr {
  readonly chainId: string;
  readonly licenseId: string;
  readonly contentHash: Uint8Array;
}

function malformed(field: string, message: string): never {
  throw new CodedError("BAD_ENCODING", `${field}: ${message}`, field);
}

export function encodeLicenseQr(qr: LicenseQr): string {
  if (!chainIdPattern.test(qr.chainId)) malformed("chainId", `must match ${chainIdPattern.source}`);
  parseLicenseId(qr.licenseId);
  if (qr.contentHash.length !== contentHashBytes)
    malformed("contentHash", `must be ${contentHashBytes} bytes`);
  const chain = qr.chainId.toUpperCase().replaceAll("_", "*");
  return `${licenseQrPrefix}:${chain}:${qr.licenseId}:${toBase32(qr.contentHash)}`;
}

/** Parses a scanned payload; throws BAD_ENCODING (or LICENSE_ID_MALFORMED) naming the bad part. */
export function parseLicenseQr(text: string): LicenseQr {
  if (typeof text !== "string" || text.length > licenseQrCharsMax) {
    malformed("qr", `must be a string of at most ${licenseQrCharsMax} characters`);
  }
  const parts = text.split(":");
  if (parts[0] !== licenseQrPrefix) {
    malformed("qr", `not a citychain license code (must start with ${licenseQrPrefix}:)`);
  }
  if (parts.length !== 4) malformed("qr", `expected 4 parts separated by ":", found ${parts.length}`);
  const [, chainText, licenseId, hashText] = parts as [string, string, string, string];
  if (!/^[0-9A-Z.*-]+$/.test(chainText))
    malformed("qr.chainId", "must be upper-case letters, digits and . * -");
  const chainId = chainText.toLowerCase().replaceAll("*", "_");
  if (!chainIdPattern.test(chainId)) malformed("qr.chainId", `must match ${chainIdPattern.source}`);
  parseQrLicenseId(licenseId);
  return { chainId, licenseId, contentHash: fromBase32Hash(hashText) };
}

function parseQrLicenseId(licenseId: string): void {
  try {
    parseLicenseId(licenseId);
  } catch (error) {
    if (!(error instanceof CodedError)) throw error;
    throw new CodedError(error.code, `qr.licenseId: ${error.message}`, "qr.licenseId");
  }
}

/** RFC 4648 §6 base32, upper case, no padding. */
export function toBase32(bytes: Uint8Array): string {
  let out = "";
  let buffer = 0;
  let bitsHeld = 0;
  for (const byte of bytes) {
    buffer = ((buffer << 8) | byte) & 0xffff;
    bitsHeld += 8;
    while (bitsHeld >= 5) {
      bitsHeld -= 5;
      out += base32Alphabet[(buffer >> bitsHeld) & 31];
    }
  }
  if (bitsHeld > 0) out += base32Alphabet[(buffer << (5 - bitsHeld)) & 31];
  return out;
}

function fromBase32Hash(text: string): Uint8Array {
  const field = "qr.contentHash";
  if (text.length !== contentHashBase32Chars || !/^[A-Z2-7]+$/.test(text)) {
    malformed(field, `must be ${contentHashBase32Chars} characters of base32 (A-Z, 2-7)`);
  }
  const out = new Uint8Array(contentHashBytes);
  let buffer = 0;
  let bitsHeld = 0;
  let o = 0;
  for (const char of text) {
    buffer = ((buffer << 5) | base32Alphabet.indexOf(char)) & 0xffff;
    bitsHeld += 5;
    if (bitsHeld >= 8) {
      bitsHeld -= 8;
      out[o++] = (buffer >> bitsHeld) & 0xff;
    }
  }
  if ((buffer & ((1 << bitsHeld) - 1)) !== 0) malformed(field, "unused trailing bits must be zero");
  return out;
}
