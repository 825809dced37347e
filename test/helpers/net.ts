/**
 * A throwaway single-node network for tests: bootstraps a CA, the ten sample departments with their
 * `<dept>.admin|officer|auditor` members and one node into a fresh folder under os.tmpdir(), starts
 * the node in this process, and hands out signed clients for the members.
 *
 * Bootstrapping costs a few seconds (key generation and scrypt), so share one network per test file:
 *
 *   let net: TestNetwork;
 *   before(async () => { net = await startTestNetwork(); });
 *   after(() => net.close());
 *
 * The API listens on an ephemeral port (port 0) unless `apiPortBase` is given, so test files can run
 * in parallel. A CITYCHAIN_API_PORT in the environment still wins, as it does for every node.
 */
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { bootstrapNetwork, type MemberFiles, type NetworkLayout } from "../../src/devnet/bootstrap.ts";
import { type NodeConfig, readNodeConfig, writeNodeConfig } from "../../src/node/config.ts";
import { type RunningNode, startNode } from "../../src/node/run.ts";
import { CitychainClient, type FetchLike } from "../../src/sdk/client.ts";
import { loadIdentity, nodeFetch } from "../../src/sdk/node.ts";
import type { TxIdentity } from "../../src/sdk/tx-builder.ts";

export interface TestNetworkOptions {
  /** Listen on apiPortBase (the node's port); default: an ephemeral port chosen by the OS. */
  readonly apiPortBase?: number;
  /** Node options to set in node.json before the node starts (e.g. apiBodyBytesMax). */
  readonly config?: Partial<Omit<NodeConfig, "api">>;
  readonly blockIntervalMs?: number;
}

export interface TestNetwork {
  readonly layout: NetworkLayout;
  /** The node's API base URL, e.g. https://127.0.0.1:43121 */
  readonly url: string;
  readonly node: RunningNode;
  /** The passphrase of every key in this network. */
  readonly passphrase: string;
  /** The consortium root (PEM): the TLS trust anchor for the API. */
  readonly caPem: string;
  /** A fetch that trusts only the consortium root. */
  readonly fetch: FetchLike;
  member(enrollmentId: string): MemberFiles;
  /** The member's loaded identity (signer, certificate and its id); cached. */
  identityFor(enrollmentId: string): Promise<TxIdentity>;
  /** A CitychainClient that signs as the member; cached. */
  clientFor(enrollmentId: string): Promise<CitychainClient>;
  /** Stops the node and removes the folder. Safe to call twice. */
  close(): Promise<void>;
}

export async function startTestNetwork(options: TestNetworkOptions = {}): Promise<TestNetwork> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "citychain-test-"));
  let running: RunningNode | undefined;
  try {
    const layout = await bootstrapNetwork({
      dir,
      ...(options.apiPortBase === undefined ? {} : { apiPortBase: options.apiPortBase }),
      ...(options.blockIntervalMs === undefined ? {} : { blockIntervalMs: options.blockIntervalMs }),
    });
    const nodeDir = layout.nodes[0]!.dir;
    // readNodeConfig with an empty environment: what the file says, before any override.
    const config = readNodeConfig(nodeDir, {});
    writeNodeConfig(nodeDir, {
      ...config,
      ...options.config,
      api: { ...config.api, port: options.apiPortBase ?? 0 },
    });
    const passphrase = fs.readFileSync(layout.passphrasePath, "utf8").trim();
    running = await startNode({ dir: nodeDir, passphrase: { value: passphrase } });
    return makeNetwork(layout, running, passphrase);
  } catch (error) {
    await running?.close();
    fs.rmSync(dir, { recursive: true, force: true });
    throw error;
  }
}

function makeNetwork(layout: NetworkLayout, running: RunningNode, passphrase: string): TestNetwork {
  const caPem = fs.readFileSync(layout.caCertPath, "utf8");
  const fetch = nodeFetch(caPem);
  const identities = new Map<string, Promise<TxIdentity>>();
  const clients = new Map<string, Promise<CitychainClient>>();
  let closed = false;

  const member = (enrollmentId: string): MemberFiles => {
    const found = layout.members.find((m) => m.enrollmentId === enrollmentId);
    if (found === undefined) throw new Error(`no member ${enrollmentId} in the test network`);
    return found;
  };
  const identityFor = (enrollmentId: string): Promise<TxIdentity> => {
    let identity = identities.get(enrollmentId);
    if (identity === undefined) {
      const m = member(enrollmentId);
      identity = loadIdentity(m.certPath, m.keyPath, { passphrase });
      identities.set(enrollmentId, identity);
    }
    return identity;
  };
  const clientFor = (enrollmentId: string): Promise<CitychainClient> => {
    let client = clients.get(enrollmentId);
    if (client === undefined) {
      client = identityFor(enrollmentId).then(
        (identity) => new CitychainClient({ url: running.url, identity, fetch }),
      );
      clients.set(enrollmentId, client);
    }
    return client;
  };

  return {
    layout,
    url: running.url,
    node: running,
    passphrase,
    caPem,
    fetch,
    member,
    identityFor,
    clientFor,
    async close() {
      if (closed) return;
      closed = true;
      try {
        await running.close();
      } finally {
        fs.rmSync(layout.dir, { recursive: true, force: true });
      }
    },
  };
}
