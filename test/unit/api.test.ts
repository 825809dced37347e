/**
 * The node's HTTP API against a real node over TLS (in-process, one network for the whole file):
 * request authentication (RFC 9421 signatures, certificates, replay and clock windows), revocation
 * taking effect on requests and transactions, transaction admission (forged signatures, replays,
 * expiry, unknown types, roles), malformed input, and the OpenAPI document. Every case asserts the
 * exact HTTP status and the stable error code (and the field, where the API names one).
 *
 * Raw requests are signed with signRequest and sent with undici, so they can be tampered with after
 * signing; the SDK client is used where the test is about behaviour, not about the wire.
 */
import assert from "node:assert/strict";
import { sign as cryptoSign, X509Certificate } from "node:crypto";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { after, before, describe, it } from "node:test";
import { Agent, fetch as undiciFetch } from "undici";
import { createCsr, createRootCa } from "../../src/ca/authority.ts";
import { generateP256KeyPair } from "../../src/ca/keys.ts";
import { openRegistry } from "../../src/ca/registry.ts";
import { type Canonical, fromBase64, fromHex, toBase64, utf8 } from "../../src/core/encoding.ts";
import { sha256Hex } from "../../src/core/hash.ts";
import { signRequest } from "../../src/core/httpsig.ts";
import { normalizeP256Signature, type Signer } from "../../src/core/signature.ts";
import { decodeTx, encodeTx, encodeTxBody, signingBytes } from "../../src/core/tx.ts";
import { CitychainError } from "../../src/sdk/errors.ts";
import { WebCryptoSigner } from "../../src/sdk/signer.ts";
import { buildTx, type TxIdentity } from "../../src/sdk/tx-builder.ts";
import { startTestNetwork, type TestNetwork } from "../helpers/net.ts";

const p256Order = 0xffffffff00000000ffffffffffffffffbce6faada7179e84f3b9cac2fc632551n;

interface ApiError {
  readonly code: string;
  readonly message: string;
  readonly field?: string;
}

interface Reply {
  readonly status: number;
  readonly contentType: string | null;
  readonly body: { readonly error?: ApiError; readonly [key: string]: unknown } | null;
}

interface RequestOptions {
  /** A JSON body (serialised here) or raw body bytes. */
  readonly json?: unknown;
  readonly bodyBytes?: Uint8Array;
  readonly nowMs?: number;
  /** Sign with this key instead of the identity's own. */
  readonly signer?: Signer;
  /** Send the certificate in X-Citychain-Cert (default true). */
  readonly sendCertificate?: boolean;
}

let net: TestNetwork;
let agent: Agent;
let chainId: string;

before(async () => {
  // A block interval long enough that two transactions sent back to back share a block (revocation test).
  net = await startTestNetwork({ blockIntervalMs: 150 });
  agent = new Agent({ connect: { ca: net.caPem } });
  chainId = net.layout.chainId;
});

after(async () => {
  await agent?.close();
  await net?.close();
});

async function signHeaders(
  identity: TxIdentity,
  method: "GET" | "POST",
  target: string,
  options: RequestOptions = {},
): Promise<{ headers: Record<string, string>; body: Uint8Array | undefined }> {
  const body =
    options.bodyBytes ?? (options.json === undefined ? undefined : utf8(JSON.stringify(options.json)));
  const headers = await signRequest({
    method,
    url: target,
    ...(body === undefined ? {} : { body }),
    signer: options.signer ?? identity.signer,
    certId: identity.certId,
    ...(options.sendCertificate === false ? {} : { certDer: identity.certDer }),
    nowMs: options.nowMs ?? Date.now(),
  });
  if (body !== undefined) headers["content-type"] = "application/json";
  return { headers, body };
}

async function send(
  method: string,
  target: string,
  headers: Record<string, string>,
  body?: Uint8Array,
): Promise<Reply> {
  const response = await undiciFetch(net.url + target, {
    method,
    headers,
    ...(body === undefined ? {} : { body }),
    dispatcher: agent,
  });
  const text = await response.text();
  return {
    status: response.status,
    contentType: response.headers.get("content-type"),
    body: text.length === 0 ? null : (JSON.parse(text) as Reply["body"]),
  };
}

async function call(
  identity: TxIdentity,
  method: "GET" | "POST",
  target: string,
  options: RequestOptions = {},
): Promise<Reply> {
  const { headers, body } = await signHeaders(identity, method, target, options);
  return send(method, target, headers, body);
}

function assertError(reply: Reply, status: number, code: string, field?: string): void {
  const shown = JSON.stringify(reply.body);
  assert.equal(reply.status, status, `HTTP status; body ${shown}`);
  assert.match(reply.contentType ?? "", /^application\/json/, "errors are JSON");
  const error = reply.body?.error;
  assert.ok(error !== undefined, `an {"error": …} body, got ${shown}`);
  assert.equal(error.code, code, `error code; body ${shown}`);
  assert.ok(typeof error.message === "string" && error.message.length > 0, "a message");
  if (field !== undefined) assert.equal(error.field, field, `error field; body ${shown}`);
}

function postTx(identity: TxIdentity, tx: Uint8Array, wait = true): Promise<Reply> {
  return call(identity, "POST", "/v1/tx", { json: { tx: toBase64(tx), ...(wait ? { wait: true } : {}) } });
}

async function makeTx(
  identity: TxIdentity,
  type: string,
  payload: Canonical,
  options: { nowMs?: number; ttlMs?: number } = {},
): Promise<{ id: string; bytes: Uint8Array }> {
  return buildTx({
    chainId,
    type,
    payload,
    signers: [identity],
    nowMs: options.nowMs ?? Date.now(),
    ...(options.ttlMs === undefined ? {} : { ttlMs: options.ttlMs }),
  });
}

/** A P-256 key that belongs to nobody in the network. */
function strangerSigner(): Signer {
  const { privateKey, publicKey } = generateP256KeyPair();
  return {
    publicKeySpki: new Uint8Array(publicKey.export({ format: "der", type: "spki" })),
    async sign(message: Uint8Array): Promise<Uint8Array> {
      const raw = cryptoSign("sha256", message, { key: privateKey, dsaEncoding: "ieee-p1363" });
      return normalizeP256Signature(new Uint8Array(raw));
    },
  };
}

async function txIdsInBlock(height: number): Promise<string[]> {
  const client = await net.clientFor("tax.officer");
  const block = await client.block(height);
  assert.equal(block.header.height, height);
  return block.txs.map((b64) => decodeTx(fromBase64(b64)).id);
}

async function latestHeight(): Promise<number> {
  return (await (await net.clientFor("tax.officer")).status()).height;
}

// ---------------------------------------------------------------------------------------------

describe("request authentication", () => {
  it("a member's signed GET /v1/status answers 200 and names the caller", async () => {
    const identity = await net.identityFor("tax.officer");
    const reply = await call(identity, "GET", "/v1/status");
    assert.equal(reply.status, 200, JSON.stringify(reply.body));
    const body = reply.body as {
      chainId: string;
      height: number;
      caller: Record<string, unknown>;
      network: unknown;
      storage: { treeHeight: number; heldTreeNodes: number; heldTreeBytes: number };
    };
    assert.equal(body.chainId, chainId);
    assert.equal(body.network, null, "a solo node has no peer network to report");
    assert.ok(Number.isSafeInteger(body.height) && body.height >= 0);
    // The state tree on disk is at most 32 blocks behind; nodes are held in memory only while it is.
    const storage = body.storage;
    assert.ok(
      storage.treeHeight <= body.height && body.height - storage.treeHeight <= 32,
      JSON.stringify(storage),
    );
    if (storage.heldTreeNodes > 0) assert.ok(storage.treeHeight < body.height, JSON.stringify(storage));
    assert.equal(storage.heldTreeBytes > 0, storage.heldTreeNodes > 0);
    assert.deepEqual(body.caller, {
      certId: identity.certId,
      enrollmentId: "tax.officer",
      dept: "tax",
      roles: ["officer"],
    });
    // The SDK client sees the same.
    const viaSdk = await (await net.clientFor("civil.admin")).status();
    assert.deepEqual((viaSdk as { caller?: unknown }).caller, {
      certId: (await net.identityFor("civil.admin")).certId,
      enrollmentId: "civil.admin",
      dept: "civil",
      roles: ["admin", "officer"],
    });
  });

  it("an unsigned request: 401 AUTH_MISSING", async () => {
    assertError(await send("GET", "/v1/status", {}), 401, "AUTH_MISSING", "signature-input");
    // Even for a route that does not exist: nothing is answered to strangers but "sign first".
    assertError(await send("GET", "/v1/no-such-route", {}), 401, "AUTH_MISSING");
  });

  it("a certificate from a foreign root (same claims, another CA): 401 CERT_UNTRUSTED", async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), "citychain-foreign-ca-"));
    try {
      const ca = await createRootCa({
        dir: path.join(dir, "ca"),
        validityDays: 30,
        passphrase: "a foreign passphrase",
        dept: "infocenter",
      });
      const registry = openRegistry({ ca });
      let certPem: string;
      const keys = generateP256KeyPair();
      try {
        registry.registerDepartment("tax", "Taxation Bureau");
        const input = { enrollmentId: "tax.officer", dept: "tax", roles: ["officer"], kind: "user" } as const;
        const { secret } = await registry.registerIdentity(input);
        certPem = await registry.enroll(
          "tax.officer",
          secret,
          await createCsr(keys.privateKey, "tax.officer"),
        );
      } finally {
        registry.close();
      }
      const certDer = new Uint8Array(new X509Certificate(certPem).raw);
      const pkcs8 = new Uint8Array(keys.privateKey.export({ format: "der", type: "pkcs8" }));
      const spki = new Uint8Array(keys.publicKey.export({ format: "der", type: "spki" }));
      const foreign: TxIdentity = {
        signer: await WebCryptoSigner.fromPkcs8(pkcs8, spki),
        certDer,
        certId: sha256Hex(certDer),
      };
      assertError(await call(foreign, "GET", "/v1/status"), 401, "CERT_UNTRUSTED");
      // Its transactions are refused the same way, even when a trusted member relays them.
      const tx = await makeTx(foreign, "kv.put", { key: "foreign", value: utf8("x") });
      assertError(await postTx(await net.identityFor("tax.officer"), tx.bytes), 401, "CERT_UNTRUSTED");
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });

  it("a signature made by another key than the certificate's: 401 AUTH_BAD_SIGNATURE", async () => {
    const identity = await net.identityFor("tax.officer");
    const reply = await call(identity, "GET", "/v1/status", { signer: strangerSigner() });
    assertError(reply, 401, "AUTH_BAD_SIGNATURE", "signature");
  });

  it("a certificate the ledger does not know, referred to by id only: 401 CERT_UNKNOWN", async () => {
    // market.auditor has never sent its certificate to the ledger.
    const identity = await net.identityFor("market.auditor");
    assertError(
      await call(identity, "GET", "/v1/status", { sendCertificate: false }),
      401,
      "CERT_UNKNOWN",
      "x-citychain-cert",
    );
    assert.equal((await call(identity, "GET", "/v1/status")).status, 200, "with the certificate it works");
  });

  it("a body changed after signing: 401 AUTH_BAD_SIGNATURE on content-digest", async () => {
    const identity = await net.identityFor("tax.officer");
    const { headers } = await signHeaders(identity, "POST", "/v1/tx", { json: { tx: "AAAA" } });
    const tampered = utf8(JSON.stringify({ tx: "AAAB" }));
    assertError(await send("POST", "/v1/tx", headers, tampered), 401, "AUTH_BAD_SIGNATURE", "content-digest");
    // The digest recomputed by the attacker does not help: the signature covers it.
    const forged = {
      ...headers,
      "content-digest": `sha-256=:${Buffer.from(fromHex(sha256Hex(tampered))).toString("base64")}:`,
    };
    assertError(await send("POST", "/v1/tx", forged, tampered), 401, "AUTH_BAD_SIGNATURE", "signature");
  });

  it("a signed request sent to another path: 401 AUTH_BAD_SIGNATURE", async () => {
    const identity = await net.identityFor("tax.officer");
    const { headers } = await signHeaders(identity, "GET", "/v1/status");
    assertError(await send("GET", "/v1/blocks/latest", headers), 401, "AUTH_BAD_SIGNATURE", "signature");
  });

  it("the same signed request sent twice: the second is 401 AUTH_REPLAYED", async () => {
    const identity = await net.identityFor("tax.officer");
    const { headers } = await signHeaders(identity, "GET", "/v1/status");
    const first = await send("GET", "/v1/status", headers);
    assert.equal(first.status, 200, JSON.stringify(first.body));
    assertError(await send("GET", "/v1/status", headers), 401, "AUTH_REPLAYED", "signature-input");
  });

  it("a request created 10 minutes ago or 10 minutes ahead: 401 AUTH_CLOCK_SKEW", async () => {
    const identity = await net.identityFor("tax.officer");
    const old = await call(identity, "GET", "/v1/status", { nowMs: Date.now() - 10 * 60_000 });
    assertError(old, 401, "AUTH_CLOCK_SKEW", "signature-input");
    const ahead = await call(identity, "GET", "/v1/status", { nowMs: Date.now() + 10 * 60_000 });
    assertError(ahead, 401, "AUTH_CLOCK_SKEW", "signature-input");
  });
});

describe("revocation", () => {
  it("config.identity.revoke by the information center's admin: the identity's requests get 403 CERT_REVOKED, its transactions are refused", async () => {
    const admin = await net.clientFor("infocenter.admin");
    const auditor = await net.identityFor("tax.auditor");
    const officer = await net.identityFor("tax.officer");
    assert.equal((await call(auditor, "GET", "/v1/status")).status, 200, "works before the revocation");
    const signedBefore = await makeTx(auditor, "kv.put", { key: "before", value: utf8("x") });
    const signedBefore2 = await makeTx(auditor, "kv.put", { key: "before-2", value: utf8("x") });

    // The revocation and a transaction by the revoked identity, sent back to back: the second is
    // admitted while the identity is still valid, then refused when its block executes after the
    // revocation (or refused at admission, if the revocation's block came first). Never committed.
    const revoke = await admin.buildTx("config.identity.revoke", {
      enrollmentId: "tax.auditor",
      reason: "keyCompromise",
      revokedAtMs: Date.now(),
    });
    const revokeReply = await postTx(await net.identityFor("infocenter.admin"), revoke.bytes, false);
    assert.equal(revokeReply.status, 202, JSON.stringify(revokeReply.body));
    const raced = await postTx(officer, signedBefore.bytes, true);
    assertError(raced, 403, "CERT_REVOKED");
    const revoked = await admin.tx(revoke.id);
    assert.equal(revoked.status, "committed");
    assert.equal(revoked.code, "OK");
    assert.deepEqual(revoked.data, { alreadyRevoked: false });

    assertError(await call(auditor, "GET", "/v1/status"), 403, "CERT_REVOKED");
    assertError(await postTx(auditor, signedBefore2.bytes), 403, "CERT_REVOKED");
    // Relayed by a valid member, the transaction itself is refused.
    assertError(await postTx(officer, signedBefore2.bytes), 403, "CERT_REVOKED");
    for (const id of [signedBefore.id, signedBefore2.id]) {
      const status = await call(officer, "GET", `/v1/tx/${id}`);
      assert.ok(
        status.status === 404 ||
          (status.body?.["status"] === "rejected" && status.body["code"] === "CERT_REVOKED"),
        `never committed: ${JSON.stringify(status.body)}`,
      );
    }
    // Others of the same department are unaffected; revoking again changes nothing.
    assert.equal((await call(officer, "GET", "/v1/status")).status, 200);
    const again = await admin.send("config.identity.revoke", {
      enrollmentId: "tax.auditor",
      reason: "superseded",
      revokedAtMs: Date.now(),
    });
    assert.deepEqual(again.data, { alreadyRevoked: true });
  });

  it("config.cert.revoke by certificate id: that certificate gets 403 CERT_REVOKED", async () => {
    const admin = await net.clientFor("infocenter.admin");
    const health = await net.identityFor("health.officer");
    const tx = await makeTx(health, "kv.put", { key: "after-cert-revoke", value: utf8("x") });
    assert.equal((await call(health, "GET", "/v1/status")).status, 200);
    const result = await admin.send("config.cert.revoke", {
      certId: health.certId,
      reason: "affiliationChanged",
      revokedAtMs: Date.now(),
    });
    assert.equal(result.status, "committed");
    assert.equal(result.code, "OK");
    assertError(await call(health, "GET", "/v1/status"), 403, "CERT_REVOKED");
    assertError(await postTx(await net.identityFor("health.admin"), tx.bytes), 403, "CERT_REVOKED");
    assertError(await call(health, "GET", `/v1/tx/${tx.id}`), 403, "CERT_REVOKED");
    assertError(
      await call(await net.identityFor("health.admin"), "GET", `/v1/tx/${tx.id}`),
      404,
      "TX_NOT_FOUND",
    );
  });

  it("a configuration transaction by a non-admin (or an admin of another department) commits with FORBIDDEN and changes nothing", async () => {
    for (const who of ["tax.officer", "tax.admin"]) {
      const client = await net.clientFor(who);
      const tx = await client.buildTx("config.identity.revoke", {
        enrollmentId: "civil.officer",
        reason: "keyCompromise",
        revokedAtMs: Date.now(),
      });
      const reply = await postTx(client.identity, tx.bytes);
      assert.equal(reply.status, 200, JSON.stringify(reply.body));
      assert.equal(reply.body?.["status"], "committed");
      assert.equal(reply.body?.["code"], "FORBIDDEN", who);
      await assert.rejects(
        client.send("config.cert.revoke", {
          certId: (await net.identityFor("civil.officer")).certId,
          reason: "keyCompromise",
          revokedAtMs: Date.now(),
        }),
        (error: unknown) => error instanceof CitychainError && error.code === "FORBIDDEN",
      );
    }
    assert.equal((await call(await net.identityFor("civil.officer"), "GET", "/v1/status")).status, 200);
  });
});

describe("transaction admission", () => {
  it("a forged signature (valid envelope, low-S signature by another key): 401 SIGNATURE_INVALID, nothing committed", async () => {
    const officer = await net.identityFor("tax.officer");
    const bodyBytes = encodeTxBody({
      chainId,
      type: "kv.put",
      payload: { key: "forged", value: utf8("x") },
      nonce: globalThis.crypto.getRandomValues(new Uint8Array(16)),
      expiresAtMs: Date.now() + 60_000,
      sender: fromHex(officer.certId),
    });
    const signature = await strangerSigner().sign(signingBytes(bodyBytes));
    const forged = encodeTx(bodyBytes, [{ signer: { kind: "cert", der: officer.certDer }, signature }]);
    const id = decodeTx(forged).id;
    assertError(await postTx(officer, forged), 401, "SIGNATURE_INVALID", "signatures[0]");
    // Let a block pass, then look again.
    await (await net.clientFor("tax.officer")).send("kv.put", { key: "after-forgery", value: utf8("y") });
    assertError(await call(officer, "GET", `/v1/tx/${id}`), 404, "TX_NOT_FOUND", "id");
    const state = await (await net.clientFor("tax.officer")).state("kv/tax/forged");
    assert.equal(state.value, null);
  });

  it("a replayed transaction returns its committed status and is never committed twice", async () => {
    const officer = await net.identityFor("tax.officer");
    const tx = await makeTx(officer, "kv.put", { key: "replay", value: utf8("once") });
    const first = await postTx(officer, tx.bytes);
    assert.equal(first.status, 200, JSON.stringify(first.body));
    assert.equal(first.body?.["status"], "committed");
    assert.equal(first.body?.["code"], "OK");
    assert.equal(first.body?.["txId"], tx.id);
    const height = first.body?.["height"] as number;

    const second = await postTx(officer, tx.bytes);
    assert.equal(second.status, 200, JSON.stringify(second.body));
    assert.deepEqual(second.body, first.body, "the same status, same height and index");
    // A copy with a fresh signature has the same id (the id excludes signatures): still the same one.
    const resigned = await buildTx({
      chainId,
      type: "kv.put",
      payload: { key: "replay", value: utf8("once") },
      signers: [officer],
      nowMs: decodeTx(tx.bytes).body.expiresAtMs - 3_600_000,
      nonce: decodeTx(tx.bytes).body.nonce,
    });
    assert.equal(resigned.id, tx.id);
    assert.notDeepEqual(resigned.bytes, tx.bytes);
    const third = await postTx(officer, resigned.bytes, false);
    assert.deepEqual(third.body, first.body);

    // Move the chain on, then check every block since.
    await (await net.clientFor("tax.officer")).send("kv.put", { key: "after-replay", value: utf8("z") });
    const latest = await latestHeight();
    assert.ok(latest > height);
    const inBlock = await txIdsInBlock(height);
    assert.equal(inBlock.filter((id) => id === tx.id).length, 1, "once in its block");
    for (let h = height + 1; h <= latest; h++) {
      assert.ok(!(await txIdsInBlock(h)).includes(tx.id), `not again in block ${h}`);
    }
  });

  it("an expired transaction: 400 TX_EXPIRED; one that expires too far ahead: 400 TX_EXPIRY_TOO_FAR", async () => {
    const officer = await net.identityFor("tax.officer");
    const expired = await makeTx(
      officer,
      "kv.put",
      { key: "late", value: utf8("x") },
      {
        nowMs: Date.now() - 2 * 3_600_000,
        ttlMs: 3_600_000,
      },
    );
    assertError(await postTx(officer, expired.bytes), 400, "TX_EXPIRED", "expiresAtMs");
    const farAhead = await makeTx(
      officer,
      "kv.put",
      { key: "early", value: utf8("x") },
      { ttlMs: 48 * 3_600_000 },
    );
    assertError(await postTx(officer, farAhead.bytes), 400, "TX_EXPIRY_TOO_FAR", "expiresAtMs");
    assertError(await call(officer, "GET", `/v1/tx/${expired.id}`), 404, "TX_NOT_FOUND");
  });

  it("a transaction for another chain: 400 TX_WRONG_CHAIN", async () => {
    const officer = await net.identityFor("tax.officer");
    const tx = await buildTx({
      chainId: "another-chain",
      type: "kv.put",
      payload: { key: "k", value: utf8("x") },
      signers: [officer],
      nowMs: Date.now(),
    });
    assertError(await postTx(officer, tx.bytes), 400, "TX_WRONG_CHAIN", "chainId");
  });

  it("envelope faults at admission: high-S 400 BAD_SIGNATURE_FORMAT, wrong sender 400 TX_MALFORMED, oversized 413 TX_TOO_LARGE", async () => {
    const officer = await net.identityFor("tax.officer");
    const tx = decodeTx((await makeTx(officer, "kv.put", { key: "envelope", value: utf8("x") })).bytes);
    const low = tx.signatures[0]!.signature;
    const high = low.slice();
    const s = BigInt(`0x${Buffer.from(low.slice(32)).toString("hex")}`);
    high.set(Buffer.from((p256Order - s).toString(16).padStart(64, "0"), "hex"), 32);
    const highTx = encodeTx(tx.bodyBytes, [{ signer: tx.signatures[0]!.signer, signature: high }]);
    assertError(await postTx(officer, highTx), 400, "BAD_SIGNATURE_FORMAT", "signatures[0].signature");
    // The body names tax.officer as sender; a signature by civil.officer first is not the sender's.
    const civil = await net.identityFor("civil.officer");
    const civilSignature = await civil.signer.sign(signingBytes(tx.bodyBytes));
    const wrongSender = encodeTx(tx.bodyBytes, [
      { signer: { kind: "cert", der: civil.certDer }, signature: civilSignature },
    ]);
    assertError(await postTx(officer, wrongSender), 400, "TX_MALFORMED", "signatures[0]");
    const big = await makeTx(officer, "kv.put", { key: "big", value: new Uint8Array(200 * 1024) });
    assertError(await postTx(officer, big.bytes), 413, "TX_TOO_LARGE");
    for (const id of [tx.id, big.id])
      assertError(await call(officer, "GET", `/v1/tx/${id}`), 404, "TX_NOT_FOUND");
  });

  it("an unknown transaction type is committed as failed with TX_UNKNOWN_TYPE (its id is spent)", async () => {
    const officer = await net.identityFor("tax.officer");
    const tx = await makeTx(officer, "no.such-type", { anything: 1 });
    const reply = await postTx(officer, tx.bytes);
    assert.equal(reply.status, 200, JSON.stringify(reply.body));
    assert.equal(reply.body?.["status"], "committed");
    assert.equal(reply.body?.["code"], "TX_UNKNOWN_TYPE");
    assert.equal(reply.body?.["data"], null);
    const height = reply.body?.["height"] as number;
    assert.ok((await txIdsInBlock(height)).includes(tx.id));
  });

  it("kv.put by an auditor is committed as failed with FORBIDDEN and writes nothing", async () => {
    const auditor = await net.identityFor("land.auditor");
    const tx = await makeTx(auditor, "kv.put", { key: "audited", value: utf8("x") });
    const reply = await postTx(auditor, tx.bytes);
    assert.equal(reply.status, 200, JSON.stringify(reply.body));
    assert.equal(reply.body?.["status"], "committed");
    assert.equal(reply.body?.["code"], "FORBIDDEN");
    const state = await (await net.clientFor("land.officer")).state("kv/land/audited");
    assert.equal(state.value, null);
    // The same write by an officer of the department succeeds (the role, not the key, was at fault).
    await (await net.clientFor("land.officer")).send("kv.put", { key: "audited", value: utf8("x") });
    assert.deepEqual((await (await net.clientFor("land.auditor")).state("kv/land/audited")).value, utf8("x"));
  });
});

describe("malformed input", () => {
  it('POST /v1/tx {"tx": 123}: 400 BAD_REQUEST naming field tx (no coercion to "123")', async () => {
    const reply = await call(await net.identityFor("tax.officer"), "POST", "/v1/tx", { json: { tx: 123 } });
    assertError(reply, 400, "BAD_REQUEST", "tx");
  });

  it('POST /v1/tx {"tx": "!!"}, a missing tx, a non-boolean wait: 400 BAD_REQUEST naming the field', async () => {
    const identity = await net.identityFor("tax.officer");
    assertError(await call(identity, "POST", "/v1/tx", { json: { tx: "!!" } }), 400, "BAD_REQUEST", "tx");
    assertError(await call(identity, "POST", "/v1/tx", { json: {} }), 400, "BAD_REQUEST", "tx");
    assertError(
      await call(identity, "POST", "/v1/tx", { json: { tx: "AAAA", wait: "yes" } }),
      400,
      "BAD_REQUEST",
      "wait",
    );
  });

  it("tx bytes that are not CBOR: 400 BAD_ENCODING; CBOR that is not a transaction: 400 TX_MALFORMED", async () => {
    const identity = await net.identityFor("tax.officer");
    const notCbor = toBase64(utf8("\u00ff\u00ffhello"));
    assertError(await call(identity, "POST", "/v1/tx", { json: { tx: notCbor } }), 400, "BAD_ENCODING");
    const notTx = toBase64(fromHex("182a")); // the integer 42
    assertError(await call(identity, "POST", "/v1/tx", { json: { tx: notTx } }), 400, "TX_MALFORMED");
  });

  it("a body that is not JSON: 400 BAD_REQUEST; not application/json: 415 UNSUPPORTED_MEDIA_TYPE", async () => {
    const identity = await net.identityFor("tax.officer");
    const notJson = await signHeaders(identity, "POST", "/v1/tx", { bodyBytes: utf8("{not json") });
    assertError(await send("POST", "/v1/tx", notJson.headers, notJson.body), 400, "BAD_REQUEST");
    const text = await signHeaders(identity, "POST", "/v1/tx", { bodyBytes: utf8("tx=AAAA") });
    const headers = { ...text.headers, "content-type": "text/plain" };
    assertError(await send("POST", "/v1/tx", headers, text.body), 415, "UNSUPPORTED_MEDIA_TYPE");
  });

  it("a body over the limit: 413 REQUEST_TOO_LARGE", async () => {
    const limit = net.node.api.initialConfig.bodyLimit ?? 0;
    assert.ok(limit > 0);
    const identity = await net.identityFor("tax.officer");
    const bodyBytes = utf8(JSON.stringify({ tx: "A".repeat(limit) }));
    assertError(await call(identity, "POST", "/v1/tx", { bodyBytes }), 413, "REQUEST_TOO_LARGE");
  });

  it("an unknown route: 404 NOT_FOUND as JSON", async () => {
    const reply = await call(await net.identityFor("tax.officer"), "GET", "/v1/no-such-route");
    assertError(reply, 404, "NOT_FOUND");
  });

  it("GET /v1/blocks/abc: 400 BAD_REQUEST naming ref; /v1/blocks/999999: 404 BLOCK_NOT_FOUND", async () => {
    const identity = await net.identityFor("tax.officer");
    assertError(await call(identity, "GET", "/v1/blocks/abc"), 400, "BAD_REQUEST", "ref");
    assertError(await call(identity, "GET", "/v1/blocks/999999"), 404, "BLOCK_NOT_FOUND", "ref");
    assertError(await call(identity, "GET", `/v1/blocks/${"ab".repeat(32)}`), 404, "BLOCK_NOT_FOUND", "ref");
    const genesis = await call(identity, "GET", "/v1/blocks/0");
    assert.equal(genesis.status, 200);
    assert.equal((genesis.body?.["header"] as { height?: number } | undefined)?.height, 0);
  });

  it("GET /v1/tx/<unknown id>: 404 TX_NOT_FOUND; a malformed id: 400 BAD_REQUEST", async () => {
    const identity = await net.identityFor("tax.officer");
    assertError(await call(identity, "GET", `/v1/tx/${"0f".repeat(32)}`), 404, "TX_NOT_FOUND", "id");
    assertError(await call(identity, "GET", `/v1/tx/${"0F".repeat(32)}`), 400, "BAD_REQUEST", "id");
  });

  it("GET /v1/state without a key: 400 BAD_REQUEST naming key", async () => {
    assertError(
      await call(await net.identityFor("tax.officer"), "GET", "/v1/state"),
      400,
      "BAD_REQUEST",
      "key",
    );
  });
});

/** Routes as Fastify registered them, "METHOD /path/:param", from its route tree printout. */
function registeredRoutes(): string[] {
  const routes: string[] = [];
  const prefixes: string[] = [];
  for (const line of net.node.api.printRoutes({ commonPrefix: false }).split("\n")) {
    const match = /^((?:│ {3}| {4})*)(?:├── |└── )(.*?)(?: \(([A-Z, ]+)\))?$/.exec(line);
    if (match === null) continue;
    prefixes.length = match[1]!.length / 4;
    prefixes.push(match[2]!);
    for (const method of match[3]?.split(", ") ?? []) {
      if (method !== "HEAD") routes.push(`${method} ${prefixes.join("")}`);
    }
  }
  return routes.sort();
}

describe("OpenAPI document", () => {
  it("GET /v1/openapi.json is OpenAPI 3.1 and lists every /v1 route", async () => {
    const reply = await call(await net.identityFor("tax.officer"), "GET", "/v1/openapi.json");
    assert.equal(reply.status, 200);
    const doc = reply.body as {
      openapi: string;
      info: { title: string; version: string };
      paths: Record<string, Record<string, { responses?: Record<string, unknown>; requestBody?: unknown }>>;
      components: { securitySchemes: Record<string, unknown> };
    };
    assert.match(doc.openapi, /^3\.1\./);
    assert.equal(typeof doc.info.title, "string");
    assert.ok(doc.components.securitySchemes["httpSignature"] !== undefined);
    const documented = Object.entries(doc.paths)
      .flatMap(([p, ops]) =>
        Object.keys(ops)
          .filter((m) => m !== "head")
          .map((m) => `${m.toUpperCase()} ${p.replace(/\{(\w+)\}/g, ":$1")}`),
      )
      .sort();
    const expected = [
      "GET /v1/blocks/:ref",
      "GET /v1/blocks/latest",
      "GET /v1/state",
      "GET /v1/status",
      "GET /v1/tx/:id",
      "POST /v1/tx",
      "POST /v1/txs",
    ];
    for (const route of expected) assert.ok(documented.includes(route), `${route} is documented`);
    // Every route the server has is documented, except the document itself.
    const registered = registeredRoutes().filter((r) => r !== "GET /v1/openapi.json");
    assert.ok(registered.length >= expected.length, `parsed routes: ${registered.join(", ")}`);
    assert.deepEqual(documented, registered);
    for (const route of documented) {
      const [method, p] = route.split(" ") as [string, string];
      const op = doc.paths[p.replace(/:(\w+)/g, "{$1}")]![method.toLowerCase()]!;
      assert.ok(op.responses !== undefined && Object.keys(op.responses).length > 0, `${route} has responses`);
      if (method === "POST") assert.ok(op.requestBody !== undefined, `${route} has a request body`);
    }
  });
});

describe("after all of the above", () => {
  it("the node still answers /v1/status and still commits", async () => {
    const client = await net.clientFor("civil.officer");
    const before = await client.status();
    const result = await client.send("kv.put", { key: "still-alive", value: utf8("yes") });
    assert.equal(result.code, "OK");
    const afterStatus = await client.status();
    assert.ok(afterStatus.height > before.height);
  });
});
