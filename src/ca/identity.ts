/**
 * The certificate profile of citychain identities, shared by the CA, the node and the SDK in Node.
 * Every node must judge a certificate the same way, so parsing is strict: anything our CA would not
 * have issued is refused with CA_BAD_CERT rather than interpreted. See docs/identity.md.
 */
import { createHash, type KeyObject, X509Certificate } from "node:crypto";
import { CodedError, type ErrorCode } from "../core/errors.ts";
import { type CertificateParts, findExtensions, oids, readCertificateParts } from "./certificate.ts";
import { bytesEqual, encodeOidContent } from "./der.ts";
import { pemToDer } from "./pem.ts";

/**
 * X.667 UUID-based OID (2.25.<UUID as a decimal integer>), so it needs no registration. The UUID,
 * f8474002-8650-4c0b-a22d-bf2237dee0fa, was generated once at random for citychain; never change it.
 */
export const identityExtensionOid = "2.25.330018494305854132473288123208792203514";
export const identityExtensionVersion = 1;

export const roles = ["admin", "officer", "auditor", "node", "registrar", "client"] as const;
export type Role = (typeof roles)[number];

export const identityKinds = ["user", "node", "ca"] as const;
export type IdentityKind = (typeof identityKinds)[number];

const enrollmentIdPattern = /^[a-z0-9._-]{1,64}$/;
const deptCodePattern = /^[a-z][a-z0-9-]{1,31}$/;

/** Largest certificate we parse; ours are about 700 bytes. */
export const certificateBytesMax = 16 * 1024;
/** Largest identity extension value; the longest legal one is under 200 bytes. */
export const identityExtensionBytesMax = 1024;
/** Parsed certificates (and, separately, parse results) kept for reuse; an entry is about 2 KiB. */
export const certificateCacheEntriesMax = 1024;
/** Remembered verdicts of verifyIssuedBy; verifying costs ~45 µs, remembering one costs ~100 bytes. */
export const verdictCacheEntriesMax = 4096;

/** What the CA asserts about a key: who holds it, for which department, in which roles. */
export interface IdentityClaims {
  readonly enrollmentId: string;
  readonly dept: string;
  readonly roles: readonly Role[];
  readonly kind: IdentityKind;
}

export interface Identity extends IdentityClaims {
  /** Lower-case hex SHA-256 of the certificate DER. */
  readonly certId: string;
  readonly der: Uint8Array;
  /** Lower-case hex, no leading zero octet. */
  readonly serialNumber: string;
  /** RFC 4514 order (most specific first), e.g. "CN=tax.alice,OU=officer,O=tax". */
  readonly issuerDn: string;
  readonly subjectDn: string;
  readonly notBeforeMs: number;
  readonly notAfterMs: number;
  /** SubjectPublicKeyInfo DER of the P-256 key. */
  readonly publicKeySpki: Uint8Array;
  /** Lower-case hex SHA-256 of publicKeySpki. */
  readonly publicKeyId: string;
  readonly isCa: boolean;
}

export function caFail(code: ErrorCode, message: string, field?: string): never {
  throw new CodedError(code, message, field);
}

export function sha256Hex(bytes: Uint8Array): string {
  return createHash("sha256").update(bytes).digest("hex");
}

// ---------------------------------------------------------------------------------------------
// Validators: `unknown` in, a typed value out or CA_BAD_INPUT naming the field.

export function validateEnrollmentId(value: unknown, field = "enrollmentId"): string {
  if (typeof value !== "string" || !enrollmentIdPattern.test(value)) {
    caFail("CA_BAD_INPUT", "an enrollment id is 1..64 characters of [a-z0-9._-]", field);
  }
  return value;
}

export function validateDeptCode(value: unknown, field = "dept"): string {
  if (typeof value !== "string" || !deptCodePattern.test(value)) {
    caFail("CA_BAD_INPUT", "a department code matches [a-z][a-z0-9-]{1,31}", field);
  }
  return value;
}

export function isRole(value: unknown): value is Role {
  return typeof value === "string" && (roles as readonly string[]).includes(value);
}

export function validateRoles(value: unknown, field = "roles"): Role[] {
  if (!Array.isArray(value) || value.length === 0 || value.length > roles.length) {
    caFail("CA_BAD_INPUT", `roles is a non-empty list of: ${roles.join(", ")}`, field);
  }
  for (const role of value) {
    if (!isRole(role)) caFail("CA_BAD_INPUT", `unknown role; known roles: ${roles.join(", ")}`, field);
  }
  if (new Set(value).size !== value.length) caFail("CA_BAD_INPUT", "roles must not repeat", field);
  return [...(value as Role[])];
}

export function validateKind(value: unknown, field = "kind"): IdentityKind {
  if (typeof value !== "string" || !(identityKinds as readonly string[]).includes(value)) {
    caFail("CA_BAD_INPUT", `kind is one of: ${identityKinds.join(", ")}`, field);
  }
  return value as IdentityKind;
}

/**
 * Field checks plus the rules that tie them together:
 * - the enrollment id is "<dept>.<name>", so a name alone tells which department vouches for it;
 * - the role "node" is carried by node identities and only by them, so a person's certificate can
 *   never be taken for a validator's.
 */
export function validateClaims(claims: {
  enrollmentId: unknown;
  dept: unknown;
  roles: unknown;
  kind: unknown;
}): IdentityClaims {
  const enrollmentId = validateEnrollmentId(claims.enrollmentId);
  const dept = validateDeptCode(claims.dept);
  const roleList = validateRoles(claims.roles);
  const kind = validateKind(claims.kind);
  if (!enrollmentId.startsWith(`${dept}.`) || enrollmentId.length === dept.length + 1) {
    caFail(
      "CA_BAD_INPUT",
      `the enrollment id must be "<dept>.<name>", here "${dept}.<name>"`,
      "enrollmentId",
    );
  }
  if ((kind === "node") !== roleList.includes("node")) {
    caFail("CA_BAD_INPUT", 'the role "node" belongs to node identities, and every node has it', "roles");
  }
  return { enrollmentId, dept, roles: roleList, kind };
}

// ---------------------------------------------------------------------------------------------
// The identity extension: extnValue holds UTF-8 JSON {"v":1,"dept":…,"roles":[…],"kind":…}.

export type ExtensionClaims = Omit<IdentityClaims, "enrollmentId">;

const utf8Decoder = new TextDecoder("utf-8", { fatal: true });

export function encodeIdentityExtension(claims: ExtensionClaims): Uint8Array<ArrayBuffer> {
  const json = JSON.stringify({
    v: identityExtensionVersion,
    dept: claims.dept,
    roles: claims.roles,
    kind: claims.kind,
  });
  return new TextEncoder().encode(json);
}

/** Refuses any encoding but the canonical one, so one set of claims has exactly one byte form. */
export function decodeIdentityExtension(bytes: Uint8Array): ExtensionClaims {
  if (bytes.length > identityExtensionBytesMax) caFail("CA_BAD_CERT", "identity extension too large");
  let parsed: unknown;
  try {
    parsed = JSON.parse(utf8Decoder.decode(bytes));
  } catch {
    caFail("CA_BAD_CERT", "identity extension is not UTF-8 JSON");
  }
  if (typeof parsed !== "object" || parsed === null || Array.isArray(parsed)) {
    caFail("CA_BAD_CERT", "identity extension is not a JSON object");
  }
  const record = parsed as Record<string, unknown>;
  if (record["v"] !== identityExtensionVersion)
    caFail("CA_BAD_CERT", "unsupported identity extension version");
  const claims = badInputAsBadCert(() => ({
    dept: validateDeptCode(record["dept"]),
    roles: validateRoles(record["roles"]),
    kind: validateKind(record["kind"]),
  }));
  if (!bytesEqual(encodeIdentityExtension(claims), bytes)) {
    caFail(
      "CA_BAD_CERT",
      "identity extension is not in canonical form (keys v, dept, roles, kind; no spaces)",
    );
  }
  return claims;
}

function badInputAsBadCert<T>(read: () => T): T {
  try {
    return read();
  } catch (error) {
    if (error instanceof CodedError && error.code === "CA_BAD_INPUT") {
      caFail("CA_BAD_CERT", `certificate: ${error.message}`, error.field);
    }
    throw error;
  }
}

// ---------------------------------------------------------------------------------------------
// Small LRUs: parsing a certificate (~200 µs in OpenSSL) costs more than verifying it (~45 µs), and
// the same few thousand certificates sign everything a node sees.

interface ParsedCertificate {
  readonly x509: X509Certificate;
  readonly publicKey: KeyObject;
}

class BoundedCache<V> {
  private readonly entries = new Map<string, V>();

  constructor(private readonly entriesMax: number) {}

  get(key: string): V | undefined {
    const value = this.entries.get(key);
    if (value !== undefined) {
      this.entries.delete(key);
      this.entries.set(key, value);
    }
    return value;
  }

  set(key: string, value: V): void {
    this.entries.delete(key);
    this.entries.set(key, value);
    if (this.entries.size > this.entriesMax) {
      const oldest = this.entries.keys().next().value as string;
      this.entries.delete(oldest);
    }
  }
}

const certificateCache = new BoundedCache<ParsedCertificate>(certificateCacheEntriesMax);
const identityCache = new BoundedCache<Identity>(certificateCacheEntriesMax);
const verdictCache = new BoundedCache<boolean>(verdictCacheEntriesMax);

/** `certId` must be sha256(der): callers that skip the check could poison the cache. */
function parsedCertificate(certId: string, der: Uint8Array): ParsedCertificate {
  const cached = certificateCache.get(certId);
  if (cached !== undefined) return cached;
  let x509: X509Certificate;
  try {
    x509 = new X509Certificate(der);
  } catch {
    caFail("CA_BAD_CERT", "not a parsable X.509 certificate");
  }
  const parsed = { x509, publicKey: x509.publicKey };
  certificateCache.set(certId, parsed);
  return parsed;
}

// ---------------------------------------------------------------------------------------------
// Parsing

const ecdsaWithSha256OidContent = encodeOidContent(oids.ecdsaWithSha256);

export function certificateDer(input: string | Uint8Array): Uint8Array {
  const der = typeof input === "string" ? pemToDer(input, "CERTIFICATE") : input;
  if (der === null) caFail("CA_BAD_CERT", "not one PEM CERTIFICATE block");
  if (der.length === 0 || der.length > certificateBytesMax) {
    caFail("CA_BAD_CERT", `a certificate is 1..${certificateBytesMax} bytes`);
  }
  return der;
}

export function parseIdentityCert(input: string | Uint8Array): Identity {
  const der = certificateDer(input);
  const certId = sha256Hex(der);
  let identity = identityCache.get(certId);
  if (identity === undefined) {
    identity = readIdentity(certId, new Uint8Array(der));
    identityCache.set(certId, identity);
  }
  // Callers get their own byte arrays, so none can alter what the cache hands the next one.
  return Object.freeze({
    ...identity,
    der: identity.der.slice(),
    publicKeySpki: identity.publicKeySpki.slice(),
  });
}

function readIdentity(certId: string, der: Uint8Array): Identity {
  const parts = readPartsOrFail(der);
  const { x509, publicKey } = parsedCertificate(certId, der);
  const claims = decodeIdentityExtension(checkProfile(parts, publicKey));
  const subject = readSubject(x509.subject, claims);
  if ((claims.kind === "ca") !== x509.ca) caFail("CA_BAD_CERT", 'only kind "ca" has basicConstraints CA');
  const publicKeySpki = parts.spkiDer.slice();
  return Object.freeze({
    certId,
    der,
    enrollmentId: subject.enrollmentId,
    dept: claims.dept,
    roles: Object.freeze([...claims.roles]),
    kind: claims.kind,
    serialNumber: x509.serialNumber.toLowerCase(),
    issuerDn: toRfc4514(x509.issuer),
    subjectDn: toRfc4514(x509.subject),
    notBeforeMs: readTime(x509.validFrom),
    notAfterMs: readTime(x509.validTo),
    publicKeySpki,
    publicKeyId: sha256Hex(publicKeySpki),
    isCa: x509.ca,
  });
}

function readPartsOrFail(der: Uint8Array): CertificateParts {
  try {
    return readCertificateParts(der);
  } catch {
    caFail("CA_BAD_CERT", "malformed certificate structure");
  }
}

/** The checks Node cannot make for us; returns our extension's value. */
function checkProfile(parts: CertificateParts, publicKey: KeyObject): Uint8Array {
  if (parts.version !== 3) caFail("CA_BAD_CERT", "not an X.509 v3 certificate");
  if (!bytesEqual(parts.signatureAlgorithmOid, ecdsaWithSha256OidContent)) {
    caFail("CA_BAD_CERT", "signature algorithm is not ecdsa-with-SHA256");
  }
  if (!isP256(publicKey) || !isCanonicalP256Spki(parts.spkiDer)) {
    caFail("CA_BAD_CERT", "public key is not an EC P-256 key in named-curve, uncompressed form");
  }
  const extensions = findExtensions(parts, identityExtensionOid);
  if (extensions.length === 0) caFail("CA_BAD_CERT", "certificate has no citychain identity extension");
  if (extensions.length > 1) caFail("CA_BAD_CERT", "identity extension appears twice");
  if (extensions[0]!.critical) caFail("CA_BAD_CERT", "identity extension must be non-critical");
  return extensions[0]!.value;
}

/**
 * SubjectPublicKeyInfo {id-ecPublicKey, prime256v1} with an uncompressed point: the one form Node
 * exports and our CA writes. Requiring it means the SPKI bytes (and publicKeyId) of a key are unique.
 */
// SEQUENCE { SEQUENCE { id-ecPublicKey, prime256v1 }, BIT STRING { 0 unused bits, 0x04 (uncompressed) ...
const p256SpkiPrefix = Uint8Array.from(
  Buffer.from("3059301306072a8648ce3d020106082a8648ce3d03010703420004", "hex"),
);
const p256SpkiBytes = p256SpkiPrefix.length + 64;

export function isCanonicalP256Spki(spki: Uint8Array): boolean {
  return spki.length === p256SpkiBytes && bytesEqual(spki.subarray(0, p256SpkiPrefix.length), p256SpkiPrefix);
}

export function isP256(key: KeyObject): boolean {
  return key.asymmetricKeyType === "ec" && key.asymmetricKeyDetails?.namedCurve === "prime256v1";
}

/**
 * Node prints names one attribute per line, in encoding order, values escaped as in RFC 2253. We
 * issue exactly O, OU, CN with characters that never need escaping, so we require that exact shape.
 */
function readSubject(subject: string, claims: ExtensionClaims): { enrollmentId: string } {
  const lines = subject.split("\n");
  const expectedPrefix = [`O=${claims.dept}`, `OU=${claims.roles[0]}`];
  const cn = lines[2]?.startsWith("CN=") ? lines[2].slice(3) : undefined;
  if (
    lines.length !== 3 ||
    lines[0] !== expectedPrefix[0] ||
    lines[1] !== expectedPrefix[1] ||
    cn === undefined
  ) {
    caFail("CA_BAD_CERT", "subject must be O=<dept>, OU=<first role>, CN=<enrollment id>");
  }
  const enrollmentId = badInputAsBadCert(() => validateEnrollmentId(cn));
  if (!enrollmentId.startsWith(`${claims.dept}.`))
    caFail("CA_BAD_CERT", "enrollment id is not in its department");
  return { enrollmentId };
}

function toRfc4514(nodeName: string): string {
  return nodeName.split("\n").reverse().join(",");
}

function readTime(text: string): number {
  const ms = Date.parse(text);
  if (!Number.isSafeInteger(ms)) caFail("CA_BAD_CERT", "unreadable validity time");
  return ms;
}

// ---------------------------------------------------------------------------------------------
// Verification

/**
 * True when `issuer` is a CA certificate that signed `child`: names and key identifiers match
 * (OpenSSL's X509_check_issued, which also requires keyCertSign when keyUsage is present) and the
 * signature verifies under the issuer's key. Validity times and revocation are the caller's to
 * check against its own clock and revocation list.
 */
export function verifyIssuedBy(child: Identity, issuer: Identity): boolean {
  if (!issuer.isCa || issuer.kind !== "ca") return false;
  const verdictKey = `${checkedCertId(child)}:${checkedCertId(issuer)}`;
  const remembered = verdictCache.get(verdictKey);
  if (remembered !== undefined) return remembered;
  const childParsed = parsedCertificate(child.certId, child.der);
  const issuerParsed = parsedCertificate(issuer.certId, issuer.der);
  const verdict =
    childParsed.x509.checkIssued(issuerParsed.x509) && childParsed.x509.verify(issuerParsed.publicKey);
  verdictCache.set(verdictKey, verdict);
  return verdict;
}

/**
 * Identities whose certId was checked against their DER, with the pair that was checked: hashing a
 * certificate again on every transaction cost more than the cached verdict saves. An object whose
 * fields were changed since is checked again.
 */
const checkedIdentities = new WeakMap<Identity, { readonly der: Uint8Array; readonly certId: string }>();

/** Identity objects can be built by hand; only a certId that matches its DER may key the caches. */
function checkedCertId(identity: Identity): string {
  const checked = checkedIdentities.get(identity);
  if (checked !== undefined && checked.der === identity.der && checked.certId === identity.certId)
    return identity.certId;
  if (sha256Hex(identity.der) !== identity.certId)
    caFail("CA_BAD_CERT", "certId does not match the certificate");
  checkedIdentities.set(identity, { der: identity.der, certId: identity.certId });
  return identity.certId;
}

export function isWithinValidity(identity: Identity, nowMs: number): boolean {
  return identity.notBeforeMs <= nowMs && nowMs <= identity.notAfterMs;
}
