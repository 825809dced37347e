/**
 * License content is JSON at the edges and canonical JSON (RFC 8785, JCS) wherever it is hashed,
 * sealed or stored, so every node and every SDK turns the same content into the same bytes.
 * Parsing is bounded (size, depth, members) because content arrives from callers.
 */
import canonicalize from "canonicalize";
import { CodedError } from "../errors.ts";

export type JsonValue = null | boolean | number | string | JsonValue[] | { [key: string]: JsonValue };
export type JsonObject = { [key: string]: JsonValue };

export interface JsonLimits {
  readonly bytesMax: number;
  readonly depthMax: number;
  /** Array elements plus object members, over the whole document. */
  readonly itemsMax: number;
}

export const contentJsonLimits: JsonLimits = { bytesMax: 64 * 1024, depthMax: 16, itemsMax: 4096 };

/** RFC 8785 serialisation. Throws PAYLOAD_INVALID for values JSON cannot carry (NaN, lone surrogates). */
export function canonicalJson(value: JsonValue, field = "content"): string {
  let text: string | undefined;
  try {
    text = canonicalize(value);
  } catch (error) {
    throw new CodedError("PAYLOAD_INVALID", `${field}: ${(error as Error).message}`, field);
  }
  if (text === undefined) throw new CodedError("PAYLOAD_INVALID", `${field}: not JSON`, field);
  return text;
}

/** Parses JSON text within limits; the result is plain data (no prototypes beyond Object). */
export function parseJsonLimited(
  text: string,
  field: string,
  limits: JsonLimits = contentJsonLimits,
): JsonValue {
  if (text.length > limits.bytesMax) {
    throw new CodedError("PAYLOAD_INVALID", `${field}: longer than ${limits.bytesMax} characters`, field);
  }
  let value: JsonValue;
  try {
    value = JSON.parse(text) as JsonValue;
  } catch {
    throw new CodedError("PAYLOAD_INVALID", `${field}: not valid JSON`, field);
  }
  checkShape(value, field, limits);
  return value;
}

/** Checks depth and item count of an already-parsed value (API bodies arrive parsed). */
export function checkShape(value: unknown, field: string, limits: JsonLimits = contentJsonLimits): void {
  let items = 0;
  const visit = (v: unknown, depth: number): void => {
    if (depth > limits.depthMax)
      throw new CodedError("PAYLOAD_INVALID", `${field}: nested deeper than ${limits.depthMax}`, field);
    if (v === null || typeof v === "boolean" || typeof v === "string") return;
    if (typeof v === "number") {
      if (!Number.isFinite(v)) throw new CodedError("PAYLOAD_INVALID", `${field}: number not finite`, field);
      return;
    }
    if (Array.isArray(v)) {
      items += v.length;
      if (items > limits.itemsMax)
        throw new CodedError("PAYLOAD_INVALID", `${field}: more than ${limits.itemsMax} items`, field);
      for (const e of v) visit(e, depth + 1);
      return;
    }
    if (typeof v === "object" && Object.getPrototypeOf(v) === Object.prototype) {
      const entries = Object.entries(v as Record<string, unknown>);
      items += entries.length;
      if (items > limits.itemsMax)
        throw new CodedError("PAYLOAD_INVALID", `${field}: more than ${limits.itemsMax} items`, field);
      for (const [, e] of entries) visit(e, depth + 1);
      return;
    }
    throw new CodedError("PAYLOAD_INVALID", `${field}: not JSON data`, field);
  };
  visit(value, 0);
}

export function isJsonObject(value: unknown): value is JsonObject {
  return value !== null && typeof value === "object" && !Array.isArray(value);
}
