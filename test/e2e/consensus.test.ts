/**
 * Four validators as real processes on loopback, BFT consensus over mutual TLS:
 *  - kill -9 one validator during a stream of transactions: the other three keep committing; the
 *    restarted one catches up and holds the same blocks and state root;
 *  - stop two of four: nothing commits and nothing forks; one comes back: commits resume;
 *  - a department edits its own node's database: `verify` names the key, a client reading from that
 *    node detects it through the proof, and the others' ledgers are untouched.
 */
import assert from "node:assert/strict";
import path from "node:path";
import { after, before, test } from "node:test";
import Database from "better-sqlite3";
import { utf8 } from "../../src/core/encoding.ts";
import { CitychainError } from "../../src/sdk/errors.ts";
import { VerificationError } from "../../src/sdk/verify.ts";
import { createProcessNetwork, type ProcessNetwork, waitFor } from "./process-net.ts";

let net: ProcessNetwork;

before(async () => {
  net = await createProcessNetwork({ nodes: 4 });
  await Promise.all([0, 1, 2, 3].map((i) => net.start(i)));
});

after(async () => {
  await net?.close();
});

async function height(i: number): Promise<number> {
  const client = await net.client("infocenter.auditor", i);
  return (await client.status()).height;
}

/** The same block (hash and state root) at `h` on every listed node. */
async function assertSameBlock(nodes: number[], h: number): Promise<void> {
  const blocks = await Promise.all(
    nodes.map(async (i) => (await net.client("infocenter.auditor", i)).block(h)),
  );
  for (const b of blocks.slice(1)) {
    assert.equal(b.header.hash, blocks[0]!.header.hash, `block ${h} differs between nodes`);
    assert.equal(b.header.stateRoot, blocks[0]!.header.stateRoot);
  }
}

test("kill -9 of one validator: the others keep committing, the restarted one catches up", async () => {
  const writers = await Promise.all([0, 1].map((i) => net.client("tax.officer", i)));
  let stop = false;
  const acked: string[] = [];
  const stream = Promise.all(
    writers.map(async (client, w) => {
      for (let i = 0; !stop; i++) {
        const status = await client.send("kv.put", { key: `stream/${w}/${i}`, value: utf8(`v${i}`) });
        acked.push(status.txId);
      }
    }),
  );
  await new Promise((r) => setTimeout(r, 1500));
  await net.kill9(3);
  const ackedAtKill = acked.length;
  await new Promise((r) => setTimeout(r, 4000));
  stop = true;
  await stream;
  assert.ok(
    acked.length >= ackedAtKill + 3,
    `three validators kept committing (${acked.length - ackedAtKill} after the kill)`,
  );

  await net.start(3);
  const target = await height(0);
  await waitFor("node3 to catch up", async () => (await height(3)) >= target);
  await assertSameBlock([0, 1, 2, 3], target);
  const reader = await net.client("police.auditor", 3);
  for (const txId of acked.slice(-20)) assert.equal((await reader.tx(txId)).status, "committed");
});

test("two of four stopped: no commits and no fork; one returns: commits resume", async () => {
  await net.stop(2);
  await net.stop(3);
  const client = await net.client("civil.officer", 0);
  const before = await height(0);
  const tx = await client.buildTx("kv.put", { key: "halted", value: utf8("x") });
  const pending = await client.submitBytes(tx.bytes, { wait: true, waitMs: 3000 });
  assert.equal(pending.status, "pending", "nothing commits with half the voting power");
  assert.ok((await height(0)) <= before + 1, "no height advances without > 2/3");
  assert.equal(await height(0), await height(1));

  await net.start(2);
  const status = await client.submitBytes(tx.bytes, { wait: true, waitMs: 30_000 });
  assert.equal(status.status, "committed");
  await assertSameBlock([0, 1, 2], status.height!);
  await net.start(3);
  await waitFor("node3 to catch up", async () => (await height(3)) >= status.height!);
  await assertSameBlock([0, 1, 2, 3], status.height!);
});

test("a node's database edited by hand: verify names it, clients detect it, the others are untouched", async () => {
  const writer = await net.client("tax.officer", 0);
  const written = await writer.send("kv.put", { key: "deed/42", value: utf8("owner: Li Wei") });
  await waitFor("node3 to have the record", async () => (await height(3)) >= written.height!);
  await net.stop(3);
  const node3 = net.layout.nodes[3]!.dir;
  const db = new Database(path.join(node3, "chain.db"));
  assert.equal(
    db
      .prepare("UPDATE state SET value = ? WHERE key = ?")
      .run(Buffer.from("owner: Mallory"), "kv/tax/deed/42").changes,
    1,
  );
  db.close();

  const verify = await net.runCli(["verify", "--data", node3, "--quiet"]);
  assert.equal(verify.code, 1);
  assert.equal(JSON.parse(verify.stdout).problem.key, "kv/tax/deed/42", verify.stdout);

  await net.start(3);
  const fromEdited = await net.client("police.auditor", 3);
  await assert.rejects(fromEdited.state("kv/tax/deed/42"), (e) => e instanceof VerificationError);
  for (const i of [0, 1, 2]) {
    const { value } = await (await net.client("police.auditor", i)).state("kv/tax/deed/42");
    assert.equal(new TextDecoder().decode(value!), "owner: Li Wei");
  }
  // The network goes on, and the edited node still agrees on every new block.
  const next = await writer.send("kv.put", { key: "deed/43", value: utf8("owner: Zhang Min") });
  await waitFor("node3 to follow", async () => (await height(3)) >= next.height!);
  await assertSameBlock([0, 1, 2, 3], next.height!);
  void CitychainError;
});
