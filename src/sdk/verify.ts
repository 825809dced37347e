/**
 * Offline verification of what a node returns, so a client trusts the validators, not the node it
 * asked: a header is final when validators holding more than 2/3 of the voting power signed a
 * precommit for its hash; a state value is genuine when its proof leads to that header's state root.
 */
import {
  type BlockHeader,
  blockHashOf,
  type Commit,
  decodeHeader,
  totalPower,
  type Validator,
  validatorsHashOf,
  voteSigningBytes,
  voteTypePrecommit,
} from "../core/block.ts";
import { bytesEqual, fromBase64, fromHex, toHex, utf8 } from "../core/encoding.ts";
import { sha256 } from "../core/hash.ts";
import { isCanonicalP256Signature } from "../core/signature.ts";
import { proofFromJson, verifyProof } from "../core/smt-proof.ts";
import { decodeValidators, stateKeys } from "../core/system-state.ts";
import type { CommitJson, HeaderJson } from "../core/views.ts";

export class VerificationError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "VerificationError";
  }
}

export interface ValidatorJson {
  id: string;
  publicKey: string;
  power: number;
  dept: string;
}

export function validatorsFromJson(list: readonly ValidatorJson[]): Validator[] {
  return list.map((v) => ({
    id: fromHex(v.id),
    publicKeySpki: fromBase64(v.publicKey),
    power: v.power,
    dept: v.dept,
  }));
}

async function verifyP256(spki: Uint8Array, message: Uint8Array, signature: Uint8Array): Promise<boolean> {
  if (!isCanonicalP256Signature(signature)) return false;
  try {
    const key = await globalThis.crypto.subtle.importKey(
      "spki",
      spki as Uint8Array<ArrayBuffer>,
      { name: "ECDSA", namedCurve: "P-256" },
      false,
      ["verify"],
    );
    return await globalThis.crypto.subtle.verify(
      { name: "ECDSA", hash: "SHA-256" },
      key,
      signature as Uint8Array<ArrayBuffer>,
      message as Uint8Array<ArrayBuffer>,
    );
  } catch {
    return false;
  }
}

/** Checks header bytes against the claimed hash and a commit by > 2/3 of `validators`' power. */
export async function verifyCommittedHeader(
  header: HeaderJson,
  commit: CommitJson | null,
  validators: readonly Validator[],
): Promise<BlockHeader> {
  const headerBytes = fromBase64(header.headerBytes, "headerBytes");
  if (toHex(blockHashOf(headerBytes)) !== header.hash)
    throw new VerificationError("header bytes do not hash to the claimed block hash");
  return verifyCommittedHeaderBytes(headerBytes, commit === null ? null : commitFromJson(commit), validators);
}

function commitFromJson(commit: CommitJson): Commit {
  try {
    return {
      height: commit.height,
      round: commit.round,
      blockHash: fromHex(commit.blockHash, "commit.blockHash"),
      signatures: commit.signatures.map((s) => ({
        validatorId: fromHex(s.validatorId, "validatorId"),
        signature: fromBase64(s.signature, "signature"),
      })),
    };
  } catch {
    throw new VerificationError("commit is malformed");
  }
}

/**
 * Checks a header given as its bytes (the block hash is computed from them) against a commit by
 * > 2/3 of `validators`' power. The binary proof answers carry headers and commits this way.
 */
export async function verifyCommittedHeaderBytes(
  headerBytes: Uint8Array,
  commit: Commit | null,
  validators: readonly Validator[],
): Promise<BlockHeader> {
  const hash = blockHashOf(headerBytes);
  const decoded = decodeHeader(headerBytes);
  if (!bytesEqual(decoded.validatorsHash, validatorsHashOf(validators))) {
    throw new VerificationError("the block was made by a different validator set than the one trusted");
  }
  if (commit === null) throw new VerificationError("no commit certificate for this block");
  if (!bytesEqual(commit.blockHash, hash) || commit.height !== decoded.height) {
    throw new VerificationError("commit is for another block");
  }
  const message = voteSigningBytes(decoded.chainId, voteTypePrecommit, decoded.height, commit.round, hash);
  const counted = new Set<string>();
  let power = 0;
  for (const s of commit.signatures) {
    const id = toHex(s.validatorId);
    const v = validators.find((x) => bytesEqual(x.id, s.validatorId));
    if (v === undefined || counted.has(id)) continue;
    if (await verifyP256(v.publicKeySpki, message, s.signature)) {
      counted.add(id);
      power += v.power;
    }
  }
  if (power * 3 <= totalPower(validators) * 2) {
    throw new VerificationError(
      `commit signatures hold ${power} of ${totalPower(validators)} voting power, not > 2/3`,
    );
  }
  return decoded;
}

export interface StateResponse {
  key: string;
  value: string | null;
  height: number;
  proof: unknown;
  header: HeaderJson;
  commit: CommitJson | null;
  validators: ValidatorJson[];
}

/** Verifies a /v1/state answer end to end; returns the value (null when the key is absent). */
export async function verifyStateResponse(
  response: StateResponse,
  trustedValidators: readonly Validator[],
): Promise<Uint8Array | null> {
  const header = await verifyCommittedHeader(response.header, response.commit, trustedValidators);
  const value = response.value === null ? null : fromBase64(response.value, "value");
  let proof: ReturnType<typeof proofFromJson>;
  try {
    proof = proofFromJson(response.proof);
  } catch {
    throw new VerificationError("proof is malformed");
  }
  if (!verifyProof(header.stateRoot, utf8(response.key), value, proof, (data) => sha256(data))) {
    throw new VerificationError(
      `proof for ${response.key} does not lead to the state root of block ${header.height}`,
    );
  }
  return value;
}

/** One change of the validator set as GET /v1/validators lists it. */
export interface ValidatorChangeJson {
  height: number;
  validators: ValidatorJson[];
  /** base64 of the canonical validator list: the value proven at sys/validators. */
  value: string;
  proof: unknown;
  /** Block height - 1, which made the change, and its commit by the set before the change. */
  header: HeaderJson;
  commit: CommitJson | null;
}

export interface ValidatorsJson {
  height: number;
  next: { height: number; validators: ValidatorJson[] };
  changes: ValidatorChangeJson[];
  more: boolean;
}

/** The set trusted from `height` on (it voted on block `height` and later, until the next change). */
export interface TrustedValidatorSet {
  readonly height: number;
  readonly validators: readonly Validator[];
}

/**
 * Moves trust along the chain's validator changes without trusting the node that listed them: each
 * change's block (height - 1) must be committed by the set trusted so far, and its state root must
 * hold the new list at sys/validators. Changes at or before `trusted.height` are skipped; changes
 * after `untilHeight` are not applied. Each change moves less than a third of the power (the chain
 * refuses more), so following them one by one never skips a step.
 */
export async function followValidatorChanges(
  trusted: TrustedValidatorSet,
  changes: readonly ValidatorChangeJson[],
  untilHeight = Number.MAX_SAFE_INTEGER,
): Promise<TrustedValidatorSet> {
  let current = trusted;
  for (const change of changes) {
    if (change.height <= current.height) continue;
    if (change.height > untilHeight) break;
    const header = await verifyCommittedHeader(change.header, change.commit, current.validators);
    if (header.height !== change.height - 1) {
      throw new VerificationError(`validator change at ${change.height} comes with block ${header.height}`);
    }
    const value = fromBase64(change.value, "value");
    let proof: ReturnType<typeof proofFromJson>;
    try {
      proof = proofFromJson(change.proof);
    } catch {
      throw new VerificationError(`validator change at ${change.height}: proof is malformed`);
    }
    if (!verifyProof(header.stateRoot, utf8(stateKeys.validators), value, proof)) {
      throw new VerificationError(
        `validator change at ${change.height}: proof does not lead to the state root of block ${header.height}`,
      );
    }
    let validators: readonly Validator[];
    try {
      validators = decodeValidators(value);
    } catch {
      throw new VerificationError(`validator change at ${change.height}: the list does not decode`);
    }
    current = { height: change.height, validators };
  }
  return current;
}

/** The validators hash a header names (to see whether a trusted set signed it); bytes or their base64. */
export function headerValidatorsHash(headerBytes: string | Uint8Array): Uint8Array {
  const bytes = typeof headerBytes === "string" ? fromBase64(headerBytes, "headerBytes") : headerBytes;
  return decodeHeader(bytes).validatorsHash;
}

export function sameValidators(validators: readonly Validator[], hash: Uint8Array): boolean {
  return bytesEqual(validatorsHashOf(validators), hash);
}
