/**
 * What one transaction costs a validator's main thread, without a network: the work every one of
 * the four replicas repeats for every transaction, which is what bounds saturation (docs/benchmarks.md).
 * Prints figures; never passes or fails.
 *
 *   node --import tsx bench/replica.ts [--block-sizes 100,1000] [--blocks 40] [--preload 20000]
 *
 * Two real ledgers (SQLite stores, the verify pool's worker threads, the node's admission code) on
 * one chain with one validator: a proposer and a replica. Per block of `B` pre-signed `kv.put`
 * transactions (223 bytes, senders referred to by certificate id, as bench/node.ts sends):
 *  - admission: both nodes admit every transaction (`ChainNode.submit`: decode, checks, identity,
 *    the signature on a worker, the mempool), as the API or gossip hands it over;
 *  - build: the proposer executes its candidates and seals the block (state tree, roots);
 *  - check: the replica re-executes the block and compares every root (`Ledger.checkBlock`);
 *  - commit: the replica stores it (`Ledger.commit`: one SQLite transaction with fsync) and
 *    answers its mempool (`afterCommit`); also its CPU (the process's, whose workers are idle then),
 *    so the difference is the wait for the disk.
 * Each phase is timed on the main thread, per transaction: build, check and commit by the clock
 * (they are synchronous: the thread's CPU plus fsync waits), admission by the event loop's active
 * time (it awaits the workers); admission also reports the process CPU (the workers' included).
 * `--preload` transactions go first in blocks of 1,000 so the tables and the tree are not empty.
 */
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { performance } from "node:perf_hooks";
import { parseArgs } from "node:util";
import { readPrivateKey } from "../src/ca/keys.ts";
import type { Commit } from "../src/core/block.ts";
import { utf8 } from "../src/core/encoding.ts";
import { bootstrapNetwork } from "../src/devnet/bootstrap.ts";
import { systemClock } from "../src/node/clock.ts";
import { nodeFiles } from "../src/node/config.ts";
import { NodeSignatureVerifier, NodeSigner } from "../src/node/crypto-node.ts";
import { ChainNode, defaultNodeOptions } from "../src/node/node.ts";
import { openLedger } from "../src/node/run.ts";
import { VerifyPool } from "../src/node/verify-pool.ts";
import { loadIdentity } from "../src/sdk/node.ts";
import { buildTx } from "../src/sdk/tx-builder.ts";
import { p256VerifyRate, percentile } from "./common.ts";

const { values: args } = parseArgs({
  options: {
    "block-sizes": { type: "string", default: "100,1000" },
    blocks: { type: "string", default: "40" },
    preload: { type: "string", default: "20000" },
  },
});
const blockSizes = args["block-sizes"].split(",").map(Number);
const blocksPerSize = Number(args.blocks);
const preload = Number(args.preload);
const senderNames = ["tax.officer", "civil.officer", "police.officer", "social.officer"];

interface Side {
  readonly node: ChainNode;
  readonly verifier: NodeSignatureVerifier;
}

async function main(): Promise<void> {
  process.stdout.write(
    `replica benchmark on ${os.cpus().length} cores (${os.cpus()[0]?.model ?? "?"}); ` +
      `machine yardstick: ${p256VerifyRate()} P-256 verifications/s on one thread\n`,
  );
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "citychain-bench-replica-"));
  const sides: Side[] = [];
  try {
    const layout = await bootstrapNetwork({ dir: path.join(dir, "net"), nodes: 1, vault: false });
    const passphrase = fs.readFileSync(layout.passphrasePath, "utf8").trim();
    const proposerDir = layout.nodes[0]!.dir;
    // The replica: the same genesis in a folder of its own.
    const replicaDir = path.join(dir, "replica");
    fs.mkdirSync(replicaDir, { mode: 0o700 });
    fs.copyFileSync(path.join(proposerDir, nodeFiles.genesis), path.join(replicaDir, nodeFiles.genesis));
    const signer = new NodeSigner(readPrivateKey(path.join(proposerDir, nodeFiles.key), { passphrase }));
    for (const nodeDir of [proposerDir, replicaDir]) {
      const verifier = new NodeSignatureVerifier(new VerifyPool());
      const ledger = openLedger(nodeDir, verifier);
      const node = new ChainNode(ledger, signer, systemClock, {
        ...defaultNodeOptions,
        production: "consensus",
      });
      node.start();
      sides.push({ node, verifier });
    }
    const [proposer, replica] = sides as [Side, Side];
    const identities = await Promise.all(
      senderNames.map((name) => {
        const member = layout.members.find((m) => m.enrollmentId === name)!;
        return loadIdentity(member.certPath, member.keyPath, { passphrase });
      }),
    );
    const chainId = proposer.node.ledger.latest().header.chainId;
    let serial = 0;
    const sign = (count: number, certById: boolean) =>
      Promise.all(
        Array.from({ length: count }, async (_, i) => {
          const n = serial++;
          const tx = await buildTx({
            chainId,
            type: "kv.put",
            payload: { key: `bench/replica/${n}`, value: utf8(`value-${n}`) },
            signers: [identities[i % identities.length]!],
            nowMs: Date.now(),
            certById,
          });
          return tx.bytes;
        }),
      );
    // One block in which each sender's transaction carries its certificate; later ones refer to it.
    let last = await runBlock(proposer, replica, await sign(identities.length, false), null);
    for (let done = 0; done < preload; done += 1000) {
      last = await runBlock(proposer, replica, await sign(Math.min(1000, preload - done), true), last.commit);
    }
    for (const size of blockSizes) {
      const totals = { admission: 0, admissionCpu: 0, build: 0, check: 0, commit: 0, commitCpu: 0 };
      const commits: number[] = [];
      for (let b = 0; b < blocksPerSize; b++) {
        last = await runBlock(proposer, replica, await sign(size, true), last.commit);
        const { times } = last;
        for (const key of Object.keys(totals) as Array<keyof typeof totals>) totals[key] += times[key];
        commits.push(times.commit);
      }
      commits.sort((x, y) => x - y);
      const per = (ms: number) => ((ms * 1000) / (size * blocksPerSize)).toFixed(1);
      process.stdout.write(
        `blocks of ${size} (${blocksPerSize} blocks, µs per transaction on the main thread): ` +
          `admission ${per(totals.admission / 2)} (process CPU ${per(totals.admissionCpu / 2)}), ` +
          `build ${per(totals.build)}, check ${per(totals.check)}, commit ${per(totals.commit)} ` +
          `(CPU ${per(totals.commitCpu)}, the rest is waiting for fsync); ` +
          `a replica's check + commit ${per(totals.check + totals.commit)}, with its admission ` +
          `${per(totals.check + totals.commit + totals.admission / 2)}; a block's commit: median ` +
          `${percentile(commits, 50).toFixed(2)} ms, p99 ${percentile(commits, 99).toFixed(2)} ms, ` +
          `longest ${commits[commits.length - 1]!.toFixed(2)} ms (WAL checkpoints and tree flushes)\n`,
      );
    }
  } finally {
    for (const side of sides) {
      await side.node.stop();
      side.node.ledger.store.close();
      await side.verifier.close();
    }
    fs.rmSync(dir, { recursive: true, force: true });
  }
  process.stdout.write(`machine yardstick after: ${p256VerifyRate()} P-256 verifications/s on one thread\n`);
}

/**
 * Admits `txs` on both nodes, builds the block on the proposer (carrying `lastCommit`, the previous
 * block's), checks and commits it on both; returns the phases' times and the block's commit.
 */
async function runBlock(proposer: Side, replica: Side, txs: Uint8Array[], lastCommit: Commit | null) {
  const cpu0 = process.cpuUsage();
  const elu0 = performance.eventLoopUtilization();
  for (const side of [proposer, replica]) {
    const statuses = await Promise.all(txs.map((bytes) => side.node.submit(bytes)));
    const refused = statuses.filter((s) => s.status !== "pending").length;
    if (refused > 0) throw new Error(`${refused} transactions not admitted`);
  }
  const t1 = performance.now();
  const cpu = process.cpuUsage(cpu0);
  const elu = performance.eventLoopUtilization(elu0);
  const ledger = proposer.node.ledger;
  const built = ledger.buildBlock(
    proposer.node.candidates(),
    Math.max(Date.now(), ledger.latest().header.timeMs + 1),
    proposer.node.validatorId,
    lastCommit,
  );
  const t2 = performance.now();
  if (built.execution.included.length !== txs.length) throw new Error("the block left transactions out");
  const commit = proposer.node.signCommit(built.block);
  const checked = replica.node.ledger.checkBlock(built.block);
  const t3 = performance.now();
  const commitCpu0 = process.cpuUsage();
  replica.node.ledger.commit(checked, commit);
  replica.node.afterCommit(checked, commit);
  const commitCpu = process.cpuUsage(commitCpu0);
  const t4 = performance.now();
  ledger.commit(built, commit);
  proposer.node.afterCommit(built, commit);
  const times = {
    admission: elu.active,
    admissionCpu: (cpu.user + cpu.system) / 1000,
    build: t2 - t1,
    check: t3 - t2,
    commit: t4 - t3,
    commitCpu: (commitCpu.user + commitCpu.system) / 1000,
  };
  return { times, commit };
}

await main();
