/**
 * The SDK's Node helpers: loadIdentity signs with node:crypto and refuses a key that is not the
 * certificate's; nodeFetch (undici's request API) carries method, headers and body both ways and
 * trusts only the CA it is given.
 */
import assert from "node:assert/strict";
import crypto from "node:crypto";
import fs from "node:fs";
import https from "node:https";
import net, { type AddressInfo } from "node:net";
import os from "node:os";
import path from "node:path";
import { after, before, describe, test } from "node:test";
import { caCertFileName, caKeyFileName, createRootCa, encryptPrivateKeyPem } from "../../src/ca/index.ts";
import { isCanonicalP256Signature } from "../../src/core/signature.ts";
import { loadIdentity, nodeFetch } from "../../src/sdk/node.ts";

const passphrase = "correct horse battery staple";
let dir: string;

before(async () => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), "citychain-sdk-node-"));
  await createRootCa({ dir, commonName: "infocenter.root-ca", validityDays: 30, passphrase });
});

after(() => fs.rmSync(dir, { recursive: true, force: true }));

describe("loadIdentity", () => {
  test("signs with the certificate's key, low S, and names the certificate by its hash", async () => {
    const certPath = path.join(dir, caCertFileName);
    const identity = await loadIdentity(certPath, path.join(dir, caKeyFileName), { passphrase });
    const cert = new crypto.X509Certificate(fs.readFileSync(certPath));
    assert.deepEqual(Buffer.from(identity.certDer), cert.raw);
    assert.equal(identity.certId, crypto.createHash("sha256").update(cert.raw).digest("hex"));
    const message = new TextEncoder().encode("a request to sign");
    for (let i = 0; i < 16; i++) {
      const signature = await identity.signer.sign(message);
      assert.ok(isCanonicalP256Signature(signature), "every signature is published with low S");
      assert.ok(
        crypto.verify("sha256", message, { key: cert.publicKey, dsaEncoding: "ieee-p1363" }, signature),
      );
    }
  });

  test("refuses a key that does not belong to the certificate", async () => {
    const other = crypto.generateKeyPairSync("ec", { namedCurve: "prime256v1" }).privateKey;
    const otherKeyPath = path.join(dir, "other-key.pem");
    fs.writeFileSync(otherKeyPath, encryptPrivateKeyPem(other, passphrase), { mode: 0o600 });
    await assert.rejects(
      loadIdentity(path.join(dir, caCertFileName), otherKeyPath, { passphrase }),
      /does not belong to the certificate/,
    );
  });
});

describe("nodeFetch", () => {
  let server: https.Server;
  let serverDir: string;
  let url: string;
  let caPem: string;

  before(async () => {
    // A self-signed server certificate for localhost: nodeFetch's only TLS rule is "trust this PEM".
    serverDir = fs.mkdtempSync(path.join(os.tmpdir(), "citychain-sdk-fetch-"));
    ({ caPem } = await selfSigned(serverDir));
    server = https.createServer(
      { cert: caPem, key: fs.readFileSync(path.join(serverDir, "key.pem")) },
      (request, response) => {
        const chunks: Buffer[] = [];
        request.on("data", (chunk: Buffer) => chunks.push(chunk));
        request.on("end", () => {
          const body = Buffer.concat(chunks);
          response.writeHead(request.url === "/missing" ? 404 : 200, { "content-type": "application/json" });
          response.end(
            JSON.stringify({
              method: request.method,
              url: request.url,
              signature: request.headers.signature ?? null,
              body: body.toString("base64"),
            }),
          );
        });
      },
    );
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
    url = `https://localhost:${(server.address() as AddressInfo).port}`;
  });

  after(async () => {
    server.closeAllConnections();
    await new Promise((resolve) => server.close(resolve));
    fs.rmSync(serverDir, { recursive: true, force: true });
  });

  test("sends method, path with query, headers and body; answers status, text and bytes", async () => {
    const fetch = nodeFetch(caPem, 2);
    const body = new Uint8Array([0, 1, 2, 250, 251, 252]);
    const posted = await fetch(`${url}/v1/txs?wait=1`, {
      method: "POST",
      headers: { signature: "sig1=:abc:", "content-type": "application/octet-stream" },
      body,
    });
    assert.equal(posted.status, 200);
    assert.deepEqual(JSON.parse(await posted.text()), {
      method: "POST",
      url: "/v1/txs?wait=1",
      signature: "sig1=:abc:",
      body: Buffer.from(body).toString("base64"),
    });
    const missing = await fetch(`${url}/missing`, { method: "GET", headers: {} });
    assert.equal(missing.status, 404);
    const bytes = new Uint8Array(await missing.arrayBuffer!());
    assert.equal(JSON.parse(new TextDecoder().decode(bytes)).url, "/missing");
  });

  test("does not trust a server whose certificate is not from the given CA", async () => {
    const other = await selfSigned(fs.mkdtempSync(path.join(os.tmpdir(), "citychain-sdk-other-")));
    await assert.rejects(nodeFetch(other.caPem)(`${url}/`, { method: "GET", headers: {} }), TypeError);
  });

  test("fails as fetch does: a refused or reset connection is a TypeError with the cause's code", async () => {
    // Nothing listens on a port just closed.
    const closed = net.createServer();
    await new Promise<void>((resolve) => closed.listen(0, "127.0.0.1", resolve));
    const closedPort = (closed.address() as AddressInfo).port;
    await new Promise((resolve) => closed.close(resolve));
    await assert.rejects(
      nodeFetch(caPem)(`https://localhost:${closedPort}/`, { method: "GET", headers: {} }),
      (error: unknown) =>
        error instanceof TypeError && (error.cause as { code?: string })?.code === "ECONNREFUSED",
    );
    // A server that resets every connection as soon as it arrives.
    const resetting = net.createServer((socket) => socket.resetAndDestroy());
    await new Promise<void>((resolve) => resetting.listen(0, "127.0.0.1", resolve));
    try {
      const port = (resetting.address() as AddressInfo).port;
      await assert.rejects(
        nodeFetch(caPem)(`https://localhost:${port}/`, { method: "GET", headers: {} }),
        (error: unknown) => error instanceof TypeError && error.cause instanceof Error,
      );
    } finally {
      await new Promise((resolve) => resetting.close(resolve));
    }
  });
});

/** A self-signed P-256 server certificate for localhost, made with @peculiar/x509. */
async function selfSigned(into: string): Promise<{ caPem: string }> {
  const { x509 } = await import("../../src/ca/x509.ts");
  const keys = (await crypto.webcrypto.subtle.generateKey({ name: "ECDSA", namedCurve: "P-256" }, true, [
    "sign",
    "verify",
  ])) as CryptoKeyPair;
  const cert = await x509.X509CertificateGenerator.createSelfSigned({
    serialNumber: "01",
    name: "CN=localhost",
    notBefore: new Date(Date.now() - 60_000),
    notAfter: new Date(Date.now() + 86_400_000),
    keys,
    signingAlgorithm: { name: "ECDSA", hash: "SHA-256" },
    extensions: [new x509.SubjectAlternativeNameExtension([{ type: "dns", value: "localhost" }])],
  });
  const pkcs8 = Buffer.from(await crypto.webcrypto.subtle.exportKey("pkcs8", keys.privateKey));
  const keyPem = crypto.createPrivateKey({ key: pkcs8, format: "der", type: "pkcs8" }).export({
    format: "pem",
    type: "pkcs8",
  });
  fs.writeFileSync(path.join(into, "key.pem"), keyPem, { mode: 0o600 });
  return { caPem: cert.toString("pem") };
}
