/**
 * Validators in ONE process, fed transactions directly (no HTTP API, no load-generator process):
 * what a height and a transaction cost without four processes competing for two cores. Real nodes
 * otherwise (startNode: TLS between them on loopback, SQLite, the verify pools). Each setting
 * starts a fresh network; with two or more `--timeout-commit-ms` values it prints the slope of CPU
 * against heights, i.e. the CPU a height costs the validators together.
 *
 *   node --import tsx bench/in-process.ts [--nodes 4] [--rate 100] [--seconds 15]
 *     [--timeout-commit-ms 20,100,20,100]
 *
 * CPU is this process's (all threads: the nodes' main work, their verify workers, V8's helpers),
 * so profile it with node's own --cpu-prof for one thread's picture. Transactions carry their
 * signer's certificate (no registration step), so they are ~700 bytes, not the 223 of bench:network.
 */
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { parseArgs } from "node:util";
import { utf8 } from "../src/core/encoding.ts";
import { bootstrapNetwork } from "../src/devnet/bootstrap.ts";
import { type RunningNode, startNode } from "../src/node/run.ts";
import { loadIdentity } from "../src/sdk/node.ts";
import { buildTx } from "../src/sdk/tx-builder.ts";
import { freePortBase } from "../test/e2e/process-net.ts";
import { p256VerifyRate } from "./common.ts";

const { values: args } = parseArgs({
  options: {
    nodes: { type: "string", default: "4" },
    rate: { type: "string", default: "100" },
    seconds: { type: "string", default: "15" },
    "timeout-commit-ms": { type: "string", default: "20,100,20,100" },
  },
});
const nodeCount = Number(args.nodes);
const rate = Number(args.rate);
const seconds = Number(args.seconds);
const settings = args["timeout-commit-ms"].split(",").map(Number);

interface Run {
  readonly timeoutCommitMs: number;
  readonly heightsPerSecond: number;
  readonly cores: number;
}

async function runOnce(timeoutCommitMs: number): Promise<Run> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "citychain-in-process-"));
  const nodes: RunningNode[] = [];
  try {
    const layout = await bootstrapNetwork({
      dir,
      nodes: nodeCount,
      apiPortBase: await freePortBase(nodeCount),
      timeoutCommitMs,
      vault: false,
    });
    const passphrase = fs.readFileSync(layout.passphrasePath, "utf8").trim();
    for (const n of layout.nodes)
      nodes.push(await startNode({ dir: n.dir, passphrase: { value: passphrase } }));
    const member = layout.members.find((m) => m.enrollmentId === "tax.officer")!;
    const identity = await loadIdentity(member.certPath, member.keyPath, { passphrase });
    const chainId = nodes[0]!.node.ledger.latest().header.chainId;
    const txs: Uint8Array[] = [];
    for (let i = 0; i < Math.ceil(rate * seconds); i++) {
      const tx = await buildTx({
        chainId,
        type: "kv.put",
        payload: { key: `bench/in-process/${i}`, value: utf8(`value-${i}`) },
        signers: [identity],
        nowMs: Date.now(),
      });
      txs.push(tx.bytes);
    }
    // The peers connect (mutual TLS) and the first heights settle before anything is measured.
    await new Promise((resolve) => setTimeout(resolve, 3000));
    let sent = 0;
    let refused = 0;
    const heightBefore = nodes[0]!.node.ledger.height();
    const cpuBefore = process.cpuUsage();
    const start = performance.now();
    await new Promise<void>((resolve) => {
      const tick = setInterval(() => {
        const due = Math.min(txs.length, Math.floor(((performance.now() - start) / 1000) * rate));
        for (; sent < due; sent++) {
          nodes[sent % nodes.length]!.node.submit(txs[sent]!).catch(() => refused++);
        }
        if (performance.now() - start >= seconds * 1000) {
          clearInterval(tick);
          resolve();
        }
      }, 10);
    });
    const cpu = process.cpuUsage(cpuBefore);
    const elapsed = (performance.now() - start) / 1000;
    const heights = nodes[0]!.node.ledger.height() - heightBefore;
    if (refused > 0) throw new Error(`${refused} transactions refused`);
    return {
      timeoutCommitMs,
      heightsPerSecond: heights / elapsed,
      cores: (cpu.user + cpu.system) / 1e6 / elapsed,
    };
  } finally {
    for (const n of nodes) await n.close();
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

process.stdout.write(
  `in-process benchmark: ${nodeCount} validators in one process on ${os.cpus().length} cores; ` +
    `machine yardstick: ${p256VerifyRate()} P-256 verifications/s on one thread\n`,
);
const runs: Run[] = [];
for (const setting of settings) {
  const run = await runOnce(setting);
  runs.push(run);
  process.stdout.write(
    `${rate} tx/s, timeoutCommitMs ${setting}: ${run.heightsPerSecond.toFixed(1)} heights/s, ` +
      `process ${run.cores.toFixed(3)} cores (${((run.cores * 1e6) / rate).toFixed(0)} CPU µs per transaction)\n`,
  );
}
if (new Set(runs.map((r) => r.timeoutCommitMs)).size >= 2) {
  // Least-squares slope of cores against heights per second: CPU seconds per height.
  const n = runs.length;
  const mx = runs.reduce((s, r) => s + r.heightsPerSecond, 0) / n;
  const my = runs.reduce((s, r) => s + r.cores, 0) / n;
  const sxy = runs.reduce((s, r) => s + (r.heightsPerSecond - mx) * (r.cores - my), 0);
  const sxx = runs.reduce((s, r) => s + (r.heightsPerSecond - mx) ** 2, 0);
  process.stdout.write(
    `a height costs the ${nodeCount} validators ${((1000 * sxy) / sxx).toFixed(1)} ms of CPU together ` +
      `(slope over ${n} runs)\n`,
  );
}
process.stdout.write(`machine yardstick after: ${p256VerifyRate()} P-256 verifications/s on one thread\n`);
process.exit(0);
