/**
 * Where a height's time goes, from the nodes' debug logs: each node logs its consensus steps
 * ("consensus step" lines, log level debug; src/node/network-node.ts) and this lines them up by
 * height. Heights that every node logged from entry to commit are measured:
 *
 *   node --import tsx bench/timeline.ts <dir with node*.log> [--from-ms T] [--to-ms T]
 *
 * `bench/node.ts --timeline` runs it on the latency phase. All nodes share this machine's clock.
 */
import fs from "node:fs";
import path from "node:path";
import { parseArgs } from "node:util";
import { percentile } from "./common.ts";

interface NodeSteps {
  [step: string]: number;
}

export interface HeightTimes {
  readonly height: number;
  /** From the first node entering the height to the last entering it. */
  readonly enterSpread: number;
  /** The proposer's block building. */
  readonly build: number;
  /**
   * The proposer starting to send its proposal to the last other node having received it, checked
   * its signature and decoded its block.
   */
  readonly proposalTransit: number;
  /** The slowest block check among the other nodes. */
  readonly check: number;
  /**
   * The last block check's end to the first commit's start (votes, WAL appends); negative when a
   * node decided before the slowest check ended (three of four suffice).
   */
  readonly votes: number;
  /** The slowest node's commit. */
  readonly commit: number;
  /** The first node entering to the last node's commit's end. */
  readonly total: number;
}

const phases = ["enterSpread", "build", "proposalTransit", "check", "votes", "commit", "total"] as const;

/** Reads node*.log in `dir` and measures each height every node logged whole. */
export function readTimeline(dir: string, fromMs = 0, toMs = Number.POSITIVE_INFINITY): HeightTimes[] {
  const byHeight = new Map<number, Map<string, NodeSteps>>();
  for (const file of fs.readdirSync(dir).filter((f) => /^node\d+\.log$/.test(f))) {
    for (const line of fs.readFileSync(path.join(dir, file), "utf8").split("\n")) {
      if (!line.includes('"consensus step"')) continue;
      let entry: { step?: unknown; height?: unknown; atMs?: unknown };
      try {
        entry = JSON.parse(line);
      } catch {
        continue; // a line cut by a kill
      }
      const { step, height, atMs } = entry;
      if (typeof step !== "string" || typeof height !== "number" || typeof atMs !== "number") continue;
      let nodes = byHeight.get(height);
      if (nodes === undefined) {
        nodes = new Map();
        byHeight.set(height, nodes);
      }
      let steps = nodes.get(file);
      if (steps === undefined) {
        steps = {};
        nodes.set(file, steps);
      }
      steps[step] ??= atMs; // the first time a step happened at this height (round 0 normally)
    }
  }
  const out: HeightTimes[] = [];
  for (const [height, nodes] of [...byHeight].sort((a, b) => a[0] - b[0])) {
    const all = [...nodes.values()];
    const proposer = all.find((s) => s["build-start"] !== undefined);
    if (proposer === undefined) continue;
    const others = all.filter((s) => s !== proposer);
    const complete =
      others.length > 0 &&
      others.every((s) => s["proposal-received"] !== undefined && s["check-end"] !== undefined) &&
      all.every((s) => s.enter !== undefined && s["commit-end"] !== undefined);
    if (!complete) continue;
    const firstEnter = Math.min(...all.map((s) => s.enter!));
    if (firstEnter < fromMs || firstEnter > toMs) continue;
    const lastCheckEnd = Math.max(...others.map((s) => s["check-end"]!));
    out.push({
      height,
      enterSpread: Math.max(...all.map((s) => s.enter!)) - firstEnter,
      build: proposer["build-end"]! - proposer["build-start"]!,
      proposalTransit: Math.max(...others.map((s) => s["proposal-received"]!)) - proposer["proposal-sent"]!,
      check: Math.max(...others.map((s) => s["check-end"]! - s["check-start"]!)),
      votes: Math.min(...all.map((s) => s["commit-start"]!)) - lastCheckEnd,
      commit: Math.max(...all.map((s) => s["commit-end"]! - s["commit-start"]!)),
      total: Math.max(...all.map((s) => s["commit-end"]!)) - firstEnter,
    });
  }
  return out;
}

/** Lines for a report: each phase's p50 / p90 / max, then the slowest heights. */
export function describeTimeline(heights: readonly HeightTimes[], slowest = 5): string[] {
  if (heights.length === 0) return ["no height was logged whole (is the nodes' log level debug?)"];
  const lines = [`${heights.length} heights, ms (p50 / p90 / max):`];
  for (const phase of phases) {
    const values = heights.map((h) => h[phase]).sort((a, b) => a - b);
    const at = (p: number) => percentile(values, p).toFixed(1);
    lines.push(`  ${phase.padEnd(16)} ${at(50)} / ${at(90)} / ${values[values.length - 1]!.toFixed(1)}`);
  }
  lines.push("  slowest heights:");
  for (const h of [...heights].sort((a, b) => b.total - a.total).slice(0, slowest)) {
    const parts = phases.filter((p) => p !== "total").map((p) => `${p} ${h[p].toFixed(1)}`);
    lines.push(`    height ${h.height}: total ${h.total.toFixed(1)} (${parts.join(", ")})`);
  }
  return lines;
}

if (import.meta.url === `file://${process.argv[1]}`) {
  const { values, positionals } = parseArgs({
    allowPositionals: true,
    options: { "from-ms": { type: "string" }, "to-ms": { type: "string" } },
  });
  const dir = positionals[0];
  if (dir === undefined) {
    process.stderr.write("usage: bench/timeline.ts <dir with node*.log> [--from-ms T] [--to-ms T]\n");
    process.exit(2);
  }
  const heights = readTimeline(
    dir,
    values["from-ms"] === undefined ? 0 : Number(values["from-ms"]),
    values["to-ms"] === undefined ? Number.POSITIVE_INFINITY : Number(values["to-ms"]),
  );
  process.stdout.write(`${describeTimeline(heights).join("\n")}\n`);
}
