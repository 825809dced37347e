import os from "node:os";
import { parseArgs } from "node:util";
import { utf8 } from "../src/core/encoding.ts";
import type { CitychainClient } from "../src/sdk/client.ts";
import { buildTx } from "../src/sdk/tx-builder.ts";
import { createProcessNetwork } from "../test/e2e/process-net.ts";
import { describeLoad, type Measured, measure, p256VerifyRate, percentile } from "./common.ts";
import { describeTimeline, readTimeline } from "./timeline.ts";

const { values: args } = parseArgs({
  options: {
    nodes: { type: "string", default: "1" },
    txs: { type: "string", default: "60000" },
    senders: { type: "string", default: "6" },
    batch: { type: "string", default: "500" },
    connections: { type: "string", default: "4" },
    "proof-reads": { type: "string", default: "20000" },
    "block-interval-ms": { type: "string", default: "25" },
    /** Validators' pause after a decision (p2p.timeoutCommitMs); default the node's own default. */
    "timeout-commit-ms": { type: "string" },
    /** Offered rate of the latency phase; default half the measured saturation rate. */
    rate: { type: "string" },
    /** The latency phase sends one request every this many ms (rate × tick / 1000 transactions each). */
    "tick-ms": { type: "string", default: "10" },
    /** Length of the latency phase; 0 skips it (e.g. to profile saturation alone). */
    "latency-seconds": { type: "string", default: "10" },
    /** Nodes log their consensus steps (log level debug) and the latency phase's heights are broken down. */
    timeline: { type: "boolean", default: false },
    /** The latency phase's p50 / p99 for each second of sending, to tell a transient from the steady state. */
    "latency-by-second": { type: "boolean", default: false },
  },
});
const nodeCount = Number(args.nodes);
const txCount = Number(args.txs);
const senderCount = Number(args.senders);
const batchSize = Number(args.batch);
const connections = Number(args.connections);
const proofReads = Number(args["proof-reads"]);

async function presign(
  clients: CitychainClient[],
  chainId: string,
  count: number,
  tag: string,
): Promise<Uint8Array[][]> {
  const perSender = Math.ceil(count / clients.length);
  return Promise.all(
    clients.map(async (client, s) => {
      const out: Uint8Array[] = [];
      for (let i = 0; i < perSender; i++) {
        const tx = await buildTx({
          chainId,
          type: "kv.put",
          payload: { key: `bench/${tag}/${s}/${i}`, value: utf8(`value-${i}`) },
          signers: [client.identity],
          nowMs: Date.now(),
          certById: true,
        });
        out.push(tx.bytes);
      }
      return out;
    }),
  );
}

/**
 * Connections are sometimes reset under heavy machine load (seen before and after the performance
 * work, with the node healthy); resubmitting is safe because submission is idempotent (a pending or
 * committed transaction answers with its status). Resets are counted and reported.
 */
let connectionResets = 0;
const resubmissionsMax = 3;

async function submitWithRetry(client: CitychainClient, txs: Uint8Array[]) {
  for (let attempt = 0; ; attempt++) {
    try {
      return await client.submitBatch(txs, { wait: true, waitMs: 60_000 });
    } catch (error) {
      if (!(error instanceof TypeError) || attempt >= resubmissionsMax) throw error;
      connectionResets++;
    }
  }
}

/**
 * Heights in (from, to] decided after round 0, read from each block's commit certificate: a round
 * lost to a late proposal (timeoutProposeMs) shows here. Blocks are read in parallel, a few at a time.
 */
async function heightsPastRoundZero(client: CitychainClient, from: number, to: number) {
  let late = 0;
  let next = from + 1;
  await Promise.all(
    Array.from({ length: 8 }, async () => {
      while (next <= to) {
        const height = next++;
        const block = await client.block(height);
        if ((block.commit?.round ?? 0) > 0) late++;
      }
    }),
  );
  return { late, heights: Math.max(0, to - from) };
}

/** Transaction copies the nodes sent each other and those a node already had, summed (`GET /v1/status`). */
/** The nodes' counters summed (docs/api.md), through one client on each node. */
async function nodeCounters(perNode: CitychainClient[]): Promise<Record<string, number>> {
  const sum: Record<string, number> = {};
  for (const client of perNode) {
    const status = (await client.status()) as { network?: { counters?: Record<string, number> } | null };
    for (const [key, value] of Object.entries(status.network?.counters ?? {}))
      sum[key] = (sum[key] ?? 0) + value;
  }
  return sum;
}

/** What transaction gossip and catch-up did between two `nodeCounters` readings, per committed tx. */
function describeGossip(
  before: Record<string, number>,
  after: Record<string, number>,
  committed: number,
): string {
  const per = (key: string) => (((after[key] ?? 0) - (before[key] ?? 0)) / committed).toFixed(2);
  const count = (key: string) => (after[key] ?? 0) - (before[key] ?? 0);
  return (
    `gossip: ${per("gossip.forwardedTxs")} copies sent per tx, ${per("gossip.duplicates")} received twice,` +
    ` ${per("gossip.relayed")} relayed; catch-ups ${count("sync.started")}`
  );
}

/** The nodes' CPU per transaction over a measured phase, all threads and the main threads alone. */
function cpuPerTx(m: Measured<unknown>, txs: number): string {
  const us = (cores: number) => ((cores * m.seconds * 1e6) / Math.max(1, txs)).toFixed(0);
  return `${us(m.nodeCores)} CPU µs per tx, main threads ${us(m.mainThreadCores)}`;
}

async function main() {
  process.stdout.write(
    `citychain benchmark: ${nodeCount} validator${nodeCount === 1 ? "" : "s"} on ${os.cpus().length} cores (${os.cpus()[0]?.model ?? "?"}); ` +
      `machine yardstick: ${p256VerifyRate()} P-256 verifications/s on one thread\n`,
  );
  // The nodes inherit the environment; at debug level they log each consensus step (bench/timeline.ts).
  if (args.timeline) process.env.CITYCHAIN_LOG_LEVEL = "debug";
  const net = await createProcessNetwork({
    nodes: nodeCount,
    blockIntervalMs: Number(args["block-interval-ms"]),
    ...(args["timeout-commit-ms"] === undefined
      ? {}
      : { timeoutCommitMs: Number(args["timeout-commit-ms"]) }),
  });
  try {
    const children = await Promise.all(Array.from({ length: nodeCount }, (_, i) => net.start(i)));
    const pid = children.map((c) => c.pid!);
    const depts = ["tax", "civil", "police", "social", "realestate", "land", "fund", "health", "market"];
    // Senders spread over the nodes' APIs, as departments would each use their own node.
    const clients = await Promise.all(
      Array.from({ length: senderCount }, (_, i) =>
        net.client(`${depts[i % depts.length]}.officer`, i % nodeCount),
      ),
    );
    if (nodeCount > 1) {
      const probe = await net.client("infocenter.auditor");
      const h0 = (await probe.status()).height;
      const idle = await measure(pid, () => new Promise((r) => setTimeout(r, 10_000)));
      const h1 = (await probe.status()).height;
      process.stdout.write(
        `idle: ${((h1 - h0) / idle.seconds).toFixed(2)} blocks/s over ${idle.seconds.toFixed(0)} s;` +
          ` machine busy ${(idle.machineBusy * 100).toFixed(0)}%, nodes ${idle.nodeCores.toFixed(2)} cores\n`,
      );
    }
    const chainId = await clients[0]!.chainId();
    // Each sender's first transaction carries its certificate; afterwards it is referred to by id.
    await Promise.all(clients.map((c, i) => c.send("kv.put", { key: `warmup/${i}`, value: utf8("w") })));

    process.stdout.write(`pre-signing ${txCount} transactions…\n`);
    const perSender = await presign(clients, chainId, txCount, "sat");
    const txSize = perSender[0]![0]!.length;

    // Saturation: every connection pushes batches as fast as the node takes them, then waits for all.
    const batches: Array<{ client: CitychainClient; txs: Uint8Array[] }> = [];
    perSender.forEach((list, s) => {
      for (let i = 0; i < list.length; i += batchSize)
        batches.push({ client: clients[s]!, txs: list.slice(i, i + batchSize) });
    });
    const roundProbe = clients[0]!;
    const heightBeforeSaturation = (await roundProbe.status()).height;
    // Every node's counters, through a sender on each (senders are spread over the nodes).
    const countGossip = nodeCount > 1 && senderCount >= nodeCount;
    const gossipBefore = countGossip ? await nodeCounters(clients.slice(0, nodeCount)) : null;
    const sat = await measure(pid, async () => {
      let next = 0;
      let refused = 0;
      await Promise.all(
        Array.from({ length: connections }, async () => {
          while (next < batches.length) {
            const b = batches[next++]!;
            const results = await submitWithRetry(b.client, b.txs);
            for (const r of results) if (r.status !== "committed" || r.code !== "OK") refused++;
          }
        }),
      );
      return refused;
    });
    const committed = perSender.reduce((a, l) => a + l.length, 0) - sat.result;
    const heightAfterSaturation = (await roundProbe.status()).height;
    const satRounds =
      nodeCount > 1
        ? await heightsPastRoundZero(roundProbe, heightBeforeSaturation, heightAfterSaturation)
        : null;
    const tps = committed / sat.seconds;
    const gossipAfter = countGossip ? await nodeCounters(clients.slice(0, nodeCount)) : null;
    process.stdout.write(
      `saturation: ${committed} txs (${txSize} bytes each) committed in ${sat.seconds.toFixed(2)} s = ${tps.toFixed(0)} tx/s` +
        ` (not committed: ${sat.result}); machine busy ${(sat.machineBusy * 100).toFixed(0)}%,` +
        ` nodes ${sat.nodeCores.toFixed(2)} cores (${cpuPerTx(sat, committed)}),` +
        ` load generator ${sat.loadgenCores.toFixed(2)} cores; connection resets retried: ${connectionResets}` +
        (satRounds === null
          ? ""
          : `; heights decided after round 0: ${satRounds.late} of ${satRounds.heights}`) +
        (gossipBefore !== null && gossipAfter !== null
          ? `; ${describeGossip(gossipBefore, gossipAfter, committed)}`
          : "") +
        "\n",
    );

    // Latency at half the saturated rate: open loop, one small batch every tick (10 ms), each tx timed
    // from its batch's send to the node's commit answer.
    const rate = args.rate === undefined ? Math.max(100, Math.floor(tps / 2)) : Number(args.rate);
    const seconds = Number(args["latency-seconds"]);
    const tickMs = Number(args["tick-ms"]);
    const perTick = Math.max(1, Math.round((rate * tickMs) / 1000));
    const latencyTxs = await presign(
      clients,
      chainId,
      Math.round((perTick * 1000 * seconds) / tickMs),
      "lat",
    );
    const flat = latencyTxs.flatMap((list, s) => list.map((bytes) => ({ client: clients[s]!, bytes })));
    /** Latencies by the second (from the phase's start) in which their batch was sent. */
    const bySecond: number[][] = [];
    if (seconds === 0) return;
    const heightBeforeLatency = (await roundProbe.status()).height;
    const latencyCountersBefore = countGossip ? await nodeCounters(clients.slice(0, nodeCount)) : null;
    const latencyStartMs = Date.now();
    const lat = await measure(pid, async () => {
      const inflight: Promise<void>[] = [];
      const start = performance.now();
      for (let tick = 0; tick * perTick < flat.length; tick++) {
        const due = start + tick * tickMs;
        const wait = due - performance.now();
        if (wait > 0) await new Promise((r) => setTimeout(r, wait));
        const slice = flat.slice(tick * perTick, (tick + 1) * perTick);
        const sent = performance.now();
        // Requests rotate over the clients (and so the nodes), whoever signed the transactions.
        inflight.push(
          clients[tick % clients.length]!.submitBatch(
            slice.map((x) => x.bytes),
            { wait: true },
          ).then((results) => {
            const ms = performance.now() - sent;
            const index = Math.floor((sent - start) / 1000);
            bySecond[index] ??= [];
            const second = bySecond[index];
            for (const r of results) if (r.status === "committed") second.push(ms);
          }),
        );
      }
      await Promise.all(inflight);
    });
    const latencies = bySecond.flat().sort((a, b) => a - b);
    const heightAfterLatency = (await roundProbe.status()).height;
    const latRounds =
      nodeCount > 1 ? await heightsPastRoundZero(roundProbe, heightBeforeLatency, heightAfterLatency) : null;
    const latencyCountersAfter = countGossip ? await nodeCounters(clients.slice(0, nodeCount)) : null;
    process.stdout.write(
      `latency at ${rate} tx/s offered (${perTick} txs per ${tickMs} ms, mixed senders): p50 ${percentile(latencies, 50).toFixed(1)} ms,` +
        ` p99 ${percentile(latencies, 99).toFixed(1)} ms over ${latencies.length} txs;` +
        ` ${describeLoad(lat)} (${cpuPerTx(lat, latencies.length)})` +
        `; ${heightAfterLatency - heightBeforeLatency} heights in ${lat.seconds.toFixed(1)} s` +
        (latRounds === null
          ? ""
          : `; heights decided after round 0: ${latRounds.late} of ${latRounds.heights}`) +
        (latencyCountersBefore !== null && latencyCountersAfter !== null
          ? `; ${describeGossip(latencyCountersBefore, latencyCountersAfter, Math.max(1, latencies.length))}`
          : "") +
        "\n",
    );
    if (args["latency-by-second"]) {
      const rows = bySecond.map((list, i) => {
        list.sort((a, b) => a - b);
        return `  second ${i}: p50 ${percentile(list, 50).toFixed(1)} ms, p99 ${percentile(list, 99).toFixed(1)} ms, max ${list[list.length - 1]!.toFixed(1)} ms (${list.length} txs)`;
      });
      process.stdout.write(`latency by second of sending:\n${rows.join("\n")}\n`);
    }
    if (args.timeline) {
      const heights = readTimeline(net.dir, latencyStartMs, Date.now());
      process.stdout.write(`latency phase timeline: ${describeTimeline(heights).join("\n")}\n`);
    }

    if (proofReads === 0) return;
    // Proof reads: signed GET /v1/state over several connections, each answer verified by the client?
    // No: verification would measure the client. The node's rate is what is asked; answers are checked for shape.
    const keys = Array.from({ length: 1000 }, (_, i) => `kv/tax/bench/sat/0/${i}`);
    const reads = await measure(pid, async () => {
      let next = 0;
      let bad = 0;
      await Promise.all(
        Array.from({ length: connections * 4 }, async (_, c) => {
          const client = clients[c % clients.length]!;
          while (next < proofReads) {
            const key = keys[next++ % keys.length]!;
            const r = await client.stateRaw(key);
            if (r.value === null || r.proof === undefined) bad++;
          }
        }),
      );
      return bad;
    });
    process.stdout.write(
      `state proofs: ${proofReads} signed reads with proof in ${reads.seconds.toFixed(2)} s = ${(proofReads / reads.seconds).toFixed(0)}/s` +
        ` (bad answers ${reads.result}); ${describeLoad(reads)}\n`,
    );
  } finally {
    process.stdout.write(
      `machine yardstick after: ${p256VerifyRate()} P-256 verifications/s on one thread\n`,
    );
    await net.close();
  }
}

await main();
