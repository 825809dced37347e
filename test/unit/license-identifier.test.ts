/**
 * GB/T 36904 license identifiers and the holder-code checks beside them. The check characters are
 * recomputed here from the standards' verification formulas (not the module's), so a bug shared by
 * both sides cannot pass, and they are pinned to public vectors: two real identifiers and the
 * MOD 37,36 vectors from xbib/standardnumber's MOD3736Test. Citizen ID numbers are synthetic (region
 * 99xxxx does not exist); their check digits are computed here.
 */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { CodedError } from "../../src/core/errors.ts";
import {
  formatLicenseId,
  holderCodeTypes,
  isLicenseId,
  iso7064Mod37_36CheckChar,
  isValidCitizenId,
  isValidUscc,
  type LicenseIdField,
  licenseIdLengthMax,
  licenseKeyOf,
  nextVersionId,
  parseLicenseId,
  usccCheckChar,
  validateHolderCode,
} from "../../src/core/license/identifier.ts";

const example = "1.2.156.3005.2.11100000000013338W011.11430000006122244L.20230000403.001.U";
const examplePayload = "11100000000013338W01111430000006122244L20230000403001";
const secondExample = "1.2.156.3005.2.11100000000013338W032.11220000013544541J.2430599.001.F";
const root = "1.2.156.3005.2.";
const alphabet36 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ";

/** ISO/IEC 7064 hybrid verification: run over payload and check character; the last s must be 1. */
function verifiesMod37_36(text: string): boolean {
  const m = 36;
  let p = m;
  let s = 0;
  for (const character of text) {
    s = (p + alphabet36.indexOf(character)) % m || m;
    p = (2 * s) % (m + 1);
  }
  return s === 1;
}

/** GB 32100 weights are 3^i mod 31; a code is valid when the weighted sum with the check is 0 mod 31. */
function verifiesUscc(code: string): boolean {
  const usccAlphabet = "0123456789ABCDEFGHJKLMNPQRTUWXY";
  let sum = 0;
  let weight = 1;
  for (let index = 0; index < 17; index++) {
    sum += usccAlphabet.indexOf(code[index]!) * weight;
    weight = (weight * 3) % 31;
  }
  return (sum + usccAlphabet.indexOf(code[17]!)) % 31 === 0;
}

/** ISO/IEC 7064 MOD 11-2: weights 2^(18-i) mod 11 over all 18 characters, X = 10, sum = 1 mod 11. */
function citizenIdWithCheck(body: string): string {
  for (const check of "0123456789X") {
    const candidate = body + check;
    let sum = 0;
    for (let index = 0; index < 18; index++) {
      const value = candidate[index] === "X" ? 10 : Number(candidate[index]);
      sum += value * (2 ** (17 - index) % 11);
    }
    if (sum % 11 === 1) return candidate;
  }
  throw new Error("no MOD 11-2 check character");
}

function assertMalformed(input: unknown, field: LicenseIdField, messagePart?: string): void {
  assert.throws(
    () => parseLicenseId(input),
    (error: unknown) => {
      assert.ok(error instanceof CodedError, `not a CodedError: ${String(error)}`);
      assert.equal(error.code, "LICENSE_ID_MALFORMED");
      assert.equal(error.field, field, `${JSON.stringify(input)}: ${error.message}`);
      if (messagePart !== undefined) assert.match(error.message, new RegExp(messagePart));
      return true;
    },
  );
}

/** Replaces the part at index (0 type code .. 4 check char) of the example. */
function withPart(index: number, value: string): string {
  const parts = example.slice(root.length).split(".");
  parts[index] = value;
  return root + parts.join(".");
}

describe("license identifier: ISO/IEC 7064 MOD 37,36", () => {
  it("matches published vectors", () => {
    for (const vector of ["A12425GABC1234002M", "B159D8FA01240000K", "188166C7342000003"]) {
      assert.equal(iso7064Mod37_36CheckChar(vector.slice(0, -1)), vector.at(-1), vector);
      assert.ok(verifiesMod37_36(vector), vector);
    }
  });

  it("gives the public examples their check characters", () => {
    assert.equal(iso7064Mod37_36CheckChar(examplePayload), "U");
    assert.ok(verifiesMod37_36(`${examplePayload}U`));
    assert.ok(verifiesMod37_36("11100000000013338W03211220000013544541J2430599001F"));
  });

  it("agrees with the verification formula on every check character of many payloads", () => {
    for (let length = 1; length <= 40; length++) {
      let payload = "";
      for (let index = 0; index < length; index++) payload += alphabet36[(index * 7 + length * 13) % 36];
      const check = iso7064Mod37_36CheckChar(payload);
      for (const candidate of alphabet36) {
        assert.equal(verifiesMod37_36(payload + candidate), candidate === check, payload + candidate);
      }
    }
  });

  it("changes under every single-character substitution of the example payload", () => {
    let substitutions = 0;
    for (let index = 0; index < examplePayload.length; index++) {
      for (const replacement of alphabet36) {
        if (replacement === examplePayload[index]) continue;
        const changed = examplePayload.slice(0, index) + replacement + examplePayload.slice(index + 1);
        assert.notEqual(iso7064Mod37_36CheckChar(changed), "U", changed);
        substitutions++;
      }
    }
    assert.equal(substitutions, 53 * 35);
  });

  it("changes under every transposition of adjacent distinct characters of the example payload", () => {
    for (let index = 0; index + 1 < examplePayload.length; index++) {
      const a = examplePayload[index]!;
      const b = examplePayload[index + 1]!;
      if (a === b) continue;
      const swapped = examplePayload.slice(0, index) + b + a + examplePayload.slice(index + 2);
      assert.notEqual(iso7064Mod37_36CheckChar(swapped), "U", swapped);
    }
  });
});

describe("license identifier: parse and format", () => {
  it("parses the public example", () => {
    assert.deepEqual(parseLicenseId(example), {
      typeCode: "11100000000013338W011",
      issuerCode: "11430000006122244L",
      serial: "20230000403",
      version: 1,
      checkChar: "U",
    });
    assert.deepEqual(parseLicenseId(secondExample), {
      typeCode: "11100000000013338W032",
      issuerCode: "11220000013544541J",
      serial: "2430599",
      version: 1,
      checkChar: "F",
    });
  });

  it("round-trips: formatLicenseId(parseLicenseId(x)) === x", () => {
    for (const id of [example, secondExample]) assert.equal(formatLicenseId(parseLicenseId(id)), id);
    const built = formatLicenseId({
      typeCode: "11100000000013338W011",
      issuerCode: "11430000006122244L",
      serial: "Z",
      version: 42,
    });
    assert.equal(built.split(".").at(-2), "042");
    assert.equal(formatLicenseId(parseLicenseId(built)), built);
  });

  it("derives the version-independent license key", () => {
    assert.equal(
      licenseKeyOf(parseLicenseId(example)),
      "11100000000013338W011.11430000006122244L.20230000403",
    );
    assert.equal(licenseKeyOf(parseLicenseId(nextVersionId(example))), licenseKeyOf(parseLicenseId(example)));
  });

  it("steps to the next version with a fresh check character, and stops at 999", () => {
    const next = nextVersionId(example);
    const parts = parseLicenseId(next);
    assert.equal(parts.version, 2);
    assert.equal(next, `${root}11100000000013338W011.11430000006122244L.20230000403.002.${parts.checkChar}`);
    const last = formatLicenseId({ ...parts, version: 999 });
    assert.equal(parseLicenseId(last).version, 999);
    assert.throws(() => nextVersionId(last), { code: "LICENSE_ID_MALFORMED", field: "version" });
  });

  it("isLicenseId answers without throwing", () => {
    assert.equal(isLicenseId(example), true);
    assert.equal(isLicenseId(`${example.slice(0, -1)}7`), false);
    assert.equal(isLicenseId(42), false);
    assert.equal(isLicenseId(undefined), false);
  });

  it("refuses a wrong root or frame as root", () => {
    assertMalformed(42, "root", "string");
    assertMalformed("", "root");
    assertMalformed(example.replace("3005.2.", "3005.3."), "root", "starts with");
    assertMalformed(example.replace("1.2.156", "1.2.840"), "root");
    assertMalformed(example.slice(0, example.lastIndexOf(".")), "root", "found 4");
    assertMalformed(`${example}.U`, "root", "found 6");
    assertMalformed(` ${example}`, "root");
  });

  it("checks the length first", () => {
    const long = `${root}${"9".repeat(licenseIdLengthMax)}`;
    assertMalformed(long, "root", `at most ${licenseIdLengthMax} characters, found ${long.length}`);
    assertMalformed("x".repeat(licenseIdLengthMax + 1), "root", "at most");
  });

  it("refuses a malformed type code", () => {
    assertMalformed(withPart(0, "11100000000013338W01"), "typeCode", "21 characters");
    assertMalformed(withPart(0, "11100000000013338W0111"), "typeCode");
    assertMalformed(withPart(0, "11100000000013338WA11"), "typeCode");
    assertMalformed(withPart(0, "1110000000001333IW011"), "typeCode");
    assertMalformed(withPart(0, ""), "typeCode");
    assertMalformed(withPart(0, "11100000000013338w011"), "typeCode", "upper case");
  });

  it("refuses a malformed issuer code", () => {
    assertMalformed(withPart(1, "11430000006122244"), "issuerCode", "unified social credit code");
    assertMalformed(withPart(1, "11430000006122244LL"), "issuerCode");
    assertMalformed(withPart(1, "1143000000612224OL"), "issuerCode");
    assertMalformed(withPart(1, "11430000006122244l"), "issuerCode", "upper case");
  });

  it("refuses a malformed serial", () => {
    assertMalformed(withPart(2, ""), "serial", "1 to 32");
    assertMalformed(withPart(2, "9".repeat(33)), "serial");
    assertMalformed(withPart(2, "2023-0000403"), "serial");
    assertMalformed(withPart(2, "2023000040a"), "serial", "upper case");
  });

  it("refuses a malformed version", () => {
    for (const version of ["000", "01", "0001", "1", "0A1", "", "-01"])
      assertMalformed(withPart(3, version), "version");
    assert.throws(() => formatLicenseId({ ...parseLicenseId(example), version: 0 }), { field: "version" });
    assert.throws(() => formatLicenseId({ ...parseLicenseId(example), version: 1000 }), { field: "version" });
    assert.throws(() => formatLicenseId({ ...parseLicenseId(example), version: 1.5 }), { field: "version" });
  });

  it("refuses a malformed or wrong check character", () => {
    assertMalformed(withPart(4, "7"), "checkChar", "^check character is 7, expected U$");
    assertMalformed(withPart(4, "UU"), "checkChar", "one character");
    assertMalformed(withPart(4, ""), "checkChar");
    assertMalformed(withPart(4, "u"), "checkChar", "upper case");
  });

  it("refuses a credit code with a wrong GB 32100 check character in its own field", () => {
    // 11430000006122244M has the wrong USCC check; give the identifier a correct MOD 37,36 character
    // so that only the USCC check can catch it.
    const issuerCode = "11430000006122244M";
    const payload = `11100000000013338W011${issuerCode}20230000403001`;
    const id = `${root}11100000000013338W011.${issuerCode}.20230000403.001.${iso7064Mod37_36CheckChar(payload)}`;
    assertMalformed(id, "issuerCode", "check character is M, expected L");
    const typeCode = "11100000000013338X011";
    const typePayload = `${typeCode}11430000006122244L20230000403001`;
    const typeId = `${root}${typeCode}.11430000006122244L.20230000403.001.${iso7064Mod37_36CheckChar(typePayload)}`;
    assertMalformed(typeId, "typeCode", "expected W");
    assert.throws(() => licenseKeyOf({ typeCode: "11100000000013338W011", issuerCode, serial: "1" }), {
      code: "LICENSE_ID_MALFORMED",
      field: "issuerCode",
    });
  });

  it("catches every single-character substitution anywhere in the payload or check character", () => {
    const offsets: number[] = [];
    for (let index = root.length; index < example.length; index++)
      if (example[index] !== ".") offsets.push(index);
    assert.equal(offsets.length, 53 + 1);
    let caught = 0;
    for (const offset of offsets) {
      for (const replacement of alphabet36) {
        if (replacement === example[offset]) continue;
        const changed = example.slice(0, offset) + replacement + example.slice(offset + 1);
        assert.throws(() => parseLicenseId(changed), { code: "LICENSE_ID_MALFORMED" }, changed);
        caught++;
      }
    }
    assert.equal(caught, 54 * 35);
  });

  it("catches every transposition of adjacent distinct characters, dots included", () => {
    let caught = 0;
    for (let index = root.length - 1; index + 1 < example.length; index++) {
      const a = example[index]!;
      const b = example[index + 1]!;
      if (a === b) continue;
      const swapped = example.slice(0, index) + b + a + example.slice(index + 2);
      assert.throws(() => parseLicenseId(swapped), { code: "LICENSE_ID_MALFORMED" }, swapped);
      caught++;
    }
    assert.ok(caught > 30);
  });
});

describe("unified social credit code (GB 32100-2015)", () => {
  const valid = ["11100000000013338W", "11430000006122244L", "11220000013544541J", "91350100M000100Y43"];

  it("accepts public codes, including those inside both example identifiers", () => {
    for (const code of valid) {
      assert.ok(verifiesUscc(code), code);
      assert.equal(usccCheckChar(code.slice(0, 17)), code[17], code);
      assert.equal(isValidUscc(code), true, code);
    }
  });

  it("refuses a wrong check character, length, letters outside the alphabet and lower case", () => {
    for (const code of valid) {
      for (const check of "0123456789ABCDEFGHJKLMNPQRTUWXY") {
        if (check !== code[17]) assert.equal(isValidUscc(code.slice(0, 17) + check), false);
      }
    }
    assert.equal(isValidUscc("11100000000013338"), false);
    assert.equal(isValidUscc("11100000000013338WW"), false);
    assert.equal(isValidUscc("1110000000001333IW"), false);
    assert.equal(isValidUscc("91350100m000100Y43"), false);
    assert.equal(isValidUscc(""), false);
  });

  it("treats a malformed body as a caller bug", () => {
    assert.throws(() => usccCheckChar("1110000000001333"), { code: "INVARIANT_BROKEN" });
    assert.throws(() => usccCheckChar("1110000000001333O"), { code: "INVARIANT_BROKEN" });
  });
});

describe("citizen ID number (GB 11643-1999)", () => {
  it("accepts synthetic numbers with a correct check digit and a real birth date", () => {
    for (const body of ["99010119900101001", "99999920000229123", "99000018000101999", "99123420991231000"]) {
      assert.equal(isValidCitizenId(citizenIdWithCheck(body)), true, body);
    }
  });

  it("accepts X as the check character, upper case only", () => {
    let withX: string | undefined;
    for (let sequence = 0; sequence < 100 && withX === undefined; sequence++) {
      const candidate = citizenIdWithCheck(`99010119900101${String(sequence).padStart(3, "0")}`);
      if (candidate.endsWith("X")) withX = candidate;
    }
    assert.ok(withX !== undefined);
    assert.equal(isValidCitizenId(withX), true);
    assert.equal(isValidCitizenId(`${withX.slice(0, 17)}x`), false);
  });

  it("agrees with MOD 11-2 on every check digit, over bodies that reach every residue", () => {
    const checks = new Set<string>();
    for (let sequence = 0; sequence < 200; sequence++) {
      const id = citizenIdWithCheck(`99010119900101${String(sequence).padStart(3, "0")}`);
      checks.add(id[17]!);
      for (const check of "0123456789X") {
        assert.equal(isValidCitizenId(id.slice(0, 17) + check), check === id[17], id.slice(0, 17) + check);
      }
    }
    assert.equal(checks.size, 11);
  });

  it("refuses dates that are not on the calendar, even with a correct check digit", () => {
    for (const date of ["19000229", "20230229", "20231301", "20230001", "20230431", "20230100", "17991231"]) {
      assert.equal(isValidCitizenId(citizenIdWithCheck(`990101${date}001`)), false, date);
    }
    assert.equal(isValidCitizenId(citizenIdWithCheck("99010120000229001")), true);
  });

  it("refuses wrong shapes", () => {
    const id = citizenIdWithCheck("99010119900101001");
    assert.equal(isValidCitizenId(id.slice(0, 17)), false);
    assert.equal(isValidCitizenId(`${id}0`), false);
    assert.equal(isValidCitizenId(`A${id.slice(1)}`), false);
    assert.equal(isValidCitizenId(""), false);
  });
});

describe("holder codes", () => {
  it("lists each accepted type once, 111 and 001 included, and cannot be changed", () => {
    const codes = holderCodeTypes.map((type) => type.code);
    assert.equal(new Set(codes).size, codes.length);
    for (const code of ["001", "111"]) assert.ok(codes.includes(code), code);
    for (const code of codes) assert.match(code, /^[0-9]{3}$/);
    assert.ok(Object.isFrozen(holderCodeTypes));
    assert.ok(holderCodeTypes.every((type) => Object.isFrozen(type)));
  });

  it("checks citizen ID numbers and credit codes with their check characters", () => {
    const id = citizenIdWithCheck("99010119900101001");
    validateHolderCode("111", id);
    validateHolderCode("001", "91350100M000100Y43");
    assert.throws(() => validateHolderCode("111", `${id.slice(0, 17)}${id[17] === "0" ? "1" : "0"}`), {
      code: "LICENSE_CONTENT_INVALID",
      field: "holderCode",
    });
    assert.throws(() => validateHolderCode("001", "91350100M000100Y44"), { field: "holderCode" });
    assert.throws(() => validateHolderCode("001", "91350100m000100Y43"), { message: /upper case/ });
  });

  it("checks Hong Kong and Macao permits and the general shape of the others", () => {
    validateHolderCode("516", "H12345678");
    validateHolderCode("516", "M1234567801");
    assert.throws(() => validateHolderCode("516", "H1234567"), { field: "holderCode" });
    assert.throws(() => validateHolderCode("516", "K12345678"), { field: "holderCode" });
    validateHolderCode("414", "E12345678");
    validateHolderCode("099", "12345678-9");
    validateHolderCode("999", "A");
    assert.throws(() => validateHolderCode("414", "e12345678"), { message: /upper case/ });
    assert.throws(() => validateHolderCode("999", ""), { field: "holderCode" });
    assert.throws(() => validateHolderCode("099", "-123"), { field: "holderCode" });
    assert.throws(() => validateHolderCode("511", "1234 5678"), { field: "holderCode" });
    assert.throws(() => validateHolderCode("999", "A".repeat(65)), { field: "holderCode" });
  });

  it("never repeats a holder code in an error message: it is personal data", () => {
    const id = citizenIdWithCheck("99010119900101001");
    const wrong = `${id.slice(0, 17)}${id[17] === "0" ? "1" : "0"}`;
    for (const [codeType, code] of [
      ["111", wrong],
      ["111", wrong.toLowerCase().replace(/.$/, "x")],
      ["516", "h12345678"],
      ["414", "E 12345678"],
    ] as const) {
      assert.throws(
        () => validateHolderCode(codeType, code),
        (error: unknown) => error instanceof CodedError && !error.message.includes(code),
      );
    }
  });

  it("refuses an unknown code type", () => {
    assert.throws(() => validateHolderCode("553", "X"), {
      code: "LICENSE_CONTENT_INVALID",
      field: "holderCodeType",
    });
    assert.throws(() => validateHolderCode("11", "X"), { field: "holderCodeType" });
  });
});
