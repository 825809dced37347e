/**
 * The deterministic simulator in CI: a fixed set of seeds over 4 and 7 validators with up to
 * f = floor((n - 1) / 3) Byzantine nodes, each fault kind alone and all together, crashes and
 * restarts; every run must keep Agreement, Validity, NoHonestDoubleSign, DecideOnce and Liveness.
 * Then the negative controls: the checkers must catch forged logs, and a coalition above 1/3 must
 * produce a reported violation. A failure names the seed and the command that reproduces it.
 * The long sweep over many seeds is `npm run sim:sweep`.
 */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { NodeSignatureVerifier } from "../../src/node/crypto-node.ts";
import { allBehaviors } from "../sim/adversary.ts";
import {
  checkAgreement,
  checkLiveness,
  checkNoHonestDoubleSign,
  checkValidity,
  type SimLog,
} from "../sim/checkers.ts";
import { encodeSimBlock, genesisParent } from "../sim/sim-app.ts";
import { allFaults, type SimConfig, type SimResult, simulate } from "../sim/simulator.ts";
import { sweepConfig } from "../sim/sweep.ts";

function expectOk(config: SimConfig): SimResult {
  const result = simulate(config);
  const why = result.violations.map((v) => `${v.invariant}: ${v.message}`).join("\n  ");
  assert.ok(result.ok, `seed ${config.seed} failed:\n  ${why}\nreproduce: ${result.reproduce}`);
  return result;
}

describe("simulation: safety and liveness hold", () => {
  it("4 validators, no faults: every height decides in three message delays", () => {
    const result = expectOk({ seed: 1, nodes: 4, byzantine: 0, faults: [], heights: 5 });
    assert.ok(
      result.commitIntervalsMs.every((ms) => ms < 200),
      `${result.commitIntervalsMs}`,
    );
  });

  for (const fault of allFaults) {
    it(`4 validators, fault "${fault}" alone`, () => {
      for (const seed of [11, 12]) expectOk({ seed, nodes: 4, byzantine: 0, faults: [fault], heights: 4 });
    });
  }

  for (const behavior of allBehaviors) {
    it(`4 validators, one Byzantine "${behavior}"`, () => {
      for (const seed of [21, 22])
        expectOk({ seed, nodes: 4, byzantine: 1, behaviors: [behavior], faults: [], heights: 4 });
    });
  }

  it("4 validators, one Byzantine, every fault kind at once", () => {
    for (const seed of [31, 32, 33, 34, 35, 36])
      expectOk({ seed, nodes: 4, byzantine: 1, faults: allFaults, heights: 4 });
    for (const seed of [37, 38]) {
      expectOk({
        seed,
        nodes: 4,
        byzantine: 1,
        faults: allFaults,
        heights: 10,
        driver: { timeoutCommitMs: 700 },
      });
    }
  });

  it("7 validators, two Byzantine, every fault kind at once", () => {
    for (const seed of [41, 42, 43, 44])
      expectOk({ seed, nodes: 7, byzantine: 2, faults: allFaults, heights: 4 });
    for (const seed of [45, 46]) {
      expectOk({
        seed,
        nodes: 7,
        byzantine: 2,
        faults: allFaults,
        heights: 10,
        driver: { timeoutCommitMs: 700 },
      });
    }
  });

  it("crashes and restarts (some right after a durable WAL append) never double-sign", () => {
    let crashes = 0;
    for (const seed of [51, 52, 53, 54, 55, 56]) {
      const nodes = seed % 2 === 0 ? 4 : 7;
      const result = expectOk({
        seed,
        nodes,
        byzantine: 1,
        faults: ["crash", "loss"],
        heights: 12,
        driver: { timeoutCommitMs: 500 }, // heights keep coming through the whole fault window
      });
      crashes += result.stats.crashes;
    }
    assert.ok(crashes >= 6, `the crash plan struck (${crashes} crashes)`);
  });

  it("sixty seeds of the sweep's random shapes (4-10 validators, up to f Byzantine, random faults)", () => {
    for (let seed = 1; seed <= 60; seed++) expectOk(sweepConfig(seed));
  });

  it("the validator set changes mid-run (a node joins at 3, another leaves at 6) under faults and a Byzantine node", () => {
    for (const seed of [71, 72, 73, 74, 75, 76]) {
      const result = expectOk({
        seed,
        nodes: 5,
        byzantine: 1,
        faults: allFaults,
        heights: 9,
        membership: "join-leave",
      });
      const honest = new Set(result.log.honestNodes);
      const signed = (node: number, test: (height: number) => boolean) =>
        result.log.signs.some((s) => s.node === node && s.kind !== "proposal" && test(s.height));
      if (honest.has(4)) {
        assert.ok(!signed(4, (h) => h < 3), `seed ${seed}: node 4 voted before it joined`);
        assert.ok(
          signed(4, (h) => h >= 3),
          `seed ${seed}: node 4 never voted after it joined`,
        );
      }
      if (honest.has(0)) assert.ok(!signed(0, (h) => h >= 6), `seed ${seed}: node 0 voted after it left`);
      assert.match(result.reproduce, /--membership join-leave/);
    }
  });

  it("nodes that wait for work, as network nodes do, idle between transactions and wake for them under faults", () => {
    for (const seed of [81, 82, 83, 84, 85, 86]) {
      const nodes = seed <= 83 ? 4 : 7;
      const meanGapMs = [20, 400, 1000][seed % 3]!;
      const timeoutCommitMs = [0, 200, 1000][(seed >> 1) % 3]!;
      const result = expectOk({
        seed,
        nodes,
        byzantine: Math.floor((nodes - 1) / 3),
        faults: allFaults,
        heights: 5,
        driver: { timeoutCommitMs },
        work: { meanGapMs },
      });
      assert.match(result.reproduce, new RegExp(`--work-ms ${meanGapMs}$`));
    }
    // Without faults the chain makes a block only when a transaction has come: five heights with one
    // every 1 to 2 s take at least four gaps.
    const sparse = expectOk({
      seed: 87,
      nodes: 4,
      byzantine: 0,
      faults: [],
      heights: 5,
      work: { meanGapMs: 1000 },
    });
    assert.ok(sparse.stats.virtualMs >= 4000, `${sparse.stats.virtualMs} virtual ms`);
    const dense = expectOk({ seed: 87, nodes: 4, byzantine: 0, faults: [], heights: 5 });
    assert.ok(dense.stats.virtualMs < 1000, `${dense.stats.virtualMs} virtual ms`);
  });

  it("validators whose clock is off by more than the timeliness bound still decide with the others", () => {
    // One slow clock of four, no faults: it finds every fresh proposal of the others untimely and
    // prevotes nil, yet it decides every height (lines 36 and 49 ask only valid(v); in the simulator
    // a decision fetched by catch-up goes through the machine's line 49 too, so a node that judged
    // the block invalid would never decide it and Liveness would fail).
    const slow = expectOk({ seed: 91, nodes: 4, byzantine: 0, faults: [], heights: 6, skewedClocks: 1 });
    assert.ok(slow.stats.counters.untimely >= 4, `${slow.stats.counters.untimely} untimely proposals`);
    assert.deepEqual(slow.stats.heightsDecided, [6, 6, 6, 6]);
    assert.match(slow.reproduce, /--skewed-clocks 1$/);
    // Under every fault, with Byzantine nodes and skewed clocks together within f.
    for (const seed of [92, 93, 94]) {
      expectOk({ seed, nodes: 4, byzantine: 0, faults: allFaults, heights: 4, skewedClocks: 1 });
      expectOk({
        seed,
        nodes: 7,
        byzantine: 1,
        faults: allFaults,
        heights: 4,
        skewedClocks: 1,
        work: { meanGapMs: 150 },
      });
      expectOk({ seed, nodes: 10, byzantine: 1, faults: allFaults, heights: 3, skewedClocks: 2 });
    }
  });

  it("a seed reproduces its run exactly", () => {
    const config: SimConfig = { seed: 77, nodes: 4, byzantine: 1, faults: allFaults, heights: 4 };
    const a = simulate(config);
    const b = simulate(config);
    const summary = (r: SimResult) =>
      r.log.decisions.map(
        (d) => `${d.node}/${d.height}/${d.atMs}/${Buffer.from(d.blockHash).toString("hex")}`,
      );
    assert.deepEqual(summary(a), summary(b));
    assert.equal(a.stats.events, b.stats.events);
    assert.match(
      a.reproduce,
      /^node --import tsx test\/sim\/run\.ts --seed 77 --nodes 4 --byzantine 1 --faults /,
    );
  });
});

describe("simulation: the checkers can fail (negative controls)", () => {
  const verifier = new NodeSignatureVerifier();
  const base = simulate({ seed: 5, nodes: 4, byzantine: 0, faults: [], heights: 3 });

  it("a forged decision log breaks Agreement and Validity", () => {
    const forged = base.log.decisions.map((d) =>
      d.node === 0 && d.height === 2
        ? {
            ...d,
            blockHash: new Uint8Array(32).fill(9),
            blockBytes: encodeSimBlock({
              height: 2,
              parent: genesisParent,
              proposer: new Uint8Array(32),
              round: 0,
              timeMs: 0,
              txs: [],
              valid: false,
            }),
          }
        : d,
    );
    const log: SimLog = { ...base.log, decisions: forged };
    assert.ok(checkAgreement(log).length > 0);
    const validity = checkValidity(log, verifier).map((v) => v.message);
    assert.ok(validity.some((m) => m.includes("never proposed")));
    assert.ok(validity.some((m) => m.includes("invalid block")));
    assert.ok(validity.some((m) => m.includes("bad commit")));
  });

  it("a forged signature log breaks NoHonestDoubleSign", () => {
    const vote = base.log.signs.find((s) => s.kind === "prevote" && s.honest);
    assert.ok(vote !== undefined);
    const log: SimLog = {
      ...base.log,
      signs: [...base.log.signs, { ...vote, value: "nil" === vote.value ? "ab" : "nil" }],
    };
    assert.equal(checkNoHonestDoubleSign(log).length, 1);
  });

  it("a missing height breaks Liveness", () => {
    const log: SimLog = {
      ...base.log,
      decisions: base.log.decisions.filter((d) => !(d.node === 2 && d.height === 3)),
    };
    assert.equal(checkLiveness(log).length, 1);
  });

  it("more than 1/3 colluding equivocators are caught forking or stalling the chain", () => {
    for (const seed of [1, 2, 3]) {
      const config: SimConfig = {
        seed,
        nodes: 4,
        byzantine: 2,
        colluding: true,
        behaviors: ["equivocate", "conflictingVotes"],
        faults: [],
        heights: 3,
        livenessBoundMs: 20_000,
      };
      const result = simulate(config);
      assert.ok(!result.ok, `seed ${seed}: the checkers saw nothing wrong`);
      assert.ok(result.violations.some((v) => v.invariant === "Agreement" || v.invariant === "Liveness"));
    }
  });
});
