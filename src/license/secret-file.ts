/**
 * Small secrets at rest under a passphrase: the consortium pseudonym key on a department's key node
 * and in the key vault, and (through `deriveMasterKey` and `sealAesGcm`) the key store's master key.
 *
 * File format (JSON, mode 0600, written durably: temp file, fsync, link, fsync of the folder):
 *   { "format": "citychain-secret", "version": 1, "purpose": "<what it is>",
 *     "kdf": { "name": "scrypt", "N": 32768, "r": 8, "p": 1, "salt": "<32 bytes hex>" },
 *     "cipher": "aes-256-gcm", "nonce": "<12 bytes hex>", "ciphertext": "<secret ‖ 16-byte tag, hex>" }
 * The key is scrypt(passphrase, salt); the AAD is "citychain/secret-file/v1" ‖ 0x00 ‖ purpose, so a file
 * made for one purpose is never accepted as another. No error here carries the passphrase or the secret.
 */
import { createCipheriv, createDecipheriv, randomBytes, scryptSync } from "node:crypto";
import { readFileSync, statSync } from "node:fs";
import { passphraseCharsMax, passphraseCharsMin, privateKeyFileMode, writeFileDurably } from "../ca/keys.ts";
import { CodedError } from "../core/errors.ts";

export const secretFileFormat = "citychain-secret";
export const secretFileVersion = 1;
export const secretFileAadTag = "citychain/secret-file/v1";
/** Largest secret file we read; a 32-byte secret makes about 400 bytes. */
export const secretFileBytesMax = 16 * 1024;
export const secretBytesMax = 1024;
export const masterKeyBytes = 32;
export const saltBytes = 32;
export const gcmNonceBytes = 12;
export const gcmTagBytes = 16;

export interface ScryptParams {
  /** CPU/memory cost, a power of two. */
  readonly N: number;
  readonly r: number;
  readonly p: number;
}

/** About 32 MiB and 100 ms per derivation: paid once when a store or file is opened. */
export const scryptDefaults: ScryptParams = { N: 2 ** 15, r: 8, p: 1 };
/**
 * Largest parameters we accept from a file, so a tampered file cannot make opening it take minutes
 * or gigabytes: at most N = 2^18 with r = 8, i.e. 256 MiB.
 */
export const scryptLimits = { logNMax: 18, logNMin: 10, rMax: 8, pMax: 4 } as const;

export function checkScryptParams(params: ScryptParams, field = "kdf"): void {
  const logN = Math.log2(params.N);
  const ok =
    Number.isInteger(logN) &&
    logN >= scryptLimits.logNMin &&
    logN <= scryptLimits.logNMax &&
    Number.isSafeInteger(params.r) &&
    params.r >= 1 &&
    params.r <= scryptLimits.rMax &&
    Number.isSafeInteger(params.p) &&
    params.p >= 1 &&
    params.p <= scryptLimits.pMax;
  if (!ok) {
    throw new CodedError(
      "STORAGE_CORRUPT",
      `scrypt parameters out of range (N 2^${scryptLimits.logNMin}..2^${scryptLimits.logNMax}, r <= ${scryptLimits.rMax}, p <= ${scryptLimits.pMax})`,
      field,
    );
  }
}

/** scrypt(passphrase, salt) -> 32-byte key. The caller zeroes it when done. */
export function deriveMasterKey(passphrase: string, salt: Uint8Array, params: ScryptParams): Buffer {
  checkScryptParams(params);
  // scrypt needs 128 * N * r bytes; allow twice that so the limit never trips on valid parameters.
  const maxmem = 256 * params.N * params.r + 1024 * 1024;
  return scryptSync(passphrase.normalize("NFC"), salt, masterKeyBytes, { ...params, maxmem });
}

export function checkNewPassphrase(passphrase: string): void {
  if (passphrase.length < passphraseCharsMin || passphrase.length > passphraseCharsMax) {
    throw new CodedError(
      "KEY_LOCKED",
      `a new passphrase is ${passphraseCharsMin}..${passphraseCharsMax} characters`,
      "passphrase",
    );
  }
}

export interface GcmSealed {
  readonly nonce: Uint8Array;
  /** Ciphertext with the 16-byte tag appended. */
  readonly ciphertext: Uint8Array;
}

export function sealAesGcm(key: Uint8Array, plaintext: Uint8Array, aad: Uint8Array): GcmSealed {
  const nonce = randomBytes(gcmNonceBytes);
  const cipher = createCipheriv("aes-256-gcm", key, nonce);
  cipher.setAAD(aad);
  const body = Buffer.concat([cipher.update(plaintext), cipher.final(), cipher.getAuthTag()]);
  return { nonce: new Uint8Array(nonce), ciphertext: new Uint8Array(body) };
}

/** The plaintext, or null when the key, nonce, ciphertext or AAD is not the one it was sealed with. */
export function openAesGcm(key: Uint8Array, sealed: GcmSealed, aad: Uint8Array): Buffer | null {
  if (sealed.nonce.length !== gcmNonceBytes || sealed.ciphertext.length < gcmTagBytes) return null;
  const split = sealed.ciphertext.length - gcmTagBytes;
  try {
    const decipher = createDecipheriv("aes-256-gcm", key, sealed.nonce);
    decipher.setAAD(aad);
    decipher.setAuthTag(sealed.ciphertext.subarray(split));
    return Buffer.concat([decipher.update(sealed.ciphertext.subarray(0, split)), decipher.final()]);
  } catch {
    return null;
  }
}

function secretAad(purpose: string): Buffer {
  return Buffer.concat([Buffer.from(secretFileAadTag), Buffer.from([0]), Buffer.from(purpose, "utf8")]);
}

export interface WriteSecretOptions {
  /** What the secret is, e.g. "pseudonym-key"; bound into the AAD and checked when read. */
  readonly purpose: string;
  readonly overwrite?: boolean;
  /** Only for tests that must be fast; files record their own parameters. */
  readonly scrypt?: ScryptParams;
}

export function writeSecretFile(
  path: string,
  secret: Uint8Array,
  passphrase: string,
  options: WriteSecretOptions,
): void {
  checkNewPassphrase(passphrase);
  if (secret.length === 0 || secret.length > secretBytesMax) {
    throw new CodedError("BAD_REQUEST", `a secret is 1..${secretBytesMax} bytes`, "secret");
  }
  const params = options.scrypt ?? scryptDefaults;
  const salt = randomBytes(saltBytes);
  const key = deriveMasterKey(passphrase, salt, params);
  try {
    const sealed = sealAesGcm(key, secret, secretAad(options.purpose));
    const envelope = {
      format: secretFileFormat,
      version: secretFileVersion,
      purpose: options.purpose,
      kdf: { name: "scrypt", N: params.N, r: params.r, p: params.p, salt: salt.toString("hex") },
      cipher: "aes-256-gcm",
      nonce: Buffer.from(sealed.nonce).toString("hex"),
      ciphertext: Buffer.from(sealed.ciphertext).toString("hex"),
    };
    writeFileDurably(path, `${JSON.stringify(envelope, null, 2)}\n`, {
      mode: privateKeyFileMode,
      overwrite: options.overwrite === true,
    });
  } finally {
    key.fill(0);
  }
}

interface Envelope {
  readonly purpose: string;
  readonly params: ScryptParams;
  readonly salt: Buffer;
  readonly sealed: GcmSealed;
}

function corrupt(path: string, what: string): never {
  throw new CodedError("STORAGE_CORRUPT", `secret file ${path}: ${what}`, "secretFile");
}

const hexField = (value: unknown): value is string =>
  typeof value === "string" && /^(?:[0-9a-f]{2})+$/.test(value);

function parseEnvelope(path: string, text: string): Envelope {
  let value: Record<string, unknown>;
  try {
    value = JSON.parse(text) as Record<string, unknown>;
  } catch {
    return corrupt(path, "not JSON");
  }
  if (value === null || typeof value !== "object") corrupt(path, "not an object");
  if (value.format !== secretFileFormat) corrupt(path, `format is not ${secretFileFormat}`);
  if (value.version !== secretFileVersion) corrupt(path, `unknown version ${String(value.version)}`);
  if (value.cipher !== "aes-256-gcm") corrupt(path, "unknown cipher");
  const kdf = value.kdf as Record<string, unknown> | null;
  if (kdf === null || typeof kdf !== "object" || kdf.name !== "scrypt" || !hexField(kdf.salt)) {
    corrupt(path, "kdf is not scrypt with a salt");
  }
  if (typeof value.purpose !== "string" || !hexField(value.nonce) || !hexField(value.ciphertext)) {
    corrupt(path, "purpose, nonce or ciphertext missing");
  }
  const params = { N: Number(kdf.N), r: Number(kdf.r), p: Number(kdf.p) };
  checkScryptParams(params);
  return {
    purpose: value.purpose,
    params,
    salt: Buffer.from(kdf.salt, "hex"),
    sealed: { nonce: Buffer.from(value.nonce, "hex"), ciphertext: Buffer.from(value.ciphertext, "hex") },
  };
}

function readSmall(path: string): string {
  let size: number;
  try {
    size = statSync(path).size;
  } catch {
    throw new CodedError("NOT_FOUND", `secret file ${path} is missing or unreadable`, "secretFile");
  }
  if (size > secretFileBytesMax) corrupt(path, `larger than ${secretFileBytesMax} bytes`);
  return readFileSync(path, "utf8");
}

/** Reads and decrypts a secret; KEY_LOCKED for a wrong passphrase, STORAGE_CORRUPT for a damaged file. */
export function readSecretFile(path: string, passphrase: string, purpose: string): Uint8Array {
  const envelope = parseEnvelope(path, readSmall(path));
  if (envelope.purpose !== purpose) corrupt(path, `holds a ${envelope.purpose}, not a ${purpose}`);
  const key = deriveMasterKey(passphrase, envelope.salt, envelope.params);
  try {
    const secret = openAesGcm(key, envelope.sealed, secretAad(purpose));
    if (secret === null) {
      throw new CodedError(
        "KEY_LOCKED",
        `cannot open ${path}: wrong passphrase or damaged file`,
        "passphrase",
      );
    }
    const out = new Uint8Array(secret);
    secret.fill(0);
    return out;
  } finally {
    key.fill(0);
  }
}
