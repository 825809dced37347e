/**
 * The consensus driver between the machine and its ports: what it drops, the WAL rule (persist before
 * send; a restart re-sends and never signs again), deciding into the application, and answering a
 * lagging peer with the decision it missed. Four validators with real P-256 keys; this node is one of
 * them and the test plays the other three.
 */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import {
  ConsensusDriver,
  type DriverOptions,
  type DriverStep,
  defaultDriverOptions,
} from "../../src/consensus/driver.ts";
import type { PeerId, TimerClock, TransportPort, Wal } from "../../src/consensus/ports.ts";
import type { WalRecord } from "../../src/consensus/wal.ts";
import { verifyCommit } from "../../src/core/consensus/commit.ts";
import {
  genesisValidatorSet,
  nextHeightValidatorSet,
  ProposerSchedule,
  type ValidatorSet,
} from "../../src/core/consensus/proposer.ts";
import {
  type ConsensusMessage,
  decodeConsensusMessage,
  encodeConsensusMessage,
  proposalSignBytes,
  sameValue,
  type UnsignedProposal,
  type UnsignedVote,
  voteSignBytes,
} from "../../src/core/consensus/types.ts";
import { NodeSignatureVerifier } from "../../src/node/crypto-node.ts";
import { deriveKey, type SimKey, validatorFor } from "../sim/keys.ts";
import { Prng } from "../sim/prng.ts";
import { SimChain } from "../sim/sim-app.ts";

const chainId = "citychain-test";
const prng = new Prng(9);
const keys = [0, 1, 2, 3].map(() => deriveKey(prng));
const outsider = deriveKey(prng);
const set: ValidatorSet = genesisValidatorSet(keys.map((k, i) => validatorFor(k, 10, i)));
const schedule = new ProposerSchedule(set);
const proposer0 = schedule.proposerIndex(0);
const self = (proposer0 + 1) % 4;
const others = [0, 1, 2, 3].filter((i) => i !== self);
const verifier = new NodeSignatureVerifier();

class ManualClock implements TimerClock {
  nowMs = 0;
  private seq = 0;
  readonly timers = new Map<number, { atMs: number; callback: () => void }>();
  now(): number {
    return this.nowMs;
  }
  schedule(atMs: number, callback: () => void): number {
    this.timers.set(++this.seq, { atMs, callback });
    return this.seq;
  }
  cancel(id: number): void {
    this.timers.delete(id);
  }
  advance(ms: number): void {
    this.nowMs += ms;
    for (const [id, t] of [...this.timers].sort((a, b) => a[1].atMs - b[1].atMs)) {
      if (t.atMs <= this.nowMs && this.timers.delete(id)) t.callback();
    }
  }
}

class MemoryWal implements Wal {
  readonly records: WalRecord[] = [];
  append(records: readonly WalRecord[]): void {
    this.records.push(...records);
  }
  replay(height: number): readonly WalRecord[] {
    return this.records.filter(
      (r) =>
        (r.kind === "block" ? r.height : r.kind === "vote" ? r.vote.height : r.proposal.height) === height,
    );
  }
  truncateBelow(): void {}
}

interface Node {
  driver: ConsensusDriver;
  sent: ConsensusMessage[];
  sentTo: { peer: PeerId; message: ConsensusMessage }[];
  signatures: number;
}

function boot(
  index: number,
  wal: MemoryWal,
  chain: SimChain,
  clock: ManualClock,
  onSend?: (m: ConsensusMessage) => void,
  trace?: (step: DriverStep, height: number) => void,
  options: Partial<DriverOptions> = {},
): Node {
  const node: Node = { driver: null as unknown as ConsensusDriver, sent: [], sentTo: [], signatures: 0 };
  const transport: TransportPort = {
    broadcast(bytes) {
      const m = decodeConsensusMessage(bytes);
      onSend?.(m);
      node.sent.push(m);
    },
    send(peer, bytes) {
      node.sentTo.push({ peer, message: decodeConsensusMessage(bytes) });
    },
  };
  const signer = {
    validatorId: keys[index]!.id,
    sign: (message: Uint8Array) => {
      node.signatures++;
      return keys[index]!.sign(message);
    },
  };
  node.driver = new ConsensusDriver(
    { clock, transport, signer, verifier, wal, app: chain, ...(trace === undefined ? {} : { trace }) },
    { ...defaultDriverOptions, chainId, blockBytesMax: 4096, ...options },
  );
  node.driver.start();
  return node;
}

function chainOf(index: number): SimChain {
  return new SimChain(index, keys[index]!.id, set, { onCommit() {}, onEvidence() {} });
}

function voteBytes(
  from: number,
  unsigned: Omit<UnsignedVote, "validatorId">,
  key: SimKey = keys[from]!,
): Uint8Array {
  const u = { ...unsigned, validatorId: keys[from]!.id };
  return encodeConsensusMessage({
    kind: "vote",
    vote: { ...u, signature: key.sign(voteSignBytes(chainId, u)) },
  });
}

function proposalBytes(
  from: number,
  round: number,
  blockBytes: Uint8Array,
  blockHash: Uint8Array,
  height = 1,
): Uint8Array {
  const u: UnsignedProposal = {
    chainId,
    height,
    round,
    polRound: -1,
    blockHash,
    proposer: keys[from]!.id,
  };
  return encodeConsensusMessage({
    kind: "proposal",
    proposal: { ...u, signature: keys[from]!.sign(proposalSignBytes(u)) },
    blockBytes,
  });
}

const block = chainOf(proposer0).proposeBlock(1, 0);

/** Hands validator `index`'s node height 1's proposal and two others' prevotes and precommits. */
function decideHeight1From(node: Node, index: number): void {
  if (index !== proposer0) node.driver.receive("p", proposalBytes(proposer0, 0, block.bytes, block.hash));
  const voters = [0, 1, 2, 3].filter((i) => i !== index).slice(0, 2);
  for (const type of [1, 2] as const)
    for (const i of voters)
      node.driver.receive("p", voteBytes(i, { type, height: 1, round: 0, blockHash: block.hash }));
}

describe("consensus driver", () => {
  it("drops malformed, foreign, forged and misattributed messages without disturbing the machine", () => {
    const node = boot(self, new MemoryWal(), chainOf(self), new ManualClock());
    const d = node.driver;
    d.receive("p", new Uint8Array([0xff, 1, 2]));
    const outsiderVote = { type: 1 as const, height: 1, round: 0, blockHash: null, validatorId: outsider.id };
    d.receive(
      "p",
      encodeConsensusMessage({
        kind: "vote",
        vote: { ...outsiderVote, signature: outsider.sign(voteSignBytes(chainId, outsiderVote)) },
      }),
    );
    d.receive("p", voteBytes(others[0]!, { type: 1, height: 1, round: 0, blockHash: null }, outsider));
    const notProposer = others.find((i) => i !== proposer0)!;
    d.receive("p", proposalBytes(notProposer, 0, block.bytes, block.hash));
    d.receive("p", proposalBytes(proposer0, 0, new Uint8Array([1, 2, 3]), block.hash));
    assert.deepEqual(
      [
        d.counters.malformed,
        d.counters.nonValidator,
        d.counters.badSignature,
        d.counters.notProposer,
        d.counters.blockMismatch,
      ],
      [1, 1, 1, 1, 1],
    );
    assert.equal(node.signatures, 0);
    assert.equal(d.view()?.step, "propose");
  });

  it("persists before it sends, resumes after a crash without signing again, and decides", () => {
    const wal = new MemoryWal();
    const chain = chainOf(self);
    const clock = new ManualClock();
    const persistedFirst = (m: ConsensusMessage) => {
      if (m.kind !== "vote") return;
      assert.ok(
        wal.records.some((r) => r.kind === "vote" && sameValue(r.vote.signature, m.vote.signature)),
        "the vote is in the WAL before it leaves the node",
      );
    };
    let node = boot(self, wal, chain, clock, persistedFirst);
    node.driver.receive("p", proposalBytes(proposer0, 0, block.bytes, block.hash));
    assert.equal(node.signatures, 1);
    const prevote = node.sent.at(-1);
    assert.ok(prevote?.kind === "vote" && sameValue(prevote.vote.blockHash, block.hash));

    // Crash: memory lost, WAL and chain kept.
    node.driver.stop();
    node = boot(self, wal, chain, clock, persistedFirst);
    assert.equal(node.signatures, 0, "nothing signed on restart");
    assert.ok(node.sent.length === 1 && node.sent[0]!.kind === "vote", "the WAL's prevote is sent again");
    assert.equal(node.driver.view()?.step, "prevote");
    node.driver.receive("p", proposalBytes(proposer0, 0, block.bytes, block.hash));
    assert.equal(node.signatures, 0, "the same proposal again: still no second prevote");

    // Two more prevotes complete the polka: lock and precommit, block logged first.
    for (const i of others.slice(0, 2))
      node.driver.receive("p", voteBytes(i, { type: 1, height: 1, round: 0, blockHash: block.hash }));
    assert.equal(node.signatures, 1);
    assert.ok(wal.records.some((r) => r.kind === "block" && sameValue(r.blockHash, block.hash)));

    node.driver.stop();
    node = boot(self, wal, chain, clock);
    const view = node.driver.view();
    assert.ok(
      view !== null && sameValue(view.lockedValue, block.hash) && view.lockedRound === 0,
      "the lock survives",
    );
    assert.equal(view.step, "precommit");

    for (const i of others.slice(0, 2))
      node.driver.receive("p", voteBytes(i, { type: 2, height: 1, round: 0, blockHash: block.hash }));
    assert.equal(chain.height(), 1, "decided and committed");
    const decided = chain.decisionAt(1)!;
    assert.ok(sameValue(decided.blockHash, block.hash));
    assert.ok(verifyCommit(chainId, set.validators, decided.commit, verifier).ok);
    assert.equal(node.driver.view()?.height, 2);

    // A peer still at height 1 gets the decision, once the grace for late votes has passed.
    node.driver.receive("late", voteBytes(others[2]!, { type: 1, height: 1, round: 0, blockHash: null }));
    assert.equal(node.sentTo.length, 0, "votes right after a decision are late, not lost");
    clock.advance(defaultDriverOptions.catchUpGraceMs);
    node.driver.receive("late", voteBytes(others[2]!, { type: 1, height: 1, round: 0, blockHash: null }));
    const toLate = node.sentTo.filter((m) => m.peer === "late");
    assert.equal(toLate.length, 1);
    const reply = toLate[0]!;
    assert.ok(reply.message.kind === "decision");

    // A node that missed everything decides height 1 from that reply alone.
    const laggard = chainOf(others[2]!);
    const behind = boot(others[2]!, new MemoryWal(), laggard, new ManualClock());
    behind.driver.receive("p", encodeConsensusMessage(reply.message));
    assert.equal(laggard.height(), 1);
    assert.ok(sameValue(laggard.decisionAt(1)!.blockHash, block.hash));
  });

  it("reports each step of a height to its trace port, in order", () => {
    const steps: string[] = [];
    const chain = chainOf(self);
    const node = boot(self, new MemoryWal(), chain, new ManualClock(), undefined, (step, height) =>
      steps.push(`${height}:${step}`),
    );
    const impostor = others.find((i) => i !== proposer0)!;
    node.driver.receive("p", proposalBytes(impostor, 0, block.bytes, block.hash));
    assert.deepEqual(steps, ["1:enter"], "a proposal from the wrong validator is no step");
    node.driver.receive("p", proposalBytes(proposer0, 0, block.bytes, block.hash));
    for (const i of others.slice(0, 2))
      node.driver.receive("p", voteBytes(i, { type: 1, height: 1, round: 0, blockHash: block.hash }));
    for (const i of others.slice(0, 2))
      node.driver.receive("p", voteBytes(i, { type: 2, height: 1, round: 0, blockHash: block.hash }));
    assert.equal(chain.height(), 1);
    assert.deepEqual(steps, [
      "1:enter",
      "1:proposal-received",
      "1:check-start",
      "1:check-end",
      "1:prevote-sent",
      "1:precommit-sent",
      "1:commit-start",
      "1:commit-end",
      "2:enter",
    ]);
  });

  it("refuses to sign a second value for a slot the WAL holds, even if asked (defence in depth)", () => {
    const wal = new MemoryWal();
    const node = boot(self, wal, chainOf(self), new ManualClock());
    node.driver.receive("p", proposalBytes(proposer0, 0, block.bytes, block.hash));
    assert.equal(node.signatures, 1);
    const sentBefore = node.sent.length;
    // The machine never asks this (it asserts NoDoubleSign itself); reach past it to test the guard.
    const internals = node.driver as unknown as { signVote(v: UnsignedVote): void };
    internals.signVote({ type: 1, height: 1, round: 0, blockHash: null, validatorId: keys[self]!.id });
    assert.equal(node.signatures, 1, "no second signature");
    assert.equal(node.driver.counters.refusedDoubleSign, 1);
    internals.signVote({ type: 1, height: 1, round: 0, blockHash: block.hash, validatorId: keys[self]!.id });
    assert.equal(node.signatures, 1, "the same value is re-sent, not re-signed");
    assert.equal(node.sent.length, sentBefore + 1);
    assert.equal(wal.records.filter((r) => r.kind === "vote").length, 1);
  });

  it("re-sends and relays the height's messages while it is undecided", () => {
    const clock = new ManualClock();
    const node = boot(self, new MemoryWal(), chainOf(self), clock);
    node.driver.receive("p", proposalBytes(proposer0, 0, block.bytes, block.hash));
    node.driver.receive("p", voteBytes(others[1]!, { type: 1, height: 1, round: 0, blockHash: block.hash }));
    const before = node.sent.length;
    clock.advance(defaultDriverOptions.rebroadcastIntervalMs);
    const resent = node.sent.slice(before);
    assert.ok(
      resent.some((m) => m.kind === "vote" && sameValue(m.vote.validatorId, keys[self]!.id)),
      "own prevote",
    );
    assert.ok(
      resent.some((m) => m.kind === "vote" && sameValue(m.vote.validatorId, keys[others[1]!]!.id)),
      "a peer's prevote",
    );
    assert.ok(
      resent.some((m) => m.kind === "proposal"),
      "the round's proposal",
    );
  });

  it("tells the application once per height that a peer moved past it, and hands over the next height's messages", () => {
    const chain = chainOf(self);
    const ahead: Array<[number, PeerId]> = [];
    Object.assign(chain, { onPeerAhead: (h: number, from: PeerId) => ahead.push([h, from]) });
    const node = boot(self, new MemoryWal(), chain, new ManualClock());
    const first = voteBytes(others[0]!, { type: 2, height: 2, round: 0, blockHash: null });
    const second = voteBytes(others[1]!, { type: 2, height: 2, round: 0, blockHash: null });
    node.driver.receive("p0", first);
    node.driver.receive("p1", second);
    assert.deepEqual(ahead, [[1, "p0"]], "once, naming the first sender");
    const held = node.driver.handOver();
    assert.deepEqual(
      held.map((m) => m.from),
      ["p0", "p1"],
    );
    assert.ok(sameValue(held[0]!.wire, first) && sameValue(held[1]!.wire, second));
    assert.deepEqual(node.driver.handOver(), [], "handed over once");
  });
  it("ends its pause after a decision when the next height's proposer proposes, unless it proposes next", () => {
    const pauseMs = 20;
    // Height 2's round-0 proposer, from the set that follows height 1 (priorities one step on).
    const proposer2 = set.validators.findIndex((v) =>
      sameValue(v.id, new ProposerSchedule(nextHeightValidatorSet(set)).proposer(0).id),
    );
    const decideHeight1 = (index: number) => {
      const chain = chainOf(index);
      const clock = new ManualClock();
      const node = boot(index, new MemoryWal(), chain, clock, undefined, undefined, {
        timeoutCommitMs: pauseMs,
      });
      decideHeight1From(node, index);
      assert.equal(chain.height(), 1);
      assert.equal(node.driver.view()?.height, 1, "pausing after the decision");
      return { node, chain, clock };
    };
    // Height 2's block, proposed by its proposer on a chain that committed height 1.
    const { chain: proposerChain } = decideHeight1(proposer2);
    const block2 = proposerChain.proposeBlock(2, 0);

    const waiter = [0, 1, 2, 3].find((i) => i !== proposer2)!;
    const { node, clock } = decideHeight1(waiter);
    const notProposer = [0, 1, 2, 3].find((i) => i !== proposer2 && i !== waiter)!;
    node.driver.receive("q", proposalBytes(notProposer, 0, block2.bytes, block2.hash, 2));
    assert.equal(node.driver.view()?.height, 1, "a proposal from anyone else does not end the pause");
    node.driver.receive("q", proposalBytes(proposer2, 1, block2.bytes, block2.hash, 2));
    assert.equal(node.driver.view()?.height, 1, "nor does one of a later round");
    node.driver.receive("p", proposalBytes(proposer2, 0, block2.bytes, block2.hash, 2));
    assert.equal(node.driver.view()?.height, 2, "entered before its pause ended");
    assert.equal(clock.nowMs, 0);
    const prevote = node.sent.at(-1);
    assert.ok(
      prevote?.kind === "vote" && prevote.vote.height === 2 && sameValue(prevote.vote.blockHash, block2.hash),
      "and prevoted for the proposal it was handed",
    );

    // The next proposer pauses to gather transactions whatever it receives.
    const next = decideHeight1(proposer2);
    next.node.driver.receive("p", proposalBytes(proposer2, 0, block2.bytes, block2.hash, 2));
    assert.equal(next.node.driver.view()?.height, 1);
    next.clock.advance(pauseMs);
    assert.equal(next.node.driver.view()?.height, 2);
  });

  it("keeps its pause after a decision when work wakes it from idle, unless the next proposer proposes", () => {
    const pauseMs = 1000;
    const proposer2 = set.validators.findIndex((v) =>
      sameValue(v.id, new ProposerSchedule(nextHeightValidatorSet(set)).proposer(0).id),
    );
    const waiter = [0, 1, 2, 3].find((i) => i !== proposer2 && i !== proposer0)!;
    /** Height 1 decided at `index` at time 0 with nothing pending, so it idles before height 2. */
    const decideIdle = (index: number) => {
      const chain = chainOf(index);
      let pending = false;
      Object.assign(chain, { hasPendingWork: () => pending });
      const clock = new ManualClock();
      const node = boot(index, new MemoryWal(), chain, clock, undefined, undefined, {
        timeoutCommitMs: pauseMs,
        waitForWork: true,
      });
      decideHeight1From(node, index);
      assert.equal(chain.height(), 1);
      const height = () => node.driver.view()?.height;
      const work = () => {
        pending = true;
        node.driver.wake();
      };
      return { node, clock, chain, height, work };
    };

    // Work after the pause ran out: the height starts at once.
    const late = decideIdle(waiter);
    late.clock.advance(pauseMs * 2);
    assert.equal(late.height(), 1, "idle: nothing to put in height 2");
    late.work();
    assert.equal(late.height(), 2);

    // Work during the pause: the height starts when the pause ends, not before.
    const early = decideIdle(waiter);
    early.clock.advance(100);
    early.work();
    assert.equal(early.height(), 1, "woken 100 ms into a 1,000 ms pause");
    early.node.driver.receive("p", voteBytes(proposer2, { type: 1, height: 2, round: 0, blockHash: null }));
    assert.equal(early.height(), 1, "a peer's vote at height 2 does not end the pause");
    early.clock.advance(pauseMs - 101);
    assert.equal(early.height(), 1);
    early.clock.advance(1);
    assert.equal(early.height(), 2, "entered when the pause ran out");

    // The next proposer's round-0 proposal ends a pause that work resumed, as it ends any pause.
    const block2 = decideIdle(proposer2).chain.proposeBlock(2, 0);
    const cut = decideIdle(waiter);
    cut.clock.advance(100);
    cut.work();
    cut.clock.advance(50);
    assert.equal(cut.height(), 1);
    cut.node.driver.receive("p", proposalBytes(proposer2, 0, block2.bytes, block2.hash, 2));
    assert.equal(cut.height(), 2, "entered on the proposal, 150 ms in");

    // Height 2's decision, as a node that decided it answers a peer still voting at height 2.
    const decider = decideIdle(waiter);
    decider.clock.advance(pauseMs);
    decider.work();
    decider.node.driver.receive("p", proposalBytes(proposer2, 0, block2.bytes, block2.hash, 2));
    for (const type of [1, 2] as const)
      for (const i of [0, 1, 2, 3].filter((v) => v !== waiter).slice(0, 2))
        decider.node.driver.receive("p", voteBytes(i, { type, height: 2, round: 0, blockHash: block2.hash }));
    assert.equal(decider.chain.height(), 2);
    decider.clock.advance(pauseMs);
    assert.equal(decider.height(), 3);
    decider.clock.advance(defaultDriverOptions.catchUpGraceMs);
    const lateVoter = [0, 1, 2, 3].find((v) => v !== waiter)!;
    decider.node.driver.receive(
      "late",
      voteBytes(lateVoter, { type: 1, height: 2, round: 0, blockHash: null }),
    );
    const decision2 = decider.node.sentTo.find((m) => m.peer === "late")?.message;
    assert.ok(decision2?.kind === "decision" && decision2.height === 2);

    // A node pausing before height 2 takes that decision at once, not through catch-up.
    const paused = decideIdle(waiter);
    const behindCalls: number[] = [];
    Object.assign(paused.chain, { onBehind: (h: number) => behindCalls.push(h) });
    paused.clock.advance(100);
    paused.work();
    paused.node.driver.receive("p", encodeConsensusMessage(decision2));
    assert.equal(paused.chain.height(), 2, "height 2 committed from the decision");
    assert.deepEqual(behindCalls, []);
  });

  it("sends the previous decision to a proposer that stays silent at a new height", () => {
    const proposer2 = new ProposerSchedule(nextHeightValidatorSet(set)).proposerIndex(0);
    assert.notEqual(proposer2, self, "precondition: another validator proposes height 2");
    const rest = others.filter((i) => i !== proposer2);
    /** Height 1 decided at `self`; each validator speaks through its own peer. */
    const decideHeight1 = (precommitters: number[], proposalAfterMs = 0) => {
      const clock = new ManualClock();
      const chain = chainOf(self);
      const node = boot(self, new MemoryWal(), chain, clock);
      clock.advance(proposalAfterMs);
      node.driver.receive(`p${proposer0}`, proposalBytes(proposer0, 0, block.bytes, block.hash));
      for (const i of [proposer2, rest[0]!])
        node.driver.receive(`p${i}`, voteBytes(i, { type: 1, height: 1, round: 0, blockHash: block.hash }));
      for (const i of precommitters)
        node.driver.receive(`p${i}`, voteBytes(i, { type: 2, height: 1, round: 0, blockHash: block.hash }));
      assert.equal(chain.height(), 1);
      assert.equal(node.driver.view()?.height, 2);
      return { node, clock, chain };
    };

    // The proposer prevoted but its precommit never came: it may have missed the decision.
    const { node, clock } = decideHeight1(rest);
    clock.advance(defaultDriverOptions.proposerNudgeMs - 1);
    assert.equal(node.sentTo.length, 0, "not before proposerNudgeMs");
    clock.advance(1);
    assert.deepEqual(
      node.sentTo.map((m) => [m.peer, m.message.kind, m.message.kind === "decision" ? m.message.height : 0]),
      [[`p${proposer2}`, "decision", 1]],
    );
    assert.equal(node.driver.counters.proposerNudges, 1);
    clock.advance(defaultDriverOptions.proposerNudgeMs);
    assert.equal(node.sentTo.length, 1, "once per height");

    // One that precommitted the block has it and decides alone: it is not sent the block again.
    const slow = decideHeight1([proposer2, rest[0]!]);
    slow.clock.advance(defaultDriverOptions.proposerNudgeMs * 2);
    assert.equal(slow.node.sentTo.length, 0);

    // Proposals have been taking 150 ms (big blocks, a busy machine): the wait is twice that.
    const busy = decideHeight1(rest, 150);
    busy.clock.advance(299);
    assert.equal(busy.node.sentTo.length, 0, "a busy proposer is given twice its recent delay");
    busy.clock.advance(1);
    assert.equal(busy.node.sentTo.length, 1);

    // The proposal that answers the nudge (300 ms late, because the proposer was lost) is not
    // learned: the next height waits 300 ms again, not twice 300 (capped at 500).
    const block2 = busy.chain.proposeBlock(2, 0);
    busy.node.driver.receive(`p${proposer2}`, proposalBytes(proposer2, 0, block2.bytes, block2.hash, 2));
    for (const type of [1, 2] as const)
      for (const i of rest)
        busy.node.driver.receive(
          `p${i}`,
          voteBytes(i, { type, height: 2, round: 0, blockHash: block2.hash }),
        );
    assert.equal(busy.chain.height(), 2);
    assert.equal(busy.node.driver.nudgeWaitMs(), 300);
  });
});
