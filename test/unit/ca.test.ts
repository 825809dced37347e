import assert from "node:assert/strict";
import { createPublicKey, generateKeyPairSync, type KeyObject, X509Certificate } from "node:crypto";
import { mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { buildCertificate, type ExtensionSpec, encodeName } from "../../src/ca/certificate.ts";
import { derOid, derSequence, derSet, derUtf8String } from "../../src/ca/der.ts";
import {
  type CaRegistry,
  type CertificateAuthority,
  caKeyFileName,
  createCsr,
  createRootCa,
  derToPem,
  generateP256KeyPair,
  identityExtensionOid,
  loadCa,
  openRegistry,
  parseIdentityCert,
  readPrivateKey,
  resolvePassphrase,
  verifyIssuedBy,
} from "../../src/ca/index.ts";
import { toSigningCryptoKey, toVerifyingCryptoKey } from "../../src/ca/keys.ts";
import { ecdsaP256Sha256, x509 } from "../../src/ca/x509.ts";
import { CodedError, type ErrorCode } from "../../src/core/errors.ts";

const passphrase = "correct horse battery staple";
const startMs = Date.UTC(2025, 5, 1, 12, 0, 0);
const dayMs = 86_400_000;

function isCoded(code: ErrorCode, field?: string): (error: unknown) => boolean {
  return (error) => {
    assert.ok(error instanceof CodedError, `expected a CodedError, got ${String(error)}`);
    assert.equal(error.code, code, error.message);
    if (field !== undefined) assert.equal(error.field, field);
    return true;
  };
}

async function csrFor(enrollmentId: string): Promise<{ key: KeyObject; csr: string }> {
  const { privateKey } = generateP256KeyPair();
  return { key: privateKey, csr: await createCsr(privateKey, enrollmentId) };
}

/** A CSR built with any key pair WebCrypto can make, for the refusal cases. */
async function rawCsr(
  keys: CryptoKeyPair,
  signingAlgorithm: EcdsaParams & { namedCurve?: string },
): Promise<string> {
  const csr = await x509.Pkcs10CertificateRequestGenerator.create({ name: "CN=x", keys, signingAlgorithm });
  return derToPem(new Uint8Array(csr.rawData), "CERTIFICATE REQUEST");
}

async function webKeys(key: KeyObject): Promise<CryptoKeyPair> {
  return {
    privateKey: await toSigningCryptoKey(key),
    publicKey: await toVerifyingCryptoKey(createPublicKey(key)),
  };
}

describe("ca", () => {
  const tempDirs: string[] = [];
  let clockMs = startMs;
  const now = (): number => clockMs;
  let caDir = "";
  let ca: CertificateAuthority;
  let registry: CaRegistry;

  function tempDir(): string {
    const dir = mkdtempSync(join(tmpdir(), "citychain-ca-"));
    tempDirs.push(dir);
    return dir;
  }

  before(async () => {
    caDir = join(tempDir(), "ca");
    ca = await createRootCa({
      dir: caDir,
      commonName: "infocenter.root-ca",
      validityDays: 3650,
      passphrase,
      now,
    });
    registry = openRegistry({ ca });
    registry.registerDepartment("tax", "Tax Bureau");
    registry.registerDepartment("land", "Land Resources Bureau");
  });

  after(() => {
    registry.close();
    for (const dir of tempDirs) rmSync(dir, { recursive: true, force: true });
  });

  test("the root is a self-signed CA certificate with the operator's department", () => {
    const root = ca.identity;
    assert.equal(root.kind, "ca");
    assert.equal(root.isCa, true);
    assert.equal(root.dept, "infocenter");
    assert.equal(root.enrollmentId, "infocenter.root-ca");
    assert.equal(root.subjectDn, "CN=infocenter.root-ca,OU=registrar,O=infocenter");
    assert.equal(root.issuerDn, root.subjectDn);
    assert.match(root.certId, /^[0-9a-f]{64}$/);
    assert.equal(root.notAfterMs - root.notBeforeMs > 3649 * dayMs, true);
    assert.equal(verifyIssuedBy(root, root), true);
  });

  test("the CA key rests encrypted, owner-only, and opens only with the right passphrase", async () => {
    const keyPath = join(caDir, caKeyFileName);
    assert.match(readFileSync(keyPath, "utf8"), /ENCRYPTED PRIVATE KEY/);
    if (process.platform !== "win32") assert.equal(statSync(keyPath).mode & 0o777, 0o600);
    const loaded = await loadCa(caDir, passphrase, { now });
    assert.equal(loaded.identity.certId, ca.identity.certId);
    await assert.rejects(loadCa(caDir, "not the passphrase at all"), isCoded("KEY_LOCKED"));
    assert.throws(() => readPrivateKey(keyPath, {}), isCoded("KEY_LOCKED", "passphrase"));
  });

  test("a plaintext key file is refused unless allowPlaintext is set", () => {
    const path = join(tempDir(), "plain.pem");
    const { privateKey } = generateP256KeyPair();
    writeFileSync(path, privateKey.export({ format: "pem", type: "pkcs8" }));
    assert.throws(() => readPrivateKey(path, { passphrase }), isCoded("KEY_LOCKED", "keyFile"));
    const loaded = readPrivateKey(path, { allowPlaintext: true });
    assert.equal(loaded.asymmetricKeyType, "ec");
  });

  test("passphrases come from a value, an environment variable or a file", () => {
    assert.equal(resolvePassphrase({ value: "abc" }), "abc");
    assert.equal(resolvePassphrase({ env: "CA_PASS" }, { CA_PASS: "from-env" }), "from-env");
    assert.throws(() => resolvePassphrase({ env: "CA_PASS" }, {}), isCoded("KEY_LOCKED", "passphrase"));
    const file = join(tempDir(), "pass.txt");
    writeFileSync(file, "from-file\n");
    assert.equal(resolvePassphrase({ file }), "from-file");
    assert.throws(() => resolvePassphrase({ file: join(tempDir(), "missing") }), isCoded("KEY_LOCKED"));
  });

  test("a new root refuses a short passphrase and an existing CA directory", async () => {
    await assert.rejects(
      createRootCa({ dir: join(tempDir(), "ca"), validityDays: 10, passphrase: "short" }),
      isCoded("CA_BAD_INPUT", "passphrase"),
    );
    await assert.rejects(createRootCa({ dir: caDir, validityDays: 10, passphrase }), isCoded("CONFLICT"));
  });

  test("departments are registered once and listed", () => {
    assert.throws(() => registry.registerDepartment("tax", "Again"), isCoded("CA_DEPT_EXISTS"));
    assert.throws(() => registry.registerDepartment("Tax!", "Bad"), isCoded("CA_BAD_INPUT", "code"));
    assert.deepEqual(
      registry.listDepartments().map((department) => department.code),
      ["land", "tax"],
    );
  });

  test("identity registration validates its input", async () => {
    const base = { enrollmentId: "tax.bob", dept: "tax", roles: ["officer" as const], kind: "user" as const };
    await assert.rejects(registry.registerIdentity({ ...base, dept: "health" }), isCoded("CA_BAD_INPUT"));
    await assert.rejects(
      registry.registerIdentity({ ...base, enrollmentId: "health.bob", dept: "health" }),
      isCoded("CA_DEPT_UNKNOWN"),
    );
    await assert.rejects(
      registry.registerIdentity({ ...base, roles: ["mayor"] as unknown as ["officer"] }),
      isCoded("CA_BAD_INPUT", "roles"),
    );
    await assert.rejects(
      registry.registerIdentity({ ...base, roles: ["node"] }),
      isCoded("CA_BAD_INPUT", "roles"),
    );
    await assert.rejects(
      registry.registerIdentity({ ...base, enrollmentId: "tax.Bob" }),
      isCoded("CA_BAD_INPUT", "enrollmentId"),
    );
    await registry.registerIdentity(base);
    await assert.rejects(registry.registerIdentity(base), isCoded("CA_IDENTITY_EXISTS"));
  });

  test("enrolling with the secret yields a certificate with the registered claims", async () => {
    const { secret } = await registry.registerIdentity({
      enrollmentId: "tax.alice",
      dept: "tax",
      roles: ["officer", "auditor"],
      kind: "user",
    });
    assert.equal(registry.getIdentity("tax.alice")?.status, "active");
    const { key, csr } = await csrFor("someone.else");
    const certPem = await registry.enroll("tax.alice", secret, csr);
    const identity = parseIdentityCert(certPem);
    assert.equal(identity.enrollmentId, "tax.alice");
    assert.equal(identity.dept, "tax");
    assert.deepEqual(identity.roles, ["officer", "auditor"]);
    assert.equal(identity.kind, "user");
    assert.equal(identity.isCa, false);
    assert.equal(identity.subjectDn, "CN=tax.alice,OU=officer,O=tax");
    assert.equal(identity.issuerDn, ca.identity.subjectDn);
    assert.deepEqual(
      identity.publicKeySpki,
      new Uint8Array(createPublicKey(key).export({ type: "spki", format: "der" })),
    );
    assert.match(identity.serialNumber, /^[0-9a-f]+$/);
    assert.equal(identity.notAfterMs, Math.floor((startMs + 365 * dayMs) / 1000) * 1000);
    assert.equal(verifyIssuedBy(identity, ca.identity), true);
    assert.equal(registry.getIdentity("tax.alice")?.enrollments, 1);
    const node = new X509Certificate(certPem);
    assert.equal(node.keyUsage?.includes("1.3.6.1.5.5.7.3.2"), true);
    assert.equal(node.checkPrivateKey(key), true);

    await assert.rejects(
      registry.enroll("tax.alice", secret, (await csrFor("tax.alice")).csr),
      isCoded("CA_SECRET_USED"),
    );
  });

  test("a wrong secret is refused and spends nothing", async () => {
    const { secret } = await registry.registerIdentity({
      enrollmentId: "tax.carol",
      dept: "tax",
      roles: ["client"],
      kind: "user",
    });
    const { csr } = await csrFor("tax.carol");
    await assert.rejects(registry.enroll("tax.carol", `${secret}x`, csr), isCoded("CA_BAD_SECRET"));
    await assert.rejects(registry.enroll("tax.nobody", secret, csr), isCoded("CA_IDENTITY_UNKNOWN"));
    assert.equal(registry.getIdentity("tax.carol")?.enrollments, 0);
    await registry.enroll("tax.carol", secret, csr);
  });

  test("a secret with several uses works that many times, even concurrently", async () => {
    const { secret } = await registry.registerIdentity({
      enrollmentId: "land.kiosk",
      dept: "land",
      roles: ["client"],
      kind: "user",
      maxEnrollments: 2,
    });
    const attempts = await Promise.allSettled(
      [1, 2, 3].map(async () => registry.enroll("land.kiosk", secret, (await csrFor("land.kiosk")).csr)),
    );
    assert.equal(attempts.filter((attempt) => attempt.status === "fulfilled").length, 2);
    const refused = attempts.find((attempt) => attempt.status === "rejected");
    assert.ok(refused?.status === "rejected");
    assert.ok(isCoded("CA_SECRET_USED")(refused.reason));
  });

  test("CSRs whose signature does not match their key, or with a non-P-256 key, are refused", async () => {
    const { secret } = await registry.registerIdentity({
      enrollmentId: "tax.dave",
      dept: "tax",
      roles: ["officer"],
      kind: "user",
    });
    const signer = generateP256KeyPair().privateKey;
    const other = generateP256KeyPair().privateKey;
    const mismatched = await rawCsr(
      {
        privateKey: await toSigningCryptoKey(signer),
        publicKey: await toVerifyingCryptoKey(createPublicKey(other)),
      },
      ecdsaP256Sha256,
    );
    await assert.rejects(registry.enroll("tax.dave", secret, mismatched), isCoded("CA_BAD_CSR"));

    const p384 = generateKeyPairSync("ec", { namedCurve: "P-384" }).privateKey;
    const p384Keys = {
      privateKey: await globalThis.crypto.subtle.importKey(
        "pkcs8",
        p384.export({ type: "pkcs8", format: "der" }),
        { name: "ECDSA", namedCurve: "P-384" },
        false,
        ["sign"],
      ),
      publicKey: await globalThis.crypto.subtle.importKey(
        "spki",
        createPublicKey(p384).export({ type: "spki", format: "der" }),
        { name: "ECDSA", namedCurve: "P-384" },
        true,
        ["verify"],
      ),
    };
    const p384Csr = await rawCsr(p384Keys, { name: "ECDSA", hash: "SHA-256" });
    await assert.rejects(registry.enroll("tax.dave", secret, p384Csr), isCoded("CA_BAD_CSR"));
    await assert.rejects(registry.enroll("tax.dave", secret, "not a csr"), isCoded("CA_BAD_CSR"));
    assert.equal(registry.getIdentity("tax.dave")?.enrollments, 0);
    const sha384 = await rawCsr(await webKeys(signer), { name: "ECDSA", hash: "SHA-384" });
    await assert.rejects(registry.enroll("tax.dave", secret, sha384), isCoded("CA_BAD_CSR"));
  });

  test("node certificates carry serverAuth and the loopback names plus the registered ones", async () => {
    await assert.rejects(
      registry.registerIdentity({ enrollmentId: "tax.node1", dept: "tax", roles: ["officer"], kind: "node" }),
      isCoded("CA_BAD_INPUT", "roles"),
    );
    const { secret } = await registry.registerIdentity({
      enrollmentId: "tax.node1",
      dept: "tax",
      roles: ["node"],
      kind: "node",
      dnsNames: ["node1.tax.city.example"],
      ipAddresses: ["10.0.0.7"],
    });
    const certPem = await registry.enroll("tax.node1", secret, (await csrFor("tax.node1")).csr);
    const identity = parseIdentityCert(certPem);
    assert.equal(identity.kind, "node");
    const node = new X509Certificate(certPem);
    assert.deepEqual(node.keyUsage?.sort(), ["1.3.6.1.5.5.7.3.1", "1.3.6.1.5.5.7.3.2"]);
    assert.equal(
      node.subjectAltName,
      "DNS:localhost, DNS:node1.tax.city.example, IP Address:127.0.0.1, IP Address:10.0.0.7",
    );
  });

  test("re-enrolling issues a new certificate for a new key; revoking the identity lists all its certs", async () => {
    const { secret } = await registry.registerIdentity({
      enrollmentId: "land.erin",
      dept: "land",
      roles: ["officer"],
      kind: "user",
    });
    const first = await registry.enroll("land.erin", secret, (await csrFor("land.erin")).csr);
    clockMs += dayMs;
    const second = await registry.reenroll(first, (await csrFor("land.erin")).csr);
    const firstId = parseIdentityCert(first);
    const secondId = parseIdentityCert(second);
    assert.notEqual(secondId.certId, firstId.certId);
    assert.notEqual(secondId.publicKeyId, firstId.publicKeyId);
    assert.equal(secondId.enrollmentId, "land.erin");
    assert.equal(verifyIssuedBy(secondId, ca.identity), true);
    assert.equal(registry.listCertificates("land.erin").length, 2);

    clockMs += dayMs;
    const revoked = registry.revokeIdentity("land.erin", "affiliationChanged");
    assert.deepEqual(revoked.map((record) => record.certId).sort(), [firstId.certId, secondId.certId].sort());
    for (const record of revoked) {
      assert.equal(record.dept, "land");
      assert.equal(record.enrollmentId, "land.erin");
      assert.equal(record.reason, "affiliationChanged");
      assert.equal(record.revokedMs, clockMs);
    }
    assert.deepEqual(registry.revokeIdentity("land.erin", "affiliationChanged"), []);
    assert.equal(registry.getIdentity("land.erin")?.status, "revoked");
    await assert.rejects(registry.reenroll(second, (await csrFor("land.erin")).csr), isCoded("CERT_REVOKED"));
    await assert.rejects(
      registry.enroll("land.erin", secret, (await csrFor("land.erin")).csr),
      isCoded("CA_IDENTITY_REVOKED"),
    );
    assert.throws(
      () => registry.revokeIdentity("land.erin", "onAWhim" as "unspecified"),
      isCoded("CA_BAD_INPUT", "reason"),
    );
  });

  test("revoking one certificate, and paging through revocations", async () => {
    const { secret } = await registry.registerIdentity({
      enrollmentId: "tax.frank",
      dept: "tax",
      roles: ["officer"],
      kind: "user",
      maxEnrollments: 2,
    });
    const certId = parseIdentityCert(
      await registry.enroll("tax.frank", secret, (await csrFor("tax.frank")).csr),
    ).certId;
    clockMs += 1000;
    assert.deepEqual(
      registry.revokeCertificate(certId, "keyCompromise").map((record) => record.certId),
      [certId],
    );
    assert.deepEqual(registry.revokeCertificate(certId, "keyCompromise"), []);
    assert.throws(
      () => registry.revokeCertificate("ab".repeat(32), "superseded"),
      isCoded("NOT_FOUND", "certId"),
    );
    assert.equal(registry.getIdentity("tax.frank")?.status, "active");

    const all: string[] = [];
    let cursor: string | null = null;
    do {
      const page = registry.listRevocations({ cursor, limit: 1 });
      all.push(...page.items.map((item) => item.certId));
      cursor = page.nextCursor;
    } while (cursor !== null);
    assert.equal(all.length, 3);
    assert.equal(all[2], certId);
    assert.deepEqual(
      registry.listRevocations().items.map((item) => item.certId),
      all,
    );
  });

  test("an expired certificate cannot re-enroll", async () => {
    const { secret } = await registry.registerIdentity({
      enrollmentId: "tax.gina",
      dept: "tax",
      roles: ["officer"],
      kind: "user",
    });
    const certPem = await registry.enroll("tax.gina", secret, (await csrFor("tax.gina")).csr);
    const saved = clockMs;
    clockMs += 366 * dayMs;
    await assert.rejects(registry.reenroll(certPem, (await csrFor("tax.gina")).csr), isCoded("CERT_EXPIRED"));
    clockMs = saved;
  });

  test("certificates from a foreign root do not verify and cannot re-enroll", async () => {
    const foreign = await createRootCa({
      dir: join(tempDir(), "foreign"),
      validityDays: 365,
      passphrase,
      now,
    });
    const foreignCert = await foreign.issueFromCsr((await csrFor("tax.alice")).csr, {
      enrollmentId: "tax.alice",
      dept: "tax",
      roles: ["admin"],
      kind: "user",
      validityDays: 30,
    });
    const identity = parseIdentityCert(foreignCert);
    assert.equal(verifyIssuedBy(identity, foreign.identity), true);
    assert.equal(verifyIssuedBy(identity, ca.identity), false);
    assert.equal(verifyIssuedBy(foreign.identity, ca.identity), false);
    await assert.rejects(
      registry.reenroll(foreignCert, (await csrFor("tax.alice")).csr),
      isCoded("CERT_UNTRUSTED"),
    );
    // A same-named root with another key must not pass either.
    assert.equal(foreign.identity.subjectDn, ca.identity.subjectDn);
  });

  test("a leaf certificate cannot act as an issuer", async () => {
    const { secret } = await registry.registerIdentity({
      enrollmentId: "tax.henry",
      dept: "tax",
      roles: ["officer"],
      kind: "user",
    });
    const leaf = parseIdentityCert(
      await registry.enroll("tax.henry", secret, (await csrFor("tax.henry")).csr),
    );
    assert.equal(verifyIssuedBy(leaf, leaf), false);
  });

  test("the registry survives a reopen and refuses another CA's certificate", async () => {
    registry.close();
    registry = openRegistry({ ca: await loadCa(caDir, passphrase, { now }) });
    assert.equal(registry.getIdentity("tax.alice")?.enrollments, 1);
    const foreign = await createRootCa({ dir: join(tempDir(), "other"), validityDays: 365, passphrase, now });
    assert.throws(
      () => openRegistry({ ca: foreign, path: join(caDir, "registry.sqlite") }),
      isCoded("CONFLICT"),
    );
  });

  describe("parsing", () => {
    function rdn(oid: string, value: string): Uint8Array {
      return derSet(derSequence(derOid(oid), derUtf8String(value)));
    }

    function selfSigned(
      extensions: ExtensionSpec[],
      subject = encodeName("tax", "officer", "tax.x"),
      key: KeyObject = generateP256KeyPair().privateKey,
    ): string {
      const spki = new Uint8Array(createPublicKey(key).export({ type: "spki", format: "der" }));
      const der = buildCertificate(
        {
          serial: Uint8Array.of(1, 2, 3),
          issuerDer: subject,
          subjectDer: subject,
          notBeforeMs: startMs,
          notAfterMs: startMs + dayMs,
          subjectPublicKeySpki: spki,
          extensions,
        },
        key,
      );
      return derToPem(der, "CERTIFICATE");
    }

    function extension(json: string, critical = false): ExtensionSpec {
      return { oid: identityExtensionOid, critical, value: new TextEncoder().encode(json) };
    }

    const good = '{"v":1,"dept":"tax","roles":["officer"],"kind":"user"}';

    test("a well-formed certificate parses", () => {
      const identity = parseIdentityCert(selfSigned([extension(good)]));
      assert.equal(identity.enrollmentId, "tax.x");
      assert.equal(identity.notBeforeMs, startMs);
      assert.equal(identity.notAfterMs, startMs + dayMs);
      assert.equal(identity.serialNumber, "010203");
    });

    test("a certificate without our extension is refused with a code", async () => {
      // Built by another encoder (@peculiar/x509), as a foreign tool would.
      const keys = await webKeys(generateP256KeyPair().privateKey);
      const cert = await x509.X509CertificateGenerator.createSelfSigned({
        name: "O=tax, OU=officer, CN=tax.x",
        keys,
        signingAlgorithm: ecdsaP256Sha256,
      });
      const pem = derToPem(new Uint8Array(cert.rawData), "CERTIFICATE");
      assert.throws(
        () => parseIdentityCert(pem),
        (error: unknown) => {
          assert.ok(error instanceof CodedError && error.code === "CA_BAD_CERT");
          assert.match(error.message, /no citychain identity extension/);
          return true;
        },
      );
    });

    test("a key other than P-256 is refused", () => {
      const p384 = generateKeyPairSync("ec", { namedCurve: "P-384" }).privateKey;
      const pem = selfSigned([extension(good)], undefined, p384);
      assert.throws(() => parseIdentityCert(pem), isCoded("CA_BAD_CERT"));
    });

    test("malformed, non-canonical or inconsistent claims are refused", () => {
      const cases: Array<[ExtensionSpec[], Uint8Array?]> = [
        [[extension("{not json")]],
        [[extension('{"dept":"tax","v":1,"roles":["officer"],"kind":"user"}')]],
        [[extension('{"v":1, "dept":"tax","roles":["officer"],"kind":"user"}')]],
        [[extension('{"v":2,"dept":"tax","roles":["officer"],"kind":"user"}')]],
        [[extension('{"v":1,"dept":"tax","roles":["mayor"],"kind":"user"}')]],
        [[extension('{"v":1,"dept":"tax","roles":["officer"],"kind":"robot"}')]],
        [[extension('{"v":1,"dept":"tax","roles":["officer"],"kind":"user","x":1}')]],
        [[extension(good, true)]],
        [[extension(good), extension(good)]],
        [[extension(good)], encodeName("land", "officer", "tax.x")],
        [[extension(good)], encodeName("tax", "auditor", "tax.x")],
        [[extension(good)], encodeName("tax", "officer", "land.x")],
        [[extension(good)], derSequence(rdn("2.5.4.3", "tax.x"))],
        [[extension('{"v":1,"dept":"tax","roles":["officer"],"kind":"ca"}')]],
      ];
      for (const [extensions, subject] of cases) {
        const pem = selfSigned(extensions, subject);
        assert.throws(() => parseIdentityCert(pem), isCoded("CA_BAD_CERT"));
      }
    });

    test("garbage input is refused with a code", () => {
      assert.throws(() => parseIdentityCert("hello"), isCoded("CA_BAD_CERT"));
      assert.throws(
        () => parseIdentityCert(new Uint8Array([0x30, 0x03, 0x02, 0x01, 0x01])),
        isCoded("CA_BAD_CERT"),
      );
      assert.throws(() => parseIdentityCert(new Uint8Array(0)), isCoded("CA_BAD_CERT"));
    });

    test("a hand-built identity whose certId does not match its bytes is refused", () => {
      assert.throws(
        () => verifyIssuedBy({ ...ca.identity, certId: "00".repeat(32) }, ca.identity),
        isCoded("CA_BAD_CERT"),
      );
    });
  });
});
