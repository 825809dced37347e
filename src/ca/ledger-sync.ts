/**
 * Records the CA's decisions on the ledger: new departments (`config.dept.register`) and revocations
 * (`config.cert.revoke`, `config.identity.revoke`). Nodes judge identities by the ledger alone, so a
 * revocation that stays in the CA's registry changes nothing on the network until it is recorded.
 *
 * The ledger is a separate system that may be down: the CA's decision stands in its registry either
 * way. `submit` waits for the commit and reports the transaction's result; a failed or rejected
 * transaction is a `LedgerError` with the ledger's code, and an unreachable or slow ledger is a
 * `LedgerError` with `pending: true`. `sync` replays whatever the registry holds and the ledger lacks,
 * checking each state key first (with its proof verified), so running it twice submits nothing new.
 *
 * The client must sign as an admin of the operator department: only they may sign these transactions.
 */
import type { Canonical } from "../core/encoding.ts";
import {
  type RevocationReason as LedgerRevocationReason,
  revocationReasons as ledgerRevocationReasons,
  stateKeys,
} from "../core/system-state.ts";
import type { CitychainClient, TxStatusJson } from "../sdk/client.ts";
import { CitychainError } from "../sdk/errors.ts";
import { VerificationError } from "../sdk/verify.ts";
import { type CaRegistry, type RevocationReason, revocationReasons } from "./registry.ts";

export const ledgerTxTypes = {
  registerDepartment: "config.dept.register",
  revokeCertificate: "config.cert.revoke",
  revokeIdentity: "config.identity.revoke",
} as const;
export type LedgerTxType = (typeof ledgerTxTypes)[keyof typeof ledgerTxTypes];

export const ledgerSyncDefaults = {
  /** How long the node is asked to wait for the commit (the node allows up to 60 s). */
  commitWaitMs: 15_000,
  /** A whole submission (chain id lookup, submit, wait) gives up after this long and counts as pending. */
  requestTimeoutMs: 20_000,
  /** Registry rows read per page while syncing. */
  syncPageSize: 500,
} as const;

/** Node answers that mean "not now" rather than "no": the record stays pending and sync retries it. */
const transientCodes: ReadonlySet<string> = new Set([
  "NODE_SYNCING",
  "NODE_STOPPING",
  "MEMPOOL_FULL",
  "RATE_LIMITED",
  "TIMEOUT",
  "BAD_RESPONSE",
  "HTTP_ERROR",
]);

/** The CA and the ledger share one list of reasons (src/core/system-state.ts). */
export function ledgerReason(reason: RevocationReason): LedgerRevocationReason {
  return reason;
}

/** Reasons that both the CA and the ledger know: the ones the service and the CLI accept. */
export const recordableReasons: readonly RevocationReason[] = revocationReasons.filter((reason) =>
  (ledgerRevocationReasons as readonly string[]).includes(reason),
);

export interface LedgerCommit {
  readonly txId: string;
  readonly height: number;
  /** The ledger already held this record (a department registered or an id revoked before). */
  readonly alreadyRecorded: boolean;
}

/**
 * A submission that did not end in a successful commit. `pending`: the ledger could not be reached,
 * or did not commit in time; the transaction may still commit, and `sync` settles it either way.
 * Otherwise the ledger refused it, and `code` is the ledger's stable code (FORBIDDEN, CERT_REVOKED, …).
 */
export class LedgerError extends CitychainError {
  constructor(
    code: string,
    message: string,
    readonly pending: boolean,
    readonly txId?: string,
  ) {
    super(code, message, pending ? 503 : 400);
    this.name = "LedgerError";
  }
}

export interface LedgerSyncOptions {
  /** Signs as an admin of the operator department. */
  readonly client: CitychainClient;
  readonly commitWaitMs?: number;
  readonly requestTimeoutMs?: number;
}

export type SyncItemKind = "department" | "identity" | "certificate";

export interface SyncItem {
  readonly kind: SyncItemKind;
  /** Department code, enrollment id or certificate id. */
  readonly id: string;
  /** The state key checked on the ledger. */
  readonly key: string;
  readonly result: "present" | "recorded" | "pending" | "failed" | "covered";
  readonly txId?: string;
  readonly height?: number;
  readonly code?: string;
  readonly message?: string;
}

export interface SyncReport {
  readonly checked: number;
  readonly present: number;
  readonly recorded: number;
  /** Certificate revocations covered by their identity's revocation on the ledger. */
  readonly covered: number;
  readonly pending: number;
  readonly failed: number;
  /** Every item that was not already present (recorded, covered, pending or failed). */
  readonly items: SyncItem[];
}

export class LedgerSync {
  private readonly client: CitychainClient;
  private readonly commitWaitMs: number;
  private readonly requestTimeoutMs: number;

  constructor(options: LedgerSyncOptions) {
    this.client = options.client;
    this.commitWaitMs = options.commitWaitMs ?? ledgerSyncDefaults.commitWaitMs;
    this.requestTimeoutMs = options.requestTimeoutMs ?? ledgerSyncDefaults.requestTimeoutMs;
  }

  /** The certificate id of the identity the records are signed by. */
  get signerCertId(): string {
    return this.client.identity.certId;
  }

  registerDepartment(code: string, name: string): Promise<LedgerCommit> {
    return this.submit(ledgerTxTypes.registerDepartment, { code, name });
  }

  revokeCertificate(certId: string, reason: RevocationReason, revokedMs: number): Promise<LedgerCommit> {
    return this.submit(ledgerTxTypes.revokeCertificate, {
      certId,
      reason: ledgerReason(reason),
      revokedAtMs: revokedMs,
    });
  }

  revokeIdentity(enrollmentId: string, reason: RevocationReason, revokedMs: number): Promise<LedgerCommit> {
    return this.submit(ledgerTxTypes.revokeIdentity, {
      enrollmentId,
      reason: ledgerReason(reason),
      revokedAtMs: revokedMs,
    });
  }

  /** Builds, signs and submits one configuration transaction and waits for its commit. */
  async submit(type: LedgerTxType, payload: Canonical): Promise<LedgerCommit> {
    let status: TxStatusJson;
    try {
      status = await this.withTimeout(async () => {
        const built = await this.client.buildTx(type, payload);
        return this.client.submitBytes(built.bytes, { wait: true, waitMs: this.commitWaitMs });
      });
    } catch (error) {
      throw asLedgerError(error);
    }
    return settle(type, status);
  }

  /** Whether the ledger holds `key` (proof and commit verified by the client). */
  async has(key: string): Promise<boolean> {
    try {
      const { value } = await this.withTimeout(() => this.client.state(key));
      return value !== null;
    } catch (error) {
      throw asLedgerError(error);
    }
  }

  /**
   * Replays every department and revocation the registry holds and the ledger lacks: departments
   * first (revocations name them), then revoked identities, then revoked certificates whose identity
   * is not revoked on the ledger already. Idempotent. Throws a pending LedgerError only when the
   * ledger cannot even be read; a record that cannot be written is reported and the rest go on.
   */
  async sync(registry: CaRegistry, onItem: (item: SyncItem) => void = () => {}): Promise<SyncReport> {
    const items: SyncItem[] = [];
    let checked = 0;
    let present = 0;
    const note = (item: SyncItem) => {
      checked++;
      if (item.result === "present") present++;
      else items.push(item);
      onItem(item);
    };

    for (const department of registry.listDepartments()) {
      const key = stateKeys.dept(department.code);
      note(
        await this.ensure("department", department.code, key, () =>
          this.registerDepartment(department.code, department.name),
        ),
      );
    }

    const identitiesOnLedger = new Set<string>();
    for (let cursor: string | null = null; ; ) {
      const page = registry.listIdentityRevocations({ cursor, limit: ledgerSyncDefaults.syncPageSize });
      for (const revocation of page.items) {
        const key = stateKeys.revokedIdentity(revocation.enrollmentId);
        const item = await this.ensure("identity", revocation.enrollmentId, key, () =>
          this.revokeIdentity(revocation.enrollmentId, revocation.reason, revocation.revokedMs),
        );
        if (item.result === "present" || item.result === "recorded")
          identitiesOnLedger.add(revocation.enrollmentId);
        note(item);
      }
      cursor = page.nextCursor;
      if (cursor === null) break;
    }

    for (let cursor: string | null = null; ; ) {
      const page = registry.listRevocations({ cursor, limit: ledgerSyncDefaults.syncPageSize });
      for (const revocation of page.items) {
        const key = stateKeys.revokedCert(revocation.certId);
        if (identitiesOnLedger.has(revocation.enrollmentId)) {
          note({ kind: "certificate", id: revocation.certId, key, result: "covered" });
          continue;
        }
        note(
          await this.ensure("certificate", revocation.certId, key, () =>
            this.revokeCertificate(revocation.certId, revocation.reason, revocation.revokedMs),
          ),
        );
      }
      cursor = page.nextCursor;
      if (cursor === null) break;
    }

    const count = (result: SyncItem["result"]) => items.filter((item) => item.result === result).length;
    return {
      checked,
      present,
      recorded: count("recorded"),
      covered: count("covered"),
      pending: count("pending"),
      failed: count("failed"),
      items,
    };
  }

  private async ensure(
    kind: SyncItemKind,
    id: string,
    key: string,
    record: () => Promise<LedgerCommit>,
  ): Promise<SyncItem> {
    if (await this.has(key)) return { kind, id, key, result: "present" };
    try {
      const commit = await record();
      return { kind, id, key, result: "recorded", txId: commit.txId, height: commit.height };
    } catch (error) {
      const e = asLedgerError(error);
      return {
        kind,
        id,
        key,
        result: e.pending ? "pending" : "failed",
        code: e.code,
        message: e.message,
        ...(e.txId === undefined ? {} : { txId: e.txId }),
      };
    }
  }

  private withTimeout<T>(run: () => Promise<T>): Promise<T> {
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(
        () =>
          reject(
            new LedgerError("TIMEOUT", `the ledger did not answer within ${this.requestTimeoutMs} ms`, true),
          ),
        this.requestTimeoutMs,
      );
    });
    return Promise.race([run(), timeout]).finally(() => clearTimeout(timer));
  }
}

function settle(type: LedgerTxType, status: TxStatusJson): LedgerCommit {
  if (status.status === "pending") {
    throw new LedgerError(
      "TIMEOUT",
      `transaction ${status.txId} was accepted but not committed in time; \`citychain ca sync\` settles it`,
      true,
      status.txId,
    );
  }
  if (status.status === "rejected") {
    throw new LedgerError(status.code ?? "TX_FAILED", status.message ?? "rejected", false, status.txId);
  }
  if (status.code !== "OK") {
    // A department the ledger already has is the outcome we wanted.
    if (type === ledgerTxTypes.registerDepartment && status.code === "CONFLICT") {
      return { txId: status.txId, height: status.height ?? 0, alreadyRecorded: true };
    }
    throw new LedgerError(status.code ?? "TX_FAILED", status.message ?? "failed", false, status.txId);
  }
  const data = status.data as { alreadyRevoked?: unknown } | null | undefined;
  return { txId: status.txId, height: status.height ?? 0, alreadyRecorded: data?.alreadyRevoked === true };
}

function asLedgerError(error: unknown): LedgerError {
  if (error instanceof LedgerError) return error;
  if (error instanceof CitychainError) {
    const transient = transientCodes.has(error.code) || error.status >= 500;
    return new LedgerError(error.code, `ledger: ${error.message}`, transient);
  }
  if (error instanceof VerificationError) {
    return new LedgerError(
      "VERIFICATION_FAILED",
      `the node's answer does not verify: ${error.message}`,
      false,
    );
  }
  // fetch failures (refused, reset, DNS, TLS) arrive as TypeError with a cause; none of them is a "no".
  const cause = (error as { cause?: { code?: string; message?: string } } | null)?.cause;
  const detail = cause?.code ?? cause?.message ?? (error as Error | null)?.message ?? String(error);
  return new LedgerError("UNREACHABLE", `the ledger is unreachable (${detail})`, true);
}
