/**
 * The consensus wire and WAL formats: the signed bytes (votes share block.ts's voteSigningBytes, so
 * precommits are exactly what commits carry), round trips, and the decoder's refusals.
 */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { decodeWalRecord, encodeWalRecord, type WalRecord } from "../../src/consensus/wal.ts";
import { voteSigningBytes } from "../../src/core/block.ts";
import {
  type ConsensusMessage,
  consensusLimits,
  consensusMessageBytesMax,
  decodeConsensusMessage,
  encodeConsensusMessage,
  type Proposal,
  proposalSignBytes,
  type Vote,
  voteSignBytes,
} from "../../src/core/consensus/types.ts";
import { encodeCanonical } from "../../src/core/encoding.ts";
import { CodedError } from "../../src/core/errors.ts";
import { sha256 } from "../../src/core/hash.ts";
import { deriveKey } from "../sim/keys.ts";
import { Prng } from "../sim/prng.ts";

const chainId = "citychain-test";
const key = deriveKey(new Prng(3));
const hash = sha256(new Uint8Array([1]));

function signedVote(over: Partial<Vote> = {}): Vote {
  const unsigned = { type: 2 as const, height: 5, round: 1, blockHash: hash, validatorId: key.id, ...over };
  return { ...unsigned, signature: key.sign(voteSignBytes(chainId, unsigned)) };
}

function signedProposal(over: Partial<Proposal> = {}): Proposal {
  const unsigned = { chainId, height: 5, round: 2, polRound: 1, blockHash: hash, proposer: key.id, ...over };
  return { ...unsigned, signature: key.sign(proposalSignBytes(unsigned)) };
}

/** Re-encodes a message's fields with one changed, bypassing the encoder's own checks. */
function raw(fields: unknown[]): Uint8Array {
  return encodeCanonical(fields as never);
}

describe("consensus sign bytes", () => {
  it("a precommit signs exactly the bytes a commit certificate carries", () => {
    const v = signedVote();
    assert.deepEqual(voteSignBytes(chainId, v), voteSigningBytes(chainId, 2, 5, 1, hash));
  });

  it("a nil vote signs an empty byte string in the hash's place", () => {
    const nil = voteSignBytes(chainId, {
      type: 1,
      height: 5,
      round: 0,
      blockHash: null,
      validatorId: key.id,
    });
    assert.deepEqual(nil, voteSigningBytes(chainId, 1, 5, 0, new Uint8Array(0)));
    const zero = voteSignBytes(chainId, {
      type: 1,
      height: 5,
      round: 0,
      blockHash: new Uint8Array(32),
      validatorId: key.id,
    });
    assert.notDeepEqual(nil, zero);
  });

  it("a proposal signs [tag, chainId, height, round, polRound, blockHash]", () => {
    const p = signedProposal();
    assert.deepEqual(
      proposalSignBytes(p),
      encodeCanonical(["citychain/proposal/v1", chainId, 5, 2, 1, hash]),
    );
  });
});

describe("consensus wire messages", () => {
  it("round-trip proposals, votes (value and nil) and decisions", () => {
    const messages: ConsensusMessage[] = [
      { kind: "proposal", proposal: signedProposal(), blockBytes: new Uint8Array([1, 2, 3]) },
      { kind: "vote", vote: signedVote() },
      { kind: "vote", vote: signedVote({ type: 1, blockHash: null }) },
      {
        kind: "decision",
        height: 5,
        blockBytes: new Uint8Array([9]),
        commit: {
          height: 5,
          round: 1,
          blockHash: hash,
          signatures: [{ validatorId: key.id, signature: signedVote().signature }],
        },
      },
    ];
    for (const m of messages) {
      const bytes = encodeConsensusMessage(m);
      assert.deepEqual(decodeConsensusMessage(bytes), m);
    }
    assert.ok(encodeConsensusMessage(messages[1]!).length <= consensusLimits.voteMessageBytesMax);
  });

  it("refuses what a peer must not send", () => {
    const v = signedVote();
    const voteFields = (over: Record<number, unknown>) => {
      const f: unknown[] = [2, v.type, v.height, v.round, v.blockHash, v.validatorId, v.signature];
      for (const [i, x] of Object.entries(over)) f[Number(i)] = x;
      return raw(f);
    };
    const bad: [string, Uint8Array][] = [
      ["type 3", voteFields({ 1: 3 })],
      ["height 0", voteFields({ 2: 0 })],
      ["negative round", voteFields({ 3: -1 })],
      ["round above roundMax", voteFields({ 3: consensusLimits.roundMax + 1 })],
      ["31-byte hash", voteFields({ 4: new Uint8Array(31) })],
      ["short signature", voteFields({ 6: new Uint8Array(63) })],
      ["zero signature", voteFields({ 6: new Uint8Array(64) })],
      ["extra field", raw([2, v.type, v.height, v.round, v.blockHash, v.validatorId, v.signature, 0])],
      ["unknown kind", raw([9, 1])],
      ["not an array", raw({ a: 1 } as never)],
      ["garbage", new Uint8Array([0xff, 0x00, 0x13])],
      ["non-canonical integer", new Uint8Array([0x81, 0x18, 0x02])],
    ];
    const p = signedProposal();
    const proposalFields = (polRound: number) =>
      raw([
        1,
        p.chainId,
        p.height,
        p.round,
        polRound,
        p.blockHash,
        p.proposer,
        p.signature,
        new Uint8Array([1]),
      ]);
    bad.push(["polRound = round", proposalFields(p.round)]);
    bad.push(["polRound < -1", proposalFields(-2)]);
    bad.push([
      "empty block",
      raw([1, p.chainId, p.height, p.round, -1, p.blockHash, p.proposer, p.signature, new Uint8Array(0)]),
    ]);
    for (const [what, bytes] of bad) {
      assert.throws(
        () => decodeConsensusMessage(bytes),
        (e: unknown) =>
          e instanceof CodedError && (e.code === "BAD_ENCODING" || e.code === "BLOCK_MALFORMED"),
        what,
      );
    }
  });

  it("refuses a high-S signature (one signature, one byte form)", () => {
    const v = signedVote();
    const n = 0xffffffff00000000ffffffffffffffffbce6faada7179e84f3b9cac2fc632551n;
    const s = BigInt(`0x${Buffer.from(v.signature.subarray(32)).toString("hex")}`);
    const high = Buffer.from((n - s).toString(16).padStart(64, "0"), "hex");
    const sig = new Uint8Array([...v.signature.subarray(0, 32), ...high]);
    assert.throws(() =>
      decodeConsensusMessage(raw([2, v.type, v.height, v.round, v.blockHash, v.validatorId, sig])),
    );
  });

  it("enforces the size limits before parsing", () => {
    const blockBytesMax = 1000;
    const big = {
      kind: "proposal" as const,
      proposal: signedProposal(),
      blockBytes: new Uint8Array(blockBytesMax + 1),
    };
    assert.throws(
      () => decodeConsensusMessage(encodeConsensusMessage(big), blockBytesMax),
      /blockBytes|block must be/,
    );
    assert.throws(
      () =>
        decodeConsensusMessage(new Uint8Array(consensusMessageBytesMax(blockBytesMax) + 1), blockBytesMax),
      /limit/,
    );
  });

  it("refuses a decision whose commit is for another height", () => {
    const commit = { height: 6, round: 0, blockHash: hash, signatures: [] };
    const bytes = encodeConsensusMessage({
      kind: "decision",
      height: 5,
      blockBytes: new Uint8Array([1]),
      commit,
    });
    assert.throws(() => decodeConsensusMessage(bytes), /commit height/);
  });
});

describe("consensus WAL records", () => {
  it("round-trip and refuse corruption", () => {
    const records: WalRecord[] = [
      { kind: "block", height: 5, blockHash: hash, blockBytes: new Uint8Array([4, 5]) },
      { kind: "proposal", proposal: signedProposal() },
      { kind: "vote", vote: signedVote() },
      { kind: "vote", vote: signedVote({ type: 1, blockHash: null }) },
    ];
    for (const r of records) assert.deepEqual(decodeWalRecord(encodeWalRecord(r)), r);
    assert.throws(() => decodeWalRecord(raw([7, 1])), /STORAGE_CORRUPT|consensus WAL/);
    assert.throws(() => decodeWalRecord(raw([1, "x", hash, new Uint8Array(1)])), /consensus WAL/);
  });
});
