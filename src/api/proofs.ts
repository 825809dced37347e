/**
 * Proof answers: values of state keys with their proofs, the header whose state root they prove
 * against, that header's commit certificate and the validator set that signed it, read in one
 * synchronous step so every part describes the same height. Whoever receives one can check it
 * without trusting the node that sent it (src/sdk/verify.ts).
 */
import { decodeCommit } from "../core/block.ts";
import { toBase64, toHex } from "../core/encoding.ts";
import { sha256Hex } from "../core/hash.ts";
import { proofToJson } from "../core/smt-proof.ts";
import { commitToJson, headerToJson } from "../core/views.ts";
import type { ChainNode } from "../node/node.ts";

export function commitAt(node: ChainNode, height: number) {
  const bytes = node.ledger.store.commitBytes(height);
  return bytes === undefined ? null : decodeCommit(bytes);
}

export function provenEntry(node: ChainNode, key: string) {
  const value = node.ledger.state.get(key);
  return {
    key,
    value: value === undefined ? null : toBase64(value),
    valueHash: value === undefined ? null : sha256Hex(value),
    proof: proofToJson(node.ledger.proof(key)),
  };
}

export function proofAnchor(node: ChainNode) {
  const ledger = node.ledger;
  const block = ledger.latest();
  const commit = commitAt(node, block.header.height);
  return {
    height: block.header.height,
    header: headerToJson(block.header, block.hash, block.headerBytes),
    commit: commit === null ? null : commitToJson(commit),
    validators: ledger.validators().map((v) => ({
      id: toHex(v.id),
      publicKey: toBase64(v.publicKeySpki),
      power: v.power,
      dept: v.dept,
    })),
  };
}
