/**
 * Licenses in the SDK (docs/licenses.md): issue with personal content sealed on the client, grant
 * and withdraw consent as the holder (own keys or the key vault), read personal content through the
 * department's key node, and verify a license offline from a proof answer. Runs in Node and in
 * browsers (WebCrypto); nothing personal leaves the client in plaintext except to the caller's own
 * key node when reading.
 */
import { type Commit, decodeCommit, type Validator } from "../core/block.ts";
import { type Canonical, decodeCanonical, fromBase64, toBase64, toHex, utf8 } from "../core/encoding.ts";
import { sha256 } from "../core/hash.ts";
import { formatLicenseId, licenseKeyOf, parseLicenseId } from "../core/license/identifier.ts";
import type { JsonObject } from "../core/license/json.ts";
import { canonicalJson } from "../core/license/json.ts";
import {
  type LicenseEffectiveStatus,
  type LicenseHead,
  type LicenseIssuer,
  type LicenseVersion,
  licenseKeys,
  type SubjectRecord,
  type WrappedKey,
  wrappedKeyDigest,
  wrappedKeyToCanonical,
} from "../core/license/records.ts";
import { compileLicenseSchema, splitContent, validateContent } from "../core/license/schema.ts";
import {
  encodeSubjectStatement,
  type SubjectAction,
  subjectReadHeader,
  subjectReadSigningBytes,
} from "../core/license/statement.ts";
import { normalizeP256Signature } from "../core/signature.ts";
import { proofFromJson, type SmtProof, verifyProof } from "../core/smt-proof.ts";
import type { CommitJson, HeaderJson } from "../core/views.ts";
import type { CitychainClient, TxStatusJson } from "./client.ts";
import { CitychainError } from "./errors.ts";
import {
  contentHash,
  importEncryptionPrivateKey,
  importSigningPrivateKey,
  rewrap,
  sealPersonal,
  signSubjectStatement,
} from "./sealing.ts";
import {
  type ValidatorJson,
  VerificationError,
  validatorsFromJson,
  verifyCommittedHeader,
  verifyCommittedHeaderBytes,
} from "./verify.ts";

/** Licenses per batch proof request (the node's limit, docs/api.md). */
export const licenseProofsMax = 256;

/** Decoded record at a state key, verified against a committed header; undefined when absent. */
async function verifiedRecord<T>(client: CitychainClient, key: string): Promise<T | undefined> {
  const { value } = await client.state(key);
  return value === null ? undefined : (decodeCanonical(value, 1024 * 1024) as unknown as T);
}

export interface LicenseTypeJson {
  code: string;
  name: string;
  schema: JsonObject;
  issuers: string[];
  personalFields: string[];
  validityDays: number | null;
}

export async function licenseType(client: CitychainClient, code: string): Promise<LicenseTypeJson> {
  return (await client.request<LicenseTypeJson>("GET", `/v1/license-types/${code}`)).body;
}

/** The caller's department's key for a subject, published on chain if it is not yet. */
export async function ensureDepartmentKey(client: CitychainClient, pseudonym: string): Promise<Uint8Array> {
  const key = await departmentKey(client, pseudonym);
  if (!key.published) await client.send("license.subject.key", { pseudonym, publicKey: key.publicKey });
  return key.publicKey;
}

async function callerDept(client: CitychainClient): Promise<string> {
  const status = (await client.status()) as { caller?: { dept?: string } };
  const dept = status.caller?.dept;
  if (dept === undefined)
    throw new CitychainError("BAD_RESPONSE", "the node did not say who the caller is", 502);
  return dept;
}

export interface IssueInput {
  readonly typeCode: string;
  /** The issuer's serial for this license (1–32 of 0-9A-Z), unique per type and issuer. */
  readonly serial: string;
  readonly holder: string;
  readonly holderCodeType: string;
  readonly holderName: string;
  readonly holderCode: string;
  /** The whole content; personal fields are sealed, the rest stored in clear. */
  readonly content: JsonObject;
  readonly validFromMs?: number;
  readonly validUntilMs?: number;
  readonly areaCode?: string;
}

export interface IssueResult {
  readonly id: string;
  readonly licenseKey: string;
  readonly txId: string;
  readonly contentHash: string;
}

/** Issues a license: validates the whole content, seals the personal part, submits and waits. */
export async function issueLicense(client: CitychainClient, input: IssueInput): Promise<IssueResult> {
  const type = await licenseType(client, input.typeCode);
  validateContent(compileLicenseSchema(canonicalJson(type.schema)), input.content, "content");
  const dept = await callerDept(client);
  const issuer = await verifiedRecord<LicenseIssuer>(client, licenseKeys.issuer(dept));
  if (issuer === undefined) throw new CitychainError("FORBIDDEN", `${dept} has no issuer code`, 403);
  const id = formatLicenseId({
    typeCode: type.code,
    issuerCode: issuer.creditCode,
    serial: input.serial,
    version: 1,
  });
  const subject = await verifiedRecord<SubjectRecord>(client, licenseKeys.subject(input.holder));
  if (subject === undefined)
    throw new CitychainError("SUBJECT_UNKNOWN", `no data subject ${input.holder}`, 404);
  const deptKey = await departmentKey(client, input.holder);
  const split = splitContent(input.content, type.personalFields);
  const sealed = await sealPersonal(
    id,
    { holderName: input.holderName, holderCode: input.holderCode, fields: split.personalFields },
    [
      { label: "holder", publicKey: subject.encryptionKey },
      { label: dept, publicKey: deptKey.publicKey },
    ],
  );
  const hash = await contentHash(sealed.personalWithSalt, split.publicContent);
  const payload: { [key: string]: Canonical } = {
    id,
    holder: input.holder,
    holderCodeType: input.holderCodeType,
    publicContent: canonicalJson(split.publicContent),
    sealed: { nonce: sealed.sealed.nonce, ciphertext: sealed.sealed.ciphertext },
    contentHash: hash,
    wrappedKeys: Object.fromEntries(
      Object.entries(sealed.wrapped).map(([label, w]) => [label, wrappedKeyToCanonical(w)]),
    ),
    ...(deptKey.published ? {} : { deptKey: deptKey.publicKey }),
    ...(input.validFromMs === undefined ? {} : { validFromMs: input.validFromMs }),
    ...(input.validUntilMs === undefined ? {} : { validUntilMs: input.validUntilMs }),
    ...(input.areaCode === undefined ? {} : { areaCode: input.areaCode }),
  };
  const status = await client.send("license.issue", payload);
  return { id, licenseKey: licenseKeyOf(parseLicenseId(id)), txId: status.txId, contentHash: toHex(hash) };
}

async function departmentKey(client: CitychainClient, pseudonym: string) {
  const key = (
    await client.request<{ publicKey: string; published: boolean }>(
      "POST",
      `/v1/subjects/${pseudonym}/department-key`,
      {},
    )
  ).body;
  return { publicKey: fromBase64(key.publicKey), published: key.published };
}

export interface AmendInput {
  readonly licenseKey: string;
  readonly holderName: string;
  readonly holderCode: string;
  /** The whole new content (validated and split like at issue). */
  readonly content: JsonObject;
  readonly validFromMs?: number;
  readonly validUntilMs?: number;
  /** Departments holding the holder's consent that should keep access to the new version. */
  readonly keepConsents?: readonly string[];
}

/** Issues the next version of a license; the old version stays on the ledger, readable as before. */
export async function amendLicense(client: CitychainClient, input: AmendInput): Promise<IssueResult> {
  const head = await verifiedRecord<LicenseHead>(client, licenseKeys.head(input.licenseKey));
  if (head === undefined)
    throw new CitychainError("LICENSE_NOT_FOUND", `no license ${input.licenseKey}`, 404);
  const type = await licenseType(client, head.typeCode);
  validateContent(compileLicenseSchema(canonicalJson(type.schema)), input.content, "content");
  const current = parseLicenseId(head.currentId);
  const id = formatLicenseId({ ...current, version: head.currentVersion + 1 });
  const subject = await verifiedRecord<SubjectRecord>(client, licenseKeys.subject(head.holder));
  if (subject === undefined)
    throw new CitychainError("SUBJECT_UNKNOWN", `no data subject ${head.holder}`, 404);
  const issuerKey = await departmentKey(client, head.holder);
  const recipients = [
    { label: "holder", publicKey: subject.encryptionKey },
    { label: head.issuerDept, publicKey: issuerKey.publicKey },
  ];
  for (const dept of input.keepConsents ?? []) {
    const key = (await client.state(licenseKeys.deptSubjectKey(head.holder, dept))).value;
    if (key === null)
      throw new CitychainError("CONSENT_REQUIRED", `${dept} has no key for this subject`, 409);
    recipients.push({ label: dept, publicKey: key });
  }
  const split = splitContent(input.content, type.personalFields);
  const sealed = await sealPersonal(
    id,
    { holderName: input.holderName, holderCode: input.holderCode, fields: split.personalFields },
    recipients,
  );
  const hash = await contentHash(sealed.personalWithSalt, split.publicContent);
  const status = await client.send("license.amend", {
    id,
    publicContent: canonicalJson(split.publicContent),
    sealed: { nonce: sealed.sealed.nonce, ciphertext: sealed.sealed.ciphertext },
    contentHash: hash,
    wrappedKeys: Object.fromEntries(
      Object.entries(sealed.wrapped).map(([label, w]) => [label, wrappedKeyToCanonical(w)]),
    ),
    ...(input.validFromMs === undefined ? {} : { validFromMs: input.validFromMs }),
    ...(input.validUntilMs === undefined ? {} : { validUntilMs: input.validUntilMs }),
  });
  return { id, licenseKey: input.licenseKey, txId: status.txId, contentHash: toHex(hash) };
}

export async function setLicenseStatus(
  client: CitychainClient,
  action: "suspend" | "resume" | "revoke",
  licenseKey: string,
  reason?: string,
): Promise<TxStatusJson> {
  return client.send(`license.${action}`, { licenseKey, ...(reason === undefined ? {} : { reason }) });
}

// ---- the holder's side ----

/** What holds a subject's private keys: the holder's own device, or the key vault. */
export interface SubjectKeyHolder {
  readonly pseudonym: string;
  rewrap(
    wrapped: WrappedKey,
    licenseId: string,
    toLabel: string,
    toPublicKey: Uint8Array,
  ): Promise<WrappedKey>;
  sign(encodedStatement: Uint8Array): Promise<Uint8Array>;
  /** Signs a read proof (subjectReadSigningBytes) for the holder's own records. */
  signRead(message: Uint8Array): Promise<Uint8Array>;
}

/** Keys held by the holder (PKCS#8 bytes of the HPKE and the signing private keys). */
export function localSubjectKeys(
  pseudonym: string,
  encryptionPkcs8: Uint8Array,
  signingPkcs8: Uint8Array,
): SubjectKeyHolder {
  return {
    pseudonym,
    async rewrap(wrapped, licenseId, toLabel, toPublicKey) {
      const key = await importEncryptionPrivateKey(encryptionPkcs8);
      return rewrap(wrapped, "holder", key, toLabel, toPublicKey, licenseId);
    },
    sign: (encoded) => signSubjectStatement(signingPkcs8, encoded),
    async signRead(message) {
      const key = await importSigningPrivateKey(signingPkcs8);
      const raw = await globalThis.crypto.subtle.sign(
        { name: "ECDSA", hash: "SHA-256" },
        key,
        message as Uint8Array<ArrayBuffer>,
      );
      return normalizeP256Signature(new Uint8Array(raw));
    },
  };
}

async function statementFor(
  client: CitychainClient,
  holder: SubjectKeyHolder,
  action: SubjectAction,
  licenseKey: string,
  dept: string,
  wrappedKeyHash: Uint8Array,
  untilMs: number | null,
) {
  const subject = await verifiedRecord<SubjectRecord>(client, licenseKeys.subject(holder.pseudonym));
  if (subject === undefined)
    throw new CitychainError("SUBJECT_UNKNOWN", `no data subject ${holder.pseudonym}`, 404);
  const statement = encodeSubjectStatement({
    chainId: await client.chainId(),
    pseudonym: holder.pseudonym,
    seq: subject.nextSeq,
    action,
    licenseKey,
    dept,
    wrappedKeyHash,
    untilMs,
  });
  return { statement, signature: await holder.sign(statement) };
}

/** The holder lets `dept` read one license: re-wraps its data key to the department's key for them. */
export async function grantConsent(
  client: CitychainClient,
  holder: SubjectKeyHolder,
  licenseKey: string,
  dept: string,
  untilMs: number | null = null,
): Promise<TxStatusJson> {
  const head = await verifiedRecord<LicenseHead>(client, licenseKeys.head(licenseKey));
  if (head === undefined) throw new CitychainError("LICENSE_NOT_FOUND", `no license ${licenseKey}`, 404);
  const mine = await verifiedRecord<WrappedKey>(client, licenseKeys.wrappedKey(head.currentId, "holder"));
  if (mine === undefined)
    throw new CitychainError("DECRYPT_UNAVAILABLE", "no holder key on this license", 409);
  const deptKey = (await client.state(licenseKeys.deptSubjectKey(holder.pseudonym, dept))).value;
  if (deptKey === null)
    throw new CitychainError("CONSENT_REQUIRED", `${dept} has not published a key for this subject yet`, 409);
  const wrapped = await holder.rewrap(mine, head.currentId, dept, deptKey);
  const signed = await statementFor(
    client,
    holder,
    "consent.grant",
    licenseKey,
    dept,
    wrappedKeyDigest(wrapped),
    untilMs,
  );
  return client.send("license.consent.grant", { ...signed, wrappedKey: wrappedKeyToCanonical(wrapped) });
}

export async function withdrawConsent(
  client: CitychainClient,
  holder: SubjectKeyHolder,
  licenseKey: string,
  dept: string,
): Promise<TxStatusJson> {
  const signed = await statementFor(
    client,
    holder,
    "consent.withdraw",
    licenseKey,
    dept,
    new Uint8Array(0),
    null,
  );
  return client.send("license.consent.withdraw", signed);
}

/** The holder asks to be forgotten (the vault then destroys their keys; nodes destroy theirs). */
export async function forgetSelf(client: CitychainClient, holder: SubjectKeyHolder): Promise<TxStatusJson> {
  const signed = await statementFor(client, holder, "forget", "", "", new Uint8Array(0), null);
  return client.send("license.subject.forget", signed);
}

// ---- the holder's own records ----

async function asHolder<T>(client: CitychainClient, holder: SubjectKeyHolder, path: string): Promise<T> {
  const createdMs = Date.now();
  const message = subjectReadSigningBytes(await client.chainId(), holder.pseudonym, "GET", path, createdMs);
  const signature = await holder.signRead(message);
  const header = `${createdMs}:${toBase64(signature)}`;
  return (await client.request<T>("GET", path, undefined, { [subjectReadHeader]: header })).body;
}

/** The holder's own licenses, whatever their type (through any node). */
export async function myLicenses(
  client: CitychainClient,
  holder: SubjectKeyHolder,
  cursor?: string,
): Promise<{ items: Array<Record<string, unknown>>; nextCursor: string | null }> {
  const query = cursor === undefined ? "" : `?cursor=${encodeURIComponent(cursor)}`;
  return asHolder(client, holder, `/v1/subjects/${holder.pseudonym}/licenses${query}`);
}

/** Who read the holder's personal content, when, under which rule. */
export async function whoReadMyData(
  client: CitychainClient,
  holder: SubjectKeyHolder,
  cursor?: string,
): Promise<{
  items: Array<{ licenseId: string; readerDept: string; readerId: string; readAt: string; fields: string[] }>;
  nextCursor: string | null;
}> {
  const query = cursor === undefined ? "" : `?cursor=${encodeURIComponent(cursor)}`;
  return asHolder(client, holder, `/v1/subjects/${holder.pseudonym}/access-trail${query}`);
}

// ---- reading and verifying ----

export interface OpenedLicenseJson {
  id: string;
  holder: string;
  fields: Record<string, unknown>;
  policyRules: string[];
  basis: "issuer" | "consent";
  status: string;
}

/** Personal content through the caller's department key node; `fields` omitted = all it may see. */
export async function openLicense(
  client: CitychainClient,
  ref: string,
  fields?: readonly string[],
): Promise<OpenedLicenseJson> {
  const body = fields === undefined ? {} : { fields: [...fields] };
  return (await client.request<OpenedLicenseJson>("POST", `/v1/licenses/${ref}/open`, body)).body;
}

export interface LicenseProofJson {
  id: string;
  licenseKey: string;
  version: { key: string; value: string | null; proof: unknown };
  head: { key: string; value: string | null; proof: unknown };
  height: number;
  header: HeaderJson;
  commit: CommitJson | null;
  validators: ValidatorJson[];
}

export interface VerifiedLicense {
  readonly id: string;
  readonly licenseKey: string;
  readonly status: LicenseEffectiveStatus;
  readonly issuerDept: string;
  readonly issuerCode: string;
  readonly typeCode: string;
  readonly holder: string;
  readonly contentHash: string;
  readonly validUntilMs: number | null;
  readonly publicContent: JsonObject;
  readonly height: number;
  readonly current: boolean;
}

/**
 * Verifies a license proof answer without trusting the node that sent it: both records' proofs lead
 * to the state root of a header signed by > 2/3 of `trusted` validators' power, and they are the
 * records of this identifier. `nowMs` decides "expired".
 */
export async function verifyLicenseProof(
  proof: LicenseProofJson,
  trusted: readonly Validator[],
  nowMs: number,
): Promise<VerifiedLicense> {
  const header = await verifyCommittedHeader(proof.header, proof.commit, trusted);
  return checkLicenseRecords(proof, header.stateRoot, proof.height, nowMs);
}

/** SHA-256 for proofs: Node's native hash where the runtime has it, the same function in JavaScript elsewhere. */
const proofHash = (data: Uint8Array): Uint8Array => sha256(data);

/** The value at `key` after its proof led to `stateRoot` (null: the proof shows the key absent). */
function provenRecord(
  key: string,
  value: Uint8Array | null,
  proof: Uint8Array | SmtProof,
  stateRoot: Uint8Array,
): Uint8Array | null {
  if (!verifyProof(stateRoot, utf8(key), value, proof, proofHash))
    throw new VerificationError(`proof for ${key} does not lead to the state root`);
  return value;
}

function provenValue(entry: { key: string; value: string | null; proof: unknown }, stateRoot: Uint8Array) {
  const value = entry.value === null ? null : fromBase64(entry.value, "value");
  let proof: SmtProof;
  try {
    proof = proofFromJson(entry.proof);
  } catch {
    throw new VerificationError(`proof for ${entry.key} is malformed`);
  }
  return provenRecord(entry.key, value, proof, stateRoot);
}

/** Both records proven against `stateRoot`, and they are this license's. */
function checkLicenseRecords(
  proof: Pick<LicenseProofJson, "id" | "licenseKey" | "version" | "head">,
  stateRoot: Uint8Array,
  height: number,
  nowMs: number,
): VerifiedLicense {
  if (
    proof.version.key !== licenseKeys.version(proof.id) ||
    proof.head.key !== licenseKeys.head(proof.licenseKey)
  )
    throw new VerificationError("the proof is for other keys than this license's");
  const versionBytes = provenValue(proof.version, stateRoot);
  const headBytes = provenValue(proof.head, stateRoot);
  return licenseFromRecords(proof.id, versionBytes, headBytes, height, nowMs);
}

/** What proven records say about license `id` (their proofs already checked). */
function licenseFromRecords(
  id: string,
  versionBytes: Uint8Array | null,
  headBytes: Uint8Array | null,
  height: number,
  nowMs: number,
): VerifiedLicense {
  if (versionBytes === null || headBytes === null)
    throw new VerificationError(`license ${id} is not on the ledger`);
  const version = decodeCanonical(versionBytes, 1024 * 1024) as unknown as LicenseVersion;
  const head = decodeCanonical(headBytes, 1024 * 1024) as unknown as LicenseHead;
  if (version.id !== id || version.licenseKey !== head.licenseKey)
    throw new VerificationError("the records do not belong to this license");
  const status: LicenseEffectiveStatus =
    head.status !== "valid"
      ? head.status
      : version.validUntilMs !== null && version.validUntilMs < nowMs
        ? "expired"
        : "valid";
  return {
    id: version.id,
    licenseKey: head.licenseKey,
    status,
    issuerDept: version.issuerDept,
    issuerCode: version.issuerCode,
    typeCode: version.typeCode,
    holder: version.holder,
    contentHash: toHex(version.contentHash),
    validUntilMs: version.validUntilMs,
    publicContent: JSON.parse(version.publicContent) as JsonObject,
    height,
    current: head.currentId === version.id,
  };
}

export interface LicenseProofsJson {
  items: Array<
    | Omit<LicenseProofJson, "height" | "header" | "commit" | "validators">
    | { id: string; error: { code: string; message: string } }
  >;
  height: number;
  header: HeaderJson;
  commit: CommitJson | null;
  validators: ValidatorJson[];
}

/**
 * Verifies a batch answer: the header's commit once, then every license's proofs against it. Items
 * the node refused come back as errors in place.
 */
export async function verifyLicenseProofs(
  batch: LicenseProofsJson,
  trusted: readonly Validator[],
  nowMs: number,
): Promise<LicenseProofOutcome[]> {
  const header = await verifyCommittedHeader(batch.header, batch.commit, trusted);
  const out: LicenseProofOutcome[] = [];
  for (const item of batch.items) {
    if ("error" in item) out.push(item);
    else out.push(checkLicenseRecords(item, header.stateRoot, batch.height, nowMs));
  }
  return out;
}

export type LicenseProofOutcome = VerifiedLicense | { id: string; error: { code: string; message: string } };

/** Largest binary batch answer the SDK decodes (256 licenses of ordinary size are well under 1 MiB). */
export const licenseProofsAnswerBytesMax = 64 * 1024 * 1024;

/** A binary batch answer (`Accept: application/cbor`) decoded, nothing verified yet. */
export interface LicenseProofsCbor {
  readonly items: ReadonlyArray<
    | {
        readonly id: string;
        readonly licenseKey: string;
        readonly version: Uint8Array;
        readonly versionProof: Uint8Array;
        readonly head: Uint8Array;
        readonly headProof: Uint8Array;
      }
    | { readonly id: string; readonly error: { code: string; message: string; field?: string } }
  >;
  readonly height: number;
  readonly headerBytes: Uint8Array;
  readonly commit: Commit | null;
  /** The set the node reports; verify against a trusted one where you have it. */
  readonly validators: Validator[];
}

function isRecord(value: unknown): value is Record<string, unknown> {
  return (
    value !== null && typeof value === "object" && !Array.isArray(value) && !(value instanceof Uint8Array)
  );
}

function bad(what: string): never {
  throw new VerificationError(`the binary proof answer is malformed: ${what}`);
}

/** Decodes (strictly, canonical CBOR only) and shape-checks a binary batch answer. */
export function decodeLicenseProofsCbor(bytes: Uint8Array): LicenseProofsCbor {
  let raw: Canonical;
  try {
    raw = decodeCanonical(bytes, licenseProofsAnswerBytesMax);
  } catch {
    bad("not canonical CBOR");
  }
  if (!isRecord(raw)) bad("not a map");
  const { items, height, header, commit, validators } = raw;
  if (!Array.isArray(items) || items.length > licenseProofsMax) bad("items");
  if (!Number.isSafeInteger(height)) bad("height");
  if (!(header instanceof Uint8Array)) bad("header");
  if (commit !== null && !(commit instanceof Uint8Array)) bad("commit");
  if (!Array.isArray(validators)) bad("validators");
  let decodedCommit: Commit | null = null;
  let set: Validator[];
  try {
    decodedCommit = commit === null ? null : decodeCommit(commit);
    set = validators.map((v) => {
      const [id, publicKeySpki, power, dept] = v as Canonical[];
      if (!(id instanceof Uint8Array) || !(publicKeySpki instanceof Uint8Array)) throw new Error("key");
      if (!Number.isSafeInteger(power) || typeof dept !== "string") throw new Error("power");
      return { id, publicKeySpki, power: power as number, dept };
    });
  } catch {
    bad("commit or validators");
  }
  const checked = items.map((item): LicenseProofsCbor["items"][number] => {
    if (!isRecord(item) || typeof item.id !== "string") bad("item");
    if ("error" in item) {
      const e = item.error;
      if (!isRecord(e) || typeof e.code !== "string" || typeof e.message !== "string") bad("item error");
      return { id: item.id, error: e as { code: string; message: string; field?: string } };
    }
    const { id, licenseKey, version, versionProof, head, headProof } = item;
    if (
      typeof licenseKey !== "string" ||
      !(version instanceof Uint8Array) ||
      !(versionProof instanceof Uint8Array) ||
      !(head instanceof Uint8Array) ||
      !(headProof instanceof Uint8Array)
    )
      bad(`item ${id}`);
    return { id, licenseKey, version, versionProof, head, headProof };
  });
  return {
    items: checked,
    height: height as number,
    headerBytes: header,
    commit: decodedCommit,
    validators: set,
  };
}

/**
 * Verifies a binary batch answer like verifyLicenseProofs does a JSON one: the header's commit by
 * > 2/3 of `trusted` once, then each license's two records: their proofs (the records' hashes, at
 * the keys this license's identifier names) against the header's state root.
 */
export async function verifyLicenseProofsCbor(
  answer: Uint8Array | LicenseProofsCbor,
  trusted: readonly Validator[],
  nowMs: number,
): Promise<LicenseProofOutcome[]> {
  const batch = answer instanceof Uint8Array ? decodeLicenseProofsCbor(answer) : answer;
  const header = await verifyCommittedHeaderBytes(batch.headerBytes, batch.commit, trusted);
  if (header.height !== batch.height) throw new VerificationError("the answer's height is not its header's");
  return batch.items.map((item) => {
    if ("error" in item) return { id: item.id, error: item.error };
    const version = provenRecord(
      licenseKeys.version(item.id),
      item.version,
      item.versionProof,
      header.stateRoot,
    );
    const head = provenRecord(licenseKeys.head(item.licenseKey), item.head, item.headProof, header.stateRoot);
    return licenseFromRecords(item.id, version, head, batch.height, nowMs);
  });
}

/**
 * Fetches proofs for many licenses from any node (in batches) and verifies them. Asks for the
 * binary answer; `format: "json"` asks for the JSON one (both carry the same evidence).
 */
export async function verifyLicenses(
  client: CitychainClient,
  refs: readonly string[],
  options: {
    trusted?: readonly Validator[];
    nowMs?: number;
    batchSize?: number;
    format?: "cbor" | "json";
  } = {},
): Promise<LicenseProofOutcome[]> {
  const out: LicenseProofOutcome[] = [];
  const size = Math.min(options.batchSize ?? licenseProofsMax, licenseProofsMax);
  for (let i = 0; i < refs.length; i += size) {
    const ids = refs.slice(i, i + size);
    const nowMs = options.nowMs ?? Date.now();
    if (options.format === "json") {
      const batch = (await client.request<LicenseProofsJson>("POST", "/v1/licenses/proofs", { ids })).body;
      const trusted =
        options.trusted === undefined
          ? validatorsFromJson(batch.validators)
          : await client.validatorsFor(batch.header, options.trusted);
      out.push(...(await verifyLicenseProofs(batch, trusted, nowMs)));
    } else {
      const { bytes } = await client.requestBytes("POST", "/v1/licenses/proofs", "application/cbor", { ids });
      const batch = decodeLicenseProofsCbor(bytes);
      const trusted =
        options.trusted === undefined
          ? batch.validators
          : await client.validatorsFor(
              { height: batch.height, headerBytes: batch.headerBytes },
              options.trusted,
            );
      out.push(...(await verifyLicenseProofsCbor(batch, trusted, nowMs)));
    }
  }
  return out;
}

/** Fetches a license's proof from any node and verifies it (trusting `trusted`, or the answer's set). */
export async function verifyLicense(
  client: CitychainClient,
  ref: string,
  options: { trusted?: readonly Validator[]; nowMs?: number } = {},
): Promise<VerifiedLicense> {
  const proof = (await client.request<LicenseProofJson>("GET", `/v1/licenses/${ref}/proof`)).body;
  const trusted =
    options.trusted === undefined
      ? validatorsFromJson(proof.validators)
      : await client.validatorsFor(proof.header, options.trusted);
  return verifyLicenseProof(proof, trusted, options.nowMs ?? Date.now());
}
