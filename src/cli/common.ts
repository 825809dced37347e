/** Shared pieces of the CLI: identity options, output, and one-line errors with stable codes. */
import fs from "node:fs";
import path from "node:path";
import type { Command } from "commander";
import type { PassphraseSource } from "../ca/keys.ts";
import { CodedError } from "../core/errors.ts";
import { readNetworkLayout } from "../devnet/bootstrap.ts";
import { CitychainClient } from "../sdk/client.ts";
import { CitychainError, fetchFailureDetail } from "../sdk/errors.ts";
import { loadIdentity, nodeFetch } from "../sdk/node.ts";
import { VerificationError } from "../sdk/verify.ts";

export interface ClientFlags {
  url?: string;
  cert?: string;
  key?: string;
  caCert?: string;
  passphraseFile?: string;
  network?: string;
  as?: string;
  node?: string;
}

/** Adds the options every command that talks to a node takes. */
export function withClientOptions(command: Command): Command {
  return command
    .option("--url <url>", "node API base URL (env CITYCHAIN_URL)")
    .option("--cert <file>", "your certificate, PEM (env CITYCHAIN_CERT)")
    .option("--key <file>", "your private key, encrypted PKCS#8 PEM (env CITYCHAIN_KEY)")
    .option("--ca-cert <file>", "consortium root certificate to trust for TLS (env CITYCHAIN_CA_CERT)")
    .option(
      "--passphrase-file <file>",
      "file holding the key's passphrase (env CITYCHAIN_PASSPHRASE_FILE, or the passphrase itself in CITYCHAIN_KEY_PASSPHRASE)",
    )
    .option(
      "--network <dir>",
      "a devnet folder: take url, certificates and passphrase from it (env CITYCHAIN_NETWORK)",
    )
    .option("--as <enrollmentId>", "with --network: which member to act as", "infocenter.admin")
    .option("--node <name>", "with --network: which node to talk to", "node0");
}

export function passphraseSource(
  file: string | undefined,
  env: NodeJS.ProcessEnv = process.env,
): PassphraseSource {
  if (file !== undefined) return { file };
  if (env.CITYCHAIN_PASSPHRASE_FILE !== undefined) return { file: env.CITYCHAIN_PASSPHRASE_FILE };
  if (env.CITYCHAIN_KEY_PASSPHRASE !== undefined) return { env: "CITYCHAIN_KEY_PASSPHRASE" };
  throw new CodedError("KEY_LOCKED", "no passphrase: use --passphrase-file or set CITYCHAIN_KEY_PASSPHRASE");
}

function required(value: string | undefined, what: string): string {
  if (value === undefined || value.length === 0) throw new CodedError("BAD_REQUEST", `missing ${what}`);
  return value;
}

export async function clientFromFlags(
  flags: ClientFlags,
  env: NodeJS.ProcessEnv = process.env,
): Promise<CitychainClient> {
  const networkDir = flags.network ?? env.CITYCHAIN_NETWORK;
  let { url, cert, key, caCert, passphraseFile } = flags;
  url ??= env.CITYCHAIN_URL;
  cert ??= env.CITYCHAIN_CERT;
  key ??= env.CITYCHAIN_KEY;
  caCert ??= env.CITYCHAIN_CA_CERT;
  if (networkDir !== undefined) {
    const layout = readNetworkLayout(networkDir);
    const member = layout.members.find((m) => m.enrollmentId === (flags.as ?? "infocenter.admin"));
    if (member === undefined)
      throw new CodedError("NOT_FOUND", `no member ${flags.as} in ${networkDir}`, "as");
    const node = layout.nodes.find((n) => n.name === (flags.node ?? "node0"));
    if (node === undefined)
      throw new CodedError("NOT_FOUND", `no node ${flags.node} in ${networkDir}`, "node");
    url ??= `https://127.0.0.1:${node.apiPort}`;
    cert ??= member.certPath;
    key ??= member.keyPath;
    caCert ??= layout.caCertPath;
    passphraseFile ??= layout.passphrasePath;
  }
  const source = passphraseSource(passphraseFile, env);
  const { resolvePassphrase } = await import("../ca/keys.ts");
  const identity = await loadIdentity(required(cert, "--cert"), required(key, "--key"), {
    passphrase: resolvePassphrase(source, env),
  });
  const caPem = caCert === undefined ? undefined : fs.readFileSync(path.resolve(caCert), "utf8");
  return new CitychainClient({
    url: required(url, "--url").replace(/\/$/, ""),
    identity,
    fetch: nodeFetch(caPem),
  });
}

/**
 * The genesis.json a verifier anchors to: --genesis, else the --network folder's (env
 * CITYCHAIN_NETWORK); undefined without either.
 */
export function genesisPathFromFlags(flags: { genesis?: string; network?: string }): string | undefined {
  if (flags.genesis !== undefined) return flags.genesis;
  const network = flags.network ?? process.env.CITYCHAIN_NETWORK;
  return network === undefined
    ? undefined
    : path.join(readNetworkLayout(network).nodes[0]!.dir, "genesis.json");
}

export function printJson(value: unknown): void {
  process.stdout.write(`${JSON.stringify(value, null, 2)}\n`);
}

/** One clear line and a non-zero exit; never a stack trace for an expected error. */
export function reportError(error: unknown): number {
  if (error instanceof CodedError || error instanceof CitychainError) {
    const field = error.field === undefined ? "" : ` (field ${error.field})`;
    process.stderr.write(`citychain: ${error.code}: ${error.message}${field}\n`);
    return 1;
  }
  if (error instanceof VerificationError) {
    process.stderr.write(`citychain: VERIFICATION_FAILED: ${error.message}\n`);
    return 1;
  }
  const e = error as NodeJS.ErrnoException;
  if (e?.code === "ENOENT" || e?.code === "EACCES") {
    process.stderr.write(`citychain: ${e.code}: ${e.message}\n`);
    return 1;
  }
  if (e?.code === "ECONNREFUSED" || (e as { cause?: { code?: string } })?.cause?.code === "ECONNREFUSED") {
    process.stderr.write("citychain: UNREACHABLE: no node answers at that address\n");
    return 1;
  }
  // Any other transport failure (reset, TLS, timeout) arrives as fetch's TypeError with a cause.
  const transport = fetchFailureDetail(error);
  if (transport !== undefined) {
    process.stderr.write(`citychain: UNREACHABLE: ${transport}\n`);
    return 1;
  }
  process.stderr.write(`citychain: INTERNAL: ${(error as Error)?.stack ?? String(error)}\n`);
  return 1;
}
