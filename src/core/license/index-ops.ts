/**
 * Rows for the license indexes, derived from one block's execution. Indexes are not consensus: they
 * are what a node builds from its committed blocks so that search by holder, type, issuer, status
 * and date, a license's history and the access trail run on indexes rather than scans. They are
 * written in the same storage transaction as the block, so they never lag or lead the ledger.
 */
import type { Canonical } from "../encoding.ts";
import { decodeStoredCanonical } from "../encoding.ts";
import type { BlockExecution } from "../execution.ts";
import type { StateReader } from "../state.ts";
import type { AccessTrailEntry, LicenseHead, LicenseVersion } from "./records.ts";

export interface LicenseRow {
  readonly licenseKey: string;
  readonly currentId: string;
  readonly typeCode: string;
  readonly issuerDept: string;
  readonly holder: string;
  readonly status: LicenseHead["status"];
  readonly validFromMs: number;
  readonly validUntilMs: number | null;
  readonly statusIndex: number;
  readonly height: number;
  /** Block time of the block that first issued the license (kept on later updates). */
  readonly firstIssuedMs: number;
}

export interface LicenseEventRow {
  readonly licenseKey: string;
  readonly licenseId: string;
  readonly event: string;
  readonly by: string;
  readonly txId: string;
  readonly height: number;
  readonly atMs: number;
  /** The department a consent event concerns, or null. */
  readonly dept: string | null;
}

export interface TrailRow extends AccessTrailEntry {
  readonly txId: string;
  readonly height: number;
}

export interface LicenseIndexOps {
  readonly licenses: readonly LicenseRow[];
  readonly events: readonly LicenseEventRow[];
  readonly trail: readonly TrailRow[];
  /** Subjects forgotten in this block: their keys must be destroyed on this node. */
  readonly forgotten: readonly string[];
}

const headPrefix = "lic/l/";

function decodeRecord<T>(bytes: Uint8Array | null | undefined): T | undefined {
  if (bytes === null || bytes === undefined) return undefined;
  return decodeStoredCanonical(bytes, 1024 * 1024) as unknown as T;
}

type ResultData = { readonly [key: string]: Canonical } | null;

export function licenseIndexOps(
  execution: Pick<BlockExecution, "writes" | "results" | "included">,
  after: StateReader,
  height: number,
  timeMs: number,
): LicenseIndexOps {
  const licenses: LicenseRow[] = [];
  for (const [key, value] of execution.writes) {
    if (!key.startsWith(headPrefix)) continue;
    const head = decodeRecord<LicenseHead>(value);
    if (head === undefined) continue;
    const version = decodeRecord<LicenseVersion>(after.get(`lic/v/${head.currentId}`));
    if (version === undefined) continue;
    licenses.push({
      licenseKey: head.licenseKey,
      currentId: head.currentId,
      typeCode: head.typeCode,
      issuerDept: head.issuerDept,
      holder: head.holder,
      status: head.status,
      validFromMs: version.validFromMs,
      validUntilMs: version.validUntilMs,
      statusIndex: head.statusIndex,
      height,
      firstIssuedMs: version.version === 1 ? version.issuedAtMs : timeMs,
    });
  }
  const events: LicenseEventRow[] = [];
  const trail: TrailRow[] = [];
  const forgotten: string[] = [];
  execution.results.forEach((result, i) => {
    const tx = execution.included[i]!;
    if (result.code !== "OK" || !tx.body.type.startsWith("license.")) return;
    const data = result.data as ResultData;
    if (data === null || typeof data.event !== "string") return;
    if (data.event === "forget") forgotten.push(data.pseudonym as string);
    else if (data.event === "access") trail.push(...trailRows(tx.body.payload, tx.id, height));
    else if (typeof data.licenseKey === "string") {
      events.push({
        licenseKey: data.licenseKey,
        licenseId: data.id as string,
        event: data.event,
        by: data.by as string,
        txId: tx.id,
        height,
        atMs: timeMs,
        dept: typeof data.dept === "string" ? data.dept : null,
      });
    }
  });
  return { licenses, events, trail, forgotten };
}

function trailRows(payload: Canonical, txId: string, height: number): TrailRow[] {
  const entries = (payload as unknown as { entries: AccessTrailEntry[] }).entries;
  return entries.map((e) => ({ ...e, txId, height }));
}
