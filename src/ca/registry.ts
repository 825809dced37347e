/**
 * The CA's own records: departments, registered identities, issued certificates and revocations, in a
 * SQLite file beside the CA key. It is the CA's working memory, not the network's truth: departments
 * and revocations also go on the ledger (the caller records what these functions return), because
 * every node must judge a certificate the same way.
 *
 * Durability: WAL with synchronous=FULL, so an acknowledged registration or revocation survives a
 * crash. Time comes from the injected `now()`, never from Date.now directly.
 */

import { randomBytes, scrypt, timingSafeEqual } from "node:crypto";
import { closeSync, existsSync, openSync } from "node:fs";
import { join } from "node:path";
import Database from "better-sqlite3";
import { assert, CodedError } from "../core/errors.ts";
import { type RevocationReason, revocationReasons } from "../core/system-state.ts";
import {
  type CertificateAuthority,
  type IssueProfile,
  validateDnsNames,
  validateIpAddresses,
} from "./authority.ts";
import {
  caFail,
  type Identity,
  parseIdentityCert,
  type Role,
  validateClaims,
  validateDeptCode,
  validateEnrollmentId,
  validateRoles,
  verifyIssuedBy,
} from "./identity.ts";

export const registryFileName = "registry.sqlite";
/** v2 added the certificate DER (so a signer may send only its certificate id) and identity revocation times. */
export const registrySchemaVersion = 2;
/** The registry holds secret hashes: owner read/write only (SQLite gives -wal/-shm the same mode). */
export const registryFileMode = 0o600;

/**
 * RFC 5280 CRLReason names. certificateHold and removeFromCRL are left out on purpose: revocation
 * here is permanent, so a "hold" that could be lifted has no meaning.
 */
// One list for the CA and the ledger (RFC 5280 reasons; no certificateHold: revocation is final).
export { type RevocationReason, revocationReasons };

export const departmentsMax = 1000;
export const departmentNameCharsMax = 128;
export const maxEnrollmentsMax = 100;
/** Certificates one identity may accumulate through enroll and re-enroll. */
export const certificatesPerIdentityMax = 1000;
/** Longest secret we hash; ours are 43 characters. */
export const secretCharsMax = 256;
export const secretBytes = 32;
export const revocationPageSizeMax = 1000;
export const revocationPageSizeDefault = 100;
export const certValidityDaysDefault = 365;

/**
 * scrypt cost. The secret is 256 random bits, so the hash is not what resists guessing; it makes a
 * copy of the database useless for enrolling. N=2^14, r=8 is about 16 MiB and 40 ms.
 */
const scryptParams = { N: 16_384, r: 8, p: 1, keyBytes: 32, saltBytes: 16 } as const;

export type IdentityStatus = "active" | "revoked";
export type RegistrableKind = IssueProfile["kind"];

export interface Department {
  readonly code: string;
  readonly name: string;
  readonly createdMs: number;
  readonly status: "active";
}

export interface IdentityRecord {
  readonly enrollmentId: string;
  readonly dept: string;
  readonly roles: readonly Role[];
  readonly kind: RegistrableKind;
  readonly dnsNames: readonly string[];
  readonly ipAddresses: readonly string[];
  readonly maxEnrollments: number;
  readonly enrollments: number;
  readonly status: IdentityStatus;
  readonly createdMs: number;
}

export interface CertificateRecord {
  readonly certId: string;
  /** The certificate itself; null only for certificates issued before schema v2. */
  readonly der: Uint8Array | null;
  readonly serial: string;
  readonly enrollmentId: string;
  readonly notAfterMs: number;
  readonly issuedMs: number;
  readonly revokedMs: number | null;
  readonly revokeReason: RevocationReason | null;
}

/** One revoked certificate, as the caller records it on the ledger. */
export interface RevocationRecord {
  readonly certId: string;
  readonly serial: string;
  readonly enrollmentId: string;
  readonly dept: string;
  readonly reason: RevocationReason;
  readonly revokedMs: number;
}

/** When and why an identity was revoked; the first revocation stands. */
export interface IdentityRevocation {
  readonly enrollmentId: string;
  readonly dept: string;
  readonly reason: RevocationReason;
  readonly revokedMs: number;
}

export interface IdentityRevocationPage {
  readonly items: IdentityRevocation[];
  readonly nextCursor: string | null;
}

export interface RegisterIdentityInput {
  readonly enrollmentId: string;
  readonly dept: string;
  readonly roles: readonly Role[];
  readonly kind: RegistrableKind;
  /** How many times the one-time secret may be used to enroll. Default 1. */
  readonly maxEnrollments?: number;
  /** Node identities only: extra subject alternative names the registrar vouches for. */
  readonly dnsNames?: readonly string[];
  readonly ipAddresses?: readonly string[];
}

export interface RevocationPage {
  readonly items: RevocationRecord[];
  /** Pass back as `cursor` for the next page; null when there is none. */
  readonly nextCursor: string | null;
}

export interface OpenRegistryOptions {
  readonly ca: CertificateAuthority;
  /** Default: the CA's clock. */
  readonly now?: () => number;
  /** Default: registry.sqlite in the CA directory. */
  readonly path?: string;
  readonly certValidityDays?: number;
}

// ---------------------------------------------------------------------------------------------
// Rows as stored

interface DepartmentRow {
  code: string;
  name: string;
  created_ms: number;
  status: string;
}

interface IdentityRow {
  enrollment_id: string;
  dept: string;
  roles: string;
  kind: string;
  sans: string;
  secret_hash: string | null;
  max_enrollments: number;
  enrollments: number;
  status: string;
  created_ms: number;
  revoked_ms: number | null;
  revoke_reason: string | null;
}

interface CertificateRow {
  cert_id: string;
  serial: string;
  enrollment_id: string;
  not_after_ms: number;
  issued_ms: number;
  revoked_ms: number | null;
  revoke_reason: string | null;
  der: Uint8Array | null;
}

type RevocationRow = CertificateRow & { dept: string };

const schemaV1 = `
  CREATE TABLE schema_version (version INTEGER NOT NULL);
  CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
  CREATE TABLE departments (
    code TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    created_ms INTEGER NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('active'))
  );
  CREATE TABLE identities (
    enrollment_id TEXT PRIMARY KEY,
    dept TEXT NOT NULL REFERENCES departments(code),
    roles TEXT NOT NULL,
    kind TEXT NOT NULL CHECK (kind IN ('user', 'node')),
    sans TEXT NOT NULL,
    secret_hash TEXT,
    max_enrollments INTEGER NOT NULL,
    enrollments INTEGER NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('active', 'revoked')),
    created_ms INTEGER NOT NULL
  );
  CREATE TABLE certificates (
    cert_id TEXT PRIMARY KEY,
    serial TEXT NOT NULL UNIQUE,
    enrollment_id TEXT NOT NULL REFERENCES identities(enrollment_id),
    not_after_ms INTEGER NOT NULL,
    issued_ms INTEGER NOT NULL,
    revoked_ms INTEGER,
    revoke_reason TEXT
  );
  CREATE INDEX certificates_by_identity ON certificates(enrollment_id);
  CREATE INDEX certificates_by_revocation ON certificates(revoked_ms, cert_id) WHERE revoked_ms IS NOT NULL;
`;

/** v1 -> v2: columns only, so old rows stay valid (their DER and identity revocation time are NULL). */
const schemaV2 = `
  ALTER TABLE certificates ADD COLUMN der BLOB;
  ALTER TABLE identities ADD COLUMN revoked_ms INTEGER;
  ALTER TABLE identities ADD COLUMN revoke_reason TEXT;
  CREATE INDEX identities_by_revocation ON identities(revoked_ms, enrollment_id) WHERE revoked_ms IS NOT NULL;
`;

// ---------------------------------------------------------------------------------------------

export function openRegistry(options: OpenRegistryOptions): CaRegistry {
  const path = options.path ?? join(options.ca.dir, registryFileName);
  // Create the file owner-only before SQLite does, since SQLite would use the umask's mode.
  if (!existsSync(path)) closeSync(openSync(path, "wx", registryFileMode));
  const db = new Database(path);
  try {
    db.pragma("journal_mode = WAL");
    db.pragma("synchronous = FULL");
    db.pragma("foreign_keys = ON");
    db.pragma("busy_timeout = 5000");
    migrate(db, options.ca.identity.certId);
  } catch (error) {
    db.close();
    throw error;
  }
  const certValidityDays = options.certValidityDays ?? certValidityDaysDefault;
  return new CaRegistry(db, options.ca, options.now ?? options.ca.now, certValidityDays);
}

function migrate(db: Database.Database, caCertId: string): void {
  const hasVersion = db
    .prepare<[], { n: number }>("SELECT count(*) AS n FROM sqlite_master WHERE name = 'schema_version'")
    .get()!.n;
  if (hasVersion === 0) {
    db.transaction(() => {
      db.exec(schemaV1);
      db.exec(schemaV2);
      db.prepare("INSERT INTO schema_version (version) VALUES (?)").run(registrySchemaVersion);
      db.prepare("INSERT INTO meta (key, value) VALUES ('ca_cert_id', ?)").run(caCertId);
    })();
    return;
  }
  const stored = db
    .prepare<[], { value: string }>("SELECT value FROM meta WHERE key = 'ca_cert_id'")
    .get()?.value;
  if (stored !== caCertId) caFail("CONFLICT", "this registry belongs to a different CA certificate", "path");
  // IMMEDIATE takes the write lock before reading the version, so two processes opening an old file
  // at once migrate it once instead of deadlocking on the upgrade from read to write.
  db.transaction(() => {
    const version = db.prepare<[], { version: number }>("SELECT version FROM schema_version").get()?.version;
    if (version === 1) {
      db.exec(schemaV2);
      db.prepare("UPDATE schema_version SET version = ?").run(registrySchemaVersion);
      return;
    }
    if (version !== registrySchemaVersion) {
      caFail("STORAGE_CORRUPT", `registry schema version ${String(version)} is not ${registrySchemaVersion}`);
    }
  }).immediate();
}

export class CaRegistry {
  constructor(
    private readonly db: Database.Database,
    private readonly ca: CertificateAuthority,
    private readonly now: () => number,
    private readonly certValidityDays: number,
  ) {}

  close(): void {
    this.db.close();
  }

  private nowMs(): number {
    const ms = this.now();
    assert(Number.isSafeInteger(ms) && ms >= 0, "now() returns integer milliseconds");
    return ms;
  }

  // -------------------------------------------------------------------------------------------
  // Departments

  registerDepartment(code: string, name: string): Department {
    const checkedCode = validateDeptCode(code, "code");
    const checkedName = validateDepartmentName(name);
    const createdMs = this.nowMs();
    this.db.transaction(() => {
      const count = this.db.prepare<[], { n: number }>("SELECT count(*) AS n FROM departments").get()!.n;
      if (count >= departmentsMax) caFail("CA_BAD_INPUT", `at most ${departmentsMax} departments`, "code");
      insertOrFail(
        () =>
          this.db
            .prepare("INSERT INTO departments (code, name, created_ms, status) VALUES (?, ?, ?, 'active')")
            .run(checkedCode, checkedName, createdMs),
        "CA_DEPT_EXISTS",
        `department ${checkedCode} already exists`,
        "code",
      );
    })();
    return { code: checkedCode, name: checkedName, createdMs, status: "active" };
  }

  listDepartments(): Department[] {
    const rows = this.db
      .prepare<[number], DepartmentRow>("SELECT * FROM departments ORDER BY code LIMIT ?")
      .all(departmentsMax);
    return rows.map((row) => ({
      code: row.code,
      name: row.name,
      createdMs: row.created_ms,
      status: "active",
    }));
  }

  private requireActiveDepartment(code: string): void {
    const row = this.db
      .prepare<[string], DepartmentRow>("SELECT * FROM departments WHERE code = ?")
      .get(code);
    if (row?.status !== "active") caFail("CA_DEPT_UNKNOWN", `department ${code} is not registered`, "dept");
  }

  // -------------------------------------------------------------------------------------------
  // Identities

  /** Registers an identity and returns its one-time secret, which is never stored and never shown again. */
  async registerIdentity(input: RegisterIdentityInput): Promise<{ secret: string }> {
    const checked = validateRegistration(input);
    this.requireActiveDepartment(checked.dept);
    if (this.identityRow(checked.enrollmentId) !== undefined) {
      caFail("CA_IDENTITY_EXISTS", `identity ${checked.enrollmentId} already exists`, "enrollmentId");
    }
    const secret = randomBytes(secretBytes).toString("base64url");
    const secretHash = await hashSecret(secret);
    const createdMs = this.nowMs();
    this.db.transaction(() => {
      this.requireActiveDepartment(checked.dept);
      insertOrFail(
        () => this.insertIdentity(checked, secretHash, createdMs),
        "CA_IDENTITY_EXISTS",
        `identity ${checked.enrollmentId} already exists`,
        "enrollmentId",
      );
    })();
    return { secret };
  }

  private insertIdentity(checked: CheckedRegistration, secretHash: string, createdMs: number): void {
    this.db
      .prepare(
        `INSERT INTO identities (enrollment_id, dept, roles, kind, sans, secret_hash, max_enrollments,
           enrollments, status, created_ms) VALUES (?, ?, ?, ?, ?, ?, ?, 0, 'active', ?)`,
      )
      .run(
        checked.enrollmentId,
        checked.dept,
        JSON.stringify(checked.roles),
        checked.kind,
        JSON.stringify({ dnsNames: checked.dnsNames, ipAddresses: checked.ipAddresses }),
        secretHash,
        checked.maxEnrollments,
        createdMs,
      );
  }

  getIdentity(enrollmentId: string): IdentityRecord | null {
    const row = this.identityRow(validateEnrollmentId(enrollmentId));
    return row === undefined ? null : toIdentityRecord(row);
  }

  listCertificates(enrollmentId: string): CertificateRecord[] {
    const rows = this.db
      .prepare<[string, number], CertificateRow>(
        "SELECT * FROM certificates WHERE enrollment_id = ? ORDER BY issued_ms, cert_id LIMIT ?",
      )
      .all(validateEnrollmentId(enrollmentId), certificatesPerIdentityMax);
    return rows.map(toCertificateRecord);
  }

  private identityRow(enrollmentId: string): IdentityRow | undefined {
    return this.db
      .prepare<[string], IdentityRow>("SELECT * FROM identities WHERE enrollment_id = ?")
      .get(enrollmentId);
  }

  private activeIdentityRow(enrollmentId: string): IdentityRow {
    const row = this.identityRow(enrollmentId);
    if (row === undefined) caFail("CA_IDENTITY_UNKNOWN", `no identity ${enrollmentId}`, "enrollmentId");
    if (row.status !== "active")
      caFail("CA_IDENTITY_REVOKED", `identity ${enrollmentId} is revoked`, "enrollmentId");
    return row;
  }

  // -------------------------------------------------------------------------------------------
  // Enrollment

  /**
   * Exchanges the one-time secret and a CSR for a certificate. The certificate is signed first and
   * committed after, in one synchronous transaction that re-checks the secret is still unspent: two
   * concurrent enrollments cannot both spend the last use, and a failure before the commit spends
   * nothing.
   */
  async enroll(enrollmentId: string, secret: string, csrPem: string): Promise<string> {
    const id = validateEnrollmentId(enrollmentId);
    if (typeof secret !== "string" || secret.length === 0 || secret.length > secretCharsMax) {
      caFail("CA_BAD_SECRET", "wrong enrollment secret", "secret");
    }
    const row = this.identityRow(id);
    if (row?.status !== "active" || row.secret_hash === null) {
      // Spend the same scrypt time as a wrong secret would, so the answer's timing does not tell an
      // unknown, revoked or used-up identity from a wrong secret (the HTTP service gives all of them
      // one code as well).
      await verifySecret(secret, decoySecretHash);
      if (row === undefined) caFail("CA_IDENTITY_UNKNOWN", `no identity ${id}`, "enrollmentId");
      if (row.status !== "active") caFail("CA_IDENTITY_REVOKED", `identity ${id} is revoked`, "enrollmentId");
      caFail("CA_SECRET_USED", `the secret of ${id} is used up`, "secret");
    }
    if (!(await verifySecret(secret, row.secret_hash)))
      caFail("CA_BAD_SECRET", "wrong enrollment secret", "secret");
    const certPem = await this.ca.issueFromCsr(csrPem, this.issueProfile(row));
    const issued = parseIdentityCert(certPem);
    const spentHash = row.secret_hash;
    this.db.transaction(() => {
      const current = this.activeIdentityRow(id);
      if (current.secret_hash !== spentHash)
        caFail("CA_SECRET_USED", `the secret of ${id} is used up`, "secret");
      this.spendEnrollment(current);
      this.insertCertificate(issued);
    })();
    return certPem;
  }

  private spendEnrollment(row: IdentityRow): void {
    const enrollments = row.enrollments + 1;
    assert(enrollments <= row.max_enrollments, "an unspent secret has enrollments left");
    // Forget the hash once the last use is spent: what is not stored cannot be matched or stolen.
    const secretHash = enrollments >= row.max_enrollments ? null : row.secret_hash;
    this.db
      .prepare("UPDATE identities SET enrollments = ?, secret_hash = ? WHERE enrollment_id = ?")
      .run(enrollments, secretHash, row.enrollment_id);
  }

  /**
   * Issues a new certificate (a new key is allowed) to the holder of `currentCertPem`. The caller has
   * already proven the request comes from that holder; here we check that the certificate is ours,
   * known, unrevoked and unexpired, and that its identity is still active.
   */
  async reenroll(currentCertPem: string, csrPem: string): Promise<string> {
    const current = parseIdentityCert(currentCertPem);
    const record = this.requireUsableCertificate(current);
    const row = this.activeIdentityRow(record.enrollment_id);
    const certPem = await this.ca.issueFromCsr(csrPem, this.issueProfile(row));
    const issued = parseIdentityCert(certPem);
    this.db.transaction(() => {
      this.activeIdentityRow(record.enrollment_id);
      this.requireUsableCertificate(current);
      this.insertCertificate(issued);
    })();
    return certPem;
  }

  private requireUsableCertificate(certificate: Identity): CertificateRow {
    if (!verifyIssuedBy(certificate, this.ca.identity)) {
      caFail("CERT_UNTRUSTED", "the certificate was not issued by this CA", "certificate");
    }
    const row = this.certificateRow(certificate.certId);
    if (row === undefined)
      caFail("CERT_UNKNOWN", "the certificate is not in this CA's records", "certificate");
    if (row.revoked_ms !== null) caFail("CERT_REVOKED", "the certificate is revoked", "certificate");
    if (this.nowMs() > row.not_after_ms) caFail("CERT_EXPIRED", "the certificate has expired", "certificate");
    return row;
  }

  private issueProfile(row: IdentityRow): IssueProfile {
    const sans = JSON.parse(row.sans) as { dnsNames: string[]; ipAddresses: string[] };
    return {
      enrollmentId: row.enrollment_id,
      dept: row.dept,
      roles: validateRoles(JSON.parse(row.roles)),
      kind: row.kind as RegistrableKind,
      validityDays: this.certValidityDays,
      dnsNames: sans.dnsNames,
      ipAddresses: sans.ipAddresses,
    };
  }

  private insertCertificate(issued: Identity): void {
    const count = this.db
      .prepare<[string], { n: number }>("SELECT count(*) AS n FROM certificates WHERE enrollment_id = ?")
      .get(issued.enrollmentId)!.n;
    if (count >= certificatesPerIdentityMax) {
      caFail("CONFLICT", `identity ${issued.enrollmentId} has ${certificatesPerIdentityMax} certificates`);
    }
    this.db
      .prepare(
        `INSERT INTO certificates (cert_id, serial, enrollment_id, not_after_ms, issued_ms, revoked_ms,
           revoke_reason, der) VALUES (?, ?, ?, ?, ?, NULL, NULL, ?)`,
      )
      .run(
        issued.certId,
        issued.serialNumber,
        issued.enrollmentId,
        issued.notAfterMs,
        this.nowMs(),
        Buffer.from(issued.der),
      );
  }

  /** One issued certificate by id (lower-case hex SHA-256 of its DER), or null if this CA never issued it. */
  getCertificate(certId: string): CertificateRecord | null {
    const row = this.certificateRow(validateCertId(certId));
    return row === undefined ? null : toCertificateRecord(row);
  }

  private certificateRow(certId: string): CertificateRow | undefined {
    return this.db
      .prepare<[string], CertificateRow>("SELECT * FROM certificates WHERE cert_id = ?")
      .get(certId);
  }

  // -------------------------------------------------------------------------------------------
  // Revocation

  /** Revokes one certificate; returns what to record on the ledger (empty if it was already revoked). */
  revokeCertificate(certId: string, reason: RevocationReason): RevocationRecord[] {
    const id = validateCertId(certId);
    const checkedReason = validateReason(reason);
    const revokedMs = this.nowMs();
    return this.db.transaction(() => {
      const row = this.revocationRows("c.cert_id = ?", id)[0];
      if (row === undefined) caFail("NOT_FOUND", `no certificate ${id}`, "certId");
      if (row.revoked_ms !== null) return [];
      return this.markRevoked([row], checkedReason, revokedMs);
    })();
  }

  /** Revokes the identity (its secret dies with it) and every certificate it still has unrevoked. */
  revokeIdentity(enrollmentId: string, reason: RevocationReason): RevocationRecord[] {
    const id = validateEnrollmentId(enrollmentId);
    const checkedReason = validateReason(reason);
    const revokedMs = this.nowMs();
    return this.db.transaction(() => {
      if (this.identityRow(id) === undefined)
        caFail("CA_IDENTITY_UNKNOWN", `no identity ${id}`, "enrollmentId");
      // The first revocation's time and reason stand, as they do on the ledger.
      this.db
        .prepare(
          `UPDATE identities SET status = 'revoked', secret_hash = NULL,
             revoked_ms = coalesce(revoked_ms, ?), revoke_reason = coalesce(revoke_reason, ?)
           WHERE enrollment_id = ?`,
        )
        .run(revokedMs, checkedReason, id);
      const rows = this.revocationRows("c.enrollment_id = ? AND c.revoked_ms IS NULL", id);
      return this.markRevoked(rows, checkedReason, revokedMs);
    })();
  }

  private revocationRows(where: string, value: string): RevocationRow[] {
    return this.db
      .prepare<[string], RevocationRow>(
        `SELECT c.*, i.dept AS dept FROM certificates c JOIN identities i ON i.enrollment_id = c.enrollment_id
         WHERE ${where} ORDER BY c.cert_id`,
      )
      .all(value);
  }

  private markRevoked(
    rows: RevocationRow[],
    reason: RevocationReason,
    revokedMs: number,
  ): RevocationRecord[] {
    const update = this.db.prepare(
      "UPDATE certificates SET revoked_ms = ?, revoke_reason = ? WHERE cert_id = ?",
    );
    return rows.map((row) => {
      update.run(revokedMs, reason, row.cert_id);
      return {
        certId: row.cert_id,
        serial: row.serial,
        enrollmentId: row.enrollment_id,
        dept: row.dept,
        reason,
        revokedMs,
      };
    });
  }

  /** When and why the identity was revoked; null while it is active (or for a v1 row without a time). */
  getIdentityRevocation(enrollmentId: string): IdentityRevocation | null {
    const row = this.identityRow(validateEnrollmentId(enrollmentId));
    return row === undefined ? null : toIdentityRevocation(row);
  }

  /** Revoked identities, oldest revocation first, a page at a time (cursor as for listRevocations). */
  listIdentityRevocations(options: { cursor?: string | null; limit?: number } = {}): IdentityRevocationPage {
    const limit = validateLimit(options.limit);
    const after = decodeIdentityCursor(options.cursor ?? null);
    const rows = this.db
      .prepare<[number, number, string, number], IdentityRow>(
        `SELECT * FROM identities
         WHERE revoked_ms IS NOT NULL AND (revoked_ms > ? OR (revoked_ms = ? AND enrollment_id > ?))
         ORDER BY revoked_ms, enrollment_id LIMIT ?`,
      )
      .all(after.revokedMs, after.revokedMs, after.enrollmentId, limit + 1);
    const items = rows.slice(0, limit).flatMap((row) => {
      const revocation = toIdentityRevocation(row);
      return revocation === null ? [] : [revocation];
    });
    const last = items[items.length - 1];
    const nextCursor =
      rows.length > limit && last !== undefined ? `${last.revokedMs}.${last.enrollmentId}` : null;
    return { items, nextCursor };
  }

  /** All revocations, oldest first, a page at a time. */
  listRevocations(options: { cursor?: string | null; limit?: number } = {}): RevocationPage {
    const limit = validateLimit(options.limit);
    const after = decodeCursor(options.cursor ?? null);
    const rows = this.db
      .prepare<[number, number, string, number], RevocationRow>(
        `SELECT c.*, i.dept AS dept FROM certificates c JOIN identities i ON i.enrollment_id = c.enrollment_id
         WHERE c.revoked_ms IS NOT NULL AND (c.revoked_ms > ? OR (c.revoked_ms = ? AND c.cert_id > ?))
         ORDER BY c.revoked_ms, c.cert_id LIMIT ?`,
      )
      .all(after.revokedMs, after.revokedMs, after.certId, limit + 1);
    const items = rows.slice(0, limit).map(toRevocationRecord);
    const last = items[items.length - 1];
    const nextCursor = rows.length > limit && last !== undefined ? `${last.revokedMs}.${last.certId}` : null;
    return { items, nextCursor };
  }
}

// ---------------------------------------------------------------------------------------------
// Validation and conversion

interface CheckedRegistration {
  readonly enrollmentId: string;
  readonly dept: string;
  readonly roles: readonly Role[];
  readonly kind: RegistrableKind;
  readonly maxEnrollments: number;
  readonly dnsNames: readonly string[];
  readonly ipAddresses: readonly string[];
}

function validateRegistration(input: RegisterIdentityInput): CheckedRegistration {
  const claims = validateClaims(input);
  if (claims.kind === "ca") caFail("CA_BAD_INPUT", "only user and node identities can be registered", "kind");
  const maxEnrollments = input.maxEnrollments ?? 1;
  if (!Number.isInteger(maxEnrollments) || maxEnrollments < 1 || maxEnrollments > maxEnrollmentsMax) {
    caFail("CA_BAD_INPUT", `maxEnrollments is an integer in 1..${maxEnrollmentsMax}`, "maxEnrollments");
  }
  const dnsNames = validateDnsNames(input.dnsNames ?? []);
  const ipAddresses = validateIpAddresses(input.ipAddresses ?? []);
  if (claims.kind !== "node" && dnsNames.length + ipAddresses.length > 0) {
    caFail("CA_BAD_INPUT", "only node identities carry subject alternative names", "dnsNames");
  }
  return { ...claims, kind: claims.kind, maxEnrollments, dnsNames, ipAddresses };
}

function validateDepartmentName(name: unknown): string {
  const trimmed = typeof name === "string" ? name.trim() : "";
  if (
    trimmed.length === 0 ||
    trimmed.length > departmentNameCharsMax ||
    /[\p{Cc}\p{Cf}]/u.test(trimmed) // control and format characters (bidi overrides) could disguise a name
  ) {
    caFail("CA_BAD_INPUT", `a department name is 1..${departmentNameCharsMax} printable characters`, "name");
  }
  return trimmed;
}

function validateCertId(value: unknown): string {
  if (typeof value !== "string" || !/^[0-9a-f]{64}$/.test(value)) {
    caFail("CA_BAD_INPUT", "a certificate id is 64 lower-case hex characters", "certId");
  }
  return value;
}

export function validateReason(value: unknown): RevocationReason {
  if (typeof value !== "string" || !(revocationReasons as readonly string[]).includes(value)) {
    caFail("CA_BAD_INPUT", `reason is one of: ${revocationReasons.join(", ")}`, "reason");
  }
  return value as RevocationReason;
}

function validateLimit(value: number | undefined): number {
  const limit = value ?? revocationPageSizeDefault;
  if (!Number.isInteger(limit) || limit < 1 || limit > revocationPageSizeMax) {
    caFail("CA_BAD_INPUT", `limit is an integer in 1..${revocationPageSizeMax}`, "limit");
  }
  return limit;
}

function decodeIdentityCursor(cursor: string | null): { revokedMs: number; enrollmentId: string } {
  if (cursor === null) return { revokedMs: -1, enrollmentId: "" };
  const match = /^(\d{1,16})\.([a-z0-9._-]{1,64})$/.exec(cursor);
  if (match === null) caFail("CA_BAD_INPUT", "unreadable cursor", "cursor");
  return { revokedMs: Number(match[1]), enrollmentId: match[2]! };
}

function decodeCursor(cursor: string | null): { revokedMs: number; certId: string } {
  if (cursor === null) return { revokedMs: -1, certId: "" };
  const match = /^(\d{1,16})\.([0-9a-f]{64})$/.exec(cursor);
  if (match === null) caFail("CA_BAD_INPUT", "unreadable cursor", "cursor");
  return { revokedMs: Number(match[1]), certId: match[2]! };
}

function insertOrFail(
  insert: () => void,
  code: "CA_DEPT_EXISTS" | "CA_IDENTITY_EXISTS",
  message: string,
  field: string,
): void {
  try {
    insert();
  } catch (error) {
    if (error instanceof Database.SqliteError && error.code === "SQLITE_CONSTRAINT_PRIMARYKEY") {
      caFail(code, message, field);
    }
    throw error;
  }
}

function toIdentityRecord(row: IdentityRow): IdentityRecord {
  const sans = JSON.parse(row.sans) as { dnsNames: string[]; ipAddresses: string[] };
  return {
    enrollmentId: row.enrollment_id,
    dept: row.dept,
    roles: JSON.parse(row.roles) as Role[],
    kind: row.kind as RegistrableKind,
    dnsNames: sans.dnsNames,
    ipAddresses: sans.ipAddresses,
    maxEnrollments: row.max_enrollments,
    enrollments: row.enrollments,
    status: row.status as IdentityStatus,
    createdMs: row.created_ms,
  };
}

function toIdentityRevocation(row: IdentityRow): IdentityRevocation | null {
  if (row.status !== "revoked" || row.revoked_ms === null || row.revoke_reason === null) return null;
  return {
    enrollmentId: row.enrollment_id,
    dept: row.dept,
    reason: row.revoke_reason as RevocationReason,
    revokedMs: row.revoked_ms,
  };
}

function toCertificateRecord(row: CertificateRow): CertificateRecord {
  return {
    certId: row.cert_id,
    der: row.der === null ? null : new Uint8Array(row.der),
    serial: row.serial,
    enrollmentId: row.enrollment_id,
    notAfterMs: row.not_after_ms,
    issuedMs: row.issued_ms,
    revokedMs: row.revoked_ms,
    revokeReason: row.revoke_reason as RevocationReason | null,
  };
}

function toRevocationRecord(row: RevocationRow): RevocationRecord {
  assert(row.revoked_ms !== null && row.revoke_reason !== null, "a revoked row has a time and reason");
  return {
    certId: row.cert_id,
    serial: row.serial,
    enrollmentId: row.enrollment_id,
    dept: row.dept,
    reason: row.revoke_reason as RevocationReason,
    revokedMs: row.revoked_ms,
  };
}

// ---------------------------------------------------------------------------------------------
// Secrets

function scryptAsync(secret: string, salt: Buffer): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const { N, r, p, keyBytes } = scryptParams;
    scrypt(secret, salt, keyBytes, { N, r, p }, (error, key) => (error ? reject(error) : resolve(key)));
  });
}

/** A well-formed hash of nothing anyone knows: checking a secret against it costs what a real check costs. */
const decoySecretHash = `scrypt$${scryptParams.N}$${scryptParams.r}$${scryptParams.p}$${"00".repeat(scryptParams.saltBytes)}$${"00".repeat(scryptParams.keyBytes)}`;

/** "scrypt$N$r$p$<salt hex>$<hash hex>", so the cost can rise later without breaking old rows. */
async function hashSecret(secret: string): Promise<string> {
  const salt = randomBytes(scryptParams.saltBytes);
  const key = await scryptAsync(secret, salt);
  const { N, r, p } = scryptParams;
  return `scrypt$${N}$${r}$${p}$${salt.toString("hex")}$${key.toString("hex")}`;
}

async function verifySecret(secret: string, stored: string): Promise<boolean> {
  const parts = stored.split("$");
  const { N, r, p } = scryptParams;
  // Only our own parameters are accepted; a row claiming others was not written by us.
  if (
    parts.length !== 6 ||
    parts[0] !== "scrypt" ||
    parts[1] !== `${N}` ||
    parts[2] !== `${r}` ||
    parts[3] !== `${p}`
  ) {
    throw new CodedError("STORAGE_CORRUPT", "unreadable secret hash in the registry");
  }
  const expected = Buffer.from(parts[5]!, "hex");
  const actual = await scryptAsync(secret, Buffer.from(parts[4]!, "hex"));
  return actual.length === expected.length && timingSafeEqual(actual, expected);
}
