/**
 * The membership service's HTTP/JSON API, under /v1/ca. It wraps the CA and its registry: register
 * departments and identities, enroll with a one-time secret and a CSR, re-enroll, revoke, list
 * revocations, and hand out the root certificate. Departments and revocations are also recorded on
 * the ledger when a LedgerSync is configured. docs/identity.md describes the routes and who may call
 * them; the conventions are the node API's (src/api/server.ts): a JSON Schema on every route, RFC 9421
 * signed requests (docs/api-auth.md), errors as {"error": {"code", "message", "field"}}.
 *
 * Who may call what:
 * - public: GET /v1/ca/certificate (the root is what everyone needs in order to trust anyone) and
 *   POST /v1/ca/enroll (the caller has no certificate yet; the one-time secret authenticates it);
 * - any active identity of this CA: re-enroll itself, list revocations;
 * - a registrar: everything else. A registrar is a `user` identity of the operator department (the
 *   CA's own department, "infocenter") that holds the role `registrar` or `admin`;
 * - an `admin` of a department may register `user` identities of that department with the roles
 *   officer, auditor and client (not admin, not registrar, and no nodes).
 */

import swagger from "@fastify/swagger";
import Fastify, { type FastifyError, type FastifyInstance, type FastifyRequest } from "fastify";
import { sendError, validatorCompiler } from "../api/http-common.ts";
import { RequestVerifier } from "../api/request-auth.ts";
import { apiErrorResponses } from "../api/schemas.ts";
import { CodedError, type ErrorCode } from "../core/errors.ts";
import { certificateUnknownError, parseSignedRequest } from "../core/httpsig.ts";
import type { CertificateAuthority } from "./authority.ts";
import { type Identity, isWithinValidity, parseIdentityCert, type Role, verifyIssuedBy } from "./identity.ts";
import { LedgerError, type LedgerSync, recordableReasons } from "./ledger-sync.ts";
import { derToPem } from "./pem.ts";
import {
  type CaRegistry,
  type Department,
  type IdentityRevocation,
  maxEnrollmentsMax,
  type RegisterIdentityInput,
  type RevocationReason,
  type RevocationRecord,
  revocationPageSizeMax,
  secretCharsMax,
} from "./registry.ts";

export const caApiVersion = "1.0.0";

export interface CaServiceOptions {
  readonly ca: CertificateAuthority;
  readonly registry: CaRegistry;
  /** Records departments and revocations on the ledger; without it, responses say `not-configured`. */
  readonly ledger?: LedgerSync;
  /** Wall clock in integer ms (request signatures, certificate validity, rate limits). Default: the CA's. */
  readonly now?: () => number;
  readonly tls?: { readonly certPem: string; readonly keyPem: string; readonly passphrase?: string };
  readonly logger?: boolean;
  readonly limits?: Partial<CaServiceLimits>;
}

export interface CaServiceLimits {
  /** Largest request body; a CSR is under 1 KiB of PEM. */
  readonly bodyBytesMax: number;
  readonly clockSkewMsMax: number;
  /** Failed enrollments per enrollment id within the window before the id gets 429 RATE_LIMITED. */
  readonly enrollFailuresMax: number;
  readonly enrollFailureWindowMs: number;
  /** Enrollment ids whose failures are remembered; the oldest is forgotten first. */
  readonly enrollTrackedIdsMax: number;
  /** Enrollments being checked at once (each costs a ~40 ms scrypt); more get 429 RATE_LIMITED. */
  readonly enrollConcurrentMax: number;
  /** Longest a request may take, ledger commit wait included. */
  readonly requestTimeoutMs: number;
}

export const caServiceDefaults: CaServiceLimits = {
  bodyBytesMax: 64 * 1024,
  clockSkewMsMax: 300_000,
  enrollFailuresMax: 5,
  enrollFailureWindowMs: 15 * 60_000,
  enrollTrackedIdsMax: 100_000,
  enrollConcurrentMax: 16,
  requestTimeoutMs: 60_000,
};

/** Roles a department admin may grant within its own department; everything else needs a registrar. */
export const deptAdminGrantableRoles: readonly Role[] = ["officer", "auditor", "client"];

/** A registrar: a person of the operator department with the role `registrar` or `admin`. */
export function isRegistrar(caller: Identity, operatorDept: string): boolean {
  return (
    caller.kind === "user" &&
    caller.dept === operatorDept &&
    (caller.roles.includes("registrar") || caller.roles.includes("admin"))
  );
}

/** Throws FORBIDDEN (or CA_BAD_INPUT) unless `caller` may register `input`. */
export function authorizeRegistration(
  caller: Identity,
  input: Pick<RegisterIdentityInput, "dept" | "roles" | "kind">,
  operatorDept: string,
): void {
  if (input.roles.includes("registrar") && input.dept !== operatorDept) {
    throw new CodedError(
      "CA_BAD_INPUT",
      `the registrar role belongs to identities of the operator department ${operatorDept}`,
      "roles",
    );
  }
  if (isRegistrar(caller, operatorDept)) return;
  if (caller.kind === "user" && caller.roles.includes("admin") && caller.dept === input.dept) {
    if (input.kind !== "user") {
      throw new CodedError(
        "FORBIDDEN",
        "a department admin registers people only; nodes need a registrar",
        "kind",
      );
    }
    const beyond = input.roles.filter((role) => !deptAdminGrantableRoles.includes(role));
    if (beyond.length > 0) {
      throw new CodedError(
        "FORBIDDEN",
        `a department admin may grant ${deptAdminGrantableRoles.join(", ")}; ${beyond.join(", ")} needs a registrar`,
        "roles",
      );
    }
    return;
  }
  throw new CodedError(
    "FORBIDDEN",
    `registering identities of ${input.dept} needs a registrar or an admin of ${input.dept}`,
    "dept",
  );
}

function requireRegistrar(caller: Identity, operatorDept: string, what: string): void {
  if (!isRegistrar(caller, operatorDept)) {
    throw new CodedError("FORBIDDEN", `${what} needs a registrar (an admin or registrar of ${operatorDept})`);
  }
}

// ---------------------------------------------------------------------------------------------
// Operations shared by the HTTP service and the CLI's local mode

/** What the ledger says about a decision, as every response reports it. */
export type LedgerStatus =
  | {
      readonly status: "committed";
      readonly txId: string;
      readonly height: number;
      readonly alreadyRecorded: boolean;
    }
  | { readonly status: "pending"; readonly code: string; readonly message: string; readonly txId?: string }
  | { readonly status: "failed"; readonly code: string; readonly message: string; readonly txId?: string }
  | { readonly status: "not-configured" };

export interface DepartmentResult {
  readonly department: Department;
  readonly ledger: LedgerStatus;
}

export interface RevokeResult {
  /** Certificates this call revoked (empty when they were revoked already). */
  readonly revoked: RevocationRecord[];
  /** For an identity revocation: the identity's (first) revocation. */
  readonly identity: IdentityRevocation | null;
  readonly ledger: LedgerStatus;
}

/**
 * The CA's decisions with their ledger records. The registry decides first and its decision stands
 * whatever the ledger says; the result tells the caller whether the ledger has it yet.
 */
export class CaOperations {
  constructor(
    readonly registry: CaRegistry,
    readonly ledger?: LedgerSync,
  ) {}

  async registerDepartment(code: string, name: string): Promise<DepartmentResult> {
    const department = this.registry.registerDepartment(code, name);
    const ledger = await this.record(() => this.ledger!.registerDepartment(department.code, department.name));
    return { department, ledger };
  }

  /** Revokes one certificate. Revoking it again re-sends its record, so a pending one can settle. */
  async revokeCertificate(certId: string, reason: RevocationReason): Promise<RevokeResult> {
    checkRecordable(reason);
    const revoked = this.registry.revokeCertificate(certId, reason);
    const stored = this.registry.getCertificate(certId);
    if (stored?.revokedMs == null || stored.revokeReason === null) {
      throw new CodedError("INVARIANT_BROKEN", "a revoked certificate has a revocation time");
    }
    const revokedMs = stored.revokedMs;
    const storedReason = stored.revokeReason;
    const ledger = await this.record(() => this.ledger!.revokeCertificate(certId, storedReason, revokedMs));
    return { revoked, identity: null, ledger };
  }

  /**
   * Revokes an identity and all its certificates. On the ledger one `config.identity.revoke` covers
   * every certificate of the identity, those issued later included.
   */
  async revokeIdentity(enrollmentId: string, reason: RevocationReason): Promise<RevokeResult> {
    checkRecordable(reason);
    const revoked = this.registry.revokeIdentity(enrollmentId, reason);
    const identity = this.registry.getIdentityRevocation(enrollmentId);
    if (identity === null)
      throw new CodedError("INVARIANT_BROKEN", "a revoked identity has a revocation time");
    const ledger = await this.record(() =>
      this.ledger!.revokeIdentity(identity.enrollmentId, identity.reason, identity.revokedMs),
    );
    return { revoked, identity, ledger };
  }

  private async record(submit: () => Promise<{ txId: string; height: number; alreadyRecorded: boolean }>) {
    if (this.ledger === undefined) return { status: "not-configured" } as const;
    try {
      const commit = await submit();
      return { status: "committed", ...commit } as const;
    } catch (error) {
      if (!(error instanceof LedgerError)) throw error;
      return {
        status: error.pending ? "pending" : "failed",
        code: error.code,
        message: error.message,
        ...(error.txId === undefined ? {} : { txId: error.txId }),
      } as const;
    }
  }
}

function checkRecordable(reason: RevocationReason): void {
  if (!recordableReasons.includes(reason)) {
    throw new CodedError(
      "CA_BAD_INPUT",
      `reason is one of: ${recordableReasons.join(", ")} (the ledger has no ${reason})`,
      "reason",
    );
  }
}

// ---------------------------------------------------------------------------------------------
// Enrollment attempt limits

/**
 * Failed enrollments per enrollment id in a sliding window. Unknown ids are tracked like real ones,
 * so the 429 reveals nothing about which ids exist. Bounded: past `trackedIdsMax` ids the one whose
 * last failure is oldest is forgotten.
 */
export class EnrollmentLimiter {
  private readonly failures = new Map<string, number[]>();

  constructor(
    private readonly failuresMax: number,
    private readonly windowMs: number,
    private readonly trackedIdsMax: number,
    private readonly now: () => number,
  ) {}

  check(enrollmentId: string): void {
    const recent = this.recent(enrollmentId);
    if (recent.length >= this.failuresMax) {
      const retryInS = Math.ceil((recent[0]! + this.windowMs - this.now()) / 1000);
      throw new CodedError(
        "RATE_LIMITED",
        `too many failed enrollments for this id; retry in ${Math.max(retryInS, 1)} s`,
        "enrollmentId",
      );
    }
  }

  fail(enrollmentId: string): void {
    const recent = [...this.recent(enrollmentId), this.now()].slice(-this.failuresMax);
    this.failures.delete(enrollmentId);
    this.failures.set(enrollmentId, recent);
    if (this.failures.size > this.trackedIdsMax) {
      this.failures.delete(this.failures.keys().next().value as string);
    }
  }

  succeed(enrollmentId: string): void {
    this.failures.delete(enrollmentId);
  }

  private recent(enrollmentId: string): number[] {
    const since = this.now() - this.windowMs;
    const recent = (this.failures.get(enrollmentId) ?? []).filter((ms) => ms > since);
    if (recent.length === 0) this.failures.delete(enrollmentId);
    return recent;
  }
}

// ---------------------------------------------------------------------------------------------
// Schemas

const deptCode = { type: "string", pattern: "^[a-z][a-z0-9-]{1,31}$" } as const;
const enrollmentId = { type: "string", pattern: "^[a-z0-9._-]{1,64}$", maxLength: 64 } as const;
const hex64 = { type: "string", pattern: "^[0-9a-f]{64}$" } as const;
const pem = { type: "string", minLength: 1, maxLength: 16 * 1024 } as const;
const time = { type: "string", format: "date-time" } as const;
const roleEnum = ["admin", "officer", "auditor", "node", "registrar", "client"] as const;

const errorResponses = apiErrorResponses;

const ledgerStatusSchema = {
  type: "object",
  description:
    "committed: on the ledger at `height`; pending: the ledger was unreachable or slow, run `citychain ca sync`; failed: the ledger refused the record (`code`); not-configured: this service records nothing on a ledger",
  properties: {
    status: { type: "string", enum: ["committed", "pending", "failed", "not-configured"] },
    txId: hex64,
    height: { type: "integer" },
    alreadyRecorded: { type: "boolean" },
    code: { type: "string" },
    message: { type: "string" },
  },
  required: ["status"],
} as const;

const revocationSchema = {
  type: "object",
  properties: {
    certId: hex64,
    serial: { type: "string" },
    enrollmentId,
    dept: deptCode,
    reason: { type: "string" },
    revokedAt: time,
  },
} as const;

const identityRevocationSchema = {
  type: "object",
  properties: { enrollmentId, dept: deptCode, reason: { type: "string" }, revokedAt: time },
} as const;

const issuedSchema = {
  type: "object",
  properties: {
    enrollmentId,
    certId: hex64,
    notBefore: time,
    notAfter: time,
    certificate: { type: "string", description: "the new certificate, PEM" },
    caCertificate: { type: "string", description: "the root certificate, PEM" },
  },
} as const;

const signed = { security: [{ httpSignature: [] }] } as const;
const unsigned = { security: [] } as const;

export const caSchemas = {
  registerDepartment: {
    ...signed,
    summary: "Register a department (registrar)",
    description:
      "Records the department in the CA's registry and, when a ledger is configured, on the ledger (config.dept.register), waiting for the commit.",
    body: {
      type: "object",
      properties: { code: deptCode, name: { type: "string", minLength: 1, maxLength: 128 } },
      required: ["code", "name"],
      additionalProperties: false,
    },
    response: {
      201: {
        type: "object",
        properties: {
          department: {
            type: "object",
            properties: { code: deptCode, name: { type: "string" }, createdAt: time },
          },
          ledger: ledgerStatusSchema,
        },
      },
      ...errorResponses,
    },
  },
  registerIdentity: {
    ...signed,
    summary: "Register an identity and get its one-time enrollment secret",
    description:
      "A registrar may register any identity; an admin of a department may register people (kind user) of that department with the roles officer, auditor, client. The secret is returned once and never again.",
    body: {
      type: "object",
      properties: {
        enrollmentId,
        dept: deptCode,
        roles: {
          type: "array",
          items: { type: "string", enum: roleEnum },
          minItems: 1,
          maxItems: 6,
          uniqueItems: true,
        },
        kind: { type: "string", enum: ["user", "node"] },
        maxEnrollments: { type: "integer", minimum: 1, maximum: maxEnrollmentsMax },
        dnsNames: { type: "array", items: { type: "string", maxLength: 253 }, maxItems: 16 },
        ipAddresses: { type: "array", items: { type: "string", maxLength: 45 }, maxItems: 16 },
      },
      required: ["enrollmentId", "dept", "roles", "kind"],
      additionalProperties: false,
    },
    response: {
      201: {
        type: "object",
        properties: {
          enrollmentId,
          dept: deptCode,
          roles: { type: "array", items: { type: "string" } },
          kind: { type: "string" },
          maxEnrollments: { type: "integer" },
          secret: { type: "string", description: "the one-time enrollment secret; shown only here" },
        },
      },
      ...errorResponses,
    },
  },
  enroll: {
    ...unsigned,
    summary: "Exchange the one-time secret and a CSR for a certificate (not signed)",
    description:
      "An unknown id, a wrong secret, a used-up secret and a revoked identity all answer 401 CA_BAD_SECRET. After 5 failures for one id within 15 minutes the id gets 429 RATE_LIMITED.",
    body: {
      type: "object",
      properties: {
        enrollmentId,
        secret: { type: "string", minLength: 1, maxLength: secretCharsMax },
        csr: pem,
      },
      required: ["enrollmentId", "secret", "csr"],
      additionalProperties: false,
    },
    response: { 201: issuedSchema, ...errorResponses },
  },
  reenroll: {
    ...signed,
    summary: "Renew the signer's certificate (signed by the current certificate)",
    body: {
      type: "object",
      properties: { csr: pem },
      required: ["csr"],
      additionalProperties: false,
    },
    response: { 201: issuedSchema, ...errorResponses },
  },
  revoke: {
    ...signed,
    summary: "Revoke a certificate or an identity (registrar)",
    description:
      "Give exactly one of certId and enrollmentId. Revoking an identity revokes all its certificates and its secret. Recorded on the ledger as config.cert.revoke or config.identity.revoke.",
    body: {
      type: "object",
      properties: {
        certId: hex64,
        enrollmentId,
        reason: { type: "string", enum: [...recordableReasons] },
      },
      required: ["reason"],
      additionalProperties: false,
    },
    response: {
      200: {
        type: "object",
        properties: {
          revoked: { type: "array", items: revocationSchema },
          identity: { anyOf: [identityRevocationSchema, { type: "null" }] },
          ledger: ledgerStatusSchema,
        },
      },
      ...errorResponses,
    },
  },
  revocations: {
    ...signed,
    summary: "Revoked certificates (or identities), oldest first, paginated",
    querystring: {
      type: "object",
      properties: {
        cursor: { type: "string", maxLength: 100 },
        limit: { type: "integer", minimum: 1, maximum: revocationPageSizeMax, default: 100 },
        kind: { type: "string", enum: ["certificate", "identity"], default: "certificate" },
      },
      additionalProperties: false,
    },
    response: {
      200: {
        type: "object",
        properties: {
          items: { type: "array", items: { anyOf: [revocationSchema, identityRevocationSchema] } },
          nextCursor: { type: ["string", "null"] },
        },
      },
      ...errorResponses,
    },
  },
  certificate: {
    ...unsigned,
    summary: "The root certificate (public)",
    response: {
      200: {
        type: "object",
        properties: {
          certificate: { type: "string", description: "PEM" },
          certId: hex64,
          subject: { type: "string" },
          notBefore: time,
          notAfter: time,
        },
      },
    },
  },
} as const;

// ---------------------------------------------------------------------------------------------
// The service

type Access = "public" | "signed";

export async function buildCaService(options: CaServiceOptions): Promise<FastifyInstance> {
  const { ca, registry } = options;
  const now = options.now ?? ca.now;
  const limits: CaServiceLimits = { ...caServiceDefaults, ...options.limits };
  const operatorDept = ca.identity.dept;
  const operations = new CaOperations(registry, options.ledger);
  const verifier = new RequestVerifier({ now, clockSkewMsMax: limits.clockSkewMsMax });
  const limiter = new EnrollmentLimiter(
    limits.enrollFailuresMax,
    limits.enrollFailureWindowMs,
    limits.enrollTrackedIdsMax,
    now,
  );
  const rawBodies = new WeakMap<FastifyRequest, Buffer>();
  const callers = new WeakMap<FastifyRequest, Identity>();

  const app = Fastify({
    logger: options.logger ?? false,
    bodyLimit: limits.bodyBytesMax,
    requestTimeout: limits.requestTimeoutMs,
    ...(options.tls === undefined
      ? {}
      : {
          https: { cert: options.tls.certPem, key: options.tls.keyPem, passphrase: options.tls.passphrase },
        }),
  }) as unknown as FastifyInstance;
  app.setValidatorCompiler(validatorCompiler());

  await app.register(swagger, {
    openapi: {
      openapi: "3.1.0",
      info: {
        title: "citychain membership service (CA) API",
        version: caApiVersion,
        description:
          "Requests other than GET /v1/ca/certificate and POST /v1/ca/enroll carry an RFC 9421 signature by an identity this CA issued (docs/api-auth.md).",
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

  // Authentication runs before validation, as on the node: an unsigned caller learns nothing from 400s.
  app.addHook("preValidation", async (request) => {
    const access = (request.routeOptions.config as { access?: Access } | undefined)?.access;
    if (access !== "signed") return;
    callers.set(request, await authenticate(request, rawBodies.get(request)));
  });

  app.setErrorHandler((error: FastifyError | CodedError, request, reply) => sendError(error, request, reply));
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
    const der = parsed.certDer ?? registry.getCertificate(parsed.keyId)?.der ?? undefined;
    if (der === undefined) throw certificateUnknownError("this CA");
    const caller = judgeCertificate(der);
    await verifier.verify(parsed, caller.publicKeySpki);
    return caller;
  }

  /** Issued by this CA, within validity, in the registry, not revoked, identity active. */
  function judgeCertificate(der: Uint8Array): Identity {
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
    if (!verifyIssuedBy(caller, ca.identity)) {
      throw new CodedError("CERT_UNTRUSTED", `certificate ${caller.certId} was not issued by this CA`);
    }
    if (!isWithinValidity(caller, now())) {
      throw new CodedError("CERT_EXPIRED", `certificate ${caller.certId} is not valid now`);
    }
    const record = registry.getCertificate(caller.certId);
    if (record === null) {
      throw new CodedError("CERT_UNKNOWN", `certificate ${caller.certId} is not in this CA's records`);
    }
    if (record.revokedMs !== null)
      throw new CodedError("CERT_REVOKED", `certificate ${caller.certId} is revoked`);
    if (registry.getIdentity(caller.enrollmentId)?.status !== "active") {
      throw new CodedError("CERT_REVOKED", `identity ${caller.enrollmentId} is revoked`);
    }
    return caller;
  }

  const callerOf = (request: FastifyRequest): Identity => {
    const caller = callers.get(request);
    if (caller === undefined) throw new CodedError("INVARIANT_BROKEN", "a signed route ran without a caller");
    return caller;
  };
  const signedRoute = { config: { access: "signed" as Access } };
  const publicRoute = { config: { access: "public" as Access } };

  app.post(
    "/v1/ca/departments",
    { ...signedRoute, schema: caSchemas.registerDepartment },
    async (request, reply) => {
      const caller = callerOf(request);
      requireRegistrar(caller, operatorDept, "registering a department");
      const body = request.body as { code: string; name: string };
      const result = await operations.registerDepartment(body.code, body.name);
      request.log.info({
        event: "ca.dept.register",
        by: caller.enrollmentId,
        code: body.code,
        ledger: result.ledger.status,
      });
      return reply.code(201).send({ department: departmentToJson(result.department), ledger: result.ledger });
    },
  );

  app.post(
    "/v1/ca/identities",
    { ...signedRoute, schema: caSchemas.registerIdentity },
    async (request, reply) => {
      const caller = callerOf(request);
      const body = request.body as RegisterIdentityInput;
      authorizeRegistration(caller, body, operatorDept);
      const { secret } = await registry.registerIdentity(body);
      request.log.info({
        event: "ca.identity.register",
        by: caller.enrollmentId,
        enrollmentId: body.enrollmentId,
      });
      return reply.code(201).send({
        enrollmentId: body.enrollmentId,
        dept: body.dept,
        roles: body.roles,
        kind: body.kind,
        maxEnrollments: body.maxEnrollments ?? 1,
        secret,
      });
    },
  );

  let enrollmentsInFlight = 0;
  app.post("/v1/ca/enroll", { ...publicRoute, schema: caSchemas.enroll }, async (request, reply) => {
    const body = request.body as { enrollmentId: string; secret: string; csr: string };
    limiter.check(body.enrollmentId);
    if (enrollmentsInFlight >= limits.enrollConcurrentMax) {
      throw new CodedError("RATE_LIMITED", "too many enrollments at once; retry shortly");
    }
    enrollmentsInFlight++;
    let certPem: string;
    try {
      certPem = await registry.enroll(body.enrollmentId, body.secret, body.csr);
    } catch (error) {
      if (error instanceof CodedError && secretFailures.has(error.code)) {
        limiter.fail(body.enrollmentId);
        request.log.info({ event: "ca.enroll.refused", enrollmentId: body.enrollmentId });
        // One answer for all of them: which ids exist is not the caller's business.
        throw new CodedError(
          "CA_BAD_SECRET",
          "unknown enrollment id, wrong secret, or secret used up",
          "secret",
        );
      }
      throw error;
    } finally {
      enrollmentsInFlight--;
    }
    limiter.succeed(body.enrollmentId);
    request.log.info({ event: "ca.enroll", enrollmentId: body.enrollmentId });
    return reply.code(201).send(issuedToJson(certPem, ca.certPem));
  });

  app.post("/v1/ca/reenroll", { ...signedRoute, schema: caSchemas.reenroll }, async (request, reply) => {
    const caller = callerOf(request);
    const body = request.body as { csr: string };
    const certPem = await registry.reenroll(derToPem(caller.der, "CERTIFICATE"), body.csr);
    request.log.info({ event: "ca.reenroll", enrollmentId: caller.enrollmentId, from: caller.certId });
    return reply.code(201).send(issuedToJson(certPem, ca.certPem));
  });

  app.post("/v1/ca/revoke", { ...signedRoute, schema: caSchemas.revoke }, async (request, reply) => {
    const caller = callerOf(request);
    requireRegistrar(caller, operatorDept, "revoking");
    const body = request.body as { certId?: string; enrollmentId?: string; reason: RevocationReason };
    if ((body.certId === undefined) === (body.enrollmentId === undefined)) {
      throw new CodedError("CA_BAD_INPUT", "give exactly one of certId and enrollmentId", "certId");
    }
    const result =
      body.certId === undefined
        ? await operations.revokeIdentity(body.enrollmentId!, body.reason)
        : await operations.revokeCertificate(body.certId, body.reason);
    request.log.info({
      event: "ca.revoke",
      by: caller.enrollmentId,
      certId: body.certId,
      enrollmentId: body.enrollmentId,
      reason: body.reason,
      certificates: result.revoked.length,
      ledger: result.ledger.status,
    });
    return reply.code(200).send(revokeResultToJson(result));
  });

  app.get("/v1/ca/revocations", { ...signedRoute, schema: caSchemas.revocations }, async (request) => {
    const query = request.query as { cursor?: string; limit: number; kind: "certificate" | "identity" };
    const page = { ...(query.cursor === undefined ? {} : { cursor: query.cursor }), limit: query.limit };
    if (query.kind === "identity") {
      const identities = registry.listIdentityRevocations(page);
      return { items: identities.items.map(identityRevocationToJson), nextCursor: identities.nextCursor };
    }
    const certificates = registry.listRevocations(page);
    return { items: certificates.items.map(revocationToJson), nextCursor: certificates.nextCursor };
  });

  app.get("/v1/ca/certificate", { ...publicRoute, schema: caSchemas.certificate }, async () => ({
    certificate: ca.certPem,
    certId: ca.identity.certId,
    subject: ca.identity.subjectDn,
    notBefore: new Date(ca.identity.notBeforeMs).toISOString(),
    notAfter: new Date(ca.identity.notAfterMs).toISOString(),
  }));

  app.get("/v1/ca/openapi.json", { ...publicRoute, schema: { hide: true } as object }, async () =>
    app.swagger(),
  );

  await app.ready();
  return app;
}

/** Registry codes that mean "this secret does not open this id"; the API answers all with one. */
const secretFailures: ReadonlySet<ErrorCode> = new Set([
  "CA_BAD_SECRET",
  "CA_SECRET_USED",
  "CA_IDENTITY_UNKNOWN",
  "CA_IDENTITY_REVOKED",
]);

// ---------------------------------------------------------------------------------------------
// JSON views: times are RFC 3339 at the edge

const iso = (ms: number) => new Date(ms).toISOString();

function departmentToJson(department: Department) {
  return { code: department.code, name: department.name, createdAt: iso(department.createdMs) };
}

function revocationToJson(record: RevocationRecord) {
  return {
    certId: record.certId,
    serial: record.serial,
    enrollmentId: record.enrollmentId,
    dept: record.dept,
    reason: record.reason,
    revokedAt: iso(record.revokedMs),
  };
}

function identityRevocationToJson(record: IdentityRevocation) {
  return {
    enrollmentId: record.enrollmentId,
    dept: record.dept,
    reason: record.reason,
    revokedAt: iso(record.revokedMs),
  };
}

export function revokeResultToJson(result: RevokeResult) {
  return {
    revoked: result.revoked.map(revocationToJson),
    identity: result.identity === null ? null : identityRevocationToJson(result.identity),
    ledger: result.ledger,
  };
}

export function departmentResultToJson(result: DepartmentResult) {
  return { department: departmentToJson(result.department), ledger: result.ledger };
}

function issuedToJson(certPem: string, caCertPem: string) {
  const issued = parseIdentityCert(certPem);
  return {
    enrollmentId: issued.enrollmentId,
    certId: issued.certId,
    notBefore: iso(issued.notBeforeMs),
    notAfter: iso(issued.notAfterMs),
    certificate: certPem,
    caCertificate: caCertPem,
  };
}
