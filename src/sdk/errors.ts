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
