/**
 * P-256 signature verification on a pool of worker threads, in batches.
 *
 * Why: the node's main thread runs HTTP, decoding, execution and storage, and is the bottleneck.
 * node:crypto's callback form puts each verification on libuv's pool, but costs ~9 µs of main-thread
 * dispatch per signature and wakes four pool threads that then compete with the main thread for the
 * two cores. Here the main thread packs a whole batch into one transferable buffer (one postMessage
 * per batch, ~1 µs per signature), and the pool has as many workers as the cores left beside the
 * main thread, so verification uses the spare core without preempting the main one.
 *
 * A few signatures gathered while every worker is idle are verified on the main thread instead
 * (`inlineSignaturesMax`): at light load that answers sooner than the round trip, and costs less
 * CPU than waking the worker.
 *
 * Limits: at most `queuedSignaturesMax` signatures wait or are in flight (beyond that `verify`
 * refuses with RATE_LIMITED, so a flood cannot grow memory without bound); a batch carries at most
 * `batchSignaturesMax`. A worker that dies is replaced and its batches are sent again; a batch that
 * was in flight through `crashRetriesMax` crashes is verified on the main thread instead, so a
 * verdict is always a real verification, never a guess.
 */
import crypto, { type KeyObject } from "node:crypto";
import os from "node:os";
import { Worker } from "node:worker_threads";
import { assert, CodedError } from "../core/errors.ts";

export interface VerifyPoolOptions {
  /** Worker threads. */
  readonly workers: number;
  /** Signatures waiting or in flight at once. */
  readonly queuedSignaturesMax: number;
  /** Signatures in one message to a worker. */
  readonly batchSignaturesMax: number;
  /** Crashes a batch may live through before the main thread verifies it itself. */
  readonly crashRetriesMax: number;
  /**
   * A batch of at most this many signatures, gathered while no worker has a batch in flight, is
   * verified on the main thread instead (0: never). At light load a lone signature's round trip to
   * a worker (a postMessage each way, each waking a sleeping thread) takes longer than verifying it
   * here: in `npm run bench:verify-pool` a lone signature's verdict came after 0.31-0.43 ms instead
   * of 0.41-0.70 ms and a pair's after 0.45 instead of 0.71-0.79 ms, with no CPU difference beyond
   * the noise. In the four-validator network at 760 tx/s (eight transactions a request every
   * 10 ms, so gossip frames and verification batches of about eight) 16 instead of 2 left the
   * machine 86-89 % busy instead of 88-94 % and p50 / p99 at 79-97 / 220-260 ms instead of
   * 94-125 / 230-542 ms (three alternated pairs; 8 and 32 were alike): a sleeping worker's wake-up
   * costs more CPU here than eight verifications (docs/benchmarks.md). At most ~1 ms of the main
   * thread a batch; under load batches are larger or a worker is busy anyway.
   */
  readonly inlineSignaturesMax: number;
}

/** The cores beside the main thread: on 2 cores, one worker that never competes with the main thread. */
export function defaultVerifyWorkers(): number {
  return Math.max(1, os.availableParallelism() - 1);
}

export const defaultVerifyPoolOptions: VerifyPoolOptions = {
  workers: defaultVerifyWorkers(),
  queuedSignaturesMax: 200_000,
  batchSignaturesMax: 512,
  crashRetriesMax: 2,
  inlineSignaturesMax: 16,
};

/** Limits of one item: keys are SPKI DER (91 bytes for P-256), messages are a transaction's signed bytes. */
export const verifyKeyBytesMax = 1024;
export const verifyMessageBytesMax = 256 * 1024;
const signatureBytes = 64;
/** Worker-side KeyObject cache (importing a key costs more than verifying with it). */
export const workerKeyCacheEntriesMax = 10_000;

interface Item {
  readonly key: Uint8Array;
  readonly message: Uint8Array;
  readonly signature: Uint8Array;
  readonly resolve: (ok: boolean) => void;
}

interface Batch {
  readonly id: number;
  readonly items: Item[];
  crashes: number;
}

interface Slot {
  worker: Worker;
  readonly inFlight: Map<number, Batch>;
  inFlightItems: number;
}

/**
 * Layout of a batch (little-endian): u32 count, then per item u32 keyLength, u32 messageLength,
 * key bytes, message bytes, 64 signature bytes. The answer is one byte per item (1 = verifies).
 */
function packBatch(items: readonly Item[]): ArrayBuffer {
  let length = 4;
  for (const item of items) length += 8 + item.key.length + item.message.length + signatureBytes;
  const buffer = new ArrayBuffer(length);
  const view = new DataView(buffer);
  const bytes = new Uint8Array(buffer);
  view.setUint32(0, items.length, true);
  let at = 4;
  for (const item of items) {
    view.setUint32(at, item.key.length, true);
    view.setUint32(at + 4, item.message.length, true);
    at += 8;
    bytes.set(item.key, at);
    at += item.key.length;
    bytes.set(item.message, at);
    at += item.message.length;
    bytes.set(item.signature, at);
    at += signatureBytes;
  }
  assert(at === length, "a packed batch fills its buffer exactly");
  return buffer;
}

/**
 * The worker's program, plain JavaScript evaluated in the thread (the node loads its TypeScript
 * through tsx hooks that a worker does not inherit). It reads the layout written by packBatch.
 */
const workerSource = `
const { parentPort } = require("node:worker_threads");
const crypto = require("node:crypto");
const keys = new Map();
const keysMax = ${workerKeyCacheEntriesMax};
function keyObject(spki) {
  const id = spki.toString("base64");
  let key = keys.get(id);
  if (key === undefined) {
    key = crypto.createPublicKey({ key: spki, format: "der", type: "spki" });
    if (keys.size >= keysMax) keys.delete(keys.keys().next().value);
    keys.set(id, key);
  }
  return key;
}
parentPort.on("message", ({ id, buffer }) => {
  const view = new DataView(buffer);
  const bytes = Buffer.from(buffer);
  const count = view.getUint32(0, true);
  const verdicts = new Uint8Array(count);
  let at = 4;
  for (let i = 0; i < count; i++) {
    const keyLength = view.getUint32(at, true);
    const messageLength = view.getUint32(at + 4, true);
    at += 8;
    const spki = bytes.subarray(at, at + keyLength);
    at += keyLength;
    const message = bytes.subarray(at, at + messageLength);
    at += messageLength;
    const signature = bytes.subarray(at, at + ${signatureBytes});
    at += ${signatureBytes};
    try {
      const key = keyObject(spki);
      verdicts[i] = crypto.verify("sha256", message, { key, dsaEncoding: "ieee-p1363" }, signature) ? 1 : 0;
    } catch {
      verdicts[i] = 0;
    }
  }
  parentPort.postMessage({ id, verdicts }, [verdicts.buffer]);
});
`;

export class VerifyPool {
  private readonly slots: Slot[] = [];
  private pending: Item[] = [];
  private queued = 0;
  private nextBatchId = 1;
  private flushScheduled = false;
  private closed = false;
  /** Main-thread fallback for batches that keep crashing workers. */
  private readonly fallbackKeys = new Map<string, KeyObject>();
  /** Workers started to replace crashed ones (for operators and tests). */
  replacedWorkers = 0;
  /** Signatures verified on the main thread because their batch was small and the workers idle. */
  verifiedInline = 0;

  constructor(readonly options: VerifyPoolOptions = defaultVerifyPoolOptions) {
    assert(options.workers >= 1, "a verify pool has at least one worker");
    assert(options.batchSignaturesMax >= 1, "a batch carries at least one signature");
    assert(options.queuedSignaturesMax >= options.batchSignaturesMax, "the queue holds a whole batch");
    assert(options.inlineSignaturesMax >= 0, "inlineSignaturesMax is not negative");
    for (let i = 0; i < options.workers; i++) this.slots.push(this.startSlot());
  }

  /** Signatures waiting or in flight. */
  get queuedSignatures(): number {
    return this.queued;
  }

  /** Resolves with the verdict; refuses with RATE_LIMITED when the queue is full. */
  verify(publicKeySpki: Uint8Array, message: Uint8Array, signature: Uint8Array): Promise<boolean> {
    if (this.closed) return Promise.reject(new CodedError("NODE_STOPPING", "the verify pool is closed"));
    if (signature.length !== signatureBytes) return Promise.resolve(false);
    if (publicKeySpki.length > verifyKeyBytesMax || message.length > verifyMessageBytesMax) {
      return Promise.resolve(false);
    }
    if (this.queued >= this.options.queuedSignaturesMax) {
      return Promise.reject(
        new CodedError("RATE_LIMITED", "too many signatures are waiting for verification"),
      );
    }
    this.queued++;
    return new Promise((resolve) => {
      this.pending.push({ key: publicKeySpki, message, signature, resolve });
      if (this.pending.length >= this.options.batchSignaturesMax) this.flush();
      else this.scheduleFlush();
    });
  }

  async close(): Promise<void> {
    this.closed = true;
    const slots = this.slots.splice(0);
    await Promise.all(slots.map((slot) => slot.worker.terminate()));
    // Anything still waiting gets a real verdict from this thread rather than hanging forever.
    for (const slot of slots) for (const batch of slot.inFlight.values()) this.verifyHere(batch);
    const pending = this.pending;
    this.pending = [];
    if (pending.length > 0) this.verifyHere({ id: 0, items: pending, crashes: 0 });
  }

  /** For tests: the live workers, to kill one mid-batch. */
  workersForTest(): Worker[] {
    return this.slots.map((s) => s.worker);
  }

  private scheduleFlush(): void {
    if (this.flushScheduled) return;
    this.flushScheduled = true;
    // After the current macrotask: every admission of one HTTP batch lands in the same message.
    setImmediate(() => {
      this.flushScheduled = false;
      if (this.closed) return;
      if (this.pending.length <= this.options.inlineSignaturesMax && this.workersIdle()) {
        const items = this.pending;
        this.pending = [];
        this.verifiedInline += items.length;
        this.verifyHere({ id: 0, items, crashes: 0 });
      } else {
        this.flush();
      }
    });
  }

  private workersIdle(): boolean {
    return this.slots.every((slot) => slot.inFlightItems === 0);
  }

  /** Splits what is waiting into batches and gives each to the least loaded worker. */
  private flush(): void {
    if (this.closed) return;
    while (this.pending.length > 0) {
      const items = this.pending.splice(0, this.options.batchSignaturesMax);
      this.send({ id: this.nextBatchId++, items, crashes: 0 });
    }
  }

  private send(batch: Batch): void {
    let slot = this.slots[0]!;
    for (const s of this.slots) if (s.inFlightItems < slot.inFlightItems) slot = s;
    slot.inFlight.set(batch.id, batch);
    slot.inFlightItems += batch.items.length;
    const buffer = packBatch(batch.items);
    slot.worker.postMessage({ id: batch.id, buffer }, [buffer]);
  }

  private startSlot(): Slot {
    const worker = new Worker(workerSource, { eval: true });
    // Verification must not keep a stopping process alive.
    worker.unref();
    const slot: Slot = { worker, inFlight: new Map(), inFlightItems: 0 };
    worker.on("message", (answer: { id: number; verdicts: Uint8Array }) => this.answered(slot, answer));
    worker.once("error", () => this.replace(slot));
    worker.once("exit", () => this.replace(slot));
    return slot;
  }

  private answered(slot: Slot, answer: { id: number; verdicts: Uint8Array }): void {
    const batch = slot.inFlight.get(answer.id);
    if (batch === undefined && this.closed) return; // answered here already while closing
    assert(batch !== undefined, "a worker answers only batches it was sent");
    assert(answer.verdicts.length === batch.items.length, "one verdict per signature");
    slot.inFlight.delete(answer.id);
    slot.inFlightItems -= batch.items.length;
    this.queued -= batch.items.length;
    for (let i = 0; i < batch.items.length; i++) batch.items[i]!.resolve(answer.verdicts[i] === 1);
  }

  /** A worker died: a new one takes its place and its batches are sent again (or verified here). */
  private replace(dead: Slot): void {
    const index = this.slots.indexOf(dead);
    if (index < 0) return; // already replaced (error then exit), or the pool is closing
    const orphans = [...dead.inFlight.values()];
    dead.inFlight.clear();
    dead.inFlightItems = 0;
    if (this.closed) {
      for (const batch of orphans) this.verifyHere(batch);
      return;
    }
    this.slots[index] = this.startSlot();
    this.replacedWorkers++;
    for (const batch of orphans) {
      batch.crashes++;
      if (batch.crashes > this.options.crashRetriesMax) this.verifyHere(batch);
      else this.send(batch);
    }
  }

  private verifyHere(batch: Batch): void {
    this.queued -= batch.items.length;
    for (const item of batch.items) item.resolve(this.verifyOnMainThread(item));
  }

  private verifyOnMainThread(item: Item): boolean {
    try {
      const id = Buffer.from(item.key).toString("base64");
      let key = this.fallbackKeys.get(id);
      if (key === undefined) {
        key = crypto.createPublicKey({ key: Buffer.from(item.key), format: "der", type: "spki" });
        if (this.fallbackKeys.size >= workerKeyCacheEntriesMax)
          this.fallbackKeys.delete(this.fallbackKeys.keys().next().value as string);
        this.fallbackKeys.set(id, key);
      }
      return crypto.verify("sha256", item.message, { key, dsaEncoding: "ieee-p1363" }, item.signature);
    } catch {
      return false;
    }
  }
}
