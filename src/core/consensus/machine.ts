/**
 * Tendermint consensus, Algorithm 1 of "The latest gossip on BFT consensus" (Buchman, Kwon,
 * Milosevic, arXiv 1807.04938), as a pure state machine:
 *
 *   step(state, input) -> { state, effects, dropped }
 *
 * No clock, no randomness, no I/O: time arrives as `timeout` inputs, the world's answers (a value to
 * propose, a block's validity) arrive as inputs, and everything the machine wants done leaves as
 * effect data. The state is owned: `step` updates the object it is given and returns it; a caller
 * that wants to keep an old state must not pass it in again.
 *
 * Names follow the paper: h_p, round_p, step_p are `height`, `round`, `step`; lockedValue_p,
 * lockedRound_p, validValue_p, validRound_p keep their names; decision_p[h_p] is `decision`. Each
 * `upon` rule is one function whose comment cites its line. Values are block hashes (id(v)); the
 * block bytes stay with the driver, which asks the application whether a block is valid(v) when the
 * machine emits `validateBlock`, and answers with a `blockVerdict` input.
 *
 * Where this differs from the paper, and why:
 *   - Line 49 decides on 2f + 1 precommits for id(v) once v is known valid, whether v came in a
 *     proposal or in a catch-up decision message (`commitCertificate`): the proposal only serves to
 *     deliver v; safety rests on the precommit quorum.
 *   - Lines 51-54 (next height) are split: the machine emits `decide` and waits for a `start` input
 *     for h + 1, because the next validator set comes from the application after it commits.
 *   - The proposer schedules OnTimeoutPropose too (the paper needs it only for others), because here
 *     getValue() is an effect answered later and the application may fail to answer.
 *   - A proposer may equivocate: up to `proposalsPerRoundMax` proposals per round are kept (the rest
 *     dropped and reported as evidence), so a value that gathers a polka can still be locked on.
 *   - Proposer-based timestamps (as CometBFT's): line 22 prevotes for a fresh proposal only if its
 *     block time was timely by this node's clock when it arrived (the `timely` flag of the proposal
 *     input). valid(v) stays deterministic and is all that lines 28, 36 and 49 ask, so a node whose
 *     clock is off still locks, precommits and decides what the others prevoted.
 *
 * Invariants, asserted here and checked again by the simulator (docs/spec/consensus.md):
 *   NoDoubleSign, LockSafety, ValidRoundMonotone, RoundMonotone, DecideOnce.
 */
import type { Commit, Validator } from "../block.ts";
import { assert } from "../errors.ts";
import { commitFromPrecommits, commitPower } from "./commit.ts";
import { ProposerSchedule, type ValidatorSet } from "./proposer.ts";
import {
  type Evidence,
  type Proposal,
  sameValue,
  type UnsignedProposal,
  type UnsignedVote,
  type Vote,
  type VoteType,
  valueKey,
  voteTypePrecommit,
  voteTypePrevote,
} from "./types.ts";
import { HeightVoteSet, isOneThirdPlus, isQuorum } from "./vote-set.ts";

export type Step = "propose" | "prevote" | "precommit";
const stepRank: Readonly<Record<Step, number>> = { propose: 0, prevote: 1, precommit: 2 };

export interface MachineOptions {
  readonly timeoutProposeMs: number;
  readonly timeoutProposeDeltaMs: number;
  readonly timeoutPrevoteMs: number;
  readonly timeoutPrevoteDeltaMs: number;
  readonly timeoutPrecommitMs: number;
  readonly timeoutPrecommitDeltaMs: number;
}

/** Timeouts grow by their delta every round, so after GST some round is long enough for everyone. */
export const defaultMachineOptions: MachineOptions = {
  timeoutProposeMs: 1000,
  timeoutProposeDeltaMs: 500,
  timeoutPrevoteMs: 1000,
  timeoutPrevoteDeltaMs: 500,
  timeoutPrecommitMs: 1000,
  timeoutPrecommitDeltaMs: 500,
};

/** An equivocating proposer's first two proposals of a round are kept; further ones are dropped. */
export const proposalsPerRoundMax = 2;
/** Block verdicts kept per height: two proposals per round for hundreds of rounds, plus certificates. */
export const blockVerdictsMax = 1024;
/** Catch-up certificates kept per height (more than one for different values would mean a fork). */
export const certificatesMax = 4;
/** Upon rules re-run after each input until none fires; each fires at most once per round and step. */
export const rulePassesMax = 64;

export interface MachineConfig {
  readonly chainId: string;
  /** This node's validator id; null for an observer, which follows but never signs. */
  readonly self: Uint8Array | null;
  readonly options: MachineOptions;
}

export interface Decision {
  readonly height: number;
  readonly round: number;
  readonly blockHash: Uint8Array;
  readonly commit: Commit;
}

/** What a node signed at this height before it crashed, read back from its write-ahead log. */
export interface Recovery {
  readonly proposals: readonly Proposal[];
  readonly votes: readonly Vote[];
}

export type MachineInput =
  | {
      readonly kind: "start";
      readonly height: number;
      readonly validatorSet: ValidatorSet;
      readonly recovery?: Recovery;
    }
  | {
      readonly kind: "proposal";
      readonly proposal: Proposal;
      /**
       * Whether the proposed block's time was plausible by this node's clock when the proposal
       * arrived (proposer-based timestamps; absent means timely, as for this node's own proposals).
       * It is judged once, at arrival, and only gates line 22: a prevote for a fresh proposal.
       */
      readonly timely?: boolean;
    }
  | { readonly kind: "vote"; readonly vote: Vote }
  | { readonly kind: "commitCertificate"; readonly commit: Commit }
  | { readonly kind: "blockVerdict"; readonly blockHash: Uint8Array; readonly valid: boolean }
  | {
      readonly kind: "value";
      readonly height: number;
      readonly round: number;
      readonly blockHash: Uint8Array;
    }
  | { readonly kind: "timeout"; readonly step: Step; readonly height: number; readonly round: number };

export type Effect =
  | { readonly kind: "requestValue"; readonly height: number; readonly round: number }
  | { readonly kind: "broadcastProposal"; readonly proposal: UnsignedProposal }
  | { readonly kind: "broadcastVote"; readonly vote: UnsignedVote }
  | {
      readonly kind: "scheduleTimeout";
      readonly step: Step;
      readonly height: number;
      readonly round: number;
      readonly durationMs: number;
    }
  | { readonly kind: "validateBlock"; readonly height: number; readonly blockHash: Uint8Array }
  | {
      readonly kind: "decide";
      readonly height: number;
      readonly blockHash: Uint8Array;
      readonly commit: Commit;
    }
  | { readonly kind: "evidence"; readonly evidence: Evidence };

export type DropReason =
  | "notStarted"
  | "wrongHeight"
  | "wrongChain"
  | "decided"
  | "outOfWindow"
  | "notProposer"
  | "duplicate"
  | "equivocation"
  | "full"
  | "stale";

export interface StepResult {
  readonly state: ConsensusState;
  readonly effects: readonly Effect[];
  /** Why the input changed nothing, or null when it was taken. */
  readonly dropped: DropReason | null;
}

export type Verdict = "pending" | "valid" | "invalid";

interface RoundRecord {
  readonly proposals: Proposal[];
  /** Per proposal (same index): its block time was timely when it arrived. */
  readonly timely: boolean[];
  prevoteTimeoutScheduled: boolean;
  polkaValueSeen: boolean;
  precommitTimeoutScheduled: boolean;
  proposalEquivocationReported: boolean;
}

export interface HeightState {
  readonly height: number;
  readonly validatorSet: ValidatorSet;
  readonly proposers: ProposerSchedule;
  readonly votes: HeightVoteSet;
  /** Index of this node in the set, -1 when it is not a validator of this height. */
  readonly selfIndex: number;
  round: number;
  step: Step;
  lockedValue: Uint8Array | null;
  lockedRound: number;
  validValue: Uint8Array | null;
  validRound: number;
  decision: Decision | null;
  /** The round whose getValue() answer is awaited, -1 for none. */
  awaitingValueRound: number;
  readonly rounds: Map<number, RoundRecord>;
  readonly verdicts: Map<string, Verdict>;
  readonly certificates: Commit[];
  /** NoDoubleSign: what this node proposed per round and voted per `${round}/${type}`. */
  readonly ownProposals: Map<number, string>;
  readonly ownVotes: Map<string, string>;
}

export interface ConsensusState {
  readonly config: MachineConfig;
  /** null until the first `start` input. */
  current: HeightState | null;
}

export function initialState(config: MachineConfig): ConsensusState {
  const o = config.options;
  for (const [name, value] of Object.entries(o)) {
    assert(Number.isSafeInteger(value) && value >= 0, `${name} is a non-negative integer of ms`);
  }
  assert(
    o.timeoutProposeMs > 0 && o.timeoutPrevoteMs > 0 && o.timeoutPrecommitMs > 0,
    "timeouts are positive",
  );
  return { config, current: null };
}

// ---- the one entry point ----

interface Run {
  readonly config: MachineConfig;
  readonly hs: HeightState;
  readonly out: Effect[];
}

export function step(state: ConsensusState, input: MachineInput): StepResult {
  const out: Effect[] = [];
  const before = snapshot(state.current);
  let dropped: DropReason | null;
  if (input.kind === "start") {
    assert(state.current === null || input.height > state.current.height, "heights only move forward");
    state.current = startHeight(state.config, input, out);
    dropped = null;
  } else if (state.current === null) {
    dropped = "notStarted";
  } else {
    dropped = applyInput({ config: state.config, hs: state.current, out }, input);
  }
  if (state.current !== null && dropped === null) runRules({ config: state.config, hs: state.current, out });
  checkInvariants(before, state.current, out);
  return { state, effects: out, dropped };
}

function applyInput(run: Run, input: Exclude<MachineInput, { kind: "start" }>): DropReason | null {
  const { hs } = run;
  switch (input.kind) {
    case "proposal":
      return receiveProposal(run, input.proposal, input.timely ?? true);
    case "vote":
      return receiveVote(run, input.vote);
    case "commitCertificate":
      return receiveCertificate(run, input.commit);
    case "blockVerdict":
      return receiveVerdict(hs, input.blockHash, input.valid);
    case "value":
      return receiveValue(run, input.height, input.round, input.blockHash);
    case "timeout":
      if (input.height !== hs.height || hs.decision !== null) return "stale";
      if (input.step === "propose") return onTimeoutPropose(run, input.height, input.round);
      if (input.step === "prevote") return onTimeoutPrevote(run, input.height, input.round);
      return onTimeoutPrecommit(run, input.height, input.round);
  }
}

// ---- heights and rounds ----

function newHeightState(config: MachineConfig, height: number, validatorSet: ValidatorSet): HeightState {
  const votes = new HeightVoteSet(height, validatorSet.validators);
  return {
    height,
    validatorSet,
    proposers: new ProposerSchedule(validatorSet),
    votes,
    selfIndex: config.self === null ? -1 : votes.indexOf(config.self),
    round: 0,
    step: "propose",
    lockedValue: null,
    lockedRound: -1,
    validValue: null,
    validRound: -1,
    decision: null,
    awaitingValueRound: -1,
    rounds: new Map(),
    verdicts: new Map(),
    certificates: [],
    ownProposals: new Map(),
    ownVotes: new Map(),
  };
}

/** Lines 10 and 52-54: a fresh height, reset locks and message log, StartRound(0) (or resume). */
function startHeight(
  config: MachineConfig,
  input: Extract<MachineInput, { kind: "start" }>,
  out: Effect[],
): HeightState {
  assert(Number.isSafeInteger(input.height) && input.height >= 1, "heights start at 1");
  const hs = newHeightState(config, input.height, input.validatorSet);
  const run = { config, hs, out };
  if (input.recovery === undefined) {
    startRound(run, 0);
    return hs;
  }
  const round = restore(run, input.recovery);
  if (hs.step === "propose") startRound(run, round);
  return hs;
}

/**
 * After a crash: put back what this node signed at the height, so it resumes in the round and step
 * it had reached, with the lock its precommit implies (line 38). Without the lock a restarted node
 * could prevote against a value it helped decide, which is how forks happen.
 */
function restore(run: Run, recovery: Recovery): number {
  const { hs, config } = run;
  let round = 0;
  for (const p of recovery.proposals) {
    assert(
      p.height === hs.height && config.self !== null && sameValue(p.proposer, config.self),
      "recovered proposals are own",
    );
    recordProposal(hs, p, true);
    hs.ownProposals.set(p.round, valueKey(p.blockHash));
    hs.verdicts.set(valueKey(p.blockHash), "valid");
    round = Math.max(round, p.round);
  }
  for (const v of recovery.votes) {
    assert(
      v.height === hs.height && config.self !== null && sameValue(v.validatorId, config.self),
      "recovered votes are own",
    );
    hs.votes.add(v, v.round);
    hs.ownVotes.set(`${v.round}/${v.type}`, valueKey(v.blockHash));
    round = Math.max(round, v.round);
    if (v.type === voteTypePrecommit && v.blockHash !== null && v.round > hs.lockedRound) {
      hs.lockedValue = v.blockHash;
      hs.lockedRound = v.round;
      hs.validValue = v.blockHash;
      hs.validRound = v.round;
      hs.verdicts.set(valueKey(v.blockHash), "valid");
    }
  }
  hs.round = round;
  hs.step = hs.ownVotes.has(`${round}/${voteTypePrecommit}`)
    ? "precommit"
    : hs.ownVotes.has(`${round}/${voteTypePrevote}`)
      ? "prevote"
      : "propose";
  return round;
}

/** Lines 11-21: StartRound(round). */
function startRound(run: Run, round: number): void {
  const { hs, out, config } = run;
  hs.round = round;
  hs.step = "propose";
  if (
    hs.selfIndex >= 0 &&
    hs.proposers.proposerIndex(round) === hs.selfIndex &&
    !hs.ownProposals.has(round)
  ) {
    if (hs.validValue !== null) {
      propose(run, hs.validValue, hs.validRound); // line 16
    } else {
      hs.awaitingValueRound = round; // line 18: getValue()
      out.push({ kind: "requestValue", height: hs.height, round });
    }
  }
  const o = config.options;
  scheduleTimeout(run, "propose", o.timeoutProposeMs + round * o.timeoutProposeDeltaMs); // line 21
}

function scheduleTimeout(run: Run, step: Step, durationMs: number): void {
  run.out.push({ kind: "scheduleTimeout", step, height: run.hs.height, round: run.hs.round, durationMs });
}

// ---- signing intents (the driver signs, persists, sends, and echoes them back as inputs) ----

function propose(run: Run, blockHash: Uint8Array, polRound: number): void {
  const { hs, config } = run;
  assert(config.self !== null && hs.selfIndex >= 0, "only a validator proposes");
  assert(!hs.ownProposals.has(hs.round), "NoDoubleSign: one proposal per height and round");
  assert(polRound >= -1 && polRound < hs.round, "polRound is -1 or an earlier round");
  hs.ownProposals.set(hs.round, valueKey(blockHash));
  hs.verdicts.set(valueKey(blockHash), "valid");
  run.out.push({
    kind: "broadcastProposal",
    proposal: {
      chainId: config.chainId,
      height: hs.height,
      round: hs.round,
      polRound,
      blockHash,
      proposer: config.self,
    },
  });
}

/**
 * Casts this node's vote of `type` in the current round. `polRound` is the round of the polka that
 * justifies a prevote against the lock (line 29), -1 otherwise.
 */
function castVote(run: Run, type: VoteType, blockHash: Uint8Array | null, polRound: number): void {
  const { hs, config } = run;
  if (hs.selfIndex < 0 || config.self === null) return; // an observer changes step but never signs
  const key = `${hs.round}/${type}`;
  assert(!hs.ownVotes.has(key), "NoDoubleSign: one vote per height, round and type");
  checkLockSafety(hs, type, blockHash, polRound);
  hs.ownVotes.set(key, valueKey(blockHash));
  run.out.push({
    kind: "broadcastVote",
    vote: { type, height: hs.height, round: hs.round, blockHash, validatorId: config.self },
  });
}

/** LockSafety: a locked node votes for another value only on a newer polka for it. */
function checkLockSafety(
  hs: HeightState,
  type: VoteType,
  blockHash: Uint8Array | null,
  polRound: number,
): void {
  if (blockHash === null) return;
  if (type === voteTypePrecommit) {
    assert(
      hs.votes.hasQuorumFor(hs.round, voteTypePrevote, blockHash),
      "LockSafety: precommit a value only on its polka",
    );
    return;
  }
  if (hs.lockedRound < 0 || sameValue(hs.lockedValue, blockHash)) return;
  assert(
    polRound >= hs.lockedRound && hs.votes.hasQuorumFor(polRound, voteTypePrevote, blockHash),
    "LockSafety: prevote against the lock only on a polka at or after lockedRound",
  );
}

// ---- inputs ----

function roundRecord(hs: HeightState, round: number): RoundRecord {
  let r = hs.rounds.get(round);
  if (r === undefined) {
    r = {
      proposals: [],
      timely: [],
      prevoteTimeoutScheduled: false,
      polkaValueSeen: false,
      precommitTimeoutScheduled: false,
      proposalEquivocationReported: false,
    };
    hs.rounds.set(round, r);
  }
  return r;
}

function recordProposal(hs: HeightState, p: Proposal, timely: boolean): void {
  const record = roundRecord(hs, p.round);
  record.proposals.push(p);
  record.timely.push(timely);
  hs.votes.noteSender(p.round, hs.proposers.proposerIndex(p.round));
}

function receiveProposal(run: Run, p: Proposal, timely: boolean): DropReason | null {
  const { hs, config, out } = run;
  if (p.chainId !== config.chainId) return "wrongChain";
  if (p.height !== hs.height) return "wrongHeight";
  if (hs.decision !== null) return "decided";
  if (!hs.votes.inWindow(p.round, hs.round)) return "outOfWindow";
  assert(hs.votes.indexOf(p.proposer) >= 0, "proposals reach the machine only from validators");
  if (!sameValue(hs.proposers.proposer(p.round).id, p.proposer)) return "notProposer";
  const record = roundRecord(hs, p.round);
  const same = record.proposals.find((q) => sameValue(q.blockHash, p.blockHash) && q.polRound === p.polRound);
  if (same !== undefined) return "duplicate";
  if (record.proposals.length > 0 && !record.proposalEquivocationReported) {
    record.proposalEquivocationReported = true;
    out.push({
      kind: "evidence",
      evidence: { kind: "duplicateProposal", first: record.proposals[0]!, second: p },
    });
  }
  if (record.proposals.length >= proposalsPerRoundMax) return "equivocation";
  if (!requestVerdict(run, p.blockHash)) return "full";
  recordProposal(hs, p, timely);
  return null;
}

function receiveVote(run: Run, v: Vote): DropReason | null {
  const { hs, out } = run;
  if (v.height !== hs.height) return "wrongHeight";
  if (hs.decision !== null) return "decided";
  assert(hs.votes.indexOf(v.validatorId) >= 0, "votes reach the machine only from validators");
  const result = hs.votes.add(v, hs.round);
  switch (result.kind) {
    case "added":
      return null;
    case "equivocation":
      if (result.evidence !== null) out.push({ kind: "evidence", evidence: result.evidence });
      return result.counted ? null : "equivocation";
    default:
      return result.kind;
  }
}

function receiveCertificate(run: Run, c: Commit): DropReason | null {
  const { hs } = run;
  if (c.height !== hs.height) return "wrongHeight";
  if (hs.decision !== null) return "decided";
  const power = commitPower(hs.validatorSet.validators, c);
  assert(power >= 0 && isQuorum(power, hs.votes.totalPower), "certificates reach the machine only checked");
  if (hs.certificates.some((k) => sameValue(k.blockHash, c.blockHash))) return "duplicate";
  if (hs.certificates.length >= certificatesMax) return "full";
  if (!requestVerdict(run, c.blockHash)) return "full";
  hs.certificates.push(c);
  return null;
}

/** Asks the application for valid(v) once per value; false when the verdict table is full. */
function requestVerdict(run: Run, blockHash: Uint8Array): boolean {
  const { hs } = run;
  const key = valueKey(blockHash);
  if (hs.verdicts.has(key)) return true;
  if (hs.verdicts.size >= blockVerdictsMax) return false;
  hs.verdicts.set(key, "pending");
  run.out.push({ kind: "validateBlock", height: hs.height, blockHash });
  return true;
}

function receiveVerdict(hs: HeightState, blockHash: Uint8Array, valid: boolean): DropReason | null {
  const key = valueKey(blockHash);
  const verdict: Verdict = valid ? "valid" : "invalid";
  const known = hs.verdicts.get(key);
  if (known === "valid" || known === "invalid") {
    assert(known === verdict, "a block's verdict never changes: validation is deterministic");
    return "duplicate";
  }
  if (known === undefined && hs.verdicts.size >= blockVerdictsMax) return "full";
  hs.verdicts.set(key, verdict);
  return null;
}

/** The answer to getValue() (line 17), then line 19's broadcast. */
function receiveValue(run: Run, height: number, round: number, blockHash: Uint8Array): DropReason | null {
  const { hs } = run;
  if (height !== hs.height || round !== hs.round || hs.awaitingValueRound !== round) return "stale";
  hs.awaitingValueRound = -1;
  if (hs.step !== "propose" || hs.decision !== null || hs.ownProposals.has(round)) return "stale";
  propose(run, blockHash, -1);
  return null;
}

// ---- timeouts (lines 57-67) ----

function onTimeoutPropose(run: Run, height: number, round: number): DropReason | null {
  const { hs } = run;
  if (height !== hs.height || round !== hs.round || hs.step !== "propose") return "stale";
  castVote(run, voteTypePrevote, null, -1);
  hs.step = "prevote";
  return null;
}

function onTimeoutPrevote(run: Run, height: number, round: number): DropReason | null {
  const { hs } = run;
  if (height !== hs.height || round !== hs.round || hs.step !== "prevote") return "stale";
  castVote(run, voteTypePrecommit, null, -1);
  hs.step = "precommit";
  return null;
}

function onTimeoutPrecommit(run: Run, height: number, round: number): DropReason | null {
  const { hs } = run;
  if (height !== hs.height || round !== hs.round) return "stale";
  startRound(run, round + 1);
  return null;
}

// ---- upon rules ----

function runRules(run: Run): void {
  for (let pass = 0; pass < rulePassesMax; pass++) {
    if (run.hs.decision !== null) return;
    const fired =
      uponPrecommitQuorumDecide(run) ||
      uponOneThirdOfHigherRound(run) ||
      uponProposal(run) ||
      uponPrevoteQuorumAny(run) ||
      uponPolkaForValue(run) ||
      uponPolkaForNil(run) ||
      uponPrecommitQuorumAny(run);
    if (!fired) return;
  }
  assert(false, `upon rules settle within ${rulePassesMax} passes`);
}

function verdictOf(hs: HeightState, blockHash: Uint8Array): Verdict | undefined {
  return hs.verdicts.get(valueKey(blockHash));
}

/** Lines 49-54: 2f + 1 precommits for id(v) in some round r, and valid(v): decide v. */
function uponPrecommitQuorumDecide(run: Run): boolean {
  const { hs } = run;
  for (const q of hs.votes.precommitQuorums) {
    if (tryDecide(run, q.round, q.blockHash, null)) return true;
  }
  for (const c of hs.certificates) {
    if (tryDecide(run, c.round, c.blockHash, c)) return true;
  }
  return false;
}

function tryDecide(run: Run, round: number, blockHash: Uint8Array, certificate: Commit | null): boolean {
  const { hs } = run;
  const verdict = verdictOf(hs, blockHash);
  if (verdict === undefined) requestVerdict(run, blockHash);
  if (verdict !== "valid") return false;
  const commit =
    certificate ??
    commitFromPrecommits(hs.height, round, blockHash, hs.votes.votesFor(round, voteTypePrecommit, blockHash));
  hs.decision = { height: hs.height, round, blockHash, commit };
  run.out.push({ kind: "decide", height: hs.height, blockHash, commit });
  return true;
}

/** Lines 55-56: f + 1 messages of a round above round_p: StartRound(that round). */
function uponOneThirdOfHigherRound(run: Run): boolean {
  const { hs } = run;
  let target = -1;
  for (const r of hs.votes.roundsSeen()) {
    if (r > hs.round && isOneThirdPlus(hs.votes.senderPower(r), hs.votes.totalPower)) target = r;
  }
  if (target < 0) return false;
  startRound(run, target);
  return true;
}

/** Lines 22-27 (fresh proposal) and 28-33 (re-proposal backed by a polka of round vr). */
function uponProposal(run: Run): boolean {
  const { hs } = run;
  if (hs.step !== "propose") return false;
  const record = hs.rounds.get(hs.round);
  if (record === undefined) return false;
  for (const [i, p] of record.proposals.entries()) {
    const verdict = verdictOf(hs, p.blockHash);
    if (verdict !== "valid" && verdict !== "invalid") continue; // valid(v) not known yet
    const valid = verdict === "valid";
    if (p.polRound === -1) {
      // Line 23, with proposer-based timestamps: a fresh value must also have been timely here.
      const timely = record.timely[i] === true;
      const ok = valid && timely && (hs.lockedRound === -1 || sameValue(hs.lockedValue, p.blockHash));
      prevoteAndAdvance(run, ok ? p.blockHash : null, -1);
      return true;
    }
    if (p.polRound < hs.round && hs.votes.hasQuorumFor(p.polRound, voteTypePrevote, p.blockHash)) {
      const ok = valid && (hs.lockedRound <= p.polRound || sameValue(hs.lockedValue, p.blockHash)); // line 29
      prevoteAndAdvance(run, ok ? p.blockHash : null, p.polRound);
      return true;
    }
  }
  return false;
}

function prevoteAndAdvance(run: Run, blockHash: Uint8Array | null, polRound: number): void {
  castVote(run, voteTypePrevote, blockHash, polRound);
  run.hs.step = "prevote";
}

/** Lines 34-35: 2f + 1 prevotes of any value, first time in the round: schedule OnTimeoutPrevote. */
function uponPrevoteQuorumAny(run: Run): boolean {
  const { hs, config } = run;
  const record = roundRecord(hs, hs.round);
  if (hs.step !== "prevote" || record.prevoteTimeoutScheduled) return false;
  if (!hs.votes.hasQuorumAny(hs.round, voteTypePrevote)) return false;
  record.prevoteTimeoutScheduled = true;
  const o = config.options;
  scheduleTimeout(run, "prevote", o.timeoutPrevoteMs + hs.round * o.timeoutPrevoteDeltaMs);
  return true;
}

/** Lines 36-43: proposal v with 2f + 1 prevotes for id(v), valid(v), step >= prevote, first time. */
function uponPolkaForValue(run: Run): boolean {
  const { hs } = run;
  const record = roundRecord(hs, hs.round);
  if (stepRank[hs.step] < stepRank.prevote || record.polkaValueSeen) return false;
  for (const p of record.proposals) {
    if (verdictOf(hs, p.blockHash) !== "valid") continue;
    if (!hs.votes.hasQuorumFor(hs.round, voteTypePrevote, p.blockHash)) continue;
    record.polkaValueSeen = true;
    if (hs.step === "prevote") {
      hs.lockedValue = p.blockHash; // line 38
      hs.lockedRound = hs.round;
      castVote(run, voteTypePrecommit, p.blockHash, -1);
      hs.step = "precommit";
    }
    hs.validValue = p.blockHash; // line 42
    hs.validRound = hs.round;
    return true;
  }
  return false;
}

/** Lines 44-46: 2f + 1 prevotes for nil while in prevote: precommit nil. */
function uponPolkaForNil(run: Run): boolean {
  const { hs } = run;
  if (hs.step !== "prevote" || !hs.votes.hasQuorumFor(hs.round, voteTypePrevote, null)) return false;
  castVote(run, voteTypePrecommit, null, -1);
  hs.step = "precommit";
  return true;
}

/** Lines 47-48: 2f + 1 precommits of any value, first time in the round: schedule OnTimeoutPrecommit. */
function uponPrecommitQuorumAny(run: Run): boolean {
  const { hs, config } = run;
  const record = roundRecord(hs, hs.round);
  if (record.precommitTimeoutScheduled || !hs.votes.hasQuorumAny(hs.round, voteTypePrecommit)) return false;
  record.precommitTimeoutScheduled = true;
  const o = config.options;
  scheduleTimeout(run, "precommit", o.timeoutPrecommitMs + hs.round * o.timeoutPrecommitDeltaMs);
  return true;
}

// ---- invariants that span a step ----

interface Snapshot {
  readonly height: number;
  readonly round: number;
  readonly stepRank: number;
  readonly lockedRound: number;
  readonly validRound: number;
  readonly decision: Decision | null;
}

function snapshot(hs: HeightState | null): Snapshot | null {
  if (hs === null) return null;
  return {
    height: hs.height,
    round: hs.round,
    stepRank: stepRank[hs.step],
    lockedRound: hs.lockedRound,
    validRound: hs.validRound,
    decision: hs.decision,
  };
}

function checkInvariants(before: Snapshot | null, hs: HeightState | null, out: readonly Effect[]): void {
  if (hs === null) return;
  assert(hs.validRound >= hs.lockedRound, "ValidRoundMonotone: validRound >= lockedRound");
  assert(hs.lockedRound < 0 || hs.lockedValue !== null, "a lockedRound has a lockedValue");
  const decides = out.filter((e) => e.kind === "decide").length;
  assert(decides <= 1, "DecideOnce: at most one decision per step");
  for (const e of out) {
    if (e.kind === "broadcastVote") assert(e.vote.height === hs.height, "votes are for the current height");
    if (e.kind === "decide") checkDecision(hs, e.blockHash, e.commit);
  }
  if (before === null || before.height !== hs.height) return;
  assert(before.decision === null || (hs.decision === before.decision && decides === 0), "DecideOnce");
  assert(
    hs.round > before.round || (hs.round === before.round && stepRank[hs.step] >= before.stepRank),
    "RoundMonotone: round and step never go back within a height",
  );
  assert(hs.lockedRound >= before.lockedRound, "ValidRoundMonotone: lockedRound never decreases");
  assert(hs.validRound >= before.validRound, "ValidRoundMonotone: validRound never decreases");
}

/** DecideOnce also says what a decision is: > 2/3 of the power precommitted that value in one round. */
function checkDecision(hs: HeightState, blockHash: Uint8Array, commit: Commit): void {
  assert(
    commit.height === hs.height && sameValue(commit.blockHash, blockHash),
    "commit names the decided block",
  );
  const power = commitPower(hs.validatorSet.validators, commit);
  assert(
    power >= 0 && isQuorum(power, hs.votes.totalPower),
    "DecideOnce: the commit holds > 2/3 of the power",
  );
}

// ---- read-only views for the driver and tests ----

export function proposerOf(state: ConsensusState, round: number): Uint8Array | null {
  return state.current === null ? null : state.current.proposers.proposer(round).id;
}

export interface MachineView {
  readonly height: number;
  readonly round: number;
  readonly step: Step;
  readonly lockedValue: Uint8Array | null;
  readonly lockedRound: number;
  readonly validValue: Uint8Array | null;
  readonly validRound: number;
  readonly decided: boolean;
}

export function viewOf(state: ConsensusState): MachineView | null {
  const hs = state.current;
  if (hs === null) return null;
  return {
    height: hs.height,
    round: hs.round,
    step: hs.step,
    lockedValue: hs.lockedValue,
    lockedRound: hs.lockedRound,
    validValue: hs.validValue,
    validRound: hs.validRound,
    decided: hs.decision !== null,
  };
}

/** The validator with `id` in the current height's set, undefined for a stranger (or before start). */
export function validatorOf(state: ConsensusState, id: Uint8Array): Validator | undefined {
  const hs = state.current;
  if (hs === null) return undefined;
  const i = hs.votes.indexOf(id);
  return i < 0 ? undefined : hs.validatorSet.validators[i];
}

/** True when the machine already counted this exact vote (the driver skips verifying it again). */
export function hasVote(state: ConsensusState, vote: Vote): boolean {
  const hs = state.current;
  if (hs === null || vote.height !== hs.height) return false;
  const i = hs.votes.indexOf(vote.validatorId);
  return i >= 0 && hs.votes.hasVoteFor(vote.round, vote.type, i, vote.blockHash);
}

/** The machine's knowledge of valid(v): undefined (never asked), "pending", "valid" or "invalid". */
export function verdictFor(state: ConsensusState, blockHash: Uint8Array): Verdict | undefined {
  return state.current === null ? undefined : verdictOf(state.current, blockHash);
}
