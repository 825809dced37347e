/**
 * Configuration transactions: the ledger's record of trusted roots, departments and revocations.
 * Only an admin of the operator department (the information center) may sign them; the consensus
 * issue adds multi-department governance on top of the same records.
 */
import type { Canonical } from "../encoding.ts";
import { CodedError } from "../errors.ts";
import type { TxCall, TxHandler } from "../execution.ts";
import { hasRole } from "../identity.ts";
import { asMap, readBytes, readEnum, readInteger, readString } from "../payload.ts";
import {
  certIdPattern,
  type Department,
  deptCodePattern,
  encodeRecord,
  enrollmentIdPattern,
  readChainParams,
  readDepartment,
  readRevocation,
  readRoots,
  revocationReasons,
  stateKeys,
} from "../system-state.ts";

// biome-ignore lint/suspicious/noControlCharactersInRegex: control characters are exactly what a name must not contain
const namePattern = /^[^\u0000-\u001f\u007f]{1,128}$/u;

function requireOperatorAdmin(call: TxCall): void {
  const { operatorDept } = readChainParams(call.state);
  if (call.sender.dept !== operatorDept || !hasRole(call.sender, "admin")) {
    throw new CodedError("FORBIDDEN", `configuration changes need an admin of ${operatorDept}`);
  }
}

const registerDepartment: TxHandler = (call) => {
  requireOperatorAdmin(call);
  const p = asMap(call.payload, "payload", ["code", "name"]);
  const code = readString(p, "code", deptCodePattern, 32);
  const name = readString(p, "name", namePattern, 128);
  if (readDepartment(call.state, code) !== undefined) {
    throw new CodedError("CONFLICT", `department ${code} is already registered`, "code");
  }
  const dept: Department = { code, name, status: "active", sinceHeight: call.block.height };
  call.state.set(stateKeys.dept(code), encodeRecord(dept as unknown as Canonical));
  return { code };
};

const setDepartmentStatus: TxHandler = (call) => {
  requireOperatorAdmin(call);
  const p = asMap(call.payload, "payload", ["code", "status"]);
  const code = readString(p, "code", deptCodePattern, 32);
  const status = readEnum(p, "status", ["active", "suspended"] as const);
  const dept = readDepartment(call.state, code);
  if (dept === undefined) throw new CodedError("NOT_FOUND", `department ${code} is not registered`, "code");
  if (code === readChainParams(call.state).operatorDept && status !== "active") {
    throw new CodedError("FORBIDDEN", "the operator department cannot be suspended", "code");
  }
  const next: Department = { ...dept, status };
  call.state.set(stateKeys.dept(code), encodeRecord(next as unknown as Canonical));
  return { code, status };
};

const revokeCertificate: TxHandler = (call) => {
  requireOperatorAdmin(call);
  const p = asMap(call.payload, "payload", ["certId", "reason", "revokedAtMs"]);
  const certId = readString(p, "certId", certIdPattern, 64);
  return recordRevocation(call, stateKeys.revokedCert(certId), p);
};

const revokeIdentity: TxHandler = (call) => {
  requireOperatorAdmin(call);
  const p = asMap(call.payload, "payload", ["enrollmentId", "reason", "revokedAtMs"]);
  const enrollmentId = readString(p, "enrollmentId", enrollmentIdPattern, 64);
  if (enrollmentId === call.sender.enrollmentId) {
    throw new CodedError("FORBIDDEN", "an admin cannot revoke itself", "enrollmentId");
  }
  return recordRevocation(call, stateKeys.revokedIdentity(enrollmentId), p);
};

function recordRevocation(call: TxCall, key: string, p: ReturnType<typeof asMap>): Canonical {
  const reason = readEnum(p, "reason", revocationReasons);
  const revokedAtMs = readInteger(p, "revokedAtMs", 0, Number.MAX_SAFE_INTEGER);
  // Revocation is final: the first record stands, a second is a no-op rather than a rewrite.
  if (readRevocation(call.state, key) !== undefined) return { alreadyRevoked: true };
  call.state.set(key, encodeRecord({ reason, revokedAtMs, height: call.block.height }));
  return { alreadyRevoked: false };
}

const addRoot: TxHandler = (call) => {
  requireOperatorAdmin(call);
  const p = asMap(call.payload, "payload", ["certificate"]);
  const der = readBytes(p, "certificate", 64, 4096);
  const roots = readRoots(call.state);
  if (roots.some((r) => r.length === der.length && r.every((b, i) => b === der[i]))) {
    throw new CodedError("CONFLICT", "root already trusted", "certificate");
  }
  if (roots.length >= 16) throw new CodedError("CONFLICT", "at most 16 trusted roots", "certificate");
  call.state.set(stateKeys.roots, encodeRecord([...roots, der]));
  return { roots: roots.length + 1 };
};

export const configHandlers: ReadonlyArray<[string, TxHandler]> = [
  ["config.dept.register", registerDepartment],
  ["config.dept.status", setDepartmentStatus],
  ["config.cert.revoke", revokeCertificate],
  ["config.identity.revoke", revokeIdentity],
  ["config.root.add", addRoot],
];
