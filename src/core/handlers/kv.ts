/**
 * Department records: a key-value space per department ("kv/<dept>/<key>"). A department's officers
 * and admins write only their own department's space; everyone registered may read. It is the
 * simplest useful service and the one the benchmarks drive; licenses and contracts build their own.
 */
import { CodedError } from "../errors.ts";
import type { TxHandler } from "../execution.ts";
import { hasRole } from "../identity.ts";
import { asMap, readBytes, readString } from "../payload.ts";
import { stateKeys } from "../system-state.ts";

export const kvKeyPattern = /^[A-Za-z0-9][A-Za-z0-9._:/-]{0,255}$/;
export const kvValueBytesMax = 64 * 1024;

function requireWriter(call: Parameters<TxHandler>[0]): void {
  if (!hasRole(call.sender, "officer", "admin")) {
    throw new CodedError("FORBIDDEN", "writing department records needs the officer or admin role");
  }
}

const put: TxHandler = (call) => {
  requireWriter(call);
  const p = asMap(call.payload, "payload", ["key", "value"]);
  const key = readString(p, "key", kvKeyPattern, 256);
  const value = readBytes(p, "value", 0, kvValueBytesMax);
  call.state.set(stateKeys.kv(call.sender.dept, key), value);
  return { key: stateKeys.kv(call.sender.dept, key) };
};

const remove: TxHandler = (call) => {
  requireWriter(call);
  const p = asMap(call.payload, "payload", ["key"]);
  const key = readString(p, "key", kvKeyPattern, 256);
  const stateKey = stateKeys.kv(call.sender.dept, key);
  if (call.state.get(stateKey) === undefined) throw new CodedError("NOT_FOUND", `no record ${key}`, "key");
  call.state.delete(stateKey);
  return { key: stateKey };
};

export const kvHandlers: ReadonlyArray<[string, TxHandler]> = [
  ["kv.put", put],
  ["kv.delete", remove],
];
