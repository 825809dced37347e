/**
 * The key vault: the information center's custodian of holders' keys for holders with no device of
 * their own (docs/licenses.md, "Key vault"). An HTTP/JSON service under /v1/vault with the platform's
 * conventions (src/ca/service.ts): a JSON Schema and a body limit on every route, RFC 9421 signed
 * requests of identities issued by the consortium root, errors as {"error": {code, message, field}}.
 *
 * It holds, per subject, the holder's HPKE key and statement-signing key (KeyStore owner "holder"),
 * and the consortium pseudonym key, so it turns an ID number into the subject's pseudonym itself.
 * Private keys never leave it; what leaves is public keys, signatures, re-wrapped data keys and, to
 * the holder's counter officer, opened personal content.
 *
 * Who may call: identities whose (department, role) is in `callers` (default: officers and admins of
 * the operator department, the root CA's department); the audit log: `auditors` (default: auditors
 * and admins of the operator department). Every authenticated call is written to the audit log
 * before it acts (who, action, pseudonym, when) and its outcome after; never key material or content.
 */
import { closeSync, existsSync, openSync } from "node:fs";
import swagger from "@fastify/swagger";
import Database from "better-sqlite3";
import Fastify, { type FastifyError, type FastifyInstance, type FastifyRequest } from "fastify";
import { sendError, validatorCompiler } from "../api/http-common.ts";
import { RequestVerifier } from "../api/request-auth.ts";
import { errorResponseSchema } from "../api/schemas.ts";
import { type Identity, isWithinValidity, parseIdentityCert, verifyIssuedBy } from "../ca/identity.ts";
import { fromBase64, fromHex, toBase64, toHex } from "../core/encoding.ts";
import { CodedError, type ErrorCode, isErrorCode } from "../core/errors.ts";
import { certificateUnknownError, parseSignedRequest } from "../core/httpsig.ts";
import type { SealedContent, WrappedKey } from "../core/license/records.ts";
import {
  decodeSubjectStatement,
  parseSubjectReadBytes,
  type SubjectAction,
  type SubjectRead,
  type SubjectStatement,
  subjectReadBytesMax,
} from "../core/license/statement.ts";
import { holderOwner, type KeyStore } from "../license/key-store.ts";
import { openPersonal, pseudonymOf } from "../sdk/sealing.ts";

export const vaultApiVersion = "1.0.0";

export interface RoleGrant {
  readonly dept: string;
  /** A role, or "*" for any role of the department. */
  readonly role: string;
}

export interface VaultServiceOptions {
  readonly keyStore: KeyStore;
  /** The consortium's 32-byte pseudonym key. */
  readonly pseudonymKey: Uint8Array;
  readonly audit: VaultAudit;
  /** The consortium root certificate (PEM): callers' certificates must be issued by it. */
  readonly rootCertPem: string;
  readonly callers?: readonly RoleGrant[];
  readonly auditors?: readonly RoleGrant[];
  /** Revocation check (e.g. against the CA registry); without it, revoked certificates still pass. */
  readonly isRevoked?: (caller: Identity) => boolean;
  /** When set, statements must name this chain. */
  readonly chainId?: string;
  /** Statement actions the sign route accepts; "forget" always goes through the forget route. */
  readonly signActions?: readonly SubjectAction[];
  readonly now?: () => number;
  readonly tls?: { readonly certPem: string; readonly keyPem: string; readonly passphrase?: string };
  readonly logger?: boolean;
  readonly limits?: Partial<VaultServiceLimits>;
}

export interface VaultServiceLimits {
  /** Body of every route but open: a statement (<= 1 KiB) or a wrapped key, base64, with room. */
  readonly smallBodyBytesMax: number;
  /** Body of open: sealed content of up to 64 KiB of JSON, base64, plus a wrapped key. */
  readonly openBodyBytesMax: number;
  readonly clockSkewMsMax: number;
  readonly requestTimeoutMs: number;
  /** Parsed caller certificates remembered by certificate id, so clients may omit X-Citychain-Cert. */
  readonly certCacheEntriesMax: number;
  readonly auditPageSizeMax: number;
}

export const vaultServiceDefaults: VaultServiceLimits = {
  smallBodyBytesMax: 8 * 1024,
  openBodyBytesMax: 192 * 1024,
  clockSkewMsMax: 300_000,
  requestTimeoutMs: 30_000,
  certCacheEntriesMax: 4096,
  auditPageSizeMax: 1000,
};

export const vaultSignActionsDefault: readonly SubjectAction[] = ["consent.grant", "consent.withdraw"];

export function defaultCallers(operatorDept: string): RoleGrant[] {
  return [
    { dept: operatorDept, role: "officer" },
    { dept: operatorDept, role: "admin" },
  ];
}

export function defaultAuditors(operatorDept: string): RoleGrant[] {
  return [
    { dept: operatorDept, role: "auditor" },
    { dept: operatorDept, role: "admin" },
  ];
}

export function isGranted(caller: Identity, grants: readonly RoleGrant[]): boolean {
  return grants.some(
    (grant) =>
      grant.dept === caller.dept && (grant.role === "*" || caller.roles.some((role) => role === grant.role)),
  );
}

// ---------------------------------------------------------------------------------------------
// Audit log

export const vaultActions = [
  "subject.create",
  "subject.read",
  "statement.sign",
  "read.sign",
  "key.rewrap",
  "content.open",
  "subject.forget",
  "audit.read",
] as const;
export type VaultAction = (typeof vaultActions)[number];

export interface AuditEntry {
  readonly seq: number;
  readonly atMs: number;
  readonly enrollmentId: string;
  readonly dept: string;
  readonly certId: string;
  readonly action: VaultAction;
  readonly pseudonym: string | null;
  /** "pending" until the call ends (a crash leaves it so: the attempt is still on record). */
  readonly outcome: "pending" | "ok" | "error";
  readonly code: string | null;
}

export interface StoredForget {
  readonly statement: Uint8Array;
  readonly signature: Uint8Array;
  readonly keysDestroyed: number;
}

/**
 * The vault's own SQLite file (audit log and signed forget statements), beside the key store: the
 * audit must outlive destroyed keys, and holds nothing secret.
 */
export class VaultAudit {
  private constructor(private readonly db: Database.Database) {}

  static open(path: string): VaultAudit {
    // Owner-only like the key store: who read whose data is nobody else's business.
    if (!existsSync(path)) closeSync(openSync(path, "wx", 0o600));
    const db = new Database(path);
    db.pragma("journal_mode = WAL");
    // An audit row is written before the action it records: it must be on disk when the action runs.
    db.pragma("synchronous = FULL");
    db.exec(`
      CREATE TABLE IF NOT EXISTS audit (
        seq INTEGER PRIMARY KEY AUTOINCREMENT, at_ms INTEGER NOT NULL, enrollment_id TEXT NOT NULL,
        dept TEXT NOT NULL, cert_id TEXT NOT NULL, action TEXT NOT NULL, pseudonym TEXT,
        outcome TEXT NOT NULL, code TEXT) STRICT;
      CREATE INDEX IF NOT EXISTS audit_by_pseudonym ON audit (pseudonym, seq);
      CREATE TABLE IF NOT EXISTS forgets (
        pseudonym TEXT PRIMARY KEY, statement BLOB NOT NULL, signature BLOB NOT NULL,
        keys_destroyed INTEGER NOT NULL, at_ms INTEGER NOT NULL) STRICT;
    `);
    return new VaultAudit(db);
  }

  close(): void {
    this.db.close();
  }

  begin(entry: Omit<AuditEntry, "seq" | "outcome" | "code">): number {
    const result = this.db
      .prepare(
        `INSERT INTO audit (at_ms, enrollment_id, dept, cert_id, action, pseudonym, outcome, code)
         VALUES (?, ?, ?, ?, ?, ?, 'pending', NULL)`,
      )
      .run(entry.atMs, entry.enrollmentId, entry.dept, entry.certId, entry.action, entry.pseudonym);
    return Number(result.lastInsertRowid);
  }

  finish(seq: number, outcome: "ok" | "error", code: string | null, pseudonym: string | null): void {
    this.db
      .prepare("UPDATE audit SET outcome = ?, code = ?, pseudonym = COALESCE(?, pseudonym) WHERE seq = ?")
      .run(outcome, code, pseudonym, seq);
  }

  list(options: { afterSeq: number; limit: number; pseudonym?: string }): AuditEntry[] {
    const rows = (
      options.pseudonym === undefined
        ? this.db
            .prepare("SELECT * FROM audit WHERE seq > ? ORDER BY seq LIMIT ?")
            .all(options.afterSeq, options.limit)
        : this.db
            .prepare("SELECT * FROM audit WHERE pseudonym = ? AND seq > ? ORDER BY seq LIMIT ?")
            .all(options.pseudonym, options.afterSeq, options.limit)
    ) as Record<string, unknown>[];
    return rows.map((row) => ({
      seq: row.seq as number,
      atMs: row.at_ms as number,
      enrollmentId: row.enrollment_id as string,
      dept: row.dept as string,
      certId: row.cert_id as string,
      action: row.action as VaultAction,
      pseudonym: row.pseudonym as string | null,
      outcome: row.outcome as AuditEntry["outcome"],
      code: row.code as string | null,
    }));
  }

  /** The forget statement the vault signed for a subject, so a caller who lost the answer can have it again. */
  storeForget(pseudonym: string, forget: StoredForget, atMs: number): void {
    this.db
      .prepare(
        `INSERT INTO forgets (pseudonym, statement, signature, keys_destroyed, at_ms) VALUES (?, ?, ?, ?, ?)
         ON CONFLICT (pseudonym) DO UPDATE SET statement = excluded.statement, signature = excluded.signature,
           keys_destroyed = excluded.keys_destroyed, at_ms = excluded.at_ms`,
      )
      .run(pseudonym, forget.statement, forget.signature, forget.keysDestroyed, atMs);
  }

  setForgetKeysDestroyed(pseudonym: string, keysDestroyed: number): void {
    this.db
      .prepare("UPDATE forgets SET keys_destroyed = ? WHERE pseudonym = ?")
      .run(keysDestroyed, pseudonym);
  }

  forget(pseudonym: string): StoredForget | null {
    const row = this.db.prepare("SELECT * FROM forgets WHERE pseudonym = ?").get(pseudonym) as
      | { statement: Buffer; signature: Buffer; keys_destroyed: number }
      | undefined;
    if (row === undefined) return null;
    return {
      statement: new Uint8Array(row.statement),
      signature: new Uint8Array(row.signature),
      keysDestroyed: row.keys_destroyed,
    };
  }
}

// ---------------------------------------------------------------------------------------------
// Schemas

const pseudonym = { type: "string", pattern: "^[0-9a-f]{64}$" } as const;
const base64 = (maxLength: number) =>
  ({ type: "string", pattern: "^[A-Za-z0-9+/]*={0,2}$", maxLength }) as const;
const time = { type: "string", format: "date-time" } as const;
const licenseId = { type: "string", minLength: 1, maxLength: 256, pattern: "^[^\\u0000]+$" } as const;
const deptCode = { type: "string", pattern: "^[a-z][a-z0-9-]{1,31}$" } as const;
/** 1 KiB of CBOR, base64. */
const statement = base64(1400);
/** 64 KiB of content, sealed (16-byte tag), base64. */
const sealedCiphertext = base64(88 * 1024);

const wrappedKeySchema = {
  type: "object",
  properties: {
    enc: base64(128),
    ciphertext: base64(128),
    recipientKeyHash: { type: "string", pattern: "^[0-9a-f]{64}$" },
  },
  required: ["enc", "ciphertext", "recipientKeyHash"],
  additionalProperties: false,
} as const;

const errorResponses = {
  400: errorResponseSchema,
  401: errorResponseSchema,
  403: errorResponseSchema,
  404: errorResponseSchema,
  409: errorResponseSchema,
  410: errorResponseSchema,
  413: errorResponseSchema,
  429: errorResponseSchema,
} as const;

const signed = { security: [{ httpSignature: [] }] } as const;
const subjectParams = {
  type: "object",
  properties: { pseudonym },
  required: ["pseudonym"],
} as const;

const subjectSchema = {
  type: "object",
  properties: {
    pseudonym,
    status: { type: "string", enum: ["active", "destroyed"] },
    custody: { type: "string", enum: ["vault"] },
    encryptionKey: {
      type: "string",
      description: "HPKE public key, 65-byte uncompressed P-256 point, base64",
    },
    signingKey: { type: "string", description: "statement-signing public key, SPKI DER, base64" },
    createdAt: time,
    destroyedAt: time,
    created: { type: "boolean" },
  },
} as const;

export const vaultSchemas = {
  createSubject: {
    ...signed,
    summary: "Create (or find) a holder's keys from their ID code",
    description:
      "Computes the pseudonym with the consortium pseudonym key and makes the holder's HPKE and signing keys if absent. Idempotent: an existing subject answers 200 with created:false.",
    body: {
      type: "object",
      properties: {
        codeType: { type: "string", minLength: 1, maxLength: 16, pattern: "^[0-9A-Za-z]+$" },
        code: { type: "string", minLength: 1, maxLength: 128, pattern: "^[^\\u0000-\\u001f]+$" },
      },
      required: ["codeType", "code"],
      additionalProperties: false,
    },
    response: { 200: subjectSchema, 201: subjectSchema, ...errorResponses },
  },
  getSubject: {
    ...signed,
    summary: "A holder's public keys and status",
    params: subjectParams,
    response: { 200: subjectSchema, ...errorResponses },
  },
  sign: {
    ...signed,
    summary: "Sign a subject statement (consent grant or withdrawal) with the holder's key",
    params: subjectParams,
    body: {
      type: "object",
      properties: { statement },
      required: ["statement"],
      additionalProperties: false,
    },
    response: {
      200: {
        type: "object",
        properties: { signature: { type: "string" }, signingKey: { type: "string" } },
      },
      ...errorResponses,
    },
  },
  signRead: {
    ...signed,
    summary: "Sign the holder's read proof for their own records (X-Citychain-Subject)",
    description:
      "Signs only bytes that parse as a read proof of this subject (docs/licenses.md): GET of /v1/subjects/{pseudonym}/…, this chain, made within the clock skew window.",
    params: subjectParams,
    body: {
      type: "object",
      properties: { message: base64(Math.ceil(subjectReadBytesMax / 3) * 4) },
      required: ["message"],
      additionalProperties: false,
    },
    response: {
      200: { type: "object", properties: { signature: { type: "string" } } },
      ...errorResponses,
    },
  },
  rewrap: {
    ...signed,
    summary: "Re-wrap a holder-wrapped data key to a department's key for this subject",
    params: subjectParams,
    body: {
      type: "object",
      properties: {
        licenseId,
        wrappedKey: wrappedKeySchema,
        dept: deptCode,
        deptPublicKey: base64(128),
      },
      required: ["licenseId", "wrappedKey", "dept", "deptPublicKey"],
      additionalProperties: false,
    },
    response: {
      200: {
        type: "object",
        properties: { licenseId: { type: "string" }, dept: deptCode, wrappedKey: wrappedKeySchema },
      },
      ...errorResponses,
    },
  },
  open: {
    ...signed,
    summary: "Open a license's sealed personal content for the holder",
    params: subjectParams,
    body: {
      type: "object",
      properties: {
        licenseId,
        sealed: {
          type: "object",
          properties: { nonce: base64(32), ciphertext: sealedCiphertext },
          required: ["nonce", "ciphertext"],
          additionalProperties: false,
        },
        wrappedKey: wrappedKeySchema,
      },
      required: ["licenseId", "sealed", "wrappedKey"],
      additionalProperties: false,
    },
    response: {
      200: {
        type: "object",
        properties: {
          licenseId: { type: "string" },
          personal: {
            type: "object",
            properties: {
              salt: { type: "string" },
              holderName: { type: "string" },
              holderCode: { type: "string" },
              fields: { type: "object", additionalProperties: true },
            },
          },
        },
      },
      ...errorResponses,
    },
  },
  forget: {
    ...signed,
    summary: "Sign the holder's forget statement, then destroy the holder's keys",
    description:
      "Returns the signature for the license.subject.forget transaction. Repeating the same statement after the keys are gone returns the same signature.",
    params: subjectParams,
    body: {
      type: "object",
      properties: { statement },
      required: ["statement"],
      additionalProperties: false,
    },
    response: {
      200: {
        type: "object",
        properties: {
          signature: { type: "string" },
          keysDestroyed: { type: "integer" },
        },
      },
      ...errorResponses,
    },
  },
  audit: {
    ...signed,
    summary: "The vault's audit log, oldest first (auditors)",
    querystring: {
      type: "object",
      properties: {
        cursor: { type: "string", pattern: "^[0-9]{1,15}$" },
        limit: { type: "integer", minimum: 1, maximum: 1000, default: 100 },
        pseudonym,
      },
      additionalProperties: false,
    },
    response: {
      200: {
        type: "object",
        properties: {
          items: {
            type: "array",
            items: {
              type: "object",
              properties: {
                seq: { type: "integer" },
                at: time,
                enrollmentId: { type: "string" },
                dept: { type: "string" },
                certId: { type: "string" },
                action: { type: "string" },
                pseudonym: { type: ["string", "null"] },
                outcome: { type: "string" },
                code: { type: ["string", "null"] },
              },
            },
          },
          nextCursor: { type: ["string", "null"] },
        },
      },
      ...errorResponses,
    },
  },
} as const;

// ---------------------------------------------------------------------------------------------
// JSON <-> bytes at the edge

interface WrappedKeyJson {
  enc: string;
  ciphertext: string;
  recipientKeyHash: string;
}

export function wrappedKeyFromJson(json: WrappedKeyJson, field = "wrappedKey"): WrappedKey {
  return {
    enc: fromBase64(json.enc, `${field}.enc`),
    ciphertext: fromBase64(json.ciphertext, `${field}.ciphertext`),
    recipientKeyHash: fromHex(json.recipientKeyHash, `${field}.recipientKeyHash`),
  };
}

export function wrappedKeyToJson(wrapped: WrappedKey): WrappedKeyJson {
  return {
    enc: toBase64(wrapped.enc),
    ciphertext: toBase64(wrapped.ciphertext),
    recipientKeyHash: toHex(wrapped.recipientKeyHash),
  };
}

const iso = (ms: number) => new Date(ms).toISOString();

// ---------------------------------------------------------------------------------------------
// The service

type Access = "callers" | "auditors" | "public";

interface RouteConfig {
  readonly access: Access;
  readonly action?: VaultAction;
}

export async function buildVaultService(options: VaultServiceOptions): Promise<FastifyInstance> {
  const { keyStore, audit } = options;
  const now = options.now ?? Date.now;
  const limits: VaultServiceLimits = { ...vaultServiceDefaults, ...options.limits };
  const root = parseIdentityCert(options.rootCertPem);
  if (!root.isCa) throw new CodedError("CA_BAD_CERT", "the vault's root certificate is not a CA", "rootCert");
  const callers = options.callers ?? defaultCallers(root.dept);
  const auditors = options.auditors ?? defaultAuditors(root.dept);
  const signActions = options.signActions ?? vaultSignActionsDefault;
  if (options.pseudonymKey.length !== 32)
    throw new CodedError("BAD_REQUEST", "the pseudonym key is 32 bytes");
  const verifier = new RequestVerifier({ now, clockSkewMsMax: limits.clockSkewMsMax });
  const certificates = new Map<string, Identity>();
  const rawBodies = new WeakMap<FastifyRequest, Buffer>();
  const requestCallers = new WeakMap<FastifyRequest, Identity>();
  const auditSeqs = new WeakMap<FastifyRequest, number>();
  const errorCodes = new WeakMap<FastifyRequest, string>();
  const resolvedPseudonyms = new WeakMap<FastifyRequest, string>();

  const app = Fastify({
    logger: options.logger ?? false,
    bodyLimit: Math.max(limits.smallBodyBytesMax, limits.openBodyBytesMax),
    requestTimeout: limits.requestTimeoutMs,
    ...(options.tls === undefined
      ? {}
      : {
          https: { cert: options.tls.certPem, key: options.tls.keyPem, passphrase: options.tls.passphrase },
        }),
  }) as unknown as FastifyInstance;
  app.setValidatorCompiler(validatorCompiler());
  await registerOpenApi(app);

  app.addContentTypeParser("application/json", { parseAs: "buffer" }, (request, body, done) => {
    const buffer = body as Buffer;
    rawBodies.set(request, buffer);
    if (buffer.length === 0) return done(null, undefined);
    try {
      done(null, JSON.parse(buffer.toString("utf8")));
    } catch {
      done(new CodedError("BAD_REQUEST", "body is not valid JSON"), undefined);
    }
  });

  // Authenticate, then write the audit row, then authorise: a refused call is on record too. Runs
  // before validation, so an unsigned caller learns nothing from 400s.
  app.addHook("preValidation", async (request) => {
    const config = routeConfig(request);
    if (config === undefined || config.access === "public") return;
    const caller = await authenticate(request, rawBodies.get(request));
    requestCallers.set(request, caller);
    if (config.action !== undefined) {
      const path = (request.params as { pseudonym?: string } | undefined)?.pseudonym;
      auditSeqs.set(
        request,
        audit.begin({
          atMs: now(),
          enrollmentId: caller.enrollmentId,
          dept: caller.dept,
          certId: caller.certId,
          action: config.action,
          pseudonym: path !== undefined && /^[0-9a-f]{64}$/.test(path) ? path : null,
        }),
      );
    }
    const grants = config.access === "auditors" ? auditors : callers;
    if (!isGranted(caller, grants)) {
      const allowed = grants.map((g) => `${g.dept}.${g.role}`).join(", ");
      throw new CodedError("FORBIDDEN", `the key vault serves ${allowed}; ${caller.enrollmentId} is not one`);
    }
  });

  app.addHook("onResponse", async (request, reply) => {
    const seq = auditSeqs.get(request);
    if (seq === undefined) return;
    const ok = reply.statusCode < 400;
    try {
      audit.finish(
        seq,
        ok ? "ok" : "error",
        ok ? null : (errorCodes.get(request) ?? "INTERNAL"),
        resolvedPseudonyms.get(request) ?? null,
      );
    } catch (error) {
      // The attempt is on record already; losing its outcome is logged, never silent.
      request.log.error({ err: error, seq }, "audit outcome not recorded");
    }
  });

  app.setErrorHandler((error: FastifyError | CodedError, request, reply) => {
    errorCodes.set(request, errorCodeOf(error));
    return sendError(error, request, reply);
  });
  app.setNotFoundHandler((request, reply) =>
    sendError(
      new CodedError("NOT_FOUND", `no route ${request.method} ${request.url.split("?")[0]}`),
      request,
      reply,
    ),
  );

  async function authenticate(request: FastifyRequest, rawBody: Buffer | undefined): Promise<Identity> {
    const parsed = parseSignedRequest({
      method: request.method,
      url: request.url,
      headers: request.headers,
      ...(rawBody === undefined || rawBody.length === 0 ? {} : { body: rawBody }),
    });
    const caller = judgeCertificate(parsed.keyId, parsed.certDer);
    await verifier.verify(parsed, caller.publicKeySpki);
    return caller;
  }

  /** Issued by the root, a person or system (not a CA), within validity, not revoked. */
  function judgeCertificate(certId: string, der: Uint8Array | undefined): Identity {
    let caller = certificates.get(certId);
    if (caller === undefined) {
      if (der === undefined) throw certificateUnknownError("the vault");
      caller = parseCaller(der);
      if (certificates.size >= limits.certCacheEntriesMax)
        certificates.delete(certificates.keys().next().value!);
      certificates.set(certId, caller);
    }
    if (!isWithinValidity(caller, now()))
      throw new CodedError("CERT_EXPIRED", `certificate ${certId} is not valid now`);
    if (options.isRevoked?.(caller) === true)
      throw new CodedError("CERT_REVOKED", `certificate ${certId} is revoked`);
    return caller;
  }

  function parseCaller(der: Uint8Array): Identity {
    let caller: Identity;
    try {
      caller = parseIdentityCert(der);
    } catch (error) {
      if (error instanceof CodedError && error.code === "CA_BAD_CERT") {
        throw new CodedError("CERT_UNTRUSTED", `not a citychain certificate: ${error.message}`);
      }
      throw error;
    }
    if (caller.isCa) throw new CodedError("CERT_UNTRUSTED", "a CA certificate cannot sign requests");
    if (!verifyIssuedBy(caller, root)) {
      throw new CodedError(
        "CERT_UNTRUSTED",
        `certificate ${caller.certId} was not issued by the consortium root`,
      );
    }
    return caller;
  }

  const route = (access: Access, action?: VaultAction) => ({
    config: { access, ...(action === undefined ? {} : { action }) } satisfies RouteConfig,
    bodyLimit: limits.smallBodyBytesMax,
  });

  app.post(
    "/v1/vault/subjects",
    { ...route("callers", "subject.create"), schema: vaultSchemas.createSubject },
    async (request, reply) => {
      const body = request.body as { codeType: string; code: string };
      const subject = await pseudonymOf(options.pseudonymKey, body.codeType, body.code);
      resolvedPseudonyms.set(request, subject);
      const encryption = await keyStore.getOrCreateEncryptionKey(holderOwner, subject);
      const signing = await keyStore.getOrCreateSigningKey(subject);
      const created = encryption.created || signing.created;
      return reply.code(created ? 201 : 200).send({ ...subjectJson(subject), created });
    },
  );

  app.get(
    "/v1/vault/subjects/:pseudonym",
    { ...route("callers", "subject.read"), schema: vaultSchemas.getSubject },
    async (request) => {
      const { pseudonym: subject } = request.params as { pseudonym: string };
      return subjectJson(subject);
    },
  );

  app.post(
    "/v1/vault/subjects/:pseudonym/sign",
    { ...route("callers", "statement.sign"), schema: vaultSchemas.sign },
    async (request) => {
      const { pseudonym: subject } = request.params as { pseudonym: string };
      const encoded = fromBase64((request.body as { statement: string }).statement, "statement");
      const decoded = decodeSubjectStatement(encoded);
      checkStatement(decoded, subject);
      if (!signActions.includes(decoded.action)) {
        throw new CodedError(
          "FORBIDDEN",
          `the vault signs ${signActions.join(", ")} here; "${decoded.action}" is not one (forget: POST …/forget)`,
          "statement.action",
        );
      }
      const signature = await keyStore.signStatement(subject, encoded);
      return { signature: toBase64(signature), signingKey: toBase64(holderKey(subject, "signing")) };
    },
  );

  app.post(
    "/v1/vault/subjects/:pseudonym/sign-read",
    { ...route("callers", "read.sign"), schema: vaultSchemas.signRead },
    async (request) => {
      const { pseudonym: subject } = request.params as { pseudonym: string };
      const message = fromBase64((request.body as { message: string }).message, "message");
      checkReadProof(parseSubjectReadBytes(message), subject);
      return { signature: toBase64(await keyStore.signSubjectRead(subject, message)) };
    },
  );

  app.post(
    "/v1/vault/subjects/:pseudonym/rewrap",
    { ...route("callers", "key.rewrap"), schema: vaultSchemas.rewrap },
    async (request) => {
      const { pseudonym: subject } = request.params as { pseudonym: string };
      const body = request.body as {
        licenseId: string;
        wrappedKey: WrappedKeyJson;
        dept: string;
        deptPublicKey: string;
      };
      const rewrapped = await keyStore.rewrap(
        holderOwner,
        subject,
        wrappedKeyFromJson(body.wrappedKey),
        body.licenseId,
        holderOwner,
        body.dept,
        fromBase64(body.deptPublicKey, "deptPublicKey"),
      );
      return { licenseId: body.licenseId, dept: body.dept, wrappedKey: wrappedKeyToJson(rewrapped) };
    },
  );

  app.post(
    "/v1/vault/subjects/:pseudonym/open",
    { ...route("callers", "content.open"), bodyLimit: limits.openBodyBytesMax, schema: vaultSchemas.open },
    async (request) => {
      const { pseudonym: subject } = request.params as { pseudonym: string };
      const body = request.body as {
        licenseId: string;
        sealed: { nonce: string; ciphertext: string };
        wrappedKey: WrappedKeyJson;
      };
      const sealed: SealedContent = {
        nonce: fromBase64(body.sealed.nonce, "sealed.nonce"),
        ciphertext: fromBase64(body.sealed.ciphertext, "sealed.ciphertext"),
      };
      const dataKey = await keyStore.unwrap(
        holderOwner,
        subject,
        wrappedKeyFromJson(body.wrappedKey),
        body.licenseId,
        holderOwner,
      );
      try {
        return { licenseId: body.licenseId, personal: await openPersonal(body.licenseId, sealed, dataKey) };
      } finally {
        dataKey.fill(0);
      }
    },
  );

  app.post(
    "/v1/vault/subjects/:pseudonym/forget",
    { ...route("callers", "subject.forget"), schema: vaultSchemas.forget },
    async (request) => {
      const { pseudonym: subject } = request.params as { pseudonym: string };
      const encoded = fromBase64((request.body as { statement: string }).statement, "statement");
      const decoded = decodeSubjectStatement(encoded);
      checkStatement(decoded, subject);
      if (decoded.action !== "forget") {
        throw new CodedError(
          "BAD_REQUEST",
          'the forget route takes a "forget" statement',
          "statement.action",
        );
      }
      return forget(subject, encoded);
    },
  );

  app.get(
    "/v1/vault/audit",
    { ...route("auditors", "audit.read"), schema: vaultSchemas.audit },
    async (request) => {
      const query = request.query as { cursor?: string; limit: number; pseudonym?: string };
      const limit = Math.min(query.limit, limits.auditPageSizeMax);
      const items = audit.list({
        afterSeq: query.cursor === undefined ? 0 : Number(query.cursor),
        limit,
        ...(query.pseudonym === undefined ? {} : { pseudonym: query.pseudonym }),
      });
      return {
        items: items.map(({ atMs, ...rest }) => ({ ...rest, at: iso(atMs) })),
        nextCursor: items.length === limit ? String(items[items.length - 1]!.seq) : null,
      };
    },
  );

  app.get(
    "/v1/vault/openapi.json",
    { config: { access: "public" }, schema: { hide: true } as object },
    async () => app.swagger(),
  );

  /**
   * Sign first and keep the signed statement, then destroy: a crash in between leaves keys to sign
   * again, never destroyed keys without a signature the ledger needs. A repeat after the keys are
   * gone returns the stored signature, so a lost answer does not strand the subject.
   */
  async function forget(subject: string, encoded: Uint8Array) {
    if (keyStore.isDestroyed(subject)) {
      const stored = audit.forget(subject);
      if (stored !== null && Buffer.from(stored.statement).equals(Buffer.from(encoded))) {
        return { signature: toBase64(stored.signature), keysDestroyed: 0 };
      }
      throw new CodedError("VAULT_KEY_DESTROYED", "this subject's keys were destroyed already", "pseudonym");
    }
    const signature = await keyStore.signStatement(subject, encoded);
    audit.storeForget(subject, { statement: encoded, signature, keysDestroyed: 0 }, now());
    const keysDestroyed = keyStore.destroySubject(subject);
    audit.setForgetKeysDestroyed(subject, keysDestroyed);
    return { signature: toBase64(signature), keysDestroyed };
  }

  function checkStatement(statement: SubjectStatement, subject: string): void {
    if (statement.pseudonym !== subject) {
      throw new CodedError(
        "FORBIDDEN",
        "the statement names another subject than the path",
        "statement.pseudonym",
      );
    }
    if (options.chainId !== undefined && statement.chainId !== options.chainId) {
      throw new CodedError(
        "FORBIDDEN",
        `the statement is for chain ${statement.chainId}, not ${options.chainId}`,
        "statement.chainId",
      );
    }
  }

  /**
   * A read proof is good at any node for the node's clock skew window: the vault signs only proofs
   * made now, so a caller cannot stock up signatures for later, and only for this chain.
   */
  function checkReadProof(proof: SubjectRead, subject: string): void {
    if (proof.pseudonym !== subject)
      throw new CodedError("FORBIDDEN", "the read proof names another subject than the path", "message");
    if (options.chainId !== undefined && proof.chainId !== options.chainId) {
      throw new CodedError(
        "FORBIDDEN",
        `the read proof is for chain ${proof.chainId}, not ${options.chainId}`,
        "message",
      );
    }
    if (Math.abs(now() - proof.createdMs) > limits.clockSkewMsMax)
      throw new CodedError("AUTH_CLOCK_SKEW", "the read proof's time is not now", "message");
  }

  function holderKey(subject: string, kind: "encryption" | "signing"): Uint8Array {
    const key = keyStore.publicKey(holderOwner, subject, kind);
    if (key !== null) return key;
    if (keyStore.isDestroyed(subject)) {
      throw new CodedError("VAULT_KEY_DESTROYED", "this subject's keys were destroyed", "pseudonym");
    }
    throw new CodedError("VAULT_SUBJECT_UNKNOWN", "the vault holds no keys for this subject", "pseudonym");
  }

  function subjectJson(subject: string) {
    const keys = keyStore.subject(subject);
    if (keys.status === "destroyed") {
      return {
        pseudonym: subject,
        status: "destroyed",
        custody: "vault",
        destroyedAt: iso(keys.destroyedMs!),
      };
    }
    const encryption = keys.keys.find((k) => k.owner === holderOwner && k.kind === "encryption");
    const signing = keys.keys.find((k) => k.owner === holderOwner && k.kind === "signing");
    if (encryption === undefined || signing === undefined) {
      throw new CodedError("VAULT_SUBJECT_UNKNOWN", "the vault holds no keys for this subject", "pseudonym");
    }
    return {
      pseudonym: subject,
      status: "active",
      custody: "vault",
      encryptionKey: toBase64(encryption.publicKey),
      signingKey: toBase64(signing.publicKey),
      createdAt: iso(Math.min(encryption.createdMs, signing.createdMs)),
    };
  }

  await app.ready();
  return app;
}

function routeConfig(request: FastifyRequest): RouteConfig | undefined {
  return request.routeOptions.config as unknown as RouteConfig | undefined;
}

function errorCodeOf(error: FastifyError | CodedError): ErrorCode | string {
  if (error instanceof CodedError) return error.code;
  if (error.validation !== undefined) return "BAD_REQUEST";
  if (error.code === "FST_ERR_CTP_BODY_TOO_LARGE") return "REQUEST_TOO_LARGE";
  if (error.code === "FST_ERR_CTP_INVALID_MEDIA_TYPE") return "UNSUPPORTED_MEDIA_TYPE";
  return isErrorCode(error.code) ? error.code : "INTERNAL";
}

async function registerOpenApi(app: FastifyInstance): Promise<void> {
  await app.register(swagger, {
    openapi: {
      openapi: "3.1.0",
      info: {
        title: "citychain key vault API",
        version: vaultApiVersion,
        description:
          'Custodial keys of holders without a device. Every request carries an RFC 9421 signature by an identity the consortium root issued (docs/api-auth.md); see docs/licenses.md, "Key vault".',
      },
      components: {
        securitySchemes: {
          httpSignature: {
            type: "apiKey",
            in: "header",
            name: "Signature",
            description: "RFC 9421 signature with Signature-Input and Content-Digest; see docs/api-auth.md",
          },
        },
      },
    },
  });
}
