/**
 * The bytes that are hashed and signed, pinned by checked-in test vectors (test/vectors/encoding.json):
 * canonical CBOR values, a transaction (body, signing bytes, id, full envelope), a block header and
 * its hash, commits, a validator set's hash, RFC 6962 Merkle roots and audit paths for 0..7 leaves,
 * and a state-tree root with proofs. Every vector is recomputed from the inputs defined in this file
 * and compared with the file, so any change to these bytes is a visible diff (and a consensus change:
 * every node and every SDK must agree on them). The file is meant to be read by other
 * implementations too: inputs are written beside their outputs, byte strings as {"$hex": "..."}.
 *
 * Generator mode, after an intentional change to the encoding:
 *
 *   CITYCHAIN_WRITE_VECTORS=1 node --import tsx --test test/unit/encoding.test.ts
 *
 * rewrites the file from the current code; review the diff before you keep it. ECDSA signatures are
 * randomized, so a signature already in the file is kept while it still verifies over the same
 * message, and only replaced (by a fresh low-S signature from the fixed test key) when that message
 * changed. Outside generator mode the stored signatures must verify.
 *
 * Beside the vectors: independent checks against RFC 8949 Appendix A and a reference RFC 6962
 * implementation, the inputs decodeCanonical refuses, the low-S rule, and decodeTx's refusals.
 */
import assert from "node:assert/strict";
import {
  createHash,
  createPrivateKey,
  createPublicKey,
  sign as cryptoSign,
  verify as cryptoVerify,
} from "node:crypto";
import { existsSync, readFileSync, writeFileSync } from "node:fs";
import { describe, it } from "node:test";
import { fileURLToPath } from "node:url";
import {
  type BlockHeader,
  blockHashOf,
  type Commit,
  commitHash,
  decodeBlock,
  decodeCommit,
  decodeHeader,
  encodeBlock,
  encodeCommit,
  encodeHeader,
  makeBlock,
  txRootOf,
  type Validator,
  validatorIdOf,
  validatorsHashOf,
  voteSigningBytes,
  voteTypePrecommit,
} from "../../src/core/block.ts";
import {
  type Canonical,
  canonicalDepthMax,
  decodeCanonical,
  encodeCanonical,
  encodeCanonicalTransient,
  fromHex,
  toHex,
  utf8,
} from "../../src/core/encoding.ts";
import { CodedError, type ErrorCode } from "../../src/core/errors.ts";
import { resultLeaf, resultsRootOf, type TxResult } from "../../src/core/execution.ts";
import { sha256 } from "../../src/core/hash.ts";
import {
  merkleLeafHash,
  merkleProof,
  merkleRoot,
  merkleRootOfLeafHashes,
  verifyMerkleProof,
} from "../../src/core/merkle.ts";
import { isCanonicalP256Signature, normalizeP256Signature } from "../../src/core/signature.ts";
import { MemorySmtNodeStore, SparseMerkleTree, smtSha256 } from "../../src/core/smt.ts";
import { encodeProof, verifyProof } from "../../src/core/smt-proof.ts";
import {
  decodeTx,
  encodeTx,
  encodeTxBody,
  signingBytes,
  type TxBody,
  type TxSignature,
  txIdOf,
  txLimits,
  txSigningTag,
} from "../../src/core/tx.ts";
import { WebCryptoSigner } from "../../src/sdk/signer.ts";

// ---------------------------------------------------------------------------------------------
// Fixed inputs

/** A P-256 key used only by these vectors. Never use it for anything else. */
const testKeyPem = `-----BEGIN PRIVATE KEY-----
MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgE9lXJg4gTjyZBUUl
osKdqP4sBjs29qYx8GWeo3n9ckChRANCAAQWFktiPhU6F686F09hMG/yP1YLl8l5
OJm6+TxdtYzsCiMkObUGBHMVIIzY4F2M04G3jj9k9MAGm6cNUtUeH24r
-----END PRIVATE KEY-----
`;
const testPrivateKey = createPrivateKey(testKeyPem);
const testSpki = new Uint8Array(createPublicKey(testPrivateKey).export({ format: "der", type: "spki" }));
/** A second validator's public key (its private key was thrown away). */
const otherSpki = fromHex(
  "3059301306072a8648ce3d020106082a8648ce3d030107034200044098f14d2c31fcd4937ade54b95130d85873f4e537c8d7ef1f26f2887fe42c16cd1a74ca065aa6e466a7ff5c33c363de621e460d833f3f4e432e7bff8db703fa",
);

const p256Order = 0xffffffff00000000ffffffffffffffffbce6faada7179e84f3b9cac2fc632551n;
const p256HalfOrder = p256Order >> 1n;

const chainId = "citychain-test";
/** Stands in for the signer's certificate: decodeTx only hashes it to the certificate id. */
const testCertDer = utf8("citychain test vector certificate (not a real DER certificate)");
const testCertId = sha256(testCertDer);

const txBody: TxBody = {
  chainId,
  type: "kv.put",
  payload: { key: "permits/2024-0001", value: utf8("issued to 某某公司") },
  nonce: fromHex("000102030405060708090a0b0c0d0e0f"),
  expiresAtMs: 1_700_003_600_000,
  sender: testCertId,
};

const canonicalCases: ReadonlyArray<readonly [name: string, value: Canonical]> = [
  ["uint 0", 0],
  ["uint 23 (largest in the initial byte)", 23],
  ["uint 24 (smallest one-byte argument)", 24],
  ["uint 255", 255],
  ["uint 256", 256],
  ["uint 65535", 65535],
  ["uint 65536", 65536],
  ["uint 2^32 - 1", 2 ** 32 - 1],
  ["uint 2^32", 2 ** 32],
  ["uint MAX_SAFE_INTEGER", Number.MAX_SAFE_INTEGER],
  ["nint -1", -1],
  ["nint -24", -24],
  ["nint -25", -25],
  ["nint -256", -256],
  ["nint -257", -257],
  ["nint -65537", -65537],
  ["nint MIN_SAFE_INTEGER", Number.MIN_SAFE_INTEGER],
  ["false", false],
  ["true", true],
  ["null", null],
  ["text empty", ""],
  ["text ASCII", "IETF"],
  ["text two-byte UTF-8", "ü"],
  ["text three-byte UTF-8", "水"],
  ["text four-byte UTF-8 (surrogate pair in JS)", "\u{10151}"],
  ["text Chinese department name", "北京市税务局"],
  ["text 24 bytes (one-byte length)", "abcdefghijklmnopqrstuvwx"],
  ["bytes empty", new Uint8Array(0)],
  ["bytes 01020304", fromHex("01020304")],
  ["bytes 256 (two-byte length)", new Uint8Array(256).map((_, i) => i)],
  ["array empty", []],
  ["array nested [1, [2, 3], [4, 5]]", [1, [2, 3], [4, 5]]],
  ["array of 25 (one-byte length)", Array.from({ length: 25 }, (_, i) => i + 1)],
  ["array deeply nested (32 levels)", nest(32)],
  ["map empty", {}],
  // RFC 8949 §4.2.1: keys sort by their encoded bytes, so a shorter key sorts first ("b" < "aa").
  ["map keys by length then bytes", { b: 1, aa: 2, a: 3 }],
  // UTF-16 order would put "aaa" before "z" before "é"; bytewise order of the encodings differs.
  ["map non-ASCII keys bytewise", { é: 1, z: 2, aaa: 3, "": 4 }],
  ["map digit-like keys stay text", { "10": "ten", "9": "nine", "1": "one" }],
  [
    "map nested with bytes and null",
    { outer: { b: [1, { y: fromHex("00"), x: null }], a: true }, id: fromHex("ff") },
  ],
];

function nest(levels: number): Canonical {
  let value: Canonical = [];
  for (let i = 0; i < levels; i++) value = [value];
  return value;
}

// ---------------------------------------------------------------------------------------------
// The vectors file

type JsonValue = null | boolean | number | string | JsonValue[] | { [key: string]: JsonValue };

interface CanonicalVector {
  readonly name: string;
  readonly value: JsonValue;
  readonly hex: string;
  readonly sha256: string;
}

interface Vectors {
  readonly description: string;
  readonly key: { readonly publicKeySpki: string; readonly otherPublicKeySpki: string };
  readonly canonical: CanonicalVector[];
  readonly tx: {
    readonly body: JsonValue;
    readonly certificate: string;
    readonly certId: string;
    readonly bodyHex: string;
    readonly id: string;
    readonly signingBytesHex: string;
    readonly signature: string;
    readonly txHex: string;
  };
  readonly validators: { readonly list: JsonValue; readonly hex: string; readonly hash: string };
  readonly lastCommit: CommitVector;
  readonly block: {
    readonly header: JsonValue;
    readonly headerHex: string;
    readonly hash: string;
    readonly results: JsonValue;
    readonly blockHex: string;
  };
  readonly commit: CommitVector;
  readonly merkle: Array<{
    readonly leaves: string[];
    readonly root: string;
    readonly paths: string[][];
  }>;
  readonly smt: {
    readonly entries: Array<{ readonly key: string; readonly value: string }>;
    readonly root: string;
    readonly proofs: Array<{ readonly key: string; readonly present: boolean; readonly proofHex: string }>;
  };
}

interface CommitVector {
  readonly height: number;
  readonly round: number;
  readonly blockHash: string;
  readonly voteSigningBytesHex: string;
  readonly signature: string;
  readonly hex: string;
  readonly hash: string;
}

const vectorsPath = fileURLToPath(new URL("../vectors/encoding.json", import.meta.url));
const writeMode = process.env["CITYCHAIN_WRITE_VECTORS"] === "1";

function toJson(value: Canonical): JsonValue {
  if (value instanceof Uint8Array) return { $hex: toHex(value) };
  if (Array.isArray(value)) return value.map(toJson);
  if (value !== null && typeof value === "object") {
    return Object.fromEntries(Object.entries(value).map(([k, v]) => [k, toJson(v as Canonical)]));
  }
  return value as JsonValue;
}

function fromJson(value: JsonValue): Canonical {
  if (Array.isArray(value)) return value.map(fromJson);
  if (value !== null && typeof value === "object") {
    const keys = Object.keys(value);
    if (keys.length === 1 && keys[0] === "$hex") return fromHex(value["$hex"] as string);
    return Object.fromEntries(Object.entries(value).map(([k, v]) => [k, fromJson(v)]));
  }
  return value;
}

function sha256Node(...parts: Uint8Array[]): string {
  const h = createHash("sha256");
  for (const part of parts) h.update(part);
  return h.digest("hex");
}

function signWithTestKey(message: Uint8Array): Uint8Array {
  const raw = cryptoSign("sha256", message, { key: testPrivateKey, dsaEncoding: "ieee-p1363" });
  return normalizeP256Signature(new Uint8Array(raw));
}

function verifiesWithTestKey(message: Uint8Array, signature: Uint8Array): boolean {
  return cryptoVerify("sha256", message, { key: testPrivateKey, dsaEncoding: "ieee-p1363" }, signature);
}

/** The stored signature over `message`; in generator mode a fresh one when the stored one no longer fits. */
function storedSignature(storedHex: string | undefined, message: Uint8Array): Uint8Array {
  if (storedHex !== undefined) {
    const stored = fromHex(storedHex);
    if (!writeMode || (isCanonicalP256Signature(stored) && verifiesWithTestKey(message, stored)))
      return stored;
  }
  assert.ok(writeMode, `no stored signature in ${vectorsPath}: run with CITYCHAIN_WRITE_VECTORS=1`);
  return signWithTestKey(message);
}

const validators: Validator[] = [
  { id: validatorIdOf(testSpki), publicKeySpki: testSpki, power: 10, dept: "infocenter" },
  { id: validatorIdOf(otherSpki), publicKeySpki: otherSpki, power: 7, dept: "tax" },
];

const smtEntries: ReadonlyArray<readonly [string, string]> = [
  ["sys/params", "chain parameters"],
  ["sys/dept/tax", "Taxation Bureau"],
  ["kv/tax/permits/2024-0001", "issued"],
  ["kv/tax/permits/2024-0002", "revoked"],
  ["kv/land/parcel/17", "地块 17"],
];
const smtAbsentKeys = ["kv/tax/permits/9999", "kv/health/none"];

function makeCommit(height: number, blockHash: Uint8Array, stored: CommitVector | undefined): Commit {
  const message = voteSigningBytes(chainId, voteTypePrecommit, height, 0, blockHash);
  const signature = storedSignature(stored?.signature, message);
  return { height, round: 0, blockHash, signatures: [{ validatorId: validators[0]!.id, signature }] };
}

function commitVector(commit: Commit): CommitVector {
  return {
    height: commit.height,
    round: commit.round,
    blockHash: toHex(commit.blockHash),
    voteSigningBytesHex: toHex(
      voteSigningBytes(chainId, voteTypePrecommit, commit.height, commit.round, commit.blockHash),
    ),
    signature: toHex(commit.signatures[0]!.signature),
    hex: toHex(encodeCommit(commit)),
    hash: toHex(commitHash(commit)),
  };
}

function buildSmt(entries: ReadonlyArray<readonly [string, string]>): SparseMerkleTree {
  const store = new MemorySmtNodeStore();
  const tree = new SparseMerkleTree(store);
  const batch = tree.applyBatch(entries.map(([key, value]) => ({ key: utf8(key), value: utf8(value) })));
  store.write(batch.nodeWrites);
  tree.commit(batch);
  return tree;
}

function merkleLeaves(n: number): Uint8Array[] {
  return Array.from({ length: n }, (_, i) => utf8(`leaf ${i}`));
}

/** Computes every vector from the inputs above; signatures come from `stored` (see storedSignature). */
function computeVectors(stored: Vectors | undefined): Vectors {
  const bodyBytes = encodeTxBody(txBody);
  const txSignature = storedSignature(stored?.tx.signature, signingBytes(bodyBytes));
  const txBytes = encodeTx(bodyBytes, [
    { signer: { kind: "certId", certId: testCertId }, signature: txSignature },
  ]);

  const tree = buildSmt(smtEntries);
  const prevHash = sha256(utf8("block 41"));
  const lastCommit = makeCommit(41, prevHash, stored?.lastCommit);
  const results: TxResult[] = [
    { txId: txIdOf(bodyBytes), code: "OK", message: "not hashed", data: { key: "kv/tax/permits/2024-0001" } },
  ];
  const header: BlockHeader = {
    chainId,
    height: 42,
    timeMs: 1_700_000_000_000,
    prevHash,
    txRoot: txRootOf([txBytes]),
    resultsRoot: resultsRootOf(results),
    stateRoot: tree.root(),
    validatorsHash: validatorsHashOf(validators),
    proposer: validators[0]!.id,
    lastCommitHash: commitHash(lastCommit),
  };
  const block = makeBlock(header, [txBytes], lastCommit);
  const commit = makeCommit(42, block.hash, stored?.commit);

  return {
    description:
      "citychain canonical encoding test vectors; generated by test/unit/encoding.test.ts (see its header). " +
      'Byte strings inside values are {"$hex": "..."}; every other hex field is lower-case hex of bytes.',
    key: { publicKeySpki: toHex(testSpki), otherPublicKeySpki: toHex(otherSpki) },
    canonical: canonicalCases.map(([name, value]) => {
      const bytes = encodeCanonical(value);
      return { name, value: toJson(value), hex: toHex(bytes), sha256: toHex(sha256(bytes)) };
    }),
    tx: {
      body: toJson({ ...txBody }),
      certificate: toHex(testCertDer),
      certId: toHex(testCertId),
      bodyHex: toHex(bodyBytes),
      id: txIdOf(bodyBytes),
      signingBytesHex: toHex(signingBytes(bodyBytes)),
      signature: toHex(txSignature),
      txHex: toHex(txBytes),
    },
    validators: {
      list: validators.map((v) => toJson({ ...v })),
      hex: toHex(encodeCanonical(validators.map((v) => [v.id, v.publicKeySpki, v.power, v.dept]))),
      hash: toHex(validatorsHashOf(validators)),
    },
    lastCommit: commitVector(lastCommit),
    block: {
      header: toJson({ ...header }),
      headerHex: toHex(block.headerBytes),
      hash: toHex(block.hash),
      results: results.map((r) => toJson({ ...r })),
      blockHex: toHex(encodeBlock(block)),
    },
    commit: commitVector(commit),
    merkle: Array.from({ length: 8 }, (_, n) => {
      const leaves = merkleLeaves(n);
      const leafHashes = leaves.map(merkleLeafHash);
      return {
        leaves: leaves.map(toHex),
        root: toHex(merkleRoot(leaves)),
        paths: leaves.map((_, i) => merkleProof(leafHashes, i).map(toHex)),
      };
    }),
    smt: {
      entries: smtEntries.map(([key, value]) => ({ key, value })),
      root: toHex(tree.root()),
      proofs: [...smtEntries.map(([key]) => key), ...smtAbsentKeys].map((key) => {
        const result = tree.getProof(utf8(key));
        return { key, present: result.valueHash !== null, proofHex: toHex(encodeProof(result.proof)) };
      }),
    },
  };
}

const storedVectors: Vectors | undefined = existsSync(vectorsPath)
  ? (JSON.parse(readFileSync(vectorsPath, "utf8")) as Vectors)
  : undefined;
if (!writeMode && storedVectors === undefined) {
  throw new Error(`${vectorsPath} is missing: run with CITYCHAIN_WRITE_VECTORS=1 to generate it`);
}
const computed = computeVectors(storedVectors);
if (writeMode) {
  writeFileSync(vectorsPath, `${JSON.stringify(computed, null, 2)}\n`);
  console.log(`wrote ${vectorsPath}`);
}
const vectors: Vectors = writeMode ? computed : storedVectors!;

function expectCode(code: ErrorCode, field?: string): (error: unknown) => boolean {
  return (error: unknown) => {
    assert.ok(error instanceof CodedError, `expected CodedError ${code}, got ${String(error)}`);
    assert.equal(error.code, code, error.message);
    if (field !== undefined) assert.equal(error.field, field, `field of: ${error.message}`);
    return true;
  };
}

// ---------------------------------------------------------------------------------------------

describe("canonical CBOR vectors", () => {
  it("the file lists exactly the cases defined here, in order", () => {
    assert.deepEqual(
      vectors.canonical.map((v) => v.name),
      canonicalCases.map(([name]) => name),
    );
  });

  for (const [index, [name, value]] of canonicalCases.entries()) {
    it(name, () => {
      const stored = vectors.canonical[index]!;
      const bytes = encodeCanonical(value);
      assert.equal(toHex(bytes), stored.hex, "encoded bytes");
      assert.equal(toHex(sha256(bytes)), stored.sha256, "SHA-256 of the encoding");
      assert.equal(sha256Node(bytes), stored.sha256, "node:crypto and @noble/hashes agree");
      // The file's input is the same value, and the bytes decode back to it.
      assert.deepEqual(fromJson(stored.value), value);
      assert.deepEqual(decodeCanonical(fromHex(stored.hex), 1 << 20), value);
    });
  }

  it("matches RFC 8949 Appendix A for the values it shares with our data model", () => {
    const appendixA: ReadonlyArray<readonly [Canonical, string]> = [
      [0, "00"],
      [1, "01"],
      [10, "0a"],
      [23, "17"],
      [24, "1818"],
      [25, "1819"],
      [100, "1864"],
      [1000, "1903e8"],
      [1000000, "1a000f4240"],
      [1000000000000, "1b000000e8d4a51000"],
      [-1, "20"],
      [-10, "29"],
      [-100, "3863"],
      [-1000, "3903e7"],
      [false, "f4"],
      [true, "f5"],
      [null, "f6"],
      [new Uint8Array(0), "40"],
      [fromHex("01020304"), "4401020304"],
      ["", "60"],
      ["a", "6161"],
      ["IETF", "6449455446"],
      ['"\\', "62225c"],
      ["ü", "62c3bc"],
      ["水", "63e6b0b4"],
      ["\u{10151}", "64f0908591"],
      [[], "80"],
      [[1, 2, 3], "83010203"],
      [[1, [2, 3], [4, 5]], "8301820203820405"],
      [
        Array.from({ length: 25 }, (_, i) => i + 1),
        "98190102030405060708090a0b0c0d0e0f101112131415161718181819",
      ],
      [{}, "a0"],
      [{ a: 1, b: [2, 3] }, "a26161016162820203"],
      [["a", { b: "c" }], "826161a161626163"],
      [{ a: "A", b: "B", c: "C", d: "D", e: "E" }, "a56161614161626142616361436164614461656145"],
    ];
    for (const [value, hex] of appendixA) {
      assert.equal(
        toHex(encodeCanonical(value)),
        hex,
        `RFC 8949 Appendix A: ${JSON.stringify(toJson(value))}`,
      );
      assert.deepEqual(decodeCanonical(fromHex(hex), 1024), value);
    }
  });

  it("sorts map keys by encoded bytes (RFC 8949 §4.2.1), whatever the insertion order", () => {
    const a = encodeCanonical({ aa: 2, b: 1, a: 3 });
    const b = encodeCanonical({ a: 3, b: 1, aa: 2 });
    assert.equal(toHex(a), "a3616103616201626161" + "02");
    assert.equal(toHex(a), toHex(b));
  });

  it("refuses to encode values outside the data model", () => {
    const refused: ReadonlyArray<readonly [string, unknown]> = [
      ["float", 1.5],
      ["unsafe integer", 2 ** 53],
      ["NaN", Number.NaN],
      ["Infinity", Number.POSITIVE_INFINITY],
      ["undefined", [undefined]],
      ["bigint", 1n],
      ["Map", new Map([["a", 1]])],
      ["Date", new Date(0)],
    ];
    for (const [name, value] of refused) {
      assert.throws(() => encodeCanonical(value as Canonical), expectCode("BAD_ENCODING"), name);
    }
  });
});

describe("decodeCanonical refuses non-canonical input", () => {
  const refused: ReadonlyArray<readonly [name: string, hex: string]> = [
    ["non-minimal integer (23 in one extra byte)", "1817"],
    ["non-minimal integer (255 in two bytes)", "1900ff"],
    ["non-minimal length (text of 1 in one extra byte)", "780161"],
    ["unsorted map keys", "a2616201616102"],
    ["map keys sorted alphabetically instead of by encoded bytes", "a262616101616202"],
    ["duplicate map keys", "a2616101616102"],
    ["half float 1.0", "f93c00"],
    ["double float 1.5", "fb3ff8000000000000"],
    ["NaN", "f97e00"],
    ["indefinite-length array", "9f01ff"],
    ["indefinite-length map", "bf616101ff"],
    ["indefinite-length text", "7f616161ff"],
    ["undefined", "f7"],
    ["simple value", "f0"],
    ["tag (epoch time)", "c11a514b67b0"],
    ["bignum tag", "c249010000000000000000"],
    ["integer beyond MAX_SAFE_INTEGER", "1b0020000000000000"],
    ["non-text map key", "a10101"],
    ["invalid UTF-8 in text", "62c328"],
    ["trailing bytes after the value", "0101"],
    ["truncated value", "8201"],
    ["empty input", ""],
    [`nesting deeper than ${canonicalDepthMax}`, `${"81".repeat(canonicalDepthMax + 1)}80`],
  ];
  for (const [name, hex] of refused) {
    it(name, () => {
      assert.throws(() => decodeCanonical(fromHex(hex), 1024), expectCode("BAD_ENCODING"));
    });
  }

  it(`accepts nesting of exactly ${canonicalDepthMax} levels`, () => {
    const bytes = fromHex(`${"81".repeat(canonicalDepthMax)}80`);
    assert.deepEqual(decodeCanonical(bytes, 1024), nest(canonicalDepthMax));
  });

  it("refuses pathological nesting (100 000 levels) with BAD_ENCODING, not a crash", () => {
    const bytes = new Uint8Array(100_001).fill(0x81);
    bytes[100_000] = 0x80;
    assert.throws(() => decodeCanonical(bytes, 1 << 20), expectCode("BAD_ENCODING"));
  });

  it("refuses input over the byte limit before decoding it, and accepts it at the limit", () => {
    const bytes = encodeCanonical(new Uint8Array(100));
    assert.throws(() => decodeCanonical(bytes, bytes.length - 1), expectCode("BAD_ENCODING"));
    assert.equal((decodeCanonical(bytes, bytes.length) as Uint8Array).length, 100);
  });
});

describe("transaction vector", () => {
  const bodyBytes = fromHex(vectors.tx.bodyHex);
  const signature = fromHex(vectors.tx.signature);

  it("the body encodes to the stored bytes, and the file's body is the same input", () => {
    assert.equal(toHex(encodeTxBody(txBody)), vectors.tx.bodyHex);
    assert.deepEqual(fromJson(vectors.tx.body), { ...txBody });
    assert.equal(vectors.tx.certId, sha256Node(testCertDer));
    assert.equal(vectors.tx.certificate, toHex(testCertDer));
  });

  it("the id is SHA-256 of the body bytes", () => {
    assert.equal(txIdOf(bodyBytes), vectors.tx.id);
    assert.equal(sha256Node(bodyBytes), vectors.tx.id);
  });

  it("the signing bytes are the domain tag followed by the body", () => {
    assert.equal(toHex(signingBytes(bodyBytes)), vectors.tx.signingBytesHex);
    assert.equal(vectors.tx.signingBytesHex, toHex(utf8("citychain/tx/v1\u0000")) + vectors.tx.bodyHex);
    assert.deepEqual(txSigningTag, utf8("citychain/tx/v1\u0000"));
  });

  it("the stored signature is low-S and verifies with the test key", () => {
    assert.ok(isCanonicalP256Signature(signature), "stored signature is canonical low-S");
    const message = fromHex(vectors.tx.signingBytesHex);
    assert.ok(
      cryptoVerify(
        "sha256",
        message,
        {
          key: createPublicKey({ key: Buffer.from(testSpki), format: "der", type: "spki" }),
          dsaEncoding: "ieee-p1363",
        },
        signature,
      ),
    );
    assert.equal(vectors.key.publicKeySpki, toHex(testSpki));
  });

  it("the full transaction encodes to the stored bytes and decodes back to its parts", () => {
    const tx = encodeTx(bodyBytes, [{ signer: { kind: "certId", certId: testCertId }, signature }]);
    assert.equal(toHex(tx), vectors.tx.txHex);
    const decoded = decodeTx(fromHex(vectors.tx.txHex));
    assert.equal(decoded.id, vectors.tx.id);
    assert.deepEqual(decoded.body, { ...txBody });
    assert.equal(toHex(decoded.bodyBytes), vectors.tx.bodyHex);
    assert.equal(decoded.signatures.length, 1);
    assert.deepEqual(decoded.signatures[0], {
      signer: { kind: "certId", certId: testCertId },
      signature,
    });
  });

  it("fresh signatures differ (ECDSA is randomized) but verify, are low-S, and leave the id unchanged", async () => {
    const pkcs8 = new Uint8Array(testPrivateKey.export({ format: "der", type: "pkcs8" }));
    const signer = await WebCryptoSigner.fromPkcs8(pkcs8, testSpki);
    const message = signingBytes(bodyBytes);
    const first = await signer.sign(message);
    const second = await signer.sign(message);
    assert.notEqual(toHex(first), toHex(second));
    for (const s of [first, second]) {
      assert.ok(isCanonicalP256Signature(s));
      assert.ok(verifiesWithTestKey(message, s));
      const tx = decodeTx(
        encodeTx(bodyBytes, [{ signer: { kind: "cert", der: testCertDer }, signature: s }]),
      );
      assert.equal(tx.id, vectors.tx.id);
    }
  });
});

describe("block, commit and validator vectors", () => {
  it("the validator set encodes and hashes to the stored values", () => {
    assert.equal(vectors.key.otherPublicKeySpki, toHex(otherSpki));
    assert.deepEqual(
      vectors.validators.list,
      validators.map((v) => toJson({ ...v })),
    );
    assert.equal(
      toHex(encodeCanonical(validators.map((v) => [v.id, v.publicKeySpki, v.power, v.dept]))),
      vectors.validators.hex,
    );
    assert.equal(toHex(validatorsHashOf(validators)), vectors.validators.hash);
    assert.equal(
      sha256Node(utf8("citychain/validators/v1"), new Uint8Array([0]), fromHex(vectors.validators.hex)),
      vectors.validators.hash,
    );
    // Order is part of the hash: the same validators listed differently are a different set.
    assert.notEqual(toHex(validatorsHashOf([...validators].reverse())), vectors.validators.hash);
  });

  it("the header encodes and hashes to the stored values", () => {
    const header = fromJson(vectors.block.header) as unknown as BlockHeader;
    assert.equal(toHex(encodeHeader(header)), vectors.block.headerHex);
    assert.equal(toHex(blockHashOf(fromHex(vectors.block.headerHex))), vectors.block.hash);
    assert.equal(
      sha256Node(utf8("citychain/header/v1"), new Uint8Array([0]), fromHex(vectors.block.headerHex)),
      vectors.block.hash,
    );
    assert.deepEqual(decodeHeader(fromHex(vectors.block.headerHex)), header);
  });

  it("the header commits to this file's other vectors (tx root, results root, state root, validators, last commit)", () => {
    const header = decodeHeader(fromHex(vectors.block.headerHex));
    assert.equal(toHex(header.txRoot), toHex(txRootOf([fromHex(vectors.tx.txHex)])));
    assert.equal(toHex(header.stateRoot), vectors.smt.root);
    assert.equal(toHex(header.validatorsHash), vectors.validators.hash);
    assert.equal(toHex(header.lastCommitHash), vectors.lastCommit.hash);
    const results = (vectors.block.results as JsonValue[]).map((r) => fromJson(r) as unknown as TxResult);
    assert.equal(toHex(header.resultsRoot), toHex(resultsRootOf(results)));
    // The message is not hashed: rewording it cannot fork the chain.
    const reworded = results.map((r) => ({ ...r, message: "other words" }));
    assert.equal(toHex(resultsRootOf(reworded)), toHex(header.resultsRoot));
  });

  it("the block encodes to the stored bytes and decodes back", () => {
    const block = decodeBlock(fromHex(vectors.block.blockHex));
    assert.equal(toHex(block.hash), vectors.block.hash);
    assert.deepEqual(block.txs.map(toHex), [vectors.tx.txHex]);
    assert.equal(toHex(encodeBlock(block)), vectors.block.blockHex);
    assert.equal(toHex(commitHash(block.lastCommit)), vectors.lastCommit.hash);
  });

  for (const name of ["lastCommit", "commit"] as const) {
    it(`${name}: the vote signing bytes, commit bytes and hash match; the signature verifies`, () => {
      const stored = vectors[name];
      const blockHash = fromHex(stored.blockHash);
      const vote = voteSigningBytes(chainId, voteTypePrecommit, stored.height, stored.round, blockHash);
      assert.equal(toHex(vote), stored.voteSigningBytesHex);
      const signature = fromHex(stored.signature);
      assert.ok(isCanonicalP256Signature(signature));
      assert.ok(verifiesWithTestKey(vote, signature), "the stored vote signature verifies");
      const commit: Commit = {
        height: stored.height,
        round: stored.round,
        blockHash,
        signatures: [{ validatorId: validators[0]!.id, signature }],
      };
      assert.equal(toHex(encodeCommit(commit)), stored.hex);
      assert.equal(toHex(commitHash(commit)), stored.hash);
      assert.equal(
        sha256Node(utf8("citychain/commit/v1"), new Uint8Array([0]), fromHex(stored.hex)),
        stored.hash,
      );
      assert.deepEqual(decodeCommit(fromHex(stored.hex)), commit);
    });
  }

  it("the commit is for the header's hash, and no commit hashes to zeros", () => {
    assert.equal(vectors.commit.blockHash, vectors.block.hash);
    assert.equal(toHex(commitHash(null)), "00".repeat(32));
  });
});

// ---------------------------------------------------------------------------------------------
// RFC 6962 reference: MTH and PATH written straight from §2.1, to check merkle.ts independently.

function referenceRoot(leaves: readonly Uint8Array[]): Uint8Array {
  if (leaves.length === 0) return fromHex(sha256Node(new Uint8Array(0)));
  if (leaves.length === 1) return fromHex(sha256Node(new Uint8Array([0]), leaves[0]!));
  const k = largestPowerOfTwoBelow(leaves.length);
  return fromHex(
    sha256Node(new Uint8Array([1]), referenceRoot(leaves.slice(0, k)), referenceRoot(leaves.slice(k))),
  );
}

function referencePath(m: number, leaves: readonly Uint8Array[]): Uint8Array[] {
  if (leaves.length <= 1) return [];
  const k = largestPowerOfTwoBelow(leaves.length);
  if (m < k) return [...referencePath(m, leaves.slice(0, k)), referenceRoot(leaves.slice(k))];
  return [...referencePath(m - k, leaves.slice(k)), referenceRoot(leaves.slice(0, k))];
}

function largestPowerOfTwoBelow(n: number): number {
  let k = 1;
  while (k * 2 < n) k *= 2;
  return k;
}

describe("Merkle trees (RFC 6962)", () => {
  it("the empty tree hashes to SHA-256 of nothing", () => {
    assert.equal(toHex(merkleRoot([])), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
  });

  for (let n = 0; n < 8; n++) {
    it(`${n} leaves: root and every audit path match the vectors and the reference`, () => {
      const stored = vectors.merkle[n]!;
      const leaves = merkleLeaves(n);
      assert.deepEqual(stored.leaves, leaves.map(toHex));
      const root = merkleRoot(leaves);
      assert.equal(toHex(root), stored.root);
      assert.equal(toHex(referenceRoot(leaves)), stored.root);
      const leafHashes = leaves.map(merkleLeafHash);
      for (let i = 0; i < n; i++) {
        const path = merkleProof(leafHashes, i);
        assert.deepEqual(path.map(toHex), stored.paths[i], `path of leaf ${i}`);
        assert.deepEqual(path.map(toHex), referencePath(i, leaves).map(toHex), `reference path of leaf ${i}`);
        assert.ok(verifyMerkleProof(root, leafHashes[i]!, i, n, path), `leaf ${i} verifies`);
        // Each of these must fail: another leaf, another position, a changed or missing sibling.
        if (n > 1) {
          const other = (i + 1) % n;
          assert.ok(!verifyMerkleProof(root, leafHashes[other]!, i, n, path), `leaf ${other} at ${i}`);
          assert.ok(!verifyMerkleProof(root, leafHashes[i]!, other, n, path), `leaf ${i} at ${other}`);
          for (let s = 0; s < path.length; s++) {
            const tampered = path.map((p) => p.slice());
            tampered[s]![0]! ^= 1;
            assert.ok(!verifyMerkleProof(root, leafHashes[i]!, i, n, tampered), `sibling ${s} changed`);
          }
          assert.ok(!verifyMerkleProof(root, leafHashes[i]!, i, n, path.slice(1)), "a sibling missing");
          assert.ok(!verifyMerkleProof(root, leafHashes[i]!, i, n, [...path, root]), "a sibling too many");
        }
        assert.ok(!verifyMerkleProof(root, merkleLeafHash(utf8("not a leaf")), i, n, path), "foreign leaf");
        assert.ok(!verifyMerkleProof(root, leafHashes[i]!, n, n, path), "index out of range");
        assert.ok(!verifyMerkleProof(root, leafHashes[i]!, -1, n, path), "negative index");
      }
      assert.throws(() => merkleProof(leafHashes, n), RangeError);
    });
  }

  it("larger trees, hashed level by level in one buffer, match the recursive reference", () => {
    // Odd and even sizes around powers of two, leaves of many lengths: empty, short, past the
    // 64-byte copy loop, and past the 64 KiB scratch array (the fallback path).
    const sizes = [...Array.from({ length: 40 }, (_, i) => i + 1), 63, 64, 65, 127, 128, 129, 1000];
    for (const n of sizes) {
      const leaves = Array.from({ length: n }, (_, i) => new Uint8Array((i * 37) % 200).fill(i & 255));
      if (n === 1000) leaves[500] = new Uint8Array(70_000).fill(9);
      const expected = toHex(referenceRoot(leaves));
      assert.equal(toHex(merkleRoot(leaves)), expected, `${n} leaves`);
      assert.equal(toHex(merkleRootOfLeafHashes(leaves.map(merkleLeafHash))), expected, `${n} leaf hashes`);
    }
    // Leaf hashes are laid out 32 bytes apart: anything else is refused, not misread.
    assert.throws(() => merkleRootOfLeafHashes([new Uint8Array(32), new Uint8Array(31)]), RangeError);
  });

  it("a block's results root is the root over its encoded result leaves", () => {
    const results: TxResult[] = Array.from({ length: 37 }, (_, i) => ({
      txId: toHex(sha256(utf8(`tx ${i}`))),
      code: i % 5 === 0 ? "NOT_FOUND" : "OK",
      message: i % 5 === 0 ? "no such key" : "",
      data: i % 3 === 0 ? null : { key: `k${i}`, value: new Uint8Array(i * 3).fill(i) },
    }));
    assert.equal(toHex(resultsRootOf(results)), toHex(referenceRoot(results.map(resultLeaf))));
    // The transient encoding is the same bytes as the copying one.
    for (const r of results) {
      const value = [fromHex(r.txId), r.code, r.data];
      assert.deepEqual(encodeCanonicalTransient(value), encodeCanonical(value));
    }
  });

  it("leaves and inner nodes are domain-separated: an inner node's preimage is not a leaf", () => {
    const leaves = merkleLeaves(4);
    const leafHashes = leaves.map(merkleLeafHash);
    const root = merkleRoot(leaves);
    const right = referenceRoot(leaves.slice(2));
    // Without the 0x00/0x01 prefixes, the bytes under the left inner node would pass as a leaf of a
    // two-leaf tree with the same root (a second preimage). With them, they hash differently.
    const innerPreimage = new Uint8Array([...leafHashes[0]!, ...leafHashes[1]!]);
    assert.ok(!verifyMerkleProof(root, merkleLeafHash(innerPreimage), 0, 2, [right]));
    assert.ok(
      verifyMerkleProof(root, referenceRoot(leaves.slice(0, 2)), 0, 2, [right]),
      "control: the inner hash itself",
    );
  });
});

describe("state tree (sparse Merkle tree) vector", () => {
  it("the empty tree's root is 32 zero bytes", () => {
    assert.equal(toHex(new SparseMerkleTree(new MemorySmtNodeStore()).root()), "00".repeat(32));
  });

  it("the root of the stored entries matches the vector", () => {
    assert.deepEqual(
      vectors.smt.entries,
      smtEntries.map(([key, value]) => ({ key, value })),
    );
    assert.equal(toHex(buildSmt(smtEntries).root()), vectors.smt.root);
  });

  it("the root does not depend on insertion order or batching", () => {
    assert.equal(toHex(buildSmt([...smtEntries].reverse()).root()), vectors.smt.root);
    const store = new MemorySmtNodeStore();
    const tree = new SparseMerkleTree(store);
    for (const [key, value] of smtEntries) {
      const batch = tree.applyBatch([{ key: utf8(key), value: utf8(value) }]);
      store.write(batch.nodeWrites);
      tree.commit(batch);
    }
    assert.equal(toHex(tree.root()), vectors.smt.root);
  });

  it("the stored proofs verify inclusion and non-inclusion against the root, and nothing else", () => {
    const root = fromHex(vectors.smt.root);
    const values = new Map(smtEntries);
    assert.equal(vectors.smt.proofs.length, smtEntries.length + smtAbsentKeys.length);
    for (const { key, present, proofHex } of vectors.smt.proofs) {
      const proof = fromHex(proofHex);
      const value = values.get(key);
      assert.equal(present, value !== undefined, key);
      assert.equal(toHex(encodeProof(buildSmt(smtEntries).getProof(utf8(key)).proof)), proofHex, key);
      if (value === undefined) {
        assert.ok(verifyProof(root, utf8(key), null, proof), `${key} is absent`);
        assert.ok(!verifyProof(root, utf8(key), utf8("anything"), proof), `${key} holds no value`);
      } else {
        assert.ok(verifyProof(root, utf8(key), utf8(value), proof), `${key} is present`);
        assert.ok(!verifyProof(root, utf8(key), utf8(`${value}!`), proof), `${key} with another value`);
        assert.ok(!verifyProof(root, utf8(key), null, proof), `${key} claimed absent`);
      }
    }
  });

  it("the state tree's fast SHA-256 agrees with the portable one", () => {
    for (const input of [new Uint8Array(0), utf8("abc"), new Uint8Array(65).fill(7), new Uint8Array(1000)]) {
      assert.equal(toHex(smtSha256(input)), toHex(sha256(input)));
    }
    assert.equal(
      toHex(sha256(utf8("abc"))),
      "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad",
    );
  });
});

// ---------------------------------------------------------------------------------------------

describe("the low-S rule", () => {
  const message = fromHex(vectors.tx.signingBytesHex);
  const low = fromHex(vectors.tx.signature);
  const high = withS(low, p256Order - readS(low));

  it("a high-S signature verifies cryptographically, but is not canonical", () => {
    assert.ok(verifiesWithTestKey(message, high), "(r, n - s) is the malleated twin of (r, s)");
    assert.ok(!isCanonicalP256Signature(high));
    assert.ok(isCanonicalP256Signature(low));
  });

  it("normalising the high-S form gives back the low-S form, and leaves a low-S form alone", () => {
    assert.equal(toHex(normalizeP256Signature(high)), toHex(low));
    assert.equal(toHex(normalizeP256Signature(low)), toHex(low));
  });

  it("the boundary: s = n/2 is accepted, s = n/2 + 1 is not; r or s of 0 or >= n are not", () => {
    assert.ok(isCanonicalP256Signature(withS(low, p256HalfOrder)));
    assert.ok(!isCanonicalP256Signature(withS(low, p256HalfOrder + 1n)));
    assert.ok(!isCanonicalP256Signature(withS(low, 0n)));
    const zeroR = low.slice();
    zeroR.fill(0, 0, 32);
    assert.ok(!isCanonicalP256Signature(zeroR));
    const bigR = low.slice();
    bigR.set(scalarBytes(p256Order), 0);
    assert.ok(!isCanonicalP256Signature(bigR));
    assert.ok(!isCanonicalP256Signature(low.slice(0, 63)));
    assert.ok(!isCanonicalP256Signature(new Uint8Array([...low, 0])));
  });

  it("decodeTx refuses the high-S form with BAD_SIGNATURE_FORMAT and accepts its normalised form", () => {
    const bodyBytes = fromHex(vectors.tx.bodyHex);
    const signer = { kind: "certId", certId: testCertId } as const;
    assert.throws(
      () => decodeTx(encodeTx(bodyBytes, [{ signer, signature: high }])),
      expectCode("BAD_SIGNATURE_FORMAT", "signatures[0].signature"),
    );
    const tx = decodeTx(encodeTx(bodyBytes, [{ signer, signature: normalizeP256Signature(high) }]));
    assert.equal(tx.id, vectors.tx.id);
  });
});

function readS(signature: Uint8Array): bigint {
  return BigInt(`0x${toHex(signature.slice(32))}`);
}

function scalarBytes(value: bigint): Uint8Array {
  return fromHex(value.toString(16).padStart(64, "0"));
}

function withS(signature: Uint8Array, s: bigint): Uint8Array {
  const out = signature.slice();
  out.set(scalarBytes(s), 32);
  return out;
}

describe("decodeTx refuses malformed transactions", () => {
  const signature = fromHex(vectors.tx.signature);
  const byCertId = (certId: Uint8Array): TxSignature => ({ signer: { kind: "certId", certId }, signature });
  const otherCertId = (i: number) => sha256(utf8(`another certificate ${i}`));
  const rawBody = (overrides: Partial<Record<"version" | keyof TxBody, Canonical>>): Uint8Array => {
    const b = { version: 1, ...txBody, ...overrides };
    return encodeCanonical([b.version, b.chainId, b.type, b.payload, b.nonce, b.expiresAtMs, b.sender]);
  };

  it("a transaction over the size limit: TX_TOO_LARGE (413), before it is decoded", () => {
    const big = encodeTxBody({
      ...txBody,
      payload: { key: "big", value: new Uint8Array(txLimits.txBytesMax) },
    });
    const bytes = encodeTx(big, [byCertId(testCertId)]);
    assert.ok(bytes.length > txLimits.txBytesMax);
    assert.throws(
      () => decodeTx(bytes),
      (error: unknown) => expectCode("TX_TOO_LARGE")(error) && (error as CodedError).status === 413,
    );
    // A chain may lower the limit; the same check applies at its value.
    const small = fromHex(vectors.tx.txHex);
    assert.throws(() => decodeTx(small, small.length - 1), expectCode("TX_TOO_LARGE"));
    assert.equal(decodeTx(small, small.length).id, vectors.tx.id);
  });

  it("the first signature is not the sender's: TX_MALFORMED on signatures[0]", () => {
    const bodyBytes = fromHex(vectors.tx.bodyHex);
    assert.throws(
      () => decodeTx(encodeTx(bodyBytes, [byCertId(otherCertId(1))])),
      expectCode("TX_MALFORMED", "signatures[0]"),
    );
    // The sender co-signing second is not enough either.
    assert.throws(
      () => decodeTx(encodeTx(bodyBytes, [byCertId(otherCertId(1)), byCertId(testCertId)])),
      expectCode("TX_MALFORMED", "signatures[0]"),
    );
  });

  it("the same signer twice (by id, or once by id and once by certificate): TX_MALFORMED on signatures", () => {
    const bodyBytes = fromHex(vectors.tx.bodyHex);
    assert.throws(
      () => decodeTx(encodeTx(bodyBytes, [byCertId(testCertId), byCertId(testCertId)])),
      expectCode("TX_MALFORMED", "signatures"),
    );
    const byCert: TxSignature = { signer: { kind: "cert", der: testCertDer }, signature };
    assert.throws(
      () => decodeTx(encodeTx(bodyBytes, [byCert, byCertId(testCertId)])),
      expectCode("TX_MALFORMED", "signatures"),
    );
  });

  it(`more than ${txLimits.signaturesMax} signatures, or none: TX_MALFORMED on signatures`, () => {
    const bodyBytes = fromHex(vectors.tx.bodyHex);
    const signatures = [
      byCertId(testCertId),
      ...Array.from({ length: 16 }, (_, i) => byCertId(otherCertId(i))),
    ];
    assert.equal(signatures.length, txLimits.signaturesMax + 1);
    assert.throws(() => decodeTx(encodeTx(bodyBytes, signatures)), expectCode("TX_MALFORMED", "signatures"));
    const atLimit = decodeTx(encodeTx(bodyBytes, signatures.slice(0, txLimits.signaturesMax)));
    assert.equal(atLimit.signatures.length, txLimits.signaturesMax);
    assert.throws(() => decodeTx(encodeTx(bodyBytes, [])), expectCode("TX_MALFORMED", "signatures"));
  });

  it("bad body fields: TX_MALFORMED naming the field", () => {
    const cases: ReadonlyArray<readonly [string, Partial<Record<"version" | keyof TxBody, Canonical>>]> = [
      ["chainId", { chainId: "Bad Chain!" }],
      ["chainId", { chainId: "" }],
      ["chainId", { chainId: 7 }],
      ["version", { version: 2 }],
      ["type", { type: "Kv.Put" }],
      ["type", { type: "kv" }],
      ["nonce", { nonce: new Uint8Array(7) }],
      ["nonce", { nonce: new Uint8Array(33) }],
      ["expiresAtMs", { expiresAtMs: 0 }],
      ["sender", { sender: new Uint8Array(31) }],
    ];
    for (const [field, overrides] of cases) {
      const tx = encodeTx(rawBody(overrides), [byCertId(testCertId)]);
      assert.throws(
        () => decodeTx(tx),
        expectCode("TX_MALFORMED", field),
        JSON.stringify(toJson(overrides as Canonical)),
      );
    }
    // encodeTxBody refuses the same on the way out.
    assert.throws(
      () => encodeTxBody({ ...txBody, chainId: "Bad Chain!" }),
      expectCode("TX_MALFORMED", "chainId"),
    );
  });

  it("envelope shape: not [body, signatures], body not bytes, body not canonical, bad signer reference", () => {
    const bodyBytes = fromHex(vectors.tx.bodyHex);
    const sig = [[0, testCertId], signature];
    assert.throws(() => decodeTx(encodeCanonical([bodyBytes])), expectCode("TX_MALFORMED"));
    assert.throws(() => decodeTx(encodeCanonical({ body: bodyBytes })), expectCode("TX_MALFORMED"));
    assert.throws(() => decodeTx(encodeCanonical(["body", [sig]])), expectCode("TX_MALFORMED", "body"));
    // A body whose bytes are valid CBOR but not canonical (a non-minimal integer) would have a second id.
    const nonCanonicalBody = fromHex(`${vectors.tx.bodyHex.slice(0, 2)}1801${vectors.tx.bodyHex.slice(4)}`);
    assert.throws(() => decodeTx(encodeCanonical([nonCanonicalBody, [sig]])), expectCode("BAD_ENCODING"));
    assert.throws(
      () => decodeTx(encodeCanonical([bodyBytes, [[[2, testCertId], signature]]])),
      expectCode("TX_MALFORMED", "signatures[0].signer"),
    );
    assert.throws(
      () => decodeTx(encodeCanonical([bodyBytes, [[[0, testCertId.slice(1)], signature]]])),
      expectCode("TX_MALFORMED", "signatures[0].signer"),
    );
    assert.throws(
      () => decodeTx(encodeCanonical([bodyBytes, [[[0, testCertId], signature.slice(1)]]])),
      expectCode("BAD_SIGNATURE_FORMAT", "signatures[0].signature"),
    );
    assert.throws(() => decodeTx(fromHex("ff")), expectCode("BAD_ENCODING"));
  });
});
