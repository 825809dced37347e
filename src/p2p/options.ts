/**
 * Every limit of the peer network, with its unit in its name and its default. The node's
 * configuration passes a partial set; resolveLimits fills in the rest and checks that the whole
 * hangs together (a limit that makes a legal message unsendable or unreceivable is refused).
 */
import { assert, CodedError } from "../core/errors.ts";
import type { BackoffOptions } from "./backoff.ts";
import { frameHeaderBytes } from "./framing.ts";
import { checkMessageLimits, defaultMessageLimits, type MessageLimits } from "./messages.ts";
import type { SendQueueLimits } from "./send-queue.ts";

export interface PeerNetworkLimits extends MessageLimits, SendQueueLimits, BackoffOptions {
  /** Peers connected at once (validators and observers, either direction). */
  readonly peersMax: number;
  /** Connections past TLS but before a validated hello, either direction. */
  readonly pendingConnectionsMax: number;
  /** Addresses in the configured peer list. */
  readonly configuredPeersMax: number;
  /** From dialling (or accepting) to a validated hello: TLS handshake plus hello exchange, ms. */
  readonly handshakeTimeoutMs: number;
  /** How often an idle connection is pinged, ms. */
  readonly pingIntervalMs: number;
  /** A peer we have heard nothing from (no frame at all) for this long is dropped, ms. */
  readonly pingTimeoutMs: number;
  /** Sustained inbound messages per second per peer, and the burst above it. */
  readonly inboundMessagesPerSecond: number;
  readonly inboundMessagesBurst: number;
  /** Sustained inbound bytes per second per peer (frame headers included), and the burst above it. */
  readonly inboundBytesPerSecond: number;
  readonly inboundBytesBurst: number;
  /** A connection that stayed up this long resets its address's backoff to the first step, ms. */
  readonly connectionStableMs: number;
}

export const defaultPeerNetworkLimits: PeerNetworkLimits = {
  ...defaultMessageLimits,
  peersMax: 50,
  pendingConnectionsMax: 32,
  configuredPeersMax: 1024,
  // 8 MiB: room for two of the largest frames behind a slow socket; 50 peers cost at most 400 MiB.
  sendQueueBytesMax: 8 * 1024 * 1024,
  sendQueueMessagesMax: 10_000,
  handshakeTimeoutMs: 10_000,
  pingIntervalMs: 10_000,
  pingTimeoutMs: 45_000,
  // A round of 49 validators is ~150 consensus messages; batched gossip at 5,000 tx/s is tens of
  // frames. 10,000 per second leaves a wide margin while still catching a flood.
  inboundMessagesPerSecond: 10_000,
  inboundMessagesBurst: 20_000,
  inboundBytesPerSecond: 64 * 1024 * 1024,
  inboundBytesBurst: 64 * 1024 * 1024,
  backoffBaseMs: 500,
  backoffMaxMs: 30_000,
  connectionStableMs: 30_000,
};

export function resolveLimits(overrides: Partial<PeerNetworkLimits> = {}): PeerNetworkLimits {
  const limits: PeerNetworkLimits = { ...defaultPeerNetworkLimits, ...overrides };
  for (const [name, value] of Object.entries(limits)) {
    if (!Number.isSafeInteger(value) || value <= 0) {
      throw new CodedError("BAD_REQUEST", `p2p: ${name} must be a positive integer`, name);
    }
  }
  checkMessageLimits(limits);
  const largestFrameBytes = frameHeaderBytes + limits.frameBytesMax;
  assert(limits.sendQueueBytesMax >= largestFrameBytes, "sendQueueBytesMax holds at least one largest frame");
  assert(
    limits.inboundBytesBurst >= largestFrameBytes,
    "inboundBytesBurst admits at least one largest frame",
  );
  assert(limits.pingTimeoutMs > limits.pingIntervalMs, "pingTimeoutMs exceeds pingIntervalMs");
  assert(limits.backoffMaxMs >= limits.backoffBaseMs, "backoffMaxMs is at least backoffBaseMs");
  return limits;
}

// ---------------------------------------------------------------------------------------------
// Peer addresses: "host:port", "[v6]:port", or "<nodeId>@host:port" to pin the key expected there.

export interface PeerAddress {
  readonly host: string;
  readonly port: number;
  /** The validator id we insist on at this address, or null to accept any authorized node. */
  readonly nodeId: string | null;
  /** As configured, for logs. */
  readonly text: string;
}

const peerAddressPattern = /^(?:([0-9a-f]{64})@)?(?:\[([0-9a-fA-F:.]+)\]|([A-Za-z0-9.-]+)):(\d{1,5})$/;

export function parsePeerAddress(text: string): PeerAddress {
  const match = peerAddressPattern.exec(text);
  const port = match === null ? Number.NaN : Number(match[4]);
  if (match === null || !Number.isSafeInteger(port) || port < 1 || port > 65_535) {
    throw new CodedError(
      "BAD_REQUEST",
      `p2p: peer address "${text}" is not host:port, [v6]:port or <nodeId>@host:port`,
      "peers",
    );
  }
  return { host: match[2] ?? match[3]!, port, nodeId: match[1] ?? null, text };
}
