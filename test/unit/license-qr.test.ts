/**
 * License QR payloads (src/license/qr.ts): round trips, the QR alphanumeric character set, one
 * spelling per payload, and clear refusals of malformed ones.
 */
import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { CodedError } from "../../src/core/errors.ts";
import { formatLicenseId, usccCheckChar } from "../../src/core/license/identifier.ts";
import { encodeLicenseQr, licenseQrPrefix, parseLicenseQr, toBase32 } from "../../src/license/qr.ts";

const typeCode = `91310000MA1FL4XX1${usccCheckChar("91310000MA1FL4XX1")}001`;
const issuerCode = `11310000002400123${usccCheckChar("11310000002400123")}`;
const licenseId = formatLicenseId({ typeCode, issuerCode, serial: "20240000001", version: 2 });
const contentHash = new Uint8Array(32).map((_, i) => (i * 37 + 5) & 255);
const qrAlphanumeric = /^[0-9A-Z $%*+\-./:]*$/;

function refused(text: string, field: string, code = "BAD_ENCODING"): void {
  assert.throws(
    () => parseLicenseQr(text),
    (error: unknown) => {
      assert.ok(error instanceof CodedError, String(error));
      assert.equal(error.code, code, error.message);
      assert.equal(error.field, field, error.message);
      return true;
    },
    text,
  );
}

describe("license QR payload", () => {
  test("round trip, alphanumeric mode only, compact", () => {
    for (const chainId of ["citychain-dev", "city.prod_2", "a"]) {
      const text = encodeLicenseQr({ chainId, licenseId, contentHash });
      assert.match(text, qrAlphanumeric);
      assert.ok(text.startsWith(`${licenseQrPrefix}:`));
      assert.ok(text.length < 160, `${text.length} characters`);
      const parsed = parseLicenseQr(text);
      assert.equal(parsed.chainId, chainId);
      assert.equal(parsed.licenseId, licenseId);
      assert.deepEqual(parsed.contentHash, contentHash);
    }
  });

  test("the form is pinned", () => {
    const text = encodeLicenseQr({ chainId: "city_x", licenseId, contentHash: new Uint8Array(32) });
    assert.equal(text, `CCL1:CITY*X:${licenseId}:${"A".repeat(52)}`);
  });

  test("base32 matches RFC 4648 test vectors (unpadded)", () => {
    const vectors: Array<[string, string]> = [
      ["", ""],
      ["f", "MY"],
      ["fo", "MZXQ"],
      ["foo", "MZXW6"],
      ["foob", "MZXW6YQ"],
      ["fooba", "MZXW6YTB"],
      ["foobar", "MZXW6YTBOI"],
    ];
    for (const [plain, encoded] of vectors) assert.equal(toBase32(new TextEncoder().encode(plain)), encoded);
  });

  test("malformed payloads are refused naming the part", () => {
    const good = encodeLicenseQr({ chainId: "citychain-dev", licenseId, contentHash });
    const [, chain, id, hash] = good.split(":") as [string, string, string, string];
    refused("", "qr");
    refused(`CCL2:${chain}:${id}:${hash}`, "qr");
    refused(`ccl1:${chain}:${id}:${hash}`, "qr");
    refused(`CCL1:${chain}:${id}`, "qr");
    refused(`${good}:X`, "qr");
    refused(`CCL1:${chain.toLowerCase()}:${id}:${hash}`, "qr.chainId");
    refused(`CCL1::${id}:${hash}`, "qr.chainId");
    refused(`CCL1:-BAD:${id}:${hash}`, "qr.chainId");
    refused(`CCL1:${chain}:${id.slice(0, -1)}0:${hash}`, "qr.licenseId", "LICENSE_ID_MALFORMED");
    refused(`CCL1:${chain}:${id.toLowerCase()}:${hash}`, "qr.licenseId", "LICENSE_ID_MALFORMED");
    refused(`CCL1:${chain}:${id}:${hash.slice(1)}`, "qr.contentHash");
    refused(`CCL1:${chain}:${id}:${hash.toLowerCase()}`, "qr.contentHash");
    refused(`CCL1:${chain}:${id}:${"0".repeat(52)}`, "qr.contentHash");
    refused(`CCL1:${chain}:${id}:${"A".repeat(51)}B`, "qr.contentHash"); // non-zero spare bits
    refused(`CCL1:${chain}:${id}:${"0123456789abcdef".repeat(4)}`, "qr.contentHash"); // hex is not accepted
    refused(`${good} `, "qr.contentHash");
    refused("X".repeat(300), "qr");
  });

  test("encoding refuses what could never parse", () => {
    assert.throws(() => encodeLicenseQr({ chainId: "City", licenseId, contentHash }), { field: "chainId" });
    assert.throws(() => encodeLicenseQr({ chainId: "c", licenseId: "1.2.3", contentHash }), {
      code: "LICENSE_ID_MALFORMED",
    });
    assert.throws(() => encodeLicenseQr({ chainId: "c", licenseId, contentHash: new Uint8Array(31) }), {
      field: "contentHash",
    });
  });
});
