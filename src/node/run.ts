/**
 * Starting and stopping a node from its data folder: the composition root that hands the core its
 * real ports (system clock, SQLite store, node:crypto, sockets).
 */
import { X509Certificate } from "node:crypto";
import fs from "node:fs";
import path from "node:path";
import type { FastifyInstance } from "fastify";
import { buildApi, defaultApiOptions } from "../api/server.ts";
import { type PassphraseSource, readPrivateKey, resolvePassphrase } from "../ca/keys.ts";
import { validatorIdOf } from "../core/block.ts";
import { defaultMachineOptions } from "../core/consensus/machine.ts";
import { CodedError } from "../core/errors.ts";
import { keyNodeDefaults, LicenseKeyNode } from "../license/key-node.ts";
import type { Logger } from "../p2p/ports.ts";
import { ChainStore, type ChainStoreOptions, chainStoreDefaults } from "../storage/chain-store.ts";
import { type Clock, systemClock } from "./clock.ts";
import { nodeFiles, readNodeConfig } from "./config.ts";
import { NodeSignatureVerifier, NodeSigner } from "./crypto-node.ts";
import { readGenesisFile } from "./genesis-file.ts";
import { Ledger } from "./ledger.ts";
import { NetworkNode } from "./network-node.ts";
import { ChainNode, defaultNodeOptions } from "./node.ts";
import { defaultVerifyPoolOptions, defaultVerifyWorkers, VerifyPool } from "./verify-pool.ts";
import { nodeX509 } from "./x509-port.ts";

export interface RunningNode {
  readonly node: ChainNode;
  readonly network: NetworkNode | null;
  readonly api: FastifyInstance;
  readonly url: string;
  close(): Promise<void>;
}

export interface StartNodeOptions {
  readonly dir: string;
  readonly passphrase: PassphraseSource;
  readonly clock?: Clock;
  readonly logger?: boolean;
  /** Where the peer network and catch-up report what they refuse or drop (the node's own log). */
  readonly log?: Logger;
}

/**
 * The height phase of a node's state-tree flushes (ChainStoreOptions.treeFlushPhase), from its
 * validator id (a hash of its key): nodes of one network flush at different heights, as far as 32
 * phases allow.
 */
function treeFlushPhaseOf(validatorId: Uint8Array): number {
  return Buffer.from(validatorId).readUInt32BE(0) % chainStoreDefaults.treeFlushBlocks;
}

/** Creates the ledger from genesis.json when the folder has none yet. */
export function openLedger(
  dir: string,
  verifier = new NodeSignatureVerifier(),
  storeOptions: ChainStoreOptions = {},
): Ledger {
  const store = ChainStore.open(dir, storeOptions);
  try {
    if (store.latestHeight() < 0) {
      const genesisPath = path.join(dir, nodeFiles.genesis);
      if (!fs.existsSync(genesisPath))
        throw new CodedError("NOT_FOUND", `no ${genesisPath}; run citychain node init`);
      Ledger.initGenesis(store, readGenesisFile(genesisPath), nodeX509);
    }
    return new Ledger(store, nodeX509, verifier);
  } catch (error) {
    store.close();
    throw error;
  }
}

export async function startNode(options: StartNodeOptions): Promise<RunningNode> {
  const { dir } = options;
  const clock = options.clock ?? systemClock;
  const config = readNodeConfig(dir);
  const passphrase = resolvePassphrase(options.passphrase);
  const privateKey = readPrivateKey(path.join(dir, nodeFiles.key), { passphrase });
  // Admission verifies on worker threads; the pool is the node's, stopped with it.
  const verifier = new NodeSignatureVerifier(
    new VerifyPool({
      ...defaultVerifyPoolOptions,
      workers: config.verifyWorkers === 0 ? defaultVerifyWorkers() : config.verifyWorkers,
    }),
  );
  const signer = new NodeSigner(privateKey);
  // What is started is undone, newest first, if a later step fails: a node that cannot serve (its
  // API port taken, say) must exit with the error, not run on in consensus without an API.
  const undo: Array<() => unknown> = [() => verifier.close()];
  try {
    const ledger = openLedger(dir, verifier, {
      treeFlushPhase: treeFlushPhaseOf(validatorIdOf(signer.publicKeySpki)),
    });
    undo.push(() => ledger.store.close());
    const node = new ChainNode(ledger, signer, clock, {
      ...defaultNodeOptions,
      production: config.p2p === null ? "solo" : "consensus",
      blockIntervalMs: config.blockIntervalMs,
      mempool: {
        txsMax: config.mempoolTxsMax,
        bytesMax: config.mempoolBytesMax,
        txsPerSenderMax: config.mempoolTxsPerSenderMax,
      },
    });
    const certPem = fs.readFileSync(path.join(dir, nodeFiles.cert), "utf8");
    const cert = new X509Certificate(certPem);
    const certDer = new Uint8Array(cert.raw);
    const ownCert = nodeX509.parse(certDer);
    const ownDept = ownCert.dept;
    const identity = { signer, certDer, certId: ownCert.certId };
    const keyPem = fs.readFileSync(path.join(dir, nodeFiles.key), "utf8");
    const keyNode = LicenseKeyNode.open(node, {
      ...keyNodeDefaults,
      dir,
      passphrase,
      departments: config.keyDepartments ?? [ownDept],
      identity,
      now: () => clock.now(),
    });
    undo.push(() => keyNode.stop()); // its stores are open from here
    const tls = config.api.tls
      ? {
          certPem: certPem,
          keyPem,
          passphrase,
        }
      : undefined;
    let network: NetworkNode | null = null;
    const api = await buildApi(node, () => clock.now(), {
      ...defaultApiOptions,
      bodyBytesMax: config.apiBodyBytesMax,
      logger: options.logger ?? false,
      ...(tls === undefined ? {} : { tls }),
      keyNode,
      network: () => network?.status() ?? null,
    });
    undo.push(() => api.close());
    node.start();
    undo.push(() => node.stop());
    keyNode.start();
    if (config.p2p !== null) {
      const p2p = config.p2p;
      network = new NetworkNode(ledger, node, signer, clock, {
        tls: {
          certPem: certPem,
          keyPem,
          passphrase,
          caPems: [fs.readFileSync(path.join(dir, nodeFiles.caCert), "utf8")],
        },
        listen: { host: p2p.host, port: p2p.port },
        peers: p2p.peers,
        observer: p2p.observer,
        syncRequestTimeoutMs: 5000,
        syncGraceMs: 250,
        identity,
        ...(options.log === undefined ? {} : { logger: options.log }),
        traceConsensus: config.logLevel === "debug",
        consensus: {
          timeoutCommitMs: p2p.timeoutCommitMs,
          machine: {
            ...defaultMachineOptions,
            timeoutProposeMs: p2p.timeoutProposeMs,
            timeoutPrevoteMs: p2p.timeoutPrevoteMs,
            timeoutPrecommitMs: p2p.timeoutPrecommitMs,
          },
        },
      });
      undo.push(() => network?.stop());
      await network.start();
    }
    const address = await api.listen({ host: config.api.host, port: config.api.port });
    let closed = false;
    return {
      node,
      network,
      api,
      url: address,
      async close() {
        if (closed) return;
        closed = true;
        await api.close();
        await network?.stop();
        await node.stop();
        await keyNode.stop();
        await ledger.verifier.close();
        ledger.store.close();
      },
    };
  } catch (error) {
    for (const step of undo.reverse()) {
      try {
        await step();
      } catch {
        // the first error is the one to report
      }
    }
    throw error;
  }
}
