/**
 * The verification worker pool: verdicts equal node:crypto's for good and bad signatures, the queue
 * is bounded, a dead worker is replaced without losing or guessing a verdict, and closing answers
 * everything still waiting. Consensus signatures that verified are remembered (bounded) so a
 * precommit is not verified again in the next block's last commit.
 */
import assert from "node:assert/strict";
import crypto from "node:crypto";
import { describe, it } from "node:test";
import { CodedError } from "../../src/core/errors.ts";
import { normalizeP256Signature } from "../../src/core/signature.ts";
import { NodeSignatureVerifier, rememberedSignaturesMax } from "../../src/node/crypto-node.ts";
import { defaultVerifyPoolOptions, VerifyPool } from "../../src/node/verify-pool.ts";

const p256Order = 0xffffffff00000000ffffffffffffffffbce6faada7179e84f3b9cac2fc632551n;

function keyPair() {
  const { privateKey, publicKey } = crypto.generateKeyPairSync("ec", { namedCurve: "prime256v1" });
  return { privateKey, spki: new Uint8Array(publicKey.export({ format: "der", type: "spki" })) };
}

const alice = keyPair();
const bob = keyPair();

function sign(privateKey: crypto.KeyObject, message: Uint8Array): Uint8Array {
  return normalizeP256Signature(
    new Uint8Array(crypto.sign("sha256", message, { key: privateKey, dsaEncoding: "ieee-p1363" })),
  );
}

interface Case {
  readonly key: Uint8Array;
  readonly message: Uint8Array;
  readonly signature: Uint8Array;
  readonly expected: boolean;
}

/** Good signatures mixed with every kind of bad one, in a fixed order. */
function cases(count: number): Case[] {
  const out: Case[] = [];
  for (let i = 0; i < count; i++) {
    const message = crypto.createHash("sha256").update(`message ${i}`).digest();
    const signer = i % 2 === 0 ? alice : bob;
    const signature = sign(signer.privateKey, message);
    switch (i % 5) {
      case 0:
      case 1:
        out.push({ key: signer.spki, message, signature, expected: true });
        break;
      case 2: {
        const tampered = Uint8Array.from(message);
        tampered[0] = tampered[0]! ^ 1;
        out.push({ key: signer.spki, message: tampered, signature, expected: false });
        break;
      }
      case 3:
        out.push({ key: (signer === alice ? bob : alice).spki, message, signature, expected: false });
        break;
      default: {
        const broken = Uint8Array.from(signature);
        broken[40] = broken[40]! ^ 0x80;
        out.push({ key: signer.spki, message, signature: broken, expected: false });
      }
    }
  }
  return out;
}

async function verifyAll(pool: VerifyPool, list: readonly Case[]): Promise<boolean[]> {
  return Promise.all(list.map((c) => pool.verify(c.key, c.message, c.signature)));
}

describe("verify pool", () => {
  it("gives node:crypto's verdict for good, tampered, wrong-key and broken signatures", async () => {
    const pool = new VerifyPool({ ...defaultVerifyPoolOptions, workers: 2, batchSignaturesMax: 16 });
    try {
      const list = cases(200);
      assert.deepEqual(
        await verifyAll(pool, list),
        list.map((c) => c.expected),
      );
      assert.equal(pool.queuedSignatures, 0);
    } finally {
      await pool.close();
    }
  });

  it("answers false for a key that is not a key and for a signature of the wrong length", async () => {
    const pool = new VerifyPool({ ...defaultVerifyPoolOptions, workers: 1 });
    try {
      const [good] = cases(1);
      assert.equal(await pool.verify(new Uint8Array([1, 2, 3]), good!.message, good!.signature), false);
      assert.equal(await pool.verify(good!.key, good!.message, good!.signature.subarray(0, 63)), false);
      assert.equal(await pool.verify(good!.key, good!.message, good!.signature), true);
    } finally {
      await pool.close();
    }
  });

  it("refuses with RATE_LIMITED beyond its queue bound, and takes work again once answered", async () => {
    const pool = new VerifyPool({
      ...defaultVerifyPoolOptions,
      workers: 1,
      queuedSignaturesMax: 8,
      batchSignaturesMax: 8,
    });
    try {
      const list = cases(9);
      const first = list.slice(0, 8).map((c) => pool.verify(c.key, c.message, c.signature));
      assert.equal(pool.queuedSignatures, 8);
      await assert.rejects(
        pool.verify(list[8]!.key, list[8]!.message, list[8]!.signature),
        (e) => e instanceof CodedError && e.code === "RATE_LIMITED",
      );
      assert.deepEqual(
        await Promise.all(first),
        list.slice(0, 8).map((c) => c.expected),
      );
      assert.equal(await pool.verify(list[8]!.key, list[8]!.message, list[8]!.signature), list[8]!.expected);
    } finally {
      await pool.close();
    }
  });

  it("replaces a worker that dies with batches in flight, and still gives every verdict", async () => {
    const pool = new VerifyPool({ ...defaultVerifyPoolOptions, workers: 1, batchSignaturesMax: 20 });
    try {
      const list = cases(60);
      // A full batch is sent at once, so the worker is killed with work in flight.
      const answers = verifyAll(pool, list);
      await pool.workersForTest()[0]!.terminate();
      assert.deepEqual(
        await answers,
        list.map((c) => c.expected),
      );
      assert.equal(pool.replacedWorkers, 1);
      assert.equal(pool.workersForTest().length, 1);
      const more = cases(10);
      assert.deepEqual(
        await verifyAll(pool, more),
        more.map((c) => c.expected),
      );
    } finally {
      await pool.close();
    }
  });

  it("verifies on the main thread a batch that outlived its crash retries", async () => {
    const pool = new VerifyPool({
      ...defaultVerifyPoolOptions,
      workers: 1,
      batchSignaturesMax: 10,
      crashRetriesMax: 0,
    });
    try {
      const list = cases(30);
      const answers = verifyAll(pool, list);
      await pool.workersForTest()[0]!.terminate();
      assert.deepEqual(
        await answers,
        list.map((c) => c.expected),
      );
    } finally {
      await pool.close();
    }
  });

  it("answers what is still waiting when it closes, and refuses new work after", async () => {
    const pool = new VerifyPool({ ...defaultVerifyPoolOptions, workers: 1, batchSignaturesMax: 512 });
    const list = cases(12);
    const answers = verifyAll(pool, list);
    await pool.close();
    assert.deepEqual(
      await answers,
      list.map((c) => c.expected),
    );
    await assert.rejects(
      pool.verify(list[0]!.key, list[0]!.message, list[0]!.signature),
      (e) => e instanceof CodedError && e.code === "NODE_STOPPING",
    );
  });

  it("verifies a few signatures on the main thread while the workers are idle, with the same verdicts", async () => {
    const pool = new VerifyPool({ ...defaultVerifyPoolOptions, workers: 1, inlineSignaturesMax: 5 });
    try {
      const few = cases(5);
      assert.deepEqual(
        await verifyAll(pool, few),
        few.map((c) => c.expected),
      );
      assert.equal(pool.verifiedInline, 5);
      assert.equal(await pool.verify(new Uint8Array([1, 2, 3]), few[0]!.message, few[0]!.signature), false);
      assert.equal(pool.verifiedInline, 6);
      // More than inlineSignaturesMax at once: a worker's job.
      const six = cases(6);
      assert.deepEqual(
        await verifyAll(pool, six),
        six.map((c) => c.expected),
      );
      assert.equal(pool.verifiedInline, 6);
      // A few that come while a worker has a batch in flight join the workers too.
      const busy = cases(400); // ~20 ms of work for the worker
      const big = Promise.all(busy.map((c) => pool.verify(c.key, c.message, c.signature)));
      await new Promise((resolve) => setImmediate(resolve)); // the big batch is sent
      const two = cases(2);
      assert.deepEqual(
        await verifyAll(pool, two),
        two.map((c) => c.expected),
      );
      assert.deepEqual(
        await big,
        busy.map((c) => c.expected),
      );
      assert.equal(pool.verifiedInline, 6, "nothing more was verified on the main thread");
      assert.equal(pool.queuedSignatures, 0);
    } finally {
      await pool.close();
    }
    const never = new VerifyPool({ ...defaultVerifyPoolOptions, workers: 1, inlineSignaturesMax: 0 });
    try {
      const [one] = cases(1);
      assert.equal(await never.verify(one!.key, one!.message, one!.signature), true);
      assert.equal(never.verifiedInline, 0);
    } finally {
      await never.close();
    }
  });

  it("behind the node's verifier, still refuses a high-S (malleated) signature", async () => {
    const verifier = new NodeSignatureVerifier(new VerifyPool({ ...defaultVerifyPoolOptions, workers: 1 }));
    try {
      const [good] = cases(1);
      const s = BigInt(`0x${Buffer.from(good!.signature.subarray(32)).toString("hex")}`);
      const high = Uint8Array.from(good!.signature);
      high.set(Buffer.from((p256Order - s).toString(16).padStart(64, "0"), "hex"), 32);
      assert.equal(await verifier.verifyAsync(good!.key, good!.message, good!.signature), true);
      assert.equal(await verifier.verifyAsync(good!.key, good!.message, high), false);
    } finally {
      await verifier.close();
    }
  });
});

describe("remembered consensus signatures", () => {
  /** A verifier whose real checks are counted. */
  function counted() {
    const verifier = new NodeSignatureVerifier();
    let checks = 0;
    const verify = verifier.verify.bind(verifier);
    verifier.verify = (key, message, signature) => {
      checks++;
      return verify(key, message, signature);
    };
    return { verifier, checks: () => checks };
  }

  it("checks a good signature once and answers the same inputs again from memory", () => {
    const { verifier, checks } = counted();
    const message = new TextEncoder().encode("precommit 7/0");
    const signature = sign(alice.privateKey, message);
    assert.equal(verifier.verifyRemembered(alice.spki, message, signature), true);
    assert.equal(verifier.verifyRemembered(alice.spki, message, signature), true);
    assert.equal(checks(), 1);
  });

  it("never remembers a failure, and a success matches only its own key, message and signature", () => {
    const { verifier, checks } = counted();
    const message = new TextEncoder().encode("precommit 8/0");
    const signature = sign(alice.privateKey, message);
    const other = new TextEncoder().encode("precommit 8/1");
    assert.equal(verifier.verifyRemembered(bob.spki, message, signature), false);
    assert.equal(verifier.verifyRemembered(bob.spki, message, signature), false);
    assert.equal(verifier.verifyRemembered(alice.spki, message, signature), true);
    assert.equal(verifier.verifyRemembered(alice.spki, other, signature), false);
    const tampered = Uint8Array.from(signature);
    tampered[10]! ^= 1;
    assert.equal(verifier.verifyRemembered(alice.spki, message, tampered), false);
    assert.equal(checks(), 5);
  });

  it("is bounded: the oldest success is forgotten and checked again", () => {
    const { verifier, checks } = counted();
    const messages = Array.from({ length: rememberedSignaturesMax + 1 }, (_, i) =>
      new TextEncoder().encode(`vote ${i}`),
    );
    const signatures = messages.map((m) => sign(alice.privateKey, m));
    for (let i = 0; i < messages.length; i++)
      verifier.verifyRemembered(alice.spki, messages[i]!, signatures[i]!);
    assert.equal(checks(), rememberedSignaturesMax + 1);
    assert.equal(verifier.verifyRemembered(alice.spki, messages.at(-1)!, signatures.at(-1)!), true);
    assert.equal(checks(), rememberedSignaturesMax + 1, "the newest is still remembered");
    assert.equal(verifier.verifyRemembered(alice.spki, messages[0]!, signatures[0]!), true);
    assert.equal(checks(), rememberedSignaturesMax + 2, "the oldest was forgotten");
  });
});
