import assert from "node:assert/strict";
import {
  createPublicKey,
  sign as cryptoSign,
  verify as cryptoVerify,
  generateKeyPairSync,
} from "node:crypto";
import { describe, it } from "node:test";
import { RequestVerifier } from "../../src/api/request-auth.ts";
import { utf8 } from "../../src/core/encoding.ts";
import { CodedError, type ErrorCode } from "../../src/core/errors.ts";
import { sha256Hex } from "../../src/core/hash.ts";
import {
  buildSignatureBase,
  contentDigest,
  type ParsedSignedRequest,
  parseSignedRequest,
  type RequestHeaders,
  type SignRequestInput,
  serializeSignatureParams,
  signRequest,
} from "../../src/core/httpsig.ts";
import { isCanonicalP256Signature, normalizeP256Signature, type Signer } from "../../src/core/signature.ts";

const p256Order = 0xffffffff00000000ffffffffffffffffbce6faada7179e84f3b9cac2fc632551n;

interface TestIdentity {
  readonly signer: Signer;
  readonly spki: Uint8Array;
  readonly certDer: Uint8Array;
  readonly certId: string;
}

function makeIdentity(name = "alice"): TestIdentity {
  const { publicKey, privateKey } = generateKeyPairSync("ec", { namedCurve: "P-256" });
  const spki = new Uint8Array(publicKey.export({ type: "spki", format: "der" }));
  const signer: Signer = {
    publicKeySpki: spki,
    async sign(message: Uint8Array): Promise<Uint8Array> {
      const raw = cryptoSign("sha256", message, { key: privateKey, dsaEncoding: "ieee-p1363" });
      return normalizeP256Signature(new Uint8Array(raw));
    },
  };
  // The library never reads inside the certificate: any bytes stand in for a DER certificate here.
  const certDer = utf8(`certificate of ${name}`);
  return { signer, spki, certDer, certId: sha256Hex(certDer) };
}

const alice = makeIdentity("alice");
const bob = makeIdentity("bob");
const nowMs = 1_700_000_000_500;

function expectCode(code: ErrorCode, field?: string): (error: unknown) => boolean {
  return (error: unknown) => {
    assert.ok(error instanceof CodedError, `expected CodedError, got ${String(error)}`);
    assert.equal(error.code, code, error.message);
    if (field !== undefined) assert.equal(error.field, field, error.message);
    return true;
  };
}

function verifier(options: { nonceCacheEntriesMax?: number } = {}): {
  v: RequestVerifier;
  clock: { ms: number };
} {
  const clock = { ms: nowMs };
  return { v: new RequestVerifier({ ...options, now: () => clock.ms }), clock };
}

interface RequestParts {
  readonly method: string;
  readonly url: string;
  readonly body?: Uint8Array;
  readonly headers: RequestHeaders;
}

async function signed(
  overrides: Partial<SignRequestInput> & { method: string; url: string },
  identity = alice,
): Promise<RequestParts> {
  const headers = await signRequest({
    signer: identity.signer,
    certId: identity.certId,
    nowMs,
    ...overrides,
  });
  return {
    method: overrides.method,
    url: overrides.url,
    headers,
    ...(overrides.body === undefined ? {} : { body: overrides.body }),
  };
}

function withHeaders(
  request: RequestParts,
  changes: Record<string, string | string[] | undefined>,
): RequestParts {
  return { ...request, headers: { ...request.headers, ...changes } };
}

/** Rewrites the Signature-Input header; the signature no longer matches, but parsing must refuse first. */
function withSignatureInput(request: RequestParts, edit: (value: string) => string): RequestParts {
  const value = request.headers["signature-input"];
  assert.equal(typeof value, "string");
  return withHeaders(request, { "signature-input": edit(value as string) });
}

describe("signature base (RFC 9421 §2.5)", () => {
  it("reproduces the RFC's own request example exactly", () => {
    // RFC 9421 §2.5, the signature base for the example POST /foo?param=Value&Pet=dog.
    const base = buildSignatureBase(
      [
        { name: "@method", value: "POST" },
        { name: "@authority", value: "example.com" },
        { name: "@path", value: "/foo" },
        {
          name: "content-digest",
          value:
            "sha-512=:WZDPaVn/7XgHaAy8pmojAkGWoRx2UFChF41A2svX+TaPm+AbwAgBWnrIiYllu7BNNyealdVLvRwEmTHWXvJwew==:",
        },
        { name: "content-length", value: "18" },
        { name: "content-type", value: "application/json" },
      ],
      [
        ["created", 1618884473],
        ["keyid", "test-key-rsa-pss"],
      ],
    );
    assert.equal(
      base,
      '"@method": POST\n' +
        '"@authority": example.com\n' +
        '"@path": /foo\n' +
        '"content-digest": sha-512=:WZDPaVn/7XgHaAy8pmojAkGWoRx2UFChF41A2svX+TaPm+AbwAgBWnrIiYllu7BNNyealdVLvRwEmTHWXvJwew==:\n' +
        '"content-length": 18\n' +
        '"content-type": application/json\n' +
        '"@signature-params": ("@method" "@authority" "@path" "content-digest" "content-length" "content-type")' +
        ';created=1618884473;keyid="test-key-rsa-pss"',
    );
  });

  it("reproduces RFC 9421 B.2.4 (ecdsa-p256-sha256): its published signature verifies over our base", async () => {
    const base = buildSignatureBase(
      [
        { name: "@status", value: "200" },
        { name: "content-type", value: "application/json" },
        {
          name: "content-digest",
          value:
            "sha-512=:mEWXIS7MaLRuGgxOBdODa3xqM1XdEvxoYhvlCFJ41QJgJc4GTsPp29l5oGX69wWdXymyU0rjJuahq4l5aGgfLQ==:",
        },
        { name: "content-length", value: "23" },
      ],
      [
        ["created", 1618884473],
        ["keyid", "test-key-ecc-p256"],
      ],
    );
    // RFC 9421 B.1.3 test-key-ecc-p256 (public half) and the B.2.4 signature value.
    const publicKey = createPublicKey(
      "-----BEGIN PUBLIC KEY-----\n" +
        "MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAEqIVYZVLCrPZHGHjP17CTW0/+D9Lf\n" +
        "w0EkjqF7xB4FivAxzic30tMM4GF+hR6Dxh71Z50VGGdldkkDXZCnTNnoXQ==\n" +
        "-----END PUBLIC KEY-----",
    );
    const rfcSignature = new Uint8Array(
      Buffer.from(
        "wNmSUAhwb5LxtOtOpNa6W5xj067m5hFrj0XQ4fvpaCLx0NKocgPquLgyahnzDnDAUy5eCdlYUEkLIj+32oiasw==",
        "base64",
      ),
    );
    const message = utf8(base);
    assert.ok(cryptoVerify("sha256", message, { key: publicKey, dsaEncoding: "ieee-p1363" }, rfcSignature));

    // The RFC's signature happens to have a high S: our verifier refuses that form, accepts the low-S one.
    assert.equal(isCanonicalP256Signature(rfcSignature), false);
    const spki = new Uint8Array(publicKey.export({ type: "spki", format: "der" }));
    const parsed: ParsedSignedRequest = {
      keyId: "00".repeat(32),
      createdS: 1618884473,
      nonce: "AAAAAAAAAAAAAAAAAAAAAA",
      signatureBase: message,
      signature: rfcSignature,
    };
    const v = new RequestVerifier({ now: () => 1618884473_000 });
    await assert.rejects(v.verify(parsed, spki), expectCode("AUTH_BAD_SIGNATURE", "signature"));
    await v.verify({ ...parsed, signature: normalizeP256Signature(rfcSignature) }, spki);
  });

  it("serialises @signature-params as an sf inner list", () => {
    assert.equal(
      serializeSignatureParams(
        ["@method", "@path"],
        [
          ["created", 1],
          ["tag", "t"],
        ],
      ),
      '("@method" "@path");created=1;tag="t"',
    );
  });

  it("refuses component values that could forge a line", () => {
    assert.throws(
      () => buildSignatureBase([{ name: "@path", value: '/a\n"@method": GET' }], []),
      expectCode("BAD_REQUEST", "@path"),
    );
    assert.throws(
      () =>
        buildSignatureBase(
          [
            { name: "@path", value: "/a" },
            { name: "@path", value: "/b" },
          ],
          [],
        ),
      expectCode("BAD_REQUEST", "@path"),
    );
  });
});

describe("Content-Digest (RFC 9530)", () => {
  it("matches the RFC's sha-256 example", () => {
    assert.equal(
      contentDigest(utf8('{"hello": "world"}')),
      "sha-256=:X48E9qOokqqrvdts8nOJRJN3OWDUoyWxBf7kbu9DBPE=:",
    );
  });
});

describe("the citychain profile", () => {
  it("produces exactly the documented headers and base", async () => {
    const certDer = utf8("citychain test certificate");
    const certId = "db6669eff06888029f4b53e0c91dbc143ac52bcccdea2ddf2ef90a10a5128dab";
    const request = await signed({
      method: "POST",
      url: "/v1/licenses?holder=abc&limit=10",
      body: utf8('{"hello": "world"}'),
      certId,
      certDer,
      nonce: Uint8Array.from({ length: 16 }, (_, i) => i),
    });
    const params =
      '("@method" "@path" "@query" "content-digest" "x-citychain-cert");created=1700000000' +
      ';nonce="AAECAwQFBgcICQoLDA0ODw"' +
      ';keyid="db6669eff06888029f4b53e0c91dbc143ac52bcccdea2ddf2ef90a10a5128dab"' +
      ';alg="ecdsa-p256-sha256";tag="citychain-api-v1"';
    assert.deepEqual(Object.keys(request.headers).sort(), [
      "content-digest",
      "signature",
      "signature-input",
      "x-citychain-cert",
    ]);
    assert.equal(request.headers["signature-input"], `sig1=${params}`);
    assert.equal(request.headers["content-digest"], "sha-256=:X48E9qOokqqrvdts8nOJRJN3OWDUoyWxBf7kbu9DBPE=:");
    assert.equal(request.headers["x-citychain-cert"], "Y2l0eWNoYWluIHRlc3QgY2VydGlmaWNhdGU=");
    assert.match(String(request.headers["signature"]), /^sig1=:[A-Za-z0-9+/]{86}==:$/);

    const parsed = parseSignedRequest(request);
    assert.equal(
      Buffer.from(parsed.signatureBase).toString("latin1"),
      '"@method": POST\n' +
        '"@path": /v1/licenses\n' +
        '"@query": ?holder=abc&limit=10\n' +
        '"content-digest": sha-256=:X48E9qOokqqrvdts8nOJRJN3OWDUoyWxBf7kbu9DBPE=:\n' +
        '"x-citychain-cert": Y2l0eWNoYWluIHRlc3QgY2VydGlmaWNhdGU=\n' +
        `"@signature-params": ${params}`,
    );
    assert.equal(parsed.keyId, certId);
    assert.equal(parsed.createdS, 1_700_000_000);
    assert.equal(parsed.nonce, "AAECAwQFBgcICQoLDA0ODw");
    assert.deepEqual(parsed.certDer, certDer);
  });

  it("covers only @method and @path for a plain GET", async () => {
    const request = await signed({ method: "GET", url: "/v1/status" });
    assert.deepEqual(Object.keys(request.headers).sort(), ["signature", "signature-input"]);
    const parsed = parseSignedRequest(request);
    const base = Buffer.from(parsed.signatureBase).toString("latin1");
    assert.ok(
      base.startsWith('"@method": GET\n"@path": /v1/status\n"@signature-params": ("@method" "@path");'),
    );
    assert.equal(parsed.certDer, undefined);
  });
});

describe("round trips", () => {
  it("GET with a query: signs, parses and verifies", async () => {
    const { v } = verifier();
    const request = await signed({ method: "GET", url: "/v1/licenses?holder=h%C3%A9&cursor=" });
    await v.verify(parseSignedRequest(request), alice.spki);
    assert.equal(v.nonceCacheEntries, 1);
  });

  it("POST with a body and a certificate: signs, parses and verifies", async () => {
    const { v } = verifier();
    const body = utf8(JSON.stringify({ type: "license.issue", payload: { n: 1 } }));
    const request = await signed({ method: "POST", url: "/v1/tx", body, certDer: alice.certDer });
    const parsed = parseSignedRequest(request);
    assert.deepEqual(parsed.certDer, alice.certDer);
    await v.verify(parsed, alice.spki);
  });

  it("accepts header names in any case and duplicate lines combined as RFC 9110 allows", async () => {
    const { v } = verifier();
    const request = await signed({ method: "POST", url: "/v1/tx", body: utf8("x") });
    const upper: Record<string, string | string[]> = {};
    for (const [name, value] of Object.entries(request.headers)) {
      if (typeof value === "string") upper[name.toUpperCase()] = [` ${value} `];
    }
    await v.verify(parseSignedRequest({ ...request, headers: upper }), alice.spki);
  });

  it("treats an empty body as no body", async () => {
    const request = await signed({ method: "POST", url: "/v1/ping", body: new Uint8Array(0) });
    assert.equal(request.headers["content-digest"], undefined);
    parseSignedRequest(request);
  });
});

describe("tampering", () => {
  it("refuses a body that does not match its digest", async () => {
    const request = await signed({ method: "POST", url: "/v1/tx", body: utf8('{"amount":1}') });
    assert.throws(
      () => parseSignedRequest({ ...request, body: utf8('{"amount":9}') }),
      expectCode("AUTH_BAD_SIGNATURE", "content-digest"),
    );
  });

  it("refuses a changed path, method or query at signature check", async () => {
    const request = await signed({ method: "GET", url: "/v1/licenses/1?full=0" });
    for (const changed of [
      { ...request, url: "/v1/licenses/2?full=0" },
      { ...request, method: "DELETE" },
      { ...request, url: "/v1/licenses/1?full=1" },
    ]) {
      const { v } = verifier();
      await assert.rejects(
        v.verify(parseSignedRequest(changed), alice.spki),
        expectCode("AUTH_BAD_SIGNATURE"),
      );
      assert.equal(v.nonceCacheEntries, 0, "a request that fails its signature check leaves no nonce behind");
    }
  });

  it("refuses a query removed or added after signing", async () => {
    const withQuery = await signed({ method: "GET", url: "/v1/a?x=1" });
    assert.throws(
      () => parseSignedRequest({ ...withQuery, url: "/v1/a" }),
      expectCode("AUTH_MALFORMED", "signature-input"),
    );
    const without = await signed({ method: "GET", url: "/v1/a" });
    assert.throws(
      () => parseSignedRequest({ ...without, url: "/v1/a?x=1" }),
      expectCode("AUTH_MALFORMED", "signature-input"),
    );
  });

  it("refuses a certificate header added after signing, or swapped for another", async () => {
    const request = await signed({ method: "GET", url: "/v1/a" });
    assert.throws(
      () =>
        parseSignedRequest(
          withHeaders(request, { "x-citychain-cert": Buffer.from(bob.certDer).toString("base64") }),
        ),
      expectCode("AUTH_MALFORMED", "signature-input"),
    );
    const withCert = await signed({ method: "GET", url: "/v1/a", certDer: alice.certDer });
    assert.throws(
      () =>
        parseSignedRequest(
          withHeaders(withCert, { "x-citychain-cert": Buffer.from(bob.certDer).toString("base64") }),
        ),
      expectCode("AUTH_MALFORMED", "x-citychain-cert"),
    );
  });

  it("refuses another key's signature", async () => {
    const { v } = verifier();
    const request = await signed({ method: "GET", url: "/v1/a" });
    await assert.rejects(v.verify(parseSignedRequest(request), bob.spki), expectCode("AUTH_BAD_SIGNATURE"));
  });

  it("refuses the high-S twin of a valid signature", async () => {
    const { v } = verifier();
    const request = await signed({ method: "GET", url: "/v1/a" });
    const parsed = parseSignedRequest(request);
    const highS = parsed.signature.slice();
    let s = 0n;
    for (const byte of highS.subarray(32)) s = (s << 8n) | BigInt(byte);
    let twin = p256Order - s;
    for (let i = 63; i >= 32; i--) {
      highS[i] = Number(twin & 0xffn);
      twin >>= 8n;
    }
    // The twin is a valid ECDSA signature as far as OpenSSL is concerned; only the low-S rule refuses it.
    const key = createPublicKey({ key: Buffer.from(alice.spki), format: "der", type: "spki" });
    assert.ok(cryptoVerify("sha256", parsed.signatureBase, { key, dsaEncoding: "ieee-p1363" }, highS));
    await assert.rejects(
      v.verify({ ...parsed, signature: highS }, alice.spki),
      expectCode("AUTH_BAD_SIGNATURE", "signature"),
    );
    await v.verify(parsed, alice.spki);
  });
});

describe("where the signature is checked", () => {
  /** True when `promise` settles before the event loop gets another turn (no thread hop). */
  async function settlesWithoutLoopTurn(promise: Promise<unknown>): Promise<boolean> {
    let settled = false;
    const done = promise.then(
      () => {
        settled = true;
      },
      () => {
        settled = true;
      },
    );
    for (let i = 0; i < 20; i++) await Promise.resolve();
    const early = settled;
    await done;
    return early;
  }

  for (const [label, share, inline] of [
    ["on the event loop while it is mostly idle", 0.2, true],
    ["on libuv's pool while the loop is busy", 0.95, false],
  ] as const) {
    it(`${label}, with the same verdicts`, async () => {
      const v = new RequestVerifier({ now: () => nowMs, busyShare: () => share });
      const good = parseSignedRequest(await signed({ method: "GET", url: "/v1/a" }));
      assert.equal(await settlesWithoutLoopTurn(v.verify(good, alice.spki)), inline);
      await assert.rejects(v.verify(good, alice.spki), expectCode("AUTH_REPLAYED"));
      const other = parseSignedRequest(await signed({ method: "GET", url: "/v1/b" }));
      const wrongKey = v.verify(other, bob.spki);
      assert.equal(await settlesWithoutLoopTurn(wrongKey), inline);
      await assert.rejects(wrongKey, expectCode("AUTH_BAD_SIGNATURE"));
      // A refused signature leaves no nonce behind: the right key still gets through.
      await v.verify(other, alice.spki);
    });
  }

  it("never inline when the threshold is 0, and refuses a threshold outside 0..1", async () => {
    const v = new RequestVerifier({ now: () => nowMs, busyShare: () => 0, inlineBelowBusyShare: 0 });
    const good = parseSignedRequest(await signed({ method: "GET", url: "/v1/a" }));
    let settled = false;
    const pending = v.verify(good, alice.spki).then(() => {
      settled = true;
    });
    for (let i = 0; i < 20; i++) await Promise.resolve();
    assert.equal(settled, false);
    await pending;
    assert.throws(() => new RequestVerifier({ now: () => nowMs, inlineBelowBusyShare: 1.5 }));
  });
});

describe("time window and replay", () => {
  it("refuses a request created too long ago or too far ahead", async () => {
    const { v } = verifier();
    const old = await signed({ method: "GET", url: "/v1/a", nowMs: nowMs - 301_000 });
    await assert.rejects(v.verify(parseSignedRequest(old), alice.spki), expectCode("AUTH_CLOCK_SKEW"));
    const future = await signed({ method: "GET", url: "/v1/a", nowMs: nowMs + 301_000 });
    await assert.rejects(v.verify(parseSignedRequest(future), alice.spki), expectCode("AUTH_CLOCK_SKEW"));
    const slightlyAhead = await signed({ method: "GET", url: "/v1/a", nowMs: nowMs + 299_000 });
    await v.verify(parseSignedRequest(slightlyAhead), alice.spki);
  });

  it("refuses a replayed nonce, also when copies arrive at the same time", async () => {
    const { v } = verifier();
    const parsed = parseSignedRequest(await signed({ method: "GET", url: "/v1/a" }));
    await v.verify(parsed, alice.spki);
    await assert.rejects(v.verify(parsed, alice.spki), expectCode("AUTH_REPLAYED", "signature-input"));

    const fresh = parseSignedRequest(await signed({ method: "GET", url: "/v1/b" }));
    const outcomes = await Promise.allSettled([v.verify(fresh, alice.spki), v.verify(fresh, alice.spki)]);
    assert.deepEqual(outcomes.map((outcome) => outcome.status).sort(), ["fulfilled", "rejected"]);
  });

  it("keeps nonces apart per key", async () => {
    const { v } = verifier();
    const nonce = new Uint8Array(16).fill(7);
    await v.verify(parseSignedRequest(await signed({ method: "GET", url: "/v1/a", nonce })), alice.spki);
    await v.verify(parseSignedRequest(await signed({ method: "GET", url: "/v1/a", nonce }, bob)), bob.spki);
  });

  it("bounds the nonce cache: refuses when full of fresh nonces, frees them when the window passes", async () => {
    const { v, clock } = verifier({ nonceCacheEntriesMax: 3 });
    for (let i = 0; i < 3; i++) {
      await v.verify(parseSignedRequest(await signed({ method: "GET", url: `/v1/${i}` })), alice.spki);
    }
    const fourth = parseSignedRequest(await signed({ method: "GET", url: "/v1/4" }));
    await assert.rejects(v.verify(fourth, alice.spki), expectCode("RATE_LIMITED"));
    assert.equal(v.nonceCacheEntries, 3);

    clock.ms = nowMs + 301_000;
    const later = parseSignedRequest(await signed({ method: "GET", url: "/v1/5", nowMs: clock.ms }));
    await v.verify(later, alice.spki);
    assert.equal(v.nonceCacheEntries, 1);
  });

  it("does not reopen the window when the clock steps back, so evicted nonces stay dead", async () => {
    const { v, clock } = verifier();
    const parsed = parseSignedRequest(await signed({ method: "GET", url: "/v1/a" }));
    await v.verify(parsed, alice.spki);
    clock.ms = nowMs + 400_000;
    await v.verify(
      parseSignedRequest(await signed({ method: "GET", url: "/v1/b", nowMs: clock.ms })),
      alice.spki,
    );
    clock.ms = nowMs; // the wall clock is set back
    await assert.rejects(v.verify(parsed, alice.spki), expectCode("AUTH_CLOCK_SKEW"));
  });
});

describe("malformed requests", () => {
  it("AUTH_MISSING when the signature headers are absent", async () => {
    const request = await signed({ method: "GET", url: "/v1/a" });
    assert.throws(
      () => parseSignedRequest({ method: "GET", url: "/v1/a", headers: {} }),
      expectCode("AUTH_MISSING", "signature-input"),
    );
    assert.throws(
      () => parseSignedRequest(withHeaders(request, { signature: undefined })),
      expectCode("AUTH_MISSING", "signature"),
    );
    assert.throws(
      () => parseSignedRequest(withHeaders(request, { "signature-input": "" })),
      expectCode("AUTH_MISSING", "signature-input"),
    );
  });

  it("AUTH_MALFORMED naming signature-input for every profile violation", async () => {
    const request = await signed({ method: "GET", url: "/v1/a?q=1" });
    const edits: Array<[string, (value: string) => string]> = [
      ["not a structured field", () => 'sig1=("@method"'],
      ["another label", (value) => value.replace("sig1=", "sig2=")],
      ["two labels", (value) => `${value}, ${value.replace("sig1=", "sig2=")}`],
      ["a duplicate label", (value) => `${value}, ${value}`],
      ["an item, not an inner list", () => 'sig1="@method"'],
      ["components out of order", (value) => value.replace('"@method" "@path"', '"@path" "@method"')],
      ["a component missing", (value) => value.replace(' "@query"', "")],
      ["a component with a parameter", (value) => value.replace('"@query"', '"@query";sf')],
      ["an extra parameter", (value) => `${value};expires=1700000300`],
      ["a missing parameter", (value) => value.replace(/;tag="[^"]*"/, "")],
      ["another alg", (value) => value.replace("ecdsa-p256-sha256", "ed25519")],
      ["alg as a token", (value) => value.replace('alg="ecdsa-p256-sha256"', "alg=ecdsa-p256-sha256")],
      ["another tag", (value) => value.replace("citychain-api-v1", "citychain-api-v2")],
      ["created as a decimal", (value) => value.replace(/created=(\d+)/, "created=$1.0")],
      ["created as a string", (value) => value.replace(/created=(\d+)/, 'created="$1"')],
      ["a negative created", (value) => value.replace(/created=(\d+)/, "created=-$1")],
      ["a short nonce", (value) => value.replace(/nonce="[^"]*"/, 'nonce="AAAA"')],
      ["a long nonce", (value) => value.replace(/nonce="[^"]*"/, `nonce="${"A".repeat(65)}"`)],
      ["a padded nonce", (value) => value.replace(/nonce="[^"]*"/, `nonce="${"A".repeat(22)}=="`)],
      [
        "an upper-case keyid",
        (value) => value.replace(/keyid="([^"]*)"/, (_, id: string) => `keyid="${id.toUpperCase()}"`),
      ],
      ["a short keyid", (value) => value.replace(/keyid="[^"]*"/, 'keyid="abcd"')],
      ["non-canonical spacing", (value) => value.replace('"@method" "@path"', '"@method"  "@path"')],
    ];
    for (const [what, edit] of edits) {
      assert.throws(
        () => parseSignedRequest(withSignatureInput(request, edit)),
        expectCode("AUTH_MALFORMED", "signature-input"),
        what,
      );
    }
  });

  it("AUTH_MALFORMED naming signature for a bad Signature header", async () => {
    const request = await signed({ method: "GET", url: "/v1/a" });
    const good = String(request.headers["signature"]);
    for (const value of [
      "sig1=:AAAA:",
      good.replace("sig1=", "sig2="),
      `${good};x=1`,
      `${good}, sig2=:AAAA:`,
      "sig1=(:AAAA:)",
      "sig1=not-bytes",
      good.replace(/==:$/, ":"),
    ]) {
      assert.throws(
        () => parseSignedRequest(withHeaders(request, { signature: value })),
        expectCode("AUTH_MALFORMED", "signature"),
        value,
      );
    }
  });

  it("refuses a body without Content-Digest and Content-Digest without a body", async () => {
    const get = await signed({ method: "GET", url: "/v1/a" });
    assert.throws(
      () => parseSignedRequest({ ...get, method: "POST", body: utf8("{}") }),
      expectCode("AUTH_MALFORMED", "content-digest"),
    );
    const post = await signed({ method: "POST", url: "/v1/a", body: utf8("{}") });
    assert.throws(
      () => parseSignedRequest({ ...post, body: undefined }),
      expectCode("AUTH_MALFORMED", "content-digest"),
    );
    for (const digest of [
      `${String(post.headers["content-digest"])}, sha-512=:AAAA:`,
      "sha-512=:AAAA:",
      "sha-256=:AAAA:",
      "sha-256=(:AAAA:)",
    ]) {
      const edited = withHeaders(post, { "content-digest": digest });
      assert.throws(
        () => parseSignedRequest(edited),
        (error: unknown) => {
          assert.ok(error instanceof CodedError);
          assert.equal(error.field, "content-digest", digest);
          assert.ok(["AUTH_MALFORMED", "AUTH_BAD_SIGNATURE"].includes(error.code), error.message);
          return true;
        },
      );
    }
  });

  it("refuses a malformed certificate header", async () => {
    const request = await signed({ method: "GET", url: "/v1/a", certDer: alice.certDer });
    for (const value of ["not base64!", "YWJj ZA==", "YWJjZB==", "YWJjZA"]) {
      assert.throws(
        () => parseSignedRequest(withHeaders(request, { "x-citychain-cert": value })),
        expectCode("AUTH_MALFORMED", "x-citychain-cert"),
        value,
      );
    }
  });

  it("refuses oversized auth headers", async () => {
    const request = await signed({ method: "GET", url: "/v1/a", certDer: alice.certDer });
    const huge = "A".repeat(8 * 1024 + 1);
    for (const name of ["signature-input", "signature", "content-digest", "x-citychain-cert"]) {
      assert.throws(
        () => parseSignedRequest(withHeaders(request, { [name]: huge })),
        expectCode("AUTH_MALFORMED", name),
        name,
      );
    }
    const manyLines = Array.from({ length: 10_000 }, () => "a");
    assert.throws(
      () => parseSignedRequest(withHeaders(request, { signature: manyLines })),
      expectCode("AUTH_MALFORMED", "signature"),
    );
  });

  it("refuses an unusable request target", async () => {
    const request = await signed({ method: "GET", url: "/v1/a" });
    for (const url of ["v1/a", "http://node/v1/a", "/v1/a#frag", "/v1/a b", "/v1/é", "*"]) {
      assert.throws(() => parseSignedRequest({ ...request, url }), expectCode("BAD_REQUEST", "url"), url);
    }
  });
});

describe("signing inputs", () => {
  it("refuses what would not survive the trip or does not match", async () => {
    await assert.rejects(signed({ method: "get", url: "/v1/a" }), expectCode("BAD_REQUEST", "method"));
    await assert.rejects(signed({ method: "GET", url: "/v1/a#x" }), expectCode("BAD_REQUEST", "url"));
    await assert.rejects(
      signed({ method: "GET", url: "/v1/a", certDer: bob.certDer }),
      expectCode("BAD_REQUEST", "certDer"),
    );
    await assert.rejects(
      signed({ method: "GET", url: "/v1/a", nonce: new Uint8Array(15) }),
      expectCode("BAD_REQUEST", "nonce"),
    );
    await assert.rejects(
      signed({ method: "GET", url: "/v1/a", certId: alice.certId.toUpperCase() }),
      expectCode("BAD_REQUEST", "certId"),
    );
    await assert.rejects(
      signed({ method: "GET", url: "/v1/a", nowMs: 1.5 }),
      expectCode("BAD_REQUEST", "nowMs"),
    );
  });

  it("refuses a Signer that returns a high-S signature", async () => {
    const highSigner: Signer = {
      publicKeySpki: alice.spki,
      async sign(message: Uint8Array): Promise<Uint8Array> {
        const low = await alice.signer.sign(message);
        const out = low.slice();
        let s = 0n;
        for (const byte of low.subarray(32)) s = (s << 8n) | BigInt(byte);
        let high = p256Order - s;
        for (let i = 63; i >= 32; i--) {
          out[i] = Number(high & 0xffn);
          high >>= 8n;
        }
        return out;
      },
    };
    await assert.rejects(
      signed({ method: "GET", url: "/v1/a", signer: highSigner }),
      expectCode("INVARIANT_BROKEN"),
    );
  });

  it("draws a fresh 16-byte nonce for every request", async () => {
    const a = parseSignedRequest(await signed({ method: "GET", url: "/v1/a" }));
    const b = parseSignedRequest(await signed({ method: "GET", url: "/v1/a" }));
    assert.notEqual(a.nonce, b.nonce);
    assert.equal(a.nonce.length, 22);
  });
});
