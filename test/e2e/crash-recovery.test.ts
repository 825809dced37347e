/**
 * Kill -9 the node while clients stream transactions, restart it, and check that every transaction
 * the node acknowledged as committed is still there with its state — three times, at different
 * moments — and that `citychain verify` still passes on the data folder afterwards.
 */
import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import { createProcessNetwork, type ProcessNetwork } from "./process-net.ts";

let net: ProcessNetwork;

before(async () => {
  net = await createProcessNetwork({ blockIntervalMs: 5 });
});

after(async () => {
  await net?.close();
});

interface Ack {
  txId: string;
  key: string;
  value: string;
  height: number;
}

async function streamUntilKilled(
  round: number,
  killAfterMs: number,
): Promise<{ acked: Ack[]; sent: number }> {
  const acked: Ack[] = [];
  let sent = 0;
  let killed = false;
  const workers = Array.from({ length: 8 }, async (_, w) => {
    const client = await net.client(w % 2 === 0 ? "tax.officer" : "civil.officer");
    for (let i = 0; !killed; i++) {
      const key = `crash/${round}/${w}/${i}`;
      const value = `v${round}.${w}.${i}`;
      try {
        sent++;
        const status = await client.send(
          "kv.put",
          { key, value: new TextEncoder().encode(value) },
          { wait: true },
        );
        if (status.status === "committed")
          acked.push({ txId: status.txId, key, value, height: status.height! });
      } catch (error) {
        // Once the kill is under way requests fail; that is the point. Before it, any error is real.
        if (killed) return;
        throw error;
      }
    }
  });
  const outcome = Promise.allSettled(workers);
  await new Promise((r) => setTimeout(r, killAfterMs));
  killed = true;
  await net.kill9();
  for (const result of await outcome) {
    if (result.status === "rejected") throw result.reason;
  }
  return { acked, sent };
}

test("every acknowledged transaction survives kill -9 during a stream of commits", async () => {
  await net.start();
  let totalAcked = 0;
  for (const [round, killAfterMs] of [
    [0, 1500],
    [1, 2300],
    [2, 3100],
  ] as const) {
    const { acked } = await streamUntilKilled(round, killAfterMs);
    assert.ok(
      acked.length > 20,
      `round ${round}: the stream committed ${acked.length} transactions before the kill`,
    );
    totalAcked += acked.length;
    await net.start();
    const reader = await net.client("police.auditor");
    for (const ack of acked) {
      const status = await reader.tx(ack.txId);
      assert.equal(status.status, "committed", `tx ${ack.txId} lost after kill -9`);
      assert.equal(status.height, ack.height);
      const owner =
        ack.key.split("/")[2]! === "0" || Number(ack.key.split("/")[2]) % 2 === 0 ? "tax" : "civil";
      const { value } = await reader.state(`kv/${owner}/${ack.key}`);
      assert.equal(new TextDecoder().decode(value!), ack.value);
    }
  }
  assert.ok(totalAcked > 60);
  await net.stop();
  const verify = await net.runCli(["verify", "--data", net.layout.nodes[0]!.dir, "--quiet"]);
  assert.equal(verify.code, 0, verify.stderr);
  assert.equal(JSON.parse(verify.stdout).ok, true);
});
