/**
 * Signature verdicts remembered at admission belong to the transaction object that was verified:
 * a copy with the same body (so the same id) but a forged signature is verified on its own and
 * refused, and the admitted object is executed on its remembered verdict. Also: a node's own blocks
 * hold at most proposalTxsMax transactions.
 */
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { utf8 } from "../../src/core/encoding.ts";
import { decodeTx, encodeTx } from "../../src/core/tx.ts";
import { buildTx } from "../../src/sdk/tx-builder.ts";
import { startTestNetwork, type TestNetwork } from "../helpers/net.ts";

let net: TestNetwork;

before(async () => {
  // Blocks only when the test makes them: nothing commits behind its back.
  net = await startTestNetwork({ blockIntervalMs: 60_000 });
});

after(async () => {
  await net?.close();
});

async function signedKvPut(key: string) {
  const identity = await net.identityFor("tax.officer");
  const chainId = net.node.node.ledger.params().chainId;
  return buildTx({
    chainId,
    type: "kv.put",
    payload: { key, value: utf8("v") },
    signers: [identity],
    nowMs: Date.now(),
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

  it("a node's own block takes at most proposalTxsMax of the pending transactions", async () => {
    const { node } = net.node;
    const limit = node.options.proposalTxsMax;
    assert.ok(limit >= 1);
    assert.ok(node.candidates().length <= Math.min(limit, node.ledger.params().blockTxsMax));
  });
});
