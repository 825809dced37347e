/**
 * One registry of error codes. Every error a caller can see carries a stable string code; the API maps
 * it to an HTTP status, the SDK rethrows it as a typed error, and the CLI prints it. Adding a code here
 * is an API change: never rename one.
 */
export const errorStatus = {
  // 400: the request itself is wrong
  BAD_REQUEST: 400,
  REQUEST_TOO_LARGE: 413,
  UNSUPPORTED_MEDIA_TYPE: 415,
  BAD_ENCODING: 400,
  BAD_SIGNATURE_FORMAT: 400,
  TX_TOO_LARGE: 413,
  TX_MALFORMED: 400,
  TX_WRONG_CHAIN: 400,
  TX_EXPIRED: 400,
  TX_EXPIRY_TOO_FAR: 400,
  TX_UNKNOWN_TYPE: 400,
  PAYLOAD_INVALID: 400,
  BLOCK_MALFORMED: 400,
  /** A fresh proposal dated too far ahead of / behind this node's clock (node/consensus-app.ts). */
  BLOCK_TIME_AHEAD: 400,
  BLOCK_TIME_BEHIND: 400,
  PROOF_MALFORMED: 400,
  // 401/403: who is asking
  AUTH_MISSING: 401,
  AUTH_MALFORMED: 401,
  AUTH_BAD_SIGNATURE: 401,
  AUTH_CLOCK_SKEW: 401,
  AUTH_REPLAYED: 401,
  CERT_UNKNOWN: 401,
  CERT_UNTRUSTED: 401,
  CERT_EXPIRED: 401,
  CERT_REVOKED: 403,
  DEPT_UNKNOWN: 403,
  DEPT_SUSPENDED: 403,
  SIGNATURE_INVALID: 401,
  FORBIDDEN: 403,
  POLICY_DENIED: 403,
  // 404/409: state
  NOT_FOUND: 404,
  TX_NOT_FOUND: 404,
  BLOCK_NOT_FOUND: 404,
  TX_DUPLICATE: 409,
  TX_ALREADY_COMMITTED: 409,
  CONFLICT: 409,
  // 429/503: load
  MEMPOOL_FULL: 429,
  RATE_LIMITED: 429,
  NODE_SYNCING: 503,
  NODE_STOPPING: 503,
  TIMEOUT: 504,
  // 500: our fault
  INTERNAL: 500,
  STORAGE_CORRUPT: 500,
  INVARIANT_BROKEN: 500,
  // CA
  CA_DEPT_EXISTS: 409,
  CA_DEPT_UNKNOWN: 404,
  CA_IDENTITY_EXISTS: 409,
  CA_IDENTITY_UNKNOWN: 404,
  CA_BAD_SECRET: 401,
  CA_SECRET_USED: 401,
  CA_IDENTITY_REVOKED: 403,
  CA_BAD_CSR: 400,
  CA_BAD_INPUT: 400,
  CA_BAD_CERT: 400,
  KEY_LOCKED: 400,
  // Licenses
  LICENSE_ID_MALFORMED: 400,
  LICENSE_CONTENT_INVALID: 400,
  LICENSE_NOT_FOUND: 404,
  LICENSE_TYPE_UNKNOWN: 404,
  LICENSE_STATE: 409,
  SUBJECT_UNKNOWN: 404,
  SUBJECT_FORGOTTEN: 410,
  DECRYPT_UNAVAILABLE: 409,
  CONSENT_REQUIRED: 403,
  // Key vault
  VAULT_SUBJECT_EXISTS: 409,
  VAULT_SUBJECT_UNKNOWN: 404,
  VAULT_KEY_DESTROYED: 410,
} as const satisfies Record<string, number>;

export type ErrorCode = keyof typeof errorStatus;

export class CodedError extends Error {
  readonly code: ErrorCode;
  readonly field: string | undefined;

  constructor(code: ErrorCode, message: string, field?: string) {
    super(message);
    this.name = "CodedError";
    this.code = code;
    this.field = field;
  }

  get status(): number {
    return errorStatus[this.code];
  }

  toJSON(): { code: ErrorCode; message: string; field?: string } {
    return this.field === undefined
      ? { code: this.code, message: this.message }
      : { code: this.code, message: this.message, field: this.field };
  }
}

export function isErrorCode(code: unknown): code is ErrorCode {
  return typeof code === "string" && Object.hasOwn(errorStatus, code);
}

/** Invariants stay on in production: a broken one stops the process instead of limping on. */
export function assert(condition: unknown, message: string): asserts condition {
  if (!condition) throw new CodedError("INVARIANT_BROKEN", `invariant broken: ${message}`);
}
