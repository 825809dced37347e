/**
 * The hand-written transaction envelope reader (decodeTxFast) against the strict decoder
 * (canonical CBOR decode with re-encode check): over the test vectors, every canonical and refused
 * payload vector, and thousands of mutated and random inputs, decodeTx gives exactly the strict
 * decoder's outcome — the same transaction, byte for byte, or the same error code and field — and
 * the fast reader never accepts an input the strict decoder refuses.
 */
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { describe, it } from "node:test";
import { fileURLToPath } from "node:url";
import {
  type Canonical,
  concatBytes,
  encodeCanonical,
  fromHex,
  toHex,
  utf8,
} from "../../src/core/encoding.ts";
import { CodedError } from "../../src/core/errors.ts";
import { sha256 } from "../../src/core/hash.ts";
import { decodeTx, decodeTxFast, decodeTxStrict, encodeTx, type Tx } from "../../src/core/tx.ts";
import { prng } from "../helpers/prng.ts";

const vectors = JSON.parse(
  readFileSync(fileURLToPath(new URL("../vectors/encoding.json", import.meta.url)), "utf8"),
) as {
  tx: { txHex: string; bodyHex: string };
  canonical: Array<{ name: string; hex: string }>;
};

const certDer = utf8("citychain test certificate stand-in");
const certId = sha256(certDer);
const otherCertId = sha256(utf8("another signer"));

function lowSSignature(fill: number): Uint8Array {
  const sig = new Uint8Array(64).fill(fill);
  sig[0] = 0x01;
  sig[32] = 0x02;
  return sig;
}

/** A body with `payloadHex` placed as is, so non-canonical payloads can be embedded. */
function bodyWith(payloadHex: string, overrides: { chainId?: string; sender?: Uint8Array } = {}): Uint8Array {
  return concatBytes(
    fromHex("8701"),
    encodeCanonical(overrides.chainId ?? "citychain-test"),
    encodeCanonical("kv.put"),
    fromHex(payloadHex),
    encodeCanonical(fromHex("000102030405060708090a0b0c0d0e0f")),
    encodeCanonical(1_700_003_600_000),
    encodeCanonical(overrides.sender ?? certId),
  );
}

function txWith(bodyBytes: Uint8Array, signatureCount = 1, firstByCert = false): Uint8Array {
  const signatures = Array.from({ length: signatureCount }, (_, i) =>
    i === 0
      ? firstByCert
        ? { signer: { kind: "cert" as const, der: certDer }, signature: lowSSignature(7) }
        : { signer: { kind: "certId" as const, certId }, signature: lowSSignature(7) }
      : {
          signer: { kind: "certId" as const, certId: sha256(utf8(`co-signer ${i}`)) },
          signature: lowSSignature(i),
        },
  );
  return encodeTx(bodyBytes, signatures);
}

type Outcome =
  | { readonly ok: true; readonly view: string }
  | {
      readonly ok: false;
      readonly code: string;
      readonly field: string | undefined;
      readonly message: string;
    };

function view(tx: Tx): string {
  return JSON.stringify({
    id: tx.id,
    bytes: toHex(tx.bytes),
    bodyBytes: toHex(tx.bodyBytes),
    chainId: tx.body.chainId,
    type: tx.body.type,
    payload: toHex(encodeCanonical(tx.body.payload)),
    payloadShape: shape(tx.body.payload),
    nonce: toHex(tx.body.nonce),
    expiresAtMs: tx.body.expiresAtMs,
    sender: toHex(tx.body.sender),
    signatures: tx.signatures.map((s) => ({
      kind: s.signer.kind,
      ref: toHex(s.signer.kind === "certId" ? s.signer.certId : s.signer.der),
      signature: toHex(s.signature),
    })),
  });
}

/** Types and prototypes too, not only what re-encodes the same. */
function shape(value: Canonical): unknown {
  if (value instanceof Uint8Array)
    return ["bytes", Object.getPrototypeOf(value) === Uint8Array.prototype || Buffer.isBuffer(value)];
  if (Array.isArray(value)) return value.map(shape);
  if (value !== null && typeof value === "object")
    return [
      Object.getPrototypeOf(value) === Object.prototype,
      Object.entries(value).map(([k, v]) => [k, shape(v)]),
    ];
  return typeof value;
}

function outcome(decode: (bytes: Uint8Array) => Tx, bytes: Uint8Array): Outcome {
  try {
    return { ok: true, view: view(decode(bytes)) };
  } catch (error) {
    if (!(error instanceof CodedError)) throw error;
    return { ok: false, code: error.code, field: error.field, message: error.message };
  }
}

let checked = 0;
let fastAccepted = 0;

function assertSameOutcome(bytes: Uint8Array, label: string): void {
  checked++;
  const strict = outcome((b) => decodeTxStrict(b), bytes);
  const combined = outcome((b) => decodeTx(b), bytes);
  assert.deepEqual(combined, strict, `${label}: ${toHex(bytes).slice(0, 200)}`);
  const fast = decodeTxFast(bytes);
  if (fast !== undefined) {
    fastAccepted++;
    assert.ok(
      strict.ok,
      `${label}: the fast reader accepted what the strict decoder refuses (${toHex(bytes)})`,
    );
    assert.equal(view(fast), strict.view, label);
  }
}

function mutations(bytes: Uint8Array, random: () => number, count: number): Uint8Array[] {
  const out: Uint8Array[] = [];
  // Every position once with a flipped bit, and with a few telling values.
  for (let i = 0; i < bytes.length; i++) {
    for (const replace of [
      bytes[i]! ^ (1 << Math.floor(random() * 8)),
      0x00,
      0x18,
      0x1b,
      0x5f,
      0x7f,
      0x9f,
      0xf6,
      0xff,
    ]) {
      const copy = Uint8Array.from(bytes);
      copy[i] = replace;
      out.push(copy);
    }
  }
  for (let n = 0; n < count; n++) {
    const copy = Array.from(bytes);
    const edits = 1 + Math.floor(random() * 3);
    for (let e = 0; e < edits; e++) {
      const at = Math.floor(random() * (copy.length + 1));
      const kind = random();
      if (kind < 0.4) copy[at] = Math.floor(random() * 256);
      else if (kind < 0.7) copy.splice(at, 1);
      else copy.splice(at, 0, Math.floor(random() * 256));
    }
    out.push(Uint8Array.from(copy));
  }
  for (let cut = 0; cut < bytes.length; cut += 1 + Math.floor(bytes.length / 40))
    out.push(bytes.subarray(0, cut));
  out.push(concatBytes(bytes, new Uint8Array([0])));
  return out;
}

describe("transaction decoder: hand-written envelope reader against the strict decoder", () => {
  it("the stored transaction vector decodes on the fast path to the strict decoder's transaction", () => {
    const bytes = fromHex(vectors.tx.txHex);
    assert.ok(decodeTxFast(bytes) !== undefined, "the vector takes the fast path");
    assertSameOutcome(bytes, "vector");
  });

  it("every canonical vector as a payload decodes the same way, on the fast path", () => {
    for (const { name, hex } of vectors.canonical) {
      const bytes = txWith(bodyWith(hex));
      assertSameOutcome(bytes, name);
      assert.ok(decodeTxFast(bytes) !== undefined || !outcome(decodeTxStrict, bytes).ok, name);
    }
  });

  it("refused payloads, bodies and envelopes are refused with the strict decoder's code and field", () => {
    const refusedPayloads = [
      "1817",
      "1900ff",
      "780161",
      "a2616201616102",
      "a262616101616202",
      "a2616101616102",
      "f93c00",
      "fb3ff8000000000000",
      "f97e00",
      "9f01ff",
      "bf616101ff",
      "7f616161ff",
      "f7",
      "f0",
      "c11a514b67b0",
      "c249010000000000000000",
      "1b0020000000000000",
      "3b0020000000000000",
      "3b001fffffffffffff",
      "a10101",
      "62c328",
      "8201",
      `${"81".repeat(31)}80`,
      `${"81".repeat(32)}80`,
      "a1695f5f70726f746f5f5f01",
    ];
    for (const hex of refusedPayloads) assertSameOutcome(txWith(bodyWith(hex)), `payload ${hex}`);
    const body = bodyWith("f6");
    const cases: Array<[string, Uint8Array]> = [
      ["wrong sender", txWith(bodyWith("f6", { sender: otherCertId }))],
      ["chain id with a BOM", txWith(bodyWith("f6", { chainId: "\ufeffcitychain" }))],
      ["bad chain id", txWith(bodyWith("f6", { chainId: "Bad Chain" }))],
      ["seventeen signatures", txWith(body, 17)],
      ["sixteen signatures", txWith(body, 16)],
      ["certificate signer", txWith(body, 2, true)],
      ["no signatures", encodeCanonical([body, []])],
      [
        "same signer twice",
        encodeTx(body, [
          { signer: { kind: "certId", certId }, signature: lowSSignature(1) },
          { signer: { kind: "cert", der: certDer }, signature: lowSSignature(2) },
        ]),
      ],
      [
        "high-S signature",
        encodeTx(body, [{ signer: { kind: "certId", certId }, signature: new Uint8Array(64).fill(0xff) }]),
      ],
      ["body as text", encodeCanonical(["body", [[[0, certId], lowSSignature(1)]]])],
      ["three elements", encodeCanonical([body, [[[0, certId], lowSSignature(1)]], null])],
      ["version 2", txWith(concatBytes(fromHex("8702"), body.subarray(2)))],
      ["signer kind 2", encodeCanonical([body, [[[2, certId], lowSSignature(1)]]])],
      ["certId of 31 bytes", encodeCanonical([body, [[[0, certId.subarray(1)], lowSSignature(1)]]])],
      [
        "non-minimal body length",
        fromHex(
          `825900${toHex(new Uint8Array([body.length]))}${toHex(body)}${toHex(encodeCanonical([[[0, certId], lowSSignature(1)]]))}`,
        ),
      ],
      [
        "body in 8-byte length",
        fromHex(`825b${"00".repeat(7)}${toHex(new Uint8Array([body.length]))}${toHex(body)}`),
      ],
      ["empty", new Uint8Array(0)],
    ];
    for (const [name, bytes] of cases) assertSameOutcome(bytes, name);
  });

  it("thousands of mutated and random inputs: the same outcome every time (seed 20261125)", () => {
    const random = prng(20261125);
    const seeds = [
      fromHex(vectors.tx.txHex),
      txWith(bodyWith("1817" /* a non-canonical payload on purpose */)),
      txWith(bodyWith(toHex(encodeCanonical({ key: "bench/tax/0/1", value: utf8("value-1") })))),
      txWith(bodyWith(toHex(encodeCanonical([1, -2, "three", null, true, { a: [fromHex("ff")] }]))), 3),
      txWith(bodyWith("f6"), 2, true),
    ];
    for (const seed of seeds) {
      assertSameOutcome(seed, "seed");
      for (const bytes of mutations(seed, random, 1500)) assertSameOutcome(bytes, "mutation");
    }
    for (let n = 0; n < 2000; n++) {
      const length = Math.floor(random() * 64);
      const bytes = Uint8Array.from({ length }, () => Math.floor(random() * 256));
      if (n % 2 === 0 && length > 0) bytes[0] = 0x82; // look like an envelope
      assertSameOutcome(bytes, "random");
    }
    assert.ok(checked > 20_000, `checked ${checked}`);
    assert.ok(fastAccepted > 5, `the fast path accepted ${fastAccepted} inputs`);
  });

  it("refuses an input over the byte limit before reading it, as before", () => {
    const bytes = fromHex(vectors.tx.txHex);
    assert.throws(
      () => decodeTx(bytes, bytes.length - 1),
      (e) => e instanceof CodedError && e.code === "TX_TOO_LARGE",
    );
    assert.equal(decodeTx(bytes, bytes.length).id, decodeTxStrict(bytes).id);
  });
});
