/** genesis.json: the human-readable form of the genesis document (PEM certificates, RFC 3339 time). */
import crypto from "node:crypto";
import fs from "node:fs";
import { CodedError } from "../core/errors.ts";
import { defaultChainParams, type GenesisDoc } from "../core/genesis.ts";

export interface GenesisFile {
  chainId: string;
  genesisTime: string;
  operatorDept: string;
  params?: Partial<typeof defaultChainParams>;
  roots: string[];
  departments: Array<{ code: string; name: string }>;
  validators: Array<{ certificate: string; power: number }>;
}

function bad(message: string, field: string): never {
  throw new CodedError("BAD_REQUEST", `genesis.json: ${message}`, field);
}

function pemToDer(pem: unknown, field: string): Uint8Array {
  if (typeof pem !== "string") bad("certificate must be a PEM string", field);
  try {
    return new Uint8Array(new crypto.X509Certificate(pem).raw);
  } catch {
    return bad("certificate is not valid PEM", field);
  }
}

export function genesisFromFile(file: GenesisFile): GenesisDoc {
  if (typeof file !== "object" || file === null) bad("must be an object", "");
  const timeMs = Date.parse(file.genesisTime);
  if (typeof file.genesisTime !== "string" || !Number.isFinite(timeMs))
    bad("genesisTime must be RFC 3339", "genesisTime");
  if (!Array.isArray(file.roots)) bad("roots must be a list", "roots");
  if (!Array.isArray(file.departments)) bad("departments must be a list", "departments");
  if (!Array.isArray(file.validators)) bad("validators must be a list", "validators");
  const params = { ...defaultChainParams, ...(file.params ?? {}) };
  for (const [k, v] of Object.entries(params)) {
    if (!Number.isSafeInteger(v) || (v as number) <= 0)
      bad(`params.${k} must be a positive integer`, `params.${k}`);
  }
  return {
    chainId: file.chainId,
    genesisTimeMs: timeMs,
    params: { chainId: file.chainId, operatorDept: file.operatorDept, ...params },
    roots: file.roots.map((r, i) => pemToDer(r, `roots[${i}]`)),
    departments: file.departments.map((d, i) => {
      if (typeof d?.code !== "string" || typeof d?.name !== "string")
        bad("department needs code and name", `departments[${i}]`);
      return { code: d.code, name: d.name };
    }),
    validators: file.validators.map((v, i) => ({
      certificate: pemToDer(v?.certificate, `validators[${i}].certificate`),
      power: v?.power,
    })),
  };
}

export function readGenesisFile(path: string): GenesisDoc {
  let parsed: GenesisFile;
  try {
    parsed = JSON.parse(fs.readFileSync(path, "utf8")) as GenesisFile;
  } catch (error) {
    throw new CodedError("BAD_REQUEST", `cannot read genesis file ${path}: ${(error as Error).message}`);
  }
  return genesisFromFile(parsed);
}
