/**
 * Blocks, commit certificates and validator sets.
 *
 *   header = [version, chainId, height, timeMs, prevHash, txRoot, resultsRoot, stateRoot,
 *             validatorsHash, proposer, lastCommitHash]                      (canonical CBOR)
 *   block  = [headerBytes, [txBytes, ...], lastCommit | null]
 *   commit = [height, round, blockHash, [[validatorId, signature], ...]]
 *
 * blockHash = SHA-256("citychain/header/v1" 0x00 || headerBytes). txRoot is the RFC 6962 root over
 * the full transaction bytes (signatures included), resultsRoot over each transaction's result,
 * stateRoot the state tree's root after the block. The commit that finalises block h is stored beside
 * it and repeated in block h+1 as lastCommit, whose hash h+1's header carries, so the chain commits to
 * its own finality signatures.
 */
import { bytesEqual, type Canonical, decodeCanonical, encodeCanonical, toHex, utf8 } from "./encoding.ts";
import { CodedError } from "./errors.ts";
import { sha256, taggedHash, zeroHash } from "./hash.ts";
import { merkleRoot } from "./merkle.ts";
import { isCanonicalP256Signature } from "./signature.ts";
import { chainIdPattern } from "./tx.ts";

export const blockVersion = 1;

export const blockLimits = {
  blockBytesMax: 16 * 1024 * 1024,
  blockTxsMax: 20_000,
  validatorsMax: 256,
} as const;

export interface BlockHeader {
  readonly chainId: string;
  readonly height: number;
  readonly timeMs: number;
  readonly prevHash: Uint8Array;
  readonly txRoot: Uint8Array;
  readonly resultsRoot: Uint8Array;
  readonly stateRoot: Uint8Array;
  readonly validatorsHash: Uint8Array;
  readonly proposer: Uint8Array;
  readonly lastCommitHash: Uint8Array;
}

export interface CommitSignature {
  readonly validatorId: Uint8Array;
  readonly signature: Uint8Array;
}

export interface Commit {
  readonly height: number;
  readonly round: number;
  readonly blockHash: Uint8Array;
  readonly signatures: readonly CommitSignature[];
}

export interface Block {
  readonly header: BlockHeader;
  readonly headerBytes: Uint8Array;
  readonly hash: Uint8Array;
  readonly txs: readonly Uint8Array[];
  readonly lastCommit: Commit | null;
}

export interface Validator {
  /** SHA-256 of the validator's SPKI DER public key. */
  readonly id: Uint8Array;
  readonly publicKeySpki: Uint8Array;
  readonly power: number;
  /** Department code that runs the node (informational, part of the hash). */
  readonly dept: string;
}

function malformed(message: string, field?: string): never {
  throw new CodedError("BLOCK_MALFORMED", message, field);
}

function isHash(v: unknown): v is Uint8Array {
  return v instanceof Uint8Array && v.length === 32;
}

export function encodeHeader(h: BlockHeader): Uint8Array {
  return encodeCanonical([
    blockVersion,
    h.chainId,
    h.height,
    h.timeMs,
    h.prevHash,
    h.txRoot,
    h.resultsRoot,
    h.stateRoot,
    h.validatorsHash,
    h.proposer,
    h.lastCommitHash,
  ]);
}

export function decodeHeader(bytes: Uint8Array): BlockHeader {
  const raw = decodeCanonical(bytes, 4096);
  if (!Array.isArray(raw) || raw.length !== 11) malformed("header must be an 11-element array");
  const [
    v,
    chainId,
    height,
    timeMs,
    prevHash,
    txRoot,
    resultsRoot,
    stateRoot,
    validatorsHash,
    proposer,
    lch,
  ] = raw as Canonical[];
  if (v !== blockVersion) malformed(`unsupported block version ${String(v)}`, "version");
  if (typeof chainId !== "string" || !chainIdPattern.test(chainId)) malformed("bad chainId", "chainId");
  if (!Number.isSafeInteger(height) || (height as number) < 0) malformed("bad height", "height");
  if (!Number.isSafeInteger(timeMs) || (timeMs as number) < 0) malformed("bad timeMs", "timeMs");
  for (const [name, value] of Object.entries({
    prevHash,
    txRoot,
    resultsRoot,
    stateRoot,
    validatorsHash,
    proposer,
  })) {
    if (!isHash(value)) malformed(`${name} must be 32 bytes`, name);
  }
  if (!isHash(lch)) malformed("lastCommitHash must be 32 bytes", "lastCommitHash");
  return {
    chainId,
    height: height as number,
    timeMs: timeMs as number,
    prevHash: prevHash as Uint8Array,
    txRoot: txRoot as Uint8Array,
    resultsRoot: resultsRoot as Uint8Array,
    stateRoot: stateRoot as Uint8Array,
    validatorsHash: validatorsHash as Uint8Array,
    proposer: proposer as Uint8Array,
    lastCommitHash: lch,
  };
}

export function blockHashOf(headerBytes: Uint8Array): Uint8Array {
  return taggedHash("citychain/header/v1", headerBytes);
}

export function makeBlock(header: BlockHeader, txs: readonly Uint8Array[], lastCommit: Commit | null): Block {
  const headerBytes = encodeHeader(header);
  return { header, headerBytes, hash: blockHashOf(headerBytes), txs, lastCommit };
}

export function encodeBlock(block: Block): Uint8Array {
  return encodeCanonical([
    block.headerBytes,
    block.txs as Uint8Array[],
    block.lastCommit === null ? null : commitToCanonical(block.lastCommit),
  ]);
}

export function decodeBlock(bytes: Uint8Array, blockBytesMax: number = blockLimits.blockBytesMax): Block {
  const raw = decodeCanonical(bytes, blockBytesMax);
  if (!Array.isArray(raw) || raw.length !== 3) malformed("block must be [header, txs, lastCommit]");
  const [headerBytes, txs, lastCommit] = raw as Canonical[];
  if (!(headerBytes instanceof Uint8Array)) malformed("header must be bytes", "header");
  if (!Array.isArray(txs) || txs.length > blockLimits.blockTxsMax) malformed("bad txs", "txs");
  for (const tx of txs as Canonical[]) if (!(tx instanceof Uint8Array)) malformed("tx must be bytes", "txs");
  const header = decodeHeader(headerBytes);
  return {
    header,
    headerBytes,
    hash: blockHashOf(headerBytes),
    txs: txs as Uint8Array[],
    lastCommit: lastCommit === null ? null : commitFromCanonical(lastCommit as Canonical),
  };
}

export function txRootOf(txs: readonly Uint8Array[]): Uint8Array {
  return merkleRoot(txs);
}

// ---- commits and votes ----

export const voteTypePrecommit = 2;

/** The bytes a validator signs for a precommit; the consensus issue adds prevote and proposal kinds. */
export function voteSigningBytes(
  chainId: string,
  type: number,
  height: number,
  round: number,
  blockHash: Uint8Array,
) {
  return encodeCanonical(["citychain/vote/v1", chainId, type, height, round, blockHash]);
}

export function commitToCanonical(c: Commit): Canonical {
  return [c.height, c.round, c.blockHash, c.signatures.map((s) => [s.validatorId, s.signature])];
}

export function encodeCommit(c: Commit): Uint8Array {
  return encodeCanonical(commitToCanonical(c));
}

export function commitHash(c: Commit | null): Uint8Array {
  return c === null ? zeroHash : taggedHash("citychain/commit/v1", encodeCommit(c));
}

export function commitFromCanonical(raw: Canonical): Commit {
  if (!Array.isArray(raw) || raw.length !== 4)
    malformed("commit must be [height, round, blockHash, sigs]", "commit");
  const [height, round, blockHash, sigs] = raw as Canonical[];
  if (!Number.isSafeInteger(height) || (height as number) < 0)
    malformed("bad commit height", "commit.height");
  if (!Number.isSafeInteger(round) || (round as number) < 0) malformed("bad commit round", "commit.round");
  if (!isHash(blockHash)) malformed("bad commit blockHash", "commit.blockHash");
  if (!Array.isArray(sigs) || sigs.length > blockLimits.validatorsMax)
    malformed("bad commit signatures", "commit");
  const signatures = (sigs as Canonical[]).map((s) => {
    if (!Array.isArray(s) || s.length !== 2) malformed("commit signature must be [id, sig]", "commit");
    const [validatorId, signature] = s as Canonical[];
    if (!isHash(validatorId)) malformed("bad validator id", "commit");
    if (!(signature instanceof Uint8Array) || !isCanonicalP256Signature(signature)) {
      malformed("bad commit signature", "commit");
    }
    return { validatorId, signature };
  });
  return { height: height as number, round: round as number, blockHash, signatures };
}

export function decodeCommit(bytes: Uint8Array): Commit {
  return commitFromCanonical(decodeCanonical(bytes, 64 * 1024));
}

// ---- validator sets ----

export function validatorIdOf(publicKeySpki: Uint8Array): Uint8Array {
  return sha256(publicKeySpki);
}

export function validatorsToCanonical(validators: readonly Validator[]): Canonical {
  return validators.map((v) => [v.id, v.publicKeySpki, v.power, v.dept]);
}

export function validatorsHashOf(validators: readonly Validator[]): Uint8Array {
  return taggedHash("citychain/validators/v1", encodeCanonical(validatorsToCanonical(validators)));
}

export function totalPower(validators: readonly Validator[]): number {
  return validators.reduce((sum, v) => sum + v.power, 0);
}

export function findValidator(validators: readonly Validator[], id: Uint8Array): Validator | undefined {
  return validators.find((v) => bytesEqual(v.id, id));
}

export function blockId(block: Pick<Block, "hash">): string {
  return toHex(block.hash);
}

export const genesisTag = utf8("citychain/genesis/v1");
