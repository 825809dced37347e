/**
 * An observer node (a department that only reads) follows the chain through the same catch-up and
 * consensus path as a validator: it holds every block and the same state, serves verified queries,
 * and never signs a commit.
 */
import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import { utf8 } from "../../src/core/encoding.ts";
import { createProcessNetwork, type ProcessNetwork } from "./process-net.ts";

let net: ProcessNetwork;

before(async () => {
  net = await createProcessNetwork({ nodes: 3, observers: 1 });
  await Promise.all([0, 1, 2].map((i) => net.start(i)));
});

after(async () => {
  await net?.close();
});

test("an observer joining late catches up, follows new blocks, serves proofs and never votes", async () => {
  const writer = await net.client("tax.officer", 0);
  for (let i = 0; i < 5; i++) await writer.send("kv.put", { key: `early/${i}`, value: utf8(`e${i}`) });
  await net.start(3);
  const observer = await net.client("market.auditor", 3);
  const status = await observer.status();
  assert.equal(net.layout.nodes[3]!.observer, true);
  const last = await writer.send("kv.put", { key: "late", value: utf8("seen by all") });
  const deadline = Date.now() + 30_000;
  while ((await observer.status()).height < last.height!) {
    assert.ok(Date.now() < deadline, "the observer follows the chain");
    await new Promise((r) => setTimeout(r, 200));
  }
  const { value } = await observer.state("kv/tax/late");
  assert.equal(new TextDecoder().decode(value!), "seen by all");
  const { value: early } = await observer.state("kv/tax/early/0");
  assert.equal(new TextDecoder().decode(early!), "e0");
  const fromValidator = await writer.block(last.height!);
  const fromObserver = await observer.block(last.height!);
  assert.equal(fromObserver.header.hash, fromValidator.header.hash);
  for (let h = 1; h <= last.height!; h++) {
    const block = await observer.block(h);
    assert.ok(
      !block.commit!.signatures.some((s) => s.validatorId === status.validatorId),
      `observer signed block ${h}`,
    );
  }
  // A transaction sent to the observer is gossiped to the validators and committed. The observer
  // offers it to the peers it is connected to then, so first wait until all three links are up (it
  // has just caught up; a link still being dialled would miss the offer).
  const linked = Date.now() + 30_000;
  for (;;) {
    const peers = ((await observer.status()).network as { peers: Array<{ role: string }> }).peers;
    if (peers.filter((p) => p.role === "validator").length === 3) break;
    assert.ok(Date.now() < linked, "the observer connects to the three validators");
    await new Promise((r) => setTimeout(r, 100));
  }
  const viaObserver = await (await net.client("market.officer", 3)).send("kv.put", {
    key: "from-observer",
    value: utf8("ok"),
  });
  assert.equal(viaObserver.status, "committed");

  // Status shows each node's place in the network: the observer does not vote and sees the three
  // validators; a validator sees the other two and the observer, and counts the gossiped transaction.
  type Net = {
    validator: boolean;
    peers: Array<{ role: string; dept: string; height: number }>;
    counters: Record<string, number>;
  };
  const observerNet = (await observer.status()).network as Net;
  assert.equal(observerNet.validator, false);
  assert.deepEqual(observerNet.peers.map((p) => p.role).sort(), ["validator", "validator", "validator"]);
  // It joined five blocks late: it fetched them (catch-up), then followed consensus.
  const c = observerNet.counters;
  assert.ok(c["sync.started"]! >= 1 && c["sync.applied"]! >= 5, JSON.stringify(c));
  assert.equal(c["sync.refused"], 0);
  const validatorNet = (await writer.status()).network as Net;
  assert.equal(validatorNet.validator, true);
  assert.deepEqual(validatorNet.peers.map((p) => p.role).sort(), ["observer", "validator", "validator"]);
  assert.ok(validatorNet.counters["gossip.accepted"]! >= 1, JSON.stringify(validatorNet.counters));
  assert.ok(validatorNet.counters["consensus.decided"]! >= 1);
});
