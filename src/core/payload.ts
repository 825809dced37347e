/**
 * Readers for transaction payloads. Payloads are canonical CBOR maps; these pull typed fields out
 * of them and refuse anything unexpected with PAYLOAD_INVALID naming the field, so every handler
 * validates its input the same way and unknown fields never slip through.
 */
import type { Canonical } from "./encoding.ts";
import { CodedError } from "./errors.ts";

export type PayloadMap = { readonly [key: string]: Canonical };

function invalid(field: string, message: string): never {
  throw new CodedError("PAYLOAD_INVALID", `${field}: ${message}`, field);
}

export function asMap(value: Canonical, field: string, allowedKeys: readonly string[]): PayloadMap {
  if (value === null || typeof value !== "object" || Array.isArray(value) || value instanceof Uint8Array) {
    invalid(field, "must be a map");
  }
  const map = value as PayloadMap;
  for (const key of Object.keys(map)) {
    if (!allowedKeys.includes(key)) invalid(field === "payload" ? key : `${field}.${key}`, "unknown field");
  }
  return map;
}

/** A map whose keys the caller checks itself (e.g. recipient labels). */
export function asKeyedMap(value: Canonical, field: string): PayloadMap {
  if (value === null || typeof value !== "object" || Array.isArray(value) || value instanceof Uint8Array) {
    invalid(field, "must be a map");
  }
  return value as PayloadMap;
}

export function readString(map: PayloadMap, key: string, pattern: RegExp, lengthMax: number): string {
  const value = map[key];
  if (typeof value !== "string") invalid(key, "must be a string");
  if (value.length > lengthMax) invalid(key, `longer than ${lengthMax} characters`);
  if (!pattern.test(value)) invalid(key, `does not match ${pattern.source}`);
  return value;
}

export function readOptionalString(
  map: PayloadMap,
  key: string,
  pattern: RegExp,
  lengthMax: number,
): string | undefined {
  return map[key] === undefined ? undefined : readString(map, key, pattern, lengthMax);
}

export function readBytes(map: PayloadMap, key: string, lengthMin: number, lengthMax: number): Uint8Array {
  const value = map[key];
  if (!(value instanceof Uint8Array)) invalid(key, "must be bytes");
  if (value.length < lengthMin || value.length > lengthMax)
    invalid(key, `must be ${lengthMin}..${lengthMax} bytes`);
  return value;
}

export function readInteger(map: PayloadMap, key: string, min: number, max: number): number {
  const value = map[key];
  if (typeof value !== "number" || !Number.isSafeInteger(value)) invalid(key, "must be an integer");
  if (value < min || value > max) invalid(key, `must be in ${min}..${max}`);
  return value;
}

export function readEnum<T extends string>(map: PayloadMap, key: string, values: readonly T[]): T {
  const value = map[key];
  if (typeof value !== "string" || !values.includes(value as T))
    invalid(key, `must be one of ${values.join(", ")}`);
  return value as T;
}

export function readNullableInteger(map: PayloadMap, key: string, min: number, max: number): number | null {
  return map[key] === null || map[key] === undefined ? null : readInteger(map, key, min, max);
}

export function readStringArray(
  map: PayloadMap,
  key: string,
  pattern: RegExp,
  itemLengthMax: number,
  countMax: number,
): string[] {
  const value = map[key];
  if (!Array.isArray(value)) invalid(key, "must be an array");
  if (value.length > countMax) invalid(key, `more than ${countMax} items`);
  const seen = new Set<string>();
  return value.map((item, i) => {
    const at = `${key}[${i}]`;
    if (typeof item !== "string") invalid(at, "must be a string");
    if (item.length > itemLengthMax || !pattern.test(item)) invalid(at, `does not match ${pattern.source}`);
    if (seen.has(item)) invalid(at, `duplicate ${item}`);
    seen.add(item);
    return item;
  });
}

export function readArray(map: PayloadMap, key: string, countMax: number): readonly Canonical[] {
  const value = map[key];
  if (!Array.isArray(value)) invalid(key, "must be an array");
  if (value.length > countMax) invalid(key, `more than ${countMax} items`);
  return value;
}
