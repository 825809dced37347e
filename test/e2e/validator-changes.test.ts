/**
 * The validator set changes while the chain runs (the seed's "ten departments at first, growing to
 * forty-nine without downtime"), with real processes:
 *  - a fifth department node follows the chain as a non-validator, is added by a transaction, and
 *    its votes count from the next height: with one of the original four killed, only its votes
 *    make a quorum (40 of 50 power), and the chain keeps committing;
 *  - the killed validator is removed by a transaction; the four left commit; restarted, the removed
 *    node catches up across both changes and signs nothing after its removal;
 *  - a client that trusts only genesis.json follows both changes and verifies a proof from a block
 *    the new set signed; `citychain verify` replays the whole chain across the changes.
 */
import assert from "node:assert/strict";
import { X509Certificate } from "node:crypto";
import fs from "node:fs";
import path from "node:path";
import { after, before, test } from "node:test";
import { createRootCa } from "../../src/ca/authority.ts";
import { utf8 } from "../../src/core/encoding.ts";
import { checkGenesis } from "../../src/core/genesis.ts";
import { readNodeConfig, writeNodeConfig } from "../../src/node/config.ts";
import { readGenesisFile } from "../../src/node/genesis-file.ts";
import { nodeX509 } from "../../src/node/x509-port.ts";
import { CitychainClient } from "../../src/sdk/client.ts";
import { loadIdentity, nodeFetch } from "../../src/sdk/node.ts";
import { createProcessNetwork, type ProcessNetwork, waitFor } from "./process-net.ts";

let net: ProcessNetwork;

before(async () => {
  net = await createProcessNetwork({ nodes: 4, observers: 1 });
  // node4 is a department node that is not in the validator set; unlike a configured observer it
  // may vote once the ledger makes it a validator.
  const dir = net.layout.nodes[4]!.dir;
  const config = readNodeConfig(dir, {});
  writeNodeConfig(dir, { ...config, p2p: { ...config.p2p!, observer: false } });
  await Promise.all([0, 1, 2, 3, 4].map((i) => net.start(i)));
});

after(async () => {
  await net?.close();
});

/** A write that must commit within the timeout, sent to node `via`. */
async function commitVia(via: number, key: string, timeoutMs = 30_000) {
  const client = await net.client("tax.officer", via);
  const sent = client.send("kv.put", { key, value: utf8(key) });
  const timeout = new Promise<never>((_, reject) =>
    setTimeout(() => reject(new Error(`${key} did not commit within ${timeoutMs} ms`)), timeoutMs),
  );
  return Promise.race([sent, timeout]);
}

/** A node's height, and how many heights it decided in consensus or fetched, since it started. */
async function heightsFollowed(client: CitychainClient): Promise<{ height: number; count: number }> {
  const status = await client.status();
  const counters = (status.network as { counters: Record<string, number> }).counters;
  return { height: status.height, count: counters["consensus.decided"]! + counters["sync.applied"]! };
}

test("a validator joins and another leaves while the chain runs", async () => {
  await commitVia(0, "before/0");
  const newcomer = await net.client("infocenter.auditor", 4);
  const newcomerId = (await newcomer.status()).validatorId;
  const followed = await heightsFollowed(newcomer);
  const firstId = String((await (await net.client("infocenter.auditor", 0)).status()).validatorId);

  const admin = await net.client("infocenter.admin", 1);
  const cli = (args: string[]) => net.runCli([...args, "--network", net.layout.dir, "--node", "node1"]);
  const nodeCert = path.join(net.layout.nodes[4]!.dir, "identity", "node-cert.pem");
  // The operator alone holds 10 of 40: departments with more than two thirds must approve.
  const alone = await cli(["validators", "add", "--node-cert", nodeCert, "--power", "10"]);
  assert.notEqual(alone.code, 0);
  assert.match(alone.stderr, /FORBIDDEN/);
  assert.match(alone.stderr, /more than 2\/3/);
  const add = await cli([
    "validators",
    "add",
    "--node-cert",
    nodeCert,
    "--power",
    "10",
    "--co-signers",
    "civil.admin,police.admin",
  ]);
  assert.equal(add.code, 0, add.stderr);
  const added = JSON.parse(add.stdout) as { height: number; code: string; takesEffectAt: number };
  assert.equal(added.code, "OK");
  const joinedAt = added.takesEffectAt;
  assert.equal(joinedAt, added.height + 1);
  const answer = await admin.validatorChanges(0);
  assert.equal(answer.next.validators.length, 5);

  // From the next height on, node4's precommits are part of the commits.
  let signedByNewcomer = 0;
  for (let i = 0; i < 6; i++) {
    const status = await commitVia(1, `joined/${i}`);
    const block = await admin.block(status.height!);
    if (block.commit!.signatures.some((s) => s.validatorId === newcomerId)) signedByNewcomer++;
  }
  assert.ok(signedByNewcomer > 0, "the new validator's signatures appear in commits");
  // Joining restarted node4's consensus driver; its counters went on from the old driver's.
  const joined = await heightsFollowed(newcomer);
  assert.ok(
    joined.count - followed.count >= joined.height - followed.height,
    `node4 decided or fetched ${joined.count - followed.count} of the ${joined.height - followed.height} heights`,
  );

  // One of the original four goes down: 30 of 50 without node4 is no quorum, 40 with it is.
  await net.kill9(0);
  await commitVia(2, "after-kill/0");
  await commitVia(4, "after-kill/1");

  // The removal goes round the departments as a file: signed by the operator, co-signed by two
  // more admins (now 30 of 50 with the operator's: not yet enough, then 40 of 50), then sent.
  const file = path.join(net.layout.dir, "remove-node0.tx");
  const signed = await cli(["validators", "remove", "--id", firstId, "--out", file]);
  assert.equal(signed.code, 0, signed.stderr);
  for (const as of ["civil.admin", "police.admin"]) {
    const cosigned = await cli(["tx", "cosign", file, "--as", as]);
    assert.equal(cosigned.code, 0, cosigned.stderr);
  }
  const early = await cli(["tx", "send", file]);
  assert.notEqual(early.code, 0, "30 of 50 is not more than two thirds");
  assert.match(early.stdout, /FORBIDDEN/);
  // The refused transaction's id is spent: the file is signed again with a fresh body.
  const again = await cli(["validators", "remove", "--id", firstId, "--out", file]);
  assert.equal(again.code, 0, again.stderr);
  for (const as of ["civil.admin", "police.admin", "social.admin"]) {
    assert.equal((await cli(["tx", "cosign", file, "--as", as])).code, 0);
  }
  const sent = await cli(["tx", "send", file]);
  assert.equal(sent.code, 0, sent.stderr + sent.stdout);
  const removed = JSON.parse(sent.stdout) as { height: number };
  const leftAt = removed.height + 1;
  assert.equal((await admin.validatorChanges(0)).next.validators.length, 4);
  const last = await commitVia(3, "after-removal");
  assert.ok(last.height! >= leftAt);

  // A client trusting only genesis.json verifies a proof signed by the new set, through node2.
  const genesis = checkGenesis(
    readGenesisFile(path.join(net.layout.nodes[2]!.dir, "genesis.json")),
    nodeX509,
  );
  const member = net.layout.members.find((m) => m.enrollmentId === "police.auditor")!;
  const anchored = new CitychainClient({
    url: net.url(2),
    identity: await loadIdentity(member.certPath, member.keyPath, { passphrase: net.passphrase }),
    fetch: nodeFetch(fs.readFileSync(net.layout.caCertPath, "utf8")),
    trustedValidators: genesis,
  });
  const read = await anchored.state("kv/tax/after-removal");
  assert.deepEqual(read.value, utf8("after-removal"));
  assert.ok(read.height >= leftAt);

  // The removed node comes back: it catches up across both changes and no longer votes.
  await net.start(0);
  const target = (await admin.status()).height;
  const node0 = await net.client("infocenter.auditor", 0);
  await waitFor("node0 to catch up", async () => (await node0.status()).height >= target);
  assert.equal((await node0.block(target)).header.hash, (await admin.block(target)).header.hash);
  const more = await commitVia(1, "with-node0-back");
  await waitFor("node0 to follow", async () => (await node0.status()).height >= more.height!);
  for (let h = leftAt; h <= more.height!; h++) {
    const block = await admin.block(h);
    assert.ok(!block.commit!.signatures.some((s) => s.validatorId === firstId), `node0 signed block ${h}`);
  }
  assert.ok(joinedAt < leftAt);

  const list = await cli(["validators", "list", "--as", "police.auditor"]);
  assert.equal(list.code, 0, list.stderr);
  const listed = JSON.parse(list.stdout) as {
    verified: boolean;
    changes: { height: number }[];
    validators: unknown[];
  };
  assert.equal(listed.verified, true);
  assert.deepEqual(
    listed.changes.map((c) => c.height),
    [joinedAt, leftAt],
  );
  assert.equal(listed.validators.length, 4);

  // A second trusted root needs the same approvals: refused for the operator alone (it holds no
  // validator power any more), accepted with civil, police and social (30 of 40).
  const root = await createRootCa({
    dir: path.join(net.layout.dir, "second-ca"),
    validityDays: 365,
    passphrase: net.passphrase,
    dept: "infocenter",
    now: Date.now,
  });
  const rootDer = new Uint8Array(new X509Certificate(root.certPem).raw);
  const rootPayload = JSON.stringify({ certificate: { $bytes: Buffer.from(rootDer).toString("base64") } });
  const rootFile = path.join(net.layout.dir, "add-root.tx");
  const submitRoot = ["tx", "submit", "--type", "config.root.add", "--payload", rootPayload];
  const lone = await cli(submitRoot);
  assert.notEqual(lone.code, 0);
  assert.match(lone.stdout, /adding a trusted root needs admins/);
  assert.equal((await cli([...submitRoot, "--out", rootFile])).code, 0);
  for (const as of ["civil.admin", "police.admin", "social.admin"]) {
    assert.equal((await cli(["tx", "cosign", rootFile, "--as", as])).code, 0);
  }
  const rootSent = await cli(["tx", "send", rootFile]);
  assert.equal(rootSent.code, 0, rootSent.stdout + rootSent.stderr);

  // The whole chain replays across both changes.
  await net.stop(1);
  const audit = await net.runCli(["verify", "--data", net.layout.nodes[1]!.dir]);
  assert.equal(audit.code, 0, audit.stderr + audit.stdout);
});
