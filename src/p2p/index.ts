/**
 * The peer network between department nodes: mutual TLS, length-prefixed canonical CBOR messages,
 * bounded per-peer queues and budgets, and transaction gossip. See docs/spec/p2p.md.
 */
export { type BackoffOptions, backoffDelayMs } from "./backoff.ts";
export type { Direction, PeerRole } from "./connection.ts";
export { type DropReason, dropReasons, isMisbehaviour, ProtocolError } from "./errors.ts";
export { encodeFrame, FrameDecoder, frameBytesMaxDefault, frameHeaderBytes } from "./framing.ts";
export {
  type BlockRequestMessage,
  type BlockResponseMessage,
  type ConsensusKind,
  type ConsensusMessage,
  consensusKinds,
  decodeMessage,
  defaultMessageLimits,
  encodeMessage,
  type HelloMessage,
  type Message,
  type MessageLimits,
  type MessageType,
  messageTypes,
  type PeerMessage,
  type StatusMessage,
  type TxMessage,
} from "./messages.ts";
export {
  defaultPeerNetworkLimits,
  type PeerAddress,
  type PeerNetworkLimits,
  parsePeerAddress,
  resolveLimits,
} from "./options.ts";
export {
  type PeerInfo,
  PeerNetwork,
  type PeerNetworkHandlers,
  type PeerNetworkOptions,
  type PeerNetworkStats,
  type PeerTlsOptions,
  type SendResult,
} from "./peer-network.ts";
export {
  type Logger,
  mathRandom,
  type NetworkClock,
  type Random,
  silentLogger,
  systemNetworkClock,
  type TimerHandle,
} from "./ports.ts";
export { type SendPolicy, sendPolicies } from "./send-queue.ts";
export {
  type GossipNetwork,
  type TxAdmission,
  TxGossip,
  type TxGossipOptions,
  type TxGossipStats,
} from "./tx-gossip.ts";
