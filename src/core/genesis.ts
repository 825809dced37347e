/**
 * The genesis document: the chain's first configuration, shared by every node as a JSON file.
 * Its canonical hash is the previous-hash of block 0, so nodes that start from different genesis
 * files can never agree on any block.
 */
import { type Block, makeBlock, txRootOf, type Validator, validatorIdOf, validatorsHashOf } from "./block.ts";
import { type Canonical, encodeCanonical } from "./encoding.ts";
import { CodedError } from "./errors.ts";
import { resultsRootOf } from "./execution.ts";
import { taggedHash, zeroHash } from "./hash.ts";
import type { X509Port } from "./identity.ts";
import {
  type ChainParams,
  type Department,
  deptCodePattern,
  encodeRecord,
  encodeValidators,
  stateKeys,
} from "./system-state.ts";
import { chainIdPattern } from "./tx.ts";

export interface GenesisDoc {
  readonly chainId: string;
  readonly genesisTimeMs: number;
  readonly params: ChainParams;
  readonly roots: readonly Uint8Array[];
  readonly departments: ReadonlyArray<{ readonly code: string; readonly name: string }>;
  readonly validators: ReadonlyArray<{ readonly certificate: Uint8Array; readonly power: number }>;
}

export const defaultChainParams = {
  txBytesMax: 128 * 1024,
  blockTxsMax: 10_000,
  blockBytesMax: 4 * 1024 * 1024,
  txTtlMsMax: 24 * 60 * 60 * 1000,
} as const;

export const validatorPowerMax = 1_000_000;

function bad(message: string, field: string): never {
  throw new CodedError("BAD_REQUEST", `genesis: ${message}`, field);
}

export function checkGenesis(doc: GenesisDoc, x509: X509Port): Validator[] {
  if (!chainIdPattern.test(doc.chainId)) bad("bad chainId", "chainId");
  if (doc.params.chainId !== doc.chainId) bad("params.chainId differs from chainId", "params.chainId");
  if (!Number.isSafeInteger(doc.genesisTimeMs) || doc.genesisTimeMs <= 0)
    bad("bad genesis time", "genesisTime");
  if (doc.roots.length === 0) bad("at least one trusted root is required", "roots");
  const codes = new Set<string>();
  for (const d of doc.departments) {
    if (!deptCodePattern.test(d.code)) bad(`bad department code ${d.code}`, "departments");
    if (codes.has(d.code)) bad(`department ${d.code} listed twice`, "departments");
    codes.add(d.code);
  }
  if (!codes.has(doc.params.operatorDept))
    bad("the operator department must be listed", "params.operatorDept");
  if (doc.validators.length === 0) bad("at least one validator is required", "validators");
  const validators = doc.validators.map((v, i): Validator => {
    const cert = x509.parse(v.certificate);
    if (cert.kind !== "node") bad(`validator ${i} certificate is not a node certificate`, `validators[${i}]`);
    if (!codes.has(cert.dept))
      bad(`validator ${i} department ${cert.dept} is not listed`, `validators[${i}]`);
    if (!Number.isSafeInteger(v.power) || v.power < 1 || v.power > validatorPowerMax) {
      bad(`validator ${i} power must be 1..${validatorPowerMax}`, `validators[${i}].power`);
    }
    return {
      id: validatorIdOf(cert.publicKeySpki),
      publicKeySpki: cert.publicKeySpki,
      power: v.power,
      dept: cert.dept,
    };
  });
  return validators;
}

export function genesisHash(doc: GenesisDoc): Uint8Array {
  const canonical: Canonical = [
    doc.chainId,
    doc.genesisTimeMs,
    doc.params as unknown as Canonical,
    doc.roots as Uint8Array[],
    doc.departments.map((d) => [d.code, d.name]),
    doc.validators.map((v) => [v.certificate, v.power]),
  ];
  return taggedHash("citychain/genesis/v1", encodeCanonical(canonical));
}

/** The state every node starts from. */
export function genesisWrites(doc: GenesisDoc, validators: readonly Validator[]): Map<string, Uint8Array> {
  const writes = new Map<string, Uint8Array>();
  writes.set(stateKeys.chainParams, encodeRecord(doc.params as unknown as Canonical));
  writes.set(stateKeys.roots, encodeRecord(doc.roots as Uint8Array[]));
  writes.set(stateKeys.validators, encodeValidators(validators));
  for (const d of doc.departments) {
    const dept: Department = { code: d.code, name: d.name, status: "active", sinceHeight: 0 };
    writes.set(stateKeys.dept(d.code), encodeRecord(dept as unknown as Canonical));
  }
  return writes;
}

/** Block 0: no transactions, the genesis hash as its parent, the genesis state root. */
export function genesisBlock(
  doc: GenesisDoc,
  validators: readonly Validator[],
  stateRoot: Uint8Array,
): Block {
  return makeBlock(
    {
      chainId: doc.chainId,
      height: 0,
      timeMs: doc.genesisTimeMs,
      prevHash: genesisHash(doc),
      txRoot: txRootOf([]),
      resultsRoot: resultsRootOf([]),
      stateRoot,
      validatorsHash: validatorsHashOf(validators),
      proposer: zeroHash,
      lastCommitHash: zeroHash,
    },
    [],
    null,
  );
}
