/**
 * The platform's own records in world state: chain parameters, trusted roots, departments,
 * validators, revocations and known certificates. Keys live under "sys/" and values are canonical
 * CBOR, so every node reads "is this identity valid" from the ledger alone.
 */
import { type Validator, validatorsToCanonical } from "./block.ts";
import { type Canonical, decodeStoredCanonical, encodeCanonical } from "./encoding.ts";
import { CodedError } from "./errors.ts";
import { decodeStoredRecord } from "./record-decoder.ts";
import type { StateReader } from "./state.ts";

export const deptCodePattern = /^[a-z][a-z0-9-]{1,31}$/;
export const enrollmentIdPattern = /^[a-z0-9][a-z0-9._-]{0,63}$/;
export const certIdPattern = /^[0-9a-f]{64}$/;

/** RFC 5280 CRLReason names; certificateHold and removeFromCRL are absent because revocation is final. */
export const revocationReasons = [
  "unspecified",
  "keyCompromise",
  "cACompromise",
  "affiliationChanged",
  "superseded",
  "cessationOfOperation",
  "privilegeWithdrawn",
  "aACompromise",
] as const;
export type RevocationReason = (typeof revocationReasons)[number];

export const stateKeys = {
  chainParams: "sys/params",
  roots: "sys/roots",
  validators: "sys/validators",
  /** Height of the block that last changed the validator set (one change per block). */
  validatorsChangedAt: "sys/validators-changed",
  dept: (code: string) => `sys/dept/${code}`,
  cert: (certId: string) => `sys/cert/${certId}`,
  revokedCert: (certId: string) => `sys/revoked/cert/${certId}`,
  revokedIdentity: (enrollmentId: string) => `sys/revoked/id/${enrollmentId}`,
  kv: (dept: string, key: string) => `kv/${dept}/${key}`,
  evidence: (validatorIdHex: string, height: number, round: number, what: string) =>
    `sys/evidence/${validatorIdHex}/${height}/${round}/${what}`,
} as const;

export interface ChainParams {
  readonly chainId: string;
  /** The department that runs the membership service; its admins sign configuration changes. */
  readonly operatorDept: string;
  readonly txBytesMax: number;
  readonly blockTxsMax: number;
  readonly blockBytesMax: number;
  /** How far ahead of block time a transaction's expiry may be. */
  readonly txTtlMsMax: number;
}

export interface Department {
  readonly code: string;
  readonly name: string;
  readonly status: "active" | "suspended";
  readonly sinceHeight: number;
}

export interface Revocation {
  readonly reason: RevocationReason;
  readonly revokedAtMs: number;
  readonly height: number;
}

/**
 * Decoded records, keyed by the very byte array the state returned: a cached state hands out the
 * same array for an unchanged value, so a record is decoded once, and a changed value is a new array.
 * Callers must treat decoded records as read-only.
 */
const decoded = new WeakMap<Uint8Array, Canonical>();

export function readRecord(state: StateReader, key: string): Canonical | undefined {
  const bytes = state.get(key);
  if (bytes === undefined) return undefined;
  const known = decoded.get(bytes);
  if (known !== undefined) return known;
  const value = decodeRecord(key, bytes);
  decoded.set(bytes, value);
  return value;
}

/**
 * Like readRecord without remembering the decoded record, and with the lean decoder
 * (src/core/record-decoder.ts): for reads that sweep many records once (a search's page), where
 * remembering would only give the garbage collector more to keep.
 */
export function readRecordOnce(state: StateReader, key: string): Canonical | undefined {
  const bytes = state.get(key);
  if (bytes === undefined) return undefined;
  try {
    return decodeStoredRecord(bytes, 1024 * 1024);
  } catch {
    throw new CodedError("STORAGE_CORRUPT", `state value at ${key} is not canonical`);
  }
}

function decodeRecord(key: string, bytes: Uint8Array): Canonical {
  try {
    return decodeStoredCanonical(bytes, 1024 * 1024);
  } catch {
    throw new CodedError("STORAGE_CORRUPT", `state value at ${key} is not canonical`);
  }
}

export function encodeRecord(value: Canonical): Uint8Array {
  return encodeCanonical(value);
}

export function readChainParams(state: StateReader): ChainParams {
  const value = readRecord(state, stateKeys.chainParams);
  if (value === undefined) throw new CodedError("STORAGE_CORRUPT", "chain parameters missing from state");
  return value as unknown as ChainParams;
}

export function readRoots(state: StateReader): readonly Uint8Array[] {
  return (readRecord(state, stateKeys.roots) as Uint8Array[] | undefined) ?? [];
}

export function readDepartment(state: StateReader, code: string): Department | undefined {
  return readRecord(state, stateKeys.dept(code)) as Department | undefined;
}

export function readRevocation(state: StateReader, key: string): Revocation | undefined {
  return readRecord(state, key) as Revocation | undefined;
}

export function readValidators(state: StateReader): readonly Validator[] {
  const raw = readRecord(state, stateKeys.validators) as Canonical[][] | undefined;
  if (raw === undefined) return [];
  return validatorsFromCanonical(raw);
}

/** The validator list as encodeValidators wrote it. */
export function decodeValidators(bytes: Uint8Array): readonly Validator[] {
  let raw: Canonical[][];
  try {
    raw = decodeStoredCanonical(bytes, 1024 * 1024) as Canonical[][];
  } catch {
    throw new CodedError("STORAGE_CORRUPT", "a stored validator list is not canonical");
  }
  return validatorsFromCanonical(raw);
}

function validatorsFromCanonical(raw: Canonical[][]): readonly Validator[] {
  return raw.map(([id, publicKeySpki, power, dept]) => ({
    id: id as Uint8Array,
    publicKeySpki: publicKeySpki as Uint8Array,
    power: power as number,
    dept: dept as string,
  }));
}

export function encodeValidators(validators: readonly Validator[]): Uint8Array {
  return encodeCanonical(validatorsToCanonical(validators));
}
