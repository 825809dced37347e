/**
 * Export of e-licenses as W3C Verifiable Credentials (Data Model 2.0) and of license status as W3C
 * Bitstring Status List v1.0 credentials, so holders and verifiers outside the consortium can use
 * standard wallets and verifiers. Browser-safe (no node:* imports): the SDK builds and checks these.
 *
 * Securing: these credentials carry no Data Integrity proof and are not wrapped in a JOSE/COSE
 * envelope. What makes a license verifiable is the ledger: the `evidence` entry names the chain,
 * the block height, the transaction and the content hash, and a verifier checks the ledger's
 * inclusion proof for that version (src/sdk/verify.ts) against a commit signed by more than 2/3 of
 * the validators. A verifier that accepts only secured VCs must wrap these in its own envelope.
 *
 * Vocabulary: the VC 2.0 base context maps every undefined term to
 * `https://www.w3.org/ns/credentials/issuer-dependent#` through `@vocab`. Such IRIs mean nothing
 * outside the issuer, collide between issuers, and strict processors warn on them, so citychain
 * defines every term it uses in an inline, protected context (`citychainContext`) under its own
 * IRI base; the type-defined public content is one `@json` literal, so its member names need no
 * terms at all. The context is inline rather than a URL so that nothing has to be hosted or
 * fetched, and a verifier sees exactly what the terms mean.
 */
import { Gunzip, gzipSync } from "fflate";
import { toHex } from "../core/encoding.ts";
import { assert, CodedError } from "../core/errors.ts";
import { isJsonObject, type JsonObject, parseJsonLimited } from "../core/license/json.ts";
import type { LicenseHead, LicenseType, LicenseVersion } from "../core/license/records.ts";

export const credentialsV2Context = "https://www.w3.org/ns/credentials/v2";
/** IRI base of citychain's terms. A URN: the vocabulary is defined here, not at a fetchable URL. */
export const citychainVocabBase = "urn:citychain:vocab#";

const term = (name: string) => `${citychainVocabBase}${name}`;
const xsd = "http://www.w3.org/2001/XMLSchema#";

/** Every citychain term in our credentials; none redefines a (protected) VC 2.0 term. */
export const citychainContext = {
  "@protected": true,
  ElectronicLicense: term("ElectronicLicense"),
  LedgerInclusion: term("LedgerInclusion"),
  licenseId: term("licenseId"),
  licenseKey: term("licenseKey"),
  licenseVersion: { "@id": term("licenseVersion"), "@type": `${xsd}integer` },
  licenseName: term("licenseName"),
  typeCode: term("typeCode"),
  issuerCode: term("issuerCode"),
  holderCodeType: term("holderCodeType"),
  areaCode: term("areaCode"),
  issuedAt: { "@id": term("issuedAt"), "@type": `${xsd}dateTime` },
  publicContent: { "@id": term("publicContent"), "@type": "@json" },
  chainId: term("chainId"),
  blockHeight: { "@id": term("blockHeight"), "@type": `${xsd}integer` },
  transactionId: term("transactionId"),
  contentHash: term("contentHash"),
  hashAlgorithm: term("hashAlgorithm"),
} as const;

export const statusPurposes = ["revocation", "suspension"] as const;
export type StatusPurpose = (typeof statusPurposes)[number];

export const statusListLimits = {
  /** Bitstring Status List v1.0 minimum (16 KB uncompressed): the crowd a holder hides in. */
  bitsMin: 131_072,
  /** One list per type and purpose: 2 MiB uncompressed, 16.7 million licenses of one type. */
  bitsMax: 16_777_216,
  /** `encodedList` characters a reader accepts: above any honest list of `bitsMax` bits. */
  encodedCharsMax: 4 * 1024 * 1024,
  /** Compressed bytes fed to the inflater at a time, so a GZIP bomb is caught early. */
  inflateChunkBytes: 1024,
} as const;

/** Latest instant RFC 3339 can write with a 4-digit year. */
const rfc3339MsMax = 253_402_300_799_999;

export interface VcIssuer {
  readonly id: string;
  readonly name: string;
}

export interface LicenseCredentialInput {
  readonly version: LicenseVersion;
  readonly head: LicenseHead;
  readonly type: Pick<LicenseType, "code" | "name" | "personalFields">;
  /** The issuing department: its code (`issuerDept`) and display name. */
  readonly issuerName: string;
  readonly chainId: string;
  /** Public base URL of the node API that serves the status lists, e.g. "https://licenses.city.example". */
  readonly baseUrl: string;
}

// ---------------------------------------------------------------------------------------------
// Identifiers and times

export function licenseCredentialId(licenseId: string): string {
  return `urn:citychain:license:${licenseId}`;
}

export function departmentIssuerId(dept: string): string {
  return `urn:citychain:dept:${dept}`;
}

export function subjectId(pseudonym: string): string {
  return `urn:citychain:subject:${pseudonym}`;
}

export function statusListUrl(baseUrl: string, typeCode: string, purpose: StatusPurpose): string {
  return `${normalizeBaseUrl(baseUrl)}/v1/status-lists/${typeCode}/${purpose}`;
}

function normalizeBaseUrl(baseUrl: string): string {
  if (!/^https?:\/\/[^\s/?#]+(\/[^\s?#]*)?$/.test(baseUrl)) {
    throw new CodedError(
      "PAYLOAD_INVALID",
      "baseUrl: must be an http(s) URL without query or fragment",
      "baseUrl",
    );
  }
  return baseUrl.replace(/\/+$/, "");
}

/** RFC 3339 in UTC, as every time at citychain's edges. */
export function rfc3339(ms: number): string {
  assert(Number.isSafeInteger(ms) && ms >= 0 && ms <= rfc3339MsMax, "time within RFC 3339 range");
  return new Date(ms).toISOString();
}

// ---------------------------------------------------------------------------------------------
// License credential

/**
 * A license version as a VC 2.0 document. Only public data goes in: the directory fields and the
 * public content. Holder name and code and every personal field stay sealed on the ledger; the
 * holder appears as the keyed pseudonym (which links this holder's credentials to one another, as
 * it does on the ledger, but reveals no ID number).
 */
export function buildLicenseCredential(input: LicenseCredentialInput): JsonObject {
  const { version, head } = input;
  assert(head.licenseKey === version.licenseKey, "head and version name one license");
  assert(head.typeCode === input.type.code && version.typeCode === input.type.code, "type matches");
  const credential: JsonObject = {
    "@context": [credentialsV2Context, citychainContext],
    id: licenseCredentialId(version.id),
    type: ["VerifiableCredential", "ElectronicLicense"],
    name: input.type.name,
    issuer: { id: departmentIssuerId(version.issuerDept), name: input.issuerName },
    validFrom: rfc3339(version.validFromMs),
    credentialSubject: licenseSubject(input),
    credentialStatus: statusPurposes.map((purpose) => statusEntry(input.baseUrl, head, purpose)),
    evidence: [ledgerEvidence(input.chainId, version)],
  };
  if (version.validUntilMs !== null) credential["validUntil"] = rfc3339(version.validUntilMs);
  return credential;
}

function licenseSubject(input: LicenseCredentialInput): JsonObject {
  const { version, type } = input;
  return {
    id: subjectId(version.holder),
    licenseId: version.id,
    licenseKey: version.licenseKey,
    licenseVersion: version.version,
    licenseName: type.name,
    typeCode: version.typeCode,
    issuerCode: version.issuerCode,
    holderCodeType: version.holderCodeType,
    areaCode: version.areaCode,
    issuedAt: rfc3339(version.issuedAtMs),
    publicContent: publicContentOf(version, type.personalFields),
  };
}

function publicContentOf(version: LicenseVersion, personalFields: readonly string[]): JsonObject {
  const content = parseJsonLimited(version.publicContent, "publicContent");
  assert(isJsonObject(content), "public content is a JSON object");
  for (const field of personalFields) {
    // Execution never stores a personal field in clear; an export must never be where one leaks.
    assert(!Object.hasOwn(content, field), `personal field ${field} absent from public content`);
  }
  return content;
}

function statusEntry(baseUrl: string, head: LicenseHead, purpose: StatusPurpose): JsonObject {
  const listUrl = statusListUrl(baseUrl, head.typeCode, purpose);
  return {
    id: `${listUrl}#${head.statusIndex}`,
    type: "BitstringStatusListEntry",
    statusPurpose: purpose,
    statusListIndex: String(head.statusIndex),
    statusListCredential: listUrl,
  };
}

function ledgerEvidence(chainId: string, version: LicenseVersion): JsonObject {
  return {
    type: ["LedgerInclusion"],
    chainId,
    blockHeight: version.height,
    transactionId: version.txId,
    contentHash: toHex(version.contentHash),
    hashAlgorithm: "sha-256",
  };
}

// ---------------------------------------------------------------------------------------------
// Bitstring Status List

export interface StatusListInput {
  readonly typeCode: string;
  readonly purpose: StatusPurpose;
  readonly baseUrl: string;
  /** Every index in use (set or not): the largest one sizes the list. */
  readonly entries: ReadonlyArray<{ readonly index: number; readonly set: boolean }>;
  readonly validFromMs: number;
  /** Who answers for the list: the type's defining department, as `{ id, name }`. */
  readonly issuer: VcIssuer;
}

/** A BitstringStatusListCredential (statusSize 1: a set bit means revoked, or suspended). */
export function buildStatusListCredential(input: StatusListInput): JsonObject {
  const listUrl = statusListUrl(input.baseUrl, input.typeCode, input.purpose);
  return {
    "@context": [credentialsV2Context],
    id: listUrl,
    type: ["VerifiableCredential", "BitstringStatusListCredential"],
    issuer: { id: input.issuer.id, name: input.issuer.name },
    validFrom: rfc3339(input.validFromMs),
    credentialSubject: {
      id: `${listUrl}#list`,
      type: "BitstringStatusList",
      statusPurpose: input.purpose,
      encodedList: encodeStatusList(buildBitstring(input.entries)),
    },
  };
}

/**
 * The list length is the largest index rounded up to a whole multiple of the spec minimum, so the
 * published length reveals the number of licenses of a type only to within 131,072.
 */
export function buildBitstring(entries: StatusListInput["entries"]): Uint8Array {
  let indexMax = -1;
  for (const { index } of entries) {
    if (!Number.isSafeInteger(index) || index < 0 || index >= statusListLimits.bitsMax) {
      throw new CodedError(
        "PAYLOAD_INVALID",
        `entries: index ${index} outside 0..${statusListLimits.bitsMax - 1}`,
        "entries",
      );
    }
    indexMax = Math.max(indexMax, index);
  }
  const blocks = Math.max(1, Math.ceil((indexMax + 1) / statusListLimits.bitsMin));
  const bits = new Uint8Array((blocks * statusListLimits.bitsMin) / 8);
  const seen = new Set<number>();
  for (const { index, set } of entries) {
    if (seen.has(index)) throw new CodedError("PAYLOAD_INVALID", `entries: index ${index} twice`, "entries");
    seen.add(index);
    // Index 0 is the left-most bit: the most significant bit of the first byte.
    if (set) bits[index >> 3]! |= 0x80 >> (index & 7);
  }
  return bits;
}

/** Multibase base64url (prefix "u", no padding) of the GZIP-compressed bitstring. */
export function encodeStatusList(bits: Uint8Array): string {
  assert(bits.length * 8 >= statusListLimits.bitsMin, "status list at least the spec minimum");
  // mtime 0 ("no time stamp", RFC 1952): the same list always gives the same bytes.
  return `u${toBase64Url(gzipSync(bits, { level: 9, mtime: 0 }))}`;
}

/**
 * The bitstring of an `encodedList` from anywhere (a verifier's input): bounded before, during and
 * after inflating, and refused below the spec minimum (its STATUS_LIST_LENGTH_ERROR).
 */
export function decodeStatusList(encodedList: string): Uint8Array {
  const field = "encodedList";
  if (encodedList.length > statusListLimits.encodedCharsMax) {
    throw new CodedError(
      "BAD_ENCODING",
      `${field}: longer than ${statusListLimits.encodedCharsMax} characters`,
      field,
    );
  }
  if (!encodedList.startsWith("u")) {
    throw new CodedError("BAD_ENCODING", `${field}: not multibase base64url (must start with "u")`, field);
  }
  const bits = gunzipBounded(fromBase64Url(encodedList.slice(1), field), statusListLimits.bitsMax / 8, field);
  if (bits.length * 8 < statusListLimits.bitsMin) {
    throw new CodedError(
      "BAD_ENCODING",
      `${field}: STATUS_LIST_LENGTH_ERROR: ${bits.length * 8} bits, fewer than ${statusListLimits.bitsMin}`,
      field,
    );
  }
  return bits;
}

/** Whether the bit at `index` is set (revoked or suspended, per the list's purpose). */
export function readStatusBit(encodedList: string, index: number): boolean {
  return statusBitAt(decodeStatusList(encodedList), index);
}

export function statusBitAt(bits: Uint8Array, index: number): boolean {
  if (!Number.isSafeInteger(index) || index < 0 || index >= bits.length * 8) {
    throw new CodedError(
      "PAYLOAD_INVALID",
      `statusListIndex: RANGE_ERROR: ${index} outside 0..${bits.length * 8 - 1}`,
      "statusListIndex",
    );
  }
  return (bits[index >> 3]! & (0x80 >> (index & 7))) !== 0;
}

/** Parses a credential's `statusListIndex` (a decimal string, per the spec). */
export function parseStatusListIndex(text: string): number {
  if (!/^(0|[1-9][0-9]{0,15})$/.test(text) || !Number.isSafeInteger(Number(text))) {
    throw new CodedError("PAYLOAD_INVALID", "statusListIndex: not a decimal integer", "statusListIndex");
  }
  return Number(text);
}

/**
 * Inflates in small steps and stops as soon as the output passes `bytesMax`: a few kilobytes of
 * GZIP can expand to gigabytes, and the trailer's size field is the sender's claim, not a bound.
 */
function gunzipBounded(compressed: Uint8Array, bytesMax: number, field: string): Uint8Array {
  if (compressed.length === 0) throw new CodedError("BAD_ENCODING", `${field}: empty`, field);
  const chunks: Uint8Array[] = [];
  let total = 0;
  const inflater = new Gunzip((chunk) => {
    total += chunk.length;
    if (total > bytesMax)
      throw new CodedError("BAD_ENCODING", `${field}: inflates beyond ${bytesMax} bytes`, field);
    chunks.push(chunk);
  });
  try {
    for (let offset = 0; offset < compressed.length; offset += statusListLimits.inflateChunkBytes) {
      const end = Math.min(compressed.length, offset + statusListLimits.inflateChunkBytes);
      inflater.push(compressed.subarray(offset, end), end === compressed.length);
    }
  } catch (error) {
    if (error instanceof CodedError) throw error;
    throw new CodedError("BAD_ENCODING", `${field}: not GZIP data (${(error as Error).message})`, field);
  }
  const out = new Uint8Array(total);
  let offset = 0;
  for (const chunk of chunks) {
    out.set(chunk, offset);
    offset += chunk.length;
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// base64url without padding (RFC 4648 §5), written out so that it behaves alike everywhere

const base64UrlAlphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
const base64UrlValues = new Map([...base64UrlAlphabet].map((char, value) => [char, value]));

export function toBase64Url(bytes: Uint8Array): string {
  let out = "";
  for (let i = 0; i < bytes.length; i += 3) {
    const n = (bytes[i]! << 16) | ((bytes[i + 1] ?? 0) << 8) | (bytes[i + 2] ?? 0);
    const chars = Math.min(4, Math.ceil(((bytes.length - i) * 8) / 6));
    for (let c = 0; c < chars; c++) out += base64UrlAlphabet[(n >> (18 - 6 * c)) & 63];
  }
  return out;
}

export function fromBase64Url(text: string, field: string): Uint8Array {
  if (!/^[A-Za-z0-9_-]*$/.test(text) || text.length % 4 === 1) {
    throw new CodedError("BAD_ENCODING", `${field}: not base64url without padding`, field);
  }
  const out = new Uint8Array(Math.floor((text.length * 6) / 8));
  let buffer = 0;
  let bitsHeld = 0;
  let o = 0;
  for (let i = 0; i < text.length; i++) {
    buffer = ((buffer << 6) | base64UrlValues.get(text[i]!)!) & 0xffffff;
    bitsHeld += 6;
    if (bitsHeld >= 8) {
      bitsHeld -= 8;
      out[o++] = (buffer >> bitsHeld) & 0xff;
    }
  }
  // Leftover bits must be zero: one spelling per byte string.
  if ((buffer & ((1 << bitsHeld) - 1)) !== 0) {
    throw new CodedError("BAD_ENCODING", `${field}: not canonical base64url`, field);
  }
  return out;
}
