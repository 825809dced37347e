/**
 * Deterministic simulation of a citychain validator network (TigerBeetle's VOPR habit): N nodes each
 * run the production consensus machine and driver (src/core/consensus, src/consensus) with simulated
 * ports: a virtual clock, a seeded network with delay, loss, duplication, reordering and partitions,
 * crashes that keep the WAL and the chain but lose memory, and Byzantine nodes. Everything random is
 * drawn from one seeded PRNG, so a seed and the flags reproduce a run event for event; a failure
 * prints the command that does so.
 *
 * The run ends when every honest node has decided `heights` blocks, or at the liveness deadline
 * (fault window + livenessBoundMs); then the checkers (./checkers.ts) judge the logs.
 */

import {
  ConsensusDriver,
  type DriverCounters,
  type DriverOptions,
  defaultDriverOptions,
} from "../../src/consensus/driver.ts";
import type { SignerPort, TimerClock, TransportPort, Wal } from "../../src/consensus/ports.ts";
import {
  decodeWalRecord,
  encodeWalRecord,
  type WalRecord,
  walRecordHeight,
} from "../../src/consensus/wal.ts";
import type { Validator } from "../../src/core/block.ts";
import {
  defaultMachineOptions,
  type MachineOptions,
  type MachineView,
} from "../../src/core/consensus/machine.ts";
import { genesisValidatorSet } from "../../src/core/consensus/proposer.ts";
import { consensusMessageBytesMax, encodeConsensusMessage } from "../../src/core/consensus/types.ts";
import { decodeCanonical, toHex } from "../../src/core/encoding.ts";
import { CodedError } from "../../src/core/errors.ts";
import { NodeSignatureVerifier } from "../../src/node/crypto-node.ts";
import { Adversary, allBehaviors, type ByzantineBehavior } from "./adversary.ts";
import {
  checkAll,
  type DecisionRecord,
  type SignKind,
  type SignRecord,
  type SimLog,
  type Violation,
} from "./checkers.ts";
import { EventQueue } from "./event-queue.ts";
import { deriveKey, type SimKey, validatorFor } from "./keys.ts";
import { type NetworkConfig, type NetworkStats, type Partition, SimNetwork } from "./network.ts";
import { Prng } from "./prng.ts";
import { SimChain, simBlockBytesMax, simBlockTimeSkewMaxMs } from "./sim-app.ts";

export type FaultKind = "loss" | "duplicate" | "reorder" | "partition" | "crash";
export const allFaults: readonly FaultKind[] = ["loss", "duplicate", "reorder", "partition", "crash"];

export interface SimConfig {
  readonly seed: number;
  readonly nodes: number;
  readonly byzantine: number;
  readonly faults: readonly FaultKind[];
  readonly heights: number;
  /** Byzantine behaviours; by default each Byzantine node draws a non-empty subset of all of them. */
  readonly behaviors?: readonly ByzantineBehavior[];
  /** Byzantine nodes coordinate their equivocation (the > 1/3 negative control). */
  readonly colluding?: boolean;
  readonly maxVirtualMs?: number;
  readonly baseDelayMs?: number;
  readonly jitterMs?: number;
  /** Faults happen in [0, faultWindowMs); default 8000 ms when any fault is on, else 0. */
  readonly faultWindowMs?: number;
  /** After the fault window, every honest node must decide `heights` within this. */
  readonly livenessBoundMs?: number;
  readonly machine?: Partial<MachineOptions>;
  readonly driver?: Partial<Pick<DriverOptions, "rebroadcastIntervalMs" | "timeoutCommitMs">>;
  /**
   * Work mode: nodes start a height only when they have work (DriverOptions.waitForWork, as every
   * network node runs). A transaction arrives at a random node every 1 to 2 x meanGapMs (virtual) and
   * reaches the others over the network's delay, as gossip; a block takes all of a node's pending
   * work and a crash loses it. Without it every node always has work.
   */
  readonly work?: { readonly meanGapMs: number };
  /**
   * Honest nodes whose clock is off by three times the timeliness bound (simBlockTimeSkewMaxMs):
   * the first slow, the next fast, and so on. Either way such a node finds every fresh proposal of
   * the others untimely and prevotes nil for it, and its own are untimely for everyone else (the
   * simulator's blocks carry the proposer's clock as is). It still locks, precommits and decides
   * with the others (proposer-based timestamps), so it is checked as an honest node; for liveness it
   * counts against f with the Byzantine ones.
   */
  readonly skewedClocks?: number;
  /**
   * Validator set changes while the run goes on. "join-leave": the last node is not a validator at
   * genesis and joins at height 3; node 0 leaves at height 6 (and keeps following as an observer).
   * Needs at least 5 nodes (each change moves less than a third of the power).
   */
  readonly membership?: "join-leave";
  /** Safety valve: a run that schedules more events than this is reported as a liveness failure. */
  readonly eventsMax?: number;
}

export interface SimStats {
  readonly virtualMs: number;
  readonly events: number;
  readonly network: NetworkStats;
  readonly crashes: number;
  readonly restarts: number;
  readonly evidence: number;
  readonly byzantineNodes: readonly number[];
  readonly counters: DriverCounters;
  readonly heightsDecided: readonly number[];
  /** Where each node's machine stood when the run ended ("down" for a crashed node): for diagnosis. */
  readonly finalViews: readonly string[];
}

export interface SimResult {
  readonly ok: boolean;
  readonly violations: readonly Violation[];
  readonly reproduce: string;
  readonly stats: SimStats;
  /** Per honest node and height: virtual ms from its previous decision (or the start) to this one. */
  readonly commitIntervalsMs: readonly number[];
  readonly log: SimLog;
}

export const simChainId = "citychain-sim";
const defaultFaultWindowMs = 8000;
const defaultLivenessBoundMs = 60_000;
const defaultEventsMax = 20_000_000;
const validatorPower = 10;
/** Added to every node's clock, so a slow clock's block times stay positive. */
const clockBaseMs = 1_000_000;
/** A catch-up request not answered in this time (virtual) is made again if the node is still behind. */
const catchUpRetryMs = 500;

class SimCrash extends Error {}

interface SimNode {
  readonly index: number;
  readonly key: SimKey;
  readonly honest: boolean;
  readonly behaviors: ReadonlySet<ByzantineBehavior>;
  readonly chain: SimChain;
  readonly wal: MemoryWal;
  readonly timers: Set<number>;
  driver: ConsensusDriver | null;
  generation: number;
}

/** The WAL as a simulated disk: records kept as bytes, so a restart really decodes what was written. */
class MemoryWal implements Wal {
  private readonly byHeight = new Map<number, Uint8Array[]>();
  /** Set by the fault plan: the next append persists, then the node dies before returning. */
  crashAfterNextAppend = false;

  append(records: readonly WalRecord[]): void {
    for (const record of records) {
      const height = walRecordHeight(record);
      const list = this.byHeight.get(height) ?? [];
      list.push(encodeWalRecord(record));
      this.byHeight.set(height, list);
    }
    if (this.crashAfterNextAppend) {
      this.crashAfterNextAppend = false;
      throw new SimCrash("crash after a durable WAL append");
    }
  }

  replay(height: number): readonly WalRecord[] {
    return (this.byHeight.get(height) ?? []).map((bytes) => decodeWalRecord(bytes, simBlockBytesMax));
  }

  truncateBelow(height: number): void {
    for (const h of [...this.byHeight.keys()]) if (h < height) this.byHeight.delete(h);
  }
}

/** The validator list of each height at which it changes, from the config (1 = genesis). */
function membershipSchedule(
  config: SimConfig,
  validators: readonly Validator[],
): ReadonlyMap<number, readonly Validator[]> {
  if (config.membership === undefined) return new Map([[1, validators]]);
  if (validators.length < 5) throw new RangeError("membership join-leave needs at least 5 nodes");
  const joiner = validators.length - 1;
  const genesis = validators.filter((_, i) => i !== joiner);
  return new Map([
    [1, genesis],
    [3, validators],
    [6, validators.filter((_, i) => i !== 0)],
  ]);
}

export function reproduceCommand(config: SimConfig): string {
  const parts = [
    "node --import tsx test/sim/run.ts",
    `--seed ${config.seed}`,
    `--nodes ${config.nodes}`,
    `--byzantine ${config.byzantine}`,
    `--faults ${config.faults.length > 0 ? config.faults.join(",") : "none"}`,
    `--heights ${config.heights}`,
  ];
  if (config.behaviors !== undefined) parts.push(`--behaviors ${config.behaviors.join(",")}`);
  if (config.colluding) parts.push("--colluding");
  if (config.baseDelayMs !== undefined) parts.push(`--delay-ms ${config.baseDelayMs}`);
  if (config.driver?.timeoutCommitMs !== undefined)
    parts.push(`--commit-ms ${config.driver.timeoutCommitMs}`);
  if (config.membership !== undefined) parts.push(`--membership ${config.membership}`);
  if (config.work !== undefined) parts.push(`--work-ms ${config.work.meanGapMs}`);
  if (config.skewedClocks !== undefined) parts.push(`--skewed-clocks ${config.skewedClocks}`);
  return parts.join(" ");
}

interface FaultPlan {
  readonly network: NetworkConfig;
  readonly crashes: readonly {
    readonly node: number;
    readonly atMs: number;
    readonly downMs: number;
    readonly atWalAppend: boolean;
  }[];
}

function planFaults(config: SimConfig, prng: Prng, honest: readonly number[], windowMs: number): FaultPlan {
  const on = (f: FaultKind) => config.faults.includes(f);
  const partitions: Partition[] = [];
  if (on("partition")) {
    for (let i = prng.between(1, 3); i > 0; i--) {
      const startMs = prng.between(0, Math.max(0, windowMs - 1000));
      const endMs = Math.min(windowMs, startMs + prng.between(1000, 4000));
      const order = prng.shuffle([...Array(config.nodes).keys()]);
      const cut = prng.between(1, config.nodes - 1);
      partitions.push({ startMs, endMs, groups: [order.slice(0, cut), order.slice(cut)] });
    }
  }
  const crashes: FaultPlan["crashes"][number][] = [];
  if (on("crash") && honest.length > 0) {
    for (let i = prng.between(1, 3); i > 0; i--) {
      const atMs = prng.between(200, Math.max(300, windowMs - 1500));
      crashes.push({
        node: prng.pick(honest),
        atMs,
        downMs: Math.min(prng.between(300, 3000), Math.max(100, windowMs - atMs)),
        atWalAppend: prng.chance(0.5),
      });
    }
  }
  return {
    network: {
      baseDelayMs: config.baseDelayMs ?? 10,
      jitterMs: config.jitterMs ?? 20,
      faultWindowMs: windowMs,
      reorderJitterMs: on("reorder") ? prng.between(50, 500) : 0,
      lossProbability: on("loss") ? 0.05 + prng.float() * 0.25 : 0,
      duplicateProbability: on("duplicate") ? 0.05 + prng.float() * 0.2 : 0,
      partitions,
    },
    crashes,
  };
}

/** Reads back what a signer was asked to sign (the canonical sign bytes) for the signature log. */
function parseSignBytes(message: Uint8Array): Omit<SignRecord, "node" | "honest"> {
  const f = decodeCanonical(message, 1024) as readonly unknown[];
  if (f[0] === "citychain/vote/v1") {
    const hash = f[5] as Uint8Array;
    return {
      kind: (f[2] === 1 ? "prevote" : "precommit") as SignKind,
      height: f[3] as number,
      round: f[4] as number,
      value: hash.length === 0 ? "nil" : toHex(hash),
    };
  }
  return {
    kind: "proposal",
    height: f[2] as number,
    round: f[3] as number,
    value: `${toHex(f[5] as Uint8Array)}/${String(f[4])}`,
  };
}

function describeView(view: MachineView | null): string {
  if (view === null) return "down";
  const short = (h: Uint8Array | null) => (h === null ? "nil" : toHex(h).slice(0, 8));
  return (
    `h${view.height} r${view.round} ${view.step}${view.decided ? " decided" : ""} ` +
    `locked ${short(view.lockedValue)}@${view.lockedRound} valid ${short(view.validValue)}@${view.validRound}`
  );
}

export function simulate(config: SimConfig): SimResult {
  return new Simulation(config).run();
}

class Simulation {
  private readonly queue = new EventQueue();
  private readonly prng: Prng;
  private readonly nodes: SimNode[] = [];
  private readonly network: SimNetwork;
  private readonly verifier = new NodeSignatureVerifier();
  private readonly decisions: DecisionRecord[] = [];
  private readonly signs: SignRecord[] = [];
  private readonly violations: Violation[] = [];
  private readonly driverOptions: DriverOptions;
  private readonly honest: number[];
  private readonly byzantine: number[];
  private readonly windowMs: number;
  private readonly deadlineMs: number;
  private readonly plan: FaultPlan;
  private readonly outsider: SimKey;
  private readonly coalition: Map<string, { a: Uint8Array; b: Uint8Array }> | null;
  private readonly oversized: Uint8Array;
  /** Validator list by the height it takes effect (1 = genesis). */
  private readonly schedule: ReadonlyMap<number, readonly Validator[]>;
  /** Nodes with a catch-up request in flight. */
  private readonly syncing = new Set<number>();
  private now = 0;
  private events = 0;
  private timerSeq = 0;
  private doneNodes = 0;
  private aborted = false;
  private crashes = 0;
  private restarts = 0;
  private evidence = 0;
  /** Draws of the work mode's arrivals (forked last, so a config without work draws as before). */
  private readonly workPrng: Prng | null;

  constructor(private readonly config: SimConfig) {
    if (config.nodes < 1 || config.byzantine < 0 || config.byzantine > config.nodes)
      throw new RangeError("bad node counts");
    this.prng = new Prng(config.seed);
    const keyPrng = this.prng.fork();
    const keys = Array.from({ length: config.nodes }, () => deriveKey(keyPrng));
    this.outsider = deriveKey(keyPrng);
    const order = this.prng.shuffle([...Array(config.nodes).keys()]);
    this.byzantine = order.slice(0, config.byzantine).sort((a, b) => a - b);
    this.honest = order.slice(config.byzantine).sort((a, b) => a - b);
    const anyFault = config.faults.length > 0;
    this.windowMs = config.faultWindowMs ?? (anyFault ? defaultFaultWindowMs : 0);
    this.deadlineMs = this.windowMs + (config.livenessBoundMs ?? defaultLivenessBoundMs);
    this.plan = planFaults(config, this.prng, this.honest, this.windowMs);
    this.network = new SimNetwork(
      this.plan.network,
      this.prng.fork(),
      (at, action) => this.at(at, action),
      (to, from, bytes) => this.deliver(to, from, bytes),
    );
    this.coalition = config.colluding ? new Map() : null;
    this.oversized = new Uint8Array(consensusMessageBytesMax(simBlockBytesMax) + 1);
    this.driverOptions = {
      ...defaultDriverOptions,
      chainId: simChainId,
      blockBytesMax: simBlockBytesMax,
      machine: { ...defaultMachineOptions, ...config.machine },
      ...config.driver,
      ...(config.work === undefined ? {} : { waitForWork: true }),
    };
    const validators = keys.map((k, i) => validatorFor(k, validatorPower, i));
    this.schedule = membershipSchedule(config, validators);
    const genesis = genesisValidatorSet(this.schedule.get(1)!);
    const changes = new Map([...this.schedule].filter(([height]) => height > 1));
    const skewed = config.skewedClocks ?? 0;
    if (!(Number.isSafeInteger(skewed) && skewed >= 0 && skewed <= this.honest.length))
      throw new RangeError("skewedClocks is between 0 and the honest nodes");
    const skewOf = new Map(
      this.honest
        .slice(this.honest.length - skewed)
        .map((node, j) => [node, (j % 2 === 0 ? -3 : 3) * simBlockTimeSkewMaxMs]),
    );
    for (let i = 0; i < config.nodes; i++) {
      const isHonest = this.honest.includes(i);
      const skewMs = skewOf.get(i) ?? 0;
      this.nodes.push({
        index: i,
        key: keys[i]!,
        honest: isHonest,
        behaviors: isHonest ? new Set() : this.drawBehaviors(),
        chain: new SimChain(
          i,
          keys[i]!.id,
          genesis,
          {
            onCommit: (node, height, d) => this.onCommit(node, height, d),
            onEvidence: () => {
              this.evidence++;
            },
            onBehind: (node, from) => this.catchUp(node, from === null ? null : Number(from)),
          },
          changes,
          () => clockBaseMs + this.now + skewMs,
        ),
        wal: new MemoryWal(),
        timers: new Set(),
        driver: null,
        generation: 0,
      });
    }
    if (config.work !== undefined && !(config.work.meanGapMs >= 1))
      throw new RangeError("work.meanGapMs is at least 1");
    this.workPrng = config.work === undefined ? null : this.prng.fork();
  }

  private drawBehaviors(): ReadonlySet<ByzantineBehavior> {
    if (this.config.behaviors !== undefined) return new Set(this.config.behaviors);
    const chosen = allBehaviors.filter(() => this.prng.chance(0.5));
    return new Set(chosen.length > 0 ? chosen : [this.prng.pick(allBehaviors)]);
  }

  private at(atMs: number, action: () => void): void {
    this.queue.push(Math.max(atMs, this.now), action);
  }

  run(): SimResult {
    for (const node of this.nodes) this.boot(node);
    for (const c of this.plan.crashes) this.scheduleCrash(c);
    if (this.workPrng !== null) this.scheduleWork(this.workPrng, this.config.work!.meanGapMs);
    const maxMs = this.config.maxVirtualMs ?? this.deadlineMs;
    const eventsMax = this.config.eventsMax ?? defaultEventsMax;
    while (!this.aborted && this.doneNodes < this.honest.length) {
      const next = this.queue.pop();
      if (next === undefined || next.atMs > maxMs) break;
      this.now = next.atMs;
      next.action();
      if (++this.events > eventsMax) {
        this.violations.push({
          invariant: "Liveness",
          message: `event budget of ${eventsMax} spent at ${this.now} ms`,
        });
        break;
      }
    }
    return this.result();
  }

  // ---- nodes ----

  private boot(node: SimNode): void {
    node.generation++;
    const generation = node.generation;
    const clock: TimerClock = {
      now: () => this.now,
      schedule: (atMs, callback) => {
        const id = ++this.timerSeq;
        node.timers.add(id);
        this.at(atMs, () => {
          if (node.generation === generation && node.timers.delete(id)) this.guard(node, callback);
        });
        return id;
      },
      cancel: (id) => {
        node.timers.delete(id);
      },
    };
    const signer: SignerPort = {
      validatorId: node.key.id,
      sign: (message) => {
        this.signs.push({ node: node.index, honest: node.honest, ...parseSignBytes(message) });
        return node.key.sign(message);
      },
    };
    const driver = new ConsensusDriver(
      {
        clock,
        transport: this.transportFor(node),
        signer,
        verifier: this.verifier,
        wal: node.wal,
        app: node.chain,
      },
      this.driverOptions,
    );
    node.driver = driver;
    this.guard(node, () => driver.start());
  }

  private transportFor(node: SimNode): TransportPort {
    const send = (from: number, to: number, bytes: Uint8Array) =>
      this.network.send(from, to, bytes, this.now);
    if (node.honest) {
      return {
        broadcast: (bytes) => {
          for (let to = 0; to < this.nodes.length; to++) if (to !== node.index) send(node.index, to, bytes);
        },
        send: (peer, bytes) => send(node.index, Number(peer), bytes),
      };
    }
    return new Adversary(node.index, node.key, node.behaviors, {
      chainId: simChainId,
      nodeCount: this.nodes.length,
      honestNodes: this.honest,
      prng: this.prng,
      coalition: this.coalition,
      outsider: this.outsider,
      oversized: this.oversized,
      send,
      logSign: (record) => this.signs.push(record),
    });
  }

  /** Runs node code; a SimCrash kills the node, any other throw is a broken invariant and ends the run. */
  private guard(node: SimNode, action: () => void): void {
    try {
      action();
    } catch (error) {
      if (error instanceof SimCrash) {
        this.crash(node);
        return;
      }
      const message = process.env.SIM_STACK
        ? String((error as Error).stack)
        : error instanceof CodedError
          ? error.message
          : String(error);
      this.violations.push({
        invariant: "InvariantAssert",
        message: `node ${node.index} at ${this.now} ms: ${message}`,
      });
      this.aborted = true;
    }
  }

  /**
   * The node's catch-up, as the real node does it (src/node/network-node.ts): it asks a peer that has
   * the next block (the one whose message showed it, else a random honest one) and gets the block
   * with its commit, over the same faulty network; the driver checks the commit before it applies
   * it. One request in flight per node; if it is lost, the next sign of lag (or the retry timer)
   * asks again. Without this a node that does not vote at a height (not in the set) could never
   * learn a decision it missed: decisions are otherwise sent only in reply to a node's own votes.
   */
  private catchUp(index: number, hint: number | null): void {
    const node = this.nodes[index]!;
    if (this.syncing.has(index) || node.driver === null) return;
    const want = node.chain.height() + 1;
    const able = this.honest.filter((i) => i !== index && this.nodes[i]!.chain.height() >= want);
    if (able.length === 0) return;
    const source = hint !== null && able.includes(hint) ? hint : this.prng.pick(able);
    this.syncing.add(index);
    const requestDelayMs = this.config.baseDelayMs ?? 5;
    this.at(this.now + requestDelayMs, () => {
      const d = this.nodes[source]!.chain.decisionAt(want);
      if (d !== undefined) {
        const bytes = encodeConsensusMessage({
          kind: "decision",
          height: want,
          blockBytes: d.blockBytes,
          commit: d.commit,
        });
        this.network.send(source, index, bytes, this.now);
      }
    });
    this.at(this.now + catchUpRetryMs, () => {
      this.syncing.delete(index);
      if (node.chain.height() < want) this.catchUp(index, null);
    });
  }

  private deliver(to: number, from: number, bytes: Uint8Array): void {
    const node = this.nodes[to]!;
    const driver = node.driver;
    if (driver !== null) this.guard(node, () => driver.receive(String(from), bytes));
  }

  /** The next transaction of the work mode, and the one after it, until the run ends. */
  private scheduleWork(prng: Prng, meanGapMs: number): void {
    this.at(this.now + prng.between(meanGapMs, 2 * meanGapMs), () => {
      const origin = prng.between(0, this.nodes.length - 1);
      const { baseDelayMs, jitterMs } = this.plan.network;
      for (const node of this.nodes) {
        const delayMs = node.index === origin ? 0 : baseDelayMs + prng.between(0, jitterMs);
        this.at(this.now + delayMs, () => {
          if (node.driver === null) return; // a node that is down never hears of it
          node.chain.pendingWork++;
          const driver = node.driver;
          this.guard(node, () => driver.wake());
        });
      }
      this.scheduleWork(prng, meanGapMs);
    });
  }

  private crash(node: SimNode): void {
    if (node.driver === null) return;
    node.chain.pendingWork = 0;
    node.driver.stop();
    node.driver = null;
    node.generation++;
    node.timers.clear();
    node.wal.crashAfterNextAppend = false;
    this.crashes++;
  }

  private scheduleCrash(c: FaultPlan["crashes"][number]): void {
    const node = this.nodes[c.node]!;
    this.at(c.atMs, () => {
      if (node.driver === null) return;
      if (c.atWalAppend) node.wal.crashAfterNextAppend = true;
      else this.crash(node);
    });
    this.at(c.atMs + c.downMs, () => {
      node.wal.crashAfterNextAppend = false;
      if (node.driver !== null) return; // an armed crash that never struck
      this.restarts++;
      this.boot(node);
    });
  }

  private onCommit(
    node: number,
    height: number,
    d: { blockHash: Uint8Array; blockBytes: Uint8Array; commit: DecisionRecord["commit"] },
  ): void {
    this.decisions.push({ node, height, ...d, atMs: this.now });
    if (height === this.config.heights && this.honest.includes(node)) this.doneNodes++;
  }

  // ---- result ----

  private log(): SimLog {
    return {
      chainId: simChainId,
      validators: this.nodes[0]!.chain.validatorSet(1).validators,
      validatorsAt: (height) => {
        let found: readonly Validator[] = this.schedule.get(1)!;
        for (const [from, list] of this.schedule) if (from <= height) found = list;
        return found;
      },
      honestNodes: this.honest,
      decisions: this.decisions,
      signs: this.signs,
      targetHeight: this.config.heights,
      livenessDeadlineMs: this.deadlineMs,
      endMs: this.now,
    };
  }

  private result(): SimResult {
    const log = this.log();
    const violations = [...this.violations, ...(this.aborted ? [] : checkAll(log, this.verifier))];
    return {
      ok: violations.length === 0,
      violations,
      reproduce: reproduceCommand(this.config),
      stats: {
        virtualMs: this.now,
        events: this.events,
        network: this.network.stats,
        crashes: this.crashes,
        restarts: this.restarts,
        evidence: this.evidence,
        byzantineNodes: this.byzantine,
        counters: this.sumCounters(),
        heightsDecided: this.nodes.map((n) => n.chain.height()),
        finalViews: this.nodes.map((n) => describeView(n.driver?.view() ?? null)),
      },
      commitIntervalsMs: this.commitIntervals(),
      log,
    };
  }

  private sumCounters(): DriverCounters {
    const sum: Record<string, number> = {};
    for (const node of this.nodes) {
      if (node.driver === null) continue;
      for (const [k, v] of Object.entries(node.driver.counters)) sum[k] = (sum[k] ?? 0) + v;
    }
    return sum as unknown as DriverCounters;
  }

  private commitIntervals(): number[] {
    const out: number[] = [];
    for (const node of this.honest) {
      let previous = 0;
      const mine = this.decisions.filter((d) => d.node === node).sort((a, b) => a.height - b.height);
      for (const d of mine) {
        out.push(d.atMs - previous);
        previous = d.atMs;
      }
    }
    return out;
  }
}
