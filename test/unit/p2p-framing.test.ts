/**
 * The peer network's wire format without sockets: frames cut at every byte offset, many frames per
 * chunk, limits enforced before allocation; the message envelope's strict decoding; and the pure
 * parts the connection is built from (token bucket, send queue policies, backoff).
 */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { encodeCanonical } from "../../src/core/encoding.ts";
import { backoffDelayMs } from "../../src/p2p/backoff.ts";
import { ProtocolError } from "../../src/p2p/errors.ts";
import { encodeFrame, FrameDecoder, frameHeaderBytes } from "../../src/p2p/framing.ts";
import {
  consensusKinds,
  decodeMessage,
  defaultMessageLimits,
  encodeMessage,
  type Message,
  type MessageLimits,
  messageTypes,
} from "../../src/p2p/messages.ts";
import { parsePeerAddress, resolveLimits } from "../../src/p2p/options.ts";
import { type OutboundFrame, SendQueue } from "../../src/p2p/send-queue.ts";
import { TokenBucket } from "../../src/p2p/token-bucket.ts";

const limits = defaultMessageLimits;

function bytes(length: number, fill = 7): Uint8Array {
  return new Uint8Array(length).fill(fill);
}

function header(length: number): Uint8Array {
  const out = new Uint8Array(4);
  new DataView(out.buffer).setUint32(0, length, false);
  return out;
}

function concat(...parts: Uint8Array[]): Uint8Array {
  return Uint8Array.from(parts.flatMap((p) => [...p]));
}

function decodeAll(decoder: FrameDecoder, chunks: Uint8Array[]): Uint8Array[] {
  const frames: Uint8Array[] = [];
  // Copy each payload: the decoder may hand out views of the chunk.
  for (const chunk of chunks) decoder.push(chunk, (payload) => frames.push(payload.slice()));
  return frames;
}

function protocolError(reason: string): (error: unknown) => boolean {
  return (error) => error instanceof ProtocolError && error.reason === reason;
}

describe("framing", () => {
  const payloads = [bytes(1, 1), bytes(5, 2), bytes(300, 3), bytes(2, 4), bytes(70_000, 5)];
  const stream = concat(...payloads.map((p) => encodeFrame(p, 1 << 20)));

  it("decodes a stream cut in two at every byte offset", () => {
    for (let cut = 0; cut <= stream.length; cut++) {
      const frames = decodeAll(new FrameDecoder(1 << 20), [stream.subarray(0, cut), stream.subarray(cut)]);
      assert.deepEqual(frames, payloads, `cut at ${cut}`);
    }
  });

  it("decodes a stream fed one byte at a time and in uneven chunks", () => {
    const oneByOne = [...stream].map((b) => Uint8Array.of(b));
    assert.deepEqual(decodeAll(new FrameDecoder(1 << 20), oneByOne), payloads);
    const uneven: Uint8Array[] = [];
    for (let at = 0, size = 1; at < stream.length; at += size, size = (size * 7 + 3) % 9001) {
      uneven.push(stream.subarray(at, at + size));
    }
    assert.deepEqual(decodeAll(new FrameDecoder(1 << 20), uneven), payloads);
  });

  it("decodes many frames in one chunk, as views without copying", () => {
    const many = Array.from({ length: 10_000 }, (_, i) => bytes(1 + (i % 13), i % 251));
    const chunk = concat(...many.map((p) => encodeFrame(p, 1024)));
    const views: Uint8Array[] = [];
    new FrameDecoder(1024).push(chunk, (payload) => views.push(payload));
    assert.equal(views.length, many.length);
    assert.ok(views.every((view) => view.buffer === chunk.buffer));
    assert.deepEqual(
      views.map((v) => v.slice()),
      many,
    );
  });

  it("accepts a frame of exactly frameBytesMax and refuses one byte more before buffering it", () => {
    assert.deepEqual(decodeAll(new FrameDecoder(100), [encodeFrame(bytes(100), 100)]), [bytes(100)]);
    const decoder = new FrameDecoder(100);
    // Only the header arrives: the verdict must not wait for (or reserve room for) the body.
    assert.throws(() => decoder.push(header(101), () => {}), protocolError("frame-too-large"));
    assert.equal(decoder.bufferedBytes, 0);
  });

  it("refuses a 4 GiB length at once, and a zero-length frame", () => {
    assert.throws(
      () => new FrameDecoder(4 << 20).push(header(0xffff_ffff), () => {}),
      protocolError("frame-too-large"),
    );
    assert.throws(() => new FrameDecoder(100).push(header(0), () => {}), protocolError("frame-empty"));
    // A bad header split across chunks is caught when its last byte arrives.
    const decoder = new FrameDecoder(100);
    decoder.push(header(5000).subarray(0, 3), () => {});
    assert.throws(() => decoder.push(header(5000).subarray(3), () => {}), protocolError("frame-too-large"));
  });

  it("holds at most one frame's bytes between chunks", () => {
    const decoder = new FrameDecoder(1000);
    decoder.push(concat(header(1000), bytes(999)), () => assert.fail("incomplete frame"));
    assert.equal(decoder.bufferedBytes, 999);
    const frames = decodeAll(decoder, [bytes(1)]);
    assert.equal(frames.length, 1);
    assert.equal(decoder.bufferedBytes, 0);
  });

  it("refuses to encode an empty or oversized frame", () => {
    assert.throws(() => encodeFrame(new Uint8Array(0), 10), /at least one byte/);
    assert.throws(() => encodeFrame(bytes(11), 10), /exceeds/);
    assert.equal(encodeFrame(bytes(10), 10).length, frameHeaderBytes + 10);
  });
});

describe("messages", () => {
  const nodeId = "ab".repeat(32);
  const samples: Message[] = [
    { type: "hello", chainId: "citychain-dev", nodeId, height: 12, listenPort: 7100 },
    { type: "hello", chainId: "c", nodeId, height: 0, listenPort: null },
    { type: "ping", nonce: 0 },
    { type: "pong", nonce: 0xffff_ffff },
    { type: "status", height: Number.MAX_SAFE_INTEGER },
    { type: "tx", txs: [bytes(1), bytes(200, 9), bytes(limits.txBytesMax)] },
    ...consensusKinds.map((kind) => ({ type: "consensus", kind, bytes: bytes(64) }) as const),
    { type: "block-request", height: 5 },
    { type: "block-response", height: 5, block: bytes(1000), commit: bytes(100) },
  ];

  it("round-trips every type", () => {
    for (const message of samples) {
      assert.deepEqual(decodeMessage(encodeMessage(message, limits), limits), message, message.type);
    }
    assert.deepEqual([...new Set(samples.map((m) => m.type))].sort(), [...messageTypes].sort());
  });

  const envelope = (type: number, body: unknown, version = 1) =>
    encodeCanonical([version, type, body as Uint8Array[]]);
  const refuses = (payload: Uint8Array, pattern: RegExp, messageLimits: MessageLimits = limits) =>
    assert.throws(
      () => decodeMessage(payload, messageLimits),
      (error: unknown) =>
        error instanceof ProtocolError && error.reason === "bad-message" && pattern.test(error.message),
    );

  it("hands out copies, never views of the frame (a kept tx must not pin a socket chunk)", () => {
    const chunk = concat(
      bytes(3),
      encodeMessage({ type: "tx", txs: [bytes(10), bytes(20)] }, limits),
      bytes(3),
    );
    const payload = chunk.subarray(3, chunk.length - 3);
    const message = decodeMessage(payload, limits);
    assert.equal(message.type, "tx");
    for (const tx of message.type === "tx" ? message.txs : []) assert.notEqual(tx.buffer, chunk.buffer);
  });

  it("refuses unknown types, versions and kinds, and non-envelopes", () => {
    refuses(envelope(8, [1]), /unknown message type/);
    refuses(envelope(1, [1], 2), /version/);
    refuses(envelope(5, [consensusKinds.length, bytes(1)]), /unknown consensus kind/);
    refuses(encodeCanonical([1, 1]), /not a message envelope/);
    refuses(Uint8Array.of(0xff, 0xff, 0xff, 0xff), /not a message envelope/);
  });

  it("refuses wrong shapes and ranges", () => {
    refuses(envelope(1, [1, 2]), /2 fields, not 1/);
    refuses(envelope(1, ["x"]), /not an integer/);
    refuses(envelope(1, [-1]), /nonce/);
    refuses(envelope(3, [-5]), /height/);
    refuses(envelope(0, ["citychain-dev", bytes(31), 1, null]), /32 bytes/);
    refuses(envelope(0, ["Bad Chain", bytes(32), 1, null]), /chainId/);
    refuses(envelope(0, ["c", bytes(32), 1, 70_000]), /listenPort/);
    refuses(envelope(4, []), /1\.\.1024 transactions/);
    refuses(envelope(4, [bytes(1), "text"]), /not bytes/);
    refuses(envelope(4, [new Uint8Array(0)]), /transaction is 1\.\./);
    refuses(envelope(5, [0, new Uint8Array(0)]), /consensus bytes/);
  });

  it("refuses non-canonical CBOR", () => {
    // ping [1, 1, [5]] with the 5 spelled in two bytes (0x18 0x05) instead of one.
    refuses(Uint8Array.of(0x83, 0x01, 0x01, 0x81, 0x18, 0x05), /more bytes than necessary/);
    // A map body where an array belongs: valid canonical CBOR, wrong shape.
    refuses(encodeCanonical([1, 1, { nonce: 5 }]), /ping body is not an array/);
  });

  it("enforces per-type size limits on the frame before parsing", () => {
    // A ping padded to 19 bytes is refused on its length alone.
    const padded = concat(envelope(1, [1]), bytes(14));
    refuses(padded, /ping message of 19 bytes, limit 16/);
    const small: MessageLimits = { ...limits, txsPerMessageMax: 2, consensusBytesMax: 10, txBytesMax: 10 };
    refuses(envelope(4, [bytes(1), bytes(1), bytes(1)]), /1\.\.2 transactions/, small);
    refuses(envelope(4, [bytes(11)]), /transaction is 1\.\.10 bytes/, small);
    refuses(envelope(5, [0, bytes(11)]), /consensus bytes is 1\.\.10/, small);
  });

  it("refuses to send what a peer would refuse", () => {
    assert.throws(() => encodeMessage({ type: "tx", txs: [] }, limits), /refusing to send a bad tx/);
    assert.throws(
      () =>
        encodeMessage(
          { type: "hello", chainId: "c", nodeId: "AB".repeat(32), height: 0, listenPort: null },
          limits,
        ),
      /nodeId/,
    );
  });
});

describe("token bucket", () => {
  it("allows a burst, then the rate, and never mints tokens when the clock goes back", () => {
    const bucket = new TokenBucket(10, 5, 1000);
    for (let i = 0; i < 5; i++) assert.ok(bucket.take(1, 1000));
    assert.equal(bucket.take(1, 1000), false);
    assert.ok(bucket.take(1, 1100)); // 100 ms at 10/s = 1 token
    assert.equal(bucket.take(1, 1100), false);
    assert.equal(bucket.take(1, 500), false);
    assert.ok(bucket.take(5, 10_000));
    assert.equal(bucket.take(6, 100_000), false, "never more than the burst");
  });
});

describe("send queue", () => {
  const frame = (type: OutboundFrame["type"], size: number): OutboundFrame => ({ type, frame: bytes(size) });
  const queue = () => new SendQueue({ sendQueueBytesMax: 1000, sendQueueMessagesMax: 4 }, 100);

  it("writes consensus before sync before gossip, oldest first within a lane", () => {
    const q = queue();
    q.push(frame("tx", 1));
    q.push(frame("block-response", 2));
    q.push(frame("consensus", 3));
    q.push(frame("consensus", 4));
    assert.deepEqual(
      [q.shift(), q.shift(), q.shift(), q.shift(), q.shift()].map((e) => e?.frame.length),
      [3, 4, 2, 1, undefined],
    );
    assert.equal(q.bytes, 0);
    assert.equal(q.messages, 0);
  });

  it("drops the oldest gossip for newer gossip", () => {
    const q = queue();
    for (let i = 1; i <= 6; i++) assert.equal(q.push(frame("tx", i)), "queued");
    assert.equal(q.droppedMessages, 2);
    assert.deepEqual(
      [q.shift(), q.shift(), q.shift(), q.shift()].map((e) => e?.frame.length),
      [3, 4, 5, 6],
    );
  });

  it("makes room for consensus by dropping gossip, and overflows only on consensus", () => {
    const q = queue();
    q.push(frame("tx", 10));
    q.push(frame("consensus", 10));
    q.push(frame("consensus", 10));
    q.push(frame("consensus", 10));
    assert.equal(q.push(frame("consensus", 10)), "queued", "the tx made room");
    assert.equal(q.droppedMessages, 1);
    assert.equal(q.push(frame("tx", 10)), "dropped", "no gossip left to drop but the new one");
    assert.equal(q.push(frame("status", 10)), "dropped");
    assert.equal(q.push(frame("consensus", 10)), "overflow");
  });

  it("counts bytes as well as messages", () => {
    const q = new SendQueue({ sendQueueBytesMax: 250, sendQueueMessagesMax: 100 }, 100);
    assert.equal(q.push(frame("consensus", 104)), "queued");
    assert.equal(q.push(frame("consensus", 104)), "queued");
    assert.equal(q.push(frame("consensus", 104)), "overflow");
    assert.equal(q.bytes, 208);
  });
});

describe("backoff and options", () => {
  const options = { backoffBaseMs: 100, backoffMaxMs: 1000 };

  it("doubles per attempt within [ceiling/2, ceiling], capped", () => {
    const low = { float: () => 0 };
    const high = { float: () => 0.999_999 };
    assert.deepEqual(
      [0, 1, 2, 3, 4, 50, 5000].map((a) => backoffDelayMs(a, options, low)),
      [50, 100, 200, 400, 500, 500, 500],
    );
    assert.deepEqual(
      [0, 1, 2, 3, 4].map((a) => backoffDelayMs(a, options, high)),
      [100, 200, 400, 800, 1000],
    );
  });

  it("parses peer addresses, with an optional pinned node id", () => {
    assert.deepEqual(parsePeerAddress("127.0.0.1:7100"), {
      host: "127.0.0.1",
      port: 7100,
      nodeId: null,
      text: "127.0.0.1:7100",
    });
    assert.equal(parsePeerAddress("[::1]:1").host, "::1");
    assert.equal(parsePeerAddress(`${"0f".repeat(32)}@node.tax.city:443`).nodeId, "0f".repeat(32));
    for (const bad of ["localhost", "host:0", "host:65536", "a b:1", "XYZ@host:1"]) {
      assert.throws(() => parsePeerAddress(bad), /peer address/, bad);
    }
  });

  it("refuses limits that cannot work together", () => {
    assert.throws(() => resolveLimits({ peersMax: 0 }), /peersMax/);
    assert.throws(() => resolveLimits({ sendQueueBytesMax: 1024 }), /sendQueueBytesMax/);
    assert.throws(() => resolveLimits({ inboundBytesBurst: 1024 }), /inboundBytesBurst/);
    assert.throws(() => resolveLimits({ frameBytesMax: 64 * 1024 }), /must fit/);
    assert.equal(resolveLimits({ peersMax: 3 }).peersMax, 3);
  });
});
