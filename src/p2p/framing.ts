/**
 * Length-prefixed frames on a byte stream: a 4-byte big-endian payload length, then the payload.
 *
 * The decoder is fed whatever chunks the socket delivers. It checks a frame's declared length
 * against `frameBytesMax` as soon as the 4 header bytes are in, before it buffers or allocates
 * anything for the body, so a peer cannot make us reserve memory by lying about a length. Every
 * received byte is copied at most once: a frame that lies wholly inside a chunk is handed out as a
 * view of that chunk, and a frame split across chunks is assembled in one buffer of its exact size.
 */
import { assert } from "../core/errors.ts";
import { ProtocolError } from "./errors.ts";

export const frameHeaderBytes = 4;
/** The header's 32 bits cap any frame; configured limits must stay below this. */
export const frameBytesLimitAbsolute = 0xffff_ffff;
/** Blocks may grow, so this is an option; 4 MiB carries a large proposal or block part. */
export const frameBytesMaxDefault = 4 * 1024 * 1024;

/** Header and payload in one buffer, so a broadcast encodes once and every peer writes the same bytes. */
export function encodeFrame(payload: Uint8Array, frameBytesMax: number): Uint8Array {
  assert(payload.length > 0, "a frame carries at least one byte");
  assert(payload.length <= frameBytesMax, `frame of ${payload.length} bytes exceeds ${frameBytesMax}`);
  const frame = new Uint8Array(frameHeaderBytes + payload.length);
  new DataView(frame.buffer).setUint32(0, payload.length, false);
  frame.set(payload, frameHeaderBytes);
  return frame;
}

export class FrameDecoder {
  private readonly header = new Uint8Array(frameHeaderBytes);
  private headerBytesFilled = 0;
  /** The frame being assembled across chunks, or null between frames. */
  private body: Uint8Array | null = null;
  private bodyBytesFilled = 0;

  constructor(readonly frameBytesMax: number) {
    assert(
      Number.isSafeInteger(frameBytesMax) && frameBytesMax > 0 && frameBytesMax <= frameBytesLimitAbsolute,
      "frameBytesMax is 1..2^32-1",
    );
  }

  /** Bytes held for an unfinished frame: at most frameHeaderBytes + frameBytesMax. */
  get bufferedBytes(): number {
    return this.headerBytesFilled + this.bodyBytesFilled;
  }

  /**
   * Calls `onFrame` for each complete frame in `chunk`, in order. A payload handed out may be a view
   * of `chunk`: use it before returning or copy it. Throws ProtocolError on an empty or oversized
   * frame; the decoder is then unusable, as is the stream it was reading.
   */
  push(chunk: Uint8Array, onFrame: (payload: Uint8Array) => void): void {
    let offset = 0;
    while (offset < chunk.length) {
      offset =
        this.body === null ? this.readHeader(chunk, offset, onFrame) : this.readBody(chunk, offset, onFrame);
    }
  }

  private readHeader(chunk: Uint8Array, offset: number, onFrame: (payload: Uint8Array) => void): number {
    const headerTaken = Math.min(frameHeaderBytes - this.headerBytesFilled, chunk.length - offset);
    this.header.set(chunk.subarray(offset, offset + headerTaken), this.headerBytesFilled);
    this.headerBytesFilled += headerTaken;
    const next = offset + headerTaken;
    if (this.headerBytesFilled < frameHeaderBytes) return next;
    this.headerBytesFilled = 0;
    const length = this.checkedLength();
    if (chunk.length - next >= length) {
      // The common case for small messages: no copy at all.
      onFrame(chunk.subarray(next, next + length));
      return next + length;
    }
    // Allocated only now that the length has passed the limit check.
    this.body = new Uint8Array(length);
    this.bodyBytesFilled = 0;
    return next;
  }

  private readBody(chunk: Uint8Array, offset: number, onFrame: (payload: Uint8Array) => void): number {
    const body = this.body;
    assert(body !== null, "readBody runs only inside a frame");
    const taken = Math.min(body.length - this.bodyBytesFilled, chunk.length - offset);
    body.set(chunk.subarray(offset, offset + taken), this.bodyBytesFilled);
    this.bodyBytesFilled += taken;
    if (this.bodyBytesFilled === body.length) {
      this.body = null;
      this.bodyBytesFilled = 0;
      onFrame(body);
    }
    return offset + taken;
  }

  private checkedLength(): number {
    const length = new DataView(this.header.buffer).getUint32(0, false);
    if (length === 0) throw new ProtocolError("frame-empty", "a frame of zero bytes");
    if (length > this.frameBytesMax) {
      throw new ProtocolError("frame-too-large", `a frame of ${length} bytes, limit ${this.frameBytesMax}`);
    }
    return length;
  }
}
