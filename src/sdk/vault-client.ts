/**
 * A typed client for the key vault's API (/v1/vault, docs/licenses.md "Key vault"). Requests are
 * signed (RFC 9421) with a CA-issued identity exactly as CitychainClient signs them; errors arrive as
 * CitychainError with the platform's stable codes (VAULT_KEY_DESTROYED, FORBIDDEN, …). Bytes cross
 * the wire as base64, hashes and pseudonyms as lower-case hex. Browser-safe: no node:* imports.
 */
import { fromBase64, fromHex, toBase64, toHex } from "../core/encoding.ts";
import type { SealedContent, WrappedKey } from "../core/license/records.ts";
import { CitychainClient, type ClientOptions } from "./client.ts";
import type { PersonalContent } from "./sealing.ts";

export interface VaultSubject {
  readonly pseudonym: string;
  readonly status: "active" | "destroyed";
  /** HPKE public key, 65-byte uncompressed point; absent once destroyed. */
  readonly encryptionKey?: Uint8Array;
  /** Statement-signing public key, SPKI DER; absent once destroyed. */
  readonly signingKey?: Uint8Array;
  readonly createdAt?: string;
  readonly destroyedAt?: string;
  /** Only from createSubject: whether this call made the keys. */
  readonly created?: boolean;
}

export interface VaultAuditEntry {
  readonly seq: number;
  readonly at: string;
  readonly enrollmentId: string;
  readonly dept: string;
  readonly certId: string;
  readonly action: string;
  readonly pseudonym: string | null;
  readonly outcome: "pending" | "ok" | "error";
  readonly code: string | null;
}

interface SubjectJson {
  pseudonym: string;
  status: "active" | "destroyed";
  encryptionKey?: string;
  signingKey?: string;
  createdAt?: string;
  destroyedAt?: string;
  created?: boolean;
}

interface WrappedKeyJson {
  enc: string;
  ciphertext: string;
  recipientKeyHash: string;
}

function wrappedToJson(wrapped: WrappedKey): WrappedKeyJson {
  return {
    enc: toBase64(wrapped.enc),
    ciphertext: toBase64(wrapped.ciphertext),
    recipientKeyHash: toHex(wrapped.recipientKeyHash),
  };
}

function wrappedFromJson(json: WrappedKeyJson): WrappedKey {
  return {
    enc: fromBase64(json.enc, "wrappedKey.enc"),
    ciphertext: fromBase64(json.ciphertext, "wrappedKey.ciphertext"),
    recipientKeyHash: fromHex(json.recipientKeyHash, "wrappedKey.recipientKeyHash"),
  };
}

function subjectFromJson(json: SubjectJson): VaultSubject {
  return {
    pseudonym: json.pseudonym,
    status: json.status,
    ...(json.encryptionKey === undefined
      ? {}
      : { encryptionKey: fromBase64(json.encryptionKey, "encryptionKey") }),
    ...(json.signingKey === undefined ? {} : { signingKey: fromBase64(json.signingKey, "signingKey") }),
    ...(json.createdAt === undefined ? {} : { createdAt: json.createdAt }),
    ...(json.destroyedAt === undefined ? {} : { destroyedAt: json.destroyedAt }),
    ...(json.created === undefined ? {} : { created: json.created }),
  };
}

const pseudonymPattern = /^[0-9a-f]{64}$/;

/** Path segment for a pseudonym; refuses anything else, so no caller string reaches the URL. */
function subjectPath(pseudonym: string, suffix = ""): string {
  if (!pseudonymPattern.test(pseudonym)) throw new TypeError("pseudonym is 64 lower-case hex");
  return `/v1/vault/subjects/${pseudonym}${suffix}`;
}

export class VaultClient {
  private readonly http: CitychainClient;

  /** `url` is the vault's base URL, e.g. https://vault.example:7070 */
  constructor(options: ClientOptions) {
    this.http = new CitychainClient(options);
  }

  /** Makes (or finds) the holder's keys for an ID code; `created` says which. */
  async createSubject(codeType: string, code: string): Promise<VaultSubject> {
    const { body } = await this.http.request<SubjectJson>("POST", "/v1/vault/subjects", { codeType, code });
    return subjectFromJson(body);
  }

  async subject(pseudonym: string): Promise<VaultSubject> {
    return subjectFromJson((await this.http.request<SubjectJson>("GET", subjectPath(pseudonym))).body);
  }

  /** Signs an encoded subject statement (consent grant or withdrawal); returns the P1363 signature. */
  async signStatement(pseudonym: string, encodedStatement: Uint8Array): Promise<Uint8Array> {
    const { body } = await this.http.request<{ signature: string }>("POST", subjectPath(pseudonym, "/sign"), {
      statement: toBase64(encodedStatement),
    });
    return fromBase64(body.signature, "signature");
  }

  /** Signs the holder's read proof (subjectReadSigningBytes) for their own records. */
  async signRead(pseudonym: string, message: Uint8Array): Promise<Uint8Array> {
    const { body } = await this.http.request<{ signature: string }>(
      "POST",
      subjectPath(pseudonym, "/sign-read"),
      { message: toBase64(message) },
    );
    return fromBase64(body.signature, "signature");
  }

  /** Re-wraps the holder's wrapped data key to a department's key for this subject. */
  async rewrap(
    pseudonym: string,
    input: { licenseId: string; wrappedKey: WrappedKey; dept: string; deptPublicKey: Uint8Array },
  ): Promise<WrappedKey> {
    const { body } = await this.http.request<{ wrappedKey: WrappedKeyJson }>(
      "POST",
      subjectPath(pseudonym, "/rewrap"),
      {
        licenseId: input.licenseId,
        wrappedKey: wrappedToJson(input.wrappedKey),
        dept: input.dept,
        deptPublicKey: toBase64(input.deptPublicKey),
      },
    );
    return wrappedFromJson(body.wrappedKey);
  }

  /** Opens a license's sealed personal content with the holder's key. */
  async open(
    pseudonym: string,
    input: { licenseId: string; sealed: SealedContent; wrappedKey: WrappedKey },
  ): Promise<PersonalContent> {
    const { body } = await this.http.request<{ personal: PersonalContent }>(
      "POST",
      subjectPath(pseudonym, "/open"),
      {
        licenseId: input.licenseId,
        sealed: { nonce: toBase64(input.sealed.nonce), ciphertext: toBase64(input.sealed.ciphertext) },
        wrappedKey: wrappedToJson(input.wrappedKey),
      },
    );
    return body.personal;
  }

  /** Signs the forget statement and destroys the holder's keys; returns the signature for the ledger. */
  async forget(
    pseudonym: string,
    encodedStatement: Uint8Array,
  ): Promise<{ signature: Uint8Array; keysDestroyed: number }> {
    const { body } = await this.http.request<{ signature: string; keysDestroyed: number }>(
      "POST",
      subjectPath(pseudonym, "/forget"),
      { statement: toBase64(encodedStatement) },
    );
    return { signature: fromBase64(body.signature, "signature"), keysDestroyed: body.keysDestroyed };
  }

  /** One page of the audit log, oldest first (auditors). */
  async audit(
    options: { cursor?: string; limit?: number; pseudonym?: string } = {},
  ): Promise<{ items: VaultAuditEntry[]; nextCursor: string | null }> {
    const query = new URLSearchParams();
    if (options.cursor !== undefined) query.set("cursor", options.cursor);
    if (options.limit !== undefined) query.set("limit", String(options.limit));
    if (options.pseudonym !== undefined) query.set("pseudonym", options.pseudonym);
    const suffix = query.size === 0 ? "" : `?${query}`;
    return (
      await this.http.request<{ items: VaultAuditEntry[]; nextCursor: string | null }>(
        "GET",
        `/v1/vault/audit${suffix}`,
      )
    ).body;
  }
}
