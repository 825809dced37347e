/**
 * License crypto (src/sdk/sealing.ts): round trips, refusals of wrong keys and tampered or moved
 * blobs, fixed vectors for the pseudonym and the content hash, and statements that node:crypto
 * verifies in their one low-S form.
 */
import assert from "node:assert/strict";
import { createHmac, createPublicKey, verify } from "node:crypto";
import { describe, test } from "node:test";
import type { SealedContent, WrappedKey } from "../../src/core/license/records.ts";
import { encodeSubjectStatement, subjectStatementSigningBytes } from "../../src/core/license/statement.ts";
import { isCanonicalP256Signature } from "../../src/core/signature.ts";
import {
  contentHash,
  encryptionPublicKeyOf,
  generateEncryptionKeyPair,
  generateSigningKeyPair,
  importEncryptionPrivateKey,
  openPersonal,
  type PersonalContent,
  pseudonymOf,
  rewrap,
  sealPersonal,
  signSubjectStatement,
  unwrapDataKey,
  wrapDataKey,
} from "../../src/sdk/sealing.ts";

const licenseId = "1.2.156.3005.2.11100000000013338W001.11100000000013338W.20250000001.001.X";
const personal = {
  holderName: "Zhang San",
  holderCode: "110101199003077777",
  fields: { birthDate: "1990-03-07", address: "1 Chang'an Avenue" },
};

function flip(bytes: Uint8Array, index: number): Uint8Array {
  const copy = bytes.slice();
  copy[index] = copy[index]! ^ 0x01;
  return copy;
}

async function rejectsUnavailable(promise: Promise<unknown>, field?: string): Promise<void> {
  await assert.rejects(promise, (error: { code?: string; field?: string }) => {
    assert.equal(error.code, "DECRYPT_UNAVAILABLE");
    if (field !== undefined) assert.equal(error.field, field);
    return true;
  });
}

async function fixture() {
  const holder = await generateEncryptionKeyPair();
  const tax = await generateEncryptionKeyPair();
  const result = await sealPersonal(licenseId, personal, [
    { label: "holder", publicKey: holder.publicKey },
    { label: "tax", publicKey: tax.publicKey },
  ]);
  return {
    holder,
    tax,
    holderKey: await importEncryptionPrivateKey(holder.privateKeyPkcs8),
    taxKey: await importEncryptionPrivateKey(tax.privateKeyPkcs8),
    ...result,
  };
}

describe("keys", () => {
  test("an encryption key pair is a 65-byte point and PKCS#8 that imports back to the same point", async () => {
    const pair = await generateEncryptionKeyPair();
    assert.equal(pair.publicKey.length, 65);
    assert.equal(pair.publicKey[0], 0x04);
    assert.deepEqual(await encryptionPublicKeyOf(pair.privateKeyPkcs8), pair.publicKey);
  });

  test("a PKCS#8 that is not a P-256 key is refused", async () => {
    await assert.rejects(importEncryptionPrivateKey(new Uint8Array([48, 3, 2, 1, 0])), {
      code: "PAYLOAD_INVALID",
    });
  });
});

describe("seal, wrap, open", () => {
  test("every recipient opens the content; the salt is 32 random bytes", async () => {
    const f = await fixture();
    for (const [label, key] of [
      ["holder", f.holderKey],
      ["tax", f.taxKey],
    ] as const) {
      const dataKey = await unwrapDataKey(f.wrapped[label]!, licenseId, label, key);
      assert.equal(dataKey.length, 32);
      assert.deepEqual(await openPersonal(licenseId, f.sealed, dataKey), f.personalWithSalt);
    }
    assert.match(f.personalWithSalt.salt, /^[0-9a-f]{64}$/);
    assert.equal(f.sealed.nonce.length, 12);
    assert.equal(f.wrapped.holder!.enc.length, 65);
    assert.equal(f.wrapped.holder!.ciphertext.length, 48);
    const again = await sealPersonal(licenseId, personal, [
      { label: "holder", publicKey: f.holder.publicKey },
    ]);
    assert.notEqual(again.personalWithSalt.salt, f.personalWithSalt.salt);
  });

  test("the wrong recipient key is refused by its hash before any decryption", async () => {
    const f = await fixture();
    await rejectsUnavailable(
      unwrapDataKey(f.wrapped.holder!, licenseId, "holder", f.taxKey),
      "recipientKeyHash",
    );
  });

  test("a wrapped key whose hash was forged to match another key still does not open", async () => {
    const f = await fixture();
    const forged: WrappedKey = { ...f.wrapped.holder!, recipientKeyHash: f.wrapped.tax!.recipientKeyHash };
    await rejectsUnavailable(unwrapDataKey(forged, licenseId, "tax", f.taxKey));
  });

  test("tampered enc, wrapped ciphertext, content ciphertext or nonce fail", async () => {
    const f = await fixture();
    const w = f.wrapped.holder!;
    await rejectsUnavailable(unwrapDataKey({ ...w, enc: flip(w.enc, 40) }, licenseId, "holder", f.holderKey));
    await rejectsUnavailable(
      unwrapDataKey({ ...w, ciphertext: flip(w.ciphertext, 3) }, licenseId, "holder", f.holderKey),
    );
    const dataKey = await unwrapDataKey(w, licenseId, "holder", f.holderKey);
    const tampered: SealedContent[] = [
      { ...f.sealed, ciphertext: flip(f.sealed.ciphertext, 0) },
      { ...f.sealed, ciphertext: flip(f.sealed.ciphertext, f.sealed.ciphertext.length - 1) },
      { ...f.sealed, nonce: flip(f.sealed.nonce, 11) },
      { ...f.sealed, ciphertext: f.sealed.ciphertext.slice(0, -1) },
    ];
    for (const sealed of tampered) await rejectsUnavailable(openPersonal(licenseId, sealed, dataKey));
  });

  test("AAD binding: a sealed blob or wrapped key moved to another license or recipient label fails", async () => {
    const f = await fixture();
    const otherId = licenseId.replace(".001.X", ".002.X");
    await rejectsUnavailable(unwrapDataKey(f.wrapped.holder!, otherId, "holder", f.holderKey));
    // Same key pair under another label: the hash matches, the AAD does not.
    await rejectsUnavailable(unwrapDataKey(f.wrapped.holder!, licenseId, "tax", f.holderKey));
    const dataKey = await unwrapDataKey(f.wrapped.holder!, licenseId, "holder", f.holderKey);
    await rejectsUnavailable(openPersonal(otherId, f.sealed, dataKey));
  });

  test("rewrap hands the data key from the holder to a department's subject key", async () => {
    const f = await fixture();
    const land = await generateEncryptionKeyPair();
    const landKey = await importEncryptionPrivateKey(land.privateKeyPkcs8);
    const wrapped = await rewrap(f.wrapped.holder!, "holder", f.holderKey, "land", land.publicKey, licenseId);
    const dataKey = await unwrapDataKey(wrapped, licenseId, "land", landKey);
    assert.deepEqual(await openPersonal(licenseId, f.sealed, dataKey), f.personalWithSalt);
    await rejectsUnavailable(unwrapDataKey(wrapped, licenseId, "tax", landKey));
    // Rewrapping from the wrong label fails before anything is wrapped.
    await rejectsUnavailable(
      rewrap(f.wrapped.holder!, "tax", f.holderKey, "land", land.publicKey, licenseId),
    );
  });

  test("wrapDataKey refuses a public key that is not a P-256 point", async () => {
    const bad = new Uint8Array(65);
    bad[0] = 4;
    await assert.rejects(wrapDataKey(new Uint8Array(32), licenseId, "holder", bad), {
      code: "PAYLOAD_INVALID",
    });
  });

  test("duplicate recipient labels and labels with NUL are refused", async () => {
    const { publicKey } = await generateEncryptionKeyPair();
    await assert.rejects(
      sealPersonal(licenseId, personal, [
        { label: "tax", publicKey },
        { label: "tax", publicKey },
      ]),
      { code: "PAYLOAD_INVALID" },
    );
    await assert.rejects(sealPersonal(licenseId, personal, [{ label: "a\u0000b", publicKey }]), {
      code: "PAYLOAD_INVALID",
    });
  });
});

describe("fixed vectors", () => {
  const pseudonymKey = Uint8Array.from({ length: 32 }, (_, i) => i);

  test("pseudonym: HMAC-SHA256 over tag, code type and code, lower-case hex", async () => {
    const expected = "9957ca8e9e8eeabb8faf568709b48d0eb1367b1fba16bf3eeeba8f0d89eae34d";
    assert.equal(await pseudonymOf(pseudonymKey, "111", "110101199003077777"), expected);
    const independent = createHmac("sha256", pseudonymKey)
      .update("citychain/subject/v1\u0000111\u0000110101199003077777")
      .digest("hex");
    assert.equal(independent, expected);
    // The separator keeps ("11", "1...") and ("111", "...") apart.
    assert.notEqual(await pseudonymOf(pseudonymKey, "11", "1110101199003077777"), expected);
    await assert.rejects(pseudonymOf(pseudonymKey, "111", "a\u0000b"), { code: "PAYLOAD_INVALID" });
    await assert.rejects(pseudonymOf(new Uint8Array(16), "111", "x"), { code: "PAYLOAD_INVALID" });
  });

  test("content hash over canonical JSON of { personal, public }", async () => {
    const salted: PersonalContent = {
      salt: "ab".repeat(32),
      holderName: "张三",
      holderCode: "110101199003077777",
      fields: { birthDate: "1990-03-07", address: "1 Road" },
    };
    const expected = "0762262b1c53c41b06a3b99a402e387df1801d6b1d2f6959ec6f5d3df0cfa63e";
    const publicContent = { number: "A-001", area: "110101" };
    assert.equal(Buffer.from(await contentHash(salted, publicContent)).toString("hex"), expected);
    // The stored form (JSON text, any member order) hashes the same.
    assert.equal(
      Buffer.from(await contentHash(salted, '{"number":"A-001","area":"110101"}')).toString("hex"),
      expected,
    );
    const otherSalt = { ...salted, salt: "cd".repeat(32) };
    assert.notEqual(Buffer.from(await contentHash(otherSalt, publicContent)).toString("hex"), expected);
  });
});

describe("subject statements", () => {
  test("signed here, verified by node:crypto, always low S", async () => {
    const pair = await generateSigningKeyPair();
    const publicKey = createPublicKey({ key: Buffer.from(pair.publicKeySpki), format: "der", type: "spki" });
    for (let seq = 0; seq < 16; seq++) {
      const encoded = encodeSubjectStatement({
        chainId: "citychain-dev",
        pseudonym: "ab".repeat(32),
        seq,
        action: "consent.grant",
        licenseKey: "k",
        dept: "tax",
        wrappedKeyHash: new Uint8Array(32),
        untilMs: null,
      });
      const signature = await signSubjectStatement(pair.privateKeyPkcs8, encoded);
      assert.ok(isCanonicalP256Signature(signature));
      const message = subjectStatementSigningBytes(encoded);
      assert.ok(verify("sha256", message, { key: publicKey, dsaEncoding: "ieee-p1363" }, signature));
      assert.ok(!verify("sha256", encoded, { key: publicKey, dsaEncoding: "ieee-p1363" }, signature));
    }
  });
});

describe("browser", () => {
  for (const file of ["sealing.ts", "vault-client.ts"]) {
    test(`${file} bundles for the browser without Node builtins`, async () => {
      const { build } = await import("esbuild");
      const result = await build({
        entryPoints: [new URL(`../../src/sdk/${file}`, import.meta.url).pathname],
        bundle: true,
        platform: "browser",
        format: "esm",
        write: false,
        logLevel: "silent",
        target: "es2022",
      });
      assert.equal(result.errors.length, 0);
      assert.doesNotMatch(result.outputFiles[0]!.text, /require\(["']node:|from ["']node:/);
    });
  }
});
