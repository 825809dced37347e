/**
 * Runs one simulation from the command line and prints its outcome; exits 1 on a violation.
 *
 *   node --import tsx test/sim/run.ts --seed 1234 --nodes 4 --byzantine 1 --faults partition,loss
 *
 * Flags: --seed N, --nodes N, --byzantine N, --faults k1,k2|all|none, --heights N,
 * --behaviors b1,b2 (Byzantine behaviours, default: drawn per node), --colluding, --delay-ms N
 * (one-way link delay), --commit-ms N (pause after each decision, so faults overlap more heights),
 * --membership join-leave (the last node joins the validators at height 3, node 0 leaves at 6),
 * --work-ms N (nodes wait for work; a transaction arrives every N to 2N ms), --skewed-clocks N
 * (honest nodes whose clock is off by more than the timeliness bound, alternately slow and fast),
 * --verbose (print the decision log and where each node stood).
 */
import { parseArgs } from "node:util";
import { allBehaviors, type ByzantineBehavior } from "./adversary.ts";
import { allFaults, type FaultKind, type SimConfig, simulate } from "./simulator.ts";

export function parseList<T extends string>(value: string | undefined, all: readonly T[], what: string): T[] {
  if (value === undefined || value === "none" || value === "") return [];
  if (value === "all") return [...all];
  const items = value.split(",");
  for (const item of items)
    if (!all.includes(item as T)) throw new Error(`unknown ${what} "${item}" (know: ${all.join(", ")})`);
  return items as T[];
}

function main(): void {
  const { values } = parseArgs({
    options: {
      seed: { type: "string", default: "1" },
      nodes: { type: "string", default: "4" },
      byzantine: { type: "string", default: "0" },
      faults: { type: "string", default: "none" },
      heights: { type: "string", default: "5" },
      behaviors: { type: "string" },
      colluding: { type: "boolean", default: false },
      "delay-ms": { type: "string" },
      "commit-ms": { type: "string" },
      verbose: { type: "boolean", default: false },
      membership: { type: "string" },
      "work-ms": { type: "string" },
      "skewed-clocks": { type: "string" },
    },
  });
  const config: SimConfig = {
    seed: Number(values.seed),
    nodes: Number(values.nodes),
    byzantine: Number(values.byzantine),
    faults: parseList<FaultKind>(values.faults, allFaults, "fault"),
    heights: Number(values.heights),
    ...(values.behaviors === undefined
      ? {}
      : { behaviors: parseList<ByzantineBehavior>(values.behaviors, allBehaviors, "behavior") }),
    ...(values.colluding ? { colluding: true } : {}),
    ...(values["delay-ms"] === undefined ? {} : { baseDelayMs: Number(values["delay-ms"]) }),
    ...(values.membership === "join-leave" ? { membership: "join-leave" as const } : {}),
    ...(values["commit-ms"] === undefined
      ? {}
      : { driver: { timeoutCommitMs: Number(values["commit-ms"]) } }),
    ...(values["work-ms"] === undefined ? {} : { work: { meanGapMs: Number(values["work-ms"]) } }),
    ...(values["skewed-clocks"] === undefined ? {} : { skewedClocks: Number(values["skewed-clocks"]) }),
  };
  const started = performance.now();
  const result = simulate(config);
  const wallMs = Math.round(performance.now() - started);
  const s = result.stats;
  console.log(
    `${result.ok ? "ok" : "FAILED"}: ${s.virtualMs} virtual ms in ${wallMs} wall ms, ${s.events} events, ` +
      `heights ${s.heightsDecided.join(",")}, byzantine [${s.byzantineNodes.join(",")}], ` +
      `crashes ${s.crashes}, restarts ${s.restarts}, evidence ${s.evidence}, messages ${s.network.sent} ` +
      `(lost ${s.network.lost}, cut ${s.network.cut}, duplicated ${s.network.duplicated})`,
  );
  console.log(`driver: ${JSON.stringify(s.counters)}`);
  if (values.verbose) {
    for (const [i, v] of s.finalViews.entries()) console.log(`  node ${i}: ${v}`);
    for (const d of result.log.decisions) {
      console.log(
        `  ${d.atMs} ms node ${d.node} height ${d.height} round ${d.commit.round} ${Buffer.from(d.blockHash).toString("hex").slice(0, 12)}`,
      );
    }
  }
  for (const v of result.violations) console.log(`  ${v.invariant}: ${v.message}`);
  if (!result.ok) {
    console.log(`reproduce: ${result.reproduce}`);
    process.exitCode = 1;
  }
}

if (import.meta.url === `file://${process.argv[1]}`) main();
