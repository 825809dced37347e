/**
 * The license registry's records in world state (docs/licenses.md). Every value is canonical CBOR;
 * keys live under "lic/". Personal data never appears here in plaintext: holders are keyed
 * pseudonyms and personal fields are sealed (AES-256-GCM, data key wrapped with HPKE).
 */
import { type Canonical, encodeCanonical } from "../encoding.ts";
import { sha256, taggedHash } from "../hash.ts";

export const licenseKeys = {
  /** A department's issuer identity: its unified social credit code and area code. */
  issuer: (dept: string) => `lic/issuer/${dept}`,
  /** Reverse index, so a credit code names one department only. */
  issuerByCode: (creditCode: string) => `lic/issuer-code/${creditCode}`,
  type: (typeCode: string) => `lic/type/${typeCode}`,
  policy: (typeCode: string) => `lic/policy/${typeCode}`,
  /** The version-independent head of a license: current version and status. */
  head: (licenseKey: string) => `lic/l/${licenseKey}`,
  /** One version of a license, under its full GB/T 36904 identifier. */
  version: (licenseId: string) => `lic/v/${licenseId}`,
  /** A license version's data key wrapped to one recipient: "holder" or a department code. */
  wrappedKey: (licenseId: string, recipient: string) => `lic/k/${licenseId}/${recipient}`,
  subject: (pseudonym: string) => `lic/s/${pseudonym}`,
  /** A department's public key for one subject (the private half lives only on its key node). */
  deptSubjectKey: (pseudonym: string, dept: string) => `lic/ds/${pseudonym}/${dept}`,
  /** The holder's consent for a department to read one license. */
  consent: (licenseKey: string, dept: string) => `lic/c/${licenseKey}/${dept}`,
} as const;

export const licenseStatuses = ["valid", "suspended", "revoked"] as const;
export type LicenseStatus = (typeof licenseStatuses)[number];
/** What a verifier reports: the stored status, or "expired" once validity has passed. */
export type LicenseEffectiveStatus = LicenseStatus | "expired";

export interface LicenseIssuer {
  readonly dept: string;
  /** 18-character unified social credit code (GB 32100): the identifier's issuer code. */
  readonly creditCode: string;
  /** 6-digit administrative division code (GB/T 2260). */
  readonly areaCode: string;
  readonly sinceHeight: number;
}

export interface LicenseType {
  /** 21 characters: the defining authority's credit code and a 3-digit sequence. */
  readonly code: string;
  readonly name: string;
  readonly definedBy: string;
  /** JSON Schema (draft 2020-12 subset) of the whole content, as canonical JSON text. */
  readonly schema: string;
  /** Departments that may issue it (the access policy may narrow roles further). */
  readonly issuers: readonly string[];
  /** Top-level content fields that are personal: sealed on chain, read through policy and consent. */
  readonly personalFields: readonly string[];
  /** Default validity from issue; null means valid until revoked. */
  readonly validityDays: number | null;
  /** Next index in the type's Bitstring Status List. */
  readonly nextStatusIndex: number;
  readonly sinceHeight: number;
}

export const licenseActions = ["issue", "amend", "suspend", "revoke", "query", "decrypt"] as const;
export type LicenseAction = (typeof licenseActions)[number];

export interface PolicyRule {
  /** Named in every decision and every denial. */
  readonly id: string;
  readonly effect: "allow" | "deny";
  /**
   * Department code; "*" for any; "$issuer" for the license's issuing department; "$issuers" for
   * any department the type lists as an issuer.
   */
  readonly dept: string;
  /** Roles any one of which matches; "*" for any role. */
  readonly roles: readonly string[];
  readonly actions: readonly LicenseAction[];
  /** For decrypt: personal fields this rule covers, or ["*"]. Ignored for other actions. */
  readonly fields: readonly string[];
}

export interface LicensePolicy {
  readonly typeCode: string;
  readonly rules: readonly PolicyRule[];
  readonly version: number;
  readonly updatedAtHeight: number;
}

export interface LicenseHead {
  readonly licenseKey: string;
  readonly typeCode: string;
  readonly issuerDept: string;
  readonly holder: string;
  readonly currentVersion: number;
  readonly currentId: string;
  readonly status: LicenseStatus;
  readonly statusReason: string | null;
  readonly statusChangedAtMs: number;
  /** Position in the type's status list (W3C Bitstring Status List). */
  readonly statusIndex: number;
}

export interface SealedContent {
  /** 12-byte AES-GCM nonce. */
  readonly nonce: Uint8Array;
  /** AES-256-GCM ciphertext with its 16-byte tag appended. */
  readonly ciphertext: Uint8Array;
}

export interface LicenseVersion {
  readonly id: string;
  readonly licenseKey: string;
  readonly version: number;
  readonly typeCode: string;
  readonly issuerCode: string;
  readonly issuerDept: string;
  /** Keyed pseudonym of the holder (64 hex); never the raw code. */
  readonly holder: string;
  /** GB/T 36902 holder code type, e.g. "111" citizen ID, "001" unified social credit code. */
  readonly holderCodeType: string;
  readonly areaCode: string;
  readonly issuedAtMs: number;
  readonly validFromMs: number;
  readonly validUntilMs: number | null;
  /** Canonical JSON (RFC 8785) of the non-personal content fields. */
  readonly publicContent: string;
  readonly sealed: SealedContent | null;
  /** SHA-256 over the salted canonical plaintext (docs/licenses.md "content hash"). */
  readonly contentHash: Uint8Array;
  readonly issuedBy: string;
  readonly txId: string;
  readonly height: number;
}

export interface WrappedKey {
  /** HPKE encapsulated key (65 bytes for DHKEM(P-256)). */
  readonly enc: Uint8Array;
  /** HPKE ciphertext of the 32-byte data key (48 bytes with the tag). */
  readonly ciphertext: Uint8Array;
  /** SHA-256 of the recipient public key it was wrapped to, so a rotated key is noticed. */
  readonly recipientKeyHash: Uint8Array;
}

export interface SubjectRecord {
  readonly pseudonym: string;
  /** HPKE DHKEM(P-256) public key, uncompressed point (65 bytes). */
  readonly encryptionKey: Uint8Array;
  /** P-256 ECDSA public key (SPKI DER) that signs the holder's consent statements. */
  readonly signingKey: Uint8Array;
  readonly custody: "self" | "vault";
  readonly status: "active" | "forgotten";
  /** Consent statements must carry exactly this sequence number, so none can be replayed. */
  readonly nextSeq: number;
  readonly registeredBy: string;
  readonly sinceHeight: number;
}

export interface ConsentRecord {
  readonly licenseKey: string;
  readonly dept: string;
  readonly status: "granted" | "withdrawn";
  /** Version the grant wrapped the key for; a newer version needs a new grant. */
  readonly licenseId: string;
  readonly untilMs: number | null;
  readonly changedAtMs: number;
  readonly seq: number;
}

/** One read of personal content, as recorded on chain by the node that served it. */
export interface AccessTrailEntry {
  readonly licenseId: string;
  readonly holder: string;
  readonly readerDept: string;
  readonly readerId: string;
  readonly readAtMs: number;
  readonly policyRule: string;
  readonly fields: readonly string[];
  /** "issuer" or "consent": why the reader's department held the data key. */
  readonly basis: "issuer" | "consent";
}

export type RecordOf<T> = T & { readonly [key: string]: Canonical };

export function wrappedKeyToCanonical(w: WrappedKey): { [key: string]: Canonical } {
  return { enc: w.enc, ciphertext: w.ciphertext, recipientKeyHash: w.recipientKeyHash };
}

/** What a subject statement names when it hands over a wrapped key. */
export function wrappedKeyDigest(w: WrappedKey): Uint8Array {
  return taggedHash("citychain/wrapped-key/v1", encodeCanonical(wrappedKeyToCanonical(w)));
}

/** SHA-256 of a recipient's raw public key, as carried in WrappedKey.recipientKeyHash. */
export function recipientKeyHash(publicKey: Uint8Array): Uint8Array {
  return sha256(publicKey);
}
