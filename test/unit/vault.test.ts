/**
 * The key vault (src/vault/service.ts) through its SDK client (src/sdk/vault-client.ts) over
 * fastify's inject(): who may call, the create / sign / rewrap / open / forget flow, what forgetting
 * leaves behind (nothing usable), and the audit log.
 */
import assert from "node:assert/strict";
import { createPublicKey, type KeyObject, verify } from "node:crypto";
import { existsSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import Database from "better-sqlite3";
import type { FastifyInstance } from "fastify";
import {
  type CaRegistry,
  type CertificateAuthority,
  createCsr,
  createRootCa,
  generateP256KeyPair,
  openRegistry,
  parseIdentityCert,
  type Role,
} from "../../src/ca/index.ts";
import { utf8 } from "../../src/core/encoding.ts";
import { signRequest } from "../../src/core/httpsig.ts";
import {
  encodeSubjectStatement,
  type SubjectAction,
  subjectReadSigningBytes,
  subjectReadTag,
  subjectStatementSigningBytes,
} from "../../src/core/license/statement.ts";
import { isCanonicalP256Signature } from "../../src/core/signature.ts";
import type { FetchLike } from "../../src/sdk/client.ts";
import { CitychainError } from "../../src/sdk/errors.ts";
import {
  generateEncryptionKeyPair,
  importEncryptionPrivateKey,
  openPersonal,
  pseudonymOf,
  sealPersonal,
  unwrapDataKey,
} from "../../src/sdk/sealing.ts";
import { WebCryptoSigner } from "../../src/sdk/signer.ts";
import { VaultClient } from "../../src/sdk/vault-client.ts";
import {
  buildVaultService,
  initVault,
  type OpenedVault,
  openVault,
  vaultFiles,
} from "../../src/vault/index.ts";

const passphrase = "correct horse battery staple";
const fastScrypt = { N: 2 ** 10, r: 8, p: 1 };
const chainId = "citychain-test";
const licenseId = "1.2.156.3005.2.11100000000013338W001.11100000000013338W.20250000001.001.X";
const holder = { codeType: "111", code: "110101199003077777" };
const personal = { holderName: "Zhang San", holderCode: holder.code, fields: { birthDate: "1990-03-07" } };

interface Member {
  readonly enrollmentId: string;
  readonly certId: string;
  readonly certDer: Uint8Array;
  readonly signer: WebCryptoSigner;
}

async function enroll(registry: CaRegistry, enrollmentId: string, roles: Role[]): Promise<Member> {
  const dept = enrollmentId.split(".")[0]!;
  const { secret } = await registry.registerIdentity({ enrollmentId, dept, roles, kind: "user" });
  const { privateKey } = generateP256KeyPair();
  const certPem = await registry.enroll(enrollmentId, secret, await createCsr(privateKey, enrollmentId));
  return member(privateKey, certPem);
}

async function member(privateKey: KeyObject, certPem: string): Promise<Member> {
  const identity = parseIdentityCert(certPem);
  const pkcs8 = new Uint8Array(privateKey.export({ format: "der", type: "pkcs8" }));
  const spki = new Uint8Array(createPublicKey(privateKey).export({ format: "der", type: "spki" }));
  return {
    enrollmentId: identity.enrollmentId,
    certId: identity.certId,
    certDer: identity.der,
    signer: await WebCryptoSigner.fromPkcs8(pkcs8, spki),
  };
}

/** A fetch that goes through inject(): the real client code, no socket. */
function injectFetch(app: FastifyInstance): FetchLike {
  return async (url, init) => {
    const response = await app.inject({
      method: init.method as "GET" | "POST",
      url: url.replace(/^http:\/\/vault/, ""),
      headers: init.headers,
      ...(init.body === undefined ? {} : { payload: Buffer.from(init.body) }),
    });
    return { status: response.statusCode, text: async () => response.body };
  };
}

function clientAs(as: Member): VaultClient {
  return new VaultClient({
    url: "http://vault",
    identity: { signer: as.signer, certId: as.certId, certDer: as.certDer },
    fetch: injectFetch(app),
  });
}

async function rejectsWith(promise: Promise<unknown>, status: number, code: string): Promise<void> {
  await assert.rejects(promise, (error: unknown) => {
    assert.ok(error instanceof CitychainError, String(error));
    assert.equal(error.code, code, error.message);
    assert.equal(error.status, status);
    return true;
  });
}

function statement(
  pseudonym: string,
  action: SubjectAction,
  overrides: { chainId?: string; seq?: number } = {},
) {
  return encodeSubjectStatement({
    chainId: overrides.chainId ?? chainId,
    pseudonym,
    seq: overrides.seq ?? 0,
    action,
    licenseKey: action === "forget" ? "" : "11100000000013338W001.11100000000013338W.20250000001",
    dept: action === "forget" ? "" : "land",
    wrappedKeyHash: new Uint8Array(action === "consent.grant" ? 32 : 0),
    untilMs: null,
  });
}

function verifies(spki: Uint8Array, encoded: Uint8Array, signature: Uint8Array): boolean {
  const key = createPublicKey({ key: Buffer.from(spki), format: "der", type: "spki" });
  return verify(
    "sha256",
    subjectStatementSigningBytes(encoded),
    { key, dsaEncoding: "ieee-p1363" },
    signature,
  );
}

function vaultFileBytes(name: string): Buffer {
  const path = join(dir, "vault", name);
  const parts = [readFileSync(path)];
  if (existsSync(`${path}-wal`)) parts.push(readFileSync(`${path}-wal`));
  return Buffer.concat(parts);
}

let dir: string;
let ca: CertificateAuthority;
let registry: CaRegistry;
let foreignRegistry: CaRegistry;
let vault: OpenedVault;
let app: FastifyInstance;
let officer: Member;
let auditor: Member;
let taxOfficer: Member;
let foreignOfficer: Member;
let revokedOfficer: Member;

before(async () => {
  dir = mkdtempSync(join(tmpdir(), "citychain-vault-"));
  ca = await createRootCa({ dir: join(dir, "ca"), validityDays: 3650, passphrase });
  registry = openRegistry({ ca });
  registry.registerDepartment("infocenter", "Municipal Information Center");
  registry.registerDepartment("tax", "Taxation Bureau");
  officer = await enroll(registry, "infocenter.officer", ["officer"]);
  auditor = await enroll(registry, "infocenter.auditor", ["auditor"]);
  taxOfficer = await enroll(registry, "tax.officer", ["officer", "admin"]);
  revokedOfficer = await enroll(registry, "infocenter.gone", ["officer"]);
  registry.revokeIdentity("infocenter.gone", "affiliationChanged");
  const foreignCa = await createRootCa({ dir: join(dir, "foreign"), validityDays: 3650, passphrase });
  foreignRegistry = openRegistry({ ca: foreignCa });
  foreignRegistry.registerDepartment("infocenter", "Impostor");
  foreignOfficer = await enroll(foreignRegistry, "infocenter.officer", ["officer", "admin"]);

  initVault(join(dir, "vault"), passphrase, { scrypt: fastScrypt });
  vault = openVault(join(dir, "vault"), passphrase);
  app = await buildVaultService({
    keyStore: vault.keyStore,
    pseudonymKey: vault.pseudonymKey,
    audit: vault.audit,
    rootCertPem: ca.certPem,
    chainId,
    isRevoked: (caller) =>
      registry.getCertificate(caller.certId)?.revokedMs != null ||
      registry.getIdentity(caller.enrollmentId)?.status !== "active",
  });
});

after(async () => {
  await app?.close();
  vault?.close();
  registry?.close();
  foreignRegistry?.close();
  rmSync(dir, { recursive: true, force: true });
});

describe("who may call", () => {
  test("an unsigned request is 401 AUTH_MISSING and is not audited", async () => {
    const response = await app.inject({
      method: "POST",
      url: "/v1/vault/subjects",
      headers: { "content-type": "application/json" },
      payload: holder,
    });
    assert.equal(response.statusCode, 401);
    assert.equal(response.json().error.code, "AUTH_MISSING");
  });

  test("an identity of another root is 401 CERT_UNTRUSTED", async () => {
    await rejectsWith(
      clientAs(foreignOfficer).createSubject(holder.codeType, holder.code),
      401,
      "CERT_UNTRUSTED",
    );
  });

  test("a department outside the grants is 403 FORBIDDEN; so is an officer at the audit log", async () => {
    await rejectsWith(clientAs(taxOfficer).createSubject(holder.codeType, holder.code), 403, "FORBIDDEN");
    await rejectsWith(clientAs(officer).audit(), 403, "FORBIDDEN");
    await rejectsWith(clientAs(auditor).createSubject(holder.codeType, holder.code), 403, "FORBIDDEN");
  });

  test("a revoked identity is 403 CERT_REVOKED", async () => {
    await rejectsWith(
      clientAs(revokedOfficer).createSubject(holder.codeType, holder.code),
      403,
      "CERT_REVOKED",
    );
  });

  test("a tampered body fails the signature (Content-Digest)", async () => {
    const body = Buffer.from(JSON.stringify(holder));
    const headers = await signRequest({
      method: "POST",
      url: "/v1/vault/subjects",
      body,
      signer: officer.signer,
      certId: officer.certId,
      certDer: officer.certDer,
      nowMs: Date.now(),
    });
    const response = await app.inject({
      method: "POST",
      url: "/v1/vault/subjects",
      headers: { ...headers, "content-type": "application/json" },
      payload: JSON.stringify({ ...holder, code: "110101199003070000" }),
    });
    assert.equal(response.statusCode, 401, response.body);
  });
});

describe("subject lifecycle", () => {
  let subject: string;
  let encryptionKey: Uint8Array;
  let signingKey: Uint8Array;

  test("create computes the pseudonym and makes the keys once", async () => {
    const client = clientAs(officer);
    const created = await client.createSubject(holder.codeType, holder.code);
    assert.equal(created.created, true);
    assert.equal(created.pseudonym, await pseudonymOf(vault.pseudonymKey, holder.codeType, holder.code));
    assert.equal(created.encryptionKey?.length, 65);
    subject = created.pseudonym;
    encryptionKey = created.encryptionKey!;
    signingKey = created.signingKey!;
    const again = await client.createSubject(holder.codeType, holder.code);
    assert.equal(again.created, false);
    assert.deepEqual(again.encryptionKey, encryptionKey);
    assert.deepEqual(again.signingKey, signingKey);
    const read = await client.subject(subject);
    assert.equal(read.status, "active");
    assert.deepEqual(read.signingKey, signingKey);
    await rejectsWith(client.subject("00".repeat(32)), 404, "VAULT_SUBJECT_UNKNOWN");
  });

  test("open returns the holder's personal content; a wrapped key for another license does not open", async () => {
    const client = clientAs(officer);
    const sealed = await sealPersonal(licenseId, personal, [{ label: "holder", publicKey: encryptionKey }]);
    const opened = await client.open(subject, {
      licenseId,
      sealed: sealed.sealed,
      wrappedKey: sealed.wrapped.holder!,
    });
    assert.deepEqual(opened, sealed.personalWithSalt);
    const otherId = licenseId.replace(".001.X", ".002.X");
    await rejectsWith(
      client.open(subject, { licenseId: otherId, sealed: sealed.sealed, wrappedKey: sealed.wrapped.holder! }),
      409,
      "DECRYPT_UNAVAILABLE",
    );
  });

  test("rewrap hands the data key to a department's subject key and nobody else", async () => {
    const land = await generateEncryptionKeyPair();
    const sealed = await sealPersonal(licenseId, personal, [{ label: "holder", publicKey: encryptionKey }]);
    const wrapped = await clientAs(officer).rewrap(subject, {
      licenseId,
      wrappedKey: sealed.wrapped.holder!,
      dept: "land",
      deptPublicKey: land.publicKey,
    });
    const landKey = await importEncryptionPrivateKey(land.privateKeyPkcs8);
    const dataKey = await unwrapDataKey(wrapped, licenseId, "land", landKey);
    assert.deepEqual(await openPersonal(licenseId, sealed.sealed, dataKey), sealed.personalWithSalt);
    await rejectsWith(
      clientAs(officer).rewrap(subject, {
        licenseId,
        wrappedKey: sealed.wrapped.holder!,
        dept: "land",
        deptPublicKey: new Uint8Array(65),
      }),
      400,
      "PAYLOAD_INVALID",
    );
  });

  test("sign: consent statements of this subject and chain only, in the one low-S form", async () => {
    const client = clientAs(officer);
    for (const action of ["consent.grant", "consent.withdraw"] as const) {
      const encoded = statement(subject, action, { seq: 1 });
      const signature = await client.signStatement(subject, encoded);
      assert.ok(isCanonicalP256Signature(signature));
      assert.ok(verifies(signingKey, encoded, signature));
    }
    const other = "ab".repeat(32);
    await rejectsWith(client.signStatement(subject, statement(other, "consent.grant")), 403, "FORBIDDEN");
    await rejectsWith(client.signStatement(subject, statement(subject, "forget")), 403, "FORBIDDEN");
    await rejectsWith(
      client.signStatement(subject, statement(subject, "consent.grant", { chainId: "other-chain" })),
      403,
      "FORBIDDEN",
    );
    await rejectsWith(client.signStatement(subject, new Uint8Array([1, 2, 3])), 400, "PAYLOAD_INVALID");
  });

  test("sign-read: read proofs of this subject, chain and moment only", async () => {
    const client = clientAs(officer);
    const path = `/v1/subjects/${subject}/licenses?cursor=abc%3D`;
    const message = subjectReadSigningBytes(chainId, subject, "GET", path, Date.now());
    const signature = await client.signRead(subject, message);
    assert.ok(isCanonicalP256Signature(signature));
    const key = createPublicKey({ key: Buffer.from(signingKey), format: "der", type: "spki" });
    assert.ok(verify("sha256", message, { key, dsaEncoding: "ieee-p1363" }, signature));

    const other = "ab".repeat(32);
    const refused = async (bytes: Uint8Array, status: number, code: string) =>
      rejectsWith(client.signRead(subject, bytes), status, code);
    const read = (over: { chain?: string; who?: string; line?: string; at?: string }) =>
      Buffer.concat([
        subjectReadTag,
        utf8(
          [
            over.chain ?? chainId,
            over.who ?? subject,
            over.line ?? `GET /v1/subjects/${subject}/access-trail`,
            over.at ?? String(Date.now()),
          ].join("\u0000"),
        ),
      ]);
    assert.ok(isCanonicalP256Signature(await client.signRead(subject, read({}))));
    // Not a read proof at all: a statement, or bytes without the tag.
    await refused(subjectStatementSigningBytes(statement(subject, "consent.grant")), 400, "PAYLOAD_INVALID");
    await refused(read({}).subarray(subjectReadTag.length), 400, "PAYLOAD_INVALID");
    await refused(read({ line: `POST /v1/subjects/${subject}/licenses` }), 400, "PAYLOAD_INVALID");
    await refused(read({ line: `GET /v1/licenses?holder=${subject}` }), 400, "PAYLOAD_INVALID");
    await refused(read({ line: `GET /v1/subjects/${subject}/../licenses` }), 400, "PAYLOAD_INVALID");
    await refused(read({ line: `GET /v1/subjects/${other}/licenses`, who: subject }), 400, "PAYLOAD_INVALID");
    await refused(read({ at: "0012" }), 400, "PAYLOAD_INVALID");
    await refused(Buffer.concat([read({}), Buffer.from([0])]), 400, "PAYLOAD_INVALID");
    // Well formed, but for someone, somewhere or some time else.
    await refused(read({ who: other, line: `GET /v1/subjects/${other}/licenses` }), 403, "FORBIDDEN");
    await refused(read({ chain: "other-chain" }), 403, "FORBIDDEN");
    await refused(read({ at: String(Date.now() + 3_600_000) }), 401, "AUTH_CLOCK_SKEW");
  });

  test("forget signs, destroys, and leaves nothing usable behind", async () => {
    const client = clientAs(officer);
    const sealed = await sealPersonal(licenseId, personal, [{ label: "holder", publicKey: encryptionKey }]);
    const storedBefore = sealedKeyBlobs(subject);
    assert.equal(storedBefore.length, 2);
    await rejectsWith(client.forget(subject, statement(subject, "consent.withdraw")), 400, "BAD_REQUEST");

    const forgetStatement = statement(subject, "forget", { seq: 2 });
    const forgotten = await client.forget(subject, forgetStatement);
    assert.equal(forgotten.keysDestroyed, 2);
    assert.ok(verifies(signingKey, forgetStatement, forgotten.signature));
    // A lost answer can be had again, for the same statement only.
    const repeat = await client.forget(subject, forgetStatement);
    assert.deepEqual(repeat.signature, forgotten.signature);
    assert.equal(repeat.keysDestroyed, 0);
    await rejectsWith(
      client.forget(subject, statement(subject, "forget", { seq: 3 })),
      410,
      "VAULT_KEY_DESTROYED",
    );

    await rejectsWith(
      client.open(subject, { licenseId, sealed: sealed.sealed, wrappedKey: sealed.wrapped.holder! }),
      410,
      "VAULT_KEY_DESTROYED",
    );
    await rejectsWith(
      client.signStatement(subject, statement(subject, "consent.grant")),
      410,
      "VAULT_KEY_DESTROYED",
    );
    await rejectsWith(
      client.rewrap(subject, {
        licenseId,
        wrappedKey: sealed.wrapped.holder!,
        dept: "land",
        deptPublicKey: encryptionKey,
      }),
      410,
      "VAULT_KEY_DESTROYED",
    );
    await rejectsWith(client.createSubject(holder.codeType, holder.code), 410, "VAULT_KEY_DESTROYED");
    const read = await client.subject(subject);
    assert.equal(read.status, "destroyed");
    assert.equal(read.encryptionKey, undefined);

    assert.equal(sealedKeyBlobs(subject).length, 0);
    const bytes = vaultFileBytes(vaultFiles.keyStore);
    for (const blob of storedBefore)
      assert.equal(bytes.indexOf(blob), -1, "a destroyed key is still in keys.db");
  });

  test("the audit log lists the calls, with outcomes, and no personal data", async () => {
    const client = clientAs(auditor);
    const page = await client.audit({ limit: 1000 });
    const mine = page.items.filter((e) => e.pseudonym === subject);
    const actions = new Set(mine.map((e) => e.action));
    for (const action of [
      "subject.create",
      "subject.read",
      "content.open",
      "key.rewrap",
      "statement.sign",
      "read.sign",
      "subject.forget",
    ]) {
      assert.ok(actions.has(action), `audit has ${action}`);
    }
    assert.ok(mine.every((e) => e.outcome !== "pending"));
    assert.ok(mine.some((e) => e.action === "subject.forget" && e.code === "VAULT_KEY_DESTROYED"));
    assert.ok(mine.some((e) => e.action === "content.open" && e.code === "DECRYPT_UNAVAILABLE"));
    assert.ok(mine.every((e) => e.enrollmentId === "infocenter.officer"));
    const refused = page.items.find((e) => e.enrollmentId === "tax.officer");
    assert.equal(refused?.code, "FORBIDDEN");
    assert.equal(refused?.action, "subject.create");
    assert.ok(
      page.items.every((e) => e.enrollmentId !== "infocenter.gone"),
      "unauthenticated calls are not rows",
    );

    const filtered = await client.audit({ pseudonym: subject, limit: 2 });
    assert.equal(filtered.items.length, 2);
    assert.ok(filtered.nextCursor !== null);
    const next = await client.audit({ pseudonym: subject, cursor: filtered.nextCursor!, limit: 1000 });
    assert.equal(filtered.items.length + next.items.length, mine.length);

    const bytes = vaultFileBytes(vaultFiles.audit);
    for (const secret of [personal.holderName, holder.code, personal.fields.birthDate]) {
      assert.equal(bytes.indexOf(Buffer.from(secret)), -1, `${secret} in vault.db`);
    }
  });
});

describe("limits and validation", () => {
  test("an oversized body is 413 before anything else", async () => {
    const huge = { codeType: "111", code: "x".repeat(20_000) };
    await rejectsWith(clientAs(officer).createSubject(huge.codeType, huge.code), 413, "REQUEST_TOO_LARGE");
  });

  test("a body that breaks the schema is 400 BAD_REQUEST with the field", async () => {
    const client = clientAs(officer);
    await assert.rejects(client.createSubject("1 1", "x"), (error: CitychainError) => {
      assert.equal(error.code, "BAD_REQUEST");
      assert.equal(error.field, "codeType");
      return true;
    });
  });

  test("the OpenAPI document lists the vault's routes", async () => {
    const response = await app.inject({ method: "GET", url: "/v1/vault/openapi.json" });
    assert.equal(response.statusCode, 200);
    const paths = Object.keys(response.json().paths as object);
    assert.ok(paths.includes("/v1/vault/subjects/{pseudonym}/forget"), paths.join(", "));
  });
});

/** The sealed private keys the key store holds for a subject, read straight from its file. */
function sealedKeyBlobs(pseudonym: string): Buffer[] {
  const db = new Database(join(dir, "vault", vaultFiles.keyStore), { readonly: true });
  try {
    return (
      db.prepare("SELECT sealed FROM keys WHERE pseudonym = ?").all(pseudonym) as { sealed: Buffer }[]
    ).map((row) => row.sealed);
  } finally {
    db.close();
  }
}
