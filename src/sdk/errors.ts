/** The API's error codes as typed errors for SDK users (the same registry as the node's). */
import type { ErrorCode } from "../core/errors.ts";

export class CitychainError extends Error {
  constructor(
    readonly code: ErrorCode | string,
    message: string,
    readonly status: number,
    readonly field?: string,
  ) {
    super(message);
    this.name = "CitychainError";
  }
}

/**
 * What went wrong in transit when `error` is a fetch failure (WHATWG fetch's, or nodeFetch's, which
 * fails the same way): a TypeError whose cause is the transport's error. Its code (ECONNRESET, a TLS
 * code…), else its message; undefined for any other error.
 */
export function fetchFailureDetail(error: unknown): string | undefined {
  if (!(error instanceof TypeError) || error.cause === undefined) return undefined;
  const cause = error.cause as { code?: string; message?: string };
  return cause.code ?? cause.message ?? error.message;
}
