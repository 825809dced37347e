/**
 * The peer network over real TLS sockets on loopback (port 0), with certificates from the CA
 * library: who may connect, hello, send and broadcast, garbage and floods, slow readers, redialling
 * and transaction gossip. Misbehaving peers are raw TLS clients that write frames by hand.
 */
import assert from "node:assert/strict";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { after as afterAll, afterEach, before, describe, it } from "node:test";
import tls from "node:tls";
import {
  createCsr,
  createRootCa,
  generateP256KeyPair,
  openRegistry,
  parseIdentityCert,
} from "../../src/ca/index.ts";
import { encryptPrivateKeyPem } from "../../src/ca/keys.ts";
import { bootstrapNetwork } from "../../src/devnet/bootstrap.ts";
import { nodeFiles } from "../../src/node/config.ts";
import type { PeerRole } from "../../src/p2p/connection.ts";
import type { DropReason } from "../../src/p2p/errors.ts";
import { encodeFrame, FrameDecoder } from "../../src/p2p/framing.ts";
import {
  decodeMessage,
  defaultMessageLimits,
  encodeMessage,
  type Message,
  type MessageLimits,
  type PeerMessage,
} from "../../src/p2p/messages.ts";
import type { PeerNetworkLimits } from "../../src/p2p/options.ts";
import { type PeerInfo, PeerNetwork } from "../../src/p2p/peer-network.ts";
import { type Logger, type NetworkClock, systemNetworkClock } from "../../src/p2p/ports.ts";
import { type TxAdmission, TxGossip } from "../../src/p2p/tx-gossip.ts";

const chainId = "citychain-p2p-test";

interface Credentials {
  readonly name: string;
  readonly certPem: string;
  readonly keyPem: string;
  readonly nodeId: string;
}

let tmp: string;
let passphrase: string;
let caPem: string;
/** node0..node3 of the consortium. */
let nodes: Credentials[];
/** A person's certificate from the same CA: valid, but not a node. */
let user: Credentials;
/** A node certificate from a CA nobody here trusts. */
let foreign: Credentials;

before(async () => {
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), "citychain-p2p-"));
  const layout = await bootstrapNetwork({
    dir: path.join(tmp, "net"),
    nodes: 4,
    apiPortBase: 1, // never started: only the identities are used
    departments: [
      { code: "infocenter", name: "Information Center" },
      { code: "tax", name: "Taxation Bureau" },
    ],
  });
  passphrase = fs.readFileSync(layout.passphrasePath, "utf8").trim();
  caPem = fs.readFileSync(layout.caCertPath, "utf8");
  nodes = layout.nodes.map((node) =>
    credentials(
      node.name,
      fs.readFileSync(path.join(node.dir, nodeFiles.cert), "utf8"),
      fs.readFileSync(path.join(node.dir, nodeFiles.key), "utf8"),
    ),
  );
  const officer = layout.members.find((m) => m.enrollmentId === "tax.officer")!;
  user = credentials(
    "tax.officer",
    fs.readFileSync(officer.certPath, "utf8"),
    fs.readFileSync(officer.keyPath, "utf8"),
  );
  foreign = await foreignNode(path.join(tmp, "foreign-ca"));
});

afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

function credentials(name: string, certPem: string, keyPem: string): Credentials {
  return { name, certPem, keyPem, nodeId: parseIdentityCert(certPem).publicKeyId };
}

async function foreignNode(dir: string): Promise<Credentials> {
  const ca = await createRootCa({ dir, validityDays: 30, passphrase });
  const registry = openRegistry({ ca });
  try {
    registry.registerDepartment("infocenter", "Elsewhere");
    const enrollmentId = "infocenter.node9";
    const { secret } = await registry.registerIdentity({
      enrollmentId,
      dept: "infocenter",
      roles: ["node"],
      kind: "node",
    });
    const keys = generateP256KeyPair();
    const certPem = await registry.enroll(
      enrollmentId,
      secret,
      await createCsr(keys.privateKey, enrollmentId),
    );
    return credentials("foreign", certPem, encryptPrivateKeyPem(keys.privateKey, passphrase));
  } finally {
    registry.close();
  }
}

// ---------------------------------------------------------------------------------------------
// Harness

interface LogEntry {
  readonly level: string;
  readonly fields: Record<string, unknown>;
  readonly message: string;
}

interface TestPeer {
  readonly network: PeerNetwork;
  readonly id: string;
  readonly address: string;
  readonly received: Array<{ from: string; message: PeerMessage }>;
  readonly ups: PeerInfo[];
  readonly downs: Array<{ peerId: string; reason: DropReason }>;
  readonly logs: LogEntry[];
}

const cleanups: Array<() => Promise<void> | void> = [];
afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
});

/** Fast redials for tests; everything else at its default unless a test says otherwise. */
const testLimits: Partial<PeerNetworkLimits> = {
  backoffBaseMs: 40,
  backoffMaxMs: 400,
  handshakeTimeoutMs: 5000,
};

/** Small frames, so a slow reader's queue fills after little traffic. */
const smallFrames: Partial<PeerNetworkLimits> = {
  frameBytesMax: 64 * 1024,
  txBytesMax: 16 * 1024,
  consensusBytesMax: 60 * 1024,
  blockBytesMax: 32 * 1024,
  commitBytesMax: 16 * 1024,
  sendQueueBytesMax: 256 * 1024,
  sendQueueMessagesMax: 64,
  inboundBytesBurst: 1024 * 1024,
};

function memoryLogger(logs: LogEntry[]): Logger {
  const at = (level: string) => (fields: Record<string, unknown>, message: string) =>
    logs.push({ level, fields, message });
  return { debug: at("debug"), info: at("info"), warn: at("warn"), error: at("error") };
}

/** Validators are node0..node3 unless a test says otherwise. */
function validatorsOnly(identity: { publicKeyId: string }): PeerRole | null {
  return nodes.some((n) => n.nodeId === identity.publicKeyId) ? "validator" : null;
}

async function startPeer(
  who: Credentials,
  options: {
    peers?: string[];
    authorizePeer?: (identity: { publicKeyId: string }) => PeerRole | null;
    limits?: Partial<PeerNetworkLimits>;
    port?: number;
    chainId?: string;
    caPems?: string[];
    clock?: NetworkClock;
  } = {},
): Promise<TestPeer> {
  const logs: LogEntry[] = [];
  const network = new PeerNetwork({
    chainId: options.chainId ?? chainId,
    tls: { certPem: who.certPem, keyPem: who.keyPem, passphrase, caPems: options.caPems ?? [caPem] },
    listen: { host: "127.0.0.1", port: options.port ?? 0 },
    peers: options.peers ?? [],
    authorizePeer: (identity) => (options.authorizePeer ?? validatorsOnly)(identity),
    height: () => 7,
    limits: { ...testLimits, ...options.limits },
    logger: memoryLogger(logs),
    ...(options.clock === undefined ? {} : { clock: options.clock }),
  });
  const peer: TestPeer = {
    network,
    id: network.nodeId,
    address: "",
    received: [],
    ups: [],
    downs: [],
    logs,
  };
  network.subscribe({
    onMessage: (from, message) => peer.received.push({ from, message }),
    onPeerUp: (info) => peer.ups.push(info),
    onPeerDown: (peerId, reason) => peer.downs.push({ peerId, reason }),
  });
  await network.start();
  cleanups.push(() => network.close());
  return { ...peer, address: `127.0.0.1:${network.listenPort}` };
}

async function waitFor(condition: () => boolean, what: string, timeoutMs = 8000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!condition()) {
    if (Date.now() > deadline) assert.fail(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 5));
  }
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

function dropped(peer: TestPeer, reason: DropReason): number {
  return peer.network.stats().drops[reason] ?? 0;
}

/** A hand-driven TLS client: writes whatever bytes a test wants and records what comes back. */
interface RawPeer {
  readonly socket: tls.TLSSocket;
  readonly received: Message[];
  readonly closed: Promise<void>;
  isClosed(): boolean;
  send(message: Message): void;
  sendPayload(payload: Uint8Array): void;
  hello(overrides?: Partial<Extract<Message, { type: "hello" }>>): void;
}

async function rawConnect(
  port: number,
  who: Credentials,
  options: { caPems?: string[]; limits?: MessageLimits } = {},
): Promise<RawPeer> {
  const limits = options.limits ?? defaultMessageLimits;
  const socket = tls.connect({
    host: "127.0.0.1",
    port,
    cert: who.certPem,
    key: who.keyPem,
    passphrase,
    ca: options.caPems ?? [caPem],
    minVersion: "TLSv1.3",
    checkServerIdentity: () => undefined,
  });
  const received: Message[] = [];
  const decoder = new FrameDecoder(limits.frameBytesMax);
  let closed = false;
  const closedPromise = new Promise<void>((resolve) =>
    socket.on("close", () => {
      closed = true;
      resolve();
    }),
  );
  socket.on("error", () => {});
  socket.on("data", (chunk: Buffer) =>
    decoder.push(chunk, (payload) => received.push(decodeMessage(payload, limits))),
  );
  await new Promise<void>((resolve, reject) => {
    socket.once("secureConnect", () => resolve());
    socket.once("error", reject);
  });
  cleanups.push(() => {
    socket.destroy();
  });
  const raw: RawPeer = {
    socket,
    received,
    closed: closedPromise,
    isClosed: () => closed,
    send: (message) => raw.sendPayload(encodeMessage(message, limits)),
    sendPayload: (payload) => socket.write(encodeFrame(payload, limits.frameBytesMax)),
    hello: (overrides = {}) =>
      raw.send({ type: "hello", chainId, nodeId: who.nodeId, height: 1, listenPort: null, ...overrides }),
  };
  return raw;
}

async function connectedPair(limitsA: Partial<PeerNetworkLimits> = {}): Promise<[TestPeer, TestPeer]> {
  const b = await startPeer(nodes[1]!);
  const a = await startPeer(nodes[0]!, { peers: [b.address], limits: limitsA });
  await waitFor(
    () => a.network.peerIds().length === 1 && b.network.peerIds().length === 1,
    "a and b connected",
  );
  return [a, b];
}

const consensus = (size: number, fill = 1): PeerMessage => ({
  type: "consensus",
  kind: "vote",
  bytes: new Uint8Array(size).fill(fill),
});

// ---------------------------------------------------------------------------------------------

describe("peer network over TLS", { timeout: 60_000 }, () => {
  it("connects two nodes: hello, then send reaches the one peer", async () => {
    const [a, b] = await connectedPair();
    assert.deepEqual(a.network.peerIds(), [b.id]);
    assert.deepEqual(b.network.peerIds(), [a.id]);
    const seenByA = a.ups[0]!;
    assert.equal(seenByA.nodeId, b.id);
    assert.equal(seenByA.direction, "outbound");
    assert.equal(seenByA.role, "validator");
    assert.equal(seenByA.height, 7);
    assert.equal(seenByA.enrollmentId, "tax.node1");
    assert.equal(a.network.roleOf(b.id), "validator");
    assert.equal(b.ups[0]!.listenPort, a.network.listenPort);
    assert.equal(a.network.send(b.id, consensus(100)), "queued");
    assert.equal(b.network.send(a.id, { type: "status", height: 9 }), "queued");
    assert.equal(a.network.send("00".repeat(32), consensus(1)), "no-peer");
    await waitFor(() => b.received.length === 1 && a.received.length === 1, "both messages");
    assert.deepEqual(b.received[0], { from: a.id, message: consensus(100) });
    assert.deepEqual(a.received[0], { from: b.id, message: { type: "status", height: 9 } });
    assert.equal(a.network.peer(b.id)!.height, 9, "status updates the peer's height");
  });

  it("connects three nodes: broadcast reaches all but the excepted, send reaches one", async () => {
    // c's ledger lists a as an observer: connected all the same, with that role.
    const c = await startPeer(nodes[2]!, {
      authorizePeer: (identity) => (identity.publicKeyId === nodes[0]!.nodeId ? "observer" : "validator"),
    });
    const b = await startPeer(nodes[1]!, { peers: [c.address] });
    const a = await startPeer(nodes[0]!, { peers: [b.address, c.address] });
    const all = [a, b, c];
    await waitFor(() => all.every((p) => p.network.peerIds().length === 2), "a full mesh");
    assert.equal(c.network.roleOf(a.id), "observer");
    assert.equal(c.network.roleOf(b.id), "validator");
    assert.equal(a.network.broadcast({ type: "block-request", height: 3 }), 2);
    await waitFor(() => b.received.length === 1 && c.received.length === 1, "the broadcast");
    assert.deepEqual(b.received[0], { from: a.id, message: { type: "block-request", height: 3 } });
    assert.equal(c.network.broadcast(consensus(10), a.id), 1);
    c.network.send(a.id, consensus(20));
    await waitFor(() => b.received.length === 2 && a.received.length === 1, "the second round");
    assert.deepEqual(b.received[1]!.message, consensus(10));
    assert.deepEqual(a.received[0]!.message, consensus(20));
  });

  it("keeps one connection when two nodes dial each other, and a redial replaces the older", async () => {
    const a = await startPeer(nodes[0]!);
    const b = await startPeer(nodes[1]!);
    a.network.addPeer(b.address);
    b.network.addPeer(a.address);
    await waitFor(
      () => a.network.peerIds().length === 1 && b.network.peerIds().length === 1,
      "one connection",
    );
    await sleep(300);
    assert.deepEqual(a.network.peerIds(), [b.id]);
    assert.deepEqual(b.network.peerIds(), [a.id]);
    const aSide = a.network.peer(b.id)!;
    const bSide = b.network.peer(a.id)!;
    assert.notEqual(aSide.direction, bSide.direction, "both ends agree on the one connection");
    const dialler = aSide.direction === "outbound" ? a.id : b.id;
    assert.equal(dialler, [a.id, b.id].sort()[0], "the connection dialled by the smaller id survives");
    assert.ok(a.ups.length <= 2 && b.ups.length <= 2, "no flapping");

    // The same node connecting twice in the same direction: the newer connection wins.
    const victim = await startPeer(nodes[0]!);
    const first = await rawConnect(victim.network.listenPort!, nodes[3]!);
    first.hello();
    await waitFor(() => victim.network.peerIds().length === 1, "the first connection");
    const second = await rawConnect(victim.network.listenPort!, nodes[3]!);
    second.hello();
    await first.closed;
    await waitFor(() => victim.ups.length === 2, "the replacement up");
    assert.deepEqual(victim.downs, [{ peerId: nodes[3]!.nodeId, reason: "duplicate" }]);
    assert.equal(second.isClosed(), false);
  });

  it("refuses a certificate from a foreign CA at TLS, in both directions", async () => {
    const a = await startPeer(nodes[0]!);
    // The foreign node trusts our root, so only our side can refuse it.
    const raw = await rawConnect(a.network.listenPort!, foreign, { caPems: [caPem] }).catch(() => null);
    if (raw !== null) await raw.closed;
    await waitFor(() => dropped(a, "tls-failed") === 1, "the TLS refusal");
    assert.equal(a.ups.length, 0);
    assert.ok(a.logs.some((l) => l.fields["reason"] === "tls-failed" && l.level === "warn"));

    // We dial a foreign server (it trusts our root); our client refuses its certificate.
    const stranger = await startPeer(foreign, { caPems: [caPem], authorizePeer: () => "validator" });
    const b = await startPeer(nodes[1]!, { peers: [stranger.address] });
    await waitFor(() => dropped(b, "socket-error") >= 1, "the client-side refusal");
    assert.equal(b.ups.length + stranger.ups.length, 0);
    const refusal = b.logs.find((l) => l.fields["reason"] === "socket-error")!;
    assert.match(String(refusal.fields["detail"]), /certificate/);
  });

  it("drops a user certificate, and a node that authorizePeer refuses, before hello", async () => {
    const a = await startPeer(nodes[0]!);
    const person = await rawConnect(a.network.listenPort!, user);
    await person.closed;
    assert.equal(dropped(a, "not-a-node"), 1);
    assert.equal(person.received.length, 0, "no hello for a person");

    const refused = new Set([nodes[2]!.nodeId]);
    const strict = await startPeer(nodes[1]!, {
      authorizePeer: (identity) => (refused.has(identity.publicKeyId) ? null : validatorsOnly(identity)),
    });
    const c = await startPeer(nodes[2]!, { peers: [strict.address] });
    await waitFor(() => dropped(strict, "unauthorized") >= 1, "the refusal");
    assert.equal(strict.ups.length + c.ups.length, 0);

    // Authorization is asked again when the ledger changes.
    const d = await startPeer(nodes[3]!, { peers: [strict.address] });
    await waitFor(() => strict.network.peerIds().includes(d.id), "d connected");
    refused.add(d.id);
    strict.network.reauthorize();
    assert.equal(strict.network.peerIds().includes(d.id), false);
    assert.deepEqual(strict.downs.at(-1), { peerId: d.id, reason: "unauthorized" });
  });

  it("drops a hello for another chain, or with a node id that is not its key's", async () => {
    const a = await startPeer(nodes[0]!);
    const port = a.network.listenPort!;
    const wrongChain = await rawConnect(port, nodes[3]!);
    wrongChain.hello({ chainId: "some-other-chain" });
    await wrongChain.closed;
    assert.equal(dropped(a, "wrong-chain"), 1);

    const impostor = await rawConnect(port, nodes[3]!);
    impostor.hello({ nodeId: nodes[1]!.nodeId });
    await impostor.closed;
    assert.equal(dropped(a, "node-id-mismatch"), 1);

    const early = await rawConnect(port, nodes[3]!);
    early.send({ type: "status", height: 1 });
    await early.closed;
    assert.equal(dropped(a, "unexpected-message"), 1);
    assert.equal(a.ups.length, 0);
  });

  it("drops a peer that sends garbage or an oversized frame; the others carry on", async () => {
    const [a, b] = await connectedPair();
    const port = a.network.listenPort!;

    const garbage = await rawConnect(port, nodes[3]!);
    garbage.hello();
    await waitFor(() => a.network.peerIds().length === 2, "the garbage peer up");
    garbage.sendPayload(Uint8Array.from({ length: 200 }, (_, i) => (i * 37) & 0xff));
    await garbage.closed;
    assert.equal(dropped(a, "bad-message"), 1);

    const oversized = await rawConnect(port, nodes[3]!);
    oversized.hello();
    await waitFor(() => a.network.peerIds().length === 2, "the oversized peer up");
    // Only a header claiming 64 MiB: refused without waiting for (or buffering) the body.
    oversized.socket.write(Uint8Array.of(0x04, 0x00, 0x00, 0x00));
    await oversized.closed;
    assert.equal(dropped(a, "frame-too-large"), 1);

    const empty = await rawConnect(port, nodes[3]!);
    empty.socket.write(Uint8Array.of(0, 0, 0, 0));
    await empty.closed;
    assert.equal(dropped(a, "frame-empty"), 1);

    assert.deepEqual(a.network.peerIds(), [b.id]);
    a.network.send(b.id, consensus(5));
    await waitFor(() => b.received.length === 1, "a message after the garbage");
  });

  it("drops a peer that floods beyond its inbound message budget", async () => {
    const b = await startPeer(nodes[1]!);
    // Time stands still for a's budgets, so the burst is all a peer gets, however slow the machine.
    const frozen: NetworkClock = { now: () => 1_000_000, setTimer: systemNetworkClock.setTimer };
    const a = await startPeer(nodes[0]!, {
      peers: [b.address],
      limits: { inboundMessagesPerSecond: 100, inboundMessagesBurst: 200 },
      clock: frozen,
    });
    await waitFor(() => a.network.peerIds().length === 1, "a and b connected");
    const flooder = await rawConnect(a.network.listenPort!, nodes[3]!);
    flooder.hello();
    await waitFor(() => a.network.peerIds().length === 2, "the flooder up");
    for (let i = 0; i < 500; i++) flooder.send({ type: "status", height: i });
    await flooder.closed;
    assert.equal(dropped(a, "rate-messages"), 1);
    assert.deepEqual(a.downs, [{ peerId: nodes[3]!.nodeId, reason: "rate-messages" }]);
    // The burst of 200 covers the hello and 199 statuses; the 200th status is refused.
    assert.equal(a.received.length, 199, "nothing past the budget reached the node");
    assert.deepEqual(a.network.peerIds(), [b.id]);
  });

  it("drops a peer that floods beyond its inbound byte budget", async () => {
    const frozen: NetworkClock = { now: () => 1_000_000, setTimer: systemNetworkClock.setTimer };
    const a = await startPeer(nodes[0]!, {
      limits: { ...smallFrames, inboundBytesPerSecond: 64 * 1024, inboundBytesBurst: 128 * 1024 },
      clock: frozen,
    });
    const flooder = await rawConnect(a.network.listenPort!, nodes[3]!);
    flooder.hello();
    await waitFor(() => a.network.peerIds().length === 1, "the flooder up");
    for (let i = 0; i < 10; i++) flooder.send(consensus(32 * 1024, i));
    await flooder.closed;
    assert.equal(dropped(a, "rate-bytes"), 1);
  });

  it("with a peer that stops reading: gossip is dropped, a consensus message disconnects it", async () => {
    const a = await startPeer(nodes[0]!, { limits: smallFrames });
    const slow = await rawConnect(a.network.listenPort!, nodes[3]!);
    slow.hello();
    await waitFor(() => a.network.peerIds().length === 1, "the slow peer up");
    slow.socket.pause();
    const slowId = nodes[3]!.nodeId;
    const tx: PeerMessage = { type: "tx", txs: [new Uint8Array(8 * 1024).fill(3)] };
    // Kernel buffers on loopback take a few MiB before the socket pushes back.
    for (let i = 0; i < 20_000 && a.network.peer(slowId)!.droppedMessages === 0; i++) {
      assert.equal(a.network.send(slowId, tx), "queued");
      if (i % 16 === 0) await new Promise((resolve) => setImmediate(resolve));
    }
    const info = a.network.peer(slowId)!;
    assert.ok(info.droppedMessages > 0, "gossip was dropped");
    assert.ok(info.sendQueueBytes <= smallFrames.sendQueueBytesMax!);
    assert.ok(info.sendQueueMessages <= smallFrames.sendQueueMessagesMax!);
    assert.equal(a.network.send(slowId, tx), "queued", "new gossip displaces old gossip");
    assert.deepEqual(a.downs, [], "dropping gossip does not disconnect");

    let result = "queued";
    for (let i = 0; i < 100 && result === "queued"; i++)
      result = a.network.send(slowId, consensus(60 * 1024, i));
    assert.equal(result, "disconnected");
    assert.deepEqual(a.downs, [{ peerId: slowId, reason: "send-queue-full" }]);
    slow.socket.resume(); // a paused socket would never read its way to the close
    await slow.closed;
  });

  it("pings peers for their round-trip time, and drops the silent and the mute", async () => {
    const quick = { pingIntervalMs: 50, pingTimeoutMs: 400, handshakeTimeoutMs: 300 };
    const [a, b] = await connectedPair(quick);
    await waitFor(() => a.network.peer(b.id)!.rttMs !== null, "a round-trip time");
    assert.ok(a.network.peer(b.id)!.rttMs! >= 0);

    // A raw peer says hello and then nothing, not even pong.
    const silent = await rawConnect(a.network.listenPort!, nodes[3]!);
    silent.hello();
    await silent.closed;
    assert.equal(dropped(a, "ping-timeout"), 1);
    assert.ok(silent.received.some((m) => m.type === "ping"));

    // One that never says hello at all.
    const mute = await rawConnect(a.network.listenPort!, nodes[2]!);
    await mute.closed;
    assert.equal(dropped(a, "hello-timeout"), 1);
    assert.deepEqual(a.network.peerIds(), [b.id], "the pair that answers pings stays up");
  });

  it("redials a peer that restarted on the same address", async () => {
    const b1 = await startPeer(nodes[1]!);
    const port = b1.network.listenPort!;
    const a = await startPeer(nodes[0]!, { peers: [b1.address] });
    await waitFor(() => a.ups.length === 1, "first connection");
    await b1.network.close();
    await waitFor(() => a.downs.length === 1, "a sees b go");
    assert.equal(a.downs[0]!.reason, "remote-closed");
    await sleep(200); // a few redials fail while b is away
    const b2 = await startPeer(nodes[1]!, { port });
    await waitFor(() => a.ups.length === 2 && b2.ups.length === 1, "the reconnection");
    a.network.send(b2.id, consensus(3));
    await waitFor(() => b2.received.length === 1, "a message to the restarted peer");
  });

  it("keeps at most peersMax peers", async () => {
    const a = await startPeer(nodes[0]!, { limits: { peersMax: 1 } });
    const b = await startPeer(nodes[1]!, { peers: [a.address] });
    await waitFor(() => a.network.peerIds().length === 1, "b connected");
    const c = await startPeer(nodes[2]!, { peers: [a.address] });
    await waitFor(() => dropped(a, "peers-full") >= 1, "c refused");
    assert.deepEqual(a.network.peerIds(), [b.id]);
    assert.equal(c.network.peerIds().length, 0);
  });

  it("never dials itself twice", async () => {
    const a = await startPeer(nodes[0]!);
    a.network.addPeer(a.address);
    await waitFor(() => dropped(a, "self") >= 1, "the self-connection refused");
    await sleep(300);
    const selfDrops = dropped(a, "self");
    assert.ok(selfDrops <= 2, "one refusal per end of the one connection");
    await sleep(300);
    assert.equal(dropped(a, "self"), selfDrops, "the address is not dialled again");
    assert.equal(a.ups.length, 0);
  });
});

// ---------------------------------------------------------------------------------------------

describe("transaction gossip", { timeout: 30_000 }, () => {
  /** A mempool stand-in: admits each transaction once, as the node's mempool does. */
  function gossipOn(peer: TestPeer, verdictFor?: (tx: Uint8Array) => TxAdmission) {
    const admitted: Array<{ tx: string; from: string }> = [];
    const known = new Set<string>();
    const gossip = new TxGossip(peer.network, {
      batchDelayMs: 5,
      admit: (txBytes, from) => {
        const verdict = verdictFor?.(txBytes);
        if (verdict !== undefined) return verdict;
        const tx = Buffer.from(txBytes).toString("hex");
        if (known.has(tx)) return "rejected";
        known.add(tx);
        admitted.push({ tx, from });
        return Promise.resolve("accepted");
      },
    });
    cleanups.push(() => gossip.close());
    return { gossip, admitted };
  }

  it("forwards each transaction once per peer, in batches, never back to its source", async () => {
    const c = await startPeer(nodes[2]!);
    const b = await startPeer(nodes[1]!, { peers: [c.address] });
    const a = await startPeer(nodes[0]!, { peers: [b.address, c.address] });
    const all = [a, b, c];
    await waitFor(() => all.every((p) => p.network.peerIds().length === 2), "a full mesh");
    const [ga, gb, gc] = all.map((p) => gossipOn(p));
    const txs = Array.from({ length: 50 }, (_, i) => new Uint8Array(100 + i).fill(i));
    for (const tx of txs) assert.ok(ga!.gossip.publish(tx));
    assert.equal(ga!.gossip.publish(txs[0]!), false, "a known transaction is not published twice");
    await waitFor(() => gb!.admitted.length === 50 && gc!.admitted.length === 50, "every node admitted all");
    await sleep(100); // let any redundant forwarding show up

    assert.equal(
      a.received.filter((r) => r.message.type === "tx").length,
      0,
      "no transaction echoed back to its origin",
    );
    for (const [receiver, name] of [
      [b, "b"],
      [c, "c"],
    ] as const) {
      const copies = new Map<string, number>();
      for (const { from, message } of receiver.received) {
        if (message.type !== "tx") continue;
        for (const tx of message.txs) {
          const key = `${from}/${Buffer.from(tx).toString("hex")}`;
          copies.set(key, (copies.get(key) ?? 0) + 1);
        }
      }
      assert.ok(
        [...copies.values()].every((n) => n === 1),
        `${name} got each tx at most once per sender`,
      );
    }
    assert.equal(ga!.gossip.stats.forwardedTxs, 100);
    assert.ok(ga!.gossip.stats.forwardedBatches <= 4, `batched: ${ga!.gossip.stats.forwardedBatches} frames`);
    assert.equal(ga!.admitted.length, 0);
  });

  it("drops a peer whose gossip the node judges invalid", async () => {
    const [a, b] = await connectedPair();
    gossipOn(a, () => "misbehaving");
    const gb = gossipOn(b);
    gb.gossip.publish(Uint8Array.of(1, 2, 3));
    await waitFor(() => a.downs.length === 1, "the drop");
    assert.deepEqual(a.downs[0], { peerId: b.id, reason: "invalid-tx" });
  });
});
