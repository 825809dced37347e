/**
 * The lean record decoder (src/core/record-decoder.ts) against the strict decoder it stands in for
 * (decodeStoredCanonical, cborg): the same values for every canonical encoding, and a refusal for
 * every input outside the data model. Values come from a seeded generator, so a failure reproduces.
 */
import assert from "node:assert/strict";
import { test } from "node:test";
import {
  type Canonical,
  decodeCanonical,
  decodeStoredCanonical,
  encodeCanonical,
} from "../../src/core/encoding.ts";
import { decodeStoredRecord } from "../../src/core/record-decoder.ts";

/** xorshift32: deterministic, good enough to pick shapes. */
function generator(seed: number) {
  let state = seed >>> 0 || 1;
  const next = () => {
    state ^= state << 13;
    state >>>= 0;
    state ^= state >>> 17;
    state ^= state << 5;
    state >>>= 0;
    return state / 0x1_0000_0000;
  };
  const int = (n: number) => Math.floor(next() * n);
  const integers = [0, 1, 23, 24, 255, 256, 65_535, 65_536, 2 ** 32 - 1, 2 ** 32, Number.MAX_SAFE_INTEGER];
  const texts = [
    "",
    "a",
    "holderCodeType",
    "居民身份证",
    "x".repeat(23),
    "y".repeat(24),
    "z".repeat(300),
    "é\u0000",
  ];
  const value = (depth: number): Canonical => {
    const kind = int(depth > 3 ? 5 : 7);
    switch (kind) {
      case 0:
        return [null, true, false][int(3)]!;
      case 1: {
        const n = integers[int(integers.length)]!;
        return int(2) === 0 ? n : -n - (n === Number.MAX_SAFE_INTEGER ? 0 : 1);
      }
      case 2:
        return int(4) === 0 ? int(1_000_000) : int(40);
      case 3:
        return texts[int(texts.length)]!;
      case 4:
        return Uint8Array.from({ length: [0, 1, 32, 300][int(4)]! }, () => int(256));
      case 5:
        return Array.from({ length: int(6) }, () => value(depth + 1));
      default: {
        const map: { [key: string]: Canonical } = {};
        for (let i = int(6); i > 0; i--) map[texts[int(texts.length)]! + String(int(3))] = value(depth + 1);
        return map;
      }
    }
  };
  return value;
}

test("decodes every canonical encoding to what the strict decoder gives", () => {
  const value = generator(20261206);
  for (let i = 0; i < 2_000; i++) {
    const bytes = encodeCanonical(value(0));
    assert.deepEqual(decodeStoredRecord(bytes, 1 << 20), decodeStoredCanonical(bytes, 1 << 20));
    // From a Buffer too (SQLite hands out Buffers; text then decodes natively).
    const buffer = Buffer.from(bytes);
    assert.deepEqual(decodeStoredRecord(buffer, 1 << 20), decodeStoredCanonical(bytes, 1 << 20));
  }
});

test("a license record decodes alike, and byte strings are copies", () => {
  const record = {
    id: "1.2.156.3005.2.11330100MB0000003X001.11330100MB0000003X.20260000001.1.K",
    holder: "ab".repeat(32),
    version: 1,
    validUntilMs: null,
    issuedAtMs: 1_796_000_000_000,
    publicContent: '{"district":"Xihu","number":"RC-1"}',
    sealed: { nonce: new Uint8Array(12).fill(7), ciphertext: new Uint8Array(200).fill(9) },
    contentHash: new Uint8Array(32).fill(1),
  };
  const bytes = Buffer.from(encodeCanonical(record));
  const decoded = decodeStoredRecord(bytes, 1 << 20) as typeof record;
  assert.deepEqual(decoded, decodeStoredCanonical(bytes, 1 << 20));
  assert.equal(Object.getPrototypeOf(decoded.contentHash), Uint8Array.prototype);
  bytes.fill(0);
  assert.deepEqual(decoded.contentHash, new Uint8Array(32).fill(1));
});

test("refuses what is outside the data model, like the strict decoder", () => {
  const hex = (h: string) => Uint8Array.from(Buffer.from(h, "hex"));
  const refused = {
    empty: "",
    "trailing byte": "0000",
    "non-shortest integer": "1805",
    "non-shortest length": "780161",
    "half float": "f93c00",
    "double float": "fb3ff0000000000000",
    undefined: "f7",
    "simple value": "f0",
    tag: "c0",
    "indefinite array": "9fff",
    "indefinite text": "7f6161ff",
    "integer key": "a10101",
    "duplicate key": "a2616101616102",
    "integer beyond the safe range": "1b0020000000000000",
    "negative beyond the safe range": "3b001fffffffffffff",
    "truncated text": "6361",
    "array longer than its bytes": "9a7fffffff",
    "reserved additional information": "1c",
  };
  for (const [what, h] of Object.entries(refused)) {
    assert.throws(() => decodeStoredRecord(hex(h), 1 << 20), { code: "BAD_ENCODING" }, what);
    // Floats pass cborg's stored decoder (its canonical check refuses them); nothing the encoder
    // wrote is refused by one and accepted by the other.
    assert.throws(() => decodeCanonical(hex(h), 1 << 20), Error, `the strict decoder refuses ${what} too`);
  }
  let nested: Canonical = 1;
  for (let i = 0; i < 40; i++) nested = [nested];
  assert.throws(() => decodeStoredRecord(encodeCanonical(nested), 1 << 20), { code: "BAD_ENCODING" });
  assert.throws(() => decodeStoredRecord(new Uint8Array(11), 10), { code: "BAD_ENCODING" });
  // Every proper prefix of a valid encoding is truncated.
  const bytes = encodeCanonical(generator(7)(0));
  for (let end = 0; end < bytes.length; end++)
    assert.throws(() => decodeStoredRecord(bytes.subarray(0, end), 1 << 20), { code: "BAD_ENCODING" });
  // A key "__proto__" is data, not the prototype.
  const proto = decodeStoredRecord(hex("a1695f5f70726f746f5f5f01"), 1 << 20) as Record<string, unknown>;
  assert.equal(Object.getPrototypeOf(proto), Object.prototype);
  assert.deepEqual(Object.keys(proto), ["__proto__"]);
});
