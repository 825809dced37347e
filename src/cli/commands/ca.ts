/**
 * `citychain ca …`: the membership service from the command line.
 *
 * Two ways to reach the CA:
 * - local (`--dir <ca folder>`): operate on the CA folder directly. Commands that change it need the
 *   CA key's passphrase (`--passphrase-file`, or the passphrase itself in CITYCHAIN_CA_PASSPHRASE);
 *   that passphrase is what makes the caller the operator. `init`, `serve` and `sync` are local only.
 * - remote (`--url <CA service>`): call a running `citychain ca serve`, signing every request with
 *   your own identity (`--cert`, `--key`, `--passphrase-file`, or `--network <devnet> --as <id>`).
 * `--passphrase-file` is always the passphrase of the key the command uses: the CA's in local mode,
 * yours in remote mode.
 *
 * Ledger records (departments, revocations) are written by `serve`, by local commands given ledger
 * options (`--ledger-url` with `--ledger-cert/--ledger-key/--ledger-passphrase-file`, or `--network`
 * and `--as`), and replayed by `ca sync`. See docs/identity.md.
 */
import { createPublicKey, type KeyObject } from "node:crypto";
import fs from "node:fs";
import path from "node:path";
import { Command } from "commander";
import {
  type CertificateAuthority,
  caCertFileName,
  createCsr,
  createRootCa,
  loadCa,
} from "../../ca/authority.ts";
import { parseIdentityCert, type Role, validateRoles, verifyIssuedBy } from "../../ca/identity.ts";
import {
  generateP256KeyPair,
  type PassphraseSource,
  passphraseCharsMin,
  readPrivateKey,
  resolvePassphrase,
  writeEncryptedPrivateKey,
  writeFileDurably,
} from "../../ca/keys.ts";
import { LedgerSync, recordableReasons, type SyncItem } from "../../ca/ledger-sync.ts";
import { type CaRegistry, openRegistry, type RevocationReason } from "../../ca/registry.ts";
import {
  buildCaService,
  CaOperations,
  departmentResultToJson,
  type LedgerStatus,
  revokeResultToJson,
} from "../../ca/service.ts";
import { CodedError } from "../../core/errors.ts";
import { readNetworkLayout } from "../../devnet/bootstrap.ts";
import { CitychainClient, type FetchLike } from "../../sdk/client.ts";
import { CitychainError, fetchFailureDetail } from "../../sdk/errors.ts";
import { loadIdentity, nodeFetch } from "../../sdk/node.ts";
import type { TxIdentity } from "../../sdk/tx-builder.ts";
import { passphraseSource, printJson } from "../common.ts";

export const caServeDefaults = { host: "127.0.0.1", port: 7060, syncIntervalS: 300 } as const;

// ---------------------------------------------------------------------------------------------
// Flags

interface TargetFlags {
  url?: string;
  dir?: string;
  passphraseFile?: string;
  cert?: string;
  key?: string;
  caCert?: string;
  network?: string;
  as?: string;
}

interface LedgerFlags {
  ledgerUrl?: string;
  ledgerCert?: string;
  ledgerKey?: string;
  ledgerPassphraseFile?: string;
  ledgerCaCert?: string;
  network?: string;
  as?: string;
  node?: string;
}

/** --url or --dir, and the caller's identity for --url. */
function withTarget(command: Command): Command {
  return command
    .option("--url <url>", "the CA service, e.g. http://127.0.0.1:7060 (env CITYCHAIN_CA_URL)")
    .option("--dir <dir>", "work on this CA folder directly instead (needs the CA passphrase)")
    .option(
      "--passphrase-file <file>",
      "passphrase of the key in use: the CA key with --dir (or env CITYCHAIN_CA_PASSPHRASE), yours with --url (or env CITYCHAIN_KEY_PASSPHRASE)",
    )
    .option("--cert <file>", "with --url: your certificate, PEM (env CITYCHAIN_CERT)")
    .option("--key <file>", "with --url: your private key, encrypted PEM (env CITYCHAIN_KEY)")
    .option("--ca-cert <file>", "with --url: root certificate to trust for TLS (env CITYCHAIN_CA_CERT)");
}

/** --network/--as: who you are, from a devnet folder (the caller with --url, the ledger signer with --dir). */
function withNetwork(command: Command): Command {
  return command
    .option("--network <dir>", "a devnet folder: take your certificate, key and passphrase from it")
    .option("--as <enrollmentId>", "with --network: which member to act as", "infocenter.admin")
    .option("--node <name>", "with --network: which node records on the ledger", "node0");
}

function withLedger(command: Command): Command {
  return command
    .option("--ledger-url <url>", "a node's API: record departments and revocations on the ledger")
    .option("--ledger-cert <file>", "certificate of an admin of the operator department, to sign the records")
    .option("--ledger-key <file>", "its private key, encrypted PEM")
    .option(
      "--ledger-passphrase-file <file>",
      "that key's passphrase (or env CITYCHAIN_KEY_PASSPHRASE / CITYCHAIN_PASSPHRASE_FILE)",
    )
    .option("--ledger-ca-cert <file>", "root certificate to trust for the node's TLS");
}

function fail(message: string, field?: string): never {
  throw new CodedError("BAD_REQUEST", message, field);
}

function caPassphraseSource(
  file: string | undefined,
  env: NodeJS.ProcessEnv = process.env,
): PassphraseSource {
  if (file !== undefined) return { file };
  if (env.CITYCHAIN_CA_PASSPHRASE_FILE !== undefined) return { file: env.CITYCHAIN_CA_PASSPHRASE_FILE };
  if (env.CITYCHAIN_CA_PASSPHRASE !== undefined) return { env: "CITYCHAIN_CA_PASSPHRASE" };
  throw new CodedError(
    "KEY_LOCKED",
    "no CA passphrase: use --passphrase-file or set CITYCHAIN_CA_PASSPHRASE",
    "passphrase",
  );
}

function mode(flags: TargetFlags): "local" | "remote" {
  const url = flags.url ?? process.env.CITYCHAIN_CA_URL;
  if (flags.dir !== undefined && flags.url !== undefined) fail("give --url or --dir, not both", "url");
  if (flags.dir !== undefined) return "local";
  if (url !== undefined) return "remote";
  return fail("give --url <CA service> or --dir <CA folder>", "url");
}

function trimUrl(url: string): string {
  return url.replace(/\/+$/, "");
}

function readText(file: string): string {
  return fs.readFileSync(path.resolve(file), "utf8");
}

// ---------------------------------------------------------------------------------------------
// Opening things

async function openLocal(
  dir: string,
  passphraseFile: string | undefined,
  options: { certValidityDays?: number } = {},
): Promise<{ ca: CertificateAuthority; registry: CaRegistry }> {
  const ca = await loadCa(path.resolve(dir), resolvePassphrase(caPassphraseSource(passphraseFile)));
  const registry = openRegistry({
    ca,
    ...(options.certValidityDays === undefined ? {} : { certValidityDays: options.certValidityDays }),
  });
  return { ca, registry };
}

/** The registry without the CA key, for commands that only read it (revocations, sync). */
function openReadOnly(dir: string): CaRegistry {
  const certPem = readText(path.join(dir, caCertFileName));
  const identity = parseIdentityCert(certPem);
  const ca: CertificateAuthority = {
    dir: path.resolve(dir),
    certPem,
    identity,
    now: Date.now,
    issueFromCsr: () => Promise.reject(new CodedError("KEY_LOCKED", "this command does not load the CA key")),
  };
  return openRegistry({ ca });
}

interface ResolvedIdentity {
  readonly identity: TxIdentity;
  readonly caPem: string | undefined;
  readonly url: string | undefined;
}

async function identityFrom(
  flags: {
    cert?: string | undefined;
    key?: string | undefined;
    caCert?: string | undefined;
    passphraseFile?: string | undefined;
    network?: string | undefined;
    as?: string | undefined;
    node?: string | undefined;
  },
  env: NodeJS.ProcessEnv = process.env,
): Promise<ResolvedIdentity> {
  let { cert, key, caCert, passphraseFile } = flags;
  let url: string | undefined;
  const networkDir = flags.network ?? env.CITYCHAIN_NETWORK;
  if (networkDir !== undefined) {
    const layout = readNetworkLayout(networkDir);
    const as = flags.as ?? "infocenter.admin";
    const member = layout.members.find((m) => m.enrollmentId === as);
    if (member === undefined) throw new CodedError("NOT_FOUND", `no member ${as} in ${networkDir}`, "as");
    const node = layout.nodes.find((n) => n.name === (flags.node ?? "node0"));
    if (node !== undefined) url = `https://127.0.0.1:${node.apiPort}`;
    cert ??= member.certPath;
    key ??= member.keyPath;
    caCert ??= layout.caCertPath;
    passphraseFile ??= layout.passphrasePath;
  }
  cert ??= env.CITYCHAIN_CERT;
  key ??= env.CITYCHAIN_KEY;
  caCert ??= env.CITYCHAIN_CA_CERT;
  if (cert === undefined) fail("missing --cert (or --network)", "cert");
  if (key === undefined) fail("missing --key (or --network)", "key");
  const passphrase = resolvePassphrase(passphraseSource(passphraseFile, env), env);
  const identity = await loadIdentity(cert, key, { passphrase });
  return { identity, caPem: caCert === undefined ? undefined : readText(caCert), url };
}

/** A signed client for the CA service. */
async function caClient(flags: TargetFlags): Promise<CitychainClient> {
  const { identity, caPem } = await identityFrom(flags);
  const url = trimUrl(flags.url ?? process.env.CITYCHAIN_CA_URL ?? fail("missing --url", "url"));
  return new CitychainClient({ url, identity, fetch: nodeFetch(caPem) });
}

/** A LedgerSync when ledger options are given, else undefined. */
async function ledgerFrom(flags: LedgerFlags): Promise<{ ledger: LedgerSync; url: string } | undefined> {
  if (flags.ledgerUrl === undefined && flags.network === undefined) return undefined;
  const resolved = await identityFrom({
    cert: flags.ledgerCert,
    key: flags.ledgerKey,
    caCert: flags.ledgerCaCert,
    passphraseFile: flags.ledgerPassphraseFile,
    network: flags.network,
    as: flags.as,
    node: flags.node,
  });
  const url = trimUrl(flags.ledgerUrl ?? resolved.url ?? fail("missing --ledger-url", "ledgerUrl"));
  const client = new CitychainClient({ url, identity: resolved.identity, fetch: nodeFetch(resolved.caPem) });
  return { ledger: new LedgerSync({ client }), url };
}

/** An unsigned JSON POST (enrollment: the caller has no certificate yet). */
async function postUnsigned<T>(fetchFn: FetchLike, url: string, body: unknown): Promise<T> {
  const response = await fetchFn(url, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: new TextEncoder().encode(JSON.stringify(body)),
  });
  const text = await response.text();
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch {
    throw new CitychainError(
      "BAD_RESPONSE",
      `the CA answered ${response.status} with non-JSON`,
      response.status,
    );
  }
  if (response.status >= 400) {
    const e = (parsed as { error?: { code: string; message: string; field?: string } }).error;
    throw new CitychainError(
      e?.code ?? "HTTP_ERROR",
      e?.message ?? `HTTP ${response.status}`,
      response.status,
      e?.field,
    );
  }
  return parsed as T;
}

/** Prints a decision's result; a refused ledger record is an error line and exit 1, a pending one a note. */
function reportLedger(ledger: LedgerStatus): void {
  if (ledger.status === "failed") {
    process.stderr.write(
      `citychain: ${ledger.code}: the CA decided, but the ledger refused the record: ${ledger.message}\n`,
    );
    process.exitCode = 1;
  } else if (ledger.status === "pending") {
    process.stderr.write(
      `note: not on the ledger yet (${ledger.code}); run \`citychain ca sync\` once the ledger is reachable\n`,
    );
  } else if (ledger.status === "not-configured") {
    process.stderr.write(
      "note: no ledger configured; run `citychain ca sync` to record this on the ledger\n",
    );
  }
}

function parseRoles(text: string): Role[] {
  return validateRoles(
    text
      .split(",")
      .map((role) => role.trim())
      .filter((role) => role.length > 0),
  );
}

function parseInteger(text: string, field: string, min: number, max: number): number {
  const value = Number(text);
  if (!/^\d+$/.test(text) || !Number.isSafeInteger(value) || value < min || value > max) {
    fail(`--${field} is an integer in ${min}..${max}`, field);
  }
  return value;
}

function parseReason(text: string): RevocationReason {
  if (!(recordableReasons as readonly string[]).includes(text)) {
    fail(`--reason is one of: ${recordableReasons.join(", ")}`, "reason");
  }
  return text as RevocationReason;
}

function collect(value: string, previous: string[] = []): string[] {
  return [...previous, value];
}

/** Refuses to overwrite, before anything irreversible (spending a secret) happens. */
interface OutFiles {
  readonly keyPath: string;
  readonly certPath: string;
  readonly caCertPath: string;
}

/** Created folders, removed again (when still empty) if no certificate came. */
const createdOutDirs = new Set<string>();

function prepareOutDir(outDir: string): OutFiles {
  const dir = path.resolve(outDir);
  if (!fs.existsSync(dir)) createdOutDirs.add(dir);
  fs.mkdirSync(dir, { recursive: true, mode: 0o700 });
  const files = {
    keyPath: path.join(dir, "key.pem"),
    certPath: path.join(dir, "cert.pem"),
    caCertPath: path.join(dir, "ca-cert.pem"),
  };
  for (const file of [files.keyPath, files.certPath]) {
    if (fs.existsSync(file)) throw new CodedError("CONFLICT", `${file} already exists`, "outDir");
  }
  return files;
}

function newKeyPassphrase(passphraseFile: string | undefined): string {
  const passphrase = resolvePassphrase(passphraseSource(passphraseFile));
  if (passphrase.length < passphraseCharsMin) {
    throw new CodedError(
      "CA_BAD_INPUT",
      `the new key's passphrase needs at least ${passphraseCharsMin} characters`,
      "passphrase",
    );
  }
  return passphrase;
}

interface Issued {
  enrollmentId: string;
  certId: string;
  notAfter: string;
  certificate: string;
  caCertificate: string;
}

/** The answer must certify our key, under the root we trust (when given) or the one it names. */
function checkIssued(issued: Issued, publicKeySpki: Uint8Array, trustedCaPem: string | undefined): void {
  const cert = parseIdentityCert(issued.certificate);
  const root = parseIdentityCert(issued.caCertificate);
  if (!Buffer.from(cert.publicKeySpki).equals(Buffer.from(publicKeySpki))) {
    throw new CodedError("CA_BAD_CERT", "the CA returned a certificate for another key", "certificate");
  }
  if (trustedCaPem !== undefined && parseIdentityCert(trustedCaPem).certId !== root.certId) {
    throw new CodedError(
      "CERT_UNTRUSTED",
      "the CA answered with a root other than --ca-cert",
      "caCertificate",
    );
  }
  if (!verifyIssuedBy(cert, root)) {
    throw new CodedError("CERT_UNTRUSTED", "the certificate is not issued by the CA's root", "certificate");
  }
}

/** Writes the key first, asks for the certificate, and removes the key again if none came. */
async function obtain(
  files: OutFiles,
  privateKey: KeyObject,
  publicKeySpki: Uint8Array,
  passphrase: string,
  trustedCaPem: string | undefined,
  request: () => Promise<Issued>,
): Promise<Issued> {
  writeEncryptedPrivateKey(files.keyPath, privateKey, passphrase);
  let issued: Issued;
  try {
    issued = await request();
    checkIssued(issued, publicKeySpki, trustedCaPem);
  } catch (error) {
    fs.rmSync(files.keyPath, { force: true });
    const dir = path.dirname(files.keyPath);
    if (createdOutDirs.has(dir) && fs.readdirSync(dir).length === 0) fs.rmdirSync(dir);
    throw error;
  }
  writeFileDurably(files.certPath, issued.certificate, { mode: 0o644 });
  writeFileDurably(files.caCertPath, issued.caCertificate, { mode: 0o644, overwrite: true });
  return issued;
}

function spkiOf(privateKey: KeyObject): Uint8Array {
  return new Uint8Array(createPublicKey(privateKey).export({ type: "spki", format: "der" }));
}

// ---------------------------------------------------------------------------------------------
// Commands

/**
 * Turns transport failures (refused, reset, TLS not trusted) into one coded line instead of a stack
 * trace; every subcommand of `ca` is one of these, so each action gets the same treatment.
 */
class CaCommand extends Command {
  override createCommand(name?: string): CaCommand {
    return new CaCommand(name);
  }

  // biome-ignore lint/suspicious/noExplicitAny: commander's own signature
  override action(fn: (this: this, ...args: any[]) => void | Promise<void>): this {
    // biome-ignore lint/suspicious/noExplicitAny: commander's own signature
    return super.action(async (...args: any[]) => {
      try {
        await fn.apply(this, args);
      } catch (error) {
        throw transportError(error);
      }
    });
  }
}

function transportError(error: unknown): unknown {
  const detail = fetchFailureDetail(error);
  if (detail === undefined) return error;
  const hint = /CERT|SIGNATURE|SELF_SIGNED|ISSUER/.test(detail) ? "; is --ca-cert the right root?" : "";
  return new CitychainError("UNREACHABLE", `cannot reach the server (${detail})${hint}`, 0);
}

export function registerCaCommands(program: Command): void {
  const ca = new CaCommand("ca");
  program.addCommand(ca);
  ca.description("the membership service: root CA, registration, enrollment, revocation, ledger records")
    // Usage errors in one line with a stable code, like every other error of this command.
    .showHelpAfterError(false)
    .configureOutput({
      outputError: (text, write) =>
        write(`citychain: BAD_REQUEST: ${text.trim().replace(/^error: /, "")} (add --help for usage)\n`),
    });

  ca.command("init")
    .description("create a root CA and its registry in a new folder, with the operator department registered")
    .requiredOption("--dir <dir>", "CA folder to create (mode 0700)")
    .option("--dept <code>", "the operator department, whose admins run the CA", "infocenter")
    .option("--dept-name <name>", "the operator department's name", "Municipal Information Center")
    .option("--validity-days <days>", "root certificate lifetime", "3650")
    .option(
      "--passphrase-file <file>",
      "passphrase for the new CA key, 12+ characters (or env CITYCHAIN_CA_PASSPHRASE)",
    )
    .action(
      async (flags: {
        dir: string;
        dept: string;
        deptName: string;
        validityDays: string;
        passphraseFile?: string;
      }) => {
        const passphrase = resolvePassphrase(caPassphraseSource(flags.passphraseFile));
        const dir = path.resolve(flags.dir);
        const created = await createRootCa({
          dir,
          validityDays: parseInteger(flags.validityDays, "validity-days", 1, 30 * 365),
          passphrase,
          dept: flags.dept,
        });
        const registry = openRegistry({ ca: created });
        try {
          registry.registerDepartment(created.identity.dept, flags.deptName);
        } finally {
          registry.close();
        }
        printJson({
          dir,
          certPath: path.join(dir, caCertFileName),
          certId: created.identity.certId,
          subject: created.identity.subjectDn,
          operatorDept: created.identity.dept,
          notAfter: new Date(created.identity.notAfterMs).toISOString(),
        });
        process.stderr.write(
          `next: citychain ca register --dir ${flags.dir} --id ${created.identity.dept}.admin --roles admin,officer  (then ca enroll)\n`,
        );
      },
    );

  withNetwork(
    withLedger(
      ca
        .command("serve")
        .description("run the CA service (HTTP API under /v1/ca) until SIGINT or SIGTERM")
        .requiredOption("--dir <dir>", "the CA folder")
        .option("--passphrase-file <file>", "the CA key's passphrase (or env CITYCHAIN_CA_PASSPHRASE)")
        .option("--host <host>", "listen address", caServeDefaults.host)
        .option("--port <port>", "listen port", String(caServeDefaults.port))
        .option("--cert-validity-days <days>", "lifetime of issued certificates", "365")
        .option(
          "--tls-cert <file>",
          "serve HTTPS with this certificate (e.g. a node identity of the operator)",
        )
        .option("--tls-key <file>", "its private key, encrypted PEM")
        .option("--tls-passphrase-file <file>", "that key's passphrase (default: the CA passphrase)")
        .option(
          "--sync-interval-s <seconds>",
          "with a ledger: re-run `ca sync` this often (0: only at start)",
          String(caServeDefaults.syncIntervalS),
        )
        .option("--log", "structured JSON request and decision logs on stdout"),
    ),
  ).action(
    async (
      flags: LedgerFlags & {
        dir: string;
        passphraseFile?: string;
        host: string;
        port: string;
        certValidityDays: string;
        tlsCert?: string;
        tlsKey?: string;
        tlsPassphraseFile?: string;
        syncIntervalS: string;
        log?: boolean;
      },
    ) => {
      const port = parseInteger(flags.port, "port", 0, 65_535);
      const syncIntervalS = parseInteger(flags.syncIntervalS, "sync-interval-s", 0, 86_400);
      const certValidityDays = parseInteger(flags.certValidityDays, "cert-validity-days", 1, 3650);
      if ((flags.tlsCert === undefined) !== (flags.tlsKey === undefined))
        fail("give --tls-cert with --tls-key", "tlsKey");
      const ledger = await ledgerFrom(flags);
      const tls =
        flags.tlsCert === undefined
          ? undefined
          : {
              certPem: readText(flags.tlsCert),
              keyPem: readText(flags.tlsKey!),
              passphrase: resolvePassphrase(
                flags.tlsPassphraseFile === undefined
                  ? caPassphraseSource(flags.passphraseFile)
                  : { file: flags.tlsPassphraseFile },
              ),
            };
      const { ca: authority, registry } = await openLocal(flags.dir, flags.passphraseFile, {
        certValidityDays,
      });
      const app = await buildCaService({
        ca: authority,
        registry,
        ...(ledger === undefined ? {} : { ledger: ledger.ledger }),
        ...(tls === undefined ? {} : { tls }),
        logger: flags.log === true,
      });
      const address = await app.listen({ host: flags.host, port });
      printJson({
        event: "listening",
        url: address,
        caCertId: authority.identity.certId,
        ledger: ledger?.url ?? null,
      });

      let timer: NodeJS.Timeout | undefined;
      let syncing = false;
      const runSync = async () => {
        if (ledger === undefined || syncing) return;
        syncing = true;
        try {
          const report = await ledger.ledger.sync(registry);
          if (report.recorded + report.pending + report.failed > 0) {
            process.stderr.write(
              `ledger sync: ${report.recorded} recorded, ${report.pending} pending, ${report.failed} failed of ${report.checked}\n`,
            );
          }
        } catch (error) {
          const e = error as { code?: string; message?: string };
          process.stderr.write(`ledger sync: ${e.code ?? "ERROR"}: ${e.message ?? String(error)}\n`);
        } finally {
          syncing = false;
        }
      };
      if (ledger !== undefined) {
        void runSync();
        if (syncIntervalS > 0) timer = setInterval(() => void runSync(), syncIntervalS * 1000);
      }
      let stopping = false;
      const stop = async () => {
        if (stopping) return;
        stopping = true;
        if (timer !== undefined) clearInterval(timer);
        await app.close();
        registry.close();
        process.exit(0);
      };
      process.on("SIGINT", () => void stop());
      process.on("SIGTERM", () => void stop());
    },
  );

  withNetwork(
    withLedger(
      withTarget(
        ca
          .command("register-dept")
          .description("register a department (registrar); recorded on the ledger when one is configured")
          .requiredOption("--code <code>", "department code, [a-z][a-z0-9-]{1,31}")
          .requiredOption("--name <name>", "department name"),
      ),
    ),
  ).action(async (flags: TargetFlags & LedgerFlags & { code: string; name: string }) => {
    if (mode(flags) === "remote") {
      const client = await caClient(flags);
      const { body } = await client.request<{ ledger: LedgerStatus }>("POST", "/v1/ca/departments", {
        code: flags.code,
        name: flags.name,
      });
      printJson(body);
      return reportLedger(body.ledger);
    }
    const ledger = await ledgerFrom(flags);
    const { registry } = await openLocal(flags.dir!, flags.passphraseFile);
    try {
      const result = await new CaOperations(registry, ledger?.ledger).registerDepartment(
        flags.code,
        flags.name,
      );
      printJson(departmentResultToJson(result));
      reportLedger(result.ledger);
    } finally {
      registry.close();
    }
  });

  withNetwork(
    withTarget(
      ca
        .command("register")
        .description("register an identity and print its one-time enrollment secret")
        .requiredOption("--id <enrollmentId>", 'enrollment id, "<dept>.<name>", e.g. tax.alice')
        .requiredOption("--roles <list>", "comma-separated: admin, officer, auditor, client, registrar, node")
        .option("--dept <code>", "department (default: the part of --id before the first dot)")
        .option("--kind <kind>", "user or node", "user")
        .option("--max-enrollments <n>", "how many times the secret may be used", "1")
        .option("--dns <name>", "node identities: a DNS name for the certificate (repeatable)", collect)
        .option("--ip <address>", "node identities: an IP address for the certificate (repeatable)", collect),
    ),
  ).action(
    async (
      flags: TargetFlags & {
        id: string;
        roles: string;
        dept?: string;
        kind: string;
        maxEnrollments: string;
        dns?: string[];
        ip?: string[];
      },
    ) => {
      if (flags.kind !== "user" && flags.kind !== "node") fail("--kind is user or node", "kind");
      const input = {
        enrollmentId: flags.id,
        dept: flags.dept ?? flags.id.split(".")[0] ?? "",
        roles: parseRoles(flags.roles),
        kind: flags.kind as "user" | "node",
        maxEnrollments: parseInteger(flags.maxEnrollments, "max-enrollments", 1, 100),
        ...(flags.dns === undefined ? {} : { dnsNames: flags.dns }),
        ...(flags.ip === undefined ? {} : { ipAddresses: flags.ip }),
      };
      let answer: unknown;
      if (mode(flags) === "remote") {
        answer = (await (await caClient(flags)).request("POST", "/v1/ca/identities", input)).body;
      } else {
        const { ca: authority, registry } = await openLocal(flags.dir!, flags.passphraseFile);
        try {
          if (input.roles.includes("registrar") && input.dept !== authority.identity.dept) {
            throw new CodedError(
              "CA_BAD_INPUT",
              `the registrar role belongs to identities of the operator department ${authority.identity.dept}`,
              "roles",
            );
          }
          const { secret } = await registry.registerIdentity(input);
          answer = { ...input, secret };
        } finally {
          registry.close();
        }
      }
      printJson(answer);
      process.stderr.write(
        "note: the secret is shown only now; hand it to the holder by a separate channel (ca enroll --secret-file)\n",
      );
    },
  );

  ca.command("enroll")
    .description(
      "generate a key here, send a CSR with the one-time secret, write key.pem (encrypted) and cert.pem",
    )
    .requiredOption("--url <url>", "the CA service (env CITYCHAIN_CA_URL)")
    .requiredOption("--id <enrollmentId>", "your enrollment id")
    .option(
      "--secret <secret>",
      "the one-time secret (visible to other users in the process list: prefer --secret-file or env CITYCHAIN_ENROLL_SECRET)",
    )
    .option("--secret-file <file>", "file holding the one-time secret")
    .requiredOption("--out-dir <dir>", "where to write key.pem, cert.pem and ca-cert.pem (created 0700)")
    .option(
      "--passphrase-file <file>",
      "passphrase for the new key, 12+ characters (or env CITYCHAIN_KEY_PASSPHRASE / CITYCHAIN_PASSPHRASE_FILE)",
    )
    .option("--ca-cert <file>", "the root you expect: trusted for TLS, and the answer must be under it")
    .action(
      async (flags: {
        url: string;
        id: string;
        secret?: string;
        secretFile?: string;
        outDir: string;
        passphraseFile?: string;
        caCert?: string;
      }) => {
        const secret =
          flags.secret ??
          (flags.secretFile === undefined ? undefined : readText(flags.secretFile).trim()) ??
          process.env.CITYCHAIN_ENROLL_SECRET ??
          fail("missing --secret, --secret-file or env CITYCHAIN_ENROLL_SECRET", "secret");
        // Everything that could fail locally fails before the one-time secret is spent.
        const passphrase = newKeyPassphrase(flags.passphraseFile);
        const trustedCaPem = flags.caCert === undefined ? undefined : readText(flags.caCert);
        const files = prepareOutDir(flags.outDir);
        const { privateKey } = generateP256KeyPair();
        const csr = await createCsr(privateKey, flags.id);
        const fetchFn = nodeFetch(trustedCaPem);
        const issued = await obtain(files, privateKey, spkiOf(privateKey), passphrase, trustedCaPem, () =>
          postUnsigned<Issued>(fetchFn, `${trimUrl(flags.url)}/v1/ca/enroll`, {
            enrollmentId: flags.id,
            secret,
            csr,
          }),
        );
        printJson({
          enrollmentId: issued.enrollmentId,
          certId: issued.certId,
          notAfter: issued.notAfter,
          ...files,
        });
      },
    );

  withNetwork(
    ca
      .command("reenroll")
      .description("renew your certificate (new key by default), signing the request with the current one")
      .requiredOption("--url <url>", "the CA service")
      .option("--cert <file>", "your current certificate, PEM")
      .option("--key <file>", "its private key, encrypted PEM")
      .option("--passphrase-file <file>", "the key's passphrase; the new key gets the same one")
      .option("--ca-cert <file>", "root certificate to trust for TLS")
      .requiredOption(
        "--out-dir <dir>",
        "where to write the new key.pem and cert.pem (must not hold them yet)",
      )
      .option("--keep-key", "keep the current key; only the certificate is renewed"),
  ).action(async (flags: TargetFlags & { outDir: string; keepKey?: boolean; node?: string }) => {
    const resolved = await identityFrom(flags);
    const client = new CitychainClient({
      url: trimUrl(flags.url!),
      identity: resolved.identity,
      fetch: nodeFetch(resolved.caPem),
    });
    const keyFile = flags.key ?? (flags.network === undefined ? undefined : memberKeyPath(flags));
    const passphrase = newKeyPassphrase(
      flags.passphraseFile ??
        (flags.network === undefined ? undefined : readNetworkLayout(flags.network).passphrasePath),
    );
    const files = prepareOutDir(flags.outDir);
    const privateKey =
      flags.keepKey === true
        ? readPrivateKey(keyFile ?? fail("missing --key", "key"), { passphrase })
        : generateP256KeyPair().privateKey;
    const csr = await createCsr(privateKey, parseIdentityCert(resolved.identity.certDer).enrollmentId);
    const issued = await obtain(
      files,
      privateKey,
      spkiOf(privateKey),
      passphrase,
      resolved.caPem,
      async () => {
        return (await client.request<Issued>("POST", "/v1/ca/reenroll", { csr })).body;
      },
    );
    printJson({
      enrollmentId: issued.enrollmentId,
      certId: issued.certId,
      notAfter: issued.notAfter,
      ...files,
    });
  });

  withNetwork(
    withLedger(
      withTarget(
        ca
          .command("revoke")
          .description("revoke a certificate or an identity (registrar); recorded on the ledger")
          .option("--cert-id <hex>", "the certificate's id (SHA-256 of its DER)")
          .option("--id <enrollmentId>", "revoke this identity and all its certificates")
          .requiredOption("--reason <reason>", `one of: ${recordableReasons.join(", ")}`),
      ),
    ),
  ).action(async (flags: TargetFlags & LedgerFlags & { certId?: string; id?: string; reason: string }) => {
    if ((flags.certId === undefined) === (flags.id === undefined))
      fail("give exactly one of --cert-id and --id", "certId");
    const reason = parseReason(flags.reason);
    if (mode(flags) === "remote") {
      const client = await caClient(flags);
      const body = {
        ...(flags.certId === undefined ? { enrollmentId: flags.id } : { certId: flags.certId }),
        reason,
      };
      const answer = (await client.request<{ ledger: LedgerStatus }>("POST", "/v1/ca/revoke", body)).body;
      printJson(answer);
      return reportLedger(answer.ledger);
    }
    const ledger = await ledgerFrom(flags);
    const { registry } = await openLocal(flags.dir!, flags.passphraseFile);
    try {
      const operations = new CaOperations(registry, ledger?.ledger);
      const result =
        flags.certId === undefined
          ? await operations.revokeIdentity(flags.id!, reason)
          : await operations.revokeCertificate(flags.certId, reason);
      printJson(revokeResultToJson(result));
      reportLedger(result.ledger);
    } finally {
      registry.close();
    }
  });

  withNetwork(
    withTarget(
      ca
        .command("revocations")
        .description("list revoked certificates (or identities), oldest first")
        .option("--kind <kind>", "certificate or identity", "certificate")
        .option("--cursor <cursor>", "continue after this page")
        .option("--limit <n>", "items per page, 1..1000", "100")
        .option("--all", "follow the cursor to the end"),
    ),
  ).action(async (flags: TargetFlags & { kind: string; cursor?: string; limit: string; all?: boolean }) => {
    if (flags.kind !== "certificate" && flags.kind !== "identity")
      fail("--kind is certificate or identity", "kind");
    const limit = parseInteger(flags.limit, "limit", 1, 1000);
    type Page = { items: unknown[]; nextCursor: string | null };
    let fetchPage: (cursor: string | undefined) => Promise<Page>;
    let close = () => {};
    if (mode(flags) === "remote") {
      const client = await caClient(flags);
      fetchPage = async (cursor) => {
        const query = new URLSearchParams({ kind: flags.kind, limit: String(limit) });
        if (cursor !== undefined) query.set("cursor", cursor);
        return (await client.request<Page>("GET", `/v1/ca/revocations?${query}`)).body;
      };
    } else {
      const registry = openReadOnly(flags.dir!);
      close = () => registry.close();
      const iso = (ms: number) => new Date(ms).toISOString();
      fetchPage = async (cursor) => {
        const options = { ...(cursor === undefined ? {} : { cursor }), limit };
        if (flags.kind === "identity") {
          const page = registry.listIdentityRevocations(options);
          const items = page.items.map(({ revokedMs, ...rest }) => ({ ...rest, revokedAt: iso(revokedMs) }));
          return { items, nextCursor: page.nextCursor };
        }
        const page = registry.listRevocations(options);
        const items = page.items.map(({ revokedMs, ...rest }) => ({ ...rest, revokedAt: iso(revokedMs) }));
        return { items, nextCursor: page.nextCursor };
      };
    }
    try {
      let page = await fetchPage(flags.cursor);
      if (flags.all === true) {
        const items = [...page.items];
        while (page.nextCursor !== null) {
          page = await fetchPage(page.nextCursor);
          items.push(...page.items);
        }
        page = { items, nextCursor: null };
      }
      printJson(page);
    } finally {
      close();
    }
  });

  withNetwork(
    withLedger(
      ca
        .command("sync")
        .description(
          "record on the ledger every department and revocation of the CA folder that the ledger lacks (idempotent)",
        )
        .requiredOption("--dir <dir>", "the CA folder (read only; the CA key is not needed)"),
    ),
  ).action(async (flags: LedgerFlags & { dir: string }) => {
    const ledger = await ledgerFrom(flags);
    if (ledger === undefined)
      fail("give --ledger-url with the signer's --ledger-cert/--ledger-key, or --network", "ledgerUrl");
    const registry = openReadOnly(flags.dir);
    try {
      const report = await ledger.ledger.sync(registry, (item: SyncItem) => {
        if (item.result === "present") return;
        const detail = item.code === undefined ? "" : ` ${item.code}: ${item.message}`;
        process.stderr.write(
          `${item.kind} ${item.id}: ${item.result}${item.height === undefined ? "" : ` at ${item.height}`}${detail}\n`,
        );
      });
      printJson(report);
      const unsettled = report.items.find((item) => item.result === "failed" || item.result === "pending");
      if (unsettled !== undefined) {
        process.stderr.write(
          `citychain: ${unsettled.code}: ${report.failed + report.pending} record(s) not on the ledger; first: ${unsettled.kind} ${unsettled.id}: ${unsettled.message}\n`,
        );
        process.exitCode = 1;
      }
    } finally {
      registry.close();
    }
  });
}

function memberKeyPath(flags: TargetFlags): string | undefined {
  const layout = readNetworkLayout(flags.network!);
  return layout.members.find((m) => m.enrollmentId === (flags.as ?? "infocenter.admin"))?.keyPath;
}
