/**
 * encodeCanonical's fast path (straight into a buffer) against cborg, which it stands in front of:
 * for the values the fast path takes, both must write the same bytes.
 *
 * decodeCanonical's fast path (one pass, no re-encode) against its strict path (cborg decode, then
 * re-encode and compare). The fast path may leave any input to the strict one, but whatever it
 * accepts the strict path must accept with the same value; and it must accept every canonical
 * encoding of the data model, or it saves nothing.
 */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import {
  type Canonical,
  canonicalDepthMax,
  decodeCanonical,
  decodeCanonicalFast,
  decodeCanonicalStrict,
  encodeCanonical,
  encodeCanonicalFast,
  encodeCanonicalGeneric,
  fromHex,
} from "../../src/core/encoding.ts";
import { prng } from "../helpers/prng.ts";

const textPieces = [
  "",
  "a",
  "b",
  "key",
  "é",
  "日本",
  "😀",
  "\u0000",
  "\ufeff",
  "__proto__",
  "constructor",
  "1",
  "10",
  "9",
  "z".repeat(40),
];

function randomText(random: () => number): string {
  let out = "";
  const n = Math.floor(random() * 4);
  for (let i = 0; i < n; i++) out += textPieces[Math.floor(random() * textPieces.length)];
  // Text that starts with U+FEFF has no canonical encoding here: the strict decoder drops the mark.
  return out.startsWith("\ufeff") ? `x${out}` : out;
}

const integerEdges = [0, 1, 23, 24, 255, 256, 65535, 65536, 2 ** 32 - 1, 2 ** 32, Number.MAX_SAFE_INTEGER];

function randomValue(random: () => number, depth: number): Canonical {
  const kind = Math.floor(random() * (depth > 4 ? 6 : 8));
  switch (kind) {
    case 0:
      return [null, true, false][Math.floor(random() * 3)]!;
    case 1: {
      const edge = integerEdges[Math.floor(random() * integerEdges.length)]!;
      const value = random() < 0.5 ? edge : Math.floor(random() * edge);
      return random() < 0.3 ? -value - (value === Number.MAX_SAFE_INTEGER ? 0 : 1) : value;
    }
    case 2:
      return randomText(random);
    case 3:
    case 4: {
      const n = Math.floor(random() * 70);
      const out = new Uint8Array(n);
      for (let i = 0; i < n; i++) out[i] = Math.floor(random() * 256);
      return out;
    }
    case 5:
      return Math.floor(random() * 2 ** 20);
    case 6:
      return Array.from({ length: Math.floor(random() * 5) }, () => randomValue(random, depth + 1));
    default: {
      const out: Record<string, Canonical> = {};
      const n = Math.floor(random() * 5);
      for (let i = 0; i < n; i++) {
        const key = randomText(random);
        if (key === "__proto__") continue;
        out[key] = randomValue(random, depth + 1);
      }
      return out;
    }
  }
}

function strictOutcome(bytes: Uint8Array): { value: Canonical } | { code: string } {
  try {
    return { value: decodeCanonicalStrict(bytes, 1 << 20) };
  } catch (error) {
    return { code: (error as { code?: string }).code ?? "THREW" };
  }
}

/** The property: what the fast path returns, the strict path returns too. */
function assertAgrees(bytes: Uint8Array, label: string): boolean {
  const fast = decodeCanonicalFast(bytes);
  if (fast === undefined) return false;
  const strict = strictOutcome(bytes);
  assert.ok("value" in strict, `${label}: fast accepted what strict refuses (${JSON.stringify(strict)})`);
  assert.deepStrictEqual(fast, strict.value, `${label}: the two paths give different values`);
  return true;
}

describe("decodeCanonical's fast path agrees with the strict path", () => {
  it("accepts every canonical encoding of generated values, with the same value (seed 20261207)", () => {
    const random = prng(20261207);
    for (let i = 0; i < 3000; i++) {
      const value = randomValue(random, 0);
      const bytes = encodeCanonical(value);
      assert.ok(
        assertAgrees(bytes, `value ${i}`),
        `value ${i}: the fast path left a canonical encoding to the strict one`,
      );
      assert.deepStrictEqual(decodeCanonical(bytes, 1 << 20), decodeCanonicalStrict(bytes, 1 << 20));
    }
  });

  it("never accepts what the strict path refuses, over mutated encodings (seed 7)", () => {
    const random = prng(7);
    let accepted = 0;
    let mutants = 0;
    for (let i = 0; i < 3000; i++) {
      const bytes = encodeCanonical(randomValue(random, 0));
      for (let m = 0; m < 6; m++) {
        const mutant = new Uint8Array(bytes.length + 1);
        mutant.set(bytes);
        let length = bytes.length;
        const at = Math.floor(random() * Math.max(1, bytes.length));
        const how = Math.floor(random() * 4);
        if (how === 0) mutant[at] = Math.floor(random() * 256);
        else if (how === 1) mutant[at] = mutant[at]! ^ (1 << Math.floor(random() * 8));
        else if (how === 2) length = at;
        else {
          mutant.copyWithin(at + 1, at, bytes.length);
          mutant[at] = Math.floor(random() * 256);
          length = bytes.length + 1;
        }
        mutants++;
        if (assertAgrees(mutant.subarray(0, length), `mutant ${i}/${m}`)) accepted++;
        // And decodeCanonical as a whole gives the strict outcome, whichever path answered.
        const strict = strictOutcome(mutant.subarray(0, length));
        let whole: { value: Canonical } | { code: string };
        try {
          whole = { value: decodeCanonical(mutant.subarray(0, length), 1 << 20) };
        } catch (error) {
          whole = { code: (error as { code?: string }).code ?? "THREW" };
        }
        assert.deepStrictEqual(
          whole,
          strict,
          `mutant ${i}/${m}: decodeCanonical differs from the strict path`,
        );
      }
    }
    // Some mutants are still canonical (a changed byte inside a byte string): the fast path took them.
    assert.ok(accepted > 0 && accepted < mutants, `${accepted} of ${mutants} mutants accepted`);
  });

  const leftToStrict: ReadonlyArray<readonly [name: string, hex: string]> = [
    ["non-minimal integer", "1817"],
    ["non-minimal 8-byte integer", "1b00000000ffffffff"],
    ["integer beyond MAX_SAFE_INTEGER", "1b0020000000000000"],
    ["negative integer beyond -MAX_SAFE_INTEGER", "3b001fffffffffffff"],
    ["unsorted map keys", "a2616201616102"],
    ["duplicate map keys", "a2616101616102"],
    ["map key __proto__", "a1695f5f70726f746f5f5f01"],
    ["non-text map key", "a10101"],
    ["text starting with U+FEFF", "63efbbbf"],
    ["long text starting with U+FEFF", `7823efbbbf${"61".repeat(32)}`],
    ["invalid UTF-8", "62c328"],
    ["float", "f93c00"],
    ["undefined", "f7"],
    ["simple value 16", "f0"],
    ["tag", "c11a514b67b0"],
    ["indefinite-length array", "9f01ff"],
    ["trailing bytes", "0101"],
    ["truncated array", "8201"],
    ["array longer than its bytes", "9a0000ffff01"],
    ["empty input", ""],
    [`nesting deeper than ${canonicalDepthMax}`, `${"81".repeat(canonicalDepthMax + 1)}80`],
  ];
  for (const [name, hex] of leftToStrict) {
    it(`leaves ${name} to the strict path`, () => {
      assert.equal(decodeCanonicalFast(fromHex(hex)), undefined);
    });
  }

  it("takes the boundaries of the data model itself", () => {
    const cases: Canonical[] = [
      Number.MAX_SAFE_INTEGER,
      -Number.MAX_SAFE_INTEGER,
      -1,
      "\u00e9t\u00e9",
      "a\ufeff",
      { "": 1, a: [], b: {}, aa: new Uint8Array(0) },
      JSON.parse(`${"[".repeat(canonicalDepthMax)}${"]".repeat(canonicalDepthMax)}`) as Canonical,
    ];
    for (const value of cases) assert.ok(assertAgrees(encodeCanonical(value), JSON.stringify(String(value))));
  });

  it("returns byte strings that do not share the input's memory", () => {
    const bytes = encodeCanonical([new Uint8Array([1, 2, 3])]);
    const value = decodeCanonicalFast(bytes) as Uint8Array[];
    bytes.fill(0);
    assert.deepStrictEqual([...value[0]!], [1, 2, 3]);
  });
});

/** The bytes alone (cborg hands back a Buffer or a Uint8Array depending on size). */
function plain(bytes: Uint8Array): Uint8Array {
  return new Uint8Array(bytes.buffer, bytes.byteOffset, bytes.length);
}

describe("encodeCanonical's fast path writes cborg's bytes", () => {
  it("for generated values, including keys in every order and Buffers (seed 20261208)", () => {
    const random = prng(20261208);
    for (let i = 0; i < 3000; i++) {
      const value = randomValue(random, 0);
      const fast = encodeCanonicalFast(value);
      assert.ok(fast !== undefined, `value ${i}: the fast path gave up on plain data`);
      assert.deepStrictEqual(plain(fast), plain(encodeCanonicalGeneric(value)), `value ${i}`);
      assert.deepStrictEqual(decodeCanonicalStrict(fast, 1 << 20), decodeCanonicalFast(fast));
    }
  });

  it("at the boundaries of every head size and of the integer range", () => {
    const values: Canonical[] = [];
    for (const n of [0, 23, 24, 255, 256, 65535, 65536, 2 ** 32 - 1, 2 ** 32, Number.MAX_SAFE_INTEGER])
      values.push(n, -n, -n - 1 >= -Number.MAX_SAFE_INTEGER ? -n - 1 : -n);
    for (const n of [0, 23, 24, 255, 256, 70000]) {
      values.push(
        "a".repeat(n),
        new Uint8Array(n).fill(7),
        Array.from({ length: Math.min(n, 300) }, () => 1),
      );
    }
    values.push(-0, "é".repeat(40), "😀", Buffer.from([1, 2, 3]), { b: 1, a: 2, aa: 3, "": 4, B: 5 });
    values.push({ é: 1, z: 2, zz: 3, 日: 4, "😀": 5, e: 6 });
    for (const value of values) {
      const fast = encodeCanonicalFast(value);
      assert.ok(fast !== undefined, `gave up on ${String(value).slice(0, 20)}`);
      assert.deepStrictEqual(plain(fast), plain(encodeCanonicalGeneric(value)), String(value).slice(0, 20));
    }
  });

  it("leaves to cborg what is not plain data, and encodeCanonical still refuses or encodes it as before", () => {
    const cycle: unknown[] = [];
    cycle.push(cycle);
    const outside: unknown[] = [
      1.5,
      Number.MAX_SAFE_INTEGER + 1,
      Number.NaN,
      undefined,
      10n,
      new Map(),
      new Set(),
      new Date(0),
      new Uint16Array(2),
      "\ud800",
      Object.create(null),
      cycle,
      JSON.parse(`${"[".repeat(70)}${"]".repeat(70)}`),
    ];
    for (const [i, value] of outside.entries()) {
      assert.equal(encodeCanonicalFast(value as Canonical), undefined, `case ${i}`);
    }
    // Deep nesting is plain data that cborg encodes.
    const deep = JSON.parse(`${"[".repeat(70)}${"]".repeat(70)}`) as Canonical;
    assert.deepStrictEqual(decodeCanonicalStrict(encodeCanonical(deep), 1000, -1000), deep);
    assert.throws(() => encodeCanonical(1.5), /canonical encoding refuses/);
  });

  it("is not confused by a getter that encodes while it encodes", () => {
    const sneaky = {};
    Object.defineProperty(sneaky, "a", { enumerable: true, get: () => encodeCanonical([1, 2, 3]) });
    // Not a plain value of the data model, but whatever path takes it, the bytes must be consistent.
    const bytes = encodeCanonical(sneaky as Canonical);
    assert.deepStrictEqual(decodeCanonicalStrict(bytes, 100), { a: encodeCanonical([1, 2, 3]) });
  });
});
