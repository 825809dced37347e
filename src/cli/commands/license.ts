/**
 * `citychain license …`: the license registry from the command line (docs/licenses.md,
 * docs/operations.md "Licenses and subjects from the command line"). Every command signs as the
 * identity given by the usual client options (`--network --as`, or `--url --cert --key`); `--json`
 * prints the node's answer as JSON, otherwise a few human lines.
 *
 * `license verify` checks the proof itself (commit signatures, state proofs) and reports through its
 * exit code: 0 a valid license, 3 revoked, suspended or expired, 1 anything else (an error, a proof
 * that does not verify, a QR code whose content hash or chain does not match).
 */
import fs from "node:fs";
import path from "node:path";
import { Command } from "commander";
import type { Validator } from "../../core/block.ts";
import { type Canonical, fromHex, toHex } from "../../core/encoding.ts";
import { CodedError } from "../../core/errors.ts";
import { checkGenesis } from "../../core/genesis.ts";
import {
  licenseIdLengthMax,
  licenseIdRoot,
  licenseSerialPattern,
  licenseTypeCodePattern,
  parseLicenseId,
  usccPattern,
  validateHolderCode,
} from "../../core/license/identifier.ts";
import { canonicalJson, isJsonObject, type JsonObject } from "../../core/license/json.ts";
import { encodeLicenseQr, parseLicenseQr } from "../../license/qr.ts";
import { readGenesisFile } from "../../node/genesis-file.ts";
import { nodeX509 } from "../../node/x509-port.ts";
import type { CitychainClient } from "../../sdk/client.ts";
import { CitychainError } from "../../sdk/errors.ts";
import { issueLicense, openLicense, setLicenseStatus, verifyLicense } from "../../sdk/licenses.ts";
import { VerificationError } from "../../sdk/verify.ts";
import {
  type ClientFlags,
  clientFromFlags,
  genesisPathFromFlags,
  printJson,
  withClientOptions,
} from "../common.ts";
import { jsonToCanonical } from "./client.ts";

/** Exit code of `license verify` for a license that exists and verifies but is not valid now. */
export const verifyNotValidExitCode = 3;
/** Largest JSON file a command reads (a type definition with its schema, or a license's content). */
export const jsonFileBytesMax = 256 * 1024;
/** Page size limits the node enforces; checked here so the error names the option. */
const pageLimitMax = 500;
const rfc3339Pattern = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,9})?(Z|[+-]\d{2}:\d{2})$/;
const deptPattern = /^[a-z][a-z0-9-]{1,31}$/;
const pseudonymPattern = /^[0-9a-f]{64}$/;
const licenseKeyPattern = /^[0-9A-Z]{21}\.[0-9A-Z]{18}\.[0-9A-Z]{1,32}$/;

export interface OutputFlags {
  json?: boolean;
}

// ---- helpers shared with `citychain subject` ----

export function bad(message: string, field?: string): never {
  throw new CodedError("BAD_REQUEST", message, field);
}

/** JSON with --json, the human lines otherwise. */
export function emit(flags: OutputFlags, value: unknown, human: () => readonly string[]): void {
  if (flags.json === true) printJson(value);
  else process.stdout.write(`${human().join("\n")}\n`);
}

/** Adds the client options and --json; commands that talk to a node take both. */
export function withOutputOptions(command: Command): Command {
  return withClientOptions(command).option("--json", "print JSON instead of human lines");
}

/** Usage mistakes as one line with a code, like every other error (set before subcommands are added). */
export function oneLineUsageErrors(command: Command): Command {
  return command.showHelpAfterError(false).configureOutput({
    outputError: (text, write) =>
      write(`citychain: BAD_REQUEST: ${text.trim().replace(/^error: /, "")} (add --help for usage)\n`),
  });
}

export function readJsonFile(file: string, option: string): unknown {
  const resolved = path.resolve(file);
  const size = fs.statSync(resolved).size;
  if (size > jsonFileBytesMax) bad(`${option}: ${file} is larger than ${jsonFileBytesMax} bytes`, option);
  try {
    return JSON.parse(fs.readFileSync(resolved, "utf8"));
  } catch (error) {
    return bad(`${option}: ${file} is not JSON: ${(error as Error).message}`, option);
  }
}

/** Milliseconds of an RFC 3339 date-time with an offset; the option is named when it is not one. */
export function parseTime(text: string, option: string): number {
  const ms = Date.parse(text);
  if (!rfc3339Pattern.test(text) || Number.isNaN(ms))
    bad(`${option} is an RFC 3339 time with an offset, e.g. 2030-12-31T23:59:59Z`, option);
  return ms;
}

export function checkDept(dept: string, option: string): string {
  if (!deptPattern.test(dept)) bad(`${option} is a department code such as tax`, option);
  return dept;
}

export function checkPseudonym(text: string, option: string): string {
  if (!pseudonymPattern.test(text)) bad(`${option} is a pseudonym: 64 lower-case hex characters`, option);
  return text;
}

/**
 * A license identifier or license key, checked before it becomes part of a URL: an identifier is
 * parsed fully (LICENSE_ID_MALFORMED names the wrong part, as the node would).
 */
export function checkLicenseRef(ref: string): string {
  if (ref.length > licenseIdLengthMax)
    throw new CodedError("LICENSE_ID_MALFORMED", `longer than ${licenseIdLengthMax} characters`, "id");
  if (ref.startsWith(`${licenseIdRoot}.`)) {
    parseLicenseId(ref);
    return ref;
  }
  if (!licenseKeyPattern.test(ref))
    throw new CodedError(
      "LICENSE_ID_MALFORMED",
      `not a license identifier (${licenseIdRoot}.…) or license key (<type code>.<issuer code>.<serial>)`,
      "id",
    );
  return ref;
}

/** The holder's pseudonym, computed by the caller's key node (officers, admins, auditors). */
export async function pseudonymThroughNode(
  client: CitychainClient,
  codeType: string,
  code: string,
): Promise<string> {
  validateHolderCode(codeType, code);
  const { body } = await client.request<{ pseudonym: string }>("POST", "/v1/subjects/pseudonym", {
    codeType,
    code,
  });
  return body.pseudonym;
}

function pageLimit(text: string | undefined): number | undefined {
  if (text === undefined) return undefined;
  const limit = Number(text);
  if (!Number.isSafeInteger(limit) || limit < 1 || limit > pageLimitMax)
    bad(`--limit is an integer from 1 to ${pageLimitMax}`, "limit");
  return limit;
}

function query(params: Record<string, string | number | undefined>): string {
  const search = new URLSearchParams();
  for (const [name, value] of Object.entries(params))
    if (value !== undefined) search.set(name, String(value));
  return search.size === 0 ? "" : `?${search}`;
}

// ---- views ----

interface LicenseTypeView {
  code: string;
  name: string;
  definedBy?: string;
  issuers: string[];
  personalFields: string[];
  validityDays: number | null;
}

interface LicenseView {
  id: string;
  licenseKey: string;
  name: string;
  status: string;
  issuerDept: string;
  holder: string;
  issuedAt: string;
  validUntil: string | null;
  contentHash: string;
  content: unknown;
  height: number;
}

function typeLines(type: LicenseTypeView): string[] {
  return [
    `${type.code}  ${type.name}`,
    `  issuers ${type.issuers.join(", ")}; personal fields ${type.personalFields.join(", ") || "none"}; ` +
      `valid ${type.validityDays === null ? "until revoked" : `${type.validityDays} days`}`,
  ];
}

function licenseLines(license: LicenseView): string[] {
  return [
    `${license.id}  ${license.name}  ${license.status}`,
    `  key ${license.licenseKey}  issuer ${license.issuerDept}  holder ${license.holder}`,
    `  issued ${license.issuedAt}  valid until ${license.validUntil ?? "revoked"}  height ${license.height}`,
    `  content hash ${license.contentHash}`,
    `  public content ${JSON.stringify(license.content)}`,
  ];
}

// ---- commands ----

interface TypeFile {
  code: string;
  name: string;
  schema: JsonObject | string;
  issuers: string[];
  personalFields: string[];
  validityDays: number | null;
  rules?: unknown[];
}

/** The payload of license.type.register from a type file; the node checks every field again. */
function typePayload(value: unknown): Canonical {
  if (!isJsonObject(value)) bad("--file holds one JSON object", "file");
  const type = value as unknown as TypeFile;
  const known = new Set(["code", "name", "schema", "issuers", "personalFields", "validityDays", "rules"]);
  for (const name of Object.keys(type)) if (!known.has(name)) bad(`--file: unknown field ${name}`, name);
  if (typeof type.code !== "string" || !licenseTypeCodePattern.test(type.code))
    bad("--file: code is 21 characters: a credit code and a 3-digit sequence", "code");
  const schema = typeof type.schema === "string" ? type.schema : canonicalJson(type.schema);
  const { schema: _schema, ...rest } = type;
  return { ...(jsonToCanonical(rest, "file") as { [key: string]: Canonical }), schema };
}

async function issue(
  flags: ClientFlags &
    OutputFlags & {
      type: string;
      serial: string;
      holderCodeType: string;
      holderCode: string;
      holderName: string;
      content: string;
      validUntil?: string;
      areaCode?: string;
    },
): Promise<void> {
  if (!licenseSerialPattern.test(flags.serial)) bad("--serial is 1-32 characters of 0-9A-Z", "serial");
  const content = readJsonFile(flags.content, "--content");
  if (!isJsonObject(content)) bad("--content holds one JSON object: the license's content", "content");
  const validUntilMs =
    flags.validUntil === undefined ? undefined : parseTime(flags.validUntil, "--valid-until");
  const client = await clientFromFlags(flags);
  const holder = await pseudonymThroughNode(client, flags.holderCodeType, flags.holderCode);
  let result: Awaited<ReturnType<typeof issueLicense>>;
  try {
    result = await issueLicense(client, {
      typeCode: flags.type,
      serial: flags.serial,
      holder,
      holderCodeType: flags.holderCodeType,
      holderName: flags.holderName,
      holderCode: flags.holderCode,
      content,
      ...(validUntilMs === undefined ? {} : { validUntilMs }),
      ...(flags.areaCode === undefined ? {} : { areaCode: flags.areaCode }),
    });
  } catch (error) {
    // The one mistake worth a hint: issuing registers nothing, the holder must exist first.
    if (error instanceof CitychainError && error.code === "SUBJECT_UNKNOWN")
      throw new CodedError(
        "SUBJECT_UNKNOWN",
        `the holder is not a registered data subject (pseudonym ${holder}): register them first with citychain subject register`,
        "holderCode",
      );
    throw error;
  }
  const qr = encodeLicenseQr({
    chainId: await client.chainId(),
    licenseId: result.id,
    contentHash: fromHex(result.contentHash),
  });
  emit(flags, { ...result, holder, qr }, () => [
    `issued ${result.id}`,
    `  license key  ${result.licenseKey}`,
    `  holder       ${holder}`,
    `  content hash ${result.contentHash}`,
    `  transaction  ${result.txId}`,
    `  QR payload   ${qr}`,
  ]);
}

/**
 * The validator set a verifier trusts: a genesis.json given with --genesis, else the local network's
 * (with --network); only without either is it the set the answering node reports, and we say so.
 */
function trustedValidators(flags: ClientFlags & { genesis?: string }): Validator[] | undefined {
  const file = genesisPathFromFlags(flags);
  if (file === undefined) {
    process.stderr.write("note: trusting the validator set the node reports; pass --genesis to anchor it\n");
    return undefined;
  }
  return checkGenesis(readGenesisFile(file), nodeX509);
}

async function verify(
  ref: string | undefined,
  flags: ClientFlags & OutputFlags & { qr?: string; genesis?: string },
) {
  if ((ref === undefined) === (flags.qr === undefined))
    bad("give one of: a license id or key, or --qr", "id");
  const scanned = flags.qr === undefined ? undefined : parseLicenseQr(flags.qr);
  const id = scanned?.licenseId ?? checkLicenseRef(ref!);
  const client = await clientFromFlags(flags);
  const trusted = trustedValidators(flags);
  const verified = await verifyLicense(client, id, trusted === undefined ? {} : { trusted });
  if (scanned !== undefined) {
    if (scanned.chainId !== (await client.chainId()))
      throw new VerificationError(`qr.chainId: the QR code is for chain ${scanned.chainId}`);
    if (toHex(scanned.contentHash) !== verified.contentHash)
      throw new VerificationError(
        "qr.contentHash: the QR code's content hash is not the ledger's: the document was altered or is another version",
      );
  }
  emit(flags, verified, () => [
    `${verified.id}: ${verified.status}${verified.current ? "" : " (an older version)"}`,
    `  issuer ${verified.issuerDept} (${verified.issuerCode})  type ${verified.typeCode}`,
    `  content hash ${verified.contentHash}`,
    `  proven at height ${verified.height}`,
  ]);
  if (verified.status !== "valid") process.exitCode = verifyNotValidExitCode;
}

interface SearchFlags extends ClientFlags, OutputFlags {
  holderCodeType?: string;
  holderCode?: string;
  holder?: string;
  type?: string;
  issuer?: string;
  status?: string;
  from?: string;
  to?: string;
  limit?: string;
  cursor?: string;
}

async function search(flags: SearchFlags): Promise<void> {
  const byCode = flags.holderCode !== undefined || flags.holderCodeType !== undefined;
  if (byCode && flags.holder !== undefined) bad("give --holder or --holder-code, not both", "holder");
  if (byCode && (flags.holderCode === undefined || flags.holderCodeType === undefined))
    bad("--holder-code needs --holder-code-type (and the other way round)", "holderCodeType");
  if (flags.type !== undefined && !licenseTypeCodePattern.test(flags.type))
    bad("--type is a 21-character license type code", "type");
  if (flags.issuer !== undefined) checkDept(flags.issuer, "--issuer");
  if (flags.from !== undefined) parseTime(flags.from, "--from");
  if (flags.to !== undefined) parseTime(flags.to, "--to");
  const client = await clientFromFlags(flags);
  const holder = byCode
    ? await pseudonymThroughNode(client, flags.holderCodeType!, flags.holderCode!)
    : flags.holder === undefined
      ? undefined
      : checkPseudonym(flags.holder, "--holder");
  const path = `/v1/licenses${query({
    holder,
    type: flags.type,
    issuer: flags.issuer,
    status: flags.status,
    from: flags.from,
    to: flags.to,
    limit: pageLimit(flags.limit),
    cursor: flags.cursor,
  })}`;
  const page = (await client.request<{ items: LicenseView[]; nextCursor: string | null }>("GET", path)).body;
  emit(flags, page, () => [
    ...page.items.map((l) => `${l.id}  ${l.status}  ${l.issuerDept}  ${l.name}`),
    `${page.items.length} license${page.items.length === 1 ? "" : "s"}` +
      (page.nextCursor === null ? "" : `; more with --cursor ${page.nextCursor}`),
  ]);
}

async function trail(
  flags: ClientFlags &
    OutputFlags & { dept?: string; from?: string; to?: string; limit?: string; cursor?: string },
) {
  if (flags.dept !== undefined) checkDept(flags.dept, "--dept");
  if (flags.from !== undefined) parseTime(flags.from, "--from");
  if (flags.to !== undefined) parseTime(flags.to, "--to");
  const client = await clientFromFlags(flags);
  const path = `/v1/access-trail${query({
    dept: flags.dept,
    from: flags.from,
    to: flags.to,
    limit: pageLimit(flags.limit),
    cursor: flags.cursor,
  })}`;
  const page = (await client.request<{ items: TrailView[]; nextCursor: string | null }>("GET", path)).body;
  emit(flags, page, () => trailLines(page));
}

export interface TrailView {
  licenseId: string;
  readerDept: string;
  readerId: string;
  readAt: string;
  fields: string[];
  policyRule?: string;
  basis?: string;
}

export function trailLines(page: { items: TrailView[]; nextCursor: string | null }): string[] {
  return [
    ...page.items.map(
      (e) => `${e.readAt}  ${e.readerId} (${e.readerDept}) read ${e.fields.join(", ")} of ${e.licenseId}`,
    ),
    `${page.items.length} read${page.items.length === 1 ? "" : "s"}` +
      (page.nextCursor === null ? "" : `; more with --cursor ${page.nextCursor}`),
  ];
}

function registerStatusCommand(license: Command, action: "suspend" | "resume" | "revoke"): void {
  withOutputOptions(
    license
      .command(`${action} <licenseKey>`)
      .description(`${action} a license (all its versions); the issuer's officers and admins`)
      .option("--reason <text>", "why, recorded on the ledger"),
  ).action(async (licenseKey: string, flags: ClientFlags & OutputFlags & { reason?: string }) => {
    checkLicenseRef(licenseKey);
    const client = await clientFromFlags(flags);
    const status = await setLicenseStatus(client, action, licenseKey, flags.reason);
    emit(flags, status, () => [`${action} ${licenseKey}: committed at height ${status.height}`]);
  });
}

export function registerLicenseCommands(program: Command): void {
  const license = oneLineUsageErrors(
    new Command("license").description(
      "electronic licenses: catalogue, issuing, reading, verifying, lifecycle, access trail",
    ),
  );
  program.addCommand(license);

  withOutputOptions(license.command("types").description("the license types in the catalogue")).action(
    async (flags: ClientFlags & OutputFlags) => {
      const client = await clientFromFlags(flags);
      const { types } = (await client.request<{ types: LicenseTypeView[] }>("GET", "/v1/license-types")).body;
      emit(flags, { types }, () => (types.length === 0 ? ["no license types"] : types.flatMap(typeLines)));
    },
  );

  withOutputOptions(
    license.command("type <code>").description("one license type, with its schema and policy"),
  ).action(async (code: string, flags: ClientFlags & OutputFlags) => {
    if (!licenseTypeCodePattern.test(code)) bad("the type code is 21 characters", "code");
    const client = await clientFromFlags(flags);
    const type = (
      await client.request<LicenseTypeView & { schema: unknown; policy: unknown }>(
        "GET",
        `/v1/license-types/${code}`,
      )
    ).body;
    emit(flags, type, () => [...typeLines(type), `  schema ${JSON.stringify(type.schema)}`]);
  });

  withOutputOptions(
    license
      .command("register-type")
      .description("register a license type (an admin of the defining department)")
      .requiredOption(
        "--file <type.json>",
        "{code, name, schema, issuers, personalFields, validityDays, rules?}; schema as a JSON object",
      ),
  ).action(async (flags: ClientFlags & OutputFlags & { file: string }) => {
    const payload = typePayload(readJsonFile(flags.file, "--file"));
    const client = await clientFromFlags(flags);
    const status = await client.send("license.type.register", payload);
    emit(flags, status, () => [
      `registered type ${(payload as { code: string }).code} at height ${status.height}`,
    ]);
  });

  withOutputOptions(
    license
      .command("set-issuer")
      .description("give a department its issuer identity (an admin of the information center)")
      .requiredOption("--dept <dept>", "department code, e.g. police")
      .requiredOption("--credit-code <code>", "the department's 18-character unified social credit code")
      .requiredOption("--area-code <code>", "6-digit administrative area code, e.g. 330100"),
  ).action(
    async (flags: ClientFlags & OutputFlags & { dept: string; creditCode: string; areaCode: string }) => {
      checkDept(flags.dept, "--dept");
      if (!usccPattern.test(flags.creditCode))
        bad("--credit-code is an 18-character credit code", "creditCode");
      if (!/^[0-9]{6}$/.test(flags.areaCode)) bad("--area-code is 6 digits", "areaCode");
      const client = await clientFromFlags(flags);
      const status = await client.send("license.issuer.set", {
        dept: flags.dept,
        creditCode: flags.creditCode,
        areaCode: flags.areaCode,
      });
      emit(flags, status, () => [`${flags.dept} issues as ${flags.creditCode} (height ${status.height})`]);
    },
  );

  withOutputOptions(
    license
      .command("issue")
      .description(
        "issue a license to a registered data subject; personal fields are sealed before they leave",
      )
      .requiredOption("--type <code>", "license type code")
      .requiredOption("--serial <serial>", "your serial for it, 1-32 of 0-9A-Z, e.g. 20260000001")
      .requiredOption("--holder-code-type <type>", "holder code type, e.g. 111 (citizen ID)")
      .requiredOption("--holder-code <code>", "the holder's code (never leaves in clear)")
      .requiredOption("--holder-name <name>", "the holder's name (sealed)")
      .requiredOption("--content <file.json>", "the license's content, one JSON object")
      .option("--valid-until <time>", "RFC 3339, e.g. 2030-12-31T23:59:59Z (default: the type's validity)")
      .option("--area-code <code>", "6-digit area code (default: the issuer's)"),
  ).action(issue);

  withOutputOptions(
    license.command("show <id>").description("a license's directory fields and status"),
  ).action(async (ref: string, flags: ClientFlags & OutputFlags) => {
    checkLicenseRef(ref);
    const client = await clientFromFlags(flags);
    const view = (await client.request<LicenseView>("GET", `/v1/licenses/${ref}`)).body;
    emit(flags, view, () => licenseLines(view));
  });

  withOutputOptions(
    license
      .command("open <id>")
      .description("read personal fields through your department's key node (policy, consent, recorded)")
      .option("--fields <a,b>", "only these fields (default: all you may see)"),
  ).action(async (ref: string, flags: ClientFlags & OutputFlags & { fields?: string }) => {
    checkLicenseRef(ref);
    const fields = flags.fields?.split(",").map((f) => f.trim());
    const client = await clientFromFlags(flags);
    const opened = await openLicense(client, ref, fields);
    emit(flags, opened, () => [
      `${opened.id} (${opened.basis}, rules ${opened.policyRules.join(", ")}; this read is recorded)`,
      ...Object.entries(opened.fields).map(([name, value]) => `  ${name}: ${JSON.stringify(value)}`),
    ]);
  });

  withOutputOptions(
    license
      .command("verify [id]")
      .description(
        "check a license's proof against the validators' commit; exit 0 valid, 3 not valid, 1 error",
      )
      .option("--qr <payload>", "a scanned CCL1:… payload instead of an id: also checks its content hash")
      .option(
        "--genesis <file>",
        "trust the validators of this genesis.json (default with --network: its genesis)",
      ),
  ).action(verify);

  withOutputOptions(license.command("history <id>").description("a license's events, oldest first")).action(
    async (ref: string, flags: ClientFlags & OutputFlags) => {
      checkLicenseRef(ref);
      const client = await clientFromFlags(flags);
      const history = (
        await client.request<{
          licenseKey: string;
          events: Array<{ event: string; at: string; by?: string }>;
        }>("GET", `/v1/licenses/${ref}/history`)
      ).body;
      emit(flags, history, () => [
        history.licenseKey,
        ...history.events.map((e) => `  ${e.at}  ${e.event}${e.by === undefined ? "" : `  by ${e.by}`}`),
      ]);
    },
  );

  withOutputOptions(
    license
      .command("search")
      .description("find licenses you may query, newest first")
      .option("--holder-code-type <type>", "with --holder-code: find a holder's licenses by their code")
      .option("--holder-code <code>", "the holder's code; the node turns it into the pseudonym")
      .option("--holder <pseudonym>", "the holder's pseudonym")
      .option("--type <code>", "license type code")
      .option("--issuer <dept>", "issuing department")
      .option("--status <status>", "valid, suspended, revoked or expired")
      .option("--from <time>", "issued at or after, RFC 3339")
      .option("--to <time>", "issued before, RFC 3339")
      .option("--limit <n>", `page size, at most ${pageLimitMax}`)
      .option("--cursor <cursor>", "the next page, from the previous answer"),
  ).action(search);

  for (const action of ["suspend", "resume", "revoke"] as const) registerStatusCommand(license, action);

  withClientOptions(
    license.command("vc <id>").description("the license as a W3C Verifiable Credential (JSON)"),
  ).action(async (ref: string, flags: ClientFlags) => {
    checkLicenseRef(ref);
    const client = await clientFromFlags(flags);
    printJson((await client.request<unknown>("GET", `/v1/licenses/${ref}/vc`)).body);
  });

  withOutputOptions(
    license
      .command("trail")
      .description("who read personal content, when, under which rule (auditors)")
      .option("--dept <dept>", "reads by this department (the information center's auditors)")
      .option("--from <time>", "RFC 3339")
      .option("--to <time>", "RFC 3339")
      .option("--limit <n>", `page size, at most ${pageLimitMax}`)
      .option("--cursor <cursor>", "the next page"),
  ).action(trail);
}
