/**
 * License crypto for holders, departments and the key vault (docs/licenses.md, "Personal data and
 * keys"). It runs unchanged in Node and in browsers: WebCrypto (`globalThis.crypto.subtle`) and
 * @hpke/core only, no node:* imports (it is part of the browser SDK bundle).
 *
 * - personal content is sealed with AES-256-GCM under a fresh 32-byte data key, bound to the
 *   license id by its AAD, so a sealed blob cannot be moved to another license;
 * - the data key is wrapped with HPKE (RFC 9180, base mode, DHKEM(P-256)/HKDF-SHA256/AES-256-GCM) to
 *   each recipient, bound to the license id and the recipient's label by its AAD;
 * - pseudonyms are HMAC-SHA256 under the consortium's pseudonym key, so ID numbers (low entropy)
 *   cannot be tested against the ledger by anyone without that key.
 *
 * Failures to open or unwrap are DECRYPT_UNAVAILABLE and never say which check failed beyond what
 * the caller already knows: a wrong key, a tampered blob and a moved blob look the same.
 */
import { Aes256Gcm, CipherSuite, DhkemP256HkdfSha256, HkdfSha256 } from "@hpke/core";
import { bytesEqual, concatBytes, fromUtf8, toHex, utf8 } from "../core/encoding.ts";
import { CodedError } from "../core/errors.ts";
import { canonicalJson, isJsonObject, type JsonObject, parseJsonLimited } from "../core/license/json.ts";
import type { SealedContent, WrappedKey } from "../core/license/records.ts";
import { subjectStatementSigningBytes } from "../core/license/statement.ts";
import { normalizeP256Signature } from "../core/signature.ts";

// ---------------------------------------------------------------------------------------------
// Constants of the format (docs/licenses.md): changing any of them is a new format version.

export const contentAadTag = "citychain/license-content/v1";
export const contentHashTag = "citychain/license-hash/v1";
export const keyWrapInfo = "citychain/license-key/v1";
export const pseudonymTag = "citychain/subject/v1";
/** RFC 9180 identifiers of the one suite: DHKEM(P-256, HKDF-SHA256), HKDF-SHA256, AES-256-GCM. */
export const hpkeSuiteIds = { kem: 0x0010, kdf: 0x0001, aead: 0x0002 } as const;

export const dataKeyBytes = 32;
export const contentNonceBytes = 12;
export const aesGcmTagBytes = 16;
export const contentSaltBytes = 32;
/** Uncompressed P-256 point: 0x04 ‖ x ‖ y. */
export const encryptionPublicKeyBytes = 65;
export const wrappedKeyCiphertextBytes = dataKeyBytes + aesGcmTagBytes;
export const pseudonymKeyBytes = 32;
/** Recipients of one sealing: the holder and the departments the law names; a bound on work. */
export const recipientsMax = 64;
/** Longest recipient label ("holder" or a department code) and code type / code for a pseudonym. */
export const labelCharsMax = 64;
export const subjectCodeCharsMax = 128;

const suite = new CipherSuite({
  kem: new DhkemP256HkdfSha256(),
  kdf: new HkdfSha256(),
  aead: new Aes256Gcm(),
});

const subtle = (): SubtleCrypto => globalThis.crypto.subtle;
const ecdh = { name: "ECDH", namedCurve: "P-256" } as const;
const ecdsa = { name: "ECDSA", namedCurve: "P-256" } as const;
const zero = new Uint8Array([0]);

/** WebCrypto's typings want ArrayBuffer-backed views; ours always are. */
const buf = (bytes: Uint8Array) => bytes as Uint8Array<ArrayBuffer>;

function randomBytes(length: number): Uint8Array {
  return globalThis.crypto.getRandomValues(new Uint8Array(length));
}

function unavailable(message: string, field?: string): never {
  throw new CodedError("DECRYPT_UNAVAILABLE", message, field);
}

function invalid(message: string, field: string): never {
  throw new CodedError("PAYLOAD_INVALID", message, field);
}

function checkLabel(label: string, field: string): void {
  if (label.length === 0 || label.length > labelCharsMax || label.includes("\u0000")) {
    invalid(`${field} is 1..${labelCharsMax} characters without NUL`, field);
  }
}

function checkLicenseId(licenseId: string): void {
  // The id is joined to other strings with 0x00 in the AADs; a NUL inside would make them ambiguous.
  if (licenseId.length === 0 || licenseId.length > 256 || licenseId.includes("\u0000")) {
    invalid("licenseId is 1..256 characters without NUL", "licenseId");
  }
}

export async function sha256Bytes(bytes: Uint8Array): Promise<Uint8Array> {
  return new Uint8Array(await subtle().digest("SHA-256", buf(bytes)));
}

// ---------------------------------------------------------------------------------------------
// Keys

export interface EncryptionKeyPair {
  /** Uncompressed P-256 point, 65 bytes: what goes on chain. */
  readonly publicKey: Uint8Array;
  /** PKCS#8 DER of the ECDH private key: what a key store seals at rest. */
  readonly privateKeyPkcs8: Uint8Array;
}

/** A recipient's private key ready for unwrapping, with its public key (to check recipientKeyHash). */
export interface EncryptionPrivateKey {
  readonly keyPair: CryptoKeyPair;
  readonly publicKey: Uint8Array;
}

export interface SigningKeyPair {
  /** SPKI DER. */
  readonly publicKeySpki: Uint8Array;
  readonly privateKeyPkcs8: Uint8Array;
}

/** A new HPKE key pair for a subject (holder) or for a department's view of one subject. */
export async function generateEncryptionKeyPair(): Promise<EncryptionKeyPair> {
  const pair = (await subtle().generateKey(ecdh, true, ["deriveBits"])) as CryptoKeyPair;
  return {
    publicKey: new Uint8Array(await subtle().exportKey("raw", pair.publicKey)),
    privateKeyPkcs8: new Uint8Array(await subtle().exportKey("pkcs8", pair.privateKey)),
  };
}

/**
 * Imports a PKCS#8 ECDH private key for unwrapping. The private CryptoKey is not extractable; its
 * public half is computed once here (through a short-lived extractable import) and kept beside it.
 */
export async function importEncryptionPrivateKey(pkcs8: Uint8Array): Promise<EncryptionPrivateKey> {
  let jwk: JsonWebKey;
  let privateKey: CryptoKey;
  try {
    const extractable = await subtle().importKey("pkcs8", buf(pkcs8), ecdh, true, ["deriveBits"]);
    jwk = await subtle().exportKey("jwk", extractable);
    privateKey = await subtle().importKey("pkcs8", buf(pkcs8), ecdh, false, ["deriveBits"]);
  } catch {
    return invalid("not a P-256 ECDH private key (PKCS#8)", "privateKey");
  }
  const { d: _secret, key_ops: _ops, ...publicJwk } = jwk;
  const publicCryptoKey = await subtle().importKey("jwk", { ...publicJwk, ext: true }, ecdh, true, []);
  const publicKey = new Uint8Array(await subtle().exportKey("raw", publicCryptoKey));
  return { keyPair: { privateKey, publicKey: publicCryptoKey }, publicKey };
}

/** The raw public key of a PKCS#8 ECDH private key. */
export async function encryptionPublicKeyOf(pkcs8: Uint8Array): Promise<Uint8Array> {
  return (await importEncryptionPrivateKey(pkcs8)).publicKey;
}

async function importEncryptionPublicKey(publicKey: Uint8Array, field: string): Promise<CryptoKey> {
  if (publicKey.length !== encryptionPublicKeyBytes || publicKey[0] !== 0x04) {
    invalid(`${field} is a 65-byte uncompressed P-256 point`, field);
  }
  try {
    return await suite.kem.deserializePublicKey(publicKey);
  } catch {
    return invalid(`${field} is not a point on P-256`, field);
  }
}

/** A new P-256 ECDSA key pair for a subject's statements. */
export async function generateSigningKeyPair(): Promise<SigningKeyPair> {
  const pair = (await subtle().generateKey(ecdsa, true, ["sign", "verify"])) as CryptoKeyPair;
  return {
    publicKeySpki: new Uint8Array(await subtle().exportKey("spki", pair.publicKey)),
    privateKeyPkcs8: new Uint8Array(await subtle().exportKey("pkcs8", pair.privateKey)),
  };
}

/** A non-extractable signing key from PKCS#8. */
export async function importSigningPrivateKey(pkcs8: Uint8Array): Promise<CryptoKey> {
  try {
    return await subtle().importKey("pkcs8", buf(pkcs8), ecdsa, false, ["sign"]);
  } catch {
    return invalid("not a P-256 ECDSA private key (PKCS#8)", "privateKey");
  }
}

/**
 * Signs an encoded subject statement (src/core/license/statement.ts): P1363, low S, over the
 * statement's signing bytes, so every node accepts it and it has one byte form.
 */
export async function signSubjectStatement(
  privateKey: CryptoKey | Uint8Array,
  encodedStatement: Uint8Array,
): Promise<Uint8Array> {
  const key = privateKey instanceof Uint8Array ? await importSigningPrivateKey(privateKey) : privateKey;
  const message = subjectStatementSigningBytes(encodedStatement);
  const raw = await subtle().sign({ name: "ECDSA", hash: "SHA-256" }, key, buf(message));
  return normalizeP256Signature(new Uint8Array(raw));
}

// ---------------------------------------------------------------------------------------------
// Pseudonyms

/** HMAC-SHA256(pseudonymKey, "citychain/subject/v1" ‖ 0x00 ‖ codeType ‖ 0x00 ‖ code), lower-case hex. */
export async function pseudonymOf(pseudonymKey: Uint8Array, codeType: string, code: string): Promise<string> {
  if (pseudonymKey.length !== pseudonymKeyBytes) invalid("the pseudonym key is 32 bytes", "pseudonymKey");
  for (const [value, field] of [
    [codeType, "codeType"],
    [code, "code"],
  ] as const) {
    if (value.length === 0 || value.length > subjectCodeCharsMax || value.includes("\u0000")) {
      invalid(`${field} is 1..${subjectCodeCharsMax} characters without NUL`, field);
    }
  }
  const key = await subtle().importKey("raw", buf(pseudonymKey), { name: "HMAC", hash: "SHA-256" }, false, [
    "sign",
  ]);
  const message = concatBytes(utf8(pseudonymTag), zero, utf8(codeType), zero, utf8(code));
  return toHex(new Uint8Array(await subtle().sign("HMAC", key, buf(message))));
}

// ---------------------------------------------------------------------------------------------
// Personal content

export interface PersonalInput {
  readonly holderName: string;
  readonly holderCode: string;
  readonly fields: JsonObject;
}

export interface PersonalContent extends PersonalInput {
  /** 32 random bytes, hex: keeps the content hash from confirming guesses of low-entropy fields. */
  readonly salt: string;
}

export interface Recipient {
  /** "holder" or a department code: bound into the wrapped key's AAD. */
  readonly label: string;
  readonly publicKey: Uint8Array;
}

export interface SealResult {
  readonly sealed: SealedContent;
  readonly personalWithSalt: PersonalContent;
  readonly wrapped: Record<string, WrappedKey>;
}

function contentAad(licenseId: string): Uint8Array {
  return concatBytes(utf8(contentAadTag), zero, utf8(licenseId));
}

function personalJson(personal: PersonalContent): JsonObject {
  return {
    salt: personal.salt,
    holderName: personal.holderName,
    holderCode: personal.holderCode,
    fields: personal.fields,
  };
}

async function importDataKey(dataKey: Uint8Array, usage: "encrypt" | "decrypt"): Promise<CryptoKey> {
  if (dataKey.length !== dataKeyBytes) invalid(`a data key is ${dataKeyBytes} bytes`, "dataKey");
  return subtle().importKey("raw", buf(dataKey), { name: "AES-GCM" }, false, [usage]);
}

/**
 * Seals personal content under a fresh data key and wraps that key to every recipient. The caller
 * puts `sealed` and the wrapped keys on chain and `contentHash(personalWithSalt, public)` beside
 * them; the data key itself never leaves this function.
 */
export async function sealPersonal(
  licenseId: string,
  personal: PersonalInput,
  recipients: readonly Recipient[],
): Promise<SealResult> {
  checkLicenseId(licenseId);
  checkRecipients(recipients);
  const personalWithSalt: PersonalContent = {
    salt: toHex(randomBytes(contentSaltBytes)),
    holderName: personal.holderName,
    holderCode: personal.holderCode,
    fields: personal.fields,
  };
  const plaintext = utf8(canonicalJson(personalJson(personalWithSalt), "personal"));
  const dataKey = randomBytes(dataKeyBytes);
  try {
    const nonce = randomBytes(contentNonceBytes);
    const key = await importDataKey(dataKey, "encrypt");
    const ciphertext = new Uint8Array(
      await subtle().encrypt(
        { name: "AES-GCM", iv: buf(nonce), additionalData: buf(contentAad(licenseId)) },
        key,
        buf(plaintext),
      ),
    );
    const wrapped: Record<string, WrappedKey> = {};
    for (const recipient of recipients) {
      wrapped[recipient.label] = await wrapDataKey(dataKey, licenseId, recipient.label, recipient.publicKey);
    }
    return { sealed: { nonce, ciphertext }, personalWithSalt, wrapped };
  } finally {
    dataKey.fill(0);
    plaintext.fill(0);
  }
}

function checkRecipients(recipients: readonly Recipient[]): void {
  if (recipients.length === 0 || recipients.length > recipientsMax) {
    invalid(`1..${recipientsMax} recipients`, "recipients");
  }
  const labels = new Set<string>();
  for (const recipient of recipients) {
    checkLabel(recipient.label, "recipients.label");
    if (labels.has(recipient.label)) invalid(`recipient ${recipient.label} given twice`, "recipients.label");
    labels.add(recipient.label);
  }
}

/** Opens sealed personal content with its data key; DECRYPT_UNAVAILABLE when it does not open. */
export async function openPersonal(
  licenseId: string,
  sealed: SealedContent,
  dataKey: Uint8Array,
): Promise<PersonalContent> {
  checkLicenseId(licenseId);
  if (sealed.nonce.length !== contentNonceBytes) unavailable("sealed content has a malformed nonce", "nonce");
  const key = await importDataKey(dataKey, "decrypt");
  let plaintext: Uint8Array;
  try {
    plaintext = new Uint8Array(
      await subtle().decrypt(
        { name: "AES-GCM", iv: buf(sealed.nonce), additionalData: buf(contentAad(licenseId)) },
        key,
        buf(sealed.ciphertext),
      ),
    );
  } catch {
    return unavailable("sealed content does not open with this data key for this license");
  }
  return parsePersonal(fromUtf8(plaintext));
}

function parsePersonal(text: string): PersonalContent {
  const value = parseJsonLimited(text, "personal");
  if (!isJsonObject(value)) invalid("personal content is an object", "personal");
  const { salt, holderName, holderCode, fields } = value;
  if (typeof salt !== "string" || !/^[0-9a-f]{64}$/.test(salt)) invalid("salt is 64 hex", "personal.salt");
  if (typeof holderName !== "string" || typeof holderCode !== "string") {
    invalid("holderName and holderCode are strings", "personal");
  }
  if (!isJsonObject(fields)) invalid("fields is an object", "personal.fields");
  return { salt, holderName, holderCode, fields };
}

/**
 * SHA-256("citychain/license-hash/v1" ‖ 0x00 ‖ canonical JSON of { personal, public }). `publicContent`
 * may be the object or its JSON text (as stored in a license version).
 */
export async function contentHash(
  personalWithSalt: PersonalContent,
  publicContent: JsonObject | string,
): Promise<Uint8Array> {
  const publicValue =
    typeof publicContent === "string" ? parseJsonLimited(publicContent, "publicContent") : publicContent;
  if (!isJsonObject(publicValue)) invalid("public content is an object", "publicContent");
  const text = canonicalJson({ personal: personalJson(personalWithSalt), public: publicValue }, "content");
  return sha256Bytes(concatBytes(utf8(contentHashTag), zero, utf8(text)));
}

// ---------------------------------------------------------------------------------------------
// Data key wrapping

function wrapAad(licenseId: string, label: string): Uint8Array {
  return concatBytes(utf8(licenseId), zero, utf8(label));
}

/** HPKE-wraps a data key to one recipient for one license. */
export async function wrapDataKey(
  dataKey: Uint8Array,
  licenseId: string,
  label: string,
  recipientPublicKey: Uint8Array,
): Promise<WrappedKey> {
  checkLicenseId(licenseId);
  checkLabel(label, "label");
  if (dataKey.length !== dataKeyBytes) invalid(`a data key is ${dataKeyBytes} bytes`, "dataKey");
  const recipient = await importEncryptionPublicKey(recipientPublicKey, "publicKey");
  const sealed = await suite.seal(
    { recipientPublicKey: recipient, info: utf8(keyWrapInfo) },
    dataKey,
    wrapAad(licenseId, label),
  );
  return {
    enc: new Uint8Array(sealed.enc),
    ciphertext: new Uint8Array(sealed.ct),
    recipientKeyHash: await sha256Bytes(recipientPublicKey),
  };
}

/**
 * Unwraps a data key. Refuses a wrapped key made for another public key (recipientKeyHash), so a
 * rotated or wrong key is named as such rather than failing as tampering.
 */
export async function unwrapDataKey(
  wrapped: WrappedKey,
  licenseId: string,
  label: string,
  recipient: EncryptionPrivateKey,
): Promise<Uint8Array> {
  checkLicenseId(licenseId);
  checkLabel(label, "label");
  const keyHash = await sha256Bytes(recipient.publicKey);
  if (!bytesEqual(keyHash, wrapped.recipientKeyHash)) {
    unavailable("the wrapped key was made for another recipient key", "recipientKeyHash");
  }
  if (
    wrapped.enc.length !== encryptionPublicKeyBytes ||
    wrapped.ciphertext.length !== wrappedKeyCiphertextBytes
  ) {
    unavailable("the wrapped key is malformed", "wrappedKey");
  }
  let dataKey: ArrayBuffer;
  try {
    dataKey = await suite.open(
      { recipientKey: recipient.keyPair, enc: wrapped.enc, info: utf8(keyWrapInfo) },
      wrapped.ciphertext,
      wrapAad(licenseId, label),
    );
  } catch {
    return unavailable("the wrapped key does not open for this recipient and license");
  }
  return new Uint8Array(dataKey);
}

/**
 * Re-wraps a data key from one recipient to another (a consent grant: holder -> department). The
 * data key exists in memory only inside this call.
 */
export async function rewrap(
  wrapped: WrappedKey,
  fromLabel: string,
  privateKey: EncryptionPrivateKey,
  toLabel: string,
  toPublicKey: Uint8Array,
  licenseId: string,
): Promise<WrappedKey> {
  const dataKey = await unwrapDataKey(wrapped, licenseId, fromLabel, privateKey);
  try {
    return await wrapDataKey(dataKey, licenseId, toLabel, toPublicKey);
  } finally {
    dataKey.fill(0);
  }
}
