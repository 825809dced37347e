/**
 * Chain-store benchmark: what a block's commit costs per transaction, and how much of it each
 * table's writes are. Prints figures; never passes or fails.
 *
 *   node --import tsx bench/storage.ts [--preload 60000] [--block-sizes 100,2000] [--txs 40000]
 *
 * Each run opens a fresh ChainStore (the node's own code and pragmas) in a temporary directory,
 * commits `--preload` transactions in blocks of 2,000, then times `--txs` more in blocks of each
 * size: the block, its commit certificate, one transaction row and one state write per transaction
 * (a `kv.put` of a new key, as bench/node.ts sends) and the real state tree's node writes for them.
 * The variants leave one kind of write out of the timed blocks ("no tree" keeps only the root
 * node), so the difference to "all" is what that kind costs. The baseline ("nothing") still
 * computes the tree and writes the block: it is the work a commit does besides the tables. "tree
 * each block" is "all" with the store writing the tree's nodes with every block (treeFlushBlocks
 * 1) instead of every 32 blocks with a journal in between, as stores did before 2026-12-07.
 *
 * Reported per transaction: wall time, the process's CPU (user and system) and the bytes it wrote
 * through write(2) (/proc/self/io wchar: WAL frames and checkpoints), which shows the page-sized
 * write amplification of random keys; per block the median and longest commit (a flush block is
 * the longest).
 */
import crypto from "node:crypto";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { parseArgs } from "node:util";
import { utf8 } from "../src/core/encoding.ts";
import { rootNodeKeyHex, SparseMerkleTree, smtNodeKeyToHex } from "../src/core/smt.ts";
import { ChainStore, type ChainStoreOptions, type StoredTx } from "../src/storage/chain-store.ts";

const { values: args } = parseArgs({
  options: {
    preload: { type: "string", default: "60000" },
    "block-sizes": { type: "string", default: "100,2000" },
    txs: { type: "string", default: "40000" },
  },
});
const preload = Number(args.preload);
const blockSizes = args["block-sizes"].split(",").map(Number);
const timedTxs = Number(args.txs);

type Leave = "txs" | "state" | "tree";
const variants: ReadonlyArray<{ name: string; leave: ReadonlySet<Leave>; store?: ChainStoreOptions }> = [
  { name: "all", leave: new Set() },
  { name: "tree each block", leave: new Set(), store: { treeFlushBlocks: 1 } },
  { name: "no tree nodes", leave: new Set(["tree"]) },
  { name: "no tx rows", leave: new Set(["txs"]) },
  { name: "no state rows", leave: new Set(["state"]) },
  { name: "nothing", leave: new Set(["tree", "txs", "state"]) },
];

const value = utf8("value-12345");

function writtenBytes(): number {
  const line = fs.readFileSync("/proc/self/io", "utf8").match(/^wchar: (\d+)$/m);
  return line === null ? 0 : Number(line[1]);
}

function run(blockSize: number, leave: ReadonlySet<Leave>, options: ChainStoreOptions = {}): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "citychain-bench-storage-"));
  const store = ChainStore.open(dir, options);
  try {
    const tree = new SparseMerkleTree({ get: (nodeKey) => store.treeNode(smtNodeKeyToHex(nodeKey)) });
    let height = 0;
    let keyNumber = 0;
    const commit = (size: number, timed: boolean) => {
      const writes = new Map<string, Uint8Array | null>();
      const txs: Array<Omit<StoredTx, "height">> = [];
      for (let i = 0; i < size; i++) {
        // Keys as the node bench's senders write them: six senders, each counting up.
        writes.set(`kv/tax/bench/sat/${keyNumber % 6}/${Math.floor(keyNumber / 6)}`, value);
        keyNumber++;
        const id = crypto.randomBytes(32).toString("hex");
        txs.push({ id, index: i, code: "OK", message: "", data: new Uint8Array(0) });
      }
      const batch = tree.applyBatch([...writes].map(([key, v]) => ({ key: utf8(key), value: v })));
      const leaving = (kind: Leave) => timed && leave.has(kind);
      store.commitBlock({
        height,
        hash: crypto.randomBytes(32),
        timeMs: height,
        blockBytes: crypto.randomBytes(230 * size + 300),
        txCount: size,
        commitBytes: crypto.randomBytes(400),
        txs: leaving("txs") ? [] : txs,
        stateWrites: leaving("state") ? new Map() : writes,
        // Without tree nodes but the root, which a tree with any key always stores.
        treeWrites: leaving("tree")
          ? new Map([...batch.nodeWrites].filter(([key]) => key === rootNodeKeyHex))
          : batch.nodeWrites,
        stateRoot: batch.root,
      });
      tree.commit(batch);
      height++;
    };
    for (let done = 0; done < preload; done += 2000) commit(Math.min(2000, preload - done), false);
    const blocks = Math.max(1, Math.round(timedTxs / blockSize));
    const cpu = process.cpuUsage();
    const written = writtenBytes();
    const start = performance.now();
    const blockMs: number[] = [];
    for (let b = 0; b < blocks; b++) {
      const t = performance.now();
      commit(blockSize, true);
      blockMs.push(performance.now() - t);
    }
    const wallMs = performance.now() - start;
    blockMs.sort((a, b) => a - b);
    const used = process.cpuUsage(cpu);
    const bytes = writtenBytes() - written;
    const n = blocks * blockSize;
    return (
      `wall ${((wallMs * 1000) / n).toFixed(1)} µs, CPU user ${(used.user / n).toFixed(1)} + system ` +
      `${(used.system / n).toFixed(1)} µs, written ${(bytes / n / 1024).toFixed(1)} KiB per tx ` +
      `(per block: mean ${(wallMs / blocks).toFixed(2)}, median ${blockMs[blocks >> 1]!.toFixed(2)},` +
      ` longest ${blockMs[blocks - 1]!.toFixed(2)} ms)`
    );
  } finally {
    store.close();
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

process.stdout.write(
  `chain store: commit cost per transaction after ${preload} preloaded, ${timedTxs} timed per block size (${os.cpus()[0]?.model.trim()})\n`,
);
// A first run, discarded, compiles the hot paths: otherwise the first variant pays for it (in a
// run with a short preload its figures came out ~25 % worse than the same variant run later).
run(blockSizes[0]!, new Set());
for (const size of blockSizes) {
  for (const variant of variants) {
    process.stdout.write(
      `blocks of ${size}, ${variant.name.padEnd(15)}: ${run(size, variant.leave, variant.store)}\n`,
    );
  }
}
