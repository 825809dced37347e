/**
 * P-256 key pairs and their files. Private keys rest on disk only as encrypted PKCS#8 PEM
 * (AES-256-CBC under a passphrase, via OpenSSL's PBES2/PBKDF2), in files only their owner can read.
 * No error or log line here ever carries key bytes or a passphrase: Node's own errors are caught and
 * replaced, never wrapped, because we cannot vouch for what they contain.
 */
import {
  createPrivateKey,
  createPublicKey,
  generateKeyPairSync,
  type KeyObject,
  randomBytes,
} from "node:crypto";
import {
  closeSync,
  fchmodSync,
  fsyncSync,
  linkSync,
  openSync,
  readFileSync,
  renameSync,
  rmSync,
  statSync,
  writeFileSync,
} from "node:fs";
import { basename, dirname, join } from "node:path";
import { caFail, isP256 } from "./identity.ts";

export interface KeyPair {
  readonly privateKey: KeyObject;
  readonly publicKey: KeyObject;
}

/** Shortest passphrase we encrypt a new key under; loading accepts any length. */
export const passphraseCharsMin = 12;
export const passphraseCharsMax = 1024;
/** Largest passphrase file we read. */
export const passphraseFileBytesMax = 4 * 1024;
/** Largest key file we read; an encrypted P-256 key is about 400 bytes. */
export const keyFileBytesMax = 16 * 1024;
/** Owner read/write only. */
export const privateKeyFileMode = 0o600;

export function generateP256KeyPair(): KeyPair {
  return generateKeyPairSync("ec", { namedCurve: "P-256" });
}

// ---------------------------------------------------------------------------------------------
// Passphrases

/**
 * Where a passphrase comes from. `env` names an environment variable (its value is the passphrase);
 * `file` is a path whose content is the passphrase, one trailing newline ignored. Prefer `env` or
 * `file` over `value` on a command line, where other users can see it in the process list.
 */
export type PassphraseSource =
  | { readonly value: string }
  | { readonly env: string }
  | { readonly file: string };

export function resolvePassphrase(source: PassphraseSource, env: NodeJS.ProcessEnv = process.env): string {
  if ("value" in source) return checkPassphrase(source.value);
  if ("env" in source) {
    const value = env[source.env];
    if (value === undefined || value === "") {
      caFail("KEY_LOCKED", `environment variable ${source.env} holds no passphrase`, "passphrase");
    }
    return checkPassphrase(value);
  }
  return checkPassphrase(readPassphraseFile(source.file));
}

function readPassphraseFile(path: string): string {
  const read = readSmallFile(path, passphraseFileBytesMax);
  if ("problem" in read) caFail("KEY_LOCKED", `passphrase file ${path} is ${read.problem}`, "passphrase");
  return read.text.replace(/\r?\n$/, "");
}

type SmallFile = { readonly text: string } | { readonly problem: "unreadable" | "too large" };

/** The file's text, or why it could not be had; the content never reaches an error message. */
function readSmallFile(path: string, bytesMax: number): SmallFile {
  try {
    if (statSync(path).size > bytesMax) return { problem: "too large" };
    return { text: readFileSync(path, "utf8") };
  } catch {
    return { problem: "unreadable" };
  }
}

function checkPassphrase(value: string): string {
  if (value.length === 0 || value.length > passphraseCharsMax) {
    caFail("KEY_LOCKED", `a passphrase is 1..${passphraseCharsMax} characters`, "passphrase");
  }
  return value;
}

// ---------------------------------------------------------------------------------------------
// Encrypted PEM

export function encryptPrivateKeyPem(privateKey: KeyObject, passphrase: string): string {
  if (passphrase.length < passphraseCharsMin || passphrase.length > passphraseCharsMax) {
    caFail(
      "CA_BAD_INPUT",
      `a new key's passphrase is ${passphraseCharsMin}..${passphraseCharsMax} characters`,
      "passphrase",
    );
  }
  return privateKey.export({ format: "pem", type: "pkcs8", cipher: "aes-256-cbc", passphrase }) as string;
}

export interface ReadPrivateKeyOptions {
  readonly passphrase?: string;
  /** Accept an unencrypted key file (tests and throwaway devnets only). */
  readonly allowPlaintext?: boolean;
}

type PemKind = "encrypted" | "plaintext" | "other";

/** Classify by the PEM armour alone: trying to parse first would let a plaintext key slip through. */
function pemKind(pem: string): PemKind {
  const labels = [...pem.matchAll(/-----BEGIN ([A-Z ]+)-----/g)].map((match) => match[1]);
  if (labels.length !== 1) return "other";
  if (labels[0] === "ENCRYPTED PRIVATE KEY") return "encrypted";
  if (labels[0] === "EC PRIVATE KEY" && pem.includes("Proc-Type: 4,ENCRYPTED")) return "encrypted";
  if (labels[0] === "PRIVATE KEY" || labels[0] === "EC PRIVATE KEY") return "plaintext";
  return "other";
}

/** `source` names the key in messages (a path, or "private key"); it is never the key itself. */
export function decryptPrivateKeyPem(
  pem: string,
  options: ReadPrivateKeyOptions,
  source = "private key",
): KeyObject {
  const kind = pemKind(pem);
  if (kind === "other") caFail("CA_BAD_INPUT", `${source} is not one PEM private key`, "keyFile");
  if (kind === "plaintext" && options.allowPlaintext !== true) {
    caFail("KEY_LOCKED", `${source} is not encrypted; refusing it without allowPlaintext`, "keyFile");
  }
  if (kind === "encrypted" && options.passphrase === undefined) {
    caFail("KEY_LOCKED", `${source} is encrypted and no passphrase was given`, "passphrase");
  }
  let key: KeyObject;
  try {
    key =
      kind === "encrypted"
        ? createPrivateKey({ key: pem, format: "pem", passphrase: options.passphrase! })
        : createPrivateKey({ key: pem, format: "pem" });
  } catch {
    caFail("KEY_LOCKED", `cannot open ${source}: wrong passphrase or damaged key`, "passphrase");
  }
  if (!isP256(key)) caFail("CA_BAD_INPUT", `${source} is not an EC P-256 key`, "keyFile");
  return key;
}

// ---------------------------------------------------------------------------------------------
// Files

export interface WriteFileOptions {
  readonly mode: number;
  /** Replace an existing file; otherwise an existing file is an error and stays untouched. */
  readonly overwrite?: boolean;
}

/**
 * Write-then-publish: the data goes to a private temporary file, is fsynced, and only then appears
 * under its name (link refuses to replace, rename replaces atomically). A crash leaves either the
 * old state or the complete new file, never a torn key.
 */
export function writeFileDurably(path: string, data: string | Uint8Array, options: WriteFileOptions): void {
  const temporary = join(dirname(path), `.${basename(path)}.${randomBytes(8).toString("hex")}.tmp`);
  const fd = openSync(temporary, "wx", options.mode);
  try {
    try {
      fchmodSync(fd, options.mode);
      writeFileSync(fd, data);
      fsyncSync(fd);
    } finally {
      closeSync(fd);
    }
    publish(temporary, path, options.overwrite === true);
  } finally {
    rmSync(temporary, { force: true });
  }
  fsyncDirectory(dirname(path));
}

function publish(temporary: string, path: string, overwrite: boolean): void {
  try {
    if (overwrite) renameSync(temporary, path);
    else linkSync(temporary, path);
  } catch (error) {
    if (error instanceof Error && "code" in error && error.code === "EEXIST") {
      caFail("CONFLICT", `${path} already exists`, "path");
    }
    throw error;
  }
}

function fsyncDirectory(path: string): void {
  const fd = openSync(path, "r");
  try {
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
}

export function writeEncryptedPrivateKey(
  path: string,
  privateKey: KeyObject,
  passphrase: string,
  options: { readonly overwrite?: boolean } = {},
): void {
  const pem = encryptPrivateKeyPem(privateKey, passphrase);
  writeFileDurably(path, pem, { mode: privateKeyFileMode, overwrite: options.overwrite === true });
}

export function readPrivateKey(path: string, options: ReadPrivateKeyOptions): KeyObject {
  const read = readSmallFile(path, keyFileBytesMax);
  if ("problem" in read) caFail("CA_BAD_INPUT", `key file ${path} is ${read.problem}`, "keyFile");
  return decryptPrivateKeyPem(read.text, options, `key file ${path}`);
}

// ---------------------------------------------------------------------------------------------
// WebCrypto views, for @peculiar/x509 which signs through WebCrypto.

const p256Import = { name: "ECDSA", namedCurve: "P-256" } as const;

/** A non-extractable signing key; the PKCS#8 bytes used to import it are wiped afterwards. */
export async function toSigningCryptoKey(privateKey: KeyObject): Promise<CryptoKey> {
  const pkcs8 = privateKey.export({ type: "pkcs8", format: "der" });
  try {
    return await globalThis.crypto.subtle.importKey("pkcs8", pkcs8, p256Import, false, ["sign"]);
  } finally {
    pkcs8.fill(0);
  }
}

export async function toVerifyingCryptoKey(publicKey: KeyObject): Promise<CryptoKey> {
  const spki = publicKey.export({ type: "spki", format: "der" });
  return globalThis.crypto.subtle.importKey("spki", spki, p256Import, true, ["verify"]);
}

export function publicKeyFromSpki(spki: Uint8Array): KeyObject {
  return createPublicKey({ key: Buffer.from(spki), format: "der", type: "spki" });
}
