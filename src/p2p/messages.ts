/**
 * The wire envelope between nodes: one canonical CBOR array per frame,
 *
 *   [version, typeCode, body]        body is a fixed-position array per type (docs/spec/p2p.md)
 *
 * Decoding is strict: the exact canonical bytes, a known version and type, the body's exact shape,
 * and a size limit per type that is checked on the frame length before any CBOR is parsed (a ping
 * is never allowed to be 4 MiB). Anything else is a ProtocolError and costs the sender its
 * connection. The sender checks the same rules with an assert, so we never emit what a peer must
 * refuse. Consensus and block bytes are opaque here: their own decoders live with their owners.
 */
import { type Canonical, decodeCanonical, encodeCanonical, fromHex, toHex } from "../core/encoding.ts";
import { assert } from "../core/errors.ts";
import { chainIdPattern, txLimits } from "../core/tx.ts";
import { ProtocolError } from "./errors.ts";
import { frameBytesLimitAbsolute, frameBytesMaxDefault } from "./framing.ts";

export const envelopeVersion = 1;

/** The index is the wire code: append new types, never reorder. */
export const messageTypes = [
  "hello",
  "ping",
  "pong",
  "status",
  "tx",
  "consensus",
  "block-request",
  "block-response",
] as const;
export type MessageType = (typeof messageTypes)[number];

/**
 * What a consensus message carries, for the consensus reactor to route without decoding. The index
 * is the wire code: append kinds here when the reactor needs them. A peer that sends a kind we do
 * not know is dropped, so a new kind is a protocol change that all nodes take together.
 */
export const consensusKinds = [
  "proposal",
  "vote",
  "block-part",
  "round-step",
  "has-vote",
  "decision",
] as const;
export type ConsensusKind = (typeof consensusKinds)[number];

const nodeIdBytes = 32;
const nodeIdPattern = /^[0-9a-f]{64}$/;
/** Ping nonces are 32-bit: enough to match a pong to its ping, small on the wire. */
export const pingNonceMax = 0xffff_ffff;

export interface HelloMessage {
  readonly type: "hello";
  readonly chainId: string;
  /** Validator id: lower-case hex SHA-256 of the sender's SubjectPublicKeyInfo. */
  readonly nodeId: string;
  readonly height: number;
  /** The port the sender accepts peers on, or null when it only dials out. */
  readonly listenPort: number | null;
}
export interface PingMessage {
  readonly type: "ping";
  readonly nonce: number;
}
export interface PongMessage {
  readonly type: "pong";
  readonly nonce: number;
}
export interface StatusMessage {
  readonly type: "status";
  readonly height: number;
}
/** A batch of transactions, so gossip does not cost one frame per transaction. */
export interface TxMessage {
  readonly type: "tx";
  readonly txs: readonly Uint8Array[];
}
export interface ConsensusMessage {
  readonly type: "consensus";
  readonly kind: ConsensusKind;
  readonly bytes: Uint8Array;
}
export interface BlockRequestMessage {
  readonly type: "block-request";
  readonly height: number;
}
export interface BlockResponseMessage {
  readonly type: "block-response";
  readonly height: number;
  readonly block: Uint8Array;
  readonly commit: Uint8Array;
}

export type Message =
  | HelloMessage
  | PingMessage
  | PongMessage
  | StatusMessage
  | TxMessage
  | ConsensusMessage
  | BlockRequestMessage
  | BlockResponseMessage;

/** What the node sends and receives; hello, ping and pong belong to the network itself. */
export type PeerMessage = Exclude<Message, HelloMessage | PingMessage | PongMessage>;

export interface MessageLimits {
  /** Largest frame payload of any type, bytes. */
  readonly frameBytesMax: number;
  /** Largest transaction in a tx batch, bytes. */
  readonly txBytesMax: number;
  /** Most transactions in one tx message. */
  readonly txsPerMessageMax: number;
  /** Largest opaque consensus payload, bytes. */
  readonly consensusBytesMax: number;
  /** Largest block in a block-response, bytes. */
  readonly blockBytesMax: number;
  /** Largest commit certificate in a block-response, bytes. */
  readonly commitBytesMax: number;
}

/** Room the envelope, body array and byte-string headers take around a payload. */
export const envelopeBytesOverhead = 32;

export const defaultMessageLimits: MessageLimits = {
  frameBytesMax: frameBytesMaxDefault,
  txBytesMax: txLimits.txBytesMax,
  txsPerMessageMax: 1024,
  consensusBytesMax: frameBytesMaxDefault - envelopeBytesOverhead,
  blockBytesMax: frameBytesMaxDefault - 64 * 1024,
  // 256 validators x (32-byte id + 64-byte signature) plus headers is about 26 KiB.
  commitBytesMax: 32 * 1024,
};

/** Hello: chainId (<= 64 chars), nodeId (32 bytes), two integers, and headers. */
export const helloFrameBytesMax = 160;
/** Ping, pong, status, block-request: one integer and headers. */
export const controlFrameBytesMax = 16;

export function frameBytesMaxOf(type: MessageType, limits: MessageLimits): number {
  switch (type) {
    case "hello":
      return helloFrameBytesMax;
    case "ping":
    case "pong":
    case "status":
    case "block-request":
      return controlFrameBytesMax;
    case "tx":
    case "consensus":
    case "block-response":
      return limits.frameBytesMax;
  }
}

export function checkMessageLimits(limits: MessageLimits): void {
  const { frameBytesMax } = limits;
  assert(
    Number.isSafeInteger(frameBytesMax) && frameBytesMax >= 1024 && frameBytesMax <= frameBytesLimitAbsolute,
    "frameBytesMax is 1 KiB..4 GiB-1",
  );
  for (const [name, value] of Object.entries(limits)) {
    assert(Number.isSafeInteger(value) && value > 0, `${name} is a positive integer`);
  }
  assert(limits.txBytesMax + envelopeBytesOverhead <= frameBytesMax, "one tx must fit in a frame");
  assert(
    limits.consensusBytesMax + envelopeBytesOverhead <= frameBytesMax,
    "consensus bytes must fit a frame",
  );
  assert(
    limits.blockBytesMax + limits.commitBytesMax + envelopeBytesOverhead <= frameBytesMax,
    "a block and its commit must fit in a frame",
  );
}

// ---------------------------------------------------------------------------------------------
// Encoding

/** The envelope's payload (frame it with encodeFrame). Asserts the message is one a peer accepts. */
export function encodeMessage(message: Message, limits: MessageLimits): Uint8Array {
  const problem = messageProblem(message, limits);
  assert(problem === null, `refusing to send a bad ${message.type} message: ${problem}`);
  const payload = encodeCanonical([envelopeVersion, messageTypes.indexOf(message.type), bodyOf(message)]);
  assert(
    payload.length <= frameBytesMaxOf(message.type, limits),
    `${message.type} message over its size limit`,
  );
  return payload;
}

function bodyOf(message: Message): Canonical {
  switch (message.type) {
    case "hello":
      return [message.chainId, fromHex(message.nodeId), message.height, message.listenPort];
    case "ping":
    case "pong":
      return [message.nonce];
    case "status":
    case "block-request":
      return [message.height];
    case "tx":
      return message.txs as Uint8Array[];
    case "consensus":
      return [consensusKinds.indexOf(message.kind), message.bytes];
    case "block-response":
      return [message.height, message.block, message.commit];
  }
}

// ---------------------------------------------------------------------------------------------
// Decoding

/**
 * The canonical envelope starts 0x83 (array of 3), then the version and type as one-byte integers,
 * so the type and its size limit are known before the payload is parsed.
 */
export function peekMessageType(payload: Uint8Array): MessageType {
  if (payload.length < 4 || payload[0] !== 0x83) throw bad("not a message envelope");
  if (payload[1] !== envelopeVersion) throw bad(`unsupported envelope version byte ${payload[1]}`);
  const type = messageTypes[payload[2]!];
  if (type === undefined) throw bad(`unknown message type ${payload[2]}`);
  return type;
}

export function decodeMessage(payload: Uint8Array, limits: MessageLimits): Message {
  const type = peekMessageType(payload);
  const bytesMax = frameBytesMaxOf(type, limits);
  if (payload.length > bytesMax) throw bad(`${type} message of ${payload.length} bytes, limit ${bytesMax}`);
  let raw: Canonical;
  try {
    raw = decodeCanonical(payload, bytesMax);
  } catch (error) {
    throw bad((error as Error).message);
  }
  if (!Array.isArray(raw) || raw.length !== 3) throw bad("envelope is not [version, type, body]");
  const body = (raw as Canonical[])[2]!;
  if (!Array.isArray(body)) throw bad(`${type} body is not an array`);
  const message = messageFromBody(type, body as Canonical[]);
  const problem = messageProblem(message, limits);
  if (problem !== null) throw bad(`${type}: ${problem}`);
  return message;
}

function bad(detail: string): ProtocolError {
  return new ProtocolError("bad-message", detail);
}

/** Shape only (field count and kinds); ranges are messageProblem's. */
function messageFromBody(type: MessageType, body: readonly Canonical[]): Message {
  switch (type) {
    case "hello": {
      const [chainId, nodeId, height, listenPort] = fields(body, 4, type);
      if (!(nodeId instanceof Uint8Array) || nodeId.length !== nodeIdBytes)
        throw bad("hello nodeId is 32 bytes");
      return {
        type,
        chainId: text(chainId, "hello chainId"),
        nodeId: toHex(nodeId),
        height: integer(height, "hello height"),
        listenPort: listenPort === null ? null : integer(listenPort, "hello listenPort"),
      };
    }
    case "ping":
    case "pong":
      return { type, nonce: integer(fields(body, 1, type)[0], `${type} nonce`) };
    case "status":
    case "block-request":
      return { type, height: integer(fields(body, 1, type)[0], `${type} height`) };
    case "tx":
      return { type, txs: body.map((tx) => bytes(tx, "tx")) };
    case "consensus": {
      const [kindCode, payload] = fields(body, 2, type);
      const kind = consensusKinds[integer(kindCode, "consensus kind")];
      if (kind === undefined) throw bad(`unknown consensus kind ${String(kindCode)}`);
      return { type, kind, bytes: bytes(payload, "consensus bytes") };
    }
    case "block-response": {
      const [height, block, commit] = fields(body, 3, type);
      return {
        type,
        height: integer(height, "block-response height"),
        block: bytes(block, "block-response block"),
        commit: bytes(commit, "block-response commit"),
      };
    }
  }
}

function fields(body: readonly Canonical[], count: number, type: MessageType): readonly Canonical[] {
  if (body.length !== count) throw bad(`${type} body has ${body.length} fields, not ${count}`);
  return body;
}

function integer(value: Canonical | undefined, name: string): number {
  if (typeof value !== "number" || !Number.isSafeInteger(value)) throw bad(`${name} is not an integer`);
  return value;
}

function text(value: Canonical | undefined, name: string): string {
  if (typeof value !== "string") throw bad(`${name} is not text`);
  return value;
}

function bytes(value: Canonical | undefined, name: string): Uint8Array {
  if (!(value instanceof Uint8Array)) throw bad(`${name} is not bytes`);
  return value;
}

// ---------------------------------------------------------------------------------------------
// Rules both sides check

/** Why `message` is not acceptable under `limits`, or null when it is. */
export function messageProblem(message: Message, limits: MessageLimits): string | null {
  switch (message.type) {
    case "hello":
      return helloProblem(message);
    case "ping":
    case "pong":
      return isIntegerIn(message.nonce, 0, pingNonceMax) ? null : `nonce is 0..${pingNonceMax}`;
    case "status":
    case "block-request":
      return isHeight(message.height) ? null : "height is a non-negative integer";
    case "tx":
      return txBatchProblem(message, limits);
    case "consensus":
      return byteLengthProblem(message.bytes, limits.consensusBytesMax, "consensus bytes");
    case "block-response":
      if (!isHeight(message.height)) return "height is a non-negative integer";
      return (
        byteLengthProblem(message.block, limits.blockBytesMax, "block") ??
        byteLengthProblem(message.commit, limits.commitBytesMax, "commit")
      );
  }
}

function helloProblem(hello: HelloMessage): string | null {
  if (!chainIdPattern.test(hello.chainId)) return "chainId is not a chain id";
  if (!nodeIdPattern.test(hello.nodeId)) return "nodeId is not 64 lower-case hex digits";
  if (!isHeight(hello.height)) return "height is a non-negative integer";
  if (hello.listenPort !== null && !isIntegerIn(hello.listenPort, 1, 65_535)) return "listenPort is 1..65535";
  return null;
}

function txBatchProblem(message: TxMessage, limits: MessageLimits): string | null {
  if (message.txs.length === 0 || message.txs.length > limits.txsPerMessageMax) {
    return `a tx message carries 1..${limits.txsPerMessageMax} transactions`;
  }
  for (const tx of message.txs) {
    const problem = byteLengthProblem(tx, limits.txBytesMax, "transaction");
    if (problem !== null) return problem;
  }
  return null;
}

function byteLengthProblem(value: Uint8Array, bytesMax: number, name: string): string | null {
  return value.length >= 1 && value.length <= bytesMax ? null : `${name} is 1..${bytesMax} bytes`;
}

function isHeight(value: number): boolean {
  return isIntegerIn(value, 0, Number.MAX_SAFE_INTEGER);
}

function isIntegerIn(value: number, min: number, max: number): boolean {
  return Number.isSafeInteger(value) && value >= min && value <= max;
}
