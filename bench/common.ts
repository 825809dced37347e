/**
 * Measuring helpers shared by the benchmarks: the machine's busy share from /proc/stat, a process's
 * CPU time from /proc/<pid>/stat, this process's own CPU, percentiles, and a yardstick of the
 * machine's speed.
 */
import crypto from "node:crypto";
import fs from "node:fs";

/**
 * P-256 verifications a second on this thread (cached key, 200-byte message) over `ms`: a yardstick
 * printed with the figures, because machines of this kind have measured anywhere from ~12,000 to
 * ~22,000 and every other figure moves with it.
 */
export function p256VerifyRate(ms = 1000): number {
  const { privateKey, publicKey } = crypto.generateKeyPairSync("ec", { namedCurve: "prime256v1" });
  const message = Buffer.alloc(200, 1);
  const signature = crypto.sign("sha256", message, privateKey);
  let count = 0;
  const start = performance.now();
  while (performance.now() - start < ms) {
    crypto.verify("sha256", message, publicKey, signature);
    count++;
  }
  return Math.round((count * 1000) / (performance.now() - start));
}

export function cpuTimes(): { busy: number; total: number } {
  const line = fs.readFileSync("/proc/stat", "utf8").split("\n")[0]!.trim().split(/\s+/).slice(1).map(Number);
  const idle = line[3]! + line[4]!;
  const total = line.reduce((a, b) => a + b, 0);
  return { busy: total - idle, total };
}

export function processCpuMs(pids: number | readonly number[]): number {
  if (typeof pids !== "number") return pids.reduce((sum, pid) => sum + processCpuMs(pid), 0);
  return statCpuMs(`/proc/${pids}/stat`);
}

/**
 * CPU of the processes' main threads only (the thread whose id is the process's): in a node that is
 * the event loop, where consensus, execution, storage and the API run; the rest of a process's CPU
 * is its signature-verifying workers, libuv's pool and V8's own threads.
 */
export function mainThreadCpuMs(pids: number | readonly number[]): number {
  if (typeof pids !== "number") return pids.reduce((sum, pid) => sum + mainThreadCpuMs(pid), 0);
  return statCpuMs(`/proc/${pids}/task/${pids}/stat`);
}

/** utime + stime of a /proc stat file, in ms (clock ticks of 10 ms). */
function statCpuMs(file: string): number {
  const fields = fs.readFileSync(file, "utf8").split(") ")[1]!.split(" ");
  const ticks = Number(fields[11]) + Number(fields[12]);
  return (ticks * 1000) / 100;
}

export function percentile(sorted: readonly number[], p: number): number {
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))]!;
}

export interface Measured<T> {
  readonly result: T;
  readonly seconds: number;
  /** Share of both cores busy (anyone's work) during the run. */
  readonly machineBusy: number;
  /** Cores the measured processes used. */
  readonly nodeCores: number;
  /** Of those, their main threads' (mainThreadCpuMs). */
  readonly mainThreadCores: number;
  /** Cores this process (the load generator) used. */
  readonly loadgenCores: number;
}

export async function measure<T>(
  pids: number | readonly number[],
  run: () => Promise<T>,
): Promise<Measured<T>> {
  const c0 = cpuTimes();
  const n0 = processCpuMs(pids);
  const m0 = mainThreadCpuMs(pids);
  const s0 = process.cpuUsage();
  const t0 = performance.now();
  const result = await run();
  const seconds = (performance.now() - t0) / 1000;
  const c1 = cpuTimes();
  const s1 = process.cpuUsage(s0);
  return {
    result,
    seconds,
    machineBusy: (c1.busy - c0.busy) / (c1.total - c0.total),
    nodeCores: (processCpuMs(pids) - n0) / 1000 / seconds,
    mainThreadCores: (mainThreadCpuMs(pids) - m0) / 1000 / seconds,
    loadgenCores: (s1.user + s1.system) / 1e6 / seconds,
  };
}

export function describeLoad(m: Measured<unknown>): string {
  return (
    `machine busy ${(m.machineBusy * 100).toFixed(0)}%, node ${m.nodeCores.toFixed(2)} cores` +
    ` (main threads ${m.mainThreadCores.toFixed(2)}), load generator ${m.loadgenCores.toFixed(2)} cores`
  );
}

/** Runs `worker` on `lanes` concurrent lanes until `next()` returns undefined. */
export async function lanes<T>(count: number, next: () => T | undefined, worker: (item: T) => Promise<void>) {
  await Promise.all(
    Array.from({ length: count }, async () => {
      for (let item = next(); item !== undefined; item = next()) await worker(item);
    }),
  );
}
