/**
 * Why a peer connection ended. Each reason is a stable code: logs, metrics and tests key on it,
 * so never rename one. `misbehaviour` marks what only a faulty or hostile peer does; the node may
 * choose to ban such a peer for a while, which an ordinary disconnect never deserves.
 */
export const dropReasons = {
  // The peer broke the protocol.
  "frame-too-large": { misbehaviour: true },
  "frame-empty": { misbehaviour: true },
  "bad-message": { misbehaviour: true },
  "unexpected-message": { misbehaviour: true },
  "rate-messages": { misbehaviour: true },
  "rate-bytes": { misbehaviour: true },
  "invalid-tx": { misbehaviour: true },
  // Who the peer is.
  "bad-certificate": { misbehaviour: true },
  "not-a-node": { misbehaviour: true },
  unauthorized: { misbehaviour: false },
  "wrong-chain": { misbehaviour: false },
  "node-id-mismatch": { misbehaviour: true },
  self: { misbehaviour: false },
  "node-id-unexpected": { misbehaviour: false },
  // Our own limits and bookkeeping.
  duplicate: { misbehaviour: false },
  "peers-full": { misbehaviour: false },
  "pending-full": { misbehaviour: false },
  "send-queue-full": { misbehaviour: false },
  "hello-timeout": { misbehaviour: false },
  "ping-timeout": { misbehaviour: false },
  // The connection itself.
  "tls-failed": { misbehaviour: false },
  "remote-closed": { misbehaviour: false },
  "socket-error": { misbehaviour: false },
  "local-request": { misbehaviour: false },
  shutdown: { misbehaviour: false },
} as const satisfies Record<string, { misbehaviour: boolean }>;

export type DropReason = keyof typeof dropReasons;

export function isMisbehaviour(reason: DropReason): boolean {
  return dropReasons[reason].misbehaviour;
}

/** A peer sent something the protocol forbids; the connection that read it is dropped. */
export class ProtocolError extends Error {
  constructor(
    readonly reason: DropReason,
    message: string,
  ) {
    super(message);
    this.name = "ProtocolError";
  }
}
