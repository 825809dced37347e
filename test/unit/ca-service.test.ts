/**
 * The membership service's HTTP API through fastify's inject() (no socket): registration, enrollment
 * with one-time secrets, who may call what, re-enrollment, revocation, and the ledger records.
 */
import assert from "node:assert/strict";
import { createPublicKey, type KeyObject } from "node:crypto";
import { mkdtempSync, rmSync } from "node:fs";
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
  verifyIssuedBy,
} from "../../src/ca/index.ts";
import { LedgerSync } from "../../src/ca/ledger-sync.ts";
import { buildCaService } from "../../src/ca/service.ts";
import { fromBase64 } from "../../src/core/encoding.ts";
import { signRequest } from "../../src/core/httpsig.ts";
import { decodeTx } from "../../src/core/tx.ts";
import { CitychainClient, type FetchLike } from "../../src/sdk/client.ts";
import { WebCryptoSigner } from "../../src/sdk/signer.ts";

/** JSON answers, read loosely: the assertions check their shape. */
// biome-ignore lint/suspicious/noExplicitAny: see above
type Loose = Record<string, any>;

const passphrase = "correct horse battery staple";

interface Member {
  readonly enrollmentId: string;
  readonly privateKey: KeyObject;
  readonly certPem: string;
  readonly certId: string;
  readonly certDer: Uint8Array;
  readonly signer: WebCryptoSigner;
}

async function member(privateKey: KeyObject, certPem: string): Promise<Member> {
  const identity = parseIdentityCert(certPem);
  const pkcs8 = new Uint8Array(privateKey.export({ format: "der", type: "pkcs8" }));
  const spki = new Uint8Array(createPublicKey(privateKey).export({ format: "der", type: "spki" }));
  return {
    enrollmentId: identity.enrollmentId,
    privateKey,
    certPem,
    certId: identity.certId,
    certDer: identity.der,
    signer: await WebCryptoSigner.fromPkcs8(pkcs8, spki),
  };
}

/** Registers and enrolls straight through the registry: the test's own fixtures. */
async function enrollDirect(
  registry: CaRegistry,
  enrollmentId: string,
  roles: Role[],
  kind: "user" | "node" = "user",
): Promise<Member> {
  const dept = enrollmentId.split(".")[0]!;
  const { secret } = await registry.registerIdentity({ enrollmentId, dept, roles, kind });
  const { privateKey } = generateP256KeyPair();
  const certPem = await registry.enroll(enrollmentId, secret, await createCsr(privateKey, enrollmentId));
  return member(privateKey, certPem);
}

async function call(
  app: FastifyInstance,
  as: Member | null,
  method: "GET" | "POST",
  url: string,
  body?: unknown,
  options: { sendCert?: boolean } = {},
) {
  const bytes = body === undefined ? undefined : Buffer.from(JSON.stringify(body));
  const headers: Record<string, string> =
    as === null
      ? {}
      : await signRequest({
          method,
          url,
          ...(bytes === undefined ? {} : { body: bytes }),
          signer: as.signer,
          certId: as.certId,
          ...(options.sendCert === false ? {} : { certDer: as.certDer }),
          nowMs: Date.now(),
        });
  if (bytes !== undefined) headers["content-type"] = "application/json";
  const response = await app.inject({
    method,
    url,
    headers,
    ...(bytes === undefined ? {} : { payload: bytes }),
  });
  return { status: response.statusCode, body: response.json() as Loose };
}

function assertError(response: { status: number; body: Loose }, status: number, code: string) {
  assert.equal(response.status, status, JSON.stringify(response.body));
  assert.equal(response.body.error?.code, code, JSON.stringify(response.body));
}

let dir: string;
let ca: CertificateAuthority;
let registry: CaRegistry;
let app: FastifyInstance;
let operatorAdmin: Member;
let taxAdmin: Member;
let taxOfficer: Member;
let foreignAdmin: Member;
let foreignRegistry: CaRegistry;

before(async () => {
  dir = mkdtempSync(join(tmpdir(), "citychain-ca-service-"));
  ca = await createRootCa({ dir: join(dir, "ca"), validityDays: 3650, passphrase });
  registry = openRegistry({ ca });
  registry.registerDepartment("infocenter", "Municipal Information Center");
  registry.registerDepartment("tax", "Taxation Bureau");
  registry.registerDepartment("land", "Planning and Natural Resources Bureau");
  operatorAdmin = await enrollDirect(registry, "infocenter.admin", ["admin", "officer"]);
  taxAdmin = await enrollDirect(registry, "tax.admin", ["admin", "officer"]);
  taxOfficer = await enrollDirect(registry, "tax.officer", ["officer"]);
  // Another CA with an identically named admin: same claims, wrong issuer.
  const foreignCa = await createRootCa({ dir: join(dir, "foreign"), validityDays: 3650, passphrase });
  foreignRegistry = openRegistry({ ca: foreignCa });
  foreignRegistry.registerDepartment("infocenter", "Impostor");
  foreignAdmin = await enrollDirect(foreignRegistry, "infocenter.admin", ["admin"]);
  app = await buildCaService({ ca, registry, limits: { bodyBytesMax: 16 * 1024 } });
});

after(async () => {
  await app?.close();
  registry?.close();
  foreignRegistry?.close();
  rmSync(dir, { recursive: true, force: true });
});

describe("public routes", () => {
  test("the root certificate needs no signature", async () => {
    const response = await call(app, null, "GET", "/v1/ca/certificate");
    assert.equal(response.status, 200);
    assert.equal(response.body.certificate, ca.certPem);
    assert.equal(response.body.certId, ca.identity.certId);
  });

  test("unknown routes are JSON 404s", async () => {
    assertError(await call(app, null, "GET", "/v1/ca/nothing"), 404, "NOT_FOUND");
  });
});

describe("register, enroll", () => {
  test("department -> identity -> enroll with a CSR yields a certificate with the registered claims", async () => {
    const dept = await call(app, operatorAdmin, "POST", "/v1/ca/departments", {
      code: "health",
      name: "Health Commission",
    });
    assert.equal(dept.status, 201, JSON.stringify(dept.body));
    assert.equal(dept.body.department.code, "health");
    assert.deepEqual(dept.body.ledger, { status: "not-configured" });

    const registered = await call(app, operatorAdmin, "POST", "/v1/ca/identities", {
      enrollmentId: "health.carol",
      dept: "health",
      roles: ["officer", "auditor"],
      kind: "user",
    });
    assert.equal(registered.status, 201, JSON.stringify(registered.body));
    const secret = registered.body.secret as string;
    assert.match(secret, /^[A-Za-z0-9_-]{43}$/);

    const { privateKey } = generateP256KeyPair();
    const csr = await createCsr(privateKey, "health.carol");
    const enrolled = await call(app, null, "POST", "/v1/ca/enroll", {
      enrollmentId: "health.carol",
      secret,
      csr,
    });
    assert.equal(enrolled.status, 201, JSON.stringify(enrolled.body));
    assert.equal(enrolled.body.caCertificate, ca.certPem);
    const cert = parseIdentityCert(enrolled.body.certificate as string);
    assert.equal(cert.enrollmentId, "health.carol");
    assert.equal(cert.dept, "health");
    assert.deepEqual([...cert.roles], ["officer", "auditor"]);
    assert.equal(cert.kind, "user");
    assert.equal(cert.certId, enrolled.body.certId);
    assert.ok(verifyIssuedBy(cert, ca.identity));
    assert.deepEqual(
      cert.publicKeySpki,
      new Uint8Array(createPublicKey(privateKey).export({ format: "der", type: "spki" })),
    );

    // The secret was for one use: the same request again is refused, with the code every failure gets.
    const again = await call(app, null, "POST", "/v1/ca/enroll", {
      enrollmentId: "health.carol",
      secret,
      csr,
    });
    assertError(again, 401, "CA_BAD_SECRET");
  });

  test("an unknown id and a wrong secret get the same answer", async () => {
    const { secret } = await registry.registerIdentity({
      enrollmentId: "tax.dave",
      dept: "tax",
      roles: ["officer"],
      kind: "user",
    });
    const csr = await createCsr(generateP256KeyPair().privateKey, "tax.dave");
    const wrong = await call(app, null, "POST", "/v1/ca/enroll", {
      enrollmentId: "tax.dave",
      secret: `${secret.slice(0, -1)}${secret.endsWith("A") ? "B" : "A"}`,
      csr,
    });
    const unknown = await call(app, null, "POST", "/v1/ca/enroll", {
      enrollmentId: "tax.nobody",
      secret,
      csr,
    });
    assertError(wrong, 401, "CA_BAD_SECRET");
    assertError(unknown, 401, "CA_BAD_SECRET");
    assert.deepEqual(wrong.body, unknown.body);
    // A failure is not a use: the right secret still works.
    const right = await call(app, null, "POST", "/v1/ca/enroll", { enrollmentId: "tax.dave", secret, csr });
    assert.equal(right.status, 201);
  });

  test("five failures for one id within the window -> 429 for that id only", async () => {
    const csr = await createCsr(generateP256KeyPair().privateKey, "tax.guess");
    const attempt = (enrollmentId: string) =>
      call(app, null, "POST", "/v1/ca/enroll", { enrollmentId, secret: "not-it", csr });
    for (let i = 0; i < 5; i++) assertError(await attempt("tax.guess"), 401, "CA_BAD_SECRET");
    assertError(await attempt("tax.guess"), 429, "RATE_LIMITED");
    assertError(await attempt("tax.other-guess"), 401, "CA_BAD_SECRET");
  });

  test("malformed bodies are 400s naming the field; a bad CSR is CA_BAD_CSR; oversized is 413", async () => {
    const missing = await call(app, null, "POST", "/v1/ca/enroll", { enrollmentId: "tax.x", secret: "s" });
    assertError(missing, 400, "BAD_REQUEST");
    assert.equal(missing.body.error.field, "csr");
    const extra = await call(app, null, "POST", "/v1/ca/enroll", {
      enrollmentId: "tax.x",
      secret: "s",
      csr: "x",
      admin: true,
    });
    assertError(extra, 400, "BAD_REQUEST");

    const { secret } = await registry.registerIdentity({
      enrollmentId: "tax.erin",
      dept: "tax",
      roles: ["officer"],
      kind: "user",
    });
    const badCsr = await call(app, null, "POST", "/v1/ca/enroll", {
      enrollmentId: "tax.erin",
      secret,
      csr: "-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n",
    });
    assertError(badCsr, 400, "CA_BAD_CSR");

    const huge = await call(app, null, "POST", "/v1/ca/enroll", {
      enrollmentId: "tax.erin",
      secret,
      csr: "x".repeat(20 * 1024),
    });
    assertError(huge, 413, "REQUEST_TOO_LARGE");
  });
});

describe("who may call what", () => {
  const registration = { enrollmentId: "land.frank", dept: "land", roles: ["officer"], kind: "user" };

  test("unsigned admin calls are 401 AUTH_MISSING", async () => {
    assertError(await call(app, null, "POST", "/v1/ca/identities", registration), 401, "AUTH_MISSING");
    assertError(
      await call(app, null, "POST", "/v1/ca/departments", { code: "fund", name: "Fund" }),
      401,
      "AUTH_MISSING",
    );
    assertError(await call(app, null, "GET", "/v1/ca/revocations"), 401, "AUTH_MISSING");
  });

  test("a certificate from another CA is 401 CERT_UNTRUSTED, even with the same name and roles", async () => {
    assertError(
      await call(app, foreignAdmin, "POST", "/v1/ca/identities", registration),
      401,
      "CERT_UNTRUSTED",
    );
  });

  test("a tampered body no longer matches the signature", async () => {
    const url = "/v1/ca/departments";
    const signedBody = Buffer.from(JSON.stringify({ code: "fund", name: "Fund" }));
    const headers = await signRequest({
      method: "POST",
      url,
      body: signedBody,
      signer: operatorAdmin.signer,
      certId: operatorAdmin.certId,
      certDer: operatorAdmin.certDer,
      nowMs: Date.now(),
    });
    const response = await app.inject({
      method: "POST",
      url,
      headers: { ...headers, "content-type": "application/json" },
      payload: JSON.stringify({ code: "evil", name: "Fund" }),
    });
    assert.equal(response.statusCode, 401);
    assert.equal(response.json().error.code, "AUTH_BAD_SIGNATURE");
  });

  test("a certificate the CA knows may be named by id alone", async () => {
    const response = await call(app, taxOfficer, "GET", "/v1/ca/revocations", undefined, { sendCert: false });
    assert.equal(response.status, 200, JSON.stringify(response.body));
  });

  test("an officer cannot register anyone; a department admin only its own people", async () => {
    assertError(await call(app, taxOfficer, "POST", "/v1/ca/identities", registration), 403, "FORBIDDEN");
    assertError(
      await call(app, taxOfficer, "POST", "/v1/ca/identities", {
        ...registration,
        enrollmentId: "tax.g",
        dept: "tax",
      }),
      403,
      "FORBIDDEN",
    );
    // tax.admin: not for land, not an admin, not a node, not a registrar.
    assertError(await call(app, taxAdmin, "POST", "/v1/ca/identities", registration), 403, "FORBIDDEN");
    const own = { enrollmentId: "tax.grace", dept: "tax", roles: ["officer"], kind: "user" };
    const promote = await call(app, taxAdmin, "POST", "/v1/ca/identities", { ...own, roles: ["admin"] });
    assertError(promote, 403, "FORBIDDEN");
    assert.equal(promote.body.error.field, "roles");
    const node = await call(app, taxAdmin, "POST", "/v1/ca/identities", {
      ...own,
      enrollmentId: "tax.node9",
      roles: ["node"],
      kind: "node",
    });
    assertError(node, 403, "FORBIDDEN");
    assertError(
      await call(app, taxAdmin, "POST", "/v1/ca/identities", { ...own, roles: ["registrar"] }),
      400,
      "CA_BAD_INPUT",
    );
    const allowed = await call(app, taxAdmin, "POST", "/v1/ca/identities", own);
    assert.equal(allowed.status, 201, JSON.stringify(allowed.body));
    // ... and it cannot register departments or revoke.
    assertError(
      await call(app, taxAdmin, "POST", "/v1/ca/departments", { code: "fund", name: "Fund" }),
      403,
      "FORBIDDEN",
    );
    assertError(
      await call(app, taxAdmin, "POST", "/v1/ca/revoke", { enrollmentId: "tax.grace", reason: "superseded" }),
      403,
      "FORBIDDEN",
    );
  });

  test("the operator's admin registers anyone, nodes included", async () => {
    const response = await call(app, operatorAdmin, "POST", "/v1/ca/identities", {
      enrollmentId: "land.node1",
      dept: "land",
      roles: ["node"],
      kind: "node",
      dnsNames: ["land-node1.city.example"],
    });
    assert.equal(response.status, 201, JSON.stringify(response.body));
    const taken = await call(app, operatorAdmin, "POST", "/v1/ca/identities", {
      enrollmentId: "land.node1",
      dept: "land",
      roles: ["node"],
      kind: "node",
    });
    assertError(taken, 409, "CA_IDENTITY_EXISTS");
    const noDept = await call(app, operatorAdmin, "POST", "/v1/ca/identities", {
      enrollmentId: "fund.x",
      dept: "fund",
      roles: ["officer"],
      kind: "user",
    });
    assertError(noDept, 404, "CA_DEPT_UNKNOWN");
  });
});

describe("re-enroll and revoke", () => {
  test("re-enroll signed by the current certificate works; signed by a revoked one it fails", async () => {
    const henry = await enrollDirect(registry, "tax.henry", ["officer"]);
    const { privateKey } = generateP256KeyPair();
    const renewed = await call(app, henry, "POST", "/v1/ca/reenroll", {
      csr: await createCsr(privateKey, "tax.henry"),
    });
    assert.equal(renewed.status, 201, JSON.stringify(renewed.body));
    const next = parseIdentityCert(renewed.body.certificate as string);
    assert.equal(next.enrollmentId, "tax.henry");
    assert.notEqual(next.certId, henry.certId);

    // Retire the old certificate: the revoke answer lists it, the revocation list has it.
    const revoked = await call(app, operatorAdmin, "POST", "/v1/ca/revoke", {
      certId: henry.certId,
      reason: "superseded",
    });
    assert.equal(revoked.status, 200, JSON.stringify(revoked.body));
    assert.deepEqual(
      revoked.body.revoked.map((r: { certId: string }) => r.certId),
      [henry.certId],
    );
    assert.deepEqual(revoked.body.ledger, { status: "not-configured" });

    const again = await call(app, henry, "POST", "/v1/ca/reenroll", {
      csr: await createCsr(generateP256KeyPair().privateKey, "tax.henry"),
    });
    assertError(again, 403, "CERT_REVOKED");

    // The new certificate still works.
    const viaNew = await member(privateKey, renewed.body.certificate as string);
    const list = await call(app, viaNew, "GET", "/v1/ca/revocations?limit=1000");
    assert.equal(list.status, 200);
    assert.ok(list.body.items.some((r: { certId: string }) => r.certId === henry.certId));
  });

  test("revoking an identity revokes all its certificates and is listed; its holder is refused", async () => {
    const ivan = await enrollDirect(registry, "land.ivan", ["officer"]);
    const response = await call(app, operatorAdmin, "POST", "/v1/ca/revoke", {
      enrollmentId: "land.ivan",
      reason: "affiliationChanged",
    });
    assert.equal(response.status, 200, JSON.stringify(response.body));
    assert.equal(response.body.identity.enrollmentId, "land.ivan");
    assert.deepEqual(
      response.body.revoked.map((r: { certId: string }) => r.certId),
      [ivan.certId],
    );
    assertError(await call(app, ivan, "GET", "/v1/ca/revocations"), 403, "CERT_REVOKED");

    const identities = await call(app, taxOfficer, "GET", "/v1/ca/revocations?kind=identity");
    assert.ok(identities.body.items.some((r: { enrollmentId: string }) => r.enrollmentId === "land.ivan"));

    // Pagination: one per page, following the cursor, reaches the same set.
    const seen: string[] = [];
    let url = "/v1/ca/revocations?limit=1";
    for (;;) {
      const page = await call(app, taxOfficer, "GET", url);
      assert.equal(page.status, 200, JSON.stringify(page.body));
      assert.ok(page.body.items.length <= 1);
      seen.push(...page.body.items.map((r: { certId: string }) => r.certId));
      if (page.body.nextCursor === null) break;
      url = `/v1/ca/revocations?limit=1&cursor=${encodeURIComponent(page.body.nextCursor)}`;
    }
    assert.ok(seen.includes(ivan.certId));
    assert.equal(new Set(seen).size, seen.length);
  });

  test("revoke takes exactly one target and a reason the ledger knows", async () => {
    assertError(
      await call(app, operatorAdmin, "POST", "/v1/ca/revoke", { reason: "superseded" }),
      400,
      "CA_BAD_INPUT",
    );
    assertError(
      await call(app, operatorAdmin, "POST", "/v1/ca/revoke", {
        certId: "0".repeat(64),
        enrollmentId: "tax.officer",
        reason: "superseded",
      }),
      400,
      "CA_BAD_INPUT",
    );
    assertError(
      await call(app, operatorAdmin, "POST", "/v1/ca/revoke", {
        enrollmentId: "tax.officer",
        reason: "certificateHold",
      }),
      400,
      "BAD_REQUEST",
    );
    assertError(
      await call(app, operatorAdmin, "POST", "/v1/ca/revoke", {
        certId: "0".repeat(64),
        reason: "superseded",
      }),
      404,
      "NOT_FOUND",
    );
  });
});

describe("ledger records", () => {
  interface Sent {
    type: string;
    payload: unknown;
  }

  /** A stand-in node: answers /v1/status and /v1/tx the way a node does. */
  function fakeNode(answer: (sent: Sent) => { status: number; body: unknown }, sent: Sent[]): FetchLike {
    return async (url, init) => {
      const path = new URL(url).pathname;
      let reply: { status: number; body: unknown };
      if (path === "/v1/status")
        reply = { status: 200, body: { chainId: "test-chain", height: 1, latestHash: "" } };
      else if (path === "/v1/tx") {
        const body = JSON.parse(new TextDecoder().decode(init.body)) as { tx: string };
        const tx = decodeTx(fromBase64(body.tx, "tx"));
        const item = { type: tx.body.type, payload: tx.body.payload };
        sent.push(item);
        reply = answer(item);
      } else reply = { status: 404, body: { error: { code: "NOT_FOUND", message: path } } };
      return { status: reply.status, text: async () => JSON.stringify(reply.body) };
    };
  }

  async function serviceWith(fetch: FetchLike): Promise<FastifyInstance> {
    const identity = {
      signer: operatorAdmin.signer,
      certId: operatorAdmin.certId,
      certDer: operatorAdmin.certDer,
    };
    const client = new CitychainClient({ url: "http://ledger.invalid", identity, fetch });
    return buildCaService({ ca, registry, ledger: new LedgerSync({ client, requestTimeoutMs: 2000 }) });
  }

  test("a department and a revocation are submitted and reported with their height", async () => {
    const sent: Sent[] = [];
    const ledgerApp = await serviceWith(
      fakeNode(
        () => ({
          status: 200,
          body: {
            txId: "ab".repeat(32),
            status: "committed",
            height: 42,
            code: "OK",
            data: { alreadyRevoked: false },
          },
        }),
        sent,
      ),
    );
    try {
      const dept = await call(ledgerApp, operatorAdmin, "POST", "/v1/ca/departments", {
        code: "fund",
        name: "Fund",
      });
      assert.equal(dept.status, 201, JSON.stringify(dept.body));
      assert.deepEqual(dept.body.ledger, {
        status: "committed",
        txId: "ab".repeat(32),
        height: 42,
        alreadyRecorded: false,
      });
      const judy = await enrollDirect(registry, "fund.judy", ["officer"]);
      const revoked = await call(ledgerApp, operatorAdmin, "POST", "/v1/ca/revoke", {
        enrollmentId: "fund.judy",
        reason: "keyCompromise",
      });
      assert.equal(revoked.body.ledger.status, "committed");
      const cert = await call(ledgerApp, operatorAdmin, "POST", "/v1/ca/revoke", {
        certId: judy.certId,
        reason: "keyCompromise",
      });
      assert.deepEqual(cert.body.revoked, [], "already revoked with its identity");
      assert.equal(cert.body.ledger.status, "committed", "the record is sent again all the same");

      assert.deepEqual(
        sent.map((s) => s.type),
        ["config.dept.register", "config.identity.revoke", "config.cert.revoke"],
      );
      assert.deepEqual(sent[0]!.payload, { code: "fund", name: "Fund" });
      const identityPayload = sent[1]!.payload as Record<string, unknown>;
      assert.equal(identityPayload["enrollmentId"], "fund.judy");
      assert.equal(identityPayload["reason"], "keyCompromise");
      assert.equal(typeof identityPayload["revokedAtMs"], "number");
      assert.equal((sent[2]!.payload as Record<string, unknown>)["certId"], judy.certId);
    } finally {
      await ledgerApp.close();
    }
  });

  test("a refused record is reported as failed with the ledger's code; the CA's decision stands", async () => {
    const ledgerApp = await serviceWith(
      fakeNode(
        () => ({
          status: 200,
          body: {
            txId: "cd".repeat(32),
            status: "committed",
            height: 43,
            code: "FORBIDDEN",
            message: "configuration changes need an admin of infocenter",
          },
        }),
        [],
      ),
    );
    try {
      await enrollDirect(registry, "tax.kim", ["officer"]);
      const revoked = await call(ledgerApp, operatorAdmin, "POST", "/v1/ca/revoke", {
        enrollmentId: "tax.kim",
        reason: "privilegeWithdrawn",
      });
      assert.equal(revoked.status, 200);
      assert.equal(revoked.body.ledger.status, "failed");
      assert.equal(revoked.body.ledger.code, "FORBIDDEN");
      assert.equal(registry.getIdentity("tax.kim")?.status, "revoked");
    } finally {
      await ledgerApp.close();
    }
  });

  test("an unreachable ledger leaves the record pending", async () => {
    const unreachable: FetchLike = async () => {
      throw Object.assign(new TypeError("fetch failed"), { cause: { code: "ECONNREFUSED" } });
    };
    const ledgerApp = await serviceWith(unreachable);
    try {
      const dept = await call(ledgerApp, operatorAdmin, "POST", "/v1/ca/departments", {
        code: "market",
        name: "Market Regulation Administration",
      });
      assert.equal(dept.status, 201);
      assert.equal(dept.body.ledger.status, "pending");
      assert.equal(dept.body.ledger.code, "UNREACHABLE");
      assert.ok(registry.listDepartments().some((d) => d.code === "market"));
    } finally {
      await ledgerApp.close();
    }
  });
});

describe("registry schema", () => {
  test("a v1 registry is migrated in place: old rows stay, new ones keep their DER", async () => {
    const migrateDir = mkdtempSync(join(tmpdir(), "citychain-ca-migrate-"));
    try {
      const oldCa = await createRootCa({ dir: migrateDir, validityDays: 30, passphrase });
      let old = openRegistry({ ca: oldCa });
      old.registerDepartment("tax", "Tax");
      const before = await enrollDirect(old, "tax.old", ["officer"]);
      old.close();
      // Turn the file back into what schema v1 wrote.
      const db = new Database(join(migrateDir, "registry.sqlite"));
      db.exec(`DROP INDEX identities_by_revocation;
        ALTER TABLE certificates DROP COLUMN der;
        ALTER TABLE identities DROP COLUMN revoked_ms;
        ALTER TABLE identities DROP COLUMN revoke_reason;
        UPDATE schema_version SET version = 1;`);
      db.close();

      old = openRegistry({ ca: oldCa });
      try {
        assert.equal(old.getCertificate(before.certId)?.der, null, "v1 rows have no DER");
        const after = await enrollDirect(old, "tax.new", ["officer"]);
        assert.deepEqual(old.getCertificate(after.certId)?.der, after.certDer);
        old.revokeIdentity("tax.old", "superseded");
        assert.equal(old.getIdentityRevocation("tax.old")?.reason, "superseded");
      } finally {
        old.close();
      }
      const check = new Database(join(migrateDir, "registry.sqlite"), { readonly: true });
      assert.equal(check.prepare("SELECT version FROM schema_version").pluck().get(), 2);
      check.close();
    } finally {
      rmSync(migrateDir, { recursive: true, force: true });
    }
  });
});
