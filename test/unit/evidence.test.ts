/**
 * Equivocation evidence on the ledger (consensus.evidence): a validator that signed two different
 * votes (or proposals) for one step is recorded and removed from the next height when the rules
 * allow; anything that is not such a pair, or is not a validator's, or comes from someone who may
 * not report, is refused with a clear code. The payload is built by the same function the node uses
 * when its driver reports evidence (evidencePayload).
 */
import assert from "node:assert/strict";
import fs from "node:fs";
import path from "node:path";
import { after, before, describe, it } from "node:test";
import { validatorIdOf } from "../../src/core/block.ts";
import {
  type Evidence,
  type Proposal,
  proposalSignBytes,
  type UnsignedVote,
  type Vote,
  voteSignBytes,
  voteTypePrevote,
} from "../../src/core/consensus/types.ts";
import { toHex } from "../../src/core/encoding.ts";
import { evidencePayload } from "../../src/core/handlers/evidence.ts";
import { stateKeys } from "../../src/core/system-state.ts";
import { CitychainError } from "../../src/sdk/errors.ts";
import { loadIdentity } from "../../src/sdk/node.ts";
import type { TxIdentity } from "../../src/sdk/tx-builder.ts";
import { startTestNetwork, type TestNetwork } from "../helpers/net.ts";

let net: TestNetwork;
/** A second validator whose key the test holds: it will equivocate. */
let byzantine: TxIdentity;
let byzantineId: Uint8Array;
let chainId: string;

before(async () => {
  net = await startTestNetwork();
  const dir = path.join(net.layout.dir, "vault-tls");
  byzantine = await loadIdentity(path.join(dir, "cert.pem"), path.join(dir, "key.pem"), {
    passphrase: net.passphrase,
  });
  byzantineId = validatorIdOf(byzantine.signer.publicKeySpki);
  chainId = net.node.node.ledger.params().chainId;
  assert.ok(fs.existsSync(path.join(dir, "cert.pem")));
  // Power 3 of 13: the solo node still commits alone, and removing it moves less than a third.
  await (await net.clientFor("infocenter.admin")).send("config.validator.set", {
    certificate: byzantine.certDer,
    power: 3,
  });
});

after(async () => {
  await net?.close();
});

async function vote(
  signer: TxIdentity,
  unsigned: Omit<UnsignedVote, "validatorId">,
  id = byzantineId,
): Promise<Vote> {
  const full = { ...unsigned, validatorId: id };
  return { ...full, signature: await signer.signer.sign(voteSignBytes(chainId, full)) };
}

function hash(byte: number): Uint8Array {
  return new Uint8Array(32).fill(byte);
}

async function report(as: string, evidence: Evidence, publicKey = byzantine.signer.publicKeySpki) {
  return (await net.clientFor(as)).send("consensus.evidence", evidencePayload(evidence, publicKey));
}

async function refused(as: string, evidence: Evidence, code: string, publicKey?: Uint8Array) {
  await assert.rejects(
    report(as, evidence, publicKey),
    (error: unknown) => error instanceof CitychainError && error.code === code,
  );
}

describe("consensus.evidence", () => {
  it("refuses two votes for the same value, different steps, or a signature that is not the validator's", async () => {
    const height = net.node.node.ledger.height();
    const a = await vote(byzantine, { type: voteTypePrevote, height, round: 0, blockHash: hash(1) });
    const same = await vote(byzantine, { type: voteTypePrevote, height, round: 0, blockHash: hash(1) });
    await refused("infocenter.admin", { kind: "duplicateVote", first: a, second: same }, "PAYLOAD_INVALID");
    const otherRound = await vote(byzantine, { type: voteTypePrevote, height, round: 1, blockHash: hash(2) });
    await refused(
      "infocenter.admin",
      { kind: "duplicateVote", first: a, second: otherRound },
      "PAYLOAD_INVALID",
    );
    // Someone else's key signing a vote in the validator's name.
    const stranger = await net.identityFor("tax.officer");
    const forged = await vote(stranger, { type: voteTypePrevote, height, round: 0, blockHash: hash(2) });
    await refused("infocenter.admin", { kind: "duplicateVote", first: a, second: forged }, "PAYLOAD_INVALID");
    // A key that is not a validator's, with its own two votes.
    const strangerId = validatorIdOf(stranger.signer.publicKeySpki);
    const s1 = await vote(
      stranger,
      { type: voteTypePrevote, height, round: 0, blockHash: hash(1) },
      strangerId,
    );
    const s2 = await vote(
      stranger,
      { type: voteTypePrevote, height, round: 0, blockHash: hash(2) },
      strangerId,
    );
    await refused(
      "infocenter.admin",
      { kind: "duplicateVote", first: s1, second: s2 },
      "NOT_FOUND",
      stranger.signer.publicKeySpki,
    );
  });

  it("refuses reporters that are neither a node nor an operator admin", async () => {
    const height = net.node.node.ledger.height();
    const a = await vote(byzantine, { type: voteTypePrevote, height, round: 5, blockHash: hash(1) });
    const b = await vote(byzantine, { type: voteTypePrevote, height, round: 5, blockHash: null });
    await refused("tax.officer", { kind: "duplicateVote", first: a, second: b }, "FORBIDDEN");
  });

  it("records conflicting votes and removes the validator from the next height", async () => {
    const ledger = net.node.node.ledger;
    const height = ledger.height();
    const a = await vote(byzantine, { type: voteTypePrevote, height, round: 0, blockHash: hash(1) });
    const b = await vote(byzantine, { type: voteTypePrevote, height, round: 0, blockHash: null });
    const status = await report("infocenter.admin", { kind: "duplicateVote", first: a, second: b });
    assert.equal(status.code, "OK");
    const result = status.data as { removed: boolean; what: string; validatorId: string };
    assert.equal(result.removed, true);
    assert.equal(result.what, "prevote");
    assert.equal(result.validatorId, toHex(byzantineId));
    assert.equal(ledger.validators().length, 1, "the equivocating validator left the set");
    assert.ok(ledger.state.get(stateKeys.evidence(toHex(byzantineId), height, 0, "prevote")) !== undefined);
    // The same evidence again: the validator is gone, so there is nothing to act on.
    await refused("infocenter.admin", { kind: "duplicateVote", first: a, second: b }, "NOT_FOUND");
  });

  it("records conflicting proposals too (reported by a node identity)", async () => {
    const ledger = net.node.node.ledger;
    await (await net.clientFor("infocenter.admin")).send("config.validator.set", {
      certificate: byzantine.certDer,
      power: 3,
    });
    const height = ledger.height();
    const proposal = async (blockHash: Uint8Array): Promise<Proposal> => {
      const unsigned = { chainId, height, round: 2, polRound: -1, blockHash, proposer: byzantineId };
      return { ...unsigned, signature: await byzantine.signer.sign(proposalSignBytes(unsigned)) };
    };
    const first = await proposal(hash(3));
    const second = await proposal(hash(4));
    // The byzantine node's own identity is a node identity: even it may report (itself).
    const client = new (await import("../../src/sdk/client.ts")).CitychainClient({
      url: net.url,
      identity: byzantine,
      fetch: net.fetch,
    });
    const status = await client.send(
      "consensus.evidence",
      evidencePayload({ kind: "duplicateProposal", first, second }, byzantine.signer.publicKeySpki),
    );
    assert.equal((status.data as { removed: boolean; what: string }).what, "proposal");
    assert.equal((status.data as { removed: boolean }).removed, true);
    assert.equal(ledger.validators().length, 1);
  });
});
