/**
 * The license registry as transaction handlers (docs/licenses.md). Every change to a license is a
 * transaction by an authorised department; execution checks the catalogue, the type's access
 * policy, the holder's registration and the shape of sealed content, and keeps personal data out of
 * plaintext. What execution cannot see (sealed fields) the SDK validates before sealing.
 */
import { type Canonical, fromUtf8, utf8 } from "../encoding.ts";
import { CodedError } from "../errors.ts";
import type { TxCall, TxHandler } from "../execution.ts";
import { hasRole } from "../identity.ts";
import {
  asKeyedMap,
  asMap,
  type PayloadMap,
  readArray,
  readBytes,
  readEnum,
  readInteger,
  readNullableInteger,
  readOptionalString,
  readString,
  readStringArray,
} from "../payload.ts";
import {
  deptCodePattern,
  encodeRecord,
  readChainParams,
  readDepartment,
  readRecord,
} from "../system-state.ts";
import {
  holderCodeTypes,
  licenseKeyOf,
  licenseTypeCodePattern,
  parseLicenseId,
  usccPattern,
} from "./identifier.ts";
import { canonicalJson, isJsonObject, parseJsonLimited } from "./json.ts";
import { checkRules, decide, defaultRules, holderFields, policyDenied } from "./policy.ts";
import {
  type AccessTrailEntry,
  type ConsentRecord,
  type LicenseAction,
  type LicenseHead,
  type LicenseIssuer,
  type LicensePolicy,
  type LicenseType,
  type LicenseVersion,
  licenseActions,
  licenseKeys,
  type PolicyRule,
  recipientKeyHash,
  type SealedContent,
  type SubjectRecord,
  type WrappedKey,
  wrappedKeyDigest,
  wrappedKeyToCanonical,
} from "./records.ts";
import { compilePublicSchema, validateContent } from "./schema.ts";
import { decodeSubjectStatement, type SubjectAction, subjectStatementSigningBytes } from "./statement.ts";

export const licenseLimits = {
  typeNameCharsMax: 128,
  schemaCharsMax: 16 * 1024,
  issuersMax: 64,
  personalFieldsMax: 64,
  publicContentCharsMax: 64 * 1024,
  sealedBytesMax: 256 * 1024,
  reasonCharsMax: 256,
  wrappedKeysMax: 32,
  validityDaysMax: 100 * 366,
  trailEntriesMax: 500,
  /** A trail entry may be this much younger than its block (clock skew between nodes). */
  trailFutureSkewMs: 60_000,
} as const;

const dayMs = 86_400_000;
export const pseudonymPattern = /^[0-9a-f]{64}$/;
const areaCodePattern = /^[0-9]{6}$/;
const fieldNamePattern = /^[A-Za-z][A-Za-z0-9_]{0,63}$/;
// biome-ignore lint/suspicious/noControlCharactersInRegex: control characters are exactly what text must not contain
const textPattern = /^[^\u0000-\u001f\u007f]{1,256}$/u;
const recipientPattern = /^(holder|[a-z][a-z0-9-]{1,31})$/;
const rolePattern = /^(\*|[a-z][a-z0-9-]{0,31})$/;
const enrollmentIdPattern = /^[a-z0-9][a-z0-9._-]{0,63}$/;
const p256PointBytes = 65;

// ---- reading records ----

function record<T>(call: Pick<TxCall, "state">, key: string): T | undefined {
  return readRecord(call.state, key) as T | undefined;
}

function put(call: TxCall, key: string, value: object): void {
  call.state.set(key, encodeRecord(value as Canonical));
}

export function readLicenseType(call: Pick<TxCall, "state">, code: string): LicenseType {
  const type = record<LicenseType>(call, licenseKeys.type(code));
  if (type === undefined) throw new CodedError("LICENSE_TYPE_UNKNOWN", `no license type ${code}`, "typeCode");
  return type;
}

function readPolicy(call: TxCall, typeCode: string): LicensePolicy {
  const policy = record<LicensePolicy>(call, licenseKeys.policy(typeCode));
  if (policy === undefined) throw new CodedError("STORAGE_CORRUPT", `license type ${typeCode} has no policy`);
  return policy;
}

function readHead(call: TxCall, licenseKey: string): LicenseHead {
  const head = record<LicenseHead>(call, licenseKeys.head(licenseKey));
  if (head === undefined) throw new CodedError("LICENSE_NOT_FOUND", `no license ${licenseKey}`, "licenseKey");
  return head;
}

function readActiveSubject(call: TxCall, pseudonym: string, field: string): SubjectRecord {
  const subject = record<SubjectRecord>(call, licenseKeys.subject(pseudonym));
  if (subject === undefined) throw new CodedError("SUBJECT_UNKNOWN", `no data subject ${pseudonym}`, field);
  if (subject.status === "forgotten")
    throw new CodedError("SUBJECT_FORGOTTEN", `data subject ${pseudonym} has been forgotten`, field);
  return subject;
}

function readIssuer(call: TxCall, dept: string): LicenseIssuer {
  const issuer = record<LicenseIssuer>(call, licenseKeys.issuer(dept));
  if (issuer === undefined)
    throw new CodedError(
      "FORBIDDEN",
      `department ${dept} has no issuer code; the information center sets it`,
    );
  return issuer;
}

// ---- authorisation ----

function requireOperatorAdmin(call: TxCall): void {
  const { operatorDept } = readChainParams(call.state);
  if (call.sender.dept !== operatorDept || !hasRole(call.sender, "admin")) {
    throw new CodedError("FORBIDDEN", `this change needs an admin of ${operatorDept}`);
  }
}

function requirePolicy(
  call: TxCall,
  type: LicenseType,
  issuerDept: string | null,
  action: Exclude<LicenseAction, "decrypt">,
): string {
  const verdict = decide(
    readPolicy(call, type.code),
    call.sender,
    { issuers: type.issuers, issuerDept },
    action,
  );
  if (!verdict.allowed) {
    throw policyDenied(
      verdict.rule,
      `${call.sender.dept} ${call.sender.roles.join("/")} may not ${action} ${type.code}`,
    );
  }
  return verdict.rule;
}

// ---- payload pieces ----

function readWrappedKey(value: Canonical, field: string): WrappedKey {
  const p = asMap(value, field, ["enc", "ciphertext", "recipientKeyHash"]);
  return {
    enc: readBytes(p, "enc", p256PointBytes, p256PointBytes),
    ciphertext: readBytes(p, "ciphertext", 48, 48),
    recipientKeyHash: readBytes(p, "recipientKeyHash", 32, 32),
  };
}

function readSealed(p: PayloadMap): SealedContent {
  const s = asMap(p.sealed ?? null, "sealed", ["nonce", "ciphertext"]);
  return {
    nonce: readBytes(s, "nonce", 12, 12),
    ciphertext: readBytes(s, "ciphertext", 17, licenseLimits.sealedBytesMax),
  };
}

function readWrappedKeys(p: PayloadMap): Map<string, WrappedKey> {
  const raw = asKeyedMap(p.wrappedKeys ?? null, "wrappedKeys");
  const out = new Map<string, WrappedKey>();
  const labels = Object.keys(raw);
  if (labels.length > licenseLimits.wrappedKeysMax)
    throw new CodedError(
      "PAYLOAD_INVALID",
      `wrappedKeys: more than ${licenseLimits.wrappedKeysMax}`,
      "wrappedKeys",
    );
  for (const label of labels) {
    if (!recipientPattern.test(label))
      throw new CodedError("PAYLOAD_INVALID", `wrappedKeys: bad recipient ${label}`, "wrappedKeys");
    out.set(label, readWrappedKey(raw[label]!, `wrappedKeys.${label}`));
  }
  return out;
}

function sameBytes(a: Uint8Array, b: Uint8Array): boolean {
  return a.length === b.length && a.every((x, i) => x === b[i]);
}

/** A wrapped key must be for the recipient's current public key, or nobody could open it. */
function checkWrappedFor(wrapped: WrappedKey, publicKey: Uint8Array, label: string): void {
  if (!sameBytes(wrapped.recipientKeyHash, recipientKeyHash(publicKey))) {
    throw new CodedError(
      "PAYLOAD_INVALID",
      `wrappedKeys.${label}: wrapped to another key than ${label}'s registered one`,
      `wrappedKeys.${label}`,
    );
  }
}

function deptSubjectKey(call: TxCall, pseudonym: string, dept: string): Uint8Array | undefined {
  return call.state.get(licenseKeys.deptSubjectKey(pseudonym, dept));
}

/**
 * The public content: canonical JSON of an object without personal fields, valid for the type's
 * schema with the personal fields taken out.
 */
function checkPublicContent(type: LicenseType, text: string): void {
  const value = parseJsonLimited(text, "publicContent");
  if (!isJsonObject(value))
    throw new CodedError("PAYLOAD_INVALID", "publicContent: must be a JSON object", "publicContent");
  if (canonicalJson(value, "publicContent") !== text) {
    throw new CodedError(
      "PAYLOAD_INVALID",
      "publicContent: must be canonical JSON (RFC 8785)",
      "publicContent",
    );
  }
  for (const field of type.personalFields) {
    if (Object.hasOwn(value, field)) {
      throw new CodedError(
        "LICENSE_CONTENT_INVALID",
        `content.${field} is personal and must be sealed, not public`,
        `content.${field}`,
      );
    }
  }
  validateContent(compilePublicSchema(type.schema, type.personalFields), value, "content");
}

/** Validity: from the payload, or the type's default counted from block time. */
function readValidity(
  call: TxCall,
  p: PayloadMap,
  type: LicenseType,
): { fromMs: number; untilMs: number | null } {
  const fromMs = readNullableInteger(p, "validFromMs", 0, Number.MAX_SAFE_INTEGER) ?? call.block.timeMs;
  const given = readNullableInteger(p, "validUntilMs", 0, Number.MAX_SAFE_INTEGER);
  const untilMs = given ?? (type.validityDays === null ? null : fromMs + type.validityDays * dayMs);
  if (untilMs !== null && untilMs <= fromMs)
    throw new CodedError("PAYLOAD_INVALID", "validUntilMs: must be after validFromMs", "validUntilMs");
  if (untilMs !== null && untilMs - fromMs > licenseLimits.validityDaysMax * dayMs)
    throw new CodedError("PAYLOAD_INVALID", "validUntilMs: validity longer than 100 years", "validUntilMs");
  return { fromMs, untilMs };
}

// ---- handlers: catalogue ----

const setIssuer: TxHandler = (call) => {
  requireOperatorAdmin(call);
  const p = asMap(call.payload, "payload", ["dept", "creditCode", "areaCode"]);
  const dept = readString(p, "dept", deptCodePattern, 32);
  const creditCode = readString(p, "creditCode", usccPattern, 18);
  const areaCode = readString(p, "areaCode", areaCodePattern, 6);
  if (readDepartment(call.state, dept) === undefined)
    throw new CodedError("NOT_FOUND", `department ${dept} is not registered`, "dept");
  const holder = call.state.get(licenseKeys.issuerByCode(creditCode));
  if (holder !== undefined && fromUtf8(holder) !== dept)
    throw new CodedError(
      "CONFLICT",
      `credit code ${creditCode} belongs to ${fromUtf8(holder)}`,
      "creditCode",
    );
  const existing = record<LicenseIssuer>(call, licenseKeys.issuer(dept));
  // Identifiers embed the credit code, so it never changes once licenses may carry it.
  if (existing !== undefined && existing.creditCode !== creditCode)
    throw new CodedError("CONFLICT", `${dept} already issues as ${existing.creditCode}`, "creditCode");
  const issuer: LicenseIssuer = {
    dept,
    creditCode,
    areaCode,
    sinceHeight: existing?.sinceHeight ?? call.block.height,
  };
  put(call, licenseKeys.issuer(dept), issuer);
  call.state.set(licenseKeys.issuerByCode(creditCode), utf8(dept));
  return { dept, creditCode };
};

function readRules(p: PayloadMap, personalFields: readonly string[]): PolicyRule[] {
  const raw = readArray(p, "rules", 64);
  const rules = raw.map((value, i): PolicyRule => {
    const at = `rules[${i}]`;
    const r = asMap(value, at, ["id", "effect", "dept", "roles", "actions", "fields"]);
    return {
      id: readString(r, "id", /^[a-z0-9][a-z0-9-]{0,47}$/, 48),
      effect: readEnum(r, "effect", ["allow", "deny"] as const),
      dept: readString(r, "dept", /^(\*|\$issuer|\$issuers|[a-z][a-z0-9-]{1,31})$/, 32),
      roles: readStringArray(r, "roles", rolePattern, 32, 16),
      actions: readStringArray(r, "actions", /^[a-z]+$/, 16, licenseActions.length) as LicenseAction[],
      fields:
        r.fields === undefined
          ? []
          : readStringArray(r, "fields", /^(\*|[A-Za-z][A-Za-z0-9_]{0,63})$/, 64, 66),
    };
  });
  checkRules(rules, personalFields);
  return rules;
}

const registerType: TxHandler = (call) => {
  if (!hasRole(call.sender, "admin"))
    throw new CodedError("FORBIDDEN", "registering a license type needs the admin role");
  const p = asMap(call.payload, "payload", [
    "code",
    "name",
    "schema",
    "issuers",
    "personalFields",
    "validityDays",
    "rules",
  ]);
  const code = readString(p, "code", licenseTypeCodePattern, 21);
  const name = readString(p, "name", textPattern, licenseLimits.typeNameCharsMax);
  const schema = readString(p, "schema", /^[\s\S]*$/, licenseLimits.schemaCharsMax);
  const issuers = readStringArray(p, "issuers", deptCodePattern, 32, licenseLimits.issuersMax);
  const personalFields = readStringArray(
    p,
    "personalFields",
    fieldNamePattern,
    64,
    licenseLimits.personalFieldsMax,
  );
  const validityDays = readNullableInteger(p, "validityDays", 1, licenseLimits.validityDaysMax);
  if (record<LicenseType>(call, licenseKeys.type(code)) !== undefined)
    throw new CodedError("CONFLICT", `license type ${code} is already registered`, "code");
  if (issuers.length === 0)
    throw new CodedError("PAYLOAD_INVALID", "issuers: name at least one department", "issuers");
  for (const [i, dept] of issuers.entries()) {
    if (readDepartment(call.state, dept) === undefined)
      throw new CodedError("NOT_FOUND", `department ${dept} is not registered`, `issuers[${i}]`);
  }
  for (const field of personalFields) {
    if ((holderFields as readonly string[]).includes(field))
      throw new CodedError("PAYLOAD_INVALID", `personalFields: ${field} is reserved`, "personalFields");
  }
  compilePublicSchema(schema, personalFields);
  const rules = p.rules === undefined ? defaultRules() : readRules(p, personalFields);
  const type: LicenseType = {
    code,
    name,
    definedBy: call.sender.dept,
    schema,
    issuers,
    personalFields,
    validityDays,
    nextStatusIndex: 0,
    sinceHeight: call.block.height,
  };
  put(call, licenseKeys.type(code), type);
  const policy: LicensePolicy = { typeCode: code, rules, version: 1, updatedAtHeight: call.block.height };
  put(call, licenseKeys.policy(code), policy);
  return { typeCode: code };
};

const setPolicy: TxHandler = (call) => {
  const p = asMap(call.payload, "payload", ["typeCode", "rules"]);
  const type = readLicenseType(call, readString(p, "typeCode", licenseTypeCodePattern, 21));
  if (call.sender.dept !== type.definedBy || !hasRole(call.sender, "admin"))
    throw new CodedError("FORBIDDEN", `only an admin of ${type.definedBy} may change this type's policy`);
  const rules = readRules(p, type.personalFields);
  const previous = readPolicy(call, type.code);
  const policy: LicensePolicy = {
    typeCode: type.code,
    rules,
    version: previous.version + 1,
    updatedAtHeight: call.block.height,
  };
  put(call, licenseKeys.policy(type.code), policy);
  return { typeCode: type.code, version: policy.version };
};

// ---- handlers: subjects ----

const registerSubject: TxHandler = (call) => {
  if (!hasRole(call.sender, "officer", "admin"))
    throw new CodedError("FORBIDDEN", "registering a data subject needs the officer or admin role");
  const p = asMap(call.payload, "payload", ["pseudonym", "encryptionKey", "signingKey", "custody"]);
  const pseudonym = readString(p, "pseudonym", pseudonymPattern, 64);
  const encryptionKey = readBytes(p, "encryptionKey", p256PointBytes, p256PointBytes);
  if (encryptionKey[0] !== 0x04)
    throw new CodedError(
      "PAYLOAD_INVALID",
      "encryptionKey: must be an uncompressed P-256 point",
      "encryptionKey",
    );
  const signingKey = readBytes(p, "signingKey", 64, 128);
  const custody = readEnum(p, "custody", ["self", "vault"] as const);
  const existing = record<SubjectRecord>(call, licenseKeys.subject(pseudonym));
  if (existing?.status === "forgotten")
    throw new CodedError("SUBJECT_FORGOTTEN", `data subject ${pseudonym} has been forgotten`, "pseudonym");
  if (existing !== undefined)
    throw new CodedError("CONFLICT", `data subject ${pseudonym} is registered`, "pseudonym");
  const subject: SubjectRecord = {
    pseudonym,
    encryptionKey,
    signingKey,
    custody,
    status: "active",
    nextSeq: 0,
    registeredBy: call.sender.enrollmentId,
    sinceHeight: call.block.height,
  };
  put(call, licenseKeys.subject(pseudonym), subject);
  return { pseudonym };
};

/** A department publishes the public half of its key for one subject (its key node made the pair). */
const registerDeptSubjectKey: TxHandler = (call) => {
  if (!hasRole(call.sender, "officer", "admin") && call.sender.kind !== "node")
    throw new CodedError("FORBIDDEN", "publishing a department key needs the officer or admin role");
  const p = asMap(call.payload, "payload", ["pseudonym", "publicKey"]);
  const pseudonym = readString(p, "pseudonym", pseudonymPattern, 64);
  const publicKey = readBytes(p, "publicKey", p256PointBytes, p256PointBytes);
  readActiveSubject(call, pseudonym, "pseudonym");
  publishDeptKey(call, pseudonym, call.sender.dept, publicKey);
  return { pseudonym, dept: call.sender.dept };
};

function publishDeptKey(call: TxCall, pseudonym: string, dept: string, publicKey: Uint8Array): void {
  if (publicKey[0] !== 0x04)
    throw new CodedError("PAYLOAD_INVALID", "publicKey: must be an uncompressed P-256 point", "publicKey");
  const existing = deptSubjectKey(call, pseudonym, dept);
  if (existing !== undefined && !sameBytes(existing, publicKey))
    throw new CodedError("CONFLICT", `${dept} already has another key for this subject`, "publicKey");
  if (existing === undefined) call.state.set(licenseKeys.deptSubjectKey(pseudonym, dept), publicKey);
}

// ---- handlers: lifecycle ----

function parseIdForIssuer(call: TxCall, text: string): ReturnType<typeof parseLicenseId> {
  const parts = parseLicenseId(text);
  const issuer = readIssuer(call, call.sender.dept);
  if (parts.issuerCode !== issuer.creditCode) {
    throw new CodedError(
      "LICENSE_ID_MALFORMED",
      `issuer code ${parts.issuerCode} is not ${call.sender.dept}'s (${issuer.creditCode})`,
      "issuerCode",
    );
  }
  return parts;
}

const issue: TxHandler = (call) => {
  const p = asMap(call.payload, "payload", [
    "id",
    "holder",
    "holderCodeType",
    "areaCode",
    "validFromMs",
    "validUntilMs",
    "publicContent",
    "sealed",
    "contentHash",
    "wrappedKeys",
    "deptKey",
  ]);
  const id = readString(p, "id", /^[0-9A-Za-z.]{1,128}$/, 128);
  const parts = parseIdForIssuer(call, id);
  if (parts.version !== 1)
    throw new CodedError("LICENSE_ID_MALFORMED", "a new license starts at version 001", "version");
  const type = readLicenseType(call, parts.typeCode);
  if (!type.issuers.includes(call.sender.dept))
    throw policyDenied("catalogue-issuers", `${call.sender.dept} is not an issuer of ${type.code}`);
  requirePolicy(call, type, null, "issue");
  const licenseKey = licenseKeyOf(parts);
  if (record<LicenseHead>(call, licenseKeys.head(licenseKey)) !== undefined)
    throw new CodedError("CONFLICT", `license ${licenseKey} exists; amend it for a new version`, "id");
  const holder = readString(p, "holder", pseudonymPattern, 64);
  const subject = readActiveSubject(call, holder, "holder");
  const holderCodeType = readString(p, "holderCodeType", /^[0-9A-Z]{3}$/, 3);
  if (!holderCodeTypes.some((t) => t.code === holderCodeType))
    throw new CodedError(
      "PAYLOAD_INVALID",
      `holderCodeType: unknown code type ${holderCodeType}`,
      "holderCodeType",
    );
  const issuer = readIssuer(call, call.sender.dept);
  const areaCode = readOptionalString(p, "areaCode", areaCodePattern, 6) ?? issuer.areaCode;
  const validity = readValidity(call, p, type);
  const publicContent = readString(p, "publicContent", /^[\s\S]*$/, licenseLimits.publicContentCharsMax);
  checkPublicContent(type, publicContent);
  const sealed = readSealed(p);
  const contentHash = readBytes(p, "contentHash", 32, 32);
  if (p.deptKey !== undefined) {
    publishDeptKey(call, holder, call.sender.dept, readBytes(p, "deptKey", p256PointBytes, p256PointBytes));
  }
  const wrapped = readWrappedKeys(p);
  const deptKey = deptSubjectKey(call, holder, call.sender.dept);
  if (deptKey === undefined)
    throw new CodedError(
      "PAYLOAD_INVALID",
      `deptKey: ${call.sender.dept} has no key for this subject yet`,
      "deptKey",
    );
  expectRecipients(wrapped, ["holder", call.sender.dept]);
  checkWrappedFor(wrapped.get("holder")!, subject.encryptionKey, "holder");
  checkWrappedFor(wrapped.get(call.sender.dept)!, deptKey, call.sender.dept);

  const version: LicenseVersion = {
    id,
    licenseKey,
    version: 1,
    typeCode: type.code,
    issuerCode: parts.issuerCode,
    issuerDept: call.sender.dept,
    holder,
    holderCodeType,
    areaCode,
    issuedAtMs: call.block.timeMs,
    validFromMs: validity.fromMs,
    validUntilMs: validity.untilMs,
    publicContent,
    sealed,
    contentHash,
    issuedBy: call.sender.enrollmentId,
    txId: call.tx.id,
    height: call.block.height,
  };
  const head: LicenseHead = {
    licenseKey,
    typeCode: type.code,
    issuerDept: call.sender.dept,
    holder,
    currentVersion: 1,
    currentId: id,
    status: "valid",
    statusReason: null,
    statusChangedAtMs: call.block.timeMs,
    statusIndex: type.nextStatusIndex,
  };
  put(call, licenseKeys.version(id), version);
  put(call, licenseKeys.head(licenseKey), head);
  for (const [label, w] of wrapped) put(call, licenseKeys.wrappedKey(id, label), wrappedKeyToCanonical(w));
  put(call, licenseKeys.type(type.code), { ...type, nextStatusIndex: type.nextStatusIndex + 1 });
  return { by: call.sender.enrollmentId, event: "issue", licenseKey, id, statusIndex: head.statusIndex };
};

function expectRecipients(wrapped: ReadonlyMap<string, WrappedKey>, required: readonly string[]): void {
  for (const label of required) {
    if (!wrapped.has(label))
      throw new CodedError("PAYLOAD_INVALID", `wrappedKeys: missing the key for ${label}`, "wrappedKeys");
  }
}

const amend: TxHandler = (call) => {
  const p = asMap(call.payload, "payload", [
    "id",
    "validFromMs",
    "validUntilMs",
    "publicContent",
    "sealed",
    "contentHash",
    "wrappedKeys",
  ]);
  const id = readString(p, "id", /^[0-9A-Za-z.]{1,128}$/, 128);
  // The license key carries the issuer code, and only the issuing department may amend.
  const parts = parseLicenseId(id);
  const licenseKey = licenseKeyOf(parts);
  const head = readHead(call, licenseKey);
  const type = readLicenseType(call, head.typeCode);
  requirePolicy(call, type, head.issuerDept, "amend");
  if (head.issuerDept !== call.sender.dept)
    throw policyDenied("issuer-only", `only ${head.issuerDept} amends license ${licenseKey}`);
  if (head.status === "revoked")
    throw new CodedError("LICENSE_STATE", `license ${licenseKey} is revoked`, "id");
  if (parts.version !== head.currentVersion + 1) {
    throw new CodedError(
      "LICENSE_ID_MALFORMED",
      `next version of ${licenseKey} is ${String(head.currentVersion + 1).padStart(3, "0")}`,
      "version",
    );
  }
  const previous = record<LicenseVersion>(call, licenseKeys.version(head.currentId))!;
  const subject = readActiveSubject(call, head.holder, "holder");
  const validity = readValidity(call, p, type);
  const publicContent = readString(p, "publicContent", /^[\s\S]*$/, licenseLimits.publicContentCharsMax);
  checkPublicContent(type, publicContent);
  const wrapped = readWrappedKeys(p);
  expectRecipients(wrapped, ["holder", head.issuerDept]);
  checkWrappedFor(wrapped.get("holder")!, subject.encryptionKey, "holder");
  // Departments the holder consented to may be carried over to the new version by the issuer.
  for (const [label, w] of wrapped) {
    if (label === "holder") continue;
    if (label !== head.issuerDept) {
      const consent = record<ConsentRecord>(call, licenseKeys.consent(licenseKey, label));
      if (consent?.status !== "granted")
        throw new CodedError(
          "FORBIDDEN",
          `${label} has no consent for ${licenseKey}`,
          `wrappedKeys.${label}`,
        );
    }
    const key = deptSubjectKey(call, head.holder, label);
    if (key === undefined)
      throw new CodedError(
        "PAYLOAD_INVALID",
        `wrappedKeys.${label}: no key for this subject`,
        `wrappedKeys.${label}`,
      );
    checkWrappedFor(w, key, label);
  }
  const version: LicenseVersion = {
    ...previous,
    id,
    version: parts.version,
    validFromMs: validity.fromMs,
    validUntilMs: validity.untilMs,
    publicContent,
    sealed: readSealed(p),
    contentHash: readBytes(p, "contentHash", 32, 32),
    issuedAtMs: call.block.timeMs,
    issuedBy: call.sender.enrollmentId,
    txId: call.tx.id,
    height: call.block.height,
    holder: subject.pseudonym,
  };
  put(call, licenseKeys.version(id), version);
  for (const [label, w] of wrapped) {
    put(call, licenseKeys.wrappedKey(id, label), wrappedKeyToCanonical(w));
    if (label === "holder" || label === head.issuerDept) continue;
    const consent = record<ConsentRecord>(call, licenseKeys.consent(licenseKey, label))!;
    put(call, licenseKeys.consent(licenseKey, label), { ...consent, licenseId: id });
  }
  put(call, licenseKeys.head(licenseKey), { ...head, currentVersion: parts.version, currentId: id });
  return { by: call.sender.enrollmentId, event: "amend", licenseKey, id, previousId: previous.id };
};

function statusChange(action: "suspend" | "resume" | "revoke"): TxHandler {
  return (call) => {
    const p = asMap(call.payload, "payload", ["licenseKey", "reason"]);
    const licenseKey = readString(p, "licenseKey", /^[0-9A-Z.]{1,96}$/, 96);
    const reason =
      action === "resume" && p.reason === undefined
        ? null
        : readString(p, "reason", textPattern, licenseLimits.reasonCharsMax);
    const head = readHead(call, licenseKey);
    const type = readLicenseType(call, head.typeCode);
    requirePolicy(call, type, head.issuerDept, action === "revoke" ? "revoke" : "suspend");
    if (head.issuerDept !== call.sender.dept)
      throw policyDenied("issuer-only", `only ${head.issuerDept} changes the status of ${licenseKey}`);
    const allowedFrom: Record<typeof action, readonly LicenseHead["status"][]> = {
      suspend: ["valid"],
      resume: ["suspended"],
      revoke: ["valid", "suspended"],
    };
    if (!allowedFrom[action].includes(head.status))
      throw new CodedError("LICENSE_STATE", `cannot ${action} a ${head.status} license`, "licenseKey");
    const status = action === "suspend" ? "suspended" : action === "resume" ? "valid" : "revoked";
    const next: LicenseHead = { ...head, status, statusReason: reason, statusChangedAtMs: call.block.timeMs };
    put(call, licenseKeys.head(licenseKey), next);
    return { by: call.sender.enrollmentId, event: action, licenseKey, id: head.currentId, status };
  };
}

// ---- handlers: the holder's word ----

interface CheckedStatement {
  readonly statement: ReturnType<typeof decodeSubjectStatement>;
  readonly subject: SubjectRecord;
}

function checkStatement(call: TxCall, p: PayloadMap, action: SubjectAction): CheckedStatement {
  const bytes = readBytes(p, "statement", 1, 1024);
  const signature = readBytes(p, "signature", 64, 64);
  const statement = decodeSubjectStatement(bytes);
  if (statement.chainId !== call.block.chainId)
    throw new CodedError("PAYLOAD_INVALID", `statement: for chain ${statement.chainId}`, "statement");
  if (statement.action !== action)
    throw new CodedError(
      "PAYLOAD_INVALID",
      `statement: says ${statement.action}, not ${action}`,
      "statement",
    );
  const subject = readActiveSubject(call, statement.pseudonym, "statement");
  if (statement.seq !== subject.nextSeq)
    throw new CodedError(
      "CONFLICT",
      `statement: sequence ${statement.seq}, expected ${subject.nextSeq}`,
      "statement",
    );
  if (!call.verify(subject.signingKey, subjectStatementSigningBytes(bytes), signature))
    throw new CodedError("SIGNATURE_INVALID", "the data subject's signature does not verify", "signature");
  return { statement, subject };
}

function advanceSeq(
  call: TxCall,
  subject: SubjectRecord,
  status: SubjectRecord["status"] = subject.status,
): void {
  put(call, licenseKeys.subject(subject.pseudonym), { ...subject, nextSeq: subject.nextSeq + 1, status });
}

const grantConsent: TxHandler = (call) => {
  const p = asMap(call.payload, "payload", ["statement", "signature", "wrappedKey"]);
  const { statement, subject } = checkStatement(call, p, "consent.grant");
  const head = readHead(call, statement.licenseKey);
  if (head.holder !== subject.pseudonym)
    throw new CodedError("FORBIDDEN", "the subject does not hold this license", "statement");
  if (head.status === "revoked") throw new CodedError("LICENSE_STATE", "the license is revoked", "statement");
  const dept = statement.dept;
  if (readDepartment(call.state, dept) === undefined)
    throw new CodedError("NOT_FOUND", `department ${dept} is not registered`, "statement");
  if (dept === head.issuerDept)
    throw new CodedError("CONFLICT", `${dept} issued this license and holds its key`, "statement");
  if (statement.untilMs !== null && statement.untilMs <= call.block.timeMs)
    throw new CodedError("PAYLOAD_INVALID", "statement: consent would end before it starts", "statement");
  const key = deptSubjectKey(call, subject.pseudonym, dept);
  if (key === undefined)
    throw new CodedError("PAYLOAD_INVALID", `${dept} has published no key for this subject`, "statement");
  const wrapped = readWrappedKey(p.wrappedKey ?? null, "wrappedKey");
  if (!sameBytes(wrappedKeyDigest(wrapped), statement.wrappedKeyHash))
    throw new CodedError("PAYLOAD_INVALID", "wrappedKey: not the one the statement names", "wrappedKey");
  checkWrappedFor(wrapped, key, dept);
  put(call, licenseKeys.wrappedKey(head.currentId, dept), wrappedKeyToCanonical(wrapped));
  const consent: ConsentRecord = {
    licenseKey: head.licenseKey,
    dept,
    status: "granted",
    licenseId: head.currentId,
    untilMs: statement.untilMs,
    changedAtMs: call.block.timeMs,
    seq: statement.seq,
  };
  put(call, licenseKeys.consent(head.licenseKey, dept), consent);
  advanceSeq(call, subject);
  return {
    by: call.sender.enrollmentId,
    event: "consent.grant",
    licenseKey: head.licenseKey,
    id: head.currentId,
    dept,
  };
};

const withdrawConsent: TxHandler = (call) => {
  const p = asMap(call.payload, "payload", ["statement", "signature"]);
  const { statement, subject } = checkStatement(call, p, "consent.withdraw");
  const head = readHead(call, statement.licenseKey);
  if (head.holder !== subject.pseudonym)
    throw new CodedError("FORBIDDEN", "the subject does not hold this license", "statement");
  const consent = record<ConsentRecord>(call, licenseKeys.consent(head.licenseKey, statement.dept));
  if (consent?.status !== "granted")
    throw new CodedError("NOT_FOUND", `${statement.dept} has no consent to withdraw`, "statement");
  call.state.delete(licenseKeys.wrappedKey(consent.licenseId, statement.dept));
  if (consent.licenseId !== head.currentId)
    call.state.delete(licenseKeys.wrappedKey(head.currentId, statement.dept));
  put(call, licenseKeys.consent(head.licenseKey, statement.dept), {
    ...consent,
    status: "withdrawn",
    changedAtMs: call.block.timeMs,
    seq: statement.seq,
  });
  advanceSeq(call, subject);
  return {
    by: call.sender.enrollmentId,
    event: "consent.withdraw",
    licenseKey: head.licenseKey,
    id: head.currentId,
    dept: statement.dept,
  };
};

/**
 * Forgetting: by the subject's own statement, or by an admin of the information center acting on a
 * legal order. Nodes destroy their keys for the subject when this commits (see docs/licenses.md).
 */
const forgetSubject: TxHandler = (call) => {
  const p = asMap(call.payload, "payload", ["statement", "signature", "pseudonym", "reason"]);
  if (p.statement !== undefined) {
    const { subject } = checkStatement(call, p, "forget");
    advanceSeq(call, subject, "forgotten");
    return { by: call.sender.enrollmentId, event: "forget", pseudonym: subject.pseudonym, basis: "subject" };
  }
  requireOperatorAdmin(call);
  const pseudonym = readString(p, "pseudonym", pseudonymPattern, 64);
  readString(p, "reason", textPattern, licenseLimits.reasonCharsMax);
  const subject = readActiveSubject(call, pseudonym, "pseudonym");
  advanceSeq(call, subject, "forgotten");
  return { by: call.sender.enrollmentId, event: "forget", pseudonym, basis: "operator" };
};

// ---- handlers: access trail ----

/** A node records the reads of personal content it served, in batches (docs/licenses.md). */
const recordAccess: TxHandler = (call) => {
  if (call.sender.kind !== "node") throw new CodedError("FORBIDDEN", "only a node records the access trail");
  const p = asMap(call.payload, "payload", ["entries"]);
  const raw = readArray(p, "entries", licenseLimits.trailEntriesMax);
  if (raw.length === 0) throw new CodedError("PAYLOAD_INVALID", "entries: empty", "entries");
  for (const [i, value] of raw.entries()) readTrailEntry(call, value, `entries[${i}]`);
  return { by: call.sender.enrollmentId, event: "access", recorded: raw.length };
};

export function readTrailEntry(call: Pick<TxCall, "block">, value: Canonical, at: string): AccessTrailEntry {
  const e = asMap(value, at, [
    "licenseId",
    "holder",
    "readerDept",
    "readerId",
    "readAtMs",
    "policyRule",
    "fields",
    "basis",
  ]);
  const entry: AccessTrailEntry = {
    licenseId: readString(e, "licenseId", /^[0-9A-Z.]{1,128}$/, 128),
    holder: readString(e, "holder", pseudonymPattern, 64),
    readerDept: readString(e, "readerDept", deptCodePattern, 32),
    readerId: readString(e, "readerId", enrollmentIdPattern, 64),
    readAtMs: readInteger(e, "readAtMs", 0, call.block.timeMs + licenseLimits.trailFutureSkewMs),
    policyRule: readString(e, "policyRule", /^[a-z0-9][a-z0-9-]{0,47}$/, 48),
    fields: readStringArray(e, "fields", fieldNamePattern, 64, licenseLimits.personalFieldsMax + 2),
    basis: readEnum(e, "basis", ["issuer", "consent"] as const),
  };
  return entry;
}

export const licenseHandlers: ReadonlyArray<[string, TxHandler]> = [
  ["license.issuer.set", setIssuer],
  ["license.type.register", registerType],
  ["license.policy.set", setPolicy],
  ["license.subject.register", registerSubject],
  ["license.subject.key", registerDeptSubjectKey],
  ["license.subject.forget", forgetSubject],
  ["license.issue", issue],
  ["license.amend", amend],
  ["license.suspend", statusChange("suspend")],
  ["license.resume", statusChange("resume")],
  ["license.revoke", statusChange("revoke")],
  ["license.consent.grant", grantConsent],
  ["license.consent.withdraw", withdrawConsent],
  ["license.access.record", recordAccess],
];
