/**
 * `citychain devnet`: a local network in one command. First run lays out a fresh CA, the sample
 * departments, members, node folders and the key vault; every run starts the nodes and the vault as
 * separate processes and prints where their APIs and the identities are. Ctrl-C stops them all.
 */
import { type ChildProcess, spawn } from "node:child_process";
import fs from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";
import type { Command } from "commander";
import {
  bootstrapNetwork,
  type NetworkLayout,
  readNetworkLayout,
  type VaultFiles,
} from "../../devnet/bootstrap.ts";
import { nodeFetch } from "../../sdk/node.ts";
import { clientFromFlags } from "../common.ts";

/** How long the nodes and the vault get to answer after they are started. */
const startupTimeoutMs = 30_000;
const readyPollMs = 200;

const binPath = fileURLToPath(new URL("../../../bin/citychain.mjs", import.meta.url));

/**
 * Node.js flags a node process starts with (docs/operations.md). V8's young
 * generation is capped at 4 MiB a semi-space instead of growing to 16: more scavenges, each shorter,
 * so a collection on one validator holds up a height less. At 760 tx/s on the four-validator
 * network the p99 was lower in eight of nine alternated pairs for a few per cent more CPU
 * (docs/benchmarks.md, 2026-12-08). V8 reads it only at start-up, so it must be on the command line.
 */
export const nodeV8Flags: readonly string[] = ["--max-semi-space-size=4"];

/**
 * A node process's arguments after the Node.js binary: `nodeV8Flags`, then `extraNodeArgs` (which
 * override them: V8 takes a flag's last value), then `citychain node start`.
 */
export function nodeStartArgs(
  nodeDir: string,
  passphrasePath: string,
  extraNodeArgs: readonly string[] = [],
): string[] {
  return [
    ...nodeV8Flags,
    ...extraNodeArgs,
    binPath,
    "node",
    "start",
    "--dir",
    nodeDir,
    "--passphrase-file",
    passphrasePath,
  ];
}

export function startNodeProcess(nodeDir: string, passphrasePath: string, logFile: string): ChildProcess {
  const out = fs.openSync(logFile, "a");
  return spawn(process.execPath, nodeStartArgs(nodeDir, passphrasePath), {
    stdio: ["ignore", out, out],
  });
}

/** The key vault as its own process: HTTPS with its CA-issued certificate, revocations from the CA folder. */
export function startVaultProcess(layout: NetworkLayout, vault: VaultFiles, logFile: string): ChildProcess {
  const out = fs.openSync(logFile, "a");
  return spawn(
    process.execPath,
    [
      binPath,
      "vault",
      "serve",
      "--dir",
      vault.dir,
      "--ca-cert",
      layout.caCertPath,
      "--ca-dir",
      path.dirname(layout.caCertPath),
      "--passphrase-file",
      layout.passphrasePath,
      "--listen",
      `127.0.0.1:${vault.apiPort}`,
      "--tls-cert",
      vault.tlsCertPath,
      "--tls-key",
      vault.tlsKeyPath,
      "--chain-id",
      layout.chainId,
    ],
    { stdio: ["ignore", out, out] },
  );
}

/** The vault's OpenAPI document is public: it answering means the vault is up. */
async function waitVaultReady(layout: NetworkLayout, vault: VaultFiles, deadlineMs: number): Promise<void> {
  const fetch = nodeFetch(fs.readFileSync(layout.caCertPath, "utf8"));
  for (;;) {
    try {
      const response = await fetch(`${vault.url}/v1/vault/openapi.json`, { method: "GET", headers: {} });
      if (response.status === 200) return;
    } catch (error) {
      if (Date.now() > deadlineMs) throw error;
    }
    if (Date.now() > deadlineMs) throw new Error(`the key vault at ${vault.url} does not answer`);
    await new Promise((r) => setTimeout(r, readyPollMs));
  }
}

async function waitReady(layout: NetworkLayout, name: string, deadlineMs: number): Promise<void> {
  for (;;) {
    try {
      const client = await clientFromFlags({ network: layout.dir, as: "infocenter.admin", node: name });
      await client.status();
      return;
    } catch (error) {
      if (Date.now() > deadlineMs) throw error;
      await new Promise((r) => setTimeout(r, readyPollMs));
    }
  }
}

export function registerDevnetCommand(program: Command): void {
  program
    .command("devnet")
    .description("start a local network on loopback (created on first run)")
    .option("--dir <dir>", "network folder", ".devnet")
    .option("--nodes <n>", "validator nodes", "4")
    .option("--observers <n>", "observer nodes (full replicas that do not vote)", "0")
    .option("--api-port-base <port>", "API port of node0; node i listens on base+i", "7001")
    .option("--reset", "delete the folder first and start a fresh network")
    .action(
      async (flags: {
        dir: string;
        nodes: string;
        observers: string;
        apiPortBase: string;
        reset?: boolean;
      }) => {
        const dir = path.resolve(flags.dir);
        if (flags.reset) fs.rmSync(dir, { recursive: true, force: true });
        let layout: NetworkLayout;
        if (fs.existsSync(path.join(dir, "network.json"))) {
          layout = readNetworkLayout(dir);
          process.stdout.write(`using the network in ${dir}\n`);
        } else {
          process.stdout.write(`creating a network in ${dir}: root CA, ${10} departments, members, nodes…\n`);
          layout = await bootstrapNetwork({
            dir,
            nodes: Number(flags.nodes),
            apiPortBase: Number(flags.apiPortBase),
          });
        }
        fs.mkdirSync(path.join(dir, "logs"), { recursive: true });
        const children = layout.nodes.map((n) =>
          startNodeProcess(n.dir, layout.passphrasePath, path.join(dir, "logs", `${n.name}.log`)),
        );
        const vault = layout.vault;
        const names = layout.nodes.map((n) => n.name);
        if (vault !== undefined) {
          children.push(startVaultProcess(layout, vault, path.join(dir, "logs", "vault.log")));
          names.push("vault");
        }
        let stopping = false;
        const stopAll = () => {
          if (stopping) return;
          stopping = true;
          for (const c of children) c.kill("SIGTERM");
        };
        process.on("SIGINT", stopAll);
        process.on("SIGTERM", stopAll);
        children.forEach((c, i) => {
          c.on("exit", (code) => {
            if (!stopping) process.stderr.write(`citychain: ${names[i]} exited with ${code}; see logs\n`);
          });
        });
        const deadlineMs = Date.now() + startupTimeoutMs;
        await Promise.all([
          ...layout.nodes.map((n) => waitReady(layout, n.name, deadlineMs)),
          ...(vault === undefined ? [] : [waitVaultReady(layout, vault, deadlineMs)]),
        ]);
        const lines = [
          "",
          `chain ${layout.chainId} is running (${layout.nodes.length} node${layout.nodes.length === 1 ? "" : "s"}):`,
          ...layout.nodes.map(
            (n) =>
              `  ${n.name} (${n.dept}${n.observer ? ", observer" : ""})  API https://127.0.0.1:${n.apiPort}` +
              `${n.p2pPort === null ? "" : `  p2p ${n.p2pPort}`}   data ${n.dir}`,
          ),
          ...(vault === undefined
            ? []
            : [`  key vault   API ${vault.url}   act for it as ${vault.enrollmentId}   data ${vault.dir}`]),
          "",
          `root CA certificate  ${layout.caCertPath}`,
          `member identities    ${path.join(dir, "identities")}/<dept>.<admin|officer|auditor>/{cert,key}.pem`,
          `key passphrase       ${layout.passphrasePath}  (dev only)`,
          `logs                 ${path.join(dir, "logs")}`,
          "",
          "try:",
          `  npx citychain tx submit --network ${flags.dir} --as tax.officer --type kv.put --payload '{"key":"hello","value":{"$text":"world"}}'`,
          `  npx citychain query kv/tax/hello --network ${flags.dir}`,
          ...(vault === undefined
            ? []
            : [
                `  npx citychain subject register --network ${flags.dir} --as ${vault.enrollmentId} --custody vault --code-type 111 --code 11010519491231002X`,
              ]),
          "",
          "Ctrl-C stops the network; run again to restart it with its data.",
          "",
        ];
        process.stdout.write(lines.join("\n"));
        await Promise.all(children.map((c) => new Promise((r) => c.on("exit", r))));
      },
    );
}
