/**
 * Proof verification in the SDK against a real node: a client trusts the validators, not the node it
 * asks. Values written with kv.put are read back with client.state (inclusion), absent keys verify
 * as absent (non-inclusion), and a /v1/state answer altered in any part (value, proof sibling, proof
 * of another key, header bytes, commit signature, missing commit) or checked against another
 * validator set fails with VerificationError. Also: the SDK and the node agree on transaction ids.
 */
import assert from "node:assert/strict";
import { generateKeyPairSync } from "node:crypto";
import { after, before, describe, it } from "node:test";
import { blockHashOf, type Validator, validatorIdOf } from "../../src/core/block.ts";
import { fromBase64, fromHex, toBase64, toHex, utf8 } from "../../src/core/encoding.ts";
import { decodeTx, txIdOf } from "../../src/core/tx.ts";
import type { CitychainClient } from "../../src/sdk/client.ts";
import { buildTx } from "../../src/sdk/tx-builder.ts";
import { type StateResponse, VerificationError, verifyStateResponse } from "../../src/sdk/verify.ts";
import { startTestNetwork, type TestNetwork } from "../helpers/net.ts";

let net: TestNetwork;
let officer: CitychainClient;
/** The validator set from the node's own ledger (genesis), not from any API answer. */
let trusted: readonly Validator[];

const written: ReadonlyArray<readonly [string, string]> = [
  ["permits/2024-0001", "issued"],
  ["permits/2024-0002", "revoked"],
  ["people/zhang-san", "地址已核验"],
  ["empty-value", ""],
];

before(async () => {
  net = await startTestNetwork();
  officer = await net.clientFor("tax.officer");
  trusted = net.node.node.ledger.validators();
  assert.equal(trusted.length, 1);
  for (const [key, value] of written) {
    const status = await officer.send("kv.put", { key, value: utf8(value) });
    assert.equal(status.code, "OK");
  }
});

after(async () => {
  await net?.close();
});

/** A deep copy, so each tampering starts from the answer as the node sent it. */
function copy(response: StateResponse): StateResponse {
  return structuredClone(response);
}

function flipHexChar(hex: string, index: number): string {
  const c = hex[index]!;
  return hex.slice(0, index) + (c === "0" ? "1" : "0") + hex.slice(index + 1);
}

function flipBase64Byte(b64: string, index: number): string {
  const bytes = fromBase64(b64);
  bytes[index]! ^= 0x01;
  return toBase64(bytes);
}

async function rejects(response: StateResponse, validators: readonly Validator[], why: string) {
  await assert.rejects(verifyStateResponse(response, validators), VerificationError, why);
}

interface ProofJson {
  version: number;
  kind: string;
  siblings: (string | null)[];
  leafKeyHash?: string;
  leafValueHash?: string;
}

describe("state reads verified by the SDK", () => {
  it("written keys verify as included, with their values", async () => {
    for (const [key, value] of written) {
      const result = await officer.state(`kv/tax/${key}`);
      assert.deepEqual(result.value, utf8(value), key);
      assert.ok(result.height >= written.length);
    }
  });

  it("a key never written verifies as absent", async () => {
    for (const key of ["kv/tax/permits/9999", "kv/health/permits/2024-0001", "kv/tax/permits/2024-000"]) {
      const result = await officer.state(key);
      assert.equal(result.value, null, key);
      const raw = await officer.stateRaw(key);
      assert.equal(raw.value, null);
      assert.notEqual((raw.proof as ProofJson).kind, "inclusion");
    }
  });

  it("the unaltered answers verify against the trusted (genesis) validator set", async () => {
    const present = await officer.stateRaw("kv/tax/permits/2024-0001");
    assert.deepEqual(await verifyStateResponse(present, trusted), utf8("issued"));
    const absent = await officer.stateRaw("kv/tax/nothing-here");
    assert.equal(await verifyStateResponse(absent, trusted), null);
  });

  it("a client configured with trustedValidators verifies against them", async () => {
    const { CitychainClient } = await import("../../src/sdk/client.ts");
    const client = new CitychainClient({
      url: net.url,
      identity: await net.identityFor("land.auditor"),
      fetch: net.fetch,
      trustedValidators: trusted,
    });
    assert.deepEqual((await client.state("kv/tax/permits/2024-0002")).value, utf8("revoked"));
    const stranger = new CitychainClient({
      url: net.url,
      identity: await net.identityFor("land.auditor"),
      fetch: net.fetch,
      trustedValidators: [otherValidator()],
    });
    await assert.rejects(stranger.state("kv/tax/permits/2024-0002"), VerificationError);
  });
});

function otherValidator(): Validator {
  const { publicKey } = generateKeyPairSync("ec", { namedCurve: "P-256" });
  const spki = new Uint8Array(publicKey.export({ format: "der", type: "spki" }));
  return { id: validatorIdOf(spki), publicKeySpki: spki, power: 10, dept: "infocenter" };
}

describe("altered /v1/state answers are refused with VerificationError", () => {
  let present: StateResponse;
  let absent: StateResponse;
  let other: StateResponse;

  before(async () => {
    present = await officer.stateRaw("kv/tax/permits/2024-0001");
    absent = await officer.stateRaw("kv/tax/permits/9999");
    other = await officer.stateRaw("kv/tax/permits/2024-0002");
    // All three describe the same block, so only the proofs differ.
    assert.equal(present.header.hash, other.header.hash);
    assert.equal(present.header.hash, absent.header.hash);
    assert.ok(present.commit !== null);
  });

  it("a changed value", async () => {
    const r = copy(present);
    r.value = toBase64(utf8("forged"));
    await rejects(r, trusted, "another value");
    const gone = copy(present);
    gone.value = null;
    await rejects(gone, trusted, "a present key claimed absent");
    const appeared = copy(absent);
    appeared.value = toBase64(utf8("conjured"));
    await rejects(appeared, trusted, "an absent key claimed present");
  });

  it("a changed proof sibling (each one in turn)", async () => {
    const siblings = (present.proof as ProofJson).siblings;
    const present_ = siblings.flatMap((s, i) => (s === null ? [] : [i]));
    assert.ok(present_.length > 0, "the proof has siblings");
    for (const i of present_) {
      const r = copy(present);
      const proof = r.proof as ProofJson;
      proof.siblings[i] = flipHexChar(proof.siblings[i]!, 63);
      await rejects(r, trusted, `sibling ${i}`);
    }
    const dropped = copy(present);
    (dropped.proof as ProofJson).siblings.shift();
    await rejects(dropped, trusted, "a sibling dropped");
  });

  it("the proof of another key", async () => {
    const r = copy(present);
    r.proof = structuredClone(other.proof);
    await rejects(r, trusted, "another key's proof for this key and value");
    // Nor can another key's answer be passed off under this key's name.
    const renamed = copy(other);
    renamed.key = present.key;
    await rejects(renamed, trusted, "another key's value and proof under this key");
    const absentProof = copy(absent);
    absentProof.key = present.key;
    await rejects(absentProof, trusted, "an absent key's proof for a present key");
  });

  it("altered header bytes (with or without a recomputed hash)", async () => {
    const r = copy(present);
    // Byte 10 lies inside the chain id or height: still canonical CBOR, but another header.
    r.header.headerBytes = flipBase64Byte(r.header.headerBytes, r.header.headerBytes.length > 0 ? 10 : 0);
    await rejects(r, trusted, "header bytes that do not hash to the claimed hash");
    // An attacker who also fixes the claimed hash (and the state root, to match a forged tree)...
    const headerBytes = fromBase64(present.header.headerBytes);
    const stateRootHex = present.header.stateRoot;
    const at = toHex(headerBytes).indexOf(stateRootHex) / 2;
    assert.ok(at > 0, "the state root is inside the header bytes");
    headerBytes[at + 31]! ^= 0x01;
    const forged = copy(present);
    forged.header.headerBytes = toBase64(headerBytes);
    forged.header.hash = toHex(blockHashOf(headerBytes));
    await rejects(forged, trusted, "a recomputed hash the commit does not sign");
    // ...and the commit's block hash: the validators' signatures still cover the real one.
    const forgedCommit = copy(forged);
    forgedCommit.commit!.blockHash = forged.header.hash;
    await rejects(forgedCommit, trusted, "a commit re-pointed at the forged header");
  });

  it("an altered commit signature", async () => {
    const r = copy(present);
    const signature = r.commit!.signatures[0]!;
    signature.signature = flipBase64Byte(signature.signature, 5);
    await rejects(r, trusted, "a changed byte of r");
    const s = copy(present);
    s.commit!.signatures[0]!.signature = flipBase64Byte(s.commit!.signatures[0]!.signature, 60);
    await rejects(s, trusted, "a changed byte of s");
    const unknownSigner = copy(present);
    unknownSigner.commit!.signatures[0]!.validatorId = "ab".repeat(32);
    await rejects(unknownSigner, trusted, "a signature attributed to a validator nobody trusts");
  });

  it("a removed commit, or one without signatures", async () => {
    const r = copy(present);
    r.commit = null;
    await rejects(r, trusted, "no commit");
    const empty = copy(present);
    empty.commit!.signatures = [];
    await rejects(empty, trusted, "a commit with no signatures");
  });

  it("a trusted validator set other than the one that signed", async () => {
    await rejects(copy(present), [otherValidator()], "a stranger's set");
    // The signer plus a stranger: another set (another hash), and the signer alone holds only half.
    await rejects(copy(present), [...trusted, otherValidator()], "a larger set");
    await rejects(copy(present), [{ ...trusted[0]!, power: trusted[0]!.power + 1 }], "another power");
    await rejects(copy(present), [], "an empty set");
    // The node's own claim about its validators does not matter: only the trusted set does.
    const lying = copy(present);
    lying.validators = [];
    assert.deepEqual(await verifyStateResponse(lying, trusted), utf8("issued"));
  });
});

describe("transaction ids", () => {
  it("the SDK computes the same transaction id as the node", async () => {
    const identity = await net.identityFor("tax.officer");
    const chainId = await officer.chainId();
    const built = await buildTx({
      chainId,
      type: "kv.put",
      payload: { key: "id-check", value: utf8("x") },
      signers: [identity],
      nowMs: Date.now(),
    });
    const status = await officer.submitBytes(built.bytes, { wait: true });
    assert.equal(status.status, "committed");
    assert.equal(status.txId, built.id);
    assert.equal((await officer.tx(built.id)).height, status.height);
    const block = await officer.block(status.height!);
    const ids = block.txs.map((b64) => decodeTx(fromBase64(b64)).id);
    assert.ok(ids.includes(built.id));
    // And it is SHA-256 of the body bytes, as the core defines it.
    assert.equal(built.id, txIdOf(decodeTx(built.bytes).bodyBytes));
    assert.equal(fromHex(built.id).length, 32);
  });
});
