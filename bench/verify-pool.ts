/**
 * Verification pool at light load: what one signature costs the whole process (main thread and
 * worker, by process.cpuUsage) and how long a caller waits for its verdict, when a few signatures
 * arrive at a time with idle gaps between them, with and without `inlineSignaturesMax` (small
 * batches verified on the main thread while the workers are idle). Prints figures; never passes or
 * fails.
 *
 *   node --import tsx bench/verify-pool.ts [--per-batch 1,8] [--gap-ms 10] [--seconds 5] [--rounds 2]
 *
 * The process is idle between batches, as a node is at light load, so each batch pays for waking
 * threads; the figures include the timer that paces the batches.
 */
import crypto from "node:crypto";
import os from "node:os";
import { parseArgs } from "node:util";
import { defaultVerifyPoolOptions, VerifyPool } from "../src/node/verify-pool.ts";
import { percentile } from "./common.ts";

const { values: args } = parseArgs({
  options: {
    "per-batch": { type: "string", default: "1,8" },
    "gap-ms": { type: "string", default: "10" },
    seconds: { type: "string", default: "5" },
    rounds: { type: "string", default: "2" },
  },
});
const perBatch = args["per-batch"].split(",").map(Number);
const gapMs = Number(args["gap-ms"]);
const seconds = Number(args.seconds);
const rounds = Number(args.rounds);

const { privateKey, publicKey } = crypto.generateKeyPairSync("ec", { namedCurve: "prime256v1" });
const spki = new Uint8Array(publicKey.export({ format: "der", type: "spki" }));
const message = crypto.randomBytes(200);
const signature = new Uint8Array(
  crypto.sign("sha256", message, { key: privateKey, dsaEncoding: "ieee-p1363" }),
);

async function run(inlineSignaturesMax: number, size: number): Promise<string> {
  const pool = new VerifyPool({ ...defaultVerifyPoolOptions, workers: 1, inlineSignaturesMax });
  try {
    await pool.verify(spki, message, signature); // the worker is up and has the key
    const cpu = process.cpuUsage();
    const start = performance.now();
    const waits: number[] = [];
    let signatures = 0;
    while (performance.now() - start < seconds * 1000) {
      const sent = performance.now();
      const verdicts = await Promise.all(
        Array.from({ length: size }, () => pool.verify(spki, message, signature)),
      );
      if (!verdicts.every(Boolean)) throw new Error("a good signature did not verify");
      waits.push(performance.now() - sent);
      signatures += size;
      await new Promise((resolve) => setTimeout(resolve, gapMs));
    }
    const used = process.cpuUsage(cpu);
    return (
      `${((used.user + used.system) / signatures).toFixed(1)} CPU µs per signature, ` +
      `verdicts after p50 ${percentile(
        waits.sort((a, b) => a - b),
        50,
      ).toFixed(3)} ms`
    );
  } finally {
    await pool.close();
  }
}

process.stdout.write(
  `verify pool at light load: batches every ${gapMs} ms for ${seconds} s (${os.cpus()[0]?.model.trim()})\n`,
);
for (let round = 1; round <= rounds; round++) {
  for (const size of perBatch) {
    for (const inline of [0, defaultVerifyPoolOptions.inlineSignaturesMax]) {
      const label = inline === 0 ? "all on the worker" : `inline up to ${inline}`;
      process.stdout.write(
        `round ${round}, ${size} per batch, ${label.padEnd(17)}: ${await run(inline, size)}\n`,
      );
    }
  }
}
