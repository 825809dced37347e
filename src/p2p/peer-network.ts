/**
 * The peer network: mutual-TLS connections to the other departments' nodes, who may connect, one
 * connection per peer, redialling, and the send/broadcast surface the node uses.
 *
 * Admission, in order (docs/spec/p2p.md):
 *   1. TLS 1.3, both sides present a certificate that chains to a consortium root (node:tls checks
 *      the chain and validity times; no host name check: a peer is who its key says, see below).
 *   2. The peer certificate parses under our profile and is a node identity (kind and role "node").
 *   3. It is not our own key, and matches the id pinned in the address we dialled, if any.
 *   4. authorizePeer(identity), the node's judgement from the ledger: validator, observer or no.
 *   5. Both send hello; the peer's must name our chain and the id of the key it proved at TLS.
 *   6. One connection per peer: of two, the one dialled by the node with the smaller id survives
 *      (both ends reach the same verdict without talking); two in the same direction mean the peer
 *      redialled, so the newer one replaces the older.
 * Host names are not checked because authorization is by key against the ledger: a certificate
 * tied to an address would break on every address change and add nothing a stolen key lacks.
 */
import type { Socket } from "node:net";
import tls from "node:tls";
import { type Identity, parseIdentityCert } from "../ca/identity.ts";
import { assert, CodedError } from "../core/errors.ts";
import { backoffDelayMs } from "./backoff.ts";
import {
  type ConnectionContext,
  type ConnectionEvents,
  type Direction,
  PeerConnection,
  type PeerRole,
} from "./connection.ts";
import { type DropReason, isMisbehaviour } from "./errors.ts";
import { encodeFrame } from "./framing.ts";
import { encodeMessage, type HelloMessage, type PeerMessage, pingNonceMax } from "./messages.ts";
import { type PeerAddress, type PeerNetworkLimits, parsePeerAddress, resolveLimits } from "./options.ts";
import {
  type Logger,
  mathRandom,
  type NetworkClock,
  type Random,
  silentLogger,
  systemNetworkClock,
  type TimerHandle,
} from "./ports.ts";

export interface PeerTlsOptions {
  /** This node's certificate (PEM); it must be a node identity. */
  readonly certPem: string;
  /** Its private key (PEM), normally encrypted under `passphrase`. */
  readonly keyPem: string;
  readonly passphrase?: string;
  /** Consortium root certificates (PEM): a peer's certificate must chain to one of them. */
  readonly caPems: readonly string[];
}

export interface PeerNetworkOptions {
  readonly chainId: string;
  readonly tls: PeerTlsOptions;
  /** Where to accept peers, or null to only dial out (an observer behind a firewall). */
  readonly listen: { readonly host: string; readonly port: number } | null;
  /** "host:port", "[v6]:port" or "<nodeId>@host:port"; dialled and redialled for as long as we run. */
  readonly peers?: readonly string[];
  /**
   * The node's verdict on an authenticated node certificate, from the ledger: a current validator,
   * an observer, or null to refuse. Called on every new connection and again by reauthorize().
   */
  readonly authorizePeer: (identity: Identity) => PeerRole | null;
  /** Our current block height, for hello. */
  readonly height: () => number;
  readonly limits?: Partial<PeerNetworkLimits>;
  readonly clock?: NetworkClock;
  readonly random?: Random;
  readonly logger?: Logger;
}

export interface PeerInfo {
  /** Validator id: lower-case hex SHA-256 of the peer's SubjectPublicKeyInfo. */
  readonly nodeId: string;
  readonly role: PeerRole;
  readonly dept: string;
  readonly enrollmentId: string;
  readonly direction: Direction;
  readonly remoteAddress: string;
  readonly listenPort: number | null;
  /** From the peer's hello, then its status messages. */
  readonly height: number;
  readonly upAtMs: number;
  readonly rttMs: number | null;
  readonly sendQueueBytes: number;
  readonly sendQueueMessages: number;
  readonly droppedMessages: number;
  readonly bytesReceived: number;
  readonly bytesSent: number;
  readonly messagesReceived: number;
  readonly messagesSent: number;
}

/**
 * Called synchronously from socket events, in arrival order per peer. Handlers must not throw: a
 * throw is a bug in the node and propagates (it stops the process rather than limp on). To refuse
 * what a peer sent, call disconnect(peerId, reason).
 */
export interface PeerNetworkHandlers {
  /** A message from an up peer; hello, ping and pong never reach the node. */
  onMessage(peerId: string, message: PeerMessage): void;
  /** After hello: the peer is authenticated, authorized and the only connection to it. */
  onPeerUp(peer: PeerInfo): void;
  /** Whatever sent it, a peer that was up has gone; messages queued for it are lost. */
  onPeerDown(peerId: string, reason: DropReason): void;
}

/** "disconnected": the message did not fit and the peer was dropped as too slow (consensus). */
export type SendResult = "queued" | "dropped" | "disconnected" | "no-peer";

export interface PeerNetworkStats {
  readonly peers: number;
  readonly pendingConnections: number;
  readonly drops: Readonly<Partial<Record<DropReason, number>>>;
}

interface Dialer {
  readonly address: PeerAddress;
  /** The id of the key last met at this address, so we do not dial a peer we already have. */
  learnedNodeId: string | null;
  /** Failed attempts since the last stable connection; drives the backoff. */
  attempt: number;
  timer: TimerHandle | null;
  connection: PeerConnection | null;
  /** The address is our own: never dialled again. */
  isSelf: boolean;
}

type NetworkState = "new" | "running" | "closed";

export class PeerNetwork {
  /** Our validator id. */
  readonly nodeId: string;
  readonly limits: PeerNetworkLimits;
  private readonly identity: Identity;
  private readonly secureContext: tls.SecureContext;
  private readonly clock: NetworkClock;
  private readonly random: Random;
  private readonly logger: Logger;
  private readonly dialers: Dialer[];
  private readonly dialerOf = new Map<PeerConnection, Dialer>();
  /** Connections past TCP but not yet up (TLS judged or not); bounded by pendingConnectionsMax. */
  private readonly pending = new Set<PeerConnection>();
  /** Up connections, one per peer. */
  private readonly peersById = new Map<string, PeerConnection>();
  /** Every accepted socket, so close() can end even those still in the TLS handshake. */
  private readonly serverSockets = new Set<Socket>();
  private readonly subscribers = new Set<Partial<PeerNetworkHandlers>>();
  private readonly dropCounts: Partial<Record<DropReason, number>> = {};
  private readonly context: ConnectionContext;
  private server: tls.Server | null = null;
  private boundPort: number | null = null;
  private pingTimer: TimerHandle | null = null;
  private pingNonce = 0;
  private state: NetworkState = "new";

  constructor(private readonly options: PeerNetworkOptions) {
    this.limits = resolveLimits(options.limits);
    this.clock = options.clock ?? systemNetworkClock;
    this.random = options.random ?? mathRandom;
    this.logger = options.logger ?? silentLogger;
    this.identity = ownIdentity(options.tls.certPem);
    this.nodeId = this.identity.publicKeyId;
    this.secureContext = createContext(options.tls);
    this.dialers = [];
    for (const text of options.peers ?? []) this.addDialer(text);
    this.context = { limits: this.limits, clock: this.clock, events: this.connectionEvents() };
  }

  // ---- lifecycle ----

  /** Listens (if configured) and starts dialling the configured peers. */
  async start(): Promise<void> {
    assert(this.state === "new", "a PeerNetwork starts once");
    this.state = "running";
    if (this.options.listen !== null) await this.listen(this.options.listen);
    for (const dialer of this.dialers) this.dial(dialer);
    this.schedulePings();
  }

  /** The port we accept peers on (useful with port 0), or null when not listening. */
  get listenPort(): number | null {
    return this.boundPort;
  }

  /** Drops every connection (reason "shutdown") and stops listening and dialling. */
  async close(): Promise<void> {
    if (this.state === "closed") return;
    const wasRunning = this.state === "running";
    this.state = "closed";
    this.pingTimer?.cancel();
    for (const dialer of this.dialers) dialer.timer?.cancel();
    for (const connection of [...this.pending, ...this.peersById.values()]) {
      connection.close("shutdown", "the network is closing");
    }
    for (const socket of this.serverSockets) socket.destroy();
    const server = this.server;
    if (wasRunning && server !== null) await new Promise<void>((resolve) => server.close(() => resolve()));
  }

  /**
   * Dials one more address, now and whenever it is down (a node admitted at run time). An address
   * already configured is ignored.
   */
  addPeer(text: string): void {
    const dialer = this.addDialer(text);
    if (dialer !== null && this.state === "running") this.dial(dialer);
  }

  subscribe(handlers: Partial<PeerNetworkHandlers>): () => void {
    this.subscribers.add(handlers);
    return () => this.subscribers.delete(handlers);
  }

  // ---- sending ----

  send(peerId: string, message: PeerMessage): SendResult {
    assertPeerMessage(message);
    const connection = this.peersById.get(peerId);
    if (connection === undefined) return "no-peer";
    return sendResultOf(connection.enqueue(message));
  }

  /** Encodes once and queues for every up peer but `except`; returns how many queued it. */
  broadcast(message: PeerMessage, except?: string | ReadonlySet<string>): number {
    assertPeerMessage(message);
    const frame = encodeFrame(encodeMessage(message, this.limits), this.limits.frameBytesMax);
    let queued = 0;
    // A snapshot: an overflowing peer is closed (and removed) during the loop.
    for (const [peerId, connection] of [...this.peersById]) {
      if (peerId === except || (typeof except === "object" && except.has(peerId))) continue;
      if (connection.enqueueFrame(message.type, frame) === "queued") queued++;
    }
    return queued;
  }

  disconnect(peerId: string, reason: DropReason = "local-request", detail = "the node asked"): void {
    this.peersById.get(peerId)?.close(reason, detail);
  }

  /** Asks authorizePeer again about every connected peer, e.g. after the validator set changed. */
  reauthorize(): void {
    for (const connection of [...this.peersById.values(), ...this.pending]) {
      if (connection.identity === null || connection.state === "closed") continue;
      const role = this.options.authorizePeer(connection.identity);
      if (role === null) connection.close("unauthorized", "no longer authorized by the ledger");
      else connection.role = role;
    }
  }

  // ---- introspection ----

  peerIds(): string[] {
    return [...this.peersById.keys()];
  }

  /** Cheap enough for every message (e.g. to ignore votes from observers). */
  roleOf(peerId: string): PeerRole | undefined {
    return this.peersById.get(peerId)?.role ?? undefined;
  }

  peer(peerId: string): PeerInfo | undefined {
    const connection = this.peersById.get(peerId);
    return connection === undefined ? undefined : peerInfoOf(connection);
  }

  peers(): PeerInfo[] {
    return [...this.peersById.values()].map(peerInfoOf);
  }

  stats(): PeerNetworkStats {
    return {
      peers: this.peersById.size,
      pendingConnections: this.pending.size,
      drops: { ...this.dropCounts },
    };
  }

  // ---- accepting ----

  private async listen(where: { readonly host: string; readonly port: number }): Promise<void> {
    const server = tls.createServer({
      ...contextOptions(this.options.tls),
      requestCert: true,
      rejectUnauthorized: true,
      handshakeTimeout: this.limits.handshakeTimeoutMs,
    });
    // A hard cap on sockets, counting those still in the TLS handshake (unauthenticated).
    server.maxConnections = this.limits.peersMax + this.limits.pendingConnectionsMax;
    server.on("connection", (socket: Socket) => {
      this.serverSockets.add(socket);
      socket.once("close", () => this.serverSockets.delete(socket));
    });
    server.on("secureConnection", (socket: tls.TLSSocket) => this.onInbound(socket));
    server.on("tlsClientError", (error: Error, socket: tls.TLSSocket) => {
      this.countDrop("tls-failed");
      this.logger.warn(
        {
          reason: "tls-failed",
          remote: `${socket.remoteAddress}:${socket.remotePort}`,
          detail: error.message,
        },
        "p2p: inbound TLS handshake refused",
      );
    });
    this.server = server;
    await new Promise<void>((resolve, reject) => {
      server.once("error", reject);
      server.listen(where.port, where.host, () => {
        server.off("error", reject);
        resolve();
      });
    });
    server.on("error", (error: Error) => this.logger.error({ detail: error.message }, "p2p: server error"));
    const address = server.address();
    assert(address !== null && typeof address === "object", "a listening TLS server has an address");
    this.boundPort = address.port;
    this.logger.info(
      {
        host: where.host,
        port: this.boundPort,
        nodeId: this.nodeId,
        enrollmentId: this.identity.enrollmentId,
      },
      "p2p: listening",
    );
  }

  private onInbound(socket: tls.TLSSocket): void {
    if (this.state !== "running") {
      socket.destroy();
      return;
    }
    const remote = `${socket.remoteAddress}:${socket.remotePort}`;
    const connection = new PeerConnection(socket, "inbound", remote, this.context);
    if (this.pending.size >= this.limits.pendingConnectionsMax) {
      connection.close("pending-full", `${this.pending.size} connections are already being admitted`);
      return;
    }
    this.pending.add(connection);
    this.onSecured(connection);
  }

  // ---- dialling ----

  private addDialer(text: string): Dialer | null {
    const address = parsePeerAddress(text);
    if (this.dialers.some((d) => d.address.text === address.text)) return null;
    if (this.dialers.length >= this.limits.configuredPeersMax) {
      throw new CodedError("BAD_REQUEST", `p2p: at most ${this.limits.configuredPeersMax} peers`, "peers");
    }
    const dialer: Dialer = {
      address,
      learnedNodeId: null,
      attempt: 0,
      timer: null,
      connection: null,
      isSelf: false,
    };
    this.dialers.push(dialer);
    return dialer;
  }

  private dial(dialer: Dialer): void {
    dialer.timer = null;
    if (this.state !== "running" || dialer.isSelf || dialer.connection !== null) return;
    const knownId = dialer.address.nodeId ?? dialer.learnedNodeId;
    // Connected already (perhaps it dialled us): dial again when that connection goes down.
    if (knownId !== null && this.peersById.has(knownId)) return;
    if (
      this.peersById.size >= this.limits.peersMax ||
      this.pending.size >= this.limits.pendingConnectionsMax
    ) {
      this.scheduleDial(dialer);
      return;
    }
    const { host, port } = dialer.address;
    const socket = tls.connect({
      host,
      port,
      secureContext: this.secureContext,
      rejectUnauthorized: true,
      checkServerIdentity: () => undefined,
    });
    const connection = new PeerConnection(socket, "outbound", dialer.address.text, this.context);
    dialer.connection = connection;
    this.dialerOf.set(connection, dialer);
    this.pending.add(connection);
    socket.once("secureConnect", () => {
      if (connection.state === "handshaking") this.onSecured(connection);
    });
  }

  private scheduleDial(dialer: Dialer): void {
    if (this.state !== "running" || dialer.isSelf || dialer.timer !== null) return;
    const delayMs = backoffDelayMs(dialer.attempt, this.limits, this.random);
    dialer.attempt++;
    dialer.timer = this.clock.setTimer(delayMs, () => this.dial(dialer));
  }

  // ---- admission ----

  private connectionEvents(): ConnectionEvents {
    return {
      hello: (connection, hello) => this.onHello(connection, hello),
      message: (connection, message) => this.emitMessage(connection, message),
      closed: (connection, reason, detail) => this.onClosed(connection, reason, detail),
    };
  }

  /** Steps 2-4: who is this, and may they talk to us at all. */
  private onSecured(connection: PeerConnection): void {
    const verdict = this.judgeCertificate(connection);
    if ("reason" in verdict) {
      connection.close(verdict.reason, verdict.detail);
      return;
    }
    connection.accept(verdict.identity, verdict.role, this.ourHello());
  }

  private judgeCertificate(
    connection: PeerConnection,
  ): { identity: Identity; role: PeerRole } | { reason: DropReason; detail: string } {
    const raw = connection.socket.getPeerCertificate(false)?.raw;
    if (!connection.socket.authorized || raw === undefined) {
      return { reason: "bad-certificate", detail: "no verified peer certificate" };
    }
    let identity: Identity;
    try {
      identity = parseIdentityCert(new Uint8Array(raw));
    } catch (error) {
      return { reason: "bad-certificate", detail: (error as Error).message };
    }
    if (identity.kind !== "node" || !identity.roles.includes("node")) {
      return { reason: "not-a-node", detail: `${identity.enrollmentId} is a ${identity.kind} identity` };
    }
    const dialer = this.dialerOf.get(connection);
    if (dialer !== undefined) dialer.learnedNodeId = identity.publicKeyId;
    if (identity.publicKeyId === this.nodeId) {
      if (dialer !== undefined) dialer.isSelf = true;
      return { reason: "self", detail: "this is our own key" };
    }
    const pinned = dialer?.address.nodeId ?? null;
    if (pinned !== null && pinned !== identity.publicKeyId) {
      return { reason: "node-id-unexpected", detail: `expected ${pinned}, met ${identity.publicKeyId}` };
    }
    const role = this.options.authorizePeer(identity);
    if (role === null)
      return { reason: "unauthorized", detail: `${identity.enrollmentId} is not authorized` };
    return { identity, role };
  }

  private ourHello(): HelloMessage {
    return {
      type: "hello",
      chainId: this.options.chainId,
      nodeId: this.nodeId,
      height: this.options.height(),
      listenPort: this.boundPort,
    };
  }

  /** Steps 5-6. */
  private onHello(connection: PeerConnection, hello: HelloMessage): void {
    if (hello.chainId !== this.options.chainId) {
      connection.close("wrong-chain", `peer serves ${hello.chainId}, we serve ${this.options.chainId}`);
      return;
    }
    if (hello.nodeId !== connection.nodeId) {
      connection.close("node-id-mismatch", `hello says ${hello.nodeId}, the TLS key is ${connection.nodeId}`);
      return;
    }
    const existing = this.peersById.get(hello.nodeId);
    if (existing !== undefined) {
      if (!this.prefersNewConnection(existing, connection)) {
        connection.close("duplicate", "already connected; the other connection wins");
        return;
      }
      existing.close("duplicate", "replaced by a newer connection from the same peer");
    } else if (this.peersById.size >= this.limits.peersMax) {
      connection.close("peers-full", `${this.peersById.size} peers connected`);
      return;
    }
    this.markUp(connection, hello);
  }

  /** Deterministic on both ends, so two nodes dialling each other keep the same one connection. */
  private prefersNewConnection(existing: PeerConnection, fresh: PeerConnection): boolean {
    if (existing.direction === fresh.direction) return true;
    return this.dialledBy(fresh) < this.dialledBy(existing);
  }

  private dialledBy(connection: PeerConnection): string {
    return connection.direction === "outbound" ? this.nodeId : connection.nodeId!;
  }

  private markUp(connection: PeerConnection, hello: HelloMessage): void {
    this.pending.delete(connection);
    connection.markUp(hello);
    this.peersById.set(hello.nodeId, connection);
    const info = peerInfoOf(connection);
    this.logger.info(
      { peer: info.nodeId, dept: info.dept, role: info.role, direction: info.direction, height: info.height },
      "p2p: peer up",
    );
    for (const subscriber of [...this.subscribers]) subscriber.onPeerUp?.(info);
  }

  private emitMessage(connection: PeerConnection, message: PeerMessage): void {
    const peerId = connection.nodeId!;
    for (const subscriber of [...this.subscribers]) subscriber.onMessage?.(peerId, message);
  }

  // ---- departures ----

  private onClosed(connection: PeerConnection, reason: DropReason, detail: string): void {
    this.pending.delete(connection);
    this.countDrop(reason);
    this.log(connection, reason, detail);
    const upForMs = connection.upAtMs === null ? 0 : this.clock.now() - connection.upAtMs;
    const wasStable = upForMs >= this.limits.connectionStableMs;
    const nodeId = connection.nodeId;
    if (nodeId !== null && this.peersById.get(nodeId) === connection) {
      this.peersById.delete(nodeId);
      for (const subscriber of [...this.subscribers]) subscriber.onPeerDown?.(nodeId, reason);
      this.redialAddressesOf(nodeId, wasStable);
    }
    const dialer = this.dialerOf.get(connection);
    if (dialer !== undefined) {
      this.dialerOf.delete(connection);
      dialer.connection = null;
      if (wasStable) dialer.attempt = 0;
      this.scheduleDial(dialer);
    }
  }

  /** The peer went down: its addresses that were idle because it was connected are dialled again. */
  private redialAddressesOf(nodeId: string, wasStable: boolean): void {
    for (const dialer of this.dialers) {
      const knownId = dialer.address.nodeId ?? dialer.learnedNodeId;
      if (knownId !== nodeId || dialer.connection !== null) continue;
      if (wasStable) {
        dialer.attempt = 0;
        dialer.timer?.cancel();
        dialer.timer = null;
      }
      this.scheduleDial(dialer);
    }
  }

  private countDrop(reason: DropReason): void {
    this.dropCounts[reason] = (this.dropCounts[reason] ?? 0) + 1;
  }

  private log(connection: PeerConnection, reason: DropReason, detail: string): void {
    const fields = {
      peer: connection.nodeId ?? connection.remoteAddress,
      remote: connection.remoteAddress,
      direction: connection.direction,
      reason,
      detail,
    };
    if (isMisbehaviour(reason)) this.logger.warn(fields, "p2p: peer dropped for misbehaviour");
    else if (reason === "shutdown") this.logger.debug(fields, "p2p: connection closed");
    else this.logger.info(fields, "p2p: connection closed");
  }

  // ---- liveness ----

  /** One timer for all peers: drop the silent, ping the rest. */
  private schedulePings(): void {
    this.pingTimer = this.clock.setTimer(this.limits.pingIntervalMs, () => {
      if (this.state !== "running") return;
      const now = this.clock.now();
      for (const connection of [...this.peersById.values()]) {
        const silentMs = now - connection.lastReceivedMs;
        if (silentMs > this.limits.pingTimeoutMs)
          connection.close("ping-timeout", `silent for ${silentMs} ms`);
        else connection.ping(this.nextPingNonce());
      }
      this.schedulePings();
    });
  }

  private nextPingNonce(): number {
    this.pingNonce = this.pingNonce >= pingNonceMax ? 0 : this.pingNonce + 1;
    return this.pingNonce;
  }
}

// ---------------------------------------------------------------------------------------------

function ownIdentity(certPem: string): Identity {
  const identity = parseIdentityCert(certPem);
  if (identity.kind !== "node" || !identity.roles.includes("node")) {
    throw new CodedError(
      "CA_BAD_CERT",
      "p2p: the certificate given to the peer network is not a node identity",
    );
  }
  return identity;
}

function contextOptions(options: PeerTlsOptions): tls.SecureContextOptions {
  assert(options.caPems.length > 0, "p2p: at least one consortium root");
  return {
    cert: options.certPem,
    key: options.keyPem,
    ...(options.passphrase === undefined ? {} : { passphrase: options.passphrase }),
    ca: [...options.caPems],
    minVersion: "TLSv1.3",
  };
}

/** Built once: opens the key now, so a wrong passphrase fails at start, not at the first dial. */
function createContext(options: PeerTlsOptions): tls.SecureContext {
  try {
    return tls.createSecureContext(contextOptions(options));
  } catch (error) {
    // OpenSSL's messages never carry key material, but a passphrase problem deserves our own words.
    const mismatch = /mismatch/i.test((error as Error).message);
    throw new CodedError(
      mismatch ? "CA_BAD_INPUT" : "KEY_LOCKED",
      mismatch
        ? "p2p: the node key does not match the node certificate"
        : "p2p: cannot open the node key for TLS: wrong passphrase or damaged key",
      mismatch ? "keyFile" : "passphrase",
    );
  }
}

function assertPeerMessage(message: PeerMessage): void {
  const type: string = message.type;
  assert(type !== "hello" && type !== "ping" && type !== "pong", `${type} belongs to the network itself`);
}

function sendResultOf(result: "queued" | "dropped" | "overflow"): SendResult {
  return result === "overflow" ? "disconnected" : result;
}

function peerInfoOf(connection: PeerConnection): PeerInfo {
  const { identity, role, hello, upAtMs } = connection;
  assert(identity !== null && role !== null && hello !== null && upAtMs !== null, "peer info of an up peer");
  return {
    nodeId: identity.publicKeyId,
    role,
    dept: identity.dept,
    enrollmentId: identity.enrollmentId,
    direction: connection.direction,
    remoteAddress: connection.remoteAddress,
    listenPort: hello.listenPort,
    height: connection.height,
    upAtMs,
    rttMs: connection.rttMs,
    sendQueueBytes: connection.sendQueueBytes,
    sendQueueMessages: connection.sendQueueMessages,
    droppedMessages: connection.droppedMessages,
    bytesReceived: connection.bytesReceived,
    bytesSent: connection.bytesSent,
    messagesReceived: connection.messagesReceived,
    messagesSent: connection.messagesSent,
  };
}
