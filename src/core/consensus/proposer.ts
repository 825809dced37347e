/**
 * Proposer selection weighted by voting power, as CometBFT's spec (spec/consensus/proposer-selection.md).
 *
 * Every validator carries a priority A(i). One selection step:
 *
 *   for each i: A(i) += power(i)          (everyone moves up by its power)
 *   proposer = argmax A (ties: smaller id) (the most "owed" validator proposes)
 *   A(proposer) -= totalPower              (and pays for it)
 *
 * Before a run of steps, priorities are scaled so that max - min <= 2 * totalPower
 * (`priorityWindowSizeFactor`) and centred on zero (subtract the floor of the average), so a new or
 * long-idle validator can neither starve nor dominate. Over any window of W steps each validator
 * proposes within a bounded distance of W * power / totalPower times.
 *
 * Heights and rounds. `ValidatorSet.priorities` are the priorities before a height's first selection.
 * The proposer of (height, round) is the result of round + 1 steps from them; the next height's
 * priorities are one step on (`nextHeightValidatorSet`), so the next height's round-0 proposer is this
 * height's round-1 proposer, exactly as CometBFT. Every node computes the same sequence from the same
 * chain: no clock and no randomness enter.
 */
import { blockLimits, type Validator } from "../block.ts";
import { bytesEqual, compareBytes } from "../encoding.ts";
import { assert } from "../errors.ts";

/** CometBFT's PriorityWindowSizeFactor: the spread of priorities is kept within 2 * totalPower. */
export const priorityWindowSizeFactor = 2;

/**
 * Total voting power cap. Priorities stay within a few multiples of the total power, so this keeps
 * every priority far inside JavaScript's safe integers (2^53).
 */
export const totalVotingPowerMax = 2 ** 40;

export interface ValidatorSet {
  readonly validators: readonly Validator[];
  /** Proposer priorities before this height's first selection, aligned with `validators`. */
  readonly priorities: readonly number[];
}

/** Checks the set's shape: the checks every node must agree on before it counts a single vote. */
export function checkValidatorSet(set: ValidatorSet): void {
  const n = set.validators.length;
  assert(
    n >= 1 && n <= blockLimits.validatorsMax,
    `validator count ${n} within 1..${blockLimits.validatorsMax}`,
  );
  assert(set.priorities.length === n, "one priority per validator");
  let total = 0;
  for (let i = 0; i < n; i++) {
    const v = set.validators[i]!;
    assert(Number.isSafeInteger(v.power) && v.power >= 1, "validator power is a positive integer");
    assert(v.id.length === 32, "validator id is 32 bytes");
    assert(Number.isSafeInteger(set.priorities[i]), "priority is a safe integer");
    for (let j = 0; j < i; j++)
      assert(!bytesEqual(set.validators[j]!.id, v.id), "validator ids are distinct");
    total += v.power;
  }
  assert(total <= totalVotingPowerMax, `total voting power ${total} <= ${totalVotingPowerMax}`);
}

/** The genesis set: every priority zero (CometBFT then takes one step, which round 0 does here). */
export function genesisValidatorSet(validators: readonly Validator[]): ValidatorSet {
  const set = { validators, priorities: validators.map(() => 0) };
  checkValidatorSet(set);
  return set;
}

function totalPowerOf(validators: readonly Validator[]): number {
  let total = 0;
  for (const v of validators) total += v.power;
  return total;
}

/** Floor division for safe integers (Go's big.Int.Div, which CometBFT uses for the average). */
function floorDiv(a: number, b: number): number {
  assert(b > 0, "divisor is positive");
  let q = Math.trunc(a / b);
  const r = a - q * b;
  if (r < 0) q -= 1;
  else if (r >= b) q += 1;
  return q;
}

/** Rescale (so max - min <= window) then centre on zero: CometBFT's RescalePriorities + shift. */
function normalizePriorities(priorities: readonly number[], totalPower: number): number[] {
  const diffMax = priorityWindowSizeFactor * totalPower;
  let min = Number.POSITIVE_INFINITY;
  let max = Number.NEGATIVE_INFINITY;
  for (const p of priorities) {
    if (p < min) min = p;
    if (p > max) max = p;
  }
  const diff = max - min;
  let out = [...priorities];
  if (diff > diffMax) {
    const ratio = Math.ceil(diff / diffMax);
    out = out.map((p) => Math.trunc(p / ratio));
  }
  let sum = 0;
  for (const p of out) sum += p;
  const average = floorDiv(sum, out.length);
  return out.map((p) => p - average);
}

/** One selection step, in place; returns the proposer's index. */
function selectionStep(priorities: number[], validators: readonly Validator[], totalPower: number): number {
  let best = 0;
  for (let i = 0; i < priorities.length; i++) {
    priorities[i]! += validators[i]!.power;
  }
  for (let i = 1; i < priorities.length; i++) {
    const p = priorities[i]!;
    const b = priorities[best]!;
    if (p > b || (p === b && compareBytes(validators[i]!.id, validators[best]!.id) < 0)) best = i;
  }
  priorities[best]! -= totalPower;
  assert(Number.isSafeInteger(priorities[best]), "priorities stay safe integers");
  return best;
}

/**
 * The proposers of one height, round by round. Rounds are computed on demand and remembered, so
 * asking for round r costs O(r * validators) once.
 */
export class ProposerSchedule {
  private readonly priorities: number[];
  private readonly proposers: number[] = [];
  private readonly totalPower: number;

  constructor(readonly set: ValidatorSet) {
    checkValidatorSet(set);
    this.totalPower = totalPowerOf(set.validators);
    this.priorities = normalizePriorities(set.priorities, this.totalPower);
  }

  /** Index into `set.validators` of the proposer of `round`. */
  proposerIndex(round: number): number {
    assert(Number.isSafeInteger(round) && round >= 0, "round is a non-negative integer");
    while (this.proposers.length <= round) {
      this.proposers.push(selectionStep(this.priorities, this.set.validators, this.totalPower));
    }
    return this.proposers[round]!;
  }

  proposer(round: number): Validator {
    return this.set.validators[this.proposerIndex(round)]!;
  }
}

/** The set of the next height: one selection step on (the validators themselves unchanged). */
export function nextHeightValidatorSet(set: ValidatorSet): ValidatorSet {
  const totalPower = totalPowerOf(set.validators);
  const priorities = normalizePriorities(set.priorities, totalPower);
  selectionStep(priorities, set.validators, totalPower);
  return { validators: set.validators, priorities };
}

/**
 * The set of the next height when its validators change: a validator that stays keeps its priority
 * (after this height's step), one that joins starts at -1.125 x the new total power (CometBFT's rule:
 * it waits about one full rotation before it proposes, so joining cannot be used to jump the
 * queue), one that leaves is dropped. `next` is the new list in its on-chain order.
 */
export function carryPriorities(stepped: ValidatorSet, next: readonly Validator[]): ValidatorSet {
  const total = totalPowerOf(next);
  const joinPriority = -(total + Math.floor(total / 8));
  const priorities = next.map((v) => {
    const at = stepped.validators.findIndex((old) => bytesEqual(old.id, v.id));
    return at < 0 ? joinPriority : stepped.priorities[at]!;
  });
  const set = { validators: next, priorities: normalizePriorities(priorities, total) };
  checkValidatorSet(set);
  return set;
}
