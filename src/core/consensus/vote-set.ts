/**
 * The votes of one height, tallied by voting power per (round, type, value).
 *
 * Bounds (every entry is one of these, so memory is O(validators * rounds in window)):
 *   - height: the current height only; a vote for another height is refused ("wrongHeight");
 *   - validators: only members of the height's set are counted (the machine asserts it, the driver
 *     filters before: a vote from a stranger never reaches here);
 *   - rounds: 0 .. currentRound + `voteRoundsAheadMax`; a vote further ahead is refused
 *     ("outOfWindow"). Rounds below the current one stay, because a decision may complete in any
 *     round of the height (paper line 49) and a polka of an earlier round justifies a re-proposal
 *     (line 28).
 *   - per (validator, round, type) at most `valuesPerVoterMax` distinct values; a repeated vote is a
 *     "duplicate". A second value is an equivocation: reported once as evidence, and counted for
 *     that value too, as the paper counts messages per value ("2f + 1 PREVOTE for id(v)").
 *
 * Why count an equivocator for every value it signed: with "first vote wins", a Byzantine validator
 * that shows value v to some nodes and nil to others leaves them disagreeing forever on whether v had
 * a polka, and a lock on v can then never be released nor justified to the others (a liveness
 * failure the simulator found). Counting per value is safe: two quorums for different values in one
 * round would need more than f validators voting twice. "Any value" tallies (lines 34, 47, 55) count
 * each validator once. The cap bounds memory. A Byzantine validator could use it to hide one of its
 * votes from a node: fill its slot with values no one else votes for, then send the value that
 * completes a polka last (the simulator found this stalling a height for good, seed 6757). So a full
 * slot gives way: a new value that others back with more power than the least-backed value in the
 * slot replaces it (never the first vote, never a value at quorum). Values backed by f colluders at
 * most then lose to any value at least f + 1 honest validators voted for, which every polka's value
 * is. (CometBFT answers the same attack with peers' "+2/3 for v" claims.)
 */
import type { Validator } from "../block.ts";
import { assert } from "../errors.ts";
import {
  type Evidence,
  sameValue,
  type Vote,
  type VoteType,
  valueKey,
  voteTypePrecommit,
  voteTypePrevote,
} from "./types.ts";

/** How far above the current round votes are kept: enough for the "f + 1 of a higher round" rule. */
export const voteRoundsAheadMax = 32;
/** Distinct values counted per (validator, round, type): one honest, the rest equivocation. */
export const valuesPerVoterMax = 4;

export type AddVoteResult =
  | { readonly kind: "added" }
  | { readonly kind: "duplicate" }
  /** `counted` when the second value was tallied; evidence only the first time per slot. */
  | { readonly kind: "equivocation"; readonly evidence: Evidence | null; readonly counted: boolean }
  | { readonly kind: "outOfWindow" }
  | { readonly kind: "wrongHeight" };

/** > 2/3 of the total: a quorum ("2f + 1" in the paper). */
export function isQuorum(power: number, totalPower: number): boolean {
  return power * 3 > totalPower * 2;
}

/** > 1/3 of the total: at least one honest validator among them ("f + 1" in the paper). */
export function isOneThirdPlus(power: number, totalPower: number): boolean {
  return power * 3 > totalPower;
}

class TypeVotes {
  /** Per validator, the distinct values it voted (more than one only for an equivocator). */
  readonly byValidator: (Vote[] | undefined)[];
  readonly powerByValue = new Map<string, number>();
  powerAny = 0;
  /** Validators already reported for equivocating here: evidence is emitted once. */
  readonly equivocators = new Set<number>();

  constructor(validatorCount: number) {
    this.byValidator = new Array<Vote[] | undefined>(validatorCount).fill(undefined);
  }
}

class RoundVotes {
  readonly prevotes: TypeVotes;
  readonly precommits: TypeVotes;
  /** Validators with any message (vote or proposal) in this round, for the f + 1 rule. */
  readonly senders = new Set<number>();
  senderPower = 0;

  constructor(validatorCount: number) {
    this.prevotes = new TypeVotes(validatorCount);
    this.precommits = new TypeVotes(validatorCount);
  }

  of(type: VoteType): TypeVotes {
    return type === voteTypePrevote ? this.prevotes : this.precommits;
  }
}

export class HeightVoteSet {
  private readonly rounds = new Map<number, RoundVotes>();
  private readonly indexById = new Map<string, number>();
  readonly totalPower: number;
  /** Rounds where some non-nil value gathered a precommit quorum (paper line 49 candidates). */
  readonly precommitQuorums: { readonly round: number; readonly blockHash: Uint8Array }[] = [];

  constructor(
    readonly height: number,
    readonly validators: readonly Validator[],
  ) {
    let total = 0;
    validators.forEach((v, i) => {
      this.indexById.set(valueKey(v.id), i);
      total += v.power;
    });
    this.totalPower = total;
  }

  /** Index of a validator in the set, -1 for a stranger. */
  indexOf(validatorId: Uint8Array): number {
    return this.indexById.get(valueKey(validatorId)) ?? -1;
  }

  /** True when `round` may hold entries while the node is at `currentRound`. */
  inWindow(round: number, currentRound: number): boolean {
    return round >= 0 && round <= currentRound + voteRoundsAheadMax;
  }

  private roundVotes(round: number): RoundVotes {
    let r = this.rounds.get(round);
    if (r === undefined) {
      r = new RoundVotes(this.validators.length);
      this.rounds.set(round, r);
    }
    return r;
  }

  add(vote: Vote, currentRound: number): AddVoteResult {
    if (vote.height !== this.height) return { kind: "wrongHeight" };
    if (!this.inWindow(vote.round, currentRound)) return { kind: "outOfWindow" };
    const index = this.indexOf(vote.validatorId);
    assert(index >= 0, "votes reach the vote set only from validators of the height");
    const votes = this.roundVotes(vote.round).of(vote.type);
    const existing = votes.byValidator[index];
    if (existing === undefined) {
      votes.byValidator[index] = [vote];
      votes.powerAny += this.validators[index]!.power;
      this.count(votes, index, vote);
      this.noteSender(vote.round, index);
      return { kind: "added" };
    }
    if (existing.some((v) => sameValue(v.blockHash, vote.blockHash))) return { kind: "duplicate" };
    const first = !votes.equivocators.has(index);
    votes.equivocators.add(index);
    const evidence: Evidence | null = first
      ? { kind: "duplicateVote", first: existing[0]!, second: vote }
      : null;
    if (existing.length >= valuesPerVoterMax) {
      const out = this.givesWay(votes, existing, vote);
      if (out < 0) return { kind: "equivocation", evidence, counted: false };
      this.uncount(votes, index, existing[out]!);
      existing.splice(out, 1);
    }
    existing.push(vote);
    this.count(votes, index, vote);
    return { kind: "equivocation", evidence, counted: true };
  }

  /**
   * Which of a full slot's values a new value replaces, or -1: the least-backed one after the first,
   * if the new value's backing by others is larger and the old one is short of a quorum.
   */
  private givesWay(votes: TypeVotes, existing: readonly Vote[], vote: Vote): number {
    const incoming = votes.powerByValue.get(valueKey(vote.blockHash)) ?? 0;
    let out = -1;
    let least = Number.POSITIVE_INFINITY;
    for (let i = 1; i < existing.length; i++) {
      const power = votes.powerByValue.get(valueKey(existing[i]!.blockHash)) ?? 0;
      if (power < least && !isQuorum(power, this.totalPower)) {
        least = power;
        out = i;
      }
    }
    return out >= 0 && incoming > least ? out : -1;
  }

  /** Takes a replaced vote's power back from its value (never a value at quorum: see givesWay). */
  private uncount(votes: TypeVotes, index: number, vote: Vote): void {
    const key = valueKey(vote.blockHash);
    const left = (votes.powerByValue.get(key) ?? 0) - this.validators[index]!.power;
    assert(left >= 0, "a replaced vote was counted");
    if (left === 0) votes.powerByValue.delete(key);
    else votes.powerByValue.set(key, left);
  }

  /** Adds the voter's power to the vote's value (the caller has stored the vote). */
  private count(votes: TypeVotes, index: number, vote: Vote): void {
    const power = this.validators[index]!.power;
    const key = valueKey(vote.blockHash);
    const before = votes.powerByValue.get(key) ?? 0;
    votes.powerByValue.set(key, before + power);
    assert(votes.powerAny <= this.totalPower, "tallied power never exceeds the set's total");
    assert(before + power <= this.totalPower, "a value's power never exceeds the set's total");
    const crossed = !isQuorum(before, this.totalPower) && isQuorum(before + power, this.totalPower);
    if (crossed && vote.type === voteTypePrecommit && vote.blockHash !== null) {
      this.precommitQuorums.push({ round: vote.round, blockHash: vote.blockHash });
    }
  }

  /** Records that a validator sent something in `round` (proposals count for the f + 1 rule too). */
  noteSender(round: number, index: number): void {
    const r = this.roundVotes(round);
    if (r.senders.has(index)) return;
    r.senders.add(index);
    r.senderPower += this.validators[index]!.power;
  }

  powerFor(round: number, type: VoteType, blockHash: Uint8Array | null): number {
    return this.rounds.get(round)?.of(type).powerByValue.get(valueKey(blockHash)) ?? 0;
  }

  powerAny(round: number, type: VoteType): number {
    return this.rounds.get(round)?.of(type).powerAny ?? 0;
  }

  hasQuorumFor(round: number, type: VoteType, blockHash: Uint8Array | null): boolean {
    return isQuorum(this.powerFor(round, type, blockHash), this.totalPower);
  }

  hasQuorumAny(round: number, type: VoteType): boolean {
    return isQuorum(this.powerAny(round, type), this.totalPower);
  }

  senderPower(round: number): number {
    return this.rounds.get(round)?.senderPower ?? 0;
  }

  /** Rounds that hold any entry, ascending. */
  roundsSeen(): number[] {
    return [...this.rounds.keys()].sort((a, b) => a - b);
  }

  /** The votes for one value, in validator-set order (a commit lists them so). */
  votesFor(round: number, type: VoteType, blockHash: Uint8Array | null): Vote[] {
    const votes = this.rounds.get(round)?.of(type);
    if (votes === undefined) return [];
    const out: Vote[] = [];
    for (const list of votes.byValidator) {
      const v = list?.find((x) => sameValue(x.blockHash, blockHash));
      if (v !== undefined) out.push(v);
    }
    return out;
  }

  /** The first vote a validator cast in the slot, if any. */
  voteOf(round: number, type: VoteType, index: number): Vote | undefined {
    return this.rounds.get(round)?.of(type).byValidator[index]?.[0];
  }

  /** True when the validator's vote for this value is already counted. */
  hasVoteFor(round: number, type: VoteType, index: number, blockHash: Uint8Array | null): boolean {
    const list = this.rounds.get(round)?.of(type).byValidator[index];
    return list?.some((v) => sameValue(v.blockHash, blockHash)) ?? false;
  }
}
