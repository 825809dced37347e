/**
 * Proposer-based timestamps with real processes and a real wrong clock: one of four validators runs
 * under libfaketime 30 s slow (its Date.now(), not its timers). The others' proposals are 30 s
 * ahead by its clock, so it prevotes nil for them; yet it keeps deciding the heights with the
 * others in its own consensus (a starved process may fetch the odd block by catch-up). Its own proposals are
 * dated just after their predecessor (block time must increase, and its clock is behind that): the
 * others accept them while that is within blockTimeBehindMaxMs of their clocks, so block time never
 * lags real time by more than that bound, and no block is dated by the slow clock.
 *
 * Needs libfaketime (Debian package `faketime`, which .ci/run installs); on a machine without it
 * the test is reported as skipped, with the reason.
 */
import assert from "node:assert/strict";
import fs from "node:fs";
import { after, before, test } from "node:test";
import { utf8 } from "../../src/core/encoding.ts";
import { blockTimeBehindMaxMs } from "../../src/node/consensus-app.ts";
import { createProcessNetwork, type ProcessNetwork, waitFor } from "./process-net.ts";

const libfaketime = [
  "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1",
  "/usr/lib/aarch64-linux-gnu/faketime/libfaketime.so.1",
].find((file) => fs.existsSync(file));
const missing = libfaketime === undefined ? "libfaketime is not installed (apt-get install faketime)" : false;
const skewS = 30;

let net: ProcessNetwork;

type Net = { counters: Record<string, number> };

before(async () => {
  if (libfaketime === undefined) return;
  net = await createProcessNetwork({ nodes: 4 });
  await Promise.all([0, 1, 2].map((i) => net.start(i)));
  await net.start(3, {
    env: { LD_PRELOAD: libfaketime, FAKETIME: `-${skewS}s`, DONT_FAKE_MONOTONIC: "1" },
  });
});

after(async () => {
  await net?.close();
});

test("a validator whose clock is 30 s slow prevotes nil for fresh proposals yet decides every height", {
  skip: missing,
}, async () => {
  assert.ok(skewS * 1000 > blockTimeBehindMaxMs, "the skew is beyond the timeliness bound");
  const startedMs = Date.now();
  const auditor = await net.client("infocenter.auditor", 3);
  const writer = await net.client("tax.officer", 0);
  // Started last, the slow validator may still be dialling (or replacing) a link: a proposal sent
  // then reaches it only by re-send, after the others decided. The test begins once its three
  // links are up.
  await waitFor("the slow validator to link to the other three", async () => {
    const network = (await auditor.status()).network as { peers: Array<{ role: string }> };
    return network.peers.filter((p) => p.role === "validator").length === 3;
  });
  // Blocks made before the test (while the nodes started) are not its subject.
  const first = Math.max((await auditor.status()).height, (await writer.status()).height);
  const atStart = ((await auditor.status()).network as Net).counters;
  // Enough heights that the slow validator is the round-0 proposer of some (proposers rotate).
  // Each write waits until the slow validator has its block: three validators are a quorum without
  // it, and a burst of heights while its process is starved (CI machines are shared) would leave it
  // two behind, where it rightly fetches blocks instead of deciding them.
  for (let i = 0; i < 12; i++) {
    const status = await writer.send("kv.put", { key: `skew/${i}`, value: utf8(`v${i}`) });
    assert.equal(status.status, "committed");
    await waitFor(`the slow validator to have block ${status.height}`, async () => {
      return (await auditor.status()).height >= status.height!;
    });
  }
  const last = (await writer.status()).height;
  await waitFor("the slow validator to reach the others' height", async () => {
    return (await auditor.status()).height >= last;
  });
  for (let h = first + 1; h <= last; h++) {
    const [mine, theirs] = await Promise.all([auditor.block(h), writer.block(h)]);
    assert.equal(mine.header.hash, theirs.header.hash, `block ${h} is the same on both`);
    // Proposed after the test began, dated at most the bound before that (not 30 s).
    assert.ok(
      mine.header.timeMs >= startedMs - blockTimeBehindMaxMs,
      `block ${h} is dated ${startedMs - mine.header.timeMs} ms before the test began`,
    );
  }
  const slow = (await auditor.status()).network as Net;
  // It refused the others' fresh proposals as untimely (three in four heights' round 0 are theirs).
  assert.ok(slow.counters["consensus.untimely"]! >= 3, JSON.stringify(slow.counters));
  // Decided in its own consensus: every height it did not decide it fetched (catch-up), and a
  // validator that is starved of CPU for more than the 250 ms grace while the other three decide
  // without it may fetch one. A clock that pushed it out of consensus would leave it fetching
  // most of them.
  const heights = last - first;
  const decided = slow.counters["consensus.decided"]! - atStart["consensus.decided"]!;
  const fetched = slow.counters["sync.applied"]! - atStart["sync.applied"]!;
  const counts = `decided ${decided} and fetched ${fetched} of ${heights} heights: ${JSON.stringify(slow.counters)}`;
  assert.ok(decided + fetched >= heights, counts);
  assert.ok(decided >= heights - 2, counts);
});
