/**
 * One peer's outbound queue: bounded in bytes and in messages, split into lanes written in priority
 * order, with a policy per message type for when it is full.
 *
 * Lanes: consensus and control first, so a vote never waits behind a megabyte of transaction gossip
 * or a catch-up block; then block sync; then transaction gossip. Frames are written whole, so a
 * frame that has started keeps the socket until it is done.
 *
 * When a message does not fit:
 * - tx (gossip): the oldest queued tx batches are dropped to make room, else the new one. Gossip is
 *   best effort (the transaction stays in our mempool and reaches the peer through others or in a
 *   block), and the oldest batches are the likeliest to have reached the peer another way already.
 * - consensus: never dropped silently. Queued tx gossip is dropped to make room; if the queue is
 *   still full of consensus and control messages the result is "overflow" and the caller
 *   disconnects the peer. Tendermint's gossip assumes that what it sends on a live connection
 *   arrives: a lost proposal or vote would leave the peer's view of the round wrong with neither
 *   side knowing it, while a reconnect resets both views and the peer catches up from there.
 *   Disconnecting also keeps our memory bounded against a peer that reads too slowly.
 * - status, ping, pong, block-request, block-response: the new message is dropped. A status is
 *   superseded by the next one, a missing pong is what ping timeouts are for, and block sync asks
 *   again when an answer does not come.
 */
import { assert } from "../core/errors.ts";
import type { MessageType } from "./messages.ts";

export type SendPolicy = "drop-oldest" | "drop-newest" | "disconnect";

export const sendPolicies: Readonly<Record<MessageType, SendPolicy>> = {
  hello: "disconnect",
  ping: "drop-newest",
  pong: "drop-newest",
  status: "drop-newest",
  consensus: "disconnect",
  "block-request": "drop-newest",
  "block-response": "drop-newest",
  tx: "drop-oldest",
};

const laneControl = 0;
const laneSync = 1;
const laneGossip = 2;
type Lane = typeof laneControl | typeof laneSync | typeof laneGossip;

const laneOf: Readonly<Record<MessageType, Lane>> = {
  hello: laneControl,
  ping: laneControl,
  pong: laneControl,
  status: laneControl,
  consensus: laneControl,
  "block-request": laneSync,
  "block-response": laneSync,
  tx: laneGossip,
};

export interface OutboundFrame {
  readonly type: MessageType;
  /** Header and payload, ready to write. */
  readonly frame: Uint8Array;
}

export interface SendQueueLimits {
  /** Bytes of frames waiting in our queue (not yet handed to the socket). */
  readonly sendQueueBytesMax: number;
  readonly sendQueueMessagesMax: number;
}

export type EnqueueResult = "queued" | "dropped" | "overflow";

export class SendQueue {
  private readonly lanes = [new Fifo<OutboundFrame>(), new Fifo<OutboundFrame>(), new Fifo<OutboundFrame>()];
  private queuedBytes = 0;
  private queuedMessages = 0;
  /** Messages this queue dropped under its policies, newest or oldest. */
  droppedMessages = 0;

  constructor(
    private readonly limits: SendQueueLimits,
    frameBytesMax: number,
  ) {
    assert(limits.sendQueueMessagesMax >= 1, "a send queue holds at least one message");
    // Otherwise a frame the protocol allows could never be sent.
    assert(limits.sendQueueBytesMax >= frameBytesMax + 4, "a send queue holds at least one largest frame");
  }

  get bytes(): number {
    return this.queuedBytes;
  }

  get messages(): number {
    return this.queuedMessages;
  }

  push(entry: OutboundFrame): EnqueueResult {
    const policy = sendPolicies[entry.type];
    if (!this.fits(entry) && policy !== "drop-newest") this.evictGossipFor(entry);
    if (!this.fits(entry)) {
      if (policy === "disconnect") return "overflow";
      this.droppedMessages++;
      return "dropped";
    }
    this.lanes[laneOf[entry.type]]!.push(entry);
    this.queuedBytes += entry.frame.length;
    this.queuedMessages++;
    return "queued";
  }

  /** The next frame to write: highest-priority lane first, oldest first within a lane. */
  shift(): OutboundFrame | undefined {
    for (const lane of this.lanes) {
      const entry = lane.shift();
      if (entry === undefined) continue;
      this.queuedBytes -= entry.frame.length;
      this.queuedMessages--;
      assert(this.queuedBytes >= 0 && this.queuedMessages >= 0, "send queue accounting");
      return entry;
    }
    return undefined;
  }

  private fits(entry: OutboundFrame): boolean {
    return (
      this.queuedMessages + 1 <= this.limits.sendQueueMessagesMax &&
      this.queuedBytes + entry.frame.length <= this.limits.sendQueueBytesMax
    );
  }

  private evictGossipFor(entry: OutboundFrame): void {
    const gossip = this.lanes[laneGossip]!;
    while (!this.fits(entry)) {
      const evicted = gossip.shift();
      if (evicted === undefined) return;
      this.queuedBytes -= evicted.frame.length;
      this.queuedMessages--;
      this.droppedMessages++;
    }
  }
}

/** First in, first out, with O(1) amortised shift (Array.prototype.shift is O(n)). */
export class Fifo<T> {
  private items: T[] = [];
  private head = 0;

  get length(): number {
    return this.items.length - this.head;
  }

  push(item: T): void {
    this.items.push(item);
  }

  shift(): T | undefined {
    if (this.head >= this.items.length) return undefined;
    const item = this.items[this.head]!;
    this.items[this.head] = undefined as T; // let the frame be collected now
    this.head++;
    if (this.head === this.items.length) {
      this.items = [];
      this.head = 0;
    }
    // Compact once the dead prefix outweighs the live part: each item moves O(1) times on average.
    if (this.head >= 1024 && this.head * 2 >= this.items.length) {
      this.items = this.items.slice(this.head);
      this.head = 0;
    }
    return item;
  }
}
