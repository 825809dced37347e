/** Real node processes on loopback for end-to-end tests: bootstrap, spawn, kill -9, restart. */
import { type ChildProcess, spawn } from "node:child_process";
import fs from "node:fs";
import net from "node:net";
import os from "node:os";
import path from "node:path";
import { nodeStartArgs } from "../../src/cli/commands/devnet.ts";
import { bootstrapNetwork, type NetworkLayout } from "../../src/devnet/bootstrap.ts";
import { CitychainClient } from "../../src/sdk/client.ts";
import { loadIdentity, nodeFetch } from "../../src/sdk/node.ts";

const binPath = path.resolve(import.meta.dirname, "../../bin/citychain.mjs");

export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.once("error", reject);
    server.listen(0, "127.0.0.1", () => {
      const { port } = server.address() as net.AddressInfo;
      server.close(() => resolve(port));
    });
  });
}

async function isFree(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const server = net.createServer();
    server.once("error", () => resolve(false));
    server.listen(port, "127.0.0.1", () => server.close(() => resolve(true)));
  });
}

/**
 * A base port with `count` free ports above it (API ports, then peer ports 100 higher), below
 * Linux's ephemeral range (32768 and up by default): a port picked there can be free when checked
 * and then taken as the local end of an outgoing connection (the nodes dialling each other, the
 * test's clients) before the node binds it.
 */
export async function freePortBase(count: number): Promise<number> {
  for (let attempt = 0; attempt < 50; attempt++) {
    const base = 20_000 + Math.floor(Math.random() * (12_000 - count));
    let ok = true;
    for (let i = 0; i < count && ok; i++) ok = (await isFree(base + i)) && (await isFree(base + 100 + i));
    if (ok) return base;
  }
  throw new Error("no free port range");
}

/** Polls `check` every 200 ms until it holds (errors count as "not yet"), or fails after the timeout. */
export async function waitFor(
  what: string,
  check: () => Promise<boolean>,
  timeoutMs = 30_000,
): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (await check().catch(() => false)) return;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 200));
  }
}

export interface ProcessNetwork {
  /** The network's directory: node<i>.log, the identities, the nodes' own directories. */
  readonly dir: string;
  readonly layout: NetworkLayout;
  readonly passphrase: string;
  url(nodeIndex?: number): string;
  client(enrollmentId: string, nodeIndex?: number): Promise<CitychainClient>;
  /** `env` adds to (or overrides) this process's environment for that node, e.g. a fake clock. */
  start(nodeIndex?: number, options?: { env?: Readonly<Record<string, string>> }): Promise<ChildProcess>;
  kill9(nodeIndex?: number): Promise<void>;
  stop(nodeIndex?: number): Promise<void>;
  runCli(args: string[]): Promise<{ code: number; stdout: string; stderr: string }>;
  close(): Promise<void>;
}

export async function createProcessNetwork(
  options: { nodes?: number; observers?: number; blockIntervalMs?: number; timeoutCommitMs?: number } = {},
): Promise<ProcessNetwork> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "citychain-e2e-"));
  const total = (options.nodes ?? 1) + (options.observers ?? 0);
  const layout = await bootstrapNetwork({
    dir,
    nodes: options.nodes ?? 1,
    observers: options.observers ?? 0,
    apiPortBase: total === 1 ? await freePort() : await freePortBase(total),
    ...(options.timeoutCommitMs === undefined ? {} : { timeoutCommitMs: options.timeoutCommitMs }),
    ...(options.blockIntervalMs === undefined ? {} : { blockIntervalMs: options.blockIntervalMs }),
  });
  const passphrase = fs.readFileSync(layout.passphrasePath, "utf8").trim();
  const caPem = fs.readFileSync(layout.caCertPath, "utf8");
  const children = new Map<number, ChildProcess>();
  const url = (i = 0) => `https://127.0.0.1:${layout.nodes[i]!.apiPort}`;

  const client = async (enrollmentId: string, i = 0) => {
    const m = layout.members.find((x) => x.enrollmentId === enrollmentId);
    if (m === undefined) throw new Error(`no member ${enrollmentId}`);
    const identity = await loadIdentity(m.certPath, m.keyPath, { passphrase });
    // Enough connections that clients waiting for commits never queue behind each other.
    return new CitychainClient({ url: url(i), identity, fetch: nodeFetch(caPem, 256) });
  };

  const waitReady = async (i: number, child: ChildProcess) => {
    const probe = await client("infocenter.admin", i);
    const deadline = Date.now() + 30_000;
    for (;;) {
      if (child.exitCode !== null) throw new Error(`node${i} exited with ${child.exitCode}`);
      try {
        await probe.status();
        return;
      } catch (error) {
        if (Date.now() > deadline) throw error;
        await new Promise((r) => setTimeout(r, 100));
      }
    }
  };

  const start = async (i = 0, startOptions: { env?: Readonly<Record<string, string>> } = {}) => {
    const log = fs.openSync(path.join(dir, `node${i}.log`), "a");
    const child = spawn(
      process.execPath,
      // e.g. CITYCHAIN_NODE_ARGS="--cpu-prof --cpu-prof-dir=/tmp/prof" to profile the nodes of a
      // benchmark; they override the node's own flags (nodeV8Flags)
      nodeStartArgs(
        layout.nodes[i]!.dir,
        layout.passphrasePath,
        process.env.CITYCHAIN_NODE_ARGS?.split(" ").filter(Boolean) ?? [],
      ),
      { stdio: ["ignore", log, log], env: { ...process.env, ...startOptions.env } },
    );
    children.set(i, child);
    await waitReady(i, child);
    return child;
  };

  const exited = (child: ChildProcess) =>
    child.exitCode !== null || child.signalCode !== null
      ? Promise.resolve()
      : new Promise<void>((r) => child.once("exit", () => r()));

  const kill9 = async (i = 0) => {
    const child = children.get(i);
    if (child === undefined) return;
    child.kill("SIGKILL");
    await exited(child);
    children.delete(i);
  };

  const stop = async (i = 0) => {
    const child = children.get(i);
    if (child === undefined) return;
    child.kill("SIGTERM");
    await exited(child);
    children.delete(i);
  };

  const runCli = (args: string[]) =>
    new Promise<{ code: number; stdout: string; stderr: string }>((resolve) => {
      const child = spawn(process.execPath, [binPath, ...args], { stdio: ["ignore", "pipe", "pipe"] });
      let stdout = "";
      let stderr = "";
      child.stdout.on("data", (d) => (stdout += d));
      child.stderr.on("data", (d) => (stderr += d));
      child.on("exit", (code) => resolve({ code: code ?? -1, stdout, stderr }));
    });

  return {
    dir,
    layout,
    passphrase,
    url,
    client,
    start,
    kill9,
    stop,
    runCli,
    async close() {
      // A clean stop first (so profiles and logs are flushed), then no mercy.
      await Promise.all(
        [...children.keys()].map(async (i) => {
          const child = children.get(i)!;
          child.kill("SIGTERM");
          await Promise.race([exited(child), new Promise((r) => setTimeout(r, 3000))]);
          if (child.exitCode === null && child.signalCode === null) await kill9(i);
          children.delete(i);
        }),
      );
      // CITYCHAIN_KEEP_NET=1 keeps the folder (node logs, databases) for a post-mortem.
      if (process.env.CITYCHAIN_KEEP_NET === "1") process.stderr.write(`network kept in ${dir}\n`);
      else fs.rmSync(dir, { recursive: true, force: true });
    },
  };
}
