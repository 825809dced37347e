/**
 * Evidence of equivocation, acted on by the ledger: two conflicting signed consensus messages of
 * one validator for the same height and round (two different votes of one type, or two different
 * proposals). Only the validator's own key can make such a pair, so the pair is proof on its own,
 * checked here by every node the same way.
 *
 * The evidence is recorded under sys/evidence/<validator>/<height>/<round>/<what>, and the
 * validator is removed from the set from the next height on when the set-change rules allow it
 * (one change per block, less than a third of the power; docs/spec/consensus.md "Evidence"). When
 * they do not, the record stands and the operator decides.
 *
 * Who may submit: any node identity (nodes report what their driver saw, automatically) or an
 * admin of the operator department (evidence gathered elsewhere).
 */
import { validatorIdOf } from "../block.ts";
import {
  decodeSignedProposal,
  decodeSignedVote,
  type Evidence,
  encodeConsensusMessage,
  encodeSignedProposal,
  type Proposal,
  proposalSignBytes,
  sameValue,
  type Vote,
  voteSignBytes,
} from "../consensus/types.ts";
import { bytesEqual, type Canonical, toHex } from "../encoding.ts";
import { CodedError } from "../errors.ts";
import type { TxCall, TxHandler } from "../execution.ts";
import { hasRole } from "../identity.ts";
import { asMap, readBytes, readEnum } from "../payload.ts";
import { encodeRecord, readChainParams, readRecord, readValidators, stateKeys } from "../system-state.ts";
import { removeValidatorIfAllowed } from "./config.ts";

/** A P-256 SubjectPublicKeyInfo is 91 bytes; the bound leaves room and nothing more. */
const publicKeyBytesMax = 128;
const signedMessageBytesMax = 512;

function requireReporter(call: TxCall): void {
  const { operatorDept } = readChainParams(call.state);
  const node = call.sender.kind === "node" && call.sender.roles.includes("node");
  const operatorAdmin = call.sender.dept === operatorDept && hasRole(call.sender, "admin");
  if (!node && !operatorAdmin) {
    throw new CodedError("FORBIDDEN", `evidence is reported by a node or an admin of ${operatorDept}`);
  }
}

function notEvidence(message: string): never {
  throw new CodedError("PAYLOAD_INVALID", `not evidence: ${message}`, "second");
}

interface Conflict {
  readonly height: number;
  readonly round: number;
  /** "prevote", "precommit" or "proposal". */
  readonly what: string;
}

function voteConflict(call: TxCall, spki: Uint8Array, id: Uint8Array, a: Vote, b: Vote): Conflict {
  if (!bytesEqual(a.validatorId, id) || !bytesEqual(b.validatorId, id))
    notEvidence("the votes are not both by the key given");
  if (a.type !== b.type || a.height !== b.height || a.round !== b.round)
    notEvidence("the votes are for different steps");
  if (sameValue(a.blockHash, b.blockHash)) notEvidence("the votes are for the same value");
  const chainId = call.block.chainId;
  if (
    !call.verify(spki, voteSignBytes(chainId, a), a.signature) ||
    !call.verify(spki, voteSignBytes(chainId, b), b.signature)
  )
    notEvidence("a vote's signature does not verify on this chain");
  return { height: a.height, round: a.round, what: a.type === 1 ? "prevote" : "precommit" };
}

function proposalConflict(
  call: TxCall,
  spki: Uint8Array,
  id: Uint8Array,
  a: Proposal,
  b: Proposal,
): Conflict {
  if (!bytesEqual(a.proposer, id) || !bytesEqual(b.proposer, id))
    notEvidence("the proposals are not both by the key given");
  if (a.chainId !== call.block.chainId || b.chainId !== call.block.chainId)
    notEvidence("a proposal is for another chain");
  if (a.height !== b.height || a.round !== b.round) notEvidence("the proposals are for different rounds");
  if (bytesEqual(proposalSignBytes(a), proposalSignBytes(b))) notEvidence("the proposals are the same");
  if (
    !call.verify(spki, proposalSignBytes(a), a.signature) ||
    !call.verify(spki, proposalSignBytes(b), b.signature)
  )
    notEvidence("a proposal's signature does not verify");
  return { height: a.height, round: a.round, what: "proposal" };
}

const reportEvidence: TxHandler = (call) => {
  requireReporter(call);
  const p = asMap(call.payload, "payload", ["kind", "publicKey", "first", "second"]);
  const kind = readEnum(p, "kind", ["vote", "proposal"] as const);
  const spki = readBytes(p, "publicKey", 32, publicKeyBytesMax);
  const first = readBytes(p, "first", 1, signedMessageBytesMax);
  const second = readBytes(p, "second", 1, signedMessageBytesMax);
  const id = validatorIdOf(spki);
  const conflict =
    kind === "vote"
      ? voteConflict(call, spki, id, decodeSignedVote(first), decodeSignedVote(second))
      : proposalConflict(call, spki, id, decodeSignedProposal(first), decodeSignedProposal(second));
  if (conflict.height > call.block.height) notEvidence("it is about a height not reached yet");
  const validator = readValidators(call.state).find((v) => bytesEqual(v.id, id));
  if (validator === undefined)
    throw new CodedError("NOT_FOUND", "the key is not a validator (any more)", "publicKey");
  const key = stateKeys.evidence(toHex(id), conflict.height, conflict.round, conflict.what);
  if (readRecord(call.state, key) !== undefined)
    throw new CodedError("CONFLICT", "this evidence is recorded already");
  const removal = removeValidatorIfAllowed(call, id);
  const record: Canonical = {
    kind,
    first,
    second,
    reportedBy: call.sender.enrollmentId,
    recordedAtHeight: call.block.height,
    removed: removal === null,
  };
  call.state.set(key, encodeRecord(record));
  return {
    validatorId: toHex(id),
    dept: validator.dept,
    height: conflict.height,
    round: conflict.round,
    what: conflict.what,
    removed: removal === null,
    ...(removal === null ? {} : { notRemoved: removal }),
  };
};

/** The `consensus.evidence` payload for what a driver reported, given the validator's public key. */
export function evidencePayload(evidence: Evidence, publicKeySpki: Uint8Array): Canonical {
  return evidence.kind === "duplicateVote"
    ? {
        kind: "vote",
        publicKey: publicKeySpki,
        first: encodeConsensusMessage({ kind: "vote", vote: evidence.first }),
        second: encodeConsensusMessage({ kind: "vote", vote: evidence.second }),
      }
    : {
        kind: "proposal",
        publicKey: publicKeySpki,
        first: encodeSignedProposal(evidence.first),
        second: encodeSignedProposal(evidence.second),
      };
}

export const evidenceHandlers: ReadonlyArray<[string, TxHandler]> = [["consensus.evidence", reportEvidence]];
