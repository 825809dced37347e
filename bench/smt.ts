/**
 * State-tree benchmark: builds a tree of N keys in a node store, then measures batch updates, proof
 * generation and proof verification. Prints figures; never passes or fails.
 *
 *   node --import tsx bench/smt.ts [--keys 1000000] [--batch 10000] [--proofs 20000] [--cache 131072]
 *     [--rounds 5] [--store memory|sqlite] [--count]
 *
 * --store memory (default): MemorySmtNodeStore, a Map in the JS heap; its copies of the writes and
 *   its ~360,000 arrays at a million keys add to the collector's work, which shows in every figure.
 * --store sqlite: a better-sqlite3 table laid out and tuned like the node's chain store (WAL,
 *   synchronous = FULL), in a temporary directory: what the ledger does.
 * --count: counts SHA-256 calls (wraps node:crypto's hash, a few ns each; off by default).
 */
import crypto from "node:crypto";
import fs from "node:fs";
import { syncBuiltinESMExports } from "node:module";
import os from "node:os";
import path from "node:path";
import { PerformanceObserver } from "node:perf_hooks";
import { parseArgs } from "node:util";
import Database from "better-sqlite3";

const { values } = parseArgs({
  options: {
    keys: { type: "string", default: "1000000" },
    batch: { type: "string", default: "10000" },
    proofs: { type: "string", default: "20000" },
    cache: { type: "string" },
    rounds: { type: "string", default: "5" },
    store: { type: "string", default: "memory" },
    count: { type: "boolean", default: false },
  },
});

let sha256Calls = 0;
if (values.count) {
  // Before the tree's module loads: it calls crypto.hash through the module namespace.
  const hash = crypto.hash;
  crypto.hash = ((...args: Parameters<typeof hash>) => {
    sha256Calls++;
    return hash(...args);
  }) as typeof hash;
  syncBuiltinESMExports();
}
const { MemorySmtNodeStore, SparseMerkleTree, smtDefaults, smtSha256, smtNodeKeyToHex } = await import(
  "../src/core/smt.ts"
);
type SmtChange = import("../src/core/smt.ts").SmtChange;
const { encodeProof, verifyProof } = await import("../src/core/smt-proof.ts");

const keysTotal = Number(values.keys);
const batchChanges = Number(values.batch);
const proofsTotal = Number(values.proofs);
const nodeCacheEntriesMax = Number(values.cache ?? smtDefaults.nodeCacheEntriesMax);
const updateRounds = Number(values.rounds);

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

function timed<T>(work: () => T): { result: T; ms: number; cpuMs: number } {
  const cpu = process.cpuUsage();
  const start = process.hrtime.bigint();
  const result = work();
  const ms = Number(process.hrtime.bigint() - start) / 1e6;
  const used = process.cpuUsage(cpu);
  return { result, ms, cpuMs: (used.user + used.system) / 1000 };
}

function cpuBusyShare(wallMs: number, usage: NodeJS.CpuUsage): string {
  const cpuMs = (usage.user + usage.system) / 1000;
  return `${((100 * cpuMs) / wallMs).toFixed(0)}% of one core`;
}

/** The tree's SHA-256 rate right now: the unit the other figures scale with under load. */
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

interface BenchStore {
  get(nodeKey: Uint8Array): Uint8Array | undefined;
  write(nodeWrites: ReadonlyMap<string, Uint8Array | null>): void;
  readonly size: number;
  close(): void;
}

function memoryStore(): BenchStore {
  const store = new MemorySmtNodeStore();
  return {
    get: (nodeKey) => store.get(nodeKey),
    write: (nodeWrites) => store.write(nodeWrites),
    get size() {
      return store.nodes.size;
    },
    close: () => {},
  };
}

/** The chain store's tree_nodes table and pragmas (src/storage/chain-store.ts), standalone. */
function sqliteStore(): BenchStore {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "citychain-bench-smt-"));
  const db = new Database(path.join(dir, "tree.db"));
  db.pragma("journal_mode = WAL");
  db.pragma("synchronous = FULL");
  db.exec("CREATE TABLE tree_nodes (node_key TEXT PRIMARY KEY, node BLOB NOT NULL) WITHOUT ROWID");
  db.pragma("cache_size = -65536");
  const getNode = db.prepare<[string], { node: Buffer }>("SELECT node FROM tree_nodes WHERE node_key = ?");
  const putNode = db.prepare<[string, Buffer]>(
    "INSERT OR REPLACE INTO tree_nodes (node_key, node) VALUES (?, ?)",
  );
  const deleteNode = db.prepare<[string]>("DELETE FROM tree_nodes WHERE node_key = ?");
  const count = db.prepare<[], { n: number }>("SELECT count(*) AS n FROM tree_nodes");
  const write = db.transaction((nodeWrites: ReadonlyMap<string, Uint8Array | null>) => {
    for (const [nodeKey, node] of nodeWrites) {
      if (node === null) deleteNode.run(nodeKey);
      else putNode.run(nodeKey, Buffer.from(node));
    }
  });
  return {
    get: (nodeKey) => getNode.get(smtNodeKeyToHex(nodeKey))?.node,
    write: (nodeWrites) => write(nodeWrites),
    get size() {
      return count.get()!.n;
    },
    close: () => {
      db.close();
      fs.rmSync(dir, { recursive: true, force: true });
    },
  };
}

const store = values.store === "sqlite" ? sqliteStore() : memoryStore();
let storeReads = 0;
const tree = new SparseMerkleTree(
  {
    get: (nodeKey) => {
      storeReads++;
      return store.get(nodeKey);
    },
  },
  { nodeCacheEntriesMax },
);
let gcMs = 0;
new PerformanceObserver((list) => {
  for (const entry of list.getEntries()) gcMs += entry.duration;
}).observe({ entryTypes: ["gc"] });
/** The observer hears of collections asynchronously: let it, between measured rounds. */
const gcEntriesDelivered = (): Promise<void> => new Promise((resolve) => setTimeout(resolve, 10));

console.log(`cpus: ${os.cpus().length} (${os.cpus()[0]?.model ?? "?"}), node ${process.version}`);
console.log(`load average before: ${loadAverage()}`);
console.log(`SHA-256 of 65 bytes (smtSha256) before: ${sha256PerSecond().toFixed(0)}/s`);
console.log(
  `keys: ${keysTotal}, batch: ${batchChanges} changes, node cache: ${nodeCacheEntriesMax} entries, ` +
    `store: ${values.store}${values.count ? ", counting SHA-256 calls" : ""}`,
);

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
    const done = start + changes.length;
    if (Math.floor((20 * done) / keysTotal) > Math.floor((20 * start) / keysTotal))
      process.stderr.write(`  built ${done} keys\n`);
  }
});
const buildCpu = process.cpuUsage(buildStart);
console.log(
  `build: ${(build.ms / 1000).toFixed(1)} s, ${store.size} stored nodes, ` +
    `${(build.ms / Math.ceil(keysTotal / batchChanges)).toFixed(0)} ms per insert batch ` +
    `(${cpuBusyShare(build.ms, buildCpu)})`,
);

/** The last version written per key index, to know the values the proofs must verify against. */
const versionOf = new Map<number, number>();
const rounds: {
  applyMs: number;
  applyCpuMs: number;
  commitMs: number;
  writes: number;
  reads: number;
  sha256: number;
  gcMs: number;
}[] = [];
for (let round = 1; round <= updateRounds; round++) {
  const changes: SmtChange[] = [];
  for (const i of pseudoRandomIndexes(batchChanges, keysTotal, round)) {
    changes.push({ key: keyOf(i), value: valueBytesOf(i, round) });
    versionOf.set(i, round);
  }
  await gcEntriesDelivered();
  const readsBefore = storeReads;
  const sha256Before = sha256Calls;
  const gcBefore = gcMs;
  const apply = timed(() => tree.applyBatch(changes));
  const reads = storeReads - readsBefore;
  const sha256 = sha256Calls - sha256Before;
  const commit = timed(() => {
    store.write(apply.result.nodeWrites);
    tree.commit(apply.result);
  });
  await gcEntriesDelivered();
  rounds.push({
    applyMs: apply.ms,
    applyCpuMs: apply.cpuMs,
    commitMs: commit.ms,
    writes: apply.result.nodeWrites.size,
    reads,
    sha256,
    gcMs: gcMs - gcBefore,
  });
}
const median = (xs: number[]): number => xs.slice().sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
const medianOf = (pick: (r: (typeof rounds)[number]) => number): number => median(rounds.map(pick));
const applyMedian = medianOf((r) => r.applyMs);
const mean = (pick: (r: (typeof rounds)[number]) => number): number =>
  rounds.reduce((sum, r) => sum + pick(r), 0) / rounds.length;
/** Small batches take well under a millisecond: print them in µs. */
const shown = (ms: number): string =>
  applyMedian < 10 ? `${(ms * 1000).toFixed(1)} µs` : `${ms.toFixed(0)} ms`;
console.log(
  `update of ${batchChanges} existing keys: applyBatch median ${shown(applyMedian)} ` +
    `(${((1000 * applyMedian) / batchChanges).toFixed(1)} µs per change` +
    (rounds.length <= 20 ? `; all: ${rounds.map((r) => r.applyMs.toFixed(0)).join(", ")} ms` : "") +
    `), mean ${shown(mean((r) => r.applyMs))}, CPU median ${shown(medianOf((r) => r.applyCpuMs))}, ` +
    `store write + commit median ${shown(medianOf((r) => r.commitMs))}`,
);
console.log(
  `per ${batchChanges}-change batch (medians): ${medianOf((r) => r.writes)} nodes written ` +
    `(${(medianOf((r) => r.writes) / batchChanges).toFixed(2)} per change), ${medianOf((r) => r.reads)} store reads` +
    (values.count ? `, ${medianOf((r) => r.sha256)} SHA-256 calls` : "") +
    `, ${medianOf((r) => r.gcMs).toFixed(0)} ms in garbage collection (apply, write and commit)`,
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
console.log(`SHA-256 of 65 bytes (smtSha256) after: ${sha256PerSecond().toFixed(0)}/s`);
console.log(`load average after: ${loadAverage()}`);
const memory = process.memoryUsage();
console.log(
  `cached nodes: ${tree.cachedNodeEntries}; heap used: ${(memory.heapUsed / 2 ** 20).toFixed(0)} MiB, ` +
    `array buffers: ${(memory.arrayBuffers / 2 ** 20).toFixed(0)} MiB (tree, store and garbage together)`,
);
store.close();
