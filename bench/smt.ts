/**
 * State-tree benchmark: builds a tree of N keys in a Map-backed node store, then measures batch
 * updates, proof generation and proof verification. Prints figures; never passes or fails.
 *
 *   node --import tsx bench/smt.ts [--keys 1000000] [--batch 10000] [--proofs 20000] [--cache 65536]
 */
import os from "node:os";
import { parseArgs } from "node:util";
import type { SmtChange } from "../src/core/smt.ts";
import { MemorySmtNodeStore, SparseMerkleTree, smtDefaults, smtSha256 } from "../src/core/smt.ts";
import { encodeProof, verifyProof } from "../src/core/smt-proof.ts";

const { values } = parseArgs({
  options: {
    keys: { type: "string", default: "1000000" },
    batch: { type: "string", default: "10000" },
    proofs: { type: "string", default: "20000" },
    cache: { type: "string", default: String(smtDefaults.nodeCacheEntriesMax) },
  },
});
const keysTotal = Number(values.keys);
const batchChanges = Number(values.batch);
const proofsTotal = Number(values.proofs);
const nodeCacheEntriesMax = Number(values.cache);
const updateRounds = 5;

const encoder = new TextEncoder();
const keyOf = (i: number): Uint8Array => encoder.encode(`citizen/license/${i}`);
const valueBytesOf = (i: number, version: number): Uint8Array =>
  encoder.encode(`value ${i} v${version}`.padEnd(64, "."));

/** Deterministic key choice, so runs are comparable. */
function* pseudoRandomIndexes(count: number, modulo: number, seed: number): Generator<number> {
  let x = seed >>> 0 || 1;
  for (let i = 0; i < count; i++) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    yield (x >>> 0) % modulo;
  }
}

function timed<T>(work: () => T): { result: T; ms: number } {
  const start = process.hrtime.bigint();
  const result = work();
  return { result, ms: Number(process.hrtime.bigint() - start) / 1e6 };
}

function cpuBusyShare(wallMs: number, usage: NodeJS.CpuUsage): string {
  const cpuMs = (usage.user + usage.system) / 1000;
  return `${((100 * cpuMs) / wallMs).toFixed(0)}% of one core`;
}

/** This machine's SHA-256 rate right now: the unit the other figures scale with under load. */
function sha256PerSecond(): number {
  const input = new Uint8Array(65);
  const count = 200_000;
  const { ms } = timed(() => {
    for (let i = 0; i < count; i++) smtSha256(input);
  });
  return (count / ms) * 1000;
}

function loadAverage(): string {
  return os
    .loadavg()
    .map((l) => l.toFixed(2))
    .join(" ");
}

const store = new MemorySmtNodeStore();
const tree = new SparseMerkleTree(store, { nodeCacheEntriesMax });

console.log(`cpus: ${os.cpus().length} (${os.cpus()[0]?.model ?? "?"}), node ${process.version}`);
console.log(`load average before: ${loadAverage()}`);
console.log(`SHA-256 of 65 bytes (node:crypto) before: ${sha256PerSecond().toFixed(0)}/s`);
console.log(`keys: ${keysTotal}, batch: ${batchChanges} changes, node cache: ${nodeCacheEntriesMax} entries`);

const buildStart = process.cpuUsage();
const build = timed(() => {
  for (let start = 0; start < keysTotal; start += batchChanges) {
    const changes: SmtChange[] = [];
    for (let i = start; i < Math.min(keysTotal, start + batchChanges); i++) {
      changes.push({ key: keyOf(i), value: valueBytesOf(i, 0) });
    }
    const batch = tree.applyBatch(changes);
    store.write(batch.nodeWrites);
    tree.commit(batch);
    if ((start / batchChanges) % 20 === 19) process.stderr.write(`  built ${start + changes.length} keys\n`);
  }
});
const buildCpu = process.cpuUsage(buildStart);
console.log(
  `build: ${(build.ms / 1000).toFixed(1)} s, ${store.nodes.size} stored nodes, ` +
    `${(build.ms / Math.ceil(keysTotal / batchChanges)).toFixed(0)} ms per insert batch ` +
    `(${cpuBusyShare(build.ms, buildCpu)})`,
);

/** The last version written per key index, to know the values the proofs must verify against. */
const versionOf = new Map<number, number>();
const applyMs: number[] = [];
const commitMs: number[] = [];
const writes: number[] = [];
for (let round = 1; round <= updateRounds; round++) {
  const changes: SmtChange[] = [];
  for (const i of pseudoRandomIndexes(batchChanges, keysTotal, round)) {
    changes.push({ key: keyOf(i), value: valueBytesOf(i, round) });
    versionOf.set(i, round);
  }
  const apply = timed(() => tree.applyBatch(changes));
  const commit = timed(() => {
    store.write(apply.result.nodeWrites);
    tree.commit(apply.result);
  });
  applyMs.push(apply.ms);
  commitMs.push(commit.ms);
  writes.push(apply.result.nodeWrites.size);
}
const median = (xs: number[]): number => xs.slice().sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
console.log(
  `update of ${batchChanges} existing keys: applyBatch median ${median(applyMs).toFixed(0)} ms ` +
    `(all: ${applyMs.map((m) => m.toFixed(0)).join(", ")}), store write + commit median ${median(commitMs).toFixed(0)} ms`,
);
console.log(
  `nodes written per ${batchChanges}-change batch: median ${median(writes)} ` +
    `(${(median(writes) / batchChanges).toFixed(2)} per change)`,
);

const singleIndex = 12345 % keysTotal;
versionOf.set(singleIndex, 99);
const single = tree.applyBatch([{ key: keyOf(singleIndex), value: valueBytesOf(singleIndex, 99) }]);
store.write(single.nodeWrites);
tree.commit(single);
console.log(`nodes written for a single-key update: ${single.nodeWrites.size}`);

const proofIndexes = [...pseudoRandomIndexes(proofsTotal, keysTotal, 77)];
const proofKeys = proofIndexes.map(keyOf);
const absentKeys = [...pseudoRandomIndexes(proofsTotal, 1 << 30, 78)].map((i) =>
  encoder.encode(`absent/${i}`),
);
const proofStart = process.cpuUsage();
const proving = timed(() => proofKeys.map((key) => encodeProof(tree.getProof(key).proof)));
console.log(
  `proofs generated (inclusion, encoded): ${((proofsTotal / proving.ms) * 1000).toFixed(0)}/s ` +
    `(${cpuBusyShare(proving.ms, process.cpuUsage(proofStart))}), ` +
    `mean ${(proving.result.reduce((s, p) => s + p.length, 0) / proofsTotal).toFixed(0)} bytes`,
);
const absentProving = timed(() => absentKeys.map((key) => encodeProof(tree.getProof(key).proof)));
console.log(
  `proofs generated (non-inclusion, encoded): ${((proofsTotal / absentProving.ms) * 1000).toFixed(0)}/s`,
);

const root = tree.root();
const proofValues = proofIndexes.map((i) => valueBytesOf(i, versionOf.get(i) ?? 0));
for (const [label, hash] of [
  ["@noble/hashes (browser, SDK)", undefined],
  ["node:crypto", smtSha256],
] as const) {
  let failures = 0;
  const verifying = timed(() => {
    proofKeys.forEach((key, n) => {
      if (!verifyProof(root, key, proofValues[n]!, proving.result[n]!, hash)) failures++;
    });
  });
  if (failures > 0) throw new Error(`${failures} proofs failed to verify`);
  console.log(`proofs verified with ${label}: ${((proofsTotal / verifying.ms) * 1000).toFixed(0)}/s`);
}
console.log(`SHA-256 of 65 bytes (node:crypto) after: ${sha256PerSecond().toFixed(0)}/s`);
console.log(`load average after: ${loadAverage()}`);
console.log(`heap used: ${(process.memoryUsage().heapUsed / 2 ** 20).toFixed(0)} MiB`);
