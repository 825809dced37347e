/**
 * One TLS connection to a peer: frames in and out, inbound budgets, the send queue and socket
 * backpressure, and the connection's own part of the protocol (hello first, ping and pong).
 * Who may connect, duplicates and what messages mean are the PeerNetwork's: it judges the TLS
 * identity (then calls accept() or close()), hears the rest through ConnectionEvents, and answers a
 * hello with markUp() or close().
 *
 *   handshaking --accept()--> awaiting-hello --markUp()--> up --> closed
 *        \________________________\____________________________/
 *                       close(reason) from any state
 */
import type { TLSSocket } from "node:tls";
import type { Identity } from "../ca/identity.ts";
import { assert } from "../core/errors.ts";
import { type DropReason, ProtocolError } from "./errors.ts";
import { encodeFrame, FrameDecoder } from "./framing.ts";
import {
  decodeMessage,
  encodeMessage,
  type HelloMessage,
  type Message,
  type PeerMessage,
} from "./messages.ts";
import type { PeerNetworkLimits } from "./options.ts";
import type { NetworkClock, TimerHandle } from "./ports.ts";
import { type EnqueueResult, SendQueue } from "./send-queue.ts";
import { TokenBucket } from "./token-bucket.ts";

export type ConnectionState = "handshaking" | "awaiting-hello" | "up" | "closed";
export type Direction = "inbound" | "outbound";
/** What the node's authorization said this peer is. */
export type PeerRole = "validator" | "observer";

export interface ConnectionEvents {
  /** The peer's hello arrived (state awaiting-hello). */
  hello(connection: PeerConnection, hello: HelloMessage): void;
  /** A message for the node arrived on an up connection. */
  message(connection: PeerConnection, message: PeerMessage): void;
  /** The connection is gone; called exactly once. */
  closed(connection: PeerConnection, reason: DropReason, detail: string): void;
}

export interface ConnectionContext {
  readonly limits: PeerNetworkLimits;
  readonly clock: NetworkClock;
  readonly events: ConnectionEvents;
}

export class PeerConnection {
  state: ConnectionState = "handshaking";
  identity: Identity | null = null;
  role: PeerRole | null = null;
  /** Lower-case hex SHA-256 of the certificate's SPKI, known once secured. */
  nodeId: string | null = null;
  hello: HelloMessage | null = null;
  height = 0;
  upAtMs: number | null = null;
  rttMs: number | null = null;
  lastReceivedMs: number;
  readonly openedAtMs: number;
  bytesReceived = 0;
  bytesSent = 0;
  messagesReceived = 0;
  messagesSent = 0;

  private readonly decoder: FrameDecoder;
  private readonly queue: SendQueue;
  private readonly messageBudget: TokenBucket;
  private readonly byteBudget: TokenBucket;
  private waitingForDrain = false;
  private handshakeTimer: TimerHandle | null;
  private pendingPing: { readonly nonce: number; readonly sentAtMs: number } | null = null;
  private socketErrorDetail: string | null = null;

  constructor(
    readonly socket: TLSSocket,
    readonly direction: Direction,
    /** host:port, for logs. */
    readonly remoteAddress: string,
    private readonly context: ConnectionContext,
  ) {
    const { limits, clock } = context;
    const now = clock.now();
    this.openedAtMs = now;
    this.lastReceivedMs = now;
    this.decoder = new FrameDecoder(limits.frameBytesMax);
    this.queue = new SendQueue(limits, limits.frameBytesMax);
    this.messageBudget = new TokenBucket(limits.inboundMessagesPerSecond, limits.inboundMessagesBurst, now);
    this.byteBudget = new TokenBucket(limits.inboundBytesPerSecond, limits.inboundBytesBurst, now);
    this.handshakeTimer = clock.setTimer(limits.handshakeTimeoutMs, () =>
      this.close("hello-timeout", `no valid hello within ${limits.handshakeTimeoutMs} ms`),
    );
    // Votes are small and latency-bound: Nagle's algorithm would hold them back waiting for ACKs.
    socket.setNoDelay(true);
    socket.on("data", (chunk: Buffer) => this.onData(chunk));
    socket.on("drain", () => {
      this.waitingForDrain = false;
      this.pump();
    });
    socket.on("error", (error: Error) => {
      this.socketErrorDetail = error.message;
    });
    socket.on("close", () => {
      const detail = this.socketErrorDetail;
      this.close(
        detail === null ? "remote-closed" : "socket-error",
        detail ?? "the peer closed the connection",
      );
    });
  }

  get sendQueueBytes(): number {
    return this.queue.bytes;
  }

  get sendQueueMessages(): number {
    return this.queue.messages;
  }

  get droppedMessages(): number {
    return this.queue.droppedMessages;
  }

  // ---- lifecycle, driven by the network ----

  /** The network judged the certificate: say hello and wait for theirs. */
  accept(identity: Identity, role: PeerRole, ourHello: HelloMessage): void {
    assert(this.state === "handshaking", "accept() follows the TLS handshake once");
    this.identity = identity;
    this.role = role;
    this.nodeId = identity.publicKeyId;
    this.state = "awaiting-hello";
    this.enqueue(ourHello);
  }

  markUp(hello: HelloMessage): void {
    assert(this.state === "awaiting-hello", "markUp() follows a hello");
    assert(hello.nodeId === this.nodeId, "the hello's nodeId was checked against the certificate");
    this.state = "up";
    this.hello = hello;
    this.height = hello.height;
    this.upAtMs = this.context.clock.now();
    this.handshakeTimer?.cancel();
    this.handshakeTimer = null;
  }

  /** Idempotent; the first reason wins. */
  close(reason: DropReason, detail: string): void {
    if (this.state === "closed") return;
    this.state = "closed";
    this.handshakeTimer?.cancel();
    this.handshakeTimer = null;
    this.socket.destroy();
    this.context.events.closed(this, reason, detail);
  }

  // ---- sending ----

  /** Encodes and queues one message; "overflow" has already closed the connection. */
  enqueue(message: Message): EnqueueResult {
    const payload = encodeMessage(message, this.context.limits);
    return this.enqueueFrame(message.type, encodeFrame(payload, this.context.limits.frameBytesMax));
  }

  /** For broadcasts: the frame is encoded once and shared by every peer. */
  enqueueFrame(type: Message["type"], frame: Uint8Array): EnqueueResult {
    if (this.state === "closed") return "dropped";
    const result = this.queue.push({ type, frame });
    if (result === "overflow") {
      this.close(
        "send-queue-full",
        `a ${type} message found ${this.queue.messages} messages / ${this.queue.bytes} bytes queued`,
      );
      return result;
    }
    this.pump();
    return result;
  }

  /** Moves frames to the socket until it asks us to wait ('drain'), keeping its buffer bounded. */
  private pump(): void {
    while (!this.waitingForDrain && this.state !== "closed" && this.state !== "handshaking") {
      const entry = this.queue.shift();
      if (entry === undefined) return;
      this.bytesSent += entry.frame.length;
      this.messagesSent++;
      if (!this.socket.write(entry.frame)) this.waitingForDrain = true;
    }
  }

  /** The matching pong gives rttMs; a newer ping supersedes an unanswered one. */
  ping(nonce: number): void {
    if (this.state !== "up") return;
    this.pendingPing = { nonce, sentAtMs: this.context.clock.now() };
    this.enqueue({ type: "ping", nonce });
  }

  // ---- receiving ----

  private onData(chunk: Buffer): void {
    if (this.state === "closed") return;
    const now = this.context.clock.now();
    this.bytesReceived += chunk.length;
    this.lastReceivedMs = now;
    try {
      if (!this.byteBudget.take(chunk.length, now)) {
        throw new ProtocolError("rate-bytes", `over ${this.context.limits.inboundBytesPerSecond} bytes/s`);
      }
      this.decoder.push(chunk, (payload) => this.onFrame(payload));
    } catch (error) {
      if (!(error instanceof ProtocolError)) throw error;
      this.close(error.reason, error.message);
    }
  }

  private onFrame(payload: Uint8Array): void {
    if (this.state === "closed") return;
    if (!this.messageBudget.take(1, this.context.clock.now())) {
      throw new ProtocolError(
        "rate-messages",
        `over ${this.context.limits.inboundMessagesPerSecond} messages/s`,
      );
    }
    const message = decodeMessage(payload, this.context.limits);
    this.messagesReceived++;
    this.dispatch(message);
  }

  private dispatch(message: Message): void {
    if (this.state === "handshaking") {
      throw new ProtocolError("unexpected-message", "a message before the TLS identity was judged");
    }
    if (this.state === "awaiting-hello") {
      if (message.type !== "hello")
        throw new ProtocolError("unexpected-message", `${message.type} before hello`);
      this.context.events.hello(this, message);
      return;
    }
    switch (message.type) {
      case "hello":
        throw new ProtocolError("unexpected-message", "a second hello");
      case "ping":
        this.enqueue({ type: "pong", nonce: message.nonce });
        return;
      case "pong":
        this.onPong(message.nonce);
        return;
      case "status":
        this.height = message.height;
        this.context.events.message(this, message);
        return;
      default:
        this.context.events.message(this, message);
    }
  }

  private onPong(nonce: number): void {
    // A pong we did not ask for is harmless (it may answer a ping from before a clock jump).
    if (this.pendingPing === null || this.pendingPing.nonce !== nonce) return;
    this.rttMs = Math.max(0, this.context.clock.now() - this.pendingPing.sentAtMs);
    this.pendingPing = null;
  }
}
