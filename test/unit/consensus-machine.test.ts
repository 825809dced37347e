/**
 * The consensus machine's rules on hand-built inputs (no network, no signatures: the machine never
 * looks at signature bytes), proposer selection, and vote-set tallies. Line numbers refer to
 * Algorithm 1 of arXiv 1807.04938.
 */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import type { Validator } from "../../src/core/block.ts";
import {
  type ConsensusState,
  defaultMachineOptions,
  type Effect,
  initialState,
  type MachineInput,
  step,
  viewOf,
} from "../../src/core/consensus/machine.ts";
import {
  genesisValidatorSet,
  nextHeightValidatorSet,
  ProposerSchedule,
  type ValidatorSet,
} from "../../src/core/consensus/proposer.ts";
import {
  type Proposal,
  type Vote,
  voteTypePrecommit,
  voteTypePrevote,
} from "../../src/core/consensus/types.ts";
import {
  HeightVoteSet,
  isOneThirdPlus,
  isQuorum,
  valuesPerVoterMax,
  voteRoundsAheadMax,
} from "../../src/core/consensus/vote-set.ts";
import { sha256 } from "../../src/core/hash.ts";

const chainId = "citychain-test";
const signature = new Uint8Array(64).fill(7);

function validators(powers: readonly number[]): Validator[] {
  return powers.map((power, i) => ({
    id: sha256(new Uint8Array([i])),
    publicKeySpki: new Uint8Array([i]),
    power,
    dept: `d${i}`,
  }));
}

const hashA = sha256(new Uint8Array([0xa]));
const hashB = sha256(new Uint8Array([0xb]));
const hashC = sha256(new Uint8Array([0xc]));

/** A four-validator world (power 10 each: quorum 3, f + 1 = 2) seen by validator `self`. */
class World {
  readonly set: ValidatorSet;
  readonly schedule: ProposerSchedule;
  state: ConsensusState;
  effects: Effect[] = [];

  constructor(
    readonly self: number | null,
    powers: readonly number[] = [10, 10, 10, 10],
  ) {
    this.set = genesisValidatorSet(validators(powers));
    this.schedule = new ProposerSchedule(this.set);
    this.state = initialState({
      chainId,
      self: self === null ? null : this.set.validators[self]!.id,
      options: defaultMachineOptions,
    });
  }

  id(i: number): Uint8Array {
    return this.set.validators[i]!.id;
  }

  proposerIndex(round: number): number {
    return this.schedule.proposerIndex(round);
  }

  /** The first round >= from whose proposer is (or is not) this node. */
  roundWhere(mine: boolean, from = 0): number {
    for (let r = from; ; r++) if ((this.proposerIndex(r) === this.self) === mine) return r;
  }

  input(input: MachineInput): Effect[] {
    const result = step(this.state, input);
    this.state = result.state;
    this.effects = [...result.effects];
    return this.effects;
  }

  start(recovery?: { proposals: Proposal[]; votes: Vote[] }): Effect[] {
    return this.input({
      kind: "start",
      height: 1,
      validatorSet: this.set,
      ...(recovery ? { recovery } : {}),
    });
  }

  proposal(round: number, blockHash: Uint8Array, polRound = -1): Proposal {
    return {
      chainId,
      height: 1,
      round,
      polRound,
      blockHash,
      proposer: this.id(this.proposerIndex(round)),
      signature,
    };
  }

  propose(round: number, blockHash: Uint8Array, polRound = -1, valid = true, timely = true): Effect[] {
    const proposal = this.proposal(round, blockHash, polRound);
    const first = this.input({ kind: "proposal", proposal, timely });
    if (!first.some((e) => e.kind === "validateBlock")) return first;
    return [...first, ...this.input({ kind: "blockVerdict", blockHash, valid })];
  }

  vote(type: 1 | 2, round: number, blockHash: Uint8Array | null, from: number): Effect[] {
    return this.input({
      kind: "vote",
      vote: { type, height: 1, round, blockHash, validatorId: this.id(from), signature },
    });
  }

  /** Votes from every validator in `from` (the node's own vote comes back as the driver echoes it). */
  votes(type: 1 | 2, round: number, blockHash: Uint8Array | null, from: readonly number[]): Effect[] {
    return from.flatMap((i) => this.vote(type, round, blockHash, i));
  }

  timeout(s: "propose" | "prevote" | "precommit", round: number): Effect[] {
    return this.input({ kind: "timeout", step: s, height: 1, round });
  }

  view() {
    const v = viewOf(this.state);
    assert.ok(v !== null);
    return v;
  }

  others(): number[] {
    return [0, 1, 2, 3].filter((i) => i !== this.self);
  }
}

function votesIn(effects: readonly Effect[]) {
  return effects.flatMap((e) => (e.kind === "broadcastVote" ? [e.vote] : []));
}

function hex(h: Uint8Array | null): string {
  return h === null ? "nil" : Buffer.from(h).toString("hex");
}

describe("machine: StartRound and proposals (lines 11-33)", () => {
  it("a proposer asks for a value, proposes it, and everyone schedules OnTimeoutPropose", () => {
    const w = new World(0);
    const proposerWorld = new World(w.proposerIndex(0));
    const effects = proposerWorld.start();
    assert.deepEqual(
      effects.map((e) => e.kind),
      ["requestValue", "scheduleTimeout"],
    );
    const proposed = proposerWorld.input({ kind: "value", height: 1, round: 0, blockHash: hashA });
    assert.equal(proposed.length, 1);
    const p = proposed[0]!;
    assert.ok(p.kind === "broadcastProposal");
    assert.equal(p.proposal.polRound, -1);
    assert.equal(hex(p.proposal.blockHash), hex(hashA));
    const other = new World((w.proposerIndex(0) + 1) % 4);
    assert.deepEqual(
      other.start().map((e) => e.kind),
      ["scheduleTimeout"],
    );
  });

  it("prevotes a valid proposal (line 24) and nil for an invalid one (line 26)", () => {
    const w = new World(1);
    w.start();
    const r = 0;
    const asked = w.input({ kind: "proposal", proposal: w.proposal(r, hashA) });
    assert.deepEqual(
      asked.map((e) => e.kind),
      ["validateBlock"],
      "valid(v) is asked of the application first",
    );
    const voted = votesIn(w.input({ kind: "blockVerdict", blockHash: hashA, valid: true }));
    assert.equal(voted.length, 1);
    assert.equal(voted[0]!.type, voteTypePrevote);
    assert.equal(hex(voted[0]!.blockHash), hex(hashA));
    assert.equal(w.view().step, "prevote");

    const v = new World(1);
    v.start();
    const nil = votesIn(v.propose(0, hashB, -1, false));
    assert.equal(nil.length, 1);
    assert.equal(nil[0]!.blockHash, null);
  });

  it("ignores a proposal from anyone but the round's proposer", () => {
    const w = new World(1);
    w.start();
    const wrong = { ...w.proposal(0, hashA), proposer: w.id((w.proposerIndex(0) + 1) % 4) };
    const result = step(w.state, { kind: "proposal", proposal: wrong });
    assert.equal(result.dropped, "notProposer");
    assert.equal(result.effects.length, 0);
  });

  it("OnTimeoutPropose prevotes nil (line 59); a stale timeout does nothing", () => {
    const w = new World(1);
    w.start();
    assert.equal(votesIn(w.timeout("propose", 3)).length, 0, "a timeout of another round is stale");
    const nil = votesIn(w.timeout("propose", 0));
    assert.equal(nil.length, 1);
    assert.equal(nil[0]!.blockHash, null);
    assert.equal(votesIn(w.timeout("propose", 0)).length, 0, "the step moved on: no second prevote");
  });

  it("timeouts grow by their delta every round", () => {
    const w = new World(1);
    w.start();
    const first = w.effects.find((e) => e.kind === "scheduleTimeout");
    assert.ok(
      first?.kind === "scheduleTimeout" && first.durationMs === defaultMachineOptions.timeoutProposeMs,
    );
    w.timeout("propose", 0);
    w.votes(voteTypePrevote, 0, null, [1, 2, 3]);
    const scheduled = w
      .votes(voteTypePrecommit, 0, null, [1, 2, 3])
      .find((e) => e.kind === "scheduleTimeout");
    assert.ok(scheduled?.kind === "scheduleTimeout" && scheduled.step === "precommit");
    const next = w.timeout("precommit", 0).find((e) => e.kind === "scheduleTimeout");
    assert.ok(next?.kind === "scheduleTimeout");
    assert.equal(next.round, 1);
    assert.equal(
      next.durationMs,
      defaultMachineOptions.timeoutProposeMs + defaultMachineOptions.timeoutProposeDeltaMs,
    );
  });
});

describe("machine: locking and the valid value (lines 34-48)", () => {
  /**
   * Node 2 prevotes A in round 0 and sees a polka for A: it locks. With these four ids the proposers
   * of rounds 0..3 are validators 3, 1, 0, 2, so node 2 only receives proposals in rounds 0..2.
   */
  function lockedOnA(self = 2): World {
    const w = new World(self);
    w.start();
    w.propose(0, hashA);
    w.vote(voteTypePrevote, 0, hashA, self); // own vote echoed back by the driver
    return w;
  }

  it("locks on a polka and precommits the value (lines 36-43)", () => {
    const w = lockedOnA();
    const others = w.others();
    assert.equal(
      votesIn(w.vote(voteTypePrevote, 0, hashA, others[0]!)).length,
      0,
      "two of four is no quorum",
    );
    const precommits = votesIn(w.vote(voteTypePrevote, 0, hashA, others[1]!));
    assert.equal(precommits.length, 1);
    assert.equal(precommits[0]!.type, voteTypePrecommit);
    assert.equal(hex(precommits[0]!.blockHash), hex(hashA));
    const v = w.view();
    assert.equal(hex(v.lockedValue), hex(hashA));
    assert.equal(v.lockedRound, 0);
    assert.equal(hex(v.validValue), hex(hashA));
    assert.equal(v.validRound, 0);
    assert.equal(v.step, "precommit");
  });

  it("a locked node prevotes nil for a new value in a later round (line 23)", () => {
    const w = lockedOnA();
    w.votes(voteTypePrevote, 0, hashA, w.others().slice(0, 2));
    w.votes(voteTypePrecommit, 0, null, w.others());
    w.timeout("precommit", 0);
    assert.equal(w.view().round, 1);
    assert.notEqual(w.proposerIndex(1), w.self);
    const prevote = votesIn(w.propose(1, hashB));
    assert.equal(prevote.length, 1);
    assert.equal(prevote[0]!.blockHash, null, "locked on A, a fresh proposal of B gets nil");
    assert.equal(hex(w.view().lockedValue), hex(hashA), "the lock stays");
  });

  it("unlocks through a newer polka: prevotes B proposed with polRound >= lockedRound (lines 28-30)", () => {
    const w = lockedOnA();
    const others = w.others();
    w.votes(voteTypePrevote, 0, hashA, others.slice(0, 2));
    assert.equal(w.view().lockedRound, 0);
    w.votes(voteTypePrecommit, 0, null, others);
    w.timeout("precommit", 0);
    // Round 1: this node prevotes nil (locked on A) and precommits nil on OnTimeoutPrevote; only then
    // does the third prevote for B complete B's polka.
    assert.equal(votesIn(w.propose(1, hashB))[0]!.blockHash, null);
    w.vote(voteTypePrevote, 1, null, 2);
    w.votes(voteTypePrevote, 1, hashB, others.slice(0, 2));
    assert.equal(votesIn(w.timeout("prevote", 1))[0]!.blockHash, null);
    w.vote(voteTypePrevote, 1, hashB, others[2]!);
    assert.equal(w.view().validRound, 1, "B's proposal with B's polka makes B the valid value (line 42)");
    assert.equal(w.view().lockedRound, 0, "but this node precommitted nil already: the lock stays on A");
    w.votes(voteTypePrecommit, 1, null, others);
    w.timeout("precommit", 1);
    // Round 2: B is re-proposed with polRound 1 >= lockedRound 0: prevote B.
    const prevote = votesIn(w.propose(2, hashB, 1));
    assert.equal(prevote.length, 1);
    assert.equal(hex(prevote[0]!.blockHash), hex(hashB));
  });

  it("keeps the lock against a re-proposal whose polka is older than the lock (line 32)", () => {
    const w = new World(2);
    const others = w.others();
    w.start();
    // Round 0: a polka for B that this node sees but does not join (it times out on the proposal).
    w.timeout("propose", 0);
    w.votes(voteTypePrevote, 0, hashB, others);
    w.votes(voteTypePrecommit, 0, null, others);
    w.timeout("precommit", 0);
    // Round 1: lock on A.
    w.propose(1, hashA);
    w.vote(voteTypePrevote, 1, hashA, 2);
    w.votes(voteTypePrevote, 1, hashA, others.slice(0, 2));
    assert.equal(w.view().lockedRound, 1);
    w.votes(voteTypePrecommit, 1, null, others);
    w.timeout("precommit", 1);
    // Round 2: B re-proposed with polRound 0 < lockedRound 1: prevote nil.
    const prevote = votesIn(w.propose(2, hashB, 0));
    assert.equal(prevote.length, 1);
    assert.equal(prevote[0]!.blockHash, null);
  });

  it("precommits nil on a nil polka (line 44) and on OnTimeoutPrevote (line 63)", () => {
    const w = new World(1);
    w.start();
    w.timeout("propose", 0);
    const nil = votesIn(w.votes(voteTypePrevote, 0, null, [0, 1, 2]));
    assert.equal(nil.length, 1);
    assert.equal(nil[0]!.type, voteTypePrecommit);
    assert.equal(nil[0]!.blockHash, null);

    const t = new World(1);
    t.start();
    t.timeout("propose", 0);
    const scheduled = t.votes(voteTypePrevote, 0, hashA, [0, 1]).concat(t.vote(voteTypePrevote, 0, hashB, 2));
    assert.ok(
      scheduled.some((e) => e.kind === "scheduleTimeout" && e.step === "prevote"),
      "2f + 1 prevotes of any value schedule OnTimeoutPrevote (line 34)",
    );
    const onTimeout = votesIn(t.timeout("prevote", 0));
    assert.equal(onTimeout.length, 1);
    assert.equal(onTimeout[0]!.blockHash, null);
  });
});

describe("machine: proposer-based timestamps (line 22 with timely(v))", () => {
  it("prevotes nil for a valid fresh proposal that was untimely, yet locks on and decides it", () => {
    const w = new World(2);
    w.start();
    const prevote = votesIn(w.propose(0, hashA, -1, true, false));
    assert.equal(prevote.length, 1);
    assert.equal(prevote[0]!.blockHash, null, "untimely here: no prevote for A");
    w.vote(voteTypePrevote, 0, null, 2);
    // The others found A timely: their polka for A still gets this node's precommit (line 36: valid
    // is all it asks), and their precommits decide A here (line 49).
    const others = w.others();
    const precommit = votesIn(w.votes(voteTypePrevote, 0, hashA, others));
    assert.equal(precommit.length, 1);
    assert.equal(precommit[0]!.type, voteTypePrecommit);
    assert.equal(hex(precommit[0]!.blockHash), hex(hashA));
    assert.equal(hex(w.view().lockedValue), hex(hashA));
    const decided = w.votes(voteTypePrecommit, 0, hashA, others).filter((e) => e.kind === "decide");
    assert.equal(decided.length, 1);
    assert.ok(decided[0]!.kind === "decide" && hex(decided[0]!.blockHash) === hex(hashA));
  });

  it("does not ask timeliness of a re-proposal backed by a polka (line 28)", () => {
    const w = new World(2);
    const others = w.others();
    w.start();
    // Round 0: a polka for A that this node sees without a proposal; nobody decides.
    w.timeout("propose", 0);
    w.votes(voteTypePrevote, 0, hashA, others);
    w.votes(voteTypePrecommit, 0, null, others);
    w.timeout("precommit", 0);
    // Round 1: A re-proposed with polRound 0 and judged untimely now: the polka vouches for it.
    const prevote = votesIn(w.propose(1, hashA, 0, true, false));
    assert.equal(prevote.length, 1);
    assert.equal(hex(prevote[0]!.blockHash), hex(hashA));
  });
});

describe("machine: rounds and decisions (lines 49-67)", () => {
  it("skips to a higher round on f + 1 of its messages, not on f (line 55)", () => {
    const w = new World(1);
    w.start();
    w.vote(voteTypePrevote, 5, null, 0);
    assert.equal(w.view().round, 0, "one validator of four is not f + 1");
    const effects = w.vote(voteTypePrecommit, 5, null, 2);
    assert.equal(w.view().round, 5);
    assert.ok(effects.some((e) => e.kind === "scheduleTimeout" && e.round === 5));
  });

  it("drops votes beyond the round window", () => {
    const w = new World(1);
    w.start();
    const far = step(w.state, {
      kind: "vote",
      vote: {
        type: 1,
        height: 1,
        round: voteRoundsAheadMax + 1,
        blockHash: null,
        validatorId: w.id(0),
        signature,
      },
    });
    assert.equal(far.dropped, "outOfWindow");
  });

  it("decides only with > 2/3 precommits for the same hash, once it knows the block valid", () => {
    const w = new World(1);
    w.start();
    w.votes(voteTypePrecommit, 0, hashA, [0, 2]);
    assert.ok(
      !w.vote(voteTypePrecommit, 0, hashB, 3).some((e) => e.kind === "decide"),
      "2 for A and 1 for B",
    );
    const asked = w.vote(voteTypePrecommit, 0, hashA, 3);
    assert.ok(!asked.some((e) => e.kind === "decide"), "A's block was never seen: no decision yet");
    assert.ok(
      asked.some((e) => e.kind === "validateBlock"),
      "so the machine asks for valid(A)",
    );
    const decided = w.input({ kind: "blockVerdict", blockHash: hashA, valid: true });
    const decide = decided.find((e) => e.kind === "decide");
    assert.ok(decide?.kind === "decide");
    assert.equal(hex(decide.blockHash), hex(hashA));
    assert.equal(decide.commit.round, 0);
    assert.equal(decide.commit.signatures.length, 3);
    assert.ok(w.view().decided);
    const after = step(w.state, {
      kind: "vote",
      vote: { type: 2, height: 1, round: 0, blockHash: hashA, validatorId: w.id(1), signature },
    });
    assert.equal(after.dropped, "decided", "DecideOnce: nothing more happens at a decided height");
  });

  it("never decides an invalid block, even with a precommit quorum", () => {
    const w = new World(1);
    w.start();
    w.input({ kind: "blockVerdict", blockHash: hashA, valid: false });
    const effects = w.votes(voteTypePrecommit, 0, hashA, [0, 2, 3]);
    assert.ok(!effects.some((e) => e.kind === "decide"));
  });

  it("decides from a checked commit certificate (catch-up)", () => {
    const w = new World(1);
    w.start();
    const commit = {
      height: 1,
      round: 4,
      blockHash: hashC,
      signatures: [0, 2, 3].map((i) => ({ validatorId: w.id(i), signature })),
    };
    const asked = w.input({ kind: "commitCertificate", commit });
    assert.ok(asked.some((e) => e.kind === "validateBlock"));
    const decided = w.input({ kind: "blockVerdict", blockHash: hashC, valid: true });
    assert.ok(decided.some((e) => e.kind === "decide" && e.commit === commit));
  });

  it("OnTimeoutPrecommit starts the next round (line 67)", () => {
    const w = new World(1);
    w.start();
    w.timeout("precommit", 0);
    assert.equal(w.view().round, 1);
    assert.equal(w.view().step, "propose");
  });
});

describe("machine: no double vote, evidence, recovery, observers", () => {
  it("votes at most once per round and type, whatever arrives", () => {
    const w = new World(1);
    w.start();
    const all: Effect[] = [];
    all.push(...w.propose(0, hashA));
    all.push(...w.propose(0, hashA)); // duplicate
    all.push(...w.timeout("propose", 0));
    all.push(...w.votes(voteTypePrevote, 0, hashA, [0, 1, 2]));
    all.push(...w.votes(voteTypePrevote, 0, hashA, [0, 1, 2]));
    all.push(...w.timeout("prevote", 0));
    const mine = votesIn(all);
    assert.deepEqual(
      mine.map((v) => v.type),
      [voteTypePrevote, voteTypePrecommit],
    );
  });

  it("reports an equivocating proposer and an equivocating voter as evidence", () => {
    const w = new World(1);
    w.start();
    w.propose(0, hashA);
    const second = w.propose(0, hashB);
    assert.ok(second.some((e) => e.kind === "evidence" && e.evidence.kind === "duplicateProposal"));
    w.vote(voteTypePrevote, 0, hashA, 3);
    const equivocation = w.vote(voteTypePrevote, 0, hashB, 3);
    assert.ok(equivocation.some((e) => e.kind === "evidence" && e.evidence.kind === "duplicateVote"));
    assert.ok(
      !w.vote(voteTypePrevote, 0, hashC, 3).some((e) => e.kind === "evidence"),
      "evidence once per slot",
    );
  });

  it("a restarted node resumes from its WAL: its round, step and lock", () => {
    const w = new World(1);
    const ownPrecommit: Vote = {
      type: 2,
      height: 1,
      round: 2,
      blockHash: hashA,
      validatorId: w.id(1),
      signature,
    };
    const ownPrevote: Vote = { ...ownPrecommit, type: 1 };
    const effects = w.start({ proposals: [], votes: [ownPrevote, ownPrecommit] });
    const v = w.view();
    assert.equal(v.round, 2);
    assert.equal(v.step, "precommit");
    assert.equal(hex(v.lockedValue), hex(hashA));
    assert.equal(v.lockedRound, 2);
    assert.equal(votesIn(effects).length, 0, "nothing is signed again");
    w.votes(voteTypePrevote, 2, null, [0, 2, 3]);
    assert.equal(votesIn(w.timeout("prevote", 2)).length, 0, "no second precommit in round 2");
  });

  it("an observer follows and decides but never signs", () => {
    const w = new World(null);
    w.start();
    const effects = [
      ...w.propose(0, hashA),
      ...w.votes(voteTypePrevote, 0, hashA, [0, 1, 2]),
      ...w.votes(voteTypePrecommit, 0, hashA, [0, 1, 2]),
    ];
    assert.equal(votesIn(effects).length, 0);
    assert.ok(effects.some((e) => e.kind === "decide"));
  });

  it("refuses votes from strangers loudly: the driver must have filtered them", () => {
    const w = new World(1);
    w.start();
    assert.throws(
      () =>
        step(w.state, {
          kind: "vote",
          vote: { type: 1, height: 1, round: 0, blockHash: null, validatorId: hashC, signature },
        }),
      /INVARIANT_BROKEN|invariant broken/,
    );
  });
});

describe("proposer selection", () => {
  it("is deterministic across rounds and heights", () => {
    const a = genesisValidatorSet(validators([5, 1, 3, 7, 2]));
    const b = genesisValidatorSet(validators([5, 1, 3, 7, 2]));
    let sa = a;
    let sb = b;
    for (let h = 0; h < 200; h++) {
      const pa = new ProposerSchedule(sa);
      const pb = new ProposerSchedule(sb);
      for (let r = 0; r < 5; r++) assert.equal(pa.proposerIndex(r), pb.proposerIndex(r));
      sa = nextHeightValidatorSet(sa);
      sb = nextHeightValidatorSet(sb);
    }
    assert.deepEqual(sa.priorities, sb.priorities);
  });

  it("is fair: over many heights each validator proposes in proportion to its power", () => {
    const powers = [1, 2, 3, 4, 10];
    const total = powers.reduce((x, y) => x + y, 0);
    const heights = 20_000;
    const counts = powers.map(() => 0);
    let set = genesisValidatorSet(validators(powers));
    for (let h = 0; h < heights; h++) {
      counts[new ProposerSchedule(set).proposerIndex(0)]!++;
      set = nextHeightValidatorSet(set);
    }
    powers.forEach((p, i) => {
      const expected = (heights * p) / total;
      assert.ok(
        Math.abs(counts[i]! - expected) <= 2,
        `validator ${i}: ${counts[i]} proposals, expected ${expected}`,
      );
    });
  });

  it("is fair across rounds of one height too, and round-robin with equal powers", () => {
    const schedule = new ProposerSchedule(genesisValidatorSet(validators([10, 10, 10, 10])));
    const window = [0, 1, 2, 3].map((r) => schedule.proposerIndex(r)).sort();
    assert.deepEqual(window, [0, 1, 2, 3], "every validator once in any four consecutive rounds");
    const weighted = new ProposerSchedule(genesisValidatorSet(validators([1, 3])));
    const counts = [0, 0];
    for (let r = 0; r < 400; r++) counts[weighted.proposerIndex(r)]!++;
    assert.deepEqual(counts, [100, 300]);
  });

  it("breaks ties by the smaller id, and the next height's round 0 is this height's round 1", () => {
    const set = genesisValidatorSet(validators([10, 10, 10]));
    const smallest = [...set.validators.keys()].sort((x, y) =>
      Buffer.compare(Buffer.from(set.validators[x]!.id), Buffer.from(set.validators[y]!.id)),
    )[0];
    assert.equal(new ProposerSchedule(set).proposerIndex(0), smallest);
    const next = nextHeightValidatorSet(set);
    assert.equal(new ProposerSchedule(next).proposerIndex(0), new ProposerSchedule(set).proposerIndex(1));
  });

  it("rescales a priority spread wider than 2 * total power, so nobody starves or dominates", () => {
    const vs = validators([10, 10]);
    const skewed = { validators: vs, priorities: [1_000_000, -1_000_000] };
    const schedule = new ProposerSchedule(skewed);
    const counts = [0, 0];
    for (let r = 0; r < 20; r++) counts[schedule.proposerIndex(r)]!++;
    assert.ok(counts[1]! >= 8, `the low-priority validator still proposes soon (${counts})`);
  });

  it("refuses a malformed set", () => {
    assert.throws(() => genesisValidatorSet([]), /invariant/);
    const twice = validators([1, 1]);
    assert.throws(() => genesisValidatorSet([twice[0]!, twice[0]!]), /distinct/);
    assert.throws(() => genesisValidatorSet(validators([0])), /positive/);
  });
});

describe("vote set", () => {
  const vs = validators([10, 10, 10, 10]);
  const vote = (type: 1 | 2, round: number, blockHash: Uint8Array | null, from: number): Vote => ({
    type,
    height: 3,
    round,
    blockHash,
    validatorId: vs[from]!.id,
    signature,
  });

  it("thresholds sit exactly at > 2/3 and > 1/3", () => {
    assert.equal(isQuorum(2, 3), false);
    assert.equal(isQuorum(3, 3), true);
    assert.equal(isQuorum(26, 40), false);
    assert.equal(isQuorum(27, 40), true);
    assert.equal(isOneThirdPlus(1, 3), false);
    assert.equal(isOneThirdPlus(14, 40), true);
    assert.equal(isOneThirdPlus(13, 40), false);
  });

  it("tallies power per value and for any value", () => {
    const set = new HeightVoteSet(3, vs);
    set.add(vote(1, 0, hashA, 0), 0);
    set.add(vote(1, 0, hashA, 1), 0);
    set.add(vote(1, 0, null, 2), 0);
    assert.equal(set.powerFor(0, 1, hashA), 20);
    assert.equal(set.powerFor(0, 1, null), 10);
    assert.equal(set.powerAny(0, 1), 30);
    assert.equal(set.hasQuorumAny(0, 1), true);
    assert.equal(set.hasQuorumFor(0, 1, hashA), false);
    assert.equal(set.add(vote(1, 0, hashA, 3), 0).kind, "added");
    assert.equal(set.hasQuorumFor(0, 1, hashA), true);
    assert.equal(set.powerFor(0, 2, hashA), 0, "types are tallied apart");
  });

  it("rejects duplicates and reports equivocation once, counting each value up to the cap", () => {
    const set = new HeightVoteSet(3, vs);
    set.add(vote(2, 1, hashA, 0), 1);
    assert.equal(set.add(vote(2, 1, hashA, 0), 1).kind, "duplicate");
    const first = set.add(vote(2, 1, hashB, 0), 1);
    assert.ok(first.kind === "equivocation" && first.evidence !== null && first.counted);
    assert.equal(set.powerFor(1, 2, hashB), 10);
    assert.equal(set.powerAny(1, 2), 10, "an equivocator counts once for 'any value'");
    for (let i = 2; i < valuesPerVoterMax; i++) {
      const more = set.add(vote(2, 1, sha256(new Uint8Array([i, 99])), 0), 1);
      assert.ok(more.kind === "equivocation" && more.evidence === null && more.counted);
    }
    const over = set.add(vote(2, 1, hashC, 0), 1);
    assert.ok(
      over.kind === "equivocation" && !over.counted,
      "beyond valuesPerVoterMax a value no one else backs is not kept",
    );
  });

  it("lets a value others back take a full slot's place, so junk values cannot hide a polka", () => {
    // Validator 0 (Byzantine) fills its slot: nil first, then values no one else votes for.
    const set = new HeightVoteSet(3, vs);
    set.add(vote(1, 0, null, 0), 0);
    const junk = Array.from({ length: valuesPerVoterMax - 1 }, (_, i) => sha256(new Uint8Array([i, 7])));
    for (const h of junk) assert.ok(set.add(vote(1, 0, h, 0), 0).kind === "equivocation");
    // Two honest validators prevote A: short of a quorum of 40 without validator 0's vote for A.
    set.add(vote(1, 0, hashA, 1), 0);
    set.add(vote(1, 0, hashA, 2), 0);
    assert.equal(set.hasQuorumFor(0, 1, hashA), false);
    const late = set.add(vote(1, 0, hashA, 0), 0);
    assert.ok(
      late.kind === "equivocation" && late.counted,
      "A, backed by 20, replaces a junk value backed by 10",
    );
    assert.equal(set.hasQuorumFor(0, 1, hashA), true);
    assert.equal(set.hasVoteFor(0, 1, 0, hashA), true);
    assert.equal(
      junk.filter((h) => set.hasVoteFor(0, 1, 0, h)).length,
      valuesPerVoterMax - 2,
      "exactly one junk value gave way",
    );
    assert.equal(set.hasVoteFor(0, 1, 0, null), true, "the first vote never gives way");
    assert.equal(set.powerAny(0, 1), 30, "'any value' still counts each validator once");
    // A value no one else backs does not push anything out.
    const more = set.add(vote(1, 0, hashC, 0), 0);
    assert.ok(more.kind === "equivocation" && !more.counted);
    assert.equal(set.hasQuorumFor(0, 1, hashA), true);
  });

  it("is bounded: current height only, rounds up to current + window", () => {
    const set = new HeightVoteSet(3, vs);
    assert.equal(set.add({ ...vote(1, 0, null, 0), height: 4 }, 0).kind, "wrongHeight");
    assert.equal(set.add(vote(1, 2 + voteRoundsAheadMax, null, 0), 2).kind, "added");
    assert.equal(set.add(vote(1, 3 + voteRoundsAheadMax, null, 0), 2).kind, "outOfWindow");
    assert.throws(() => set.add({ ...vote(1, 0, null, 0), validatorId: hashA }, 0), /invariant/);
  });

  it("remembers which rounds reached a precommit quorum for a value", () => {
    const set = new HeightVoteSet(3, vs);
    for (const i of [0, 1, 2]) set.add(vote(2, 7, hashC, i), 0);
    assert.deepEqual(
      set.precommitQuorums.map((q) => [q.round, hex(q.blockHash)]),
      [[7, hex(hashC)]],
    );
    assert.equal(set.votesFor(7, 2, hashC).length, 3);
  });
});
