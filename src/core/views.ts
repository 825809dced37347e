/**
 * JSON views of consensus structures for the HTTP API. Hashes and ids are lower-case hex, bytes
 * base64, times RFC 3339 UTC plus integer milliseconds. Each view also carries the exact encoded
 * bytes, so a client verifies hashes and signatures over those bytes, never over re-serialised JSON.
 */
import type { Block, BlockHeader, Commit } from "./block.ts";
import { type Canonical, toBase64, toHex } from "./encoding.ts";

export interface HeaderJson {
  chainId: string;
  height: number;
  time: string;
  timeMs: number;
  hash: string;
  prevHash: string;
  txRoot: string;
  resultsRoot: string;
  stateRoot: string;
  validatorsHash: string;
  proposer: string;
  lastCommitHash: string;
  headerBytes: string;
}

export interface CommitJson {
  height: number;
  round: number;
  blockHash: string;
  signatures: Array<{ validatorId: string; signature: string }>;
}

export function headerToJson(header: BlockHeader, hash: Uint8Array, headerBytes: Uint8Array): HeaderJson {
  return {
    chainId: header.chainId,
    height: header.height,
    time: new Date(header.timeMs).toISOString(),
    timeMs: header.timeMs,
    hash: toHex(hash),
    prevHash: toHex(header.prevHash),
    txRoot: toHex(header.txRoot),
    resultsRoot: toHex(header.resultsRoot),
    stateRoot: toHex(header.stateRoot),
    validatorsHash: toHex(header.validatorsHash),
    proposer: toHex(header.proposer),
    lastCommitHash: toHex(header.lastCommitHash),
    headerBytes: toBase64(headerBytes),
  };
}

export function commitToJson(commit: Commit): CommitJson {
  return {
    height: commit.height,
    round: commit.round,
    blockHash: toHex(commit.blockHash),
    signatures: commit.signatures.map((s) => ({
      validatorId: toHex(s.validatorId),
      signature: toBase64(s.signature),
    })),
  };
}

export function blockToJson(block: Block, commit: Commit | null) {
  return {
    header: headerToJson(block.header, block.hash, block.headerBytes),
    txs: block.txs.map((tx) => toBase64(tx)),
    lastCommit: block.lastCommit === null ? null : commitToJson(block.lastCommit),
    commit: commit === null ? null : commitToJson(commit),
  };
}

/** Canonical values as JSON: bytes become {"$bytes": base64}; everything else maps directly. */
export function canonicalToJson(value: Canonical): unknown {
  if (value instanceof Uint8Array) return { $bytes: toBase64(value) };
  if (Array.isArray(value)) return value.map(canonicalToJson);
  if (value !== null && typeof value === "object") {
    return Object.fromEntries(Object.entries(value).map(([k, v]) => [k, canonicalToJson(v as Canonical)]));
  }
  return value;
}
