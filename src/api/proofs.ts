/**
 * Proof answers: values of state keys with their proofs, the header whose state root they prove
 * against, that header's commit certificate and the validator set that signed it, read in one
 * synchronous step so every part describes the same height. Whoever receives one can check it
 * without trusting the node that sent it (src/sdk/verify.ts).
 */
import { decodeCommit, type Validator } from "../core/block.ts";
import { toBase64, toHex } from "../core/encoding.ts";
import { sha256Hex } from "../core/hash.ts";
import { proofToJson } from "../core/smt-proof.ts";
import { commitToJson, headerToJson } from "../core/views.ts";
import type { ChainNode } from "../node/node.ts";

export function commitAt(node: ChainNode, height: number) {
  const bytes = node.ledger.store.commitBytes(height);
  return bytes === undefined ? null : decodeCommit(bytes);
}

export interface ProvenEntryJson {
  readonly key: string;
  readonly value: string | null;
  readonly valueHash: string | null;
  readonly proof: unknown;
}

export function provenEntry(node: ChainNode, key: string): ProvenEntryJson {
  const value = node.ledger.state.get(key);
  return {
    key,
    value: value === undefined ? null : toBase64(value),
    valueHash: value === undefined ? null : sha256Hex(value),
    proof: proofToJson(node.ledger.proof(key)),
  };
}

/**
 * Proven entries of the current height, kept until the next block: a proof depends only on the
 * state root, so while no block commits, the license a hundred verifiers scan is proven once.
 */
export class ProofCache {
  private height = -1;
  private readonly entries = new Map<string, { entry: ProvenEntryJson; json: string }>();

  constructor(
    private readonly node: ChainNode,
    private readonly entriesMax: number,
  ) {}

  entry(key: string): ProvenEntryJson {
    return this.cached(key).entry;
  }

  /** The entry already serialised: batch answers are assembled from these without re-encoding. */
  json(key: string): string {
    return this.cached(key).json;
  }

  private cached(key: string): { entry: ProvenEntryJson; json: string } {
    const height = this.node.ledger.height();
    if (height !== this.height) {
      this.entries.clear();
      this.height = height;
    }
    let cached = this.entries.get(key);
    if (cached === undefined) {
      const entry = provenEntry(this.node, key);
      cached = { entry, json: JSON.stringify(entry) };
      if (this.entries.size >= this.entriesMax)
        this.entries.delete(this.entries.keys().next().value as string);
      this.entries.set(key, cached);
    }
    return cached;
  }
}

export function proofAnchor(node: ChainNode) {
  const ledger = node.ledger;
  const block = ledger.latest();
  const commit = commitAt(node, block.header.height);
  return {
    height: block.header.height,
    header: headerToJson(block.header, block.hash, block.headerBytes),
    commit: commit === null ? null : commitToJson(commit),
    // The set that signed this header's commit (the next height's may differ after a change).
    validators: validatorsToJson(
      block.header.height === 0 ? ledger.validators() : ledger.votersAt(block.header.height),
    ),
  };
}

export function validatorsToJson(validators: readonly Validator[]) {
  return validators.map((v) => ({
    id: toHex(v.id),
    publicKey: toBase64(v.publicKeySpki),
    power: v.power,
    dept: v.dept,
  }));
}
