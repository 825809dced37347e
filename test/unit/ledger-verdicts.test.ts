/**
 * Signature verdicts remembered at admission belong to the transaction object that was verified:
 * a copy with the same body (so the same id) but a forged signature is verified on its own and
 * refused, and the admitted object is executed on its remembered verdict. A block check's verdicts
 * serve the gossip copy of the same bytes that arrives before the block commits. Identities resolved once
 * per block still see a revocation made earlier in the same block. A node's own blocks hold at most
 * proposalTxsMax transactions.
 */
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import type { Commit } from "../../src/core/block.ts";
import { utf8 } from "../../src/core/encoding.ts";
import type { CodedError } from "../../src/core/errors.ts";
import type { X509Port } from "../../src/core/identity.ts";
import { decodeTx, encodeTx } from "../../src/core/tx.ts";
import {
  blockTimeAheadMaxMs,
  blockTimeBehindMaxMs,
  LedgerApplication,
} from "../../src/node/consensus-app.ts";
import { txBytesKey } from "../../src/node/ledger.ts";
import { buildTx } from "../../src/sdk/tx-builder.ts";
import { startTestNetwork, type TestNetwork } from "../helpers/net.ts";

let net: TestNetwork;

before(async () => {
  net = await startTestNetwork();
});

after(async () => {
  await net?.close();
});

async function signedKvPut(key: string, enrollmentId = "tax.officer", certById = false) {
  const identity = await net.identityFor(enrollmentId);
  const chainId = net.node.node.ledger.params().chainId;
  return buildTx({
    chainId,
    type: "kv.put",
    payload: { key, value: utf8("v") },
    signers: [identity],
    nowMs: Date.now(),
    certById,
  });
}

describe("signature verdicts from admission", () => {
  it("do not carry over to a same-id copy with a forged signature", async () => {
    const { node } = net.node;
    const honest = await signedKvPut("verdicts/1");
    assert.equal((await node.submit(honest.bytes)).status, "pending");
    const admitted = node.mempool.peek(100, 1 << 20).find((tx) => tx.id === honest.id)!;
    assert.ok(admitted !== undefined);

    // Same body, a signature by the same key over other bytes: well-formed, low S, and wrong.
    const identity = await net.identityFor("tax.officer");
    const wrong = await identity.signer.sign(utf8("some other message"));
    const forged = decodeTx(
      encodeTx(admitted.bodyBytes, [{ signer: admitted.signatures[0]!.signer, signature: wrong }]),
    );
    assert.equal(forged.id, admitted.id);

    const ledger = node.ledger;
    const built = ledger.buildBlock([forged], Date.now(), node.validatorId, null);
    assert.deepEqual(built.execution.included, []);
    assert.equal(built.execution.rejected[0]?.error.code, "SIGNATURE_INVALID");

    const honestBlock = ledger.buildBlock([admitted], Date.now(), node.validatorId, null);
    assert.deepEqual(
      honestBlock.execution.included.map((tx) => tx.id),
      [admitted.id],
    );
  });

  it("a revocation earlier in a block refuses the revoked signer's later transactions in it", async () => {
    const { node } = net.node;
    const chainId = node.ledger.params().chainId;
    const admin = await net.identityFor("infocenter.admin");
    // The signer's certificate on the ledger, so its transactions refer to it by id and every one of
    // them resolves the same certificate bytes.
    await (await net.clientFor("police.officer")).send("kv.put", { key: "memo/first", value: utf8("v") });
    const before = decodeTx((await signedKvPut("memo/before", "police.officer", true)).bytes);
    const revoke = decodeTx(
      (
        await buildTx({
          chainId,
          type: "config.identity.revoke",
          payload: { enrollmentId: "police.officer", reason: "keyCompromise", revokedAtMs: Date.now() },
          signers: [admin],
          nowMs: Date.now(),
        })
      ).bytes,
    );
    const after = decodeTx((await signedKvPut("memo/after", "police.officer", true)).bytes);
    const other = decodeTx((await signedKvPut("memo/other", "tax.officer", false)).bytes);
    const built = node.ledger.buildBlock([before, revoke, after, other], Date.now(), node.validatorId, null);
    assert.deepEqual(
      built.execution.included.map((tx) => tx.id),
      [before.id, revoke.id, other.id],
    );
    assert.equal(built.execution.results[1]?.code, "OK");
    assert.deepEqual(
      built.execution.rejected.map((r) => [r.txId, r.error.code]),
      [[after.id, "CERT_REVOKED"]],
    );
  });

  it("a node's own block takes at most proposalTxsMax of the pending transactions", async () => {
    const { node } = net.node;
    const limit = node.options.proposalTxsMax;
    assert.ok(limit >= 1);
    assert.ok(node.candidates().length <= Math.min(limit, node.ledger.params().blockTxsMax));
  });
});

describe("identities resolved against the committed state", () => {
  it("are kept until the next commit, with the validity period checked on every use", async () => {
    const { ledger } = net.node.node;
    const identity = await net.identityFor("tax.officer");
    const der = identity.certDer;
    // Counts certificate parses: resolving an identity parses its certificate and the roots.
    const x509 = ledger.x509;
    let parses = 0;
    (ledger as unknown as { x509: X509Port }).x509 = {
      parse: (bytes) => {
        parses++;
        return x509.parse(bytes);
      },
      verifyIssuedBy: (child, issuer) => x509.verifyIssuedBy(child, issuer),
    };
    try {
      const first = ledger.identityAt(der, Date.now());
      parses = 0;
      assert.equal(ledger.identityAt(der, Date.now()), first);
      assert.equal(parses, 0, "kept: not resolved again");
      // Kept, yet outside its validity period it is refused, as resolveIdentity refuses it.
      for (const atMs of [first.notAfterMs + 1, first.notBeforeMs - 1]) {
        assert.throws(
          () => ledger.identityAt(der, atMs),
          (e: CodedError) => e.code === "CERT_EXPIRED",
        );
      }
      // A commit starts afresh: it may have revoked the certificate.
      const tx = await signedKvPut("identities/after-commit");
      await net.node.node.submit(tx.bytes);
      (net.node.node as unknown as { produceBlock(): void }).produceBlock();
      parses = 0;
      assert.equal(ledger.identityAt(der, Date.now()).certId, first.certId);
      assert.ok(parses > 0, "resolved again after the commit");
    } finally {
      (ledger as unknown as { x509: X509Port }).x509 = x509;
    }
  });
});

describe("admission racing a commit", () => {
  it("a transaction committed while its signature was being checked does not re-enter the mempool", async () => {
    const { node } = net.node;
    const tx = await signedKvPut("race/committed-meanwhile");
    const heightBefore = node.ledger.height();
    // Admission checks the signature off the event loop; before it answers, a block commits the
    // same transaction (here: put straight into the mempool and produced at once).
    const admission = node.submit(tx.bytes);
    node.mempool.add(decodeTx(tx.bytes));
    (node as unknown as { produceBlock(): void }).produceBlock();
    assert.equal(node.ledger.height(), heightBefore + 1);
    const status = await admission;
    assert.equal(status.status, "committed");
    assert.equal(node.mempool.has(tx.id), false);
  });
});

describe("a block check's verdicts", () => {
  it("admit a gossip copy of a transaction the check verified without verifying it again", async () => {
    const { node } = net.node;
    const ledger = node.ledger;
    const tx = await signedKvPut("verdicts/checked-then-gossiped");
    // Another validator's block carrying a transaction this node has not seen: built here, then
    // checked as a replica checks a proposal (decoded from the block's bytes, verified there).
    const lastCommit = (node as unknown as { lastCommit: Commit | null }).lastCommit;
    const proposed = ledger.buildBlock([decodeTx(tx.bytes)], Date.now(), node.validatorId, lastCommit);
    // Same body, a signature by the same key over other bytes: well-formed, low S, and wrong.
    const identity = await net.identityFor("tax.officer");
    const parsed = decodeTx(tx.bytes);
    const forgedBytes = encodeTx(parsed.bodyBytes, [
      { signer: parsed.signatures[0]!.signer, signature: await identity.signer.sign(utf8("other")) },
    ]);
    const verifier = ledger.verifier;
    const { verify, verifyAsync } = verifier;
    // Checks of the transactions' signatures (the block's last commit is verified too).
    const txSignatures = new Set(
      [tx.bytes, forgedBytes].map((b) => Buffer.from(decodeTx(b).signatures[0]!.signature).toString("hex")),
    );
    let verifications = 0;
    const count = (signature: Uint8Array) => {
      if (txSignatures.has(Buffer.from(signature).toString("hex"))) verifications++;
    };
    verifier.verify = (spki, message, signature) => {
      count(signature);
      return verify.call(verifier, spki, message, signature);
    };
    verifier.verifyAsync = (spki, message, signature) => {
      count(signature);
      return verifyAsync.call(verifier, spki, message, signature);
    };
    try {
      ledger.checkBlock(proposed.block);
      assert.equal(verifications, 1, "the check verified the transaction's one signature");
      // The copy arrives by gossip (which hands in the key of the bytes it received) before the
      // block commits: admitted on the check's verdict.
      assert.equal((await node.submit(tx.bytes, txBytesKey(tx.bytes))).status, "pending");
      assert.equal(verifications, 1, "admission reused the check's verdict");
      // The copy with the same id and a forged signature has other bytes, so another key: verified
      // on its own, and refused.
      node.mempool.remove(tx.id);
      await assert.rejects(
        node.submit(forgedBytes, txBytesKey(forgedBytes)),
        /SIGNATURE_INVALID|does not verify/,
      );
      assert.equal(verifications, 2);
    } finally {
      verifier.verify = verify;
      verifier.verifyAsync = verifyAsync;
    }
  });
});

describe("the replay check", () => {
  it("answers a pending transaction from the mempool and asks the store about any other", async () => {
    const { node } = net.node;
    const tx = await signedKvPut("replay/pending-then-committed");
    assert.equal((await node.submit(tx.bytes)).status, "pending");
    const store = node.ledger.store;
    const asked: string[] = [];
    const isCommitted = store.isCommitted;
    store.isCommitted = (id: string) => {
      asked.push(id);
      return isCommitted.call(store, id);
    };
    try {
      (node as unknown as { produceBlock(): void }).produceBlock();
      assert.equal(node.status(tx.id).status, "committed");
      assert.deepEqual(asked, [], "the block's pending transaction cost no store lookup");
      // Committed now, so not pending: the same transaction in a later block goes to the store,
      // which refuses it.
      const again = node.ledger.buildBlock([decodeTx(tx.bytes)], Date.now(), node.validatorId, null);
      assert.deepEqual(asked, [tx.id]);
      assert.deepEqual(
        again.execution.rejected.map((r) => r.error.code),
        ["TX_ALREADY_COMMITTED"],
      );
    } finally {
      store.isCommitted = isCommitted;
    }
  });
});

describe("a proposed block's time", () => {
  it("is timely only within blockTimeAheadMaxMs ahead and blockTimeBehindMaxMs behind the validator's clock, and never makes it invalid", () => {
    const { node } = net.node;
    const ledger = node.ledger;
    const height = ledger.height() + 1;
    const now = Date.now();
    const appAt = (nowMs: number, refused: CodedError[] = []) =>
      new LedgerApplication(
        ledger,
        node,
        { now: () => nowMs },
        { onRefused: (_h, why) => refused.push(why) },
      );
    // A proposer whose clock runs a minute fast.
    const fast = appAt(now + 60_000).proposeBlock(height, 0);
    const refused: CodedError[] = [];
    const slowValidator = appAt(now, refused);
    assert.equal(slowValidator.isTimely(fast.bytes), false, "no prevote for it when proposed");
    assert.equal(refused[0]?.code, "BLOCK_TIME_AHEAD");
    assert.match(refused[0]?.message ?? "", /block time is 60000 ms ahead of this node's clock/);
    // Untimely is not invalid: a validator with this clock still locks on and decides the block
    // when the others prevoted it (valid(v) is deterministic, the same on every node).
    assert.equal(slowValidator.validateBlock(height, fast.bytes), true);
    assert.equal(refused.length, 1, "validity refused nothing");
    // The same block is timely for a validator whose clock is within the bound of it.
    assert.equal(appAt(now + 60_000 - blockTimeAheadMaxMs).isTimely(fast.bytes), true);
    // A block dated far back (a slow or backdating proposer: certificates and expiry would be judged
    // at that date; here the validator's clock runs 30 s fast) is untimely too, and just as valid.
    const onTime = appAt(now).proposeBlock(height, 0);
    const fastValidator = appAt(now + 30_000, refused);
    assert.equal(fastValidator.isTimely(onTime.bytes), false);
    assert.equal(refused[1]?.code, "BLOCK_TIME_BEHIND");
    assert.match(refused[1]?.message ?? "", /block time is 30000 ms behind this node's clock/);
    assert.equal(fastValidator.validateBlock(height, onTime.bytes), true);
    assert.equal(appAt(now + blockTimeBehindMaxMs).isTimely(onTime.bytes), true);
    // A block on time is timely.
    assert.equal(appAt(now).isTimely(onTime.bytes), true);
    // Bytes that are no block are for validity to refuse, with its reason.
    assert.equal(appAt(now).isTimely(new Uint8Array([1, 2, 3])), true);
    assert.equal(ledger.height(), height - 1, "nothing committed");
  });
});
