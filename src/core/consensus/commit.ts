/**
 * Commit certificates: > 2/3 of the voting power of precommit signatures for one block in one round.
 *
 * The machine builds one from its precommit votes when it decides; the driver (and later catch-up)
 * checks one received from a peer before trusting it. Checking is strict: every signature must be
 * from a distinct member of the set and verify, not just enough of them, so a certificate has one
 * meaning on every node.
 */
import { type Commit, type Validator, voteSigningBytes, voteTypePrecommit } from "../block.ts";
import { assert } from "../errors.ts";
import type { SignatureVerifier } from "../signature.ts";
import { type Vote, valueKey } from "./types.ts";
import { isQuorum } from "./vote-set.ts";

export type CommitCheck =
  | { readonly ok: true; readonly power: number }
  | { readonly ok: false; readonly reason: string };

/** Builds the certificate from precommits that the caller has counted (all for one value and round). */
export function commitFromPrecommits(
  height: number,
  round: number,
  blockHash: Uint8Array,
  precommits: readonly Vote[],
): Commit {
  for (const v of precommits) {
    assert(
      v.type === voteTypePrecommit && v.height === height && v.round === round,
      "commit holds one round's precommits",
    );
    assert(v.blockHash !== null && valueKey(v.blockHash) === valueKey(blockHash), "commit holds one value");
  }
  return {
    height,
    round,
    blockHash,
    signatures: precommits.map((v) => ({ validatorId: v.validatorId, signature: v.signature })),
  };
}

/** The voting power behind a certificate, counting each member once; -1 when a signer is a stranger or repeated. */
export function commitPower(validators: readonly Validator[], commit: Commit): number {
  const index = new Map<string, Validator>(validators.map((v) => [valueKey(v.id), v]));
  const seen = new Set<string>();
  let power = 0;
  for (const s of commit.signatures) {
    const key = valueKey(s.validatorId);
    const v = index.get(key);
    if (v === undefined || seen.has(key)) return -1;
    seen.add(key);
    power += v.power;
  }
  return power;
}

export function verifyCommit(
  chainId: string,
  validators: readonly Validator[],
  commit: Commit,
  verifier: Pick<SignatureVerifier, "verify">,
): CommitCheck {
  const power = commitPower(validators, commit);
  if (power < 0) return { ok: false, reason: "a signer is not a validator or signs twice" };
  let total = 0;
  for (const v of validators) total += v.power;
  if (!isQuorum(power, total)) return { ok: false, reason: `power ${power} of ${total} is not > 2/3` };
  const bytes = voteSigningBytes(chainId, voteTypePrecommit, commit.height, commit.round, commit.blockHash);
  const byId = new Map<string, Validator>(validators.map((v) => [valueKey(v.id), v]));
  for (const s of commit.signatures) {
    const v = byId.get(valueKey(s.validatorId))!;
    if (!verifier.verify(v.publicKeySpki, bytes, s.signature)) {
      return { ok: false, reason: `signature of ${valueKey(s.validatorId)} does not verify` };
    }
  }
  return { ok: true, power };
}
