/**
 * Consensus messages and the exact bytes that are signed (consensus-critical).
 *
 *   vote sign bytes     = ["citychain/vote/v1", chainId, type, height, round, blockHash | h'']
 *   proposal sign bytes = ["citychain/proposal/v1", chainId, height, round, polRound, blockHash]
 *
 * Votes reuse `voteSigningBytes` from block.ts, so a precommit signature is exactly what a commit
 * certificate carries and a block's lastCommit can be checked with the same code. A nil vote signs an
 * empty byte string in place of the hash (never 32 zero bytes, which could be a real hash).
 *
 * Wire messages (canonical CBOR, first element the kind):
 *
 *   proposal = [1, chainId, height, round, polRound, blockHash, proposer, signature, blockBytes]
 *   vote     = [2, type, height, round, blockHash | null, validatorId, signature]
 *   decision = [3, height, blockBytes, commit]          (catch-up: a block with its commit)
 *
 * Decoding is strict: every field is range-checked and the whole message is size-limited before it
 * is parsed, so a peer cannot make a node allocate more than `consensusLimits` allows.
 */
import {
  blockLimits,
  type Commit,
  commitFromCanonical,
  commitToCanonical,
  voteTypePrecommit as commitVoteType,
  voteSigningBytes,
} from "../block.ts";
import { bytesEqual, type Canonical, decodeCanonical, encodeCanonical, toHex } from "../encoding.ts";
import { CodedError } from "../errors.ts";
import { isCanonicalP256Signature } from "../signature.ts";
import { chainIdPattern } from "../tx.ts";

export const voteTypePrevote = 1;
/** The same constant commits use: a commit's signatures are precommit signatures. */
export const voteTypePrecommit = commitVoteType;
export type VoteType = typeof voteTypePrevote | typeof voteTypePrecommit;

export const hashBytes = 32;

export const consensusLimits = {
  /** Rounds above this are refused on the wire: far beyond any real run (timeouts grow per round). */
  roundMax: 1_000_000,
  /** A vote message is ~150 bytes; the slack covers encoding widths. */
  voteMessageBytesMax: 256,
  /** A proposal message is its fields (~250 bytes) plus the block it carries. */
  proposalFieldsBytesMax: 512,
  blockBytesMax: blockLimits.blockBytesMax,
  /** A decision carries a commit of at most validatorsMax signatures (~110 bytes each). */
  commitBytesMax: 64 * 1024,
} as const;

export interface Proposal {
  readonly chainId: string;
  readonly height: number;
  readonly round: number;
  /** The round of the polka that justifies re-proposing a value (validRound), -1 for none. */
  readonly polRound: number;
  readonly blockHash: Uint8Array;
  /** Validator id of the proposer. */
  readonly proposer: Uint8Array;
  readonly signature: Uint8Array;
}

export interface Vote {
  readonly type: VoteType;
  readonly height: number;
  readonly round: number;
  /** null is a vote for nil. */
  readonly blockHash: Uint8Array | null;
  readonly validatorId: Uint8Array;
  readonly signature: Uint8Array;
}

export type UnsignedProposal = Omit<Proposal, "signature">;
export type UnsignedVote = Omit<Vote, "signature">;

/** Two signed messages from one validator for the same (height, round, kind) with different values. */
export type Evidence =
  | { readonly kind: "duplicateVote"; readonly first: Vote; readonly second: Vote }
  | { readonly kind: "duplicateProposal"; readonly first: Proposal; readonly second: Proposal };

export type ConsensusMessage =
  | { readonly kind: "proposal"; readonly proposal: Proposal; readonly blockBytes: Uint8Array }
  | { readonly kind: "vote"; readonly vote: Vote }
  | {
      readonly kind: "decision";
      readonly height: number;
      readonly blockBytes: Uint8Array;
      readonly commit: Commit;
    };

const messageKindProposal = 1;
const messageKindVote = 2;
const messageKindDecision = 3;

/** The largest message a node must accept: a proposal or decision with a maximal block. */
export function consensusMessageBytesMax(blockBytesMax: number): number {
  return blockBytesMax + consensusLimits.proposalFieldsBytesMax + consensusLimits.commitBytesMax;
}

// ---- signed bytes ----

export function voteSignBytes(chainId: string, vote: UnsignedVote): Uint8Array {
  return voteSigningBytes(chainId, vote.type, vote.height, vote.round, vote.blockHash ?? new Uint8Array(0));
}

export function proposalSignBytes(proposal: UnsignedProposal): Uint8Array {
  return encodeCanonical([
    "citychain/proposal/v1",
    proposal.chainId,
    proposal.height,
    proposal.round,
    proposal.polRound,
    proposal.blockHash,
  ]);
}

// ---- validation shared by both sides of the wire ----

function malformed(message: string, field: string): never {
  throw new CodedError("BAD_ENCODING", `consensus message: ${message}`, field);
}

function checkHeight(value: unknown, field = "height"): number {
  if (!Number.isSafeInteger(value) || (value as number) < 1)
    malformed("height must be an integer >= 1", field);
  return value as number;
}

function checkRound(value: unknown, field = "round"): number {
  if (!Number.isSafeInteger(value) || (value as number) < 0 || (value as number) > consensusLimits.roundMax) {
    malformed(`round must be an integer in [0, ${consensusLimits.roundMax}]`, field);
  }
  return value as number;
}

function checkHash(value: unknown, field: string): Uint8Array {
  if (!(value instanceof Uint8Array) || value.length !== hashBytes)
    malformed(`${field} must be 32 bytes`, field);
  return value;
}

function checkSignature(value: unknown): Uint8Array {
  if (!(value instanceof Uint8Array) || !isCanonicalP256Signature(value)) {
    malformed("signature must be a 64-byte low-S P-256 signature", "signature");
  }
  return value;
}

function checkBlockBytes(value: unknown, blockBytesMax: number): Uint8Array {
  if (!(value instanceof Uint8Array) || value.length === 0 || value.length > blockBytesMax) {
    malformed(`block must be 1..${blockBytesMax} bytes`, "blockBytes");
  }
  return value;
}

/** Checks a proposal's fields (sender and receiver both call it: a node never sends what it refuses). */
export function checkProposal(p: Proposal): Proposal {
  if (typeof p.chainId !== "string" || !chainIdPattern.test(p.chainId)) malformed("bad chainId", "chainId");
  checkHeight(p.height);
  checkRound(p.round);
  if (!Number.isSafeInteger(p.polRound) || p.polRound < -1 || p.polRound >= p.round) {
    malformed("polRound must be -1 or in [0, round)", "polRound");
  }
  checkHash(p.blockHash, "blockHash");
  checkHash(p.proposer, "proposer");
  checkSignature(p.signature);
  return p;
}

export function checkVote(v: Vote): Vote {
  if (v.type !== voteTypePrevote && v.type !== voteTypePrecommit) malformed("type must be 1 or 2", "type");
  checkHeight(v.height);
  checkRound(v.round);
  if (v.blockHash !== null) checkHash(v.blockHash, "blockHash");
  checkHash(v.validatorId, "validatorId");
  checkSignature(v.signature);
  return v;
}

// ---- wire encoding ----

export function encodeConsensusMessage(message: ConsensusMessage): Uint8Array {
  switch (message.kind) {
    case "proposal":
      return encodeCanonical([...proposalFields(messageKindProposal, message.proposal), message.blockBytes]);
    case "vote": {
      const v = checkVote(message.vote);
      return encodeCanonical([
        messageKindVote,
        v.type,
        v.height,
        v.round,
        v.blockHash,
        v.validatorId,
        v.signature,
      ]);
    }
    case "decision":
      checkHeight(message.height);
      return encodeCanonical([
        messageKindDecision,
        message.height,
        message.blockBytes,
        commitToCanonical(message.commit),
      ]);
  }
}

/** Decodes untrusted bytes; throws BAD_ENCODING (or BLOCK_MALFORMED for a bad commit) on anything off. */
export function decodeConsensusMessage(
  bytes: Uint8Array,
  blockBytesMax: number = consensusLimits.blockBytesMax,
): ConsensusMessage {
  const raw = decodeCanonical(bytes, consensusMessageBytesMax(blockBytesMax));
  if (!Array.isArray(raw) || raw.length === 0) malformed("must be a non-empty array", "kind");
  const fields = raw as readonly Canonical[];
  switch (fields[0]) {
    case messageKindProposal:
      return decodeProposalFields(fields, blockBytesMax);
    case messageKindVote:
      if (bytes.length > consensusLimits.voteMessageBytesMax) malformed("vote message too large", "vote");
      return decodeVoteFields(fields);
    case messageKindDecision:
      return decodeDecisionFields(fields, blockBytesMax);
    default:
      return malformed(`unknown message kind ${String(fields[0])}`, "kind");
  }
}

function decodeProposalFields(fields: readonly Canonical[], blockBytesMax: number): ConsensusMessage {
  if (fields.length !== 9) malformed("proposal must have 9 fields", "proposal");
  return {
    kind: "proposal",
    proposal: proposalFromFields(fields),
    blockBytes: checkBlockBytes(fields[8], blockBytesMax),
  };
}

/** `[kind, chainId, height, round, polRound, blockHash, proposer, signature]`, checked first. */
export function proposalFields(kind: number, proposal: Proposal): Canonical[] {
  const p = checkProposal(proposal);
  return [kind, p.chainId, p.height, p.round, p.polRound, p.blockHash, p.proposer, p.signature];
}

/**
 * A checked proposal from `[kind, chainId, height, round, polRound, blockHash, proposer, signature,
 * ...]` (wire, WAL and evidence).
 */
export function proposalFromFields(fields: readonly Canonical[]): Proposal {
  const [, chainId, height, round, polRound, blockHash, proposer, signature] = fields;
  return checkProposal({
    chainId: chainId as string,
    height: height as number,
    round: round as number,
    polRound: polRound as number,
    blockHash: blockHash as Uint8Array,
    proposer: proposer as Uint8Array,
    signature: signature as Uint8Array,
  });
}

/** A checked vote from `[kind, type, height, round, blockHash, validatorId, signature]` (wire and WAL). */
export function voteFromFields(fields: readonly Canonical[]): Vote {
  const [, type, height, round, blockHash, validatorId, signature] = fields;
  return checkVote({
    type: type as VoteType,
    height: height as number,
    round: round as number,
    blockHash: blockHash as Uint8Array | null,
    validatorId: validatorId as Uint8Array,
    signature: signature as Uint8Array,
  });
}

function decodeVoteFields(fields: readonly Canonical[]): ConsensusMessage {
  if (fields.length !== 7) malformed("vote must have 7 fields", "vote");
  return { kind: "vote", vote: voteFromFields(fields) };
}

function decodeDecisionFields(fields: readonly Canonical[], blockBytesMax: number): ConsensusMessage {
  if (fields.length !== 4) malformed("decision must have 4 fields", "decision");
  const [, height, blockBytes, commit] = fields;
  const h = checkHeight(height);
  const parsed = commitFromCanonical(commit as Canonical);
  if (parsed.height !== h) malformed("commit height differs from decision height", "commit");
  return {
    kind: "decision",
    height: h,
    blockBytes: checkBlockBytes(blockBytes, blockBytesMax),
    commit: parsed,
  };
}

// ---- small helpers used across the consensus code ----

/** A value's key in maps: lower-case hex of the hash, "nil" for a nil vote. */
export function valueKey(blockHash: Uint8Array | null): string {
  return blockHash === null ? "nil" : toHex(blockHash);
}

export function sameValue(a: Uint8Array | null, b: Uint8Array | null): boolean {
  if (a === null || b === null) return a === b;
  return bytesEqual(a, b);
}

// ---- evidence: signed messages without the block, as a transaction carries them ----

/** A proposal without its block: [1, chainId, height, round, polRound, blockHash, proposer, signature]. */
export function encodeSignedProposal(p: Proposal): Uint8Array {
  return encodeCanonical(proposalFields(messageKindProposal, p));
}

export function decodeSignedProposal(bytes: Uint8Array): Proposal {
  const raw = decodeCanonical(bytes, consensusLimits.proposalFieldsBytesMax);
  if (!Array.isArray(raw) || raw.length !== 8 || raw[0] !== messageKindProposal)
    malformed(
      "a signed proposal is [1, chainId, height, round, polRound, blockHash, proposer, signature]",
      "proposal",
    );
  return proposalFromFields(raw as readonly Canonical[]);
}

/** A vote as the wire carries it (at most voteMessageBytesMax bytes). */
export function decodeSignedVote(bytes: Uint8Array): Vote {
  if (bytes.length > consensusLimits.voteMessageBytesMax) malformed("vote message too large", "vote");
  const message = decodeConsensusMessage(bytes);
  if (message.kind !== "vote") malformed("not a vote", "vote");
  return message.vote;
}
