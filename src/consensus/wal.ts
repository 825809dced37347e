/**
 * Records of the consensus write-ahead log and their canonical bytes.
 *
 *   block    = [1, height, blockHash, blockBytes]     (the value of an own proposal or precommit)
 *   proposal = [2, chainId, height, round, polRound, blockHash, proposer, signature]
 *   vote     = [3, type, height, round, blockHash | null, validatorId, signature]
 *
 * Only what this node signed is logged (and the blocks those messages name, so that after a restart
 * the node can still re-propose its locked value). What others sent is not: peers re-send it.
 */

import {
  checkVote,
  consensusLimits,
  type Proposal,
  proposalFields,
  proposalFromFields,
  type Vote,
  voteFromFields,
} from "../core/consensus/types.ts";
import { type Canonical, decodeCanonical, encodeCanonical } from "../core/encoding.ts";
import { CodedError } from "../core/errors.ts";

export type WalRecord =
  | {
      readonly kind: "block";
      readonly height: number;
      readonly blockHash: Uint8Array;
      readonly blockBytes: Uint8Array;
    }
  | { readonly kind: "proposal"; readonly proposal: Proposal }
  | { readonly kind: "vote"; readonly vote: Vote };

export function walRecordHeight(record: WalRecord): number {
  switch (record.kind) {
    case "block":
      return record.height;
    case "proposal":
      return record.proposal.height;
    case "vote":
      return record.vote.height;
  }
}

export function encodeWalRecord(record: WalRecord): Uint8Array {
  switch (record.kind) {
    case "block":
      return encodeCanonical([1, record.height, record.blockHash, record.blockBytes]);
    case "proposal":
      return encodeCanonical(proposalFields(2, record.proposal));
    case "vote": {
      const v = checkVote(record.vote);
      return encodeCanonical([3, v.type, v.height, v.round, v.blockHash, v.validatorId, v.signature]);
    }
  }
}

function corrupt(message: string): never {
  throw new CodedError("STORAGE_CORRUPT", `consensus WAL: ${message}`);
}

export function decodeWalRecord(
  bytes: Uint8Array,
  blockBytesMax: number = consensusLimits.blockBytesMax,
): WalRecord {
  const raw = decodeCanonical(bytes, blockBytesMax + 1024);
  if (!Array.isArray(raw) || raw.length === 0) corrupt("record is not an array");
  const f = raw as readonly Canonical[];
  switch (f[0]) {
    case 1: {
      const [, height, blockHash, blockBytes] = f;
      if (
        !Number.isSafeInteger(height) ||
        !(blockHash instanceof Uint8Array) ||
        !(blockBytes instanceof Uint8Array)
      ) {
        corrupt("bad block record");
      }
      return { kind: "block", height: height as number, blockHash, blockBytes };
    }
    case 2:
      return { kind: "proposal", proposal: proposalFromFields(f) };
    case 3:
      return { kind: "vote", vote: voteFromFields(f) };
    default:
      return corrupt(`unknown record kind ${String(f[0])}`);
  }
}
