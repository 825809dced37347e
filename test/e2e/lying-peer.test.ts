/**
 * A peer that lies about its height cannot keep a node out of consensus: a real validator process
 * and, connected to it over mutual TLS with a valid node certificate of a registered department, a
 * peer that claims a far higher height (in its hello, then in status messages) and never sends a
 * block. The validator asks it once, gives up after its request timeout, stops believing it, and
 * commits again; later lies do not stop it.
 */
import assert from "node:assert/strict";
import fs from "node:fs";
import path from "node:path";
import { after, before, test } from "node:test";
import { utf8 } from "../../src/core/encoding.ts";
import { nodeFiles } from "../../src/node/config.ts";
import { PeerNetwork } from "../../src/p2p/index.ts";
import { createProcessNetwork, type ProcessNetwork } from "./process-net.ts";

let net: ProcessNetwork;
let liar: PeerNetwork | undefined;
let blockRequests = 0;
let blockResponses = 0;
let claimedHeight = 1_000_000;

before(async () => {
  // node0 validates alone in consensus mode; node1's folder only lends the liar its identity.
  net = await createProcessNetwork({ nodes: 1, observers: 1 });
  await net.start(0);
});

after(async () => {
  await liar?.close();
  await net?.close();
});

async function committedWithin(key: string, timeoutMs: number): Promise<number> {
  const client = await net.client("tax.officer", 0);
  const started = Date.now();
  const sent = client.send("kv.put", { key, value: utf8(key) });
  const timeout = new Promise<never>((_, reject) =>
    setTimeout(() => reject(new Error(`${key} did not commit within ${timeoutMs} ms`)), timeoutMs),
  );
  await Promise.race([sent, timeout]);
  return Date.now() - started;
}

test("a peer claiming blocks it never sends is asked once, then ignored", async () => {
  await committedWithin("before", 30_000);
  const dir = net.layout.nodes[1]!.dir;
  const passphrase = net.passphrase;
  liar = new PeerNetwork({
    chainId: net.layout.chainId,
    tls: {
      certPem: fs.readFileSync(path.join(dir, nodeFiles.cert), "utf8"),
      keyPem: fs.readFileSync(path.join(dir, nodeFiles.key), "utf8"),
      passphrase,
      caPems: [fs.readFileSync(net.layout.caCertPath, "utf8")],
    },
    listen: null,
    peers: [`127.0.0.1:${net.layout.nodes[0]!.p2pPort}`],
    authorizePeer: () => "validator",
    height: () => claimedHeight,
  });
  liar.subscribe({
    onMessage: (_peer, message) => {
      if (message.type === "block-request") blockRequests++;
      if (message.type === "block-response") blockResponses++;
    },
    onPeerUp: () => {},
    onPeerDown: () => {},
  });
  await liar.start();
  const status = await net.client("infocenter.auditor", 0);
  const deadline = Date.now() + 15_000;
  while (blockRequests === 0) {
    assert.ok(Date.now() < deadline, "the validator asked the liar for a block");
    await new Promise((r) => setTimeout(r, 100));
  }
  // While it waits for the liar, it says so; then it gives up and commits again.
  await committedWithin("after-the-lie", 30_000);
  assert.equal((await status.status()).syncing, false);

  // The same liar again, louder: the validator no longer believes it, so commits do not wait.
  const asked = blockRequests;
  claimedHeight = 2_000_000;
  liar.broadcast({ type: "status", height: claimedHeight });
  const tookMs = await committedWithin("after-the-second-lie", 30_000);
  assert.equal(blockRequests, asked, "no second request to a peer it stopped believing");
  assert.ok(tookMs < 5_000, `commits did not stall behind the lie (${tookMs} ms)`);
  assert.equal((await status.status()).syncing, false);
});

test("a peer asking for blocks faster than its budget gets no more than the budget", async () => {
  assert.ok(liar !== undefined);
  const [validator] = liar.peers();
  assert.ok(validator !== undefined, "the liar is still connected");
  const asked = 5_000;
  const started = Date.now();
  for (let i = 0; i < asked; i++) liar.send(validator.nodeId, { type: "block-request", height: 1 });
  await new Promise((r) => setTimeout(r, 2_000));
  const seconds = (Date.now() - started) / 1000;
  // The budget: a burst of 1,000 and 500 a second after it.
  assert.ok(blockResponses > 0, "requests within the budget are answered");
  assert.ok(
    blockResponses <= 1_000 + 500 * seconds + 1,
    `${blockResponses} answers to ${asked} requests in ${seconds.toFixed(1)} s`,
  );
  // The node is still in consensus.
  await committedWithin("after-the-flood", 30_000);
});
