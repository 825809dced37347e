/**
 * `citychain subject …`: data subjects (license holders) from the command line (docs/licenses.md
 * "Personal data and keys", docs/operations.md "Licenses and subjects from the command line").
 *
 * A holder's keys are in one of two places, and the holder commands (grant, withdraw, licenses,
 * trail, forget) work with either:
 * - the key vault (`--vault <url>`, custody "vault"): the vault signs and re-wraps; the caller's
 *   identity must be one the vault serves (by default the information center's officers);
 * - a keys folder (`--keys-dir <dir>`, custody "self"): the holder's HPKE and signing private keys
 *   as passphrase-sealed secret files, and `subject.json` with the pseudonym and public keys.
 * The keys folder's passphrase comes from --keys-passphrase-file, env
 * CITYCHAIN_SUBJECT_PASSPHRASE_FILE, or the passphrase itself in CITYCHAIN_SUBJECT_PASSPHRASE.
 */
import { createPrivateKey, createPublicKey } from "node:crypto";
import fs from "node:fs";
import path from "node:path";
import { Command } from "commander";
import { type PassphraseSource, resolvePassphrase } from "../../ca/keys.ts";
import { fromBase64, toBase64 } from "../../core/encoding.ts";
import { CodedError } from "../../core/errors.ts";
import { readNetworkLayout } from "../../devnet/bootstrap.ts";
import { readSecretFile, writeSecretFile } from "../../license/secret-file.ts";
import type { CitychainClient } from "../../sdk/client.ts";
import {
  ensureDepartmentKey,
  forgetSelf,
  grantConsent,
  localSubjectKeys,
  myLicenses,
  type SubjectKeyHolder,
  whoReadMyData,
  withdrawConsent,
} from "../../sdk/licenses.ts";
import { nodeFetch } from "../../sdk/node.ts";
import {
  encryptionPublicKeyOf,
  generateEncryptionKeyPair,
  generateSigningKeyPair,
} from "../../sdk/sealing.ts";
import { VaultClient } from "../../sdk/vault-client.ts";
import { vaultSubjectKeys } from "../../sdk/vault-holder.ts";
import { type ClientFlags, clientFromFlags } from "../common.ts";
import {
  bad,
  checkDept,
  checkLicenseRef,
  checkPseudonym,
  emit,
  type OutputFlags,
  oneLineUsageErrors,
  parseTime,
  pseudonymThroughNode,
  type TrailView,
  trailLines,
  withOutputOptions,
} from "./license.ts";

/** Files of a self-custody keys folder. */
export const subjectKeyFiles = {
  subject: "subject.json",
  encryption: "encryption.key",
  signing: "signing.key",
} as const;

/** Secret-file purposes: a key file made for one use is never read as the other. */
export const subjectKeyPurposes = {
  encryption: "subject-encryption-key",
  signing: "subject-signing-key",
} as const;

const subjectFileFormat = "citychain-subject-keys";
/** subject.json is a few hundred bytes; refuse anything much larger before parsing it. */
const subjectFileBytesMax = 4096;

interface SubjectFile {
  format: typeof subjectFileFormat;
  version: 1;
  pseudonym: string;
  /** HPKE public key (65-byte point) and signing public key (SPKI), base64: what was registered. */
  encryptionKey: string;
  signingKey: string;
}

interface HolderFlags extends ClientFlags, OutputFlags {
  vault?: string;
  keysDir?: string;
  keysPassphraseFile?: string;
  pseudonym?: string;
  codeType?: string;
  code?: string;
}

function keysPassphrase(flags: HolderFlags, env: NodeJS.ProcessEnv = process.env): string {
  let source: PassphraseSource;
  if (flags.keysPassphraseFile !== undefined) source = { file: flags.keysPassphraseFile };
  else if (env.CITYCHAIN_SUBJECT_PASSPHRASE_FILE !== undefined)
    source = { file: env.CITYCHAIN_SUBJECT_PASSPHRASE_FILE };
  else if (env.CITYCHAIN_SUBJECT_PASSPHRASE !== undefined) source = { env: "CITYCHAIN_SUBJECT_PASSPHRASE" };
  else
    throw new CodedError(
      "KEY_LOCKED",
      "no passphrase for the keys folder: use --keys-passphrase-file or set CITYCHAIN_SUBJECT_PASSPHRASE",
      "keysPassphraseFile",
    );
  return resolvePassphrase(source, env);
}

function readSubjectFile(dir: string): SubjectFile {
  const file = path.join(dir, subjectKeyFiles.subject);
  if (fs.statSync(file).size > subjectFileBytesMax) bad(`${file} is not a subject file`, "keysDir");
  const parsed = JSON.parse(fs.readFileSync(file, "utf8")) as Partial<SubjectFile>;
  if (parsed.format !== subjectFileFormat || parsed.version !== 1 || typeof parsed.pseudonym !== "string")
    bad(`${file} is not a ${subjectFileFormat} file`, "keysDir");
  checkPseudonym(parsed.pseudonym, subjectKeyFiles.subject);
  return parsed as SubjectFile;
}

/** Makes the holder's key pairs into a new folder; the private keys only ever exist sealed on disk. */
async function createKeysDir(dir: string, pseudonym: string, passphrase: string): Promise<SubjectFile> {
  if (fs.existsSync(path.join(dir, subjectKeyFiles.subject)))
    bad(`${dir} holds a subject's keys already; use another folder`, "keysDir");
  fs.mkdirSync(dir, { recursive: true, mode: 0o700 });
  const encryption = await generateEncryptionKeyPair();
  const signing = await generateSigningKeyPair();
  try {
    writeSecretFile(path.join(dir, subjectKeyFiles.encryption), encryption.privateKeyPkcs8, passphrase, {
      purpose: subjectKeyPurposes.encryption,
    });
    writeSecretFile(path.join(dir, subjectKeyFiles.signing), signing.privateKeyPkcs8, passphrase, {
      purpose: subjectKeyPurposes.signing,
    });
  } finally {
    encryption.privateKeyPkcs8.fill(0);
    signing.privateKeyPkcs8.fill(0);
  }
  const subject: SubjectFile = {
    format: subjectFileFormat,
    version: 1,
    pseudonym,
    encryptionKey: toBase64(encryption.publicKey),
    signingKey: toBase64(signing.publicKeySpki),
  };
  // Written last: its presence means the keys beside it are complete.
  fs.writeFileSync(path.join(dir, subjectKeyFiles.subject), `${JSON.stringify(subject, null, 2)}\n`, {
    mode: 0o600,
    flag: "wx",
  });
  return subject;
}

/** The keys in a folder, checked against the public keys it says were registered. */
async function holderFromKeysDir(dir: string, passphrase: string): Promise<SubjectKeyHolder> {
  const subject = readSubjectFile(dir);
  const encryption = readSecretFile(
    path.join(dir, subjectKeyFiles.encryption),
    passphrase,
    subjectKeyPurposes.encryption,
  );
  const signing = readSecretFile(
    path.join(dir, subjectKeyFiles.signing),
    passphrase,
    subjectKeyPurposes.signing,
  );
  const encryptionPublic = toBase64(await encryptionPublicKeyOf(encryption));
  const signingPublic = toBase64(
    createPublicKey(createPrivateKey({ key: Buffer.from(signing), format: "der", type: "pkcs8" })).export({
      format: "der",
      type: "spki",
    }),
  );
  if (encryptionPublic !== subject.encryptionKey || signingPublic !== subject.signingKey)
    throw new CodedError(
      "STORAGE_CORRUPT",
      `the keys in ${dir} are not the ones subject.json names`,
      "keysDir",
    );
  return localSubjectKeys(subject.pseudonym, encryption, signing);
}

function networkLayoutOf(flags: ClientFlags) {
  const dir = flags.network ?? process.env.CITYCHAIN_NETWORK;
  return dir === undefined ? undefined : readNetworkLayout(dir);
}

/** The vault's URL: --vault, env CITYCHAIN_VAULT_URL, or the devnet's vault. */
function vaultUrlOf(flags: HolderFlags): string | undefined {
  if (flags.vault !== undefined) return flags.vault;
  if (process.env.CITYCHAIN_VAULT_URL !== undefined) return process.env.CITYCHAIN_VAULT_URL;
  return networkLayoutOf(flags)?.vault?.url;
}

/** A vault client that signs as the command's identity and trusts the consortium root for TLS. */
function vaultClientFor(client: CitychainClient, url: string, flags: ClientFlags): VaultClient {
  const caCert = flags.caCert ?? process.env.CITYCHAIN_CA_CERT ?? networkLayoutOf(flags)?.caCertPath;
  const caPem = caCert === undefined ? undefined : fs.readFileSync(path.resolve(caCert), "utf8");
  return new VaultClient({ url: url.replace(/\/$/, ""), identity: client.identity, fetch: nodeFetch(caPem) });
}

async function pseudonymOf(client: CitychainClient, flags: HolderFlags): Promise<string> {
  if (flags.pseudonym !== undefined) return checkPseudonym(flags.pseudonym, "--pseudonym");
  if (flags.codeType === undefined || flags.code === undefined)
    bad("with --vault, name the holder: --pseudonym, or --code-type and --code", "pseudonym");
  return pseudonymThroughNode(client, flags.codeType, flags.code);
}

/** The holder's keys, wherever they are: the keys folder, or the vault. */
async function holderFrom(client: CitychainClient, flags: HolderFlags): Promise<SubjectKeyHolder> {
  if (flags.keysDir !== undefined) {
    if (flags.vault !== undefined) bad("give --vault or --keys-dir, not both", "vault");
    return holderFromKeysDir(flags.keysDir, keysPassphrase(flags));
  }
  const url = vaultUrlOf(flags);
  if (url === undefined) bad("where are the holder's keys? give --vault <url> or --keys-dir <dir>", "vault");
  return vaultSubjectKeys(vaultClientFor(client, url, flags), await pseudonymOf(client, flags));
}

/** Where the holder's keys are: the vault or a keys folder. */
function withKeysOptions(command: Command): Command {
  return withOutputOptions(command)
    .option(
      "--vault <url>",
      "the holder's keys are in this key vault (env CITYCHAIN_VAULT_URL; devnet: its vault)",
    )
    .option("--keys-dir <dir>", "the holder's keys are in this folder (from subject register --custody self)")
    .option(
      "--keys-passphrase-file <file>",
      "the keys folder's passphrase (env CITYCHAIN_SUBJECT_PASSPHRASE[_FILE])",
    );
}

/** Where the holder's keys are, and (for the vault) who the holder is. */
function withHolderOptions(command: Command): Command {
  return withKeysOptions(command)
    .option("--pseudonym <p>", "with --vault: the holder")
    .option("--code-type <type>", "with --vault and --code: the holder by their code, e.g. 111")
    .option("--code <code>", "the holder's code; the node turns it into the pseudonym");
}

// ---- commands ----

interface RegisterFlags extends HolderFlags {
  codeType: string;
  code: string;
  custody: string;
}

async function register(flags: RegisterFlags): Promise<void> {
  if (flags.custody !== "vault" && flags.custody !== "self") bad("--custody is vault or self", "custody");
  if (flags.custody === "self" && flags.keysDir === undefined)
    bad("--custody self needs --keys-dir: where the holder's keys go", "keysDir");
  const client = await clientFromFlags(flags);
  let subject: { pseudonym: string; encryptionKey: Uint8Array; signingKey: Uint8Array };
  if (flags.custody === "vault") {
    const url = vaultUrlOf(flags);
    if (url === undefined) bad("--custody vault needs --vault <url>", "vault");
    const made = await vaultClientFor(client, url, flags).createSubject(flags.codeType, flags.code);
    subject = { pseudonym: made.pseudonym, encryptionKey: made.encryptionKey!, signingKey: made.signingKey! };
  } else {
    const passphrase = keysPassphrase(flags);
    const pseudonym = await pseudonymThroughNode(client, flags.codeType, flags.code);
    const made = await createKeysDir(flags.keysDir!, pseudonym, passphrase);
    subject = {
      pseudonym,
      encryptionKey: fromBase64(made.encryptionKey),
      signingKey: fromBase64(made.signingKey),
    };
  }
  const status = await client.send("license.subject.register", { ...subject, custody: flags.custody });
  emit(
    flags,
    { pseudonym: subject.pseudonym, custody: flags.custody, txId: status.txId, height: status.height },
    () => [
      `registered data subject ${subject.pseudonym} (custody ${flags.custody}) at height ${status.height}`,
      ...(flags.custody === "self" ? [`  keys in ${path.resolve(flags.keysDir!)}`] : []),
    ],
  );
}

async function consent(
  action: "grant" | "withdraw",
  flags: HolderFlags & { license: string; dept: string; until?: string },
): Promise<void> {
  checkLicenseRef(flags.license);
  checkDept(flags.dept, "--dept");
  const untilMs = flags.until === undefined ? null : parseTime(flags.until, "--until");
  const client = await clientFromFlags(flags);
  const holder = await holderFrom(client, flags);
  const status =
    action === "grant"
      ? await grantConsent(client, holder, flags.license, flags.dept, untilMs)
      : await withdrawConsent(client, holder, flags.license, flags.dept);
  emit(flags, status, () => [
    `${action === "grant" ? "granted" : "withdrew"} ${flags.dept}'s access to ${flags.license} (height ${status.height})`,
  ]);
}

export function registerSubjectCommands(program: Command): void {
  const subject = oneLineUsageErrors(
    new Command("subject").description(
      "data subjects (license holders): pseudonyms, registration, consent, their own records, forgetting",
    ),
  );
  program.addCommand(subject);

  withOutputOptions(
    subject
      .command("pseudonym")
      .description("the pseudonym of a holder code, computed by your key node (officers, admins, auditors)")
      .requiredOption("--code-type <type>", "holder code type, e.g. 111 (citizen ID)")
      .requiredOption("--code <code>", "the holder's code"),
  ).action(async (flags: ClientFlags & OutputFlags & { codeType: string; code: string }) => {
    const client = await clientFromFlags(flags);
    const pseudonym = await pseudonymThroughNode(client, flags.codeType, flags.code);
    emit(flags, { pseudonym }, () => [pseudonym]);
  });

  withKeysOptions(
    subject
      .command("register")
      .description("make a holder's keys (in the vault, or in a folder) and register the holder on chain")
      .requiredOption("--code-type <type>", "holder code type, e.g. 111 (citizen ID)")
      .requiredOption("--code <code>", "the holder's code")
      .requiredOption("--custody <where>", "vault (the key vault keeps the keys) or self (--keys-dir)"),
  ).action(register);

  withOutputOptions(
    subject.command("show <pseudonym>").description("a data subject's record on chain"),
  ).action(async (pseudonym: string, flags: ClientFlags & OutputFlags) => {
    checkPseudonym(pseudonym, "pseudonym");
    const client = await clientFromFlags(flags);
    const record = (
      await client.request<{ status: string; custody: string; nextSeq: number; sinceHeight: number }>(
        "GET",
        `/v1/subjects/${pseudonym}`,
      )
    ).body;
    emit(flags, record, () => [
      `${pseudonym}: ${record.status}, custody ${record.custody}, next statement ${record.nextSeq}, since height ${record.sinceHeight}`,
    ]);
  });

  withOutputOptions(
    subject
      .command("department-key <pseudonym>")
      .description("as a department: publish your key for this subject, so the holder can grant you access"),
  ).action(async (pseudonym: string, flags: ClientFlags & OutputFlags) => {
    checkPseudonym(pseudonym, "pseudonym");
    const client = await clientFromFlags(flags);
    const publicKey = await ensureDepartmentKey(client, pseudonym);
    emit(flags, { pseudonym, publicKey: toBase64(publicKey) }, () => [
      `your department's key for ${pseudonym} is on chain`,
    ]);
  });

  withHolderOptions(
    subject
      .command("grant")
      .description("as the holder: let a department read one license (its policy still decides the fields)")
      .requiredOption("--license <licenseKey>", "the license key")
      .requiredOption("--dept <dept>", "the department")
      .option("--until <time>", "RFC 3339 end of the consent (default: until withdrawn)"),
  ).action((flags) => consent("grant", flags));

  withHolderOptions(
    subject
      .command("withdraw")
      .description("as the holder: stop a department's new reads of one license")
      .requiredOption("--license <licenseKey>", "the license key")
      .requiredOption("--dept <dept>", "the department"),
  ).action((flags) => consent("withdraw", flags));

  withHolderOptions(
    subject
      .command("licenses")
      .description("as the holder: their own licenses")
      .option("--cursor <c>", "next page"),
  ).action(async (flags: HolderFlags & { cursor?: string }) => {
    const client = await clientFromFlags(flags);
    const page = await myLicenses(client, await holderFrom(client, flags), flags.cursor);
    emit(flags, page, () => [
      ...page.items.map(
        (l) => `${String(l.id)}  ${String(l.status)}  ${String(l.issuerDept)}  ${String(l.name)}`,
      ),
      `${page.items.length} license${page.items.length === 1 ? "" : "s"}` +
        (page.nextCursor === null ? "" : `; more with --cursor ${page.nextCursor}`),
    ]);
  });

  withHolderOptions(
    subject
      .command("trail")
      .description("as the holder: who read their personal content")
      .option("--cursor <c>", "next page"),
  ).action(async (flags: HolderFlags & { cursor?: string }) => {
    const client = await clientFromFlags(flags);
    const page = await whoReadMyData(client, await holderFrom(client, flags), flags.cursor);
    emit(flags, page, () => trailLines(page as { items: TrailView[]; nextCursor: string | null }));
  });

  withHolderOptions(
    subject
      .command("forget")
      .description("as the holder: be forgotten (vault keys destroyed; every node destroys its keys)"),
  ).action(async (flags: HolderFlags) => {
    const client = await clientFromFlags(flags);
    const status = await forgetSelf(client, await holderFrom(client, flags));
    emit(flags, status, () => [
      `forgotten at height ${status.height}${flags.keysDir === undefined ? "" : `; delete ${flags.keysDir} too`}`,
    ]);
  });
}
