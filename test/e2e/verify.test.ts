/**
 * `citychain verify` on a real node's data folder: passes on an intact ledger, and names the first
 * height or key after each kind of hand edit (a state value, a transaction inside a block, a stored
 * commit signature, the state tree's nodes or the record of what changed since they were written). Each edit is made on a copy of the
 * folder, with the node stopped.
 */
import assert from "node:assert/strict";
import fs from "node:fs";
import path from "node:path";
import { after, before, test } from "node:test";
import Database from "better-sqlite3";
import { decodeBlock, encodeBlock, makeBlock } from "../../src/core/block.ts";
import { utf8 } from "../../src/core/encoding.ts";
import { createProcessNetwork, type ProcessNetwork } from "./process-net.ts";

let net: ProcessNetwork;
let dataDir: string;
let editedHeight = 0;

before(async () => {
  net = await createProcessNetwork();
  await net.start();
  const client = await net.client("tax.officer");
  for (let i = 0; i < 5; i++) {
    const status = await client.send("kv.put", { key: `doc/${i}`, value: utf8(`value ${i}`) });
    if (i === 2) editedHeight = status.height!;
  }
  await net.stop();
  dataDir = net.layout.nodes[0]!.dir;
});

after(async () => {
  await net?.close();
});

function copyOf(dir: string, name: string): string {
  const out = path.join(path.dirname(dir), name);
  fs.cpSync(dir, out, { recursive: true });
  return out;
}

async function verify(dir: string) {
  const result = await net.runCli(["verify", "--data", dir, "--quiet"]);
  return { ...result, report: JSON.parse(result.stdout) };
}

test("an intact ledger verifies", async () => {
  const { code, report } = await verify(dataDir);
  assert.equal(code, 0);
  assert.equal(report.ok, true);
  assert.ok(report.height >= 5);
  assert.equal(report.txs, 5);
});

test("a state value edited by hand is named by key", async () => {
  const dir = copyOf(dataDir, "edited-state");
  const db = new Database(path.join(dir, "chain.db"));
  const changed = db
    .prepare("UPDATE state SET value = ? WHERE key = ?")
    .run(Buffer.from("forged"), "kv/tax/doc/2");
  db.close();
  assert.equal(changed.changes, 1);
  const { code, report, stderr } = await verify(dir);
  assert.equal(code, 1);
  assert.equal(report.ok, false);
  assert.equal(report.problem.key, "kv/tax/doc/2");
  assert.equal(report.problem.height, editedHeight);
  assert.match(stderr, /LEDGER_ALTERED: .*key kv\/tax\/doc\/2/);
});

test("a transaction replaced inside a stored block is named by height", async () => {
  const dir = copyOf(dataDir, "edited-block");
  const db = new Database(path.join(dir, "chain.db"));
  const row = db.prepare("SELECT block FROM blocks WHERE height = ?").get(editedHeight) as { block: Buffer };
  const block = decodeBlock(row.block);
  const other = db.prepare("SELECT block FROM blocks WHERE height = ?").get(editedHeight + 1) as {
    block: Buffer;
  };
  // Swap in the next block's transaction, keeping the header: the stored hash still matches the header.
  const forged = makeBlock(block.header, decodeBlock(other.block).txs, block.lastCommit);
  db.prepare("UPDATE blocks SET block = ? WHERE height = ?").run(
    Buffer.from(encodeBlock(forged)),
    editedHeight,
  );
  db.close();
  const { code, report } = await verify(dir);
  assert.equal(code, 1);
  assert.equal(report.problem.height, editedHeight);
  assert.match(report.problem.what, /txRoot/);
});

test("a forged commit signature is named by height", async () => {
  const dir = copyOf(dataDir, "edited-commit");
  const db = new Database(path.join(dir, "chain.db"));
  const row = db.prepare("SELECT commit_bytes FROM commits WHERE height = ?").get(3) as {
    commit_bytes: Buffer;
  };
  const bytes = Buffer.from(row.commit_bytes);
  bytes[bytes.length - 5]! ^= 0x01;
  db.prepare("UPDATE commits SET commit_bytes = ? WHERE height = ?").run(bytes, 3);
  db.close();
  const { code, report } = await verify(dir);
  assert.equal(code, 1);
  assert.equal(report.problem.height, 3);
});

test("the node refuses to start on a store whose tree no longer matches its last block", async () => {
  const dir = copyOf(dataDir, "edited-tree");
  const db = new Database(path.join(dir, "chain.db"));
  db.prepare(
    "DELETE FROM tree_nodes WHERE node_key = (SELECT node_key FROM tree_nodes ORDER BY length(node_key) LIMIT 1)",
  ).run();
  db.close();
  const start = await net.runCli([
    "node",
    "start",
    "--dir",
    dir,
    "--passphrase-file",
    net.layout.passphrasePath,
  ]);
  assert.equal(start.code, 1);
  assert.match(
    start.stderr,
    /STORAGE_CORRUPT: the stored state tree's root differs from block \d+'s state root/,
  );
  const { code, report } = await verify(dir);
  assert.equal(code, 1);
  assert.match(report.problem.what, /stored state tree nodes were altered/);
});

test("after kill -9 between tree flushes the store verifies and restarts; a changed row's height edited, both refuse it", async () => {
  // The clean stop above flushed the tree; later blocks' tree nodes stay in memory until the next
  // flush, which falls on one height in 32 (the node's phase): should the last block be one, go on.
  let killed = "";
  let treeHeight = 0;
  let changedKey = "";
  for (let attempt = 0; changedKey === "" && attempt < 3; attempt++) {
    await net.start();
    const client = await net.client("tax.officer");
    for (let i = 0; i < 3; i++)
      await client.send("kv.put", { key: `later/${attempt}/${i}`, value: utf8(`later ${attempt} ${i}`) });
    await net.kill9();
    killed = copyOf(dataDir, `killed-${attempt}`);
    const db = new Database(path.join(killed, "chain.db"));
    treeHeight = Number(
      (db.prepare("SELECT value FROM meta WHERE key = 'treeHeight'").get() as { value: Buffer }).value,
    );
    const row = db
      .prepare("SELECT key FROM state WHERE height > ? AND key LIKE 'kv/tax/later/%' LIMIT 1")
      .get(treeHeight) as { key: string } | undefined;
    db.close();
    changedKey = row?.key ?? "";
  }
  assert.notEqual(changedKey, "", "a state row written after the tree's last flush");
  const intact = await verify(killed);
  assert.equal(intact.code, 0, intact.stderr);

  // Lowered to the tree's height, the row no longer counts as changed since the flush.
  const edited = copyOf(killed, "edited-height");
  const edit = new Database(path.join(edited, "chain.db"));
  const lowered = edit.prepare("UPDATE state SET height = ? WHERE key = ?").run(treeHeight, changedKey);
  edit.close();
  assert.equal(lowered.changes, 1);
  const { code, report } = await verify(edited);
  assert.equal(code, 1);
  assert.match(report.problem.what, /state changes since the stored tree's height do not give/);
  const start = await net.runCli([
    "node",
    "start",
    "--dir",
    edited,
    "--passphrase-file",
    net.layout.passphrasePath,
  ]);
  assert.equal(start.code, 1);
  assert.match(start.stderr, /STORAGE_CORRUPT: the state changes after block \d+ .*do not give block \d+'s/);

  // The killed node itself replays the changes on start and serves the later values.
  await net.start();
  const reader = await net.client("police.auditor");
  const { value } = await reader.state(changedKey);
  assert.match(new TextDecoder().decode(value!), /^later \d \d$/);
  await net.stop();
  const replayed = await verify(dataDir);
  assert.equal(replayed.code, 0, replayed.stderr);
});
