/**
 * Invariant checkers over what a simulation recorded. They see only logs (decisions, signatures), not
 * the nodes' insides, so a forged log exercises them exactly as a real run does (see the negative
 * controls in test/unit/consensus-sim.test.ts). Names match docs/spec/consensus.md.
 */
import type { Commit, Validator } from "../../src/core/block.ts";
import { verifyCommit } from "../../src/core/consensus/commit.ts";
import { toHex } from "../../src/core/encoding.ts";
import { genesisParent, isValidSimBlock } from "./sim-app.ts";

export type InvariantName =
  | "Agreement"
  | "Validity"
  | "NoHonestDoubleSign"
  | "Liveness"
  | "DecideOnce"
  | "InvariantAssert";

export interface Violation {
  readonly invariant: InvariantName;
  readonly message: string;
}

export interface DecisionRecord {
  readonly node: number;
  readonly height: number;
  readonly blockHash: Uint8Array;
  readonly blockBytes: Uint8Array;
  readonly commit: Commit;
  readonly atMs: number;
}

export type SignKind = "proposal" | "prevote" | "precommit";

export interface SignRecord {
  readonly node: number;
  readonly honest: boolean;
  readonly kind: SignKind;
  readonly height: number;
  readonly round: number;
  /** Hash hex or "nil"; a proposal's value includes its polRound. */
  readonly value: string;
}

export interface SimLog {
  readonly chainId: string;
  readonly validators: readonly Validator[];
  /** The set that votes at a height, when it changes during the run (else `validators`). */
  readonly validatorsAt?: (height: number) => readonly Validator[];
  readonly honestNodes: readonly number[];
  readonly decisions: readonly DecisionRecord[];
  readonly signs: readonly SignRecord[];
  readonly targetHeight: number;
  /** Honest nodes must have decided targetHeight by this virtual time (fault window + bound). */
  readonly livenessDeadlineMs: number;
  /** Virtual time the run reached. */
  readonly endMs: number;
}

/** Agreement: no two honest nodes decide different blocks at a height. */
export function checkAgreement(log: SimLog): Violation[] {
  const honest = new Set(log.honestNodes);
  const byHeight = new Map<number, { node: number; hash: string }>();
  const out: Violation[] = [];
  for (const d of log.decisions) {
    if (!honest.has(d.node)) continue;
    const hash = toHex(d.blockHash);
    const first = byHeight.get(d.height);
    if (first === undefined) byHeight.set(d.height, { node: d.node, hash });
    else if (first.hash !== hash) {
      out.push({
        invariant: "Agreement",
        message: `height ${d.height}: node ${first.node} decided ${first.hash.slice(0, 12)}, node ${d.node} decided ${hash.slice(0, 12)}`,
      });
    }
  }
  return out;
}

/** DecideOnce: an honest node decides each height at most once, heights in order. */
export function checkDecideOnce(log: SimLog): Violation[] {
  const honest = new Set(log.honestNodes);
  const last = new Map<number, number>();
  const out: Violation[] = [];
  for (const d of log.decisions) {
    if (!honest.has(d.node)) continue;
    const before = last.get(d.node) ?? 0;
    if (d.height !== before + 1) {
      out.push({
        invariant: "DecideOnce",
        message: `node ${d.node} decided height ${d.height} after ${before}`,
      });
    }
    last.set(d.node, d.height);
  }
  return out;
}

/**
 * Validity: every decided block was proposed (someone signed a proposal for it), is valid on its
 * parent (the deciding node's previous block), and carries a commit certificate that verifies.
 */
export function checkValidity(
  log: SimLog,
  verifier: { verify(spki: Uint8Array, message: Uint8Array, signature: Uint8Array): boolean },
): Violation[] {
  const proposed = new Set(log.signs.filter((s) => s.kind === "proposal").map((s) => s.value.split("/")[0]));
  const parents = new Map<string, Uint8Array>();
  const honest = new Set(log.honestNodes);
  const out: Violation[] = [];
  for (const d of log.decisions) {
    if (!honest.has(d.node)) continue;
    const hash = toHex(d.blockHash);
    const parent = d.height === 1 ? genesisParent : parents.get(`${d.node}/${d.height - 1}`);
    parents.set(`${d.node}/${d.height}`, d.blockHash);
    if (!proposed.has(hash))
      out.push({
        invariant: "Validity",
        message: `height ${d.height}: ${hash.slice(0, 12)} was never proposed`,
      });
    if (parent === undefined || !isValidSimBlock(d.blockBytes, d.height, parent)) {
      out.push({
        invariant: "Validity",
        message: `node ${d.node} height ${d.height}: decided an invalid block`,
      });
    }
    const check = verifyCommit(
      log.chainId,
      log.validatorsAt?.(d.height) ?? log.validators,
      d.commit,
      verifier,
    );
    if (!check.ok || toHex(d.commit.blockHash) !== hash || d.commit.height !== d.height) {
      out.push({
        invariant: "Validity",
        message: `node ${d.node} height ${d.height}: bad commit (${check.ok ? "names another block" : check.reason})`,
      });
    }
  }
  return out;
}

/** NoHonestDoubleSign: an honest node signs at most one value per (height, round, kind). */
export function checkNoHonestDoubleSign(log: SimLog): Violation[] {
  const seen = new Map<string, string>();
  const out: Violation[] = [];
  for (const s of log.signs) {
    if (!s.honest) continue;
    const slot = `${s.node}/${s.height}/${s.round}/${s.kind}`;
    const before = seen.get(slot);
    if (before === undefined) seen.set(slot, s.value);
    else if (before !== s.value) {
      out.push({
        invariant: "NoHonestDoubleSign",
        message: `node ${s.node} signed two ${s.kind}s at height ${s.height} round ${s.round}: ${before.slice(0, 12)} and ${s.value.slice(0, 12)}`,
      });
    }
  }
  return out;
}

/** Liveness: after the faults end (and within the bound), every honest node decides targetHeight. */
export function checkLiveness(log: SimLog): Violation[] {
  const reached = new Map<number, DecisionRecord>();
  for (const d of log.decisions) {
    if (d.height === log.targetHeight && !reached.has(d.node)) reached.set(d.node, d);
  }
  const out: Violation[] = [];
  for (const node of log.honestNodes) {
    const d = reached.get(node);
    if (d === undefined || d.atMs > log.livenessDeadlineMs) {
      const best = Math.max(0, ...log.decisions.filter((x) => x.node === node).map((x) => x.height));
      out.push({
        invariant: "Liveness",
        message: `node ${node} reached height ${best} of ${log.targetHeight} by ${log.livenessDeadlineMs} ms (run ended at ${log.endMs} ms)`,
      });
    }
  }
  return out;
}

export function checkAll(
  log: SimLog,
  verifier: { verify(spki: Uint8Array, message: Uint8Array, signature: Uint8Array): boolean },
): Violation[] {
  return [
    ...checkAgreement(log),
    ...checkDecideOnce(log),
    ...checkValidity(log, verifier),
    ...checkNoHonestDoubleSign(log),
    ...checkLiveness(log),
  ];
}
