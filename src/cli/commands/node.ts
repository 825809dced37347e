/** `citychain node init|start`: set up a node's data folder from genesis and run it. */
import fs from "node:fs";
import path from "node:path";
import type { Command } from "commander";
import pino from "pino";
import { toHex } from "../../core/encoding.ts";
import { defaultNodeConfig, nodeFiles, readNodeConfig, writeNodeConfig } from "../../node/config.ts";
import { installFatalHandlers } from "../../node/fatal.ts";
import { openLedger, startNode } from "../../node/run.ts";
import { passphraseSource, printJson } from "../common.ts";

export function registerNodeCommands(program: Command): void {
  const node = program.command("node").description("run a department's node");

  node
    .command("init")
    .description(
      "create a node data folder: copies genesis, certificates and key, writes node.json, creates block 0",
    )
    .requiredOption("--dir <dir>", "data folder to create")
    .requiredOption("--genesis <file>", "the chain's genesis.json")
    .requiredOption("--cert <file>", "this node's certificate (kind node), PEM")
    .requiredOption("--key <file>", "its private key, encrypted PKCS#8 PEM")
    .requiredOption("--ca-cert <file>", "the consortium root certificate, PEM")
    .option("--api-host <host>", "API listen address", defaultNodeConfig.api.host)
    .option("--api-port <port>", "API port", String(defaultNodeConfig.api.port))
    .option("--no-tls", "serve the API over plain HTTP (only behind a TLS-terminating proxy)")
    .action(
      (flags: {
        dir: string;
        genesis: string;
        cert: string;
        key: string;
        caCert: string;
        apiHost: string;
        apiPort: string;
        tls: boolean;
      }) => {
        const dir = path.resolve(flags.dir);
        if (fs.existsSync(path.join(dir, "chain.db"))) throw new Error(`${dir} already holds a ledger`);
        fs.mkdirSync(path.join(dir, "identity"), { recursive: true, mode: 0o700 });
        fs.copyFileSync(flags.genesis, path.join(dir, nodeFiles.genesis));
        fs.copyFileSync(flags.cert, path.join(dir, nodeFiles.cert));
        fs.copyFileSync(flags.key, path.join(dir, nodeFiles.key));
        fs.chmodSync(path.join(dir, nodeFiles.key), 0o600);
        fs.copyFileSync(flags.caCert, path.join(dir, nodeFiles.caCert));
        writeNodeConfig(dir, { api: { host: flags.apiHost, port: Number(flags.apiPort), tls: flags.tls } });
        readNodeConfig(dir);
        const ledger = openLedger(dir);
        const genesis = ledger.latest();
        ledger.store.close();
        printJson({ dir, chainId: genesis.header.chainId, genesisHash: toHex(genesis.hash) });
      },
    );

  node
    .command("start")
    .description("run the node until SIGINT or SIGTERM")
    .requiredOption("--dir <dir>", "the node's data folder")
    .option(
      "--passphrase-file <file>",
      "file with the node key's passphrase (or env CITYCHAIN_KEY_PASSPHRASE)",
    )
    .action(async (flags: { dir: string; passphraseFile?: string }) => {
      const config = readNodeConfig(flags.dir);
      const log = pino({ level: config.logLevel, base: { node: path.basename(path.resolve(flags.dir)) } });
      installFatalHandlers(log);
      const running = await startNode({
        dir: flags.dir,
        passphrase: passphraseSource(flags.passphraseFile),
        log,
      });
      const latest = running.node.ledger.latest();
      log.info(
        { url: running.url, chainId: latest.header.chainId, height: latest.header.height },
        "node started",
      );
      running.node.on("block", (block) => {
        if (block.header.height % 100 === 0)
          log.debug({ height: block.header.height, txs: block.txs.length }, "block");
      });
      let stopping = false;
      const stop = async (signal: string) => {
        if (stopping) return;
        stopping = true;
        log.info({ signal }, "stopping");
        await running.close();
        log.info("stopped");
        process.exit(0);
      };
      process.on("SIGINT", () => void stop("SIGINT"));
      process.on("SIGTERM", () => void stop("SIGTERM"));
    });
}
