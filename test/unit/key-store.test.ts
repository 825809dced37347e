/**
 * The key store (src/license/key-store.ts) and secret files (src/license/secret-file.ts): keys survive
 * a reopen, a wrong passphrase is named, no private key is ever in the files in plaintext, destroyed
 * subjects stay destroyed, and concurrent creation makes one key.
 */
import assert from "node:assert/strict";
import { createPrivateKey, createPublicKey, scryptSync, verify } from "node:crypto";
import { existsSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import Database from "better-sqlite3";
import { encodeSubjectStatement, subjectStatementSigningBytes } from "../../src/core/license/statement.ts";
import { holderOwner, KeyStore } from "../../src/license/key-store.ts";
import { openAesGcm, readSecretFile, writeSecretFile } from "../../src/license/secret-file.ts";
import { openPersonal, sealPersonal } from "../../src/sdk/sealing.ts";

const passphrase = "correct horse battery staple";
const fastScrypt = { N: 2 ** 10, r: 8, p: 1 };
const licenseId = "1.2.156.3005.2.11100000000013338W001.11100000000013338W.20250000001.001.X";
const alice = "a1".repeat(32);
const bob = "b2".repeat(32);

let dir: string;
before(() => {
  dir = mkdtempSync(join(tmpdir(), "citychain-key-store-"));
});
after(() => rmSync(dir, { recursive: true, force: true }));

let counter = 0;
function openNew(options: { decryptedKeysMax?: number } = {}): { store: KeyStore; path: string } {
  const path = join(dir, `keys-${counter++}.db`);
  return { store: KeyStore.open({ path, passphrase, create: true, scrypt: fastScrypt, ...options }), path };
}

/** The database and its WAL, as one byte string: what an attacker copying the folder gets. */
function fileBytes(path: string): Buffer {
  const parts = [readFileSync(path)];
  if (existsSync(`${path}-wal`)) parts.push(readFileSync(`${path}-wal`));
  return Buffer.concat(parts);
}

/**
 * Reads every private key out of a store by the documented format alone (docs/licenses.md, "Key
 * vault"), independently of KeyStore: scrypt master key, AES-256-GCM, AAD over owner, pseudonym, kind
 * and public key.
 */
function decryptAllIndependently(path: string): { pkcs8: Buffer; sealed: Buffer }[] {
  const db = new Database(path, { readonly: true });
  try {
    const meta = Object.fromEntries(
      (db.prepare("SELECT name, value FROM meta").all() as { name: string; value: string }[]).map((r) => [
        r.name,
        r.value,
      ]),
    );
    const params = JSON.parse(meta.scrypt!) as { N: number; r: number; p: number };
    const key = scryptSync(passphrase, Buffer.from(meta.salt!, "hex"), 32, { ...params, maxmem: 64 << 20 });
    const rows = db.prepare("SELECT * FROM keys").all() as {
      owner: string;
      pseudonym: string;
      kind: string;
      public_key: Buffer;
      nonce: Buffer;
      sealed: Buffer;
    }[];
    return rows.map((row) => {
      const aad = Buffer.concat([
        Buffer.from("citychain/key-store/v1\u0000"),
        Buffer.from(`${row.owner}\u0000${row.pseudonym}\u0000${row.kind}\u0000`),
        row.public_key,
      ]);
      const pkcs8 = openAesGcm(key, { nonce: row.nonce, ciphertext: row.sealed }, aad);
      assert.ok(pkcs8 !== null, "the documented format opens the row");
      return { pkcs8, sealed: row.sealed };
    });
  } finally {
    db.close();
  }
}

function privateScalar(pkcs8: Buffer): Buffer {
  const jwk = createPrivateKey({ key: pkcs8, format: "der", type: "pkcs8" }).export({ format: "jwk" });
  return Buffer.from(jwk.d!, "base64url");
}

function forgetStatement(pseudonym: string): Uint8Array {
  return encodeSubjectStatement({
    chainId: "citychain-dev",
    pseudonym,
    seq: 3,
    action: "forget",
    licenseKey: "",
    dept: "",
    wrappedKeyHash: new Uint8Array(0),
    untilMs: null,
  });
}

describe("key store", () => {
  test("keys round-trip across a reopen: same public key, the wrapped data key still opens", async () => {
    const { store, path } = openNew();
    const first = await store.getOrCreateEncryptionKey(holderOwner, alice);
    assert.equal(first.created, true);
    assert.equal(first.publicKey.length, 65);
    const signing = await store.getOrCreateSigningKey(alice);
    assert.equal(signing.created, true);
    const sealed = await sealPersonal(licenseId, { holderName: "A", holderCode: "1", fields: {} }, [
      { label: "holder", publicKey: first.publicKey },
    ]);
    store.close();

    const reopened = KeyStore.open({ path, passphrase });
    const again = await reopened.getOrCreateEncryptionKey(holderOwner, alice);
    assert.equal(again.created, false);
    assert.deepEqual(again.publicKey, first.publicKey);
    assert.deepEqual(reopened.publicKey(holderOwner, alice, "signing"), signing.publicKey);
    const dataKey = await reopened.unwrap(holderOwner, alice, sealed.wrapped.holder!, licenseId, "holder");
    assert.deepEqual(await openPersonal(licenseId, sealed.sealed, dataKey), sealed.personalWithSalt);
    const subject = reopened.subject(alice);
    assert.equal(subject.status, "active");
    assert.deepEqual(
      subject.keys.map((k) => k.kind),
      ["encryption", "signing"],
    );
    reopened.close();
  });

  test("a wrong passphrase is refused with KEY_LOCKED; a missing store is NOT_FOUND", async () => {
    const { store, path } = openNew();
    store.close();
    assert.throws(() => KeyStore.open({ path, passphrase: "not the passphrase at all" }), {
      code: "KEY_LOCKED",
      message: /wrong passphrase/,
    });
    assert.throws(() => KeyStore.open({ path: join(dir, "missing.db"), passphrase }), { code: "NOT_FOUND" });
    assert.throws(
      () =>
        KeyStore.open({ path: join(dir, "short.db"), passphrase: "short", create: true, scrypt: fastScrypt }),
      { code: "KEY_LOCKED" },
    );
  });

  test("the store file is owner-only", () => {
    const { store, path } = openNew();
    store.close();
    assert.equal(statSync(path).mode & 0o777, 0o600);
  });

  test("the files never hold a private key in plaintext (PKCS#8 or scalar)", async () => {
    const { store, path } = openNew();
    for (const pseudonym of [alice, bob]) {
      await store.getOrCreateEncryptionKey(holderOwner, pseudonym);
      await store.getOrCreateSigningKey(pseudonym);
      await store.getOrCreateEncryptionKey("tax", pseudonym);
    }
    const keys = decryptAllIndependently(path);
    assert.equal(keys.length, 6);
    const bytes = fileBytes(path);
    for (const { pkcs8, sealed } of keys) {
      assert.equal(bytes.indexOf(pkcs8), -1, "PKCS#8 in the file");
      assert.equal(bytes.indexOf(privateScalar(pkcs8)), -1, "private scalar in the file");
      assert.notEqual(bytes.indexOf(sealed), -1, "the sealed form is what is stored");
    }
    store.close();
  });

  test("destroy removes a subject's keys from the files; they cannot be recreated or used", async () => {
    const { store, path } = openNew();
    const holderKey = await store.getOrCreateEncryptionKey(holderOwner, alice);
    await store.getOrCreateSigningKey(alice);
    await store.getOrCreateEncryptionKey("tax", alice);
    await store.getOrCreateEncryptionKey(holderOwner, bob);
    const sealed = await sealPersonal(licenseId, { holderName: "A", holderCode: "1", fields: {} }, [
      { label: "holder", publicKey: holderKey.publicKey },
    ]);
    // Load the keys into the cache, so destroy must clear it too.
    await store.unwrap(holderOwner, alice, sealed.wrapped.holder!, licenseId, "holder");
    await store.signStatement(alice, forgetStatement(alice));
    const before = decryptAllIndependently(path);

    assert.equal(store.destroySubject(alice), 3);
    assert.equal(store.destroySubject(alice), 0);
    assert.equal(store.decryptedKeys, 0);
    assert.equal(store.subject(alice).status, "destroyed");
    assert.equal(store.publicKey(holderOwner, alice), null);
    await assert.rejects(store.getOrCreateEncryptionKey(holderOwner, alice), { code: "VAULT_KEY_DESTROYED" });
    await assert.rejects(store.getOrCreateEncryptionKey("tax", alice), { code: "VAULT_KEY_DESTROYED" });
    await assert.rejects(store.getOrCreateSigningKey(alice), { code: "VAULT_KEY_DESTROYED" });
    await assert.rejects(store.unwrap(holderOwner, alice, sealed.wrapped.holder!, licenseId, "holder"), {
      code: "VAULT_KEY_DESTROYED",
    });
    await assert.rejects(store.signStatement(alice, forgetStatement(alice)), { code: "VAULT_KEY_DESTROYED" });

    const bytes = fileBytes(path);
    const remaining = decryptAllIndependently(path);
    assert.equal(remaining.length, 1, "bob's key stays");
    for (const { pkcs8, sealed: sealedKey } of before) {
      const kept = remaining.some((r) => r.sealed.equals(sealedKey));
      assert.equal(bytes.indexOf(sealedKey) !== -1, kept, "destroyed sealed keys are gone from the files");
      assert.equal(bytes.indexOf(pkcs8), -1);
    }
    store.close();

    const reopened = KeyStore.open({ path, passphrase });
    await assert.rejects(reopened.getOrCreateEncryptionKey(holderOwner, alice), {
      code: "VAULT_KEY_DESTROYED",
    });
    assert.equal((await reopened.getOrCreateEncryptionKey(holderOwner, bob)).created, false);
    reopened.close();
  });

  test("a subject never seen can be destroyed too, and is then never created", async () => {
    const { store } = openNew();
    assert.equal(store.destroySubject(bob), 0);
    await assert.rejects(store.getOrCreateEncryptionKey("land", bob), { code: "VAULT_KEY_DESTROYED" });
    await assert.rejects(store.unwrap("land", alice, {} as never, licenseId, "land"), {
      code: "VAULT_SUBJECT_UNKNOWN",
    });
    store.close();
  });

  test("concurrent getOrCreate for one subject makes one key, and one caller is told it created it", async () => {
    const { store } = openNew();
    const results = await Promise.all(
      Array.from({ length: 8 }, () => store.getOrCreateEncryptionKey("tax", alice)),
    );
    const keys = new Set(results.map((r) => Buffer.from(r.publicKey).toString("hex")));
    assert.equal(keys.size, 1);
    assert.equal(results.filter((r) => r.created).length, 1);
    const signing = await Promise.all([
      store.getOrCreateSigningKey(alice),
      store.getOrCreateSigningKey(alice),
    ]);
    assert.deepEqual(signing[0].publicKey, signing[1].publicKey);
    store.close();
  });

  test("two stores on one file (two processes) agree on the key", async () => {
    const { store, path } = openNew();
    const other = KeyStore.open({ path, passphrase });
    const [a, b] = await Promise.all([
      store.getOrCreateEncryptionKey("tax", bob),
      other.getOrCreateEncryptionKey("tax", bob),
    ]);
    assert.deepEqual(a.publicKey, b.publicKey);
    assert.equal(Number(a.created) + Number(b.created), 1);
    other.close();
    store.close();
  });

  test("statements are signed only for their own subject, and verify with the subject's key", async () => {
    const { store } = openNew();
    const { publicKey } = await store.getOrCreateSigningKey(alice);
    const statement = forgetStatement(alice);
    const signature = await store.signStatement(alice, statement);
    const key = createPublicKey({ key: Buffer.from(publicKey), format: "der", type: "spki" });
    assert.ok(
      verify(
        "sha256",
        subjectStatementSigningBytes(statement),
        { key, dsaEncoding: "ieee-p1363" },
        signature,
      ),
    );
    await assert.rejects(store.signStatement(alice, forgetStatement(bob)), { code: "FORBIDDEN" });
    await assert.rejects(store.signStatement(alice, new Uint8Array([1, 2, 3])), { code: "PAYLOAD_INVALID" });
    store.close();
  });

  test("the decrypted-key cache is bounded", async () => {
    const { store } = openNew({ decryptedKeysMax: 2 });
    for (const pseudonym of [alice, bob, "c3".repeat(32)]) {
      await store.getOrCreateSigningKey(pseudonym);
      await store.signStatement(pseudonym, forgetStatement(pseudonym));
    }
    assert.equal(store.decryptedKeys, 2);
    store.close();
  });

  test("a row paired with another public key is detected", async () => {
    const { store, path } = openNew();
    await store.getOrCreateEncryptionKey("tax", alice);
    const other = await store.getOrCreateEncryptionKey("tax", bob);
    store.close();
    const db = new Database(path);
    db.prepare("UPDATE keys SET public_key = ? WHERE pseudonym = ?").run(Buffer.from(other.publicKey), alice);
    db.close();
    const reopened = KeyStore.open({ path, passphrase });
    assert.throws(() => reopened.publicKey("tax", alice), { code: "STORAGE_CORRUPT" });
    reopened.close();
  });

  test("owners and pseudonyms are validated", async () => {
    const { store } = openNew();
    await assert.rejects(store.getOrCreateEncryptionKey("Tax!", alice), { code: "BAD_REQUEST" });
    await assert.rejects(store.getOrCreateEncryptionKey("tax", "ABC"), { code: "BAD_REQUEST" });
    store.close();
  });
});

describe("secret file", () => {
  const secret = Uint8Array.from({ length: 32 }, (_, i) => 255 - i);

  test("round trip, mode 0600, no plaintext, no overwrite", () => {
    const path = join(dir, "pseudonym-key.json");
    writeSecretFile(path, secret, passphrase, { purpose: "pseudonym-key", scrypt: fastScrypt });
    assert.equal(statSync(path).mode & 0o777, 0o600);
    assert.deepEqual(readSecretFile(path, passphrase, "pseudonym-key"), secret);
    const text = readFileSync(path, "utf8");
    assert.equal(text.indexOf(Buffer.from(secret).toString("hex")), -1);
    assert.equal(JSON.parse(text).format, "citychain-secret");
    assert.throws(
      () => writeSecretFile(path, secret, passphrase, { purpose: "pseudonym-key", scrypt: fastScrypt }),
      {
        code: "CONFLICT",
      },
    );
  });

  test("wrong passphrase, wrong purpose, damage and absurd parameters are refused clearly", () => {
    const path = join(dir, "secret-2.json");
    writeSecretFile(path, secret, passphrase, { purpose: "pseudonym-key", scrypt: fastScrypt });
    assert.throws(() => readSecretFile(path, "another passphrase", "pseudonym-key"), {
      code: "KEY_LOCKED",
      message: /wrong passphrase/,
    });
    assert.throws(() => readSecretFile(path, passphrase, "something-else"), { code: "STORAGE_CORRUPT" });
    const envelope = JSON.parse(readFileSync(path, "utf8"));
    writeFileSync(path, JSON.stringify({ ...envelope, purpose: "something-else" }));
    assert.throws(() => readSecretFile(path, passphrase, "something-else"), { code: "KEY_LOCKED" });
    writeFileSync(path, JSON.stringify({ ...envelope, kdf: { ...envelope.kdf, N: 2 ** 30 } }));
    assert.throws(() => readSecretFile(path, passphrase, "pseudonym-key"), { code: "STORAGE_CORRUPT" });
    writeFileSync(path, "not json");
    assert.throws(() => readSecretFile(path, passphrase, "pseudonym-key"), { code: "STORAGE_CORRUPT" });
    assert.throws(() => readSecretFile(join(dir, "none.json"), passphrase, "pseudonym-key"), {
      code: "NOT_FOUND",
    });
  });
});
