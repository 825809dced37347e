/**
 * The 49-validator run the consensus issue asks for: commit latency with 50 ms simulated links.
 * Prints figures, judges nothing about time (a benchmark, not a timed test); it does fail on a
 * safety or liveness violation like any simulation.
 *
 *   node --import tsx test/sim/scale.ts [--nodes 49] [--delay-ms 50] [--jitter-ms 0] [--heights 20] [--seed 1]
 *
 * Latency is per honest node and height: virtual ms from its previous decision (or the start) to
 * this one, i.e. the block interval with timeout_commit = 0. Link delay is one way.
 */
import { parseArgs } from "node:util";
import { simulate } from "./simulator.ts";

function percentile(sorted: readonly number[], p: number): number {
  if (sorted.length === 0) return Number.NaN;
  const i = Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1));
  return sorted[i]!;
}

function main(): void {
  const { values } = parseArgs({
    options: {
      nodes: { type: "string", default: "49" },
      "delay-ms": { type: "string", default: "50" },
      "jitter-ms": { type: "string", default: "0" },
      heights: { type: "string", default: "20" },
      seed: { type: "string", default: "1" },
      byzantine: { type: "string", default: "0" },
    },
  });
  const config = {
    seed: Number(values.seed),
    nodes: Number(values.nodes),
    byzantine: Number(values.byzantine),
    faults: [],
    heights: Number(values.heights),
    baseDelayMs: Number(values["delay-ms"]),
    jitterMs: Number(values["jitter-ms"]),
  };
  const started = performance.now();
  const result = simulate(config);
  const wallMs = Math.round(performance.now() - started);
  const latencies = [...result.commitIntervalsMs].sort((a, b) => a - b);
  const s = result.stats;
  console.log(
    `${config.nodes} validators (${config.byzantine} Byzantine), ${config.baseDelayMs} ms one-way link delay ` +
      `(+0..${config.jitterMs} ms jitter), ${config.heights} heights, seed ${config.seed}`,
  );
  console.log(
    `commit latency per height: median ${percentile(latencies, 50)} ms, p99 ${percentile(latencies, 99)} ms, ` +
      `min ${latencies[0]} ms, max ${latencies.at(-1)} ms (virtual, ${latencies.length} samples)`,
  );
  console.log(
    `run: ${s.virtualMs} virtual ms, ${s.events} events, ${s.network.sent} messages ` +
      `(${Math.round(s.network.bytes / 1024)} KiB), ${wallMs} ms wall`,
  );
  for (const v of result.violations) console.log(`  ${v.invariant}: ${v.message}`);
  if (!result.ok) {
    console.log(`reproduce: ${result.reproduce}`);
    process.exitCode = 1;
  }
}

main();
