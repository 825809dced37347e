/**
 * Validator set changes by transaction, on one node (solo production, power 10): who may change the
 * set and by how much, one change per block, the height a change takes effect, the voters of each
 * height (kept across a restart), the changes API, and a client that trusts only the genesis set
 * following a change it can verify, and refusing one it cannot. The multi-node behaviour (a new
 * validator's votes counting, a removed one stopping) is in test/e2e/validator-changes.test.ts.
 */
import assert from "node:assert/strict";
import { X509Certificate } from "node:crypto";
import fs from "node:fs";
import path from "node:path";
import { after, before, describe, it } from "node:test";
import { type Validator, validatorIdOf, validatorsHashOf } from "../../src/core/block.ts";
import { bytesEqual, fromBase64, toBase64, toHex, utf8 } from "../../src/core/encoding.ts";
import { decodeTx } from "../../src/core/tx.ts";
import { startNode } from "../../src/node/run.ts";
import { CitychainClient } from "../../src/sdk/client.ts";
import { CitychainError } from "../../src/sdk/errors.ts";
import { buildTx, cosignTx } from "../../src/sdk/tx-builder.ts";
import {
  followValidatorChanges,
  type ValidatorChangeJson,
  VerificationError,
  validatorsFromJson,
} from "../../src/sdk/verify.ts";
import { auditDataDir } from "../../src/storage/audit.ts";
import { startTestNetwork, type TestNetwork } from "../helpers/net.ts";

let net: TestNetwork;
/** A node certificate that is not a validator: the devnet vault's TLS identity (kind and role "node"). */
let newNodeDer: Uint8Array;
let genesis: readonly Validator[];

before(async () => {
  net = await startTestNetwork();
  const pem = fs.readFileSync(path.join(net.layout.dir, "vault-tls", "cert.pem"), "utf8");
  newNodeDer = new Uint8Array(new X509Certificate(pem).raw);
  genesis = net.node.node.ledger.validators();
});

after(async () => {
  await net?.close();
});

async function expectRefused(as: string, type: string, payload: Record<string, unknown>, code: string) {
  const client = await net.clientFor(as);
  await assert.rejects(
    client.send(type, payload as never),
    (error: unknown) => error instanceof CitychainError && error.code === code,
  );
}

function newNodeId(): Uint8Array {
  return validatorIdOf(
    new Uint8Array(
      new X509Certificate(Buffer.from(newNodeDer)).publicKey.export({ type: "spki", format: "der" }),
    ),
  );
}

describe("validator changes: who and how much", () => {
  it("only an admin of the operator department may change the set", async () => {
    await expectRefused(
      "tax.admin",
      "config.validator.set",
      { certificate: newNodeDer, power: 1 },
      "FORBIDDEN",
    );
  });

  it("only a node certificate can be a validator", async () => {
    const officer = fs.readFileSync(net.member("tax.officer").certPath, "utf8");
    const der = new Uint8Array(new X509Certificate(officer).raw);
    await expectRefused(
      "infocenter.admin",
      "config.validator.set",
      { certificate: der, power: 1 },
      "FORBIDDEN",
    );
  });

  it("a change moves less than a third of the voting power", async () => {
    // Total 10: 4 is too much (12 >= 10), and removing the only validator is 10 of 10.
    await expectRefused(
      "infocenter.admin",
      "config.validator.set",
      { certificate: newNodeDer, power: 4 },
      "FORBIDDEN",
    );
    await expectRefused(
      "infocenter.admin",
      "config.validator.remove",
      { validatorId: toHex(genesis[0]!.id) },
      "FORBIDDEN",
    );
  });

  it("removing an unknown validator is NOT_FOUND", async () => {
    await expectRefused(
      "infocenter.admin",
      "config.validator.remove",
      { validatorId: "ab".repeat(32) },
      "NOT_FOUND",
    );
  });
});

describe("validator changes: effect", () => {
  let changeHeight = 0;

  it("takes effect at the next height: that block is made for the new set", async () => {
    const admin = await net.clientFor("infocenter.admin");
    const status = await admin.send("config.validator.set", { certificate: newNodeDer, power: 3 });
    const h = status.height!;
    changeHeight = h + 1;
    const ledger = net.node.node.ledger;
    assert.equal(ledger.validators().length, 2);
    assert.ok(bytesEqual(ledger.validators()[1]!.id, newNodeId()));
    assert.equal(ledger.votersAt(h).length, 1, "the block with the change was voted on by the old set");
    // The solo node keeps committing: 10 of 13 is more than two thirds.
    const next = await (await net.clientFor("tax.officer")).send("kv.put", {
      key: "after-change",
      value: utf8("v"),
    });
    assert.ok(next.height! > h);
    const block = await admin.block(next.height!);
    const header = ledger.blockAt(next.height!)!.header;
    assert.ok(bytesEqual(header.validatorsHash, validatorsHashOf(ledger.validators())));
    assert.equal(block.commit?.signatures.length, 1);
  });

  it("one change per block: a second in the same block is a CONFLICT", async () => {
    const ledger = net.node.node.ledger;
    const admin = await net.identityFor("infocenter.admin");
    const chainId = ledger.params().chainId;
    const make = async (power: number) =>
      decodeTx(
        (
          await buildTx({
            chainId,
            type: "config.validator.set",
            payload: { certificate: newNodeDer, power },
            signers: [admin],
            nowMs: Date.now(),
          })
        ).bytes,
      );
    const built = ledger.buildBlock(
      [await make(2), await make(1)],
      Date.now(),
      net.node.node.validatorId,
      null,
    );
    assert.deepEqual(
      built.execution.results.map((r) => r.code),
      ["OK", "CONFLICT"],
    );
  });

  it("GET /v1/validators lists the change; a client trusting genesis follows it and verifies", async () => {
    const client = await net.clientFor("police.auditor");
    const answer = await client.validatorChanges(0);
    assert.equal(answer.changes.length, 1);
    assert.equal(answer.changes[0]!.height, changeHeight);
    assert.equal(answer.next.validators.length, 2);
    const followed = await followValidatorChanges({ height: 1, validators: genesis }, answer.changes);
    assert.equal(followed.height, changeHeight);
    assert.deepEqual(
      followed.validators.map((v) => toHex(v.id)),
      validatorsFromJson(answer.next.validators).map((v) => toHex(v.id)),
    );
    // Not applied past the height asked for.
    const before = await followValidatorChanges(
      { height: 1, validators: genesis },
      answer.changes,
      changeHeight - 1,
    );
    assert.equal(before.validators.length, 1);

    // A client anchored to genesis reads state proven by a block of the new set.
    const anchored = new CitychainClient({
      url: net.url,
      identity: await net.identityFor("police.auditor"),
      fetch: net.fetch,
      trustedValidators: genesis,
    });
    const read = await anchored.state("kv/tax/after-change");
    assert.deepEqual(read.value, utf8("v"));
  });

  it("a change whose list, proof or commit was altered is refused", async () => {
    const client = await net.clientFor("police.auditor");
    const [change] = (await client.validatorChanges(0)).changes as [ValidatorChangeJson];
    const trusted = { height: 1, validators: genesis };

    // A node that adds its own key to the list: the proof no longer leads to the signed state root.
    const list = fromBase64(change.value);
    const forgedValue = {
      ...change,
      value: toBase64(Uint8Array.from(list, (b, i) => (i === list.length - 1 ? b ^ 1 : b))),
    };
    await assert.rejects(followValidatorChanges(trusted, [forgedValue]), VerificationError);

    const proof = change.proof as { siblings: (string | null)[] };
    const at = proof.siblings.findIndex((s) => s !== null);
    const siblings = [...proof.siblings];
    siblings[at] = `${siblings[at]!.slice(0, -1)}${siblings[at]!.endsWith("0") ? "1" : "0"}`;
    await assert.rejects(
      followValidatorChanges(trusted, [{ ...change, proof: { ...proof, siblings } }]),
      VerificationError,
    );

    const noCommit = { ...change, commit: null };
    await assert.rejects(followValidatorChanges(trusted, [noCommit]), VerificationError);

    // Trusting a set that did not sign the change's block.
    const stranger = [{ ...genesis[0]!, id: new Uint8Array(32).fill(7) }];
    await assert.rejects(
      followValidatorChanges({ height: 1, validators: stranger }, [change]),
      VerificationError,
    );
  });

  it("a removal is a change too; every height's voters survive a restart and the audit", async () => {
    const admin = await net.clientFor("infocenter.admin");
    const removal = await admin.send("config.validator.remove", { validatorId: toHex(newNodeId()) });
    const removedAt = removal.height! + 1;
    const ledger = net.node.node.ledger;
    assert.equal(ledger.validators().length, 1);
    const voters = (h: number) => net.node.node.ledger.votersAt(h).length;
    assert.equal(voters(changeHeight - 1), 1);
    assert.equal(voters(changeHeight), 2);
    assert.equal(voters(removal.height!), 2);

    const answer = await (await net.clientFor("police.auditor")).validatorChanges(0);
    assert.deepEqual(
      answer.changes.map((c) => c.height),
      [changeHeight, removedAt],
    );
    const followed = await followValidatorChanges({ height: 1, validators: genesis }, answer.changes);
    assert.equal(followed.validators.length, 1);
    const paged = await (await net.clientFor("police.auditor")).validatorChanges(changeHeight);
    assert.deepEqual(
      paged.changes.map((c) => c.height),
      [removedAt],
    );

    // The priorities the ledger keeps in memory for the next height are the ones it stored.
    const nextHeight = ledger.height() + 1;
    const nextSet = ledger.validatorSetAt(nextHeight);
    const dir = net.layout.nodes[0]!.dir;
    await net.node.close();
    const report = auditDataDir(dir);
    assert.ok(report.ok, JSON.stringify(report));
    const again = await startNode({ dir, passphrase: { value: net.passphrase } });
    try {
      assert.equal(again.node.ledger.votersAt(changeHeight).length, 2);
      assert.equal(again.node.ledger.votersAt(changeHeight - 1).length, 1);
      assert.equal(again.node.ledger.validatorChanges(0, 10).length, 2);
      assert.deepEqual(again.node.ledger.validatorSetAt(nextHeight), nextSet);
    } finally {
      await again.close();
    }
  });
});

describe("cosignTx", () => {
  it("adds a signature over the same body, once per certificate", async () => {
    const admin = await net.identityFor("infocenter.admin");
    const tax = await net.identityFor("tax.admin");
    const built = await buildTx({
      chainId: "citychain-dev",
      type: "kv.put",
      payload: { key: "k", value: utf8("v") },
      signers: [admin],
      nowMs: Date.now(),
    });
    const cosigned = await cosignTx(built.bytes, tax);
    assert.equal(cosigned.id, built.id, "the id names the body, which co-signing leaves alone");
    const tx = decodeTx(cosigned.bytes);
    assert.equal(tx.signatures.length, 2);
    await assert.rejects(cosignTx(cosigned.bytes, tax), /signed the transaction already/);
    await assert.rejects(cosignTx(cosigned.bytes, admin), /signed the transaction already/);
  });
});

describe("solo production after validator changes", () => {
  it("a solo node stops making blocks once it holds two thirds of the power or less", async () => {
    // The node was stopped by the restart test above: start it again on its folder.
    const running = await startNode({ dir: net.layout.nodes[0]!.dir, passphrase: { value: net.passphrase } });
    try {
      const client = async (as: string) =>
        new CitychainClient({ url: running.url, identity: await net.identityFor(as), fetch: net.fetch });
      const admin = await client("infocenter.admin");
      const node = running.node;
      // 10 of 13, then 10 of 16 (each change moves less than a third; the operator's department
      // still approves alone while it holds more than two thirds).
      await admin.send("config.validator.set", { certificate: newNodeDer, power: 3 });
      assert.equal(node.soloHoldsQuorum(), true);
      const last = await admin.send("config.validator.set", { certificate: newNodeDer, power: 6 });
      assert.equal(node.soloHoldsQuorum(), false);
      const tax = await client("tax.officer");
      const tx = await tax.buildTx("kv.put", { key: "after-quorum-lost", value: utf8("v") });
      const status = await tax.submitBytes(tx.bytes, { wait: true, waitMs: 1500 });
      assert.equal(status.status, "pending", "no block is made without a quorum");
      assert.equal(node.ledger.height(), last.height, "the chain stands where the last change left it");
    } finally {
      await running.close();
    }
  });
});
