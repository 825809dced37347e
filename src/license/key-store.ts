/**
 * Private keys per data subject, at rest in SQLite (better-sqlite3), used by a department's key node
 * (owner = its department code: one HPKE key per subject) and by the key vault (owner = "holder": the
 * holder's HPKE key and signing key). docs/licenses.md, "Key vault", describes the format.
 *
 * - Every private key is sealed with AES-256-GCM under a master key = scrypt(passphrase, salt); the
 *   salt and scrypt parameters are stored in the database, with a check value that tells a wrong
 *   passphrase apart from damage. The AAD binds owner, pseudonym, key kind and public key, so a row
 *   cannot be moved to another subject or paired with another public key.
 * - Destroying a subject deletes its rows (secure_delete zeroes them in the file, and the WAL is
 *   checkpointed and truncated) and leaves a tombstone without key material, so a later create for
 *   that subject fails with VAULT_KEY_DESTROYED rather than silently minting a new key.
 * - Decrypted keys are cached as non-extractable CryptoKeys in a bounded LRU, dropped on destroy.
 */

import { randomBytes } from "node:crypto";
import { closeSync, existsSync, openSync } from "node:fs";
import Database from "better-sqlite3";
import { bytesEqual } from "../core/encoding.ts";
import { assert, CodedError } from "../core/errors.ts";
import type { WrappedKey } from "../core/license/records.ts";
import { decodeSubjectStatement, parseSubjectReadBytes } from "../core/license/statement.ts";
import { normalizeP256Signature } from "../core/signature.ts";
import {
  type EncryptionPrivateKey,
  generateEncryptionKeyPair,
  generateSigningKeyPair,
  importEncryptionPrivateKey,
  importSigningPrivateKey,
  signSubjectStatement,
  unwrapDataKey,
  wrapDataKey,
} from "../sdk/sealing.ts";
import {
  checkNewPassphrase,
  checkScryptParams,
  deriveMasterKey,
  type GcmSealed,
  openAesGcm,
  type ScryptParams,
  saltBytes,
  scryptDefaults,
  sealAesGcm,
} from "./secret-file.ts";

export const keyStoreFormat = "citychain-key-store/v1";
export const keyStoreAadTag = "citychain/key-store/v1";
/** The owner of a holder's own keys (the vault); departments own keys under their code. */
export const holderOwner = "holder";
export const keyKinds = ["encryption", "signing"] as const;
export type KeyKind = (typeof keyKinds)[number];

export const keyStoreDefaults = {
  /** Decrypted private keys kept in memory; each is a CryptoKey of a few hundred bytes. */
  decryptedKeysMax: 1024,
} as const;

const pseudonymPattern = /^[0-9a-f]{64}$/;
const ownerPattern = /^(?:holder|[a-z][a-z0-9-]{1,31})$/;
const checkPlaintext = Buffer.from("citychain key store check value");

export interface KeyStoreOptions {
  readonly path: string;
  readonly passphrase: string;
  /** Create the store when the file does not exist (default false: a missing store is an error). */
  readonly create?: boolean;
  /** scrypt parameters for a new store (tests use small ones); an existing store keeps its own. */
  readonly scrypt?: ScryptParams;
  readonly decryptedKeysMax?: number;
  readonly now?: () => number;
}

export interface SubjectKeys {
  readonly pseudonym: string;
  readonly status: "active" | "destroyed" | "unknown";
  readonly keys: readonly { owner: string; kind: KeyKind; publicKey: Uint8Array; createdMs: number }[];
  readonly destroyedMs: number | null;
}

export interface CreatedKey {
  /** Encryption: 65-byte point; signing: SPKI DER. */
  readonly publicKey: Uint8Array;
  readonly created: boolean;
}

interface KeyRow {
  owner: string;
  pseudonym: string;
  kind: KeyKind;
  public_key: Buffer;
  nonce: Buffer;
  sealed: Buffer;
  created_ms: number;
}

type DecryptedKey = EncryptionPrivateKey | CryptoKey;

function badInput(message: string, field: string): never {
  throw new CodedError("BAD_REQUEST", message, field);
}

function checkPseudonym(pseudonym: string): void {
  if (!pseudonymPattern.test(pseudonym)) badInput("pseudonym is 64 lower-case hex", "pseudonym");
}

function checkOwner(owner: string): void {
  if (!ownerPattern.test(owner)) badInput(`owner is "${holderOwner}" or a department code`, "owner");
}

function keyAad(owner: string, pseudonym: string, kind: KeyKind, publicKey: Uint8Array): Buffer {
  const zero = Buffer.from([0]);
  return Buffer.concat([
    Buffer.from(keyStoreAadTag),
    zero,
    Buffer.from(owner),
    zero,
    Buffer.from(pseudonym),
    zero,
    Buffer.from(kind),
    zero,
    publicKey,
  ]);
}

function checkAad(): Buffer {
  return Buffer.concat([Buffer.from(keyStoreAadTag), Buffer.from([0]), Buffer.from("check")]);
}

const schema = `
  CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value TEXT NOT NULL) STRICT;
  CREATE TABLE IF NOT EXISTS keys (
    owner TEXT NOT NULL, pseudonym TEXT NOT NULL, kind TEXT NOT NULL,
    public_key BLOB NOT NULL, nonce BLOB NOT NULL, sealed BLOB NOT NULL, created_ms INTEGER NOT NULL,
    PRIMARY KEY (owner, pseudonym, kind)) STRICT;
  CREATE INDEX IF NOT EXISTS keys_by_pseudonym ON keys (pseudonym);
  CREATE TABLE IF NOT EXISTS destroyed (
    pseudonym TEXT PRIMARY KEY, destroyed_ms INTEGER NOT NULL, keys_destroyed INTEGER NOT NULL) STRICT;
`;

/** Creates the file owner-only before SQLite does (its -wal and -shm files copy the mode). */
function createPrivateFile(path: string): void {
  closeSync(openSync(path, "wx", 0o600));
}

export class KeyStore {
  private readonly db: Database.Database;
  private masterKey: Buffer;
  private readonly now: () => number;
  private readonly decryptedKeysMax: number;
  /** LRU of decrypted keys: a Map keeps insertion order, and a hit re-inserts. */
  private readonly decrypted = new Map<string, DecryptedKey>();
  /** Key creations under way, so concurrent calls for one subject make one key. */
  private readonly creating = new Map<string, Promise<CreatedKey>>();

  private constructor(db: Database.Database, masterKey: Buffer, options: KeyStoreOptions) {
    this.db = db;
    this.masterKey = masterKey;
    this.now = options.now ?? Date.now;
    this.decryptedKeysMax = options.decryptedKeysMax ?? keyStoreDefaults.decryptedKeysMax;
    assert(Number.isSafeInteger(this.decryptedKeysMax) && this.decryptedKeysMax > 0, "decryptedKeysMax > 0");
  }

  static open(options: KeyStoreOptions): KeyStore {
    const exists = existsSync(options.path);
    if (!exists && options.create !== true) {
      throw new CodedError("NOT_FOUND", `no key store at ${options.path}`, "path");
    }
    if (!exists) {
      checkNewPassphrase(options.passphrase);
      createPrivateFile(options.path);
    }
    const db = new Database(options.path);
    try {
      // Deleted key rows are overwritten with zeros in the file, not just unlinked from the b-tree.
      db.pragma("secure_delete = ON");
      db.pragma("journal_mode = WAL");
      // A key acknowledged to a caller (and so possibly published on chain) survives a power cut.
      db.pragma("synchronous = FULL");
      db.pragma("foreign_keys = ON");
      db.exec(schema);
      const masterKey = KeyStore.unlock(db, options);
      return new KeyStore(db, masterKey, options);
    } catch (error) {
      db.close();
      throw error;
    }
  }

  /** Derives the master key; initialises the store's parameters on first open. */
  private static unlock(db: Database.Database, options: KeyStoreOptions): Buffer {
    const meta = (name: string) =>
      (db.prepare("SELECT value FROM meta WHERE name = ?").get(name) as { value: string } | undefined)?.value;
    if (meta("format") === undefined) return KeyStore.initialise(db, options);
    if (meta("format") !== keyStoreFormat) {
      throw new CodedError("STORAGE_CORRUPT", `${options.path} is not a ${keyStoreFormat} store`, "path");
    }
    const params = JSON.parse(meta("scrypt") ?? "{}") as ScryptParams;
    checkScryptParams(params);
    const salt = Buffer.from(meta("salt") ?? "", "hex");
    const check = JSON.parse(meta("check") ?? "{}") as { nonce: string; ciphertext: string };
    const key = deriveMasterKey(options.passphrase, salt, params);
    const sealed = {
      nonce: Buffer.from(check.nonce, "hex"),
      ciphertext: Buffer.from(check.ciphertext, "hex"),
    };
    const opened = openAesGcm(key, sealed, checkAad());
    if (opened === null || !opened.equals(checkPlaintext)) {
      key.fill(0);
      throw new CodedError(
        "KEY_LOCKED",
        `cannot open key store ${options.path}: wrong passphrase or damaged store`,
        "passphrase",
      );
    }
    return key;
  }

  private static initialise(db: Database.Database, options: KeyStoreOptions): Buffer {
    checkNewPassphrase(options.passphrase);
    const params = options.scrypt ?? scryptDefaults;
    const salt = randomBytes(saltBytes);
    const key = deriveMasterKey(options.passphrase, salt, params);
    const check = sealAesGcm(key, checkPlaintext, checkAad());
    const insert = db.prepare("INSERT INTO meta (name, value) VALUES (?, ?)");
    db.transaction(() => {
      insert.run("format", keyStoreFormat);
      insert.run("scrypt", JSON.stringify({ N: params.N, r: params.r, p: params.p }));
      insert.run("salt", salt.toString("hex"));
      insert.run(
        "check",
        JSON.stringify({
          nonce: Buffer.from(check.nonce).toString("hex"),
          ciphertext: Buffer.from(check.ciphertext).toString("hex"),
        }),
      );
    })();
    return key;
  }

  close(): void {
    this.decrypted.clear();
    this.masterKey.fill(0);
    this.db.close();
  }

  // -------------------------------------------------------------------------------------------
  // Creating keys

  /** The owner's HPKE public key for the subject, made on first use. */
  async getOrCreateEncryptionKey(owner: string, pseudonym: string): Promise<CreatedKey> {
    checkOwner(owner);
    return this.getOrCreate(owner, pseudonym, "encryption");
  }

  /** The holder's statement-signing public key (SPKI DER), made on first use. Vault only. */
  async getOrCreateSigningKey(pseudonym: string): Promise<CreatedKey> {
    return this.getOrCreate(holderOwner, pseudonym, "signing");
  }

  private async getOrCreate(owner: string, pseudonym: string, kind: KeyKind): Promise<CreatedKey> {
    checkPseudonym(pseudonym);
    this.refuseDestroyed(pseudonym);
    const existing = this.row(owner, pseudonym, kind);
    if (existing !== undefined) return { publicKey: this.verifiedPublicKey(existing), created: false };
    const slot = `${owner}\u0000${pseudonym}\u0000${kind}`;
    const running = this.creating.get(slot);
    // A caller that joins a creation under way did not create the key.
    if (running !== undefined) return { publicKey: (await running).publicKey, created: false };
    const creation = this.create(owner, pseudonym, kind).finally(() => this.creating.delete(slot));
    this.creating.set(slot, creation);
    return creation;
  }

  private async create(owner: string, pseudonym: string, kind: KeyKind): Promise<CreatedKey> {
    const pair =
      kind === "encryption"
        ? await generateEncryptionKeyPair()
        : await generateSigningKeyPair().then((p) => ({
            publicKey: p.publicKeySpki,
            privateKeyPkcs8: p.privateKeyPkcs8,
          }));
    try {
      const sealed = sealAesGcm(
        this.masterKey,
        pair.privateKeyPkcs8,
        keyAad(owner, pseudonym, kind, pair.publicKey),
      );
      return this.insertKey(owner, pseudonym, kind, pair.publicKey, sealed);
    } finally {
      pair.privateKeyPkcs8.fill(0);
    }
  }

  /** One transaction: the tombstone check and the insert cannot be split by a destroy. */
  private insertKey(
    owner: string,
    pseudonym: string,
    kind: KeyKind,
    publicKey: Uint8Array,
    sealed: GcmSealed,
  ): CreatedKey {
    return this.db
      .transaction((): CreatedKey => {
        this.refuseDestroyed(pseudonym);
        const inserted = this.db
          .prepare(
            `INSERT INTO keys (owner, pseudonym, kind, public_key, nonce, sealed, created_ms)
             VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING`,
          )
          .run(owner, pseudonym, kind, publicKey, sealed.nonce, sealed.ciphertext, this.now());
        if (inserted.changes === 1) return { publicKey, created: true };
        // Another process made it first: theirs is the key.
        const winner = this.row(owner, pseudonym, kind);
        assert(winner !== undefined, "a conflicting key row exists");
        return { publicKey: new Uint8Array(winner.public_key), created: false };
      })
      .immediate();
  }

  // -------------------------------------------------------------------------------------------
  // Reading keys

  /** The owner's public key for the subject; null when none was made. */
  publicKey(owner: string, pseudonym: string, kind: KeyKind = "encryption"): Uint8Array | null {
    checkOwner(owner);
    checkPseudonym(pseudonym);
    const row = this.row(owner, pseudonym, kind);
    return row === undefined ? null : this.verifiedPublicKey(row);
  }

  isDestroyed(pseudonym: string): boolean {
    return this.tombstone(pseudonym) !== undefined;
  }

  subject(pseudonym: string): SubjectKeys {
    checkPseudonym(pseudonym);
    const rows = this.db
      .prepare("SELECT * FROM keys WHERE pseudonym = ? ORDER BY owner, kind")
      .all(pseudonym) as KeyRow[];
    const tombstone = this.tombstone(pseudonym);
    return {
      pseudonym,
      status: tombstone !== undefined ? "destroyed" : rows.length > 0 ? "active" : "unknown",
      keys: rows.map((row) => ({
        owner: row.owner,
        kind: row.kind,
        publicKey: this.verifiedPublicKey(row),
        createdMs: row.created_ms,
      })),
      destroyedMs: tombstone?.destroyed_ms ?? null,
    };
  }

  // -------------------------------------------------------------------------------------------
  // Using keys

  /** Unwraps a data key wrapped to this owner's key for the subject. */
  async unwrap(
    owner: string,
    pseudonym: string,
    wrapped: WrappedKey,
    licenseId: string,
    label: string,
  ): Promise<Uint8Array> {
    checkOwner(owner);
    const key = (await this.privateKey(owner, pseudonym, "encryption")) as EncryptionPrivateKey;
    return unwrapDataKey(wrapped, licenseId, label, key);
  }

  /**
   * Unwraps with this owner's key and wraps to another recipient in one step, so the data key never
   * leaves the store's process memory for more than this call (a consent grant).
   */
  async rewrap(
    owner: string,
    pseudonym: string,
    wrapped: WrappedKey,
    licenseId: string,
    fromLabel: string,
    toLabel: string,
    toPublicKey: Uint8Array,
  ): Promise<WrappedKey> {
    const dataKey = await this.unwrap(owner, pseudonym, wrapped, licenseId, fromLabel);
    try {
      return await wrapDataKey(dataKey, licenseId, toLabel, toPublicKey);
    } finally {
      dataKey.fill(0);
    }
  }

  /**
   * Signs an encoded subject statement with the holder's signing key. The statement must name this
   * pseudonym: the key never signs for another subject, whatever the caller checked.
   */
  async signStatement(pseudonym: string, encodedStatement: Uint8Array): Promise<Uint8Array> {
    checkPseudonym(pseudonym);
    const statement = decodeSubjectStatement(encodedStatement);
    if (statement.pseudonym !== pseudonym) {
      throw new CodedError("FORBIDDEN", "the statement names another subject", "statement.pseudonym");
    }
    const key = (await this.privateKey(holderOwner, pseudonym, "signing")) as CryptoKey;
    return signSubjectStatement(key, encodedStatement);
  }

  /**
   * Signs a holder's read proof (parseSubjectReadBytes) with the holder's signing key. Like
   * statements, the bytes must parse as a read proof of this pseudonym: the signing key signs
   * nothing else, whatever the caller checked.
   */
  async signSubjectRead(pseudonym: string, message: Uint8Array): Promise<Uint8Array> {
    checkPseudonym(pseudonym);
    const proof = parseSubjectReadBytes(message);
    if (proof.pseudonym !== pseudonym) {
      throw new CodedError("FORBIDDEN", "the read proof names another subject", "message");
    }
    const key = (await this.privateKey(holderOwner, pseudonym, "signing")) as CryptoKey;
    const raw = await globalThis.crypto.subtle.sign(
      { name: "ECDSA", hash: "SHA-256" },
      key,
      message as Uint8Array<ArrayBuffer>,
    );
    return normalizeP256Signature(new Uint8Array(raw));
  }

  // -------------------------------------------------------------------------------------------
  // Destroying keys

  /**
   * Destroys every key of the subject (all owners) and remembers the subject as destroyed. Returns
   * how many keys were destroyed; destroying again returns 0.
   */
  destroySubject(pseudonym: string): number {
    checkPseudonym(pseudonym);
    const destroyed = this.db
      .transaction((): number => {
        const { changes } = this.db.prepare("DELETE FROM keys WHERE pseudonym = ?").run(pseudonym);
        this.db
          .prepare(
            "INSERT INTO destroyed (pseudonym, destroyed_ms, keys_destroyed) VALUES (?, ?, ?) ON CONFLICT DO NOTHING",
          )
          .run(pseudonym, this.now(), changes);
        return changes;
      })
      .immediate();
    for (const slot of [...this.decrypted.keys()]) {
      if (slot.includes(`\u0000${pseudonym}\u0000`)) this.decrypted.delete(slot);
    }
    // The WAL still holds the pages as they were before the delete: copy the zeroed pages into the
    // database and cut the WAL to nothing, so no copy of the sealed keys stays in our files.
    this.db.pragma("wal_checkpoint(TRUNCATE)");
    return destroyed;
  }

  // -------------------------------------------------------------------------------------------
  // Internals

  private row(owner: string, pseudonym: string, kind: KeyKind): KeyRow | undefined {
    return this.db
      .prepare("SELECT * FROM keys WHERE owner = ? AND pseudonym = ? AND kind = ?")
      .get(owner, pseudonym, kind) as KeyRow | undefined;
  }

  private tombstone(pseudonym: string): { destroyed_ms: number } | undefined {
    return this.db.prepare("SELECT destroyed_ms FROM destroyed WHERE pseudonym = ?").get(pseudonym) as
      | { destroyed_ms: number }
      | undefined;
  }

  private refuseDestroyed(pseudonym: string): void {
    if (this.isDestroyed(pseudonym)) {
      throw new CodedError(
        "VAULT_KEY_DESTROYED",
        "this subject's keys were destroyed (forgotten); no key is made for it again",
        "pseudonym",
      );
    }
  }

  /** Opens the row's sealed key; the AAD check also proves the stored public key is its pair's. */
  private openRow(row: KeyRow): Buffer {
    const opened = openAesGcm(
      this.masterKey,
      { nonce: row.nonce, ciphertext: row.sealed },
      keyAad(row.owner, row.pseudonym, row.kind, row.public_key),
    );
    if (opened === null) {
      throw new CodedError(
        "STORAGE_CORRUPT",
        `key ${row.owner}/${row.pseudonym}/${row.kind} does not open: the store was altered`,
      );
    }
    return opened;
  }

  private verifiedPublicKey(row: KeyRow): Uint8Array {
    this.openRow(row).fill(0);
    return new Uint8Array(row.public_key);
  }

  private async privateKey(owner: string, pseudonym: string, kind: KeyKind): Promise<DecryptedKey> {
    checkPseudonym(pseudonym);
    const slot = `${owner}\u0000${pseudonym}\u0000${kind}`;
    const cached = this.decrypted.get(slot);
    if (cached !== undefined) {
      this.decrypted.delete(slot);
      this.decrypted.set(slot, cached);
      return cached;
    }
    const row = this.row(owner, pseudonym, kind);
    if (row === undefined) {
      this.refuseDestroyed(pseudonym);
      throw new CodedError(
        "VAULT_SUBJECT_UNKNOWN",
        `no ${kind} key of ${owner} for this subject`,
        "pseudonym",
      );
    }
    const pkcs8 = this.openRow(row);
    let key: DecryptedKey;
    try {
      key =
        kind === "encryption"
          ? await importEncryptionPrivateKey(pkcs8)
          : await importSigningPrivateKey(pkcs8);
    } finally {
      pkcs8.fill(0);
    }
    if (kind === "encryption") {
      assert(
        bytesEqual((key as EncryptionPrivateKey).publicKey, row.public_key),
        "a stored key matches its public key",
      );
    }
    // A destroy may have run while the key was being imported: never cache a destroyed key.
    if (this.row(owner, pseudonym, kind) === undefined) this.refuseDestroyed(pseudonym);
    this.remember(slot, key);
    return key;
  }

  private remember(slot: string, key: DecryptedKey): void {
    if (this.decrypted.size >= this.decryptedKeysMax) {
      const oldest = this.decrypted.keys().next();
      if (oldest.done !== true) this.decrypted.delete(oldest.value);
    }
    this.decrypted.set(slot, key);
  }

  /** Decrypted keys in memory (for tests and metrics). */
  get decryptedKeys(): number {
    return this.decrypted.size;
  }
}
