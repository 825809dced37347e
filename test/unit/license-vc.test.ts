/**
 * License export (src/license/vc.ts): the VC 2.0 shape of a license, that nothing personal leaks,
 * and Bitstring Status List v1.0 encoding checked against node:zlib and the spec's bit order.
 */
import assert from "node:assert/strict";
import path from "node:path";
import { describe, test } from "node:test";
import { gunzipSync, gzipSync } from "node:zlib";
import { build } from "esbuild";
import { CodedError } from "../../src/core/errors.ts";
import { formatLicenseId, licenseKeyOf, usccCheckChar } from "../../src/core/license/identifier.ts";
import { canonicalJson, type JsonObject } from "../../src/core/license/json.ts";
import type { LicenseHead, LicenseVersion } from "../../src/core/license/records.ts";
import {
  buildBitstring,
  buildLicenseCredential,
  buildStatusListCredential,
  citychainContext,
  credentialsV2Context,
  decodeStatusList,
  encodeStatusList,
  fromBase64Url,
  type LicenseCredentialInput,
  parseStatusListIndex,
  readStatusBit,
  statusListLimits,
  toBase64Url,
} from "../../src/license/vc.ts";

const typeCode = `91310000MA1FL4XX1${usccCheckChar("91310000MA1FL4XX1")}001`;
const issuerCode = `11310000002400123${usccCheckChar("11310000002400123")}`;
const keyFields = { typeCode, issuerCode, serial: "20240000001" };
const licenseId = formatLicenseId({ ...keyFields, version: 1 });
const holder = "ab".repeat(32);

const version: LicenseVersion = {
  id: licenseId,
  licenseKey: licenseKeyOf(keyFields),
  version: 1,
  typeCode,
  issuerCode,
  issuerDept: "market",
  holder,
  holderCodeType: "111",
  areaCode: "310000",
  issuedAtMs: Date.UTC(2024, 0, 15, 9, 30),
  validFromMs: Date.UTC(2024, 0, 15),
  validUntilMs: Date.UTC(2029, 0, 14, 23, 59, 59),
  publicContent: canonicalJson({
    number: "NO.2024-0001",
    companyName: "Example Trading Co.",
    kind: "company",
  }),
  sealed: { nonce: new Uint8Array(12), ciphertext: new Uint8Array(32) },
  contentHash: new Uint8Array(32).map((_, i) => i),
  issuedBy: "market-officer-1",
  txId: "cd".repeat(32),
  height: 1234,
};

const head: LicenseHead = {
  licenseKey: version.licenseKey,
  typeCode,
  issuerDept: "market",
  holder,
  currentVersion: 1,
  currentId: licenseId,
  status: "valid",
  statusReason: null,
  statusChangedAtMs: version.issuedAtMs,
  statusIndex: 4242,
};

const input: LicenseCredentialInput = {
  version,
  head,
  type: { code: typeCode, name: "Business license", personalFields: ["legalRepresentative", "birthDate"] },
  issuerName: "Market Regulation Bureau",
  chainId: "citychain-dev",
  baseUrl: "https://licenses.city.example/",
};

describe("license credential (VC 2.0)", () => {
  test("has the required VC 2.0 properties", () => {
    const vc = buildLicenseCredential(input);
    const context = vc["@context"] as unknown[];
    assert.equal(context[0], credentialsV2Context, "the base context comes first");
    assert.deepEqual(context[1], citychainContext);
    assert.deepEqual(vc["type"], ["VerifiableCredential", "ElectronicLicense"]);
    assert.equal(vc["id"], `urn:citychain:license:${licenseId}`);
    assert.deepEqual(vc["issuer"], { id: "urn:citychain:dept:market", name: "Market Regulation Bureau" });
    assert.equal(vc["validFrom"], "2024-01-15T00:00:00.000Z");
    assert.equal(vc["validUntil"], "2029-01-14T23:59:59.000Z");
    const subject = vc["credentialSubject"] as JsonObject;
    assert.equal(subject["id"], `urn:citychain:subject:${holder}`);
    assert.equal(subject["licenseId"], licenseId);
    assert.equal(subject["issuedAt"], "2024-01-15T09:30:00.000Z");
    assert.deepEqual(subject["publicContent"], JSON.parse(version.publicContent));
    const evidence = (vc["evidence"] as JsonObject[])[0]!;
    assert.deepEqual(evidence["type"], ["LedgerInclusion"]);
    assert.equal(evidence["chainId"], "citychain-dev");
    assert.equal(evidence["blockHeight"], 1234);
    assert.equal(evidence["contentHash"], "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f");
  });

  test("two status entries, one per purpose, at the head's index", () => {
    const vc = buildLicenseCredential(input);
    const entries = vc["credentialStatus"] as JsonObject[];
    assert.deepEqual(
      entries.map((e) => e["statusPurpose"]),
      ["revocation", "suspension"],
    );
    for (const entry of entries) {
      const url = `https://licenses.city.example/v1/status-lists/${typeCode}/${entry["statusPurpose"]}`;
      assert.equal(entry["type"], "BitstringStatusListEntry");
      assert.equal(entry["statusListIndex"], "4242", "a string, per the spec");
      assert.equal(entry["statusListCredential"], url);
      assert.equal(entry["id"], `${url}#4242`);
      assert.equal(parseStatusListIndex(entry["statusListIndex"] as string), 4242);
    }
  });

  test("every term outside the base context is defined (nothing falls to @vocab)", () => {
    const vc = buildLicenseCredential(input);
    const defined = new Set([
      ...Object.keys(citychainContext),
      // VC 2.0 base context terms used here
      "@context",
      "id",
      "type",
      "name",
      "issuer",
      "validFrom",
      "validUntil",
      "credentialSubject",
      "credentialStatus",
      "evidence",
      "statusPurpose",
      "statusListIndex",
      "statusListCredential",
      "VerifiableCredential",
      "BitstringStatusListEntry",
    ]);
    const visit = (value: unknown, inJsonLiteral: boolean): void => {
      if (Array.isArray(value)) for (const v of value) visit(v, inJsonLiteral);
      else if (value !== null && typeof value === "object" && !inJsonLiteral) {
        for (const [key, v] of Object.entries(value)) {
          if (key === "@context") continue;
          assert.ok(defined.has(key), `term ${key} is defined`);
          if (key === "type") for (const t of [v].flat()) assert.ok(defined.has(t as string), `type ${t}`);
          visit(v, key === "publicContent");
        }
      }
    };
    visit(vc, false);
  });

  test("no personal field and no sealed data leaks", () => {
    const vc = buildLicenseCredential(input);
    const text = JSON.stringify(vc);
    for (const field of [
      "legalRepresentative",
      "birthDate",
      "holderName",
      'holderCode"',
      "sealed",
      "nonce",
    ]) {
      assert.doesNotMatch(text, new RegExp(field));
    }
    const leaking = {
      ...input,
      version: { ...version, publicContent: canonicalJson({ birthDate: "1980-01-01" }) },
    };
    assert.throws(() => buildLicenseCredential(leaking), { code: "INVARIANT_BROKEN" });
  });

  test("no validUntil when valid until revoked; bad base URLs refused", () => {
    const vc = buildLicenseCredential({ ...input, version: { ...version, validUntilMs: null } });
    assert.equal(Object.hasOwn(vc, "validUntil"), false);
    for (const baseUrl of ["ftp://x", "https://x/?a=1", "licenses.example"]) {
      assert.throws(() => buildLicenseCredential({ ...input, baseUrl }), {
        code: "PAYLOAD_INVALID",
        field: "baseUrl",
      });
    }
  });

  test("the same input gives the same document", () => {
    assert.equal(canonicalJson(buildLicenseCredential(input)), canonicalJson(buildLicenseCredential(input)));
  });
});

describe("Bitstring Status List", () => {
  const issuer = { id: "urn:citychain:dept:market", name: "Market Regulation Bureau" };
  const listInput = {
    typeCode,
    purpose: "revocation" as const,
    baseUrl: "https://licenses.city.example",
    validFromMs: Date.UTC(2024, 5, 1),
    issuer,
  };

  test("credential shape", () => {
    const vc = buildStatusListCredential({ ...listInput, entries: [{ index: 3, set: true }] });
    const url = `https://licenses.city.example/v1/status-lists/${typeCode}/revocation`;
    assert.deepEqual(vc["@context"], [credentialsV2Context]);
    assert.deepEqual(vc["type"], ["VerifiableCredential", "BitstringStatusListCredential"]);
    assert.equal(vc["id"], url);
    assert.equal(vc["validFrom"], "2024-06-01T00:00:00.000Z");
    const subject = vc["credentialSubject"] as JsonObject;
    assert.equal(subject["id"], `${url}#list`);
    assert.equal(subject["type"], "BitstringStatusList");
    assert.equal(subject["statusPurpose"], "revocation");
    assert.match(subject["encodedList"] as string, /^u[A-Za-z0-9_-]+$/, "multibase base64url, no padding");
  });

  test("round trip at 0, 131071 and others, across a one-bit flip", () => {
    const indexes = [0, 1, 7, 8, 4242, 65_535, 131_070, 131_071];
    for (const index of indexes) {
      const cleared = encodeStatusList(buildBitstring([{ index, set: false }]));
      const flipped = encodeStatusList(buildBitstring([{ index, set: true }]));
      assert.notEqual(cleared, flipped);
      assert.equal(readStatusBit(cleared, index), false);
      assert.equal(readStatusBit(flipped, index), true);
      for (const other of indexes.filter((i) => i !== index))
        assert.equal(readStatusBit(flipped, other), false);
    }
    const many = encodeStatusList(buildBitstring(indexes.map((index, i) => ({ index, set: i % 2 === 0 }))));
    indexes.forEach((index, i) => {
      assert.equal(readStatusBit(many, index), i % 2 === 0, `index ${index}`);
    });
  });

  test("index 0 is the left-most bit of the first byte; decodes with node:zlib", () => {
    const encoded = encodeStatusList(
      buildBitstring([
        { index: 0, set: true },
        { index: 9, set: true },
      ]),
    );
    const raw = gunzipSync(fromBase64Url(encoded.slice(1), "encodedList"));
    assert.equal(raw.length, 16 * 1024, "spec minimum: 16 KB uncompressed");
    assert.equal(raw[0], 0b1000_0000);
    assert.equal(raw[1], 0b0100_0000);
    assert.ok(raw.subarray(2).every((b) => b === 0));
  });

  test("sizes: the spec minimum, then whole multiples of it", () => {
    assert.equal(buildBitstring([]).length * 8, statusListLimits.bitsMin);
    assert.equal(buildBitstring([{ index: 131_071, set: true }]).length * 8, statusListLimits.bitsMin);
    assert.equal(buildBitstring([{ index: 131_072, set: false }]).length * 8, 2 * statusListLimits.bitsMin);
    const big = encodeStatusList(buildBitstring([{ index: 300_000, set: true }]));
    assert.equal(readStatusBit(big, 300_000), true);
    assert.equal(decodeStatusList(big).length * 8, 3 * statusListLimits.bitsMin);
  });

  test("bad entries are refused", () => {
    for (const index of [-1, 1.5, statusListLimits.bitsMax]) {
      assert.throws(() => buildBitstring([{ index, set: true }]), {
        code: "PAYLOAD_INVALID",
        field: "entries",
      });
    }
    assert.throws(
      () =>
        buildBitstring([
          { index: 5, set: true },
          { index: 5, set: false },
        ]),
      /twice/,
    );
  });

  test("readers refuse short lists, out-of-range indexes, garbage and bombs", () => {
    const encode = (bytes: Uint8Array) => `u${toBase64Url(gzipSync(bytes))}`;
    const short = encode(new Uint8Array(1024));
    assert.throws(() => readStatusBit(short, 0), /STATUS_LIST_LENGTH_ERROR/);
    const good = encodeStatusList(buildBitstring([]));
    assert.throws(() => readStatusBit(good, 131_072), /RANGE_ERROR/);
    assert.throws(() => readStatusBit(good, -1), /RANGE_ERROR/);
    for (const bad of ["", "z123", "u", "u!!!!", "uAAAA", `m${good.slice(1)}`, `${good}=`]) {
      assert.throws(
        () => readStatusBit(bad, 0),
        (e: unknown) => e instanceof CodedError && e.code === "BAD_ENCODING",
        bad,
      );
    }
    const bomb = encode(new Uint8Array(statusListLimits.bitsMax / 8 + 1));
    assert.ok(bomb.length < 10_000, "a small input");
    assert.throws(() => readStatusBit(bomb, 0), /inflates beyond/);
    assert.throws(() => readStatusBit(`u${"A".repeat(statusListLimits.encodedCharsMax)}`, 0), /longer than/);
  });

  test("statusListIndex strings", () => {
    assert.equal(parseStatusListIndex("0"), 0);
    for (const bad of ["", "-1", "01", "1.0", " 1", "99999999999999999"]) {
      assert.throws(() => parseStatusListIndex(bad), { code: "PAYLOAD_INVALID" });
    }
  });

  test("base64url round trip at every length mod 3", () => {
    for (let n = 0; n < 10; n++) {
      const bytes = new Uint8Array(n).map((_, i) => (i * 97 + 13) & 255);
      const text = toBase64Url(bytes);
      assert.equal(text, Buffer.from(bytes).toString("base64url"));
      assert.deepEqual(fromBase64Url(text, "x"), bytes);
    }
    assert.throws(() => fromBase64Url("AB", "x"), /not canonical/); // 0x00 with non-zero spare bits
  });

  test("the same entries give the same encoded list (no time stamp in the GZIP header)", () => {
    const a = buildStatusListCredential({ ...listInput, entries: [{ index: 1, set: true }] });
    const b = buildStatusListCredential({ ...listInput, entries: [{ index: 1, set: true }] });
    assert.equal(canonicalJson(a), canonicalJson(b));
  });
});

test("vc.ts and qr.ts bundle for the browser without Node builtins", async () => {
  const result = await build({
    stdin: {
      contents: 'export * from "./src/license/vc.ts"; export * from "./src/license/qr.ts";',
      resolveDir: path.resolve(import.meta.dirname, "../.."),
      loader: "ts",
    },
    bundle: true,
    platform: "browser",
    format: "esm",
    write: false,
    logLevel: "silent",
  });
  assert.equal(result.errors.length, 0);
  assert.doesNotMatch(result.outputFiles[0]!.text, /require\(["']node:|from ["']node:/);
});
