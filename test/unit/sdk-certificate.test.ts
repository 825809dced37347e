/**
 * The SDK sends its certificate (X-Citychain-Cert) only while the node's ledger does not know it,
 * against a real node over HTTPS: a new identity's request goes without it, is refused with
 * CERT_UNKNOWN and is sent again, newly signed, with it; later requests carry it for a window that
 * doubles while the ledger still does not know it; once the identity's first transaction has put
 * the certificate on the ledger, requests go without it and are never refused. sendCertificate
 * true / false fix the choice.
 */
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { utf8 } from "../../src/core/encoding.ts";
import { authHeaders } from "../../src/core/httpsig.ts";
import { CitychainClient, certificateResendMs, type FetchLike } from "../../src/sdk/client.ts";
import { CitychainError } from "../../src/sdk/errors.ts";
import { buildTx } from "../../src/sdk/tx-builder.ts";
import { startTestNetwork, type TestNetwork } from "../helpers/net.ts";

let net: TestNetwork;

before(async () => {
  net = await startTestNetwork();
});

after(async () => {
  await net?.close();
});

interface Sent {
  readonly path: string;
  readonly withCertificate: boolean;
  readonly nonce: string;
  readonly status: number;
}

/** The test network's fetch, recording each request's path, certificate header, nonce and status. */
function recordingFetch(sent: Sent[]): FetchLike {
  return async (url, init) => {
    const response = await net.fetch(url, init);
    sent.push({
      path: new URL(url).pathname,
      withCertificate: init.headers[authHeaders.cert] !== undefined,
      nonce: /nonce="([^"]+)"/.exec(init.headers[authHeaders.signatureInput] ?? "")?.[1] ?? "",
      status: response.status,
    });
    return response;
  };
}

async function clientOf(
  enrollmentId: string,
  sent: Sent[],
  options: { sendCertificate?: boolean; now?: () => number } = {},
) {
  return new CitychainClient({
    url: net.url,
    identity: await net.identityFor(enrollmentId),
    fetch: recordingFetch(sent),
    ...options,
  });
}

describe("the certificate header, by default", () => {
  it("is added after CERT_UNKNOWN, kept for a window that doubles, and dropped once the ledger knows it", async () => {
    const sent: Sent[] = [];
    let clock = Date.now();
    const client = await clientOf("civil.officer", sent, { now: () => clock });
    const refusedThenResent = [
      [false, 401],
      [true, 200],
    ];
    const shape = () => sent.map((s) => [s.withCertificate, s.status]);

    // Unknown to the ledger: refused without the header, then answered with it.
    const status = await client.status();
    assert.equal(typeof status.height, "number");
    assert.deepEqual(shape(), refusedThenResent);
    assert.notEqual(sent[0]!.nonce, sent[1]!.nonce, "the request is signed again, with a new nonce");

    // Within the window every request carries it: no second refusal.
    sent.length = 0;
    await client.status();
    assert.deepEqual(shape(), [[true, 200]]);

    // After it, one request tries without; the ledger still does not know the certificate, so the
    // next window is twice as long.
    const { initialMs } = certificateResendMs;
    clock += initialMs + 1;
    sent.length = 0;
    await client.status();
    assert.deepEqual(shape(), refusedThenResent);
    clock += initialMs + 1;
    sent.length = 0;
    await client.status();
    assert.deepEqual(shape(), [[true, 200]], "still inside the doubled window");

    // A transaction carries the certificate to the ledger; after the window requests go without it
    // and are answered.
    await client.send("kv.put", { key: "sdk-cert/1", value: utf8("x") });
    clock += initialMs + 1;
    sent.length = 0;
    await client.status();
    await client.send("kv.put", { key: "sdk-cert/2", value: utf8("y") });
    assert.ok(sent.length >= 2);
    assert.ok(
      sent.every((s) => !s.withCertificate && s.status < 400),
      JSON.stringify(sent),
    );
  });

  it("requests refused together open one window, not one doubling each", async () => {
    const sent: Sent[] = [];
    let clock = Date.now();
    const client = await clientOf("social.auditor", sent, { now: () => clock });
    await Promise.all(Array.from({ length: 4 }, () => client.status()));
    assert.equal(sent.filter((s) => s.status === 401).length, 4, "all four went without it");
    clock += certificateResendMs.initialMs + 1;
    sent.length = 0;
    await client.status();
    assert.deepEqual(
      sent.map((s) => [s.withCertificate, s.status]),
      [
        [false, 401],
        [true, 200],
      ],
      "the window was the first one (5 s), not the 40 s four doublings would give",
    );
  });

  it("a transaction's CERT_UNKNOWN (a certificate id the ledger does not know) is not sent again", async () => {
    // The request is authenticated (the officer's certificate is known by now); the transaction
    // names its signer by a certificate id the ledger has never seen.
    const sent: Sent[] = [];
    const client = await clientOf("civil.officer", sent);
    const stranger = await net.identityFor("fund.auditor");
    const tx = await buildTx({
      chainId: await client.chainId(),
      type: "kv.put",
      payload: { key: "sdk-cert/stranger", value: utf8("z") },
      signers: [stranger],
      nowMs: Date.now(),
      certById: true,
    });
    sent.length = 0;
    await assert.rejects(
      client.submitBytes(tx.bytes),
      (error: unknown) => error instanceof CitychainError && error.code === "CERT_UNKNOWN",
    );
    assert.deepEqual(
      sent.map((s) => [s.withCertificate, s.status]),
      [[false, 401]],
    );
  });

  it("a refusal other than CERT_UNKNOWN is not sent again", async () => {
    // A node whose clock is far off answers AUTH_CLOCK_SKEW: sending the certificate changes nothing.
    let calls = 0;
    const skewed: FetchLike = async () => {
      calls++;
      const text = JSON.stringify({ error: { code: "AUTH_CLOCK_SKEW", message: "created is too old" } });
      return { status: 401, text: async () => text };
    };
    const client = new CitychainClient({
      url: net.url,
      identity: await net.identityFor("health.officer"),
      fetch: skewed,
    });
    await assert.rejects(
      client.status(),
      (error: unknown) => error instanceof CitychainError && error.code === "AUTH_CLOCK_SKEW",
    );
    assert.equal(calls, 1);
  });
});

describe("sendCertificate fixes the choice", () => {
  it("true sends it with every request, even when the ledger knows it", async () => {
    const sent: Sent[] = [];
    const client = await clientOf("civil.officer", sent, { sendCertificate: true });
    await client.status();
    await client.status();
    assert.deepEqual(
      sent.map((s) => [s.withCertificate, s.status]),
      [
        [true, 200],
        [true, 200],
      ],
    );
  });

  it("false never sends it: an identity the ledger does not know gets CERT_UNKNOWN", async () => {
    const sent: Sent[] = [];
    const client = await clientOf("land.officer", sent, { sendCertificate: false });
    await assert.rejects(
      client.status(),
      (error: unknown) => error instanceof CitychainError && error.code === "CERT_UNKNOWN",
    );
    assert.deepEqual(
      sent.map((s) => [s.withCertificate, s.status]),
      [[false, 401]],
    );
  });
});
