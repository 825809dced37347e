/**
 * A long sweep over many seeds (`npm run sim:sweep -- --seeds 1000 --minutes 30`). Each seed draws
 * its own shape: 4, 5, 7 or 10 validators, up to the most Byzantine nodes BFT tolerates
 * (f = floor((n - 1) / 3)), a random subset of the fault kinds and 3 to 8 heights, for a third
 * of the seeds with 5 or more validators a change of the set mid-run, for half of them nodes
 * that wait for work (SimConfig.work), and for half of those with room under f honest nodes with
 * skewed clocks (SimConfig.skewedClocks). Every failure
 * prints the one-line command that reproduces it; the exit code is 1 when any seed failed.
 *
 * Flags: --seeds N (how many; default unbounded within --minutes), --start N (first seed, default 1),
 * --minutes M (wall-clock budget, default 10), --nodes N (fix the size).
 */
import { parseArgs } from "node:util";
import { Prng } from "./prng.ts";
import { allFaults, type SimConfig, simulate } from "./simulator.ts";

export function sweepConfig(seed: number, nodes?: number): SimConfig {
  const prng = new Prng(seed ^ 0x5eed);
  const n = nodes ?? prng.pick([4, 4, 5, 7, 7, 10]);
  const f = Math.floor((n - 1) / 3);
  const byzantine = prng.between(0, f);
  const faults = allFaults.filter(() => prng.chance(0.5));
  const heights = prng.between(3, 8);
  // Half the seeds pause after each decision, so the fault window spans many heights.
  const driver = prng.chance(0.5) ? { driver: { timeoutCommitMs: prng.between(100, 1000) } } : {};
  // A third of the seeds with 5 or more validators change the set mid-run. The set then has n - 1
  // validators before the join and after the leave, so only seeds whose Byzantine nodes stay under
  // a third of that smaller set qualify (7 nodes with 2 Byzantine would leave 2 of 6: no quorum of
  // honest power, and no liveness to expect).
  const membership =
    n >= 5 && prng.chance(1 / 3) && byzantine <= Math.floor((n - 2) / 3)
      ? { membership: "join-leave" as const }
      : {};
  // Half the seeds wait for work as network nodes do, with transactions sparse or dense. Drawn last,
  // so the shapes drawn before it stay what they were.
  const work = prng.chance(0.5) ? { work: { meanGapMs: prng.pick([20, 150, 800]) } } : {};
  // Half the seeds with room left under f give some honest nodes a clock off by more than the
  // timeliness bound (they count against f for liveness, as the Byzantine ones do).
  const spare = (membership.membership === undefined ? f : Math.floor((n - 2) / 3)) - byzantine;
  const skewed = spare > 0 && prng.chance(0.5) ? { skewedClocks: prng.between(1, spare) } : {};
  return { seed, nodes: n, byzantine, faults, heights, ...driver, ...membership, ...work, ...skewed };
}

function main(): void {
  const { values } = parseArgs({
    options: {
      seeds: { type: "string" },
      start: { type: "string", default: "1" },
      minutes: { type: "string", default: "10" },
      nodes: { type: "string" },
    },
  });
  const count = values.seeds === undefined ? Number.POSITIVE_INFINITY : Number(values.seeds);
  const deadline = performance.now() + Number(values.minutes) * 60_000;
  const nodes = values.nodes === undefined ? undefined : Number(values.nodes);
  let ran = 0;
  let failed = 0;
  for (let seed = Number(values.start); ran < count && performance.now() < deadline; seed++, ran++) {
    const result = simulate(sweepConfig(seed, nodes));
    if (result.ok) continue;
    failed++;
    console.log(
      `seed ${seed} FAILED: ${result.violations.map((v) => `${v.invariant}: ${v.message}`).join("; ")}`,
    );
    console.log(`  reproduce: ${result.reproduce}`);
  }
  console.log(`${ran} seeds, ${failed} failed`);
  if (failed > 0) process.exitCode = 1;
}

if (import.meta.url === `file://${process.argv[1]}`) main();
