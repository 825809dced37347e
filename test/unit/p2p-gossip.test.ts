/**
 * Transaction gossip against a scripted network and a manual clock: batching limits, the seen-cache
 * bound, admission in flight, taking a transaction out of a peer's batch when that peer sends it to
 * us first, and the delayed relay. The socket-level behaviour is in p2p.test.ts.
 */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import type { DropReason } from "../../src/p2p/errors.ts";
import { defaultMessageLimits, type PeerMessage } from "../../src/p2p/messages.ts";
import type { PeerNetworkHandlers, SendResult } from "../../src/p2p/peer-network.ts";
import type { NetworkClock } from "../../src/p2p/ports.ts";
import { type GossipNetwork, type TxAdmission, TxGossip } from "../../src/p2p/tx-gossip.ts";

class FakeNetwork implements GossipNetwork {
  readonly limits = defaultMessageLimits;
  readonly sent: Array<{ to: string; txs: string[] }> = [];
  readonly disconnected: Array<{ peerId: string; reason: DropReason }> = [];
  handlers: Partial<PeerNetworkHandlers> = {};

  constructor(public peers: string[]) {}

  send(peerId: string, message: PeerMessage): SendResult {
    assert.equal(message.type, "tx");
    if (message.type === "tx") this.sent.push({ to: peerId, txs: message.txs.map(text) });
    return "queued";
  }
  peerIds(): readonly string[] {
    return this.peers;
  }
  subscribe(handlers: Partial<PeerNetworkHandlers>): () => void {
    this.handlers = handlers;
    return () => {
      this.handlers = {};
    };
  }
  disconnect(peerId: string, reason: DropReason): void {
    this.disconnected.push({ peerId, reason });
  }
  deliver(from: string, ...txs: string[]): void {
    this.handlers.onMessage?.(from, { type: "tx", txs: txs.map(bytesOf) });
  }
}

class ManualClock implements NetworkClock {
  private timers: Array<{ atMs: number; callback: () => void; live: boolean }> = [];
  private nowMs = 0;
  now(): number {
    return this.nowMs;
  }
  setTimer(delayMs: number, callback: () => void) {
    const timer = { atMs: this.nowMs + delayMs, callback, live: true };
    this.timers.push(timer);
    return { cancel: () => (timer.live = false) };
  }
  advance(ms: number): void {
    this.nowMs += ms;
    const due = this.timers.filter((t) => t.live && t.atMs <= this.nowMs);
    this.timers = this.timers.filter((t) => !due.includes(t));
    for (const t of due) t.callback();
  }
}

const bytesOf = (s: string) => new TextEncoder().encode(s);
const text = (b: Uint8Array) => new TextDecoder().decode(b);
const sortedSends = (network: FakeNetwork, from = 0) =>
  network.sent
    .slice(from)
    .map((s) => `${s.to}:${s.txs.join(",")}`)
    .sort();

function setup(
  options: { admit?: (tx: Uint8Array, from: string) => TxAdmission | Promise<TxAdmission> } & Record<
    string,
    unknown
  > = {},
) {
  const network = new FakeNetwork(["p1", "p2", "p3"]);
  const clock = new ManualClock();
  const gossip = new TxGossip(network, {
    admit: () => "accepted",
    txIdOf: text,
    batchDelayMs: 10,
    // Relays at once unless a test says otherwise, so batching is seen on its own.
    relayDelayMs: 0,
    clock,
    ...options,
  });
  return { network, clock, gossip };
}

describe("tx gossip", () => {
  it("batches until the delay, then sends one frame per peer, skipping the source", () => {
    const { network, clock } = setup();
    network.deliver("p1", "a", "b");
    network.deliver("p2", "c");
    assert.equal(network.sent.length, 0, "nothing before the batch delay");
    clock.advance(10);
    assert.deepEqual(sortedSends(network), ["p1:c", "p2:a,b", "p3:a,b,c"]);
  });

  it("flushes a batch as soon as it is full, by count or by bytes", () => {
    const { network, clock, gossip } = setup({ batchTxsMax: 2, batchBytesMax: 1000 });
    for (const tx of ["a", "b", "c"]) gossip.publish(bytesOf(tx));
    assert.deepEqual(sortedSends(network), ["p1:a,b", "p2:a,b", "p3:a,b"]);
    clock.advance(10);
    assert.equal(network.sent.length, 6);
    const big = setup({ batchBytesMax: 10 });
    big.gossip.publish(bytesOf("123456"));
    big.gossip.publish(bytesOf("7890ab"));
    assert.deepEqual(
      sortedSends(big.network),
      ["p1:123456", "p2:123456", "p3:123456"],
      "the second would overflow",
    );
  });

  it("takes a transaction out of a peer's batch when that peer sends it first", () => {
    const { network, clock } = setup();
    network.deliver("p1", "a");
    network.deliver("p2", "a");
    clock.advance(10);
    assert.deepEqual(sortedSends(network), ["p3:a"]);
  });

  it("does not forward to peers that sent a transaction while it was being admitted", async () => {
    let release: (verdict: TxAdmission) => void = () => {};
    const { network, clock } = setup({
      admit: () => new Promise<TxAdmission>((resolve) => (release = resolve)),
    });
    network.deliver("p1", "a");
    network.deliver("p3", "a");
    release("accepted");
    await Promise.resolve();
    clock.advance(10);
    assert.deepEqual(sortedSends(network), ["p2:a"]);
  });

  it("forwards nothing the node rejected, and drops a peer for what it judges misbehaviour", () => {
    const { network, clock, gossip } = setup({
      admit: (tx: Uint8Array) => (text(tx) === "bad" ? "misbehaving" : "rejected"),
    });
    network.deliver("p2", "old", "bad");
    clock.advance(10);
    assert.deepEqual(network.sent, []);
    assert.deepEqual(network.disconnected, [{ peerId: "p2", reason: "invalid-tx" }]);
    assert.equal(gossip.stats.rejected, 1);
    assert.equal(gossip.stats.misbehaving, 1);
  });

  it("remembers at most seenTxsMax ids, oldest forgotten first", () => {
    const { clock, gossip } = setup({ seenTxsMax: 2 });
    for (const tx of ["a", "b", "c"]) gossip.publish(bytesOf(tx));
    clock.advance(10);
    assert.equal(gossip.stats.forwardedTxs, 9);
    assert.equal(gossip.publish(bytesOf("c")), false);
    assert.equal(gossip.publish(bytesOf("a")), true, "a was forgotten");
    clock.advance(10);
    assert.equal(gossip.stats.forwardedTxs, 12);
  });

  it("ignores gossip beyond admissionsInFlightMax, without remembering it", () => {
    const { network, gossip } = setup({
      admissionsInFlightMax: 1,
      admit: () => new Promise<TxAdmission>(() => {}),
    });
    network.deliver("p1", "a", "b");
    assert.equal(gossip.stats.overloaded, 1);
    network.deliver("p1", "b");
    assert.equal(gossip.stats.overloaded, 2, "b is still new, not a duplicate");
    assert.equal(gossip.stats.duplicates, 0);
  });

  it("offers its own transactions at once but relays gossip only after relayDelayMs", () => {
    const pending = new Set(["a", "b", "c"]);
    const { network, clock, gossip } = setup({
      relayDelayMs: 100,
      stillPending: (txId: string) => pending.has(txId),
    });
    gossip.publish(bytesOf("own"));
    network.deliver("p1", "a", "b");
    clock.advance(10);
    assert.deepEqual(sortedSends(network), ["p1:own", "p2:own", "p3:own"], "only the node's own");
    network.deliver("p2", "a");
    network.deliver("p3", "c");
    pending.delete("b");
    clock.advance(89);
    assert.equal(network.sent.length, 3, "a and b are not due before 100 ms");
    clock.advance(1);
    clock.advance(10);
    assert.deepEqual(
      sortedSends(network, 3),
      ["p3:a"],
      "a goes only to the peer that has not sent it; b was committed meanwhile",
    );
    clock.advance(100);
    assert.deepEqual(sortedSends(network, 4), ["p1:c", "p2:c"], "c, 100 ms after it came");
    assert.equal(gossip.stats.relayed, 2);
    assert.equal(gossip.stats.relaysSkipped, 1);
  });

  it("relays at once when relaysWaitingMax relays already wait, and relays nothing after close", () => {
    const { network, clock, gossip } = setup({ relayDelayMs: 100, relaysWaitingMax: 1 });
    network.deliver("p1", "a", "b");
    clock.advance(10);
    assert.deepEqual(sortedSends(network), ["p2:b", "p3:b"], "b found the queue full");
    gossip.close();
    clock.advance(200);
    assert.equal(network.sent.length, 2, "a was dropped with the queue");
  });

  it("forgets a peer's batch when the peer goes down, and stops on close", () => {
    const { network, clock, gossip } = setup();
    gossip.publish(bytesOf("a"));
    network.handlers.onPeerDown?.("p2", "remote-closed");
    clock.advance(10);
    assert.deepEqual(sortedSends(network), ["p1:a", "p3:a"]);
    gossip.close();
    network.deliver("p1", "z");
    assert.equal(gossip.stats.received, 0);
  });
});
