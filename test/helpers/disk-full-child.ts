/**
 * Child process for test/unit/fatal.test.ts: a chain store whose database may grow only to
 * `process.argv[3]` pages (SQLite's max_page_count, standing in for a full disk) commits blocks of
 * state writes until one fails, with the node's fatal handlers installed and the failure left
 * uncaught, as it would be in a running node. Prints each committed height on stderr.
 */
import pino from "pino";
import { utf8 } from "../../src/core/encoding.ts";
import { SparseMerkleTree, smtNodeKeyToHex } from "../../src/core/smt.ts";
import { installFatalHandlers } from "../../src/node/fatal.ts";
import { ChainStore } from "../../src/storage/chain-store.ts";
import { commitWrites } from "./chain-blocks.ts";

const [dir, pagesMax] = process.argv.slice(2);
installFatalHandlers(pino({ base: { node: "disk-full" } }));
const store = ChainStore.open(dir!, { treeFlushBlocks: 1 });
const tree = new SparseMerkleTree({ get: (k) => store.treeNode(smtNodeKeyToHex(k)) });
store.db.pragma(`max_page_count = ${Number(pagesMax)}`);

function commitNext(): void {
  const height = store.latestHeight() + 1;
  const writes = new Map<string, Uint8Array | null>();
  for (let i = 0; i < 50; i++) writes.set(`kv/k/${height}/${i}`, utf8("x".repeat(200)));
  commitWrites(store, tree, writes);
  process.stderr.write(`${height}\n`);
  setImmediate(commitNext);
}
setImmediate(commitNext);
