/**
 * Configuration transactions: the ledger's record of trusted roots, departments and revocations.
 * Only an admin of the operator department (the information center) may sign them; the consensus
 * issue adds multi-department governance on top of the same records.
 */
import { blockLimits, totalPower, type Validator, validatorIdOf } from "../block.ts";
import { bytesEqual, type Canonical, fromHex, toHex } from "../encoding.ts";
import { CodedError } from "../errors.ts";
import type { TxCall, TxHandler } from "../execution.ts";
import { validatorPowerMax } from "../genesis.ts";
import { hasRole } from "../identity.ts";
import { asMap, readBytes, readEnum, readInteger, readString } from "../payload.ts";
import {
  certIdPattern,
  type Department,
  deptCodePattern,
  encodeRecord,
  encodeValidators,
  enrollmentIdPattern,
  readChainParams,
  readDepartment,
  readRecord,
  readRevocation,
  readRoots,
  readValidators,
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

/**
 * A new trusted root can mint any identity, so it needs the same approval as a validator change:
 * departments holding more than two thirds of the voting power co-sign.
 */
const addRoot: TxHandler = (call) => {
  requireOperatorAdmin(call);
  requireApprovals(call, readValidators(call.state), "adding a trusted root");
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

// ---- validator set ----
//
// A change in block h takes effect at height h + 1: block h + 1 is voted on by the new set, and its
// header's validatorsHash names it. It is approved by departments holding > 2/3 of the current
// power (requireApprovals). Two rules keep every change safe to make while the chain runs:
//  - one change per block, so each height's set differs from the last by one validator;
//  - a change moves less than a third of the current total voting power, so more than a third of
//    the old power is still behind any quorum of the new set: a client that trusts the old set can
//    follow the change (docs/spec/consensus.md, "Validator set changes"), and adding a validator
//    that is not running yet cannot by itself stop the chain.

/**
 * Removes a validator proven to have equivocated (./evidence.ts) if the rules allow it now: returns
 * null when removed, else why not (the evidence is recorded either way).
 */
export function removeValidatorIfAllowed(call: TxCall, id: Uint8Array): string | null {
  if (readRecord(call.state, stateKeys.validatorsChangedAt) === call.block.height)
    return "the validator set already changed in this block";
  const current = readValidators(call.state);
  const at = current.findIndex((v) => bytesEqual(v.id, id));
  if (at < 0) return "not a validator";
  if (current[at]!.power * 3 >= totalPower(current)) return "its power is a third of the total or more";
  writeValidators(
    call,
    current.filter((_, i) => i !== at),
  );
  return null;
}

/** The one-third rule, in integers: 3 x the power moved < the current total. */
function checkPowerMoved(moved: number, total: number): void {
  if (moved * 3 >= total) {
    throw new CodedError(
      "FORBIDDEN",
      `a validator change may move less than a third of the voting power (${moved} of ${total}); change it in steps`,
      "power",
    );
  }
}

const validatorIdPattern = /^[0-9a-f]{64}$/;

/**
 * Who decides who decides: a change needs, beside the operator admin who sends it, the approval of
 * departments that hold more than two thirds of the current voting power, given as co-signatures
 * by admins of those departments (the envelope carries several signatures). So no single key, not
 * even the operator's, can move the set; only as many departments as could rewrite the chain
 * anyway.
 */
function requireApprovals(call: TxCall, current: readonly Validator[], what = "a validator change"): void {
  const approving = new Set(call.signers.filter((s) => hasRole(s, "admin")).map((s) => s.dept));
  let approved = 0;
  for (const v of current) if (approving.has(v.dept)) approved += v.power;
  const total = totalPower(current);
  if (approved * 3 <= total * 2) {
    const missing = [...new Set(current.filter((v) => !approving.has(v.dept)).map((v) => v.dept))];
    throw new CodedError(
      "FORBIDDEN",
      `${what} needs admins of departments holding more than 2/3 of the voting power to sign (${approved} of ${total} signed; not yet: ${missing.join(", ")})`,
      "signatures",
    );
  }
}

function requireOneChangePerBlock(call: TxCall): void {
  const at = readRecord(call.state, stateKeys.validatorsChangedAt);
  if (at === call.block.height) {
    throw new CodedError(
      "CONFLICT",
      "the validator set already changed in this block; submit again",
      "power",
    );
  }
}

function writeValidators(call: TxCall, validators: readonly Validator[]): void {
  call.state.set(stateKeys.validators, encodeValidators(validators));
  call.state.set(stateKeys.validatorsChangedAt, encodeRecord(call.block.height));
}

/** Adds a node as a validator, or changes a validator's voting power, from the next height on. */
const setValidator: TxHandler = (call) => {
  requireOperatorAdmin(call);
  const p = asMap(call.payload, "payload", ["certificate", "power"]);
  const der = readBytes(p, "certificate", 64, 4096);
  const power = readInteger(p, "power", 1, validatorPowerMax);
  const node = call.identityOf(der);
  if (node.kind !== "node" || !node.roles.includes("node")) {
    throw new CodedError("FORBIDDEN", "only a node certificate can be a validator", "certificate");
  }
  requireOneChangePerBlock(call);
  const current = readValidators(call.state);
  requireApprovals(call, current);
  const id = validatorIdOf(node.publicKeySpki);
  const at = current.findIndex((v) => bytesEqual(v.id, id));
  const before = at < 0 ? 0 : current[at]!.power;
  if (before === power) throw new CodedError("CONFLICT", `validator already has power ${power}`, "power");
  checkPowerMoved(Math.abs(power - before), totalPower(current));
  const updated: Validator = { id, publicKeySpki: node.publicKeySpki, power, dept: node.dept };
  const next = at < 0 ? [...current, updated] : current.map((v, i) => (i === at ? updated : v));
  if (next.length > blockLimits.validatorsMax) {
    throw new CodedError("CONFLICT", `at most ${blockLimits.validatorsMax} validators`, "certificate");
  }
  writeValidators(call, next);
  return { validatorId: toHex(id), power, validators: next.length, totalPower: totalPower(next) };
};

/**
 * Removes a validator from the next height on. By id, not certificate: a node whose certificate was
 * revoked or has expired must still be removable.
 */
const removeValidator: TxHandler = (call) => {
  requireOperatorAdmin(call);
  const p = asMap(call.payload, "payload", ["validatorId"]);
  const id = fromHex(readString(p, "validatorId", validatorIdPattern, 64));
  requireOneChangePerBlock(call);
  const current = readValidators(call.state);
  const at = current.findIndex((v) => bytesEqual(v.id, id));
  if (at < 0) throw new CodedError("NOT_FOUND", "no such validator", "validatorId");
  requireApprovals(call, current);
  checkPowerMoved(current[at]!.power, totalPower(current));
  const next = current.filter((_, i) => i !== at);
  writeValidators(call, next);
  return { validatorId: toHex(id), validators: next.length, totalPower: totalPower(next) };
};

export const configHandlers: ReadonlyArray<[string, TxHandler]> = [
  ["config.validator.set", setValidator],
  ["config.validator.remove", removeValidator],
  ["config.dept.register", registerDepartment],
  ["config.dept.status", setDepartmentStatus],
  ["config.cert.revoke", revokeCertificate],
  ["config.identity.revoke", revokeIdentity],
  ["config.root.add", addRoot],
];
