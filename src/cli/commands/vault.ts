/**
 * `citychain vault …`: the information center's key vault for holders without a device of their own
 * (docs/licenses.md, "Key vault").
 *
 * - `vault init --dir D`: creates the folder, its encrypted key store and, if the folder has none, a
 *   new consortium pseudonym key (copy the consortium's pseudonym-key.json in first to reuse it).
 * - `vault serve --dir D --ca-cert root.pem --tls-cert … --tls-key …`: runs the HTTP API.
 * The vault passphrase (one for the key store and the pseudonym key file) comes from
 * --passphrase-file, env CITYCHAIN_VAULT_PASSPHRASE_FILE, or the passphrase itself in
 * CITYCHAIN_VAULT_PASSPHRASE.
 */
import fs from "node:fs";
import path from "node:path";
import { Command } from "commander";
import { type CertificateAuthority, caCertFileName } from "../../ca/authority.ts";
import { type Identity, parseIdentityCert } from "../../ca/identity.ts";
import { type PassphraseSource, resolvePassphrase } from "../../ca/keys.ts";
import { type CaRegistry, openRegistry } from "../../ca/registry.ts";
import { CodedError } from "../../core/errors.ts";
import { buildVaultService, initVault, openVault, type RoleGrant } from "../../vault/index.ts";
import { printJson } from "../common.ts";

export const vaultServeDefaults = { listen: "127.0.0.1:7070" } as const;

function fail(message: string, field?: string): never {
  throw new CodedError("BAD_REQUEST", message, field);
}

function vaultPassphraseSource(
  file: string | undefined,
  env: NodeJS.ProcessEnv = process.env,
): PassphraseSource {
  if (file !== undefined) return { file };
  if (env.CITYCHAIN_VAULT_PASSPHRASE_FILE !== undefined) return { file: env.CITYCHAIN_VAULT_PASSPHRASE_FILE };
  if (env.CITYCHAIN_VAULT_PASSPHRASE !== undefined) return { env: "CITYCHAIN_VAULT_PASSPHRASE" };
  throw new CodedError(
    "KEY_LOCKED",
    "no vault passphrase: use --passphrase-file or set CITYCHAIN_VAULT_PASSPHRASE",
    "passphrase",
  );
}

function parseListen(text: string): { host: string; port: number } {
  const match = /^(.+):(\d{1,5})$/.exec(text);
  const port = Number(match?.[2]);
  if (match === null || !Number.isSafeInteger(port) || port > 65_535) {
    fail("--listen is host:port, e.g. 127.0.0.1:7070", "listen");
  }
  return { host: match[1]!.replace(/^\[(.*)\]$/, "$1"), port };
}

const loopbackHosts = new Set(["127.0.0.1", "::1", "localhost"]);

/** "dept.role,dept.role" -> grants; a role may be "*". */
function parseGrants(text: string, field: string): RoleGrant[] {
  const grants = text
    .split(",")
    .map((item) => item.trim())
    .filter((item) => item.length > 0)
    .map((item) => {
      const [dept, role, ...rest] = item.split(".");
      if (dept === undefined || role === undefined || rest.length > 0 || dept === "" || role === "") {
        fail(`--${field} is a list of dept.role (role may be *), e.g. infocenter.officer`, field);
      }
      return { dept, role };
    });
  if (grants.length === 0) fail(`--${field} names at least one dept.role`, field);
  return grants;
}

function readText(file: string): string {
  return fs.readFileSync(path.resolve(file), "utf8");
}

/**
 * The CA registry, read only, for revocation checks when the vault runs beside the CA: the CA key is
 * not needed and never loaded.
 */
function openCaRegistry(dir: string): CaRegistry {
  const certPem = readText(path.join(dir, caCertFileName));
  const ca: CertificateAuthority = {
    dir: path.resolve(dir),
    certPem,
    identity: parseIdentityCert(certPem),
    now: Date.now,
    issueFromCsr: () => Promise.reject(new CodedError("KEY_LOCKED", "the vault never issues certificates")),
  };
  return openRegistry({ ca });
}

function revocationCheck(registry: CaRegistry): (caller: Identity) => boolean {
  return (caller) =>
    registry.getCertificate(caller.certId)?.revokedMs != null ||
    registry.getIdentity(caller.enrollmentId)?.status !== "active";
}

interface ServeFlags {
  dir: string;
  passphraseFile?: string;
  listen: string;
  caCert: string;
  caDir?: string;
  tlsCert?: string;
  tlsKey?: string;
  tlsPassphraseFile?: string;
  insecureHttp?: boolean;
  chainId?: string;
  callers?: string;
  auditors?: string;
  log?: boolean;
}

function tlsFrom(flags: ServeFlags, host: string) {
  if ((flags.tlsCert === undefined) !== (flags.tlsKey === undefined))
    fail("give --tls-cert with --tls-key", "tlsKey");
  if (flags.tlsCert === undefined) {
    // Personal content and signatures cross this socket: plain HTTP only where nobody else listens.
    if (flags.insecureHttp !== true) fail("the vault serves HTTPS: give --tls-cert and --tls-key", "tlsCert");
    if (!loopbackHosts.has(host)) fail("--insecure-http is for loopback addresses only", "listen");
    return undefined;
  }
  return {
    certPem: readText(flags.tlsCert),
    keyPem: readText(flags.tlsKey!),
    passphrase: resolvePassphrase(
      flags.tlsPassphraseFile === undefined
        ? vaultPassphraseSource(flags.passphraseFile)
        : { file: flags.tlsPassphraseFile },
    ),
  };
}

async function serve(flags: ServeFlags): Promise<void> {
  const { host, port } = parseListen(flags.listen);
  const tls = tlsFrom(flags, host);
  const rootCertPem = readText(flags.caCert);
  const root = parseIdentityCert(rootCertPem);
  const passphrase = resolvePassphrase(vaultPassphraseSource(flags.passphraseFile));
  const vault = openVault(path.resolve(flags.dir), passphrase);
  const registry = flags.caDir === undefined ? undefined : openCaRegistry(flags.caDir);
  const app = await buildVaultService({
    keyStore: vault.keyStore,
    pseudonymKey: vault.pseudonymKey,
    audit: vault.audit,
    rootCertPem,
    ...(registry === undefined ? {} : { isRevoked: revocationCheck(registry) }),
    ...(flags.chainId === undefined ? {} : { chainId: flags.chainId }),
    ...(flags.callers === undefined ? {} : { callers: parseGrants(flags.callers, "callers") }),
    ...(flags.auditors === undefined ? {} : { auditors: parseGrants(flags.auditors, "auditors") }),
    ...(tls === undefined ? {} : { tls }),
    logger: flags.log === true,
  });
  const url = await app.listen({ host, port });
  printJson({
    event: "listening",
    url,
    rootCertId: root.certId,
    revocations: registry === undefined ? "none" : "ca-registry",
  });
  if (registry === undefined) {
    process.stderr.write("note: no --ca-dir: revoked certificates are not refused until they expire\n");
  }
  let stopping = false;
  const stop = async () => {
    if (stopping) return;
    stopping = true;
    await app.close();
    vault.close();
    registry?.close();
    process.exit(0);
  };
  process.on("SIGINT", () => void stop());
  process.on("SIGTERM", () => void stop());
}

export function registerVaultCommands(program: Command): void {
  const vault = new Command("vault");
  program.addCommand(vault);
  vault
    .description("the key vault: custodial keys for holders without a device of their own")
    .showHelpAfterError(false)
    .configureOutput({
      outputError: (text, write) =>
        write(`citychain: BAD_REQUEST: ${text.trim().replace(/^error: /, "")} (add --help for usage)\n`),
    });

  vault
    .command("init")
    .description(
      "create the vault folder, its encrypted key store and (if absent) the consortium pseudonym key",
    )
    .requiredOption("--dir <dir>", "vault folder (created mode 0700)")
    .option(
      "--passphrase-file <file>",
      "vault passphrase, 12+ characters (or env CITYCHAIN_VAULT_PASSPHRASE_FILE / CITYCHAIN_VAULT_PASSPHRASE)",
    )
    .action((flags: { dir: string; passphraseFile?: string }) => {
      const passphrase = resolvePassphrase(vaultPassphraseSource(flags.passphraseFile));
      const result = initVault(path.resolve(flags.dir), passphrase);
      printJson(result);
      if (result.pseudonymKeyCreated) {
        process.stderr.write(
          "note: a new consortium pseudonym key was made; every department's key node needs the same key (hand it over encrypted)\n",
        );
      }
    });

  vault
    .command("serve")
    .description("run the key vault's HTTP API (/v1/vault) until SIGINT or SIGTERM")
    .requiredOption("--dir <dir>", "the vault folder (from vault init)")
    .requiredOption("--ca-cert <file>", "consortium root certificate: callers' certificates must chain to it")
    .option("--ca-dir <dir>", "the CA folder, read only: refuse revoked certificates (recommended)")
    .option(
      "--passphrase-file <file>",
      "vault passphrase (or env CITYCHAIN_VAULT_PASSPHRASE_FILE / CITYCHAIN_VAULT_PASSPHRASE)",
    )
    .option("--listen <host:port>", "listen address", vaultServeDefaults.listen)
    .option("--tls-cert <file>", "HTTPS certificate, PEM (e.g. a node identity of the operator)")
    .option("--tls-key <file>", "its private key, encrypted PEM")
    .option("--tls-passphrase-file <file>", "that key's passphrase (default: the vault passphrase)")
    .option("--insecure-http", "serve plain HTTP; loopback addresses only (tests, devnet)")
    .option("--chain-id <id>", "refuse statements for any other chain")
    .option(
      "--callers <list>",
      "who may use the vault, dept.role,… (default: <operator>.officer,<operator>.admin)",
    )
    .option("--auditors <list>", "who may read the audit log (default: <operator>.auditor,<operator>.admin)")
    .option("--log", "structured JSON request logs on stdout")
    .action(serve);
}
