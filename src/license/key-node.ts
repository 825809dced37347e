/**
 * A department's key node (docs/licenses.md "Who holds which key"): the node that holds, for the
 * departments it serves, their per-subject private keys, and so the only place where those
 * departments' officers can read personal content. It
 *   - turns a holder's code into the keyed pseudonym (the consortium pseudonym key lives here),
 *   - makes a department's key pair for a subject on first need (the public half goes on chain),
 *   - opens sealed content under the type's policy and the holder's consent, returning only the
 *     fields the policy allows, after writing the read to the trail outbox,
 *   - puts the trail on chain in batches signed by the node's own identity,
 *   - destroys its keys for a subject as soon as the block that forgets the subject commits.
 */
import { mkdirSync } from "node:fs";
import path from "node:path";
import type { Canonical } from "../core/encoding.ts";
import { CodedError } from "../core/errors.ts";
import type { Identity } from "../core/identity.ts";
import { decideDecrypt, holderFields } from "../core/license/policy.ts";
import {
  type AccessTrailEntry,
  type ConsentRecord,
  type LicenseVersion,
  licenseKeys,
  type WrappedKey,
} from "../core/license/records.ts";
import { readRecord } from "../core/system-state.ts";
import type { ChainNode } from "../node/node.ts";
import { openPersonal, pseudonymOf } from "../sdk/sealing.ts";
import { buildTx, type TxIdentity } from "../sdk/tx-builder.ts";
import { KeyStore } from "./key-store.ts";
import { effectiveStatus, licenseReader } from "./reader.ts";
import { readSecretFile } from "./secret-file.ts";
import { TrailOutbox, trailEntryPayload } from "./trail-outbox.ts";

export const keyNodeFiles = {
  keyStore: path.join("keys", "subject-keys.db"),
  pseudonymKey: path.join("secrets", "pseudonym.key"),
  trailOutbox: "trail-outbox.db",
} as const;

export const pseudonymKeyPurpose = "pseudonym-key";

export interface KeyNodeOptions {
  readonly dir: string;
  readonly passphrase: string;
  /** Departments whose per-subject keys this node holds. */
  readonly departments: readonly string[];
  /** The node's own identity: it signs the access-trail transactions. */
  readonly identity: TxIdentity;
  readonly trailFlushMs: number;
  readonly trailBatchMax: number;
  /** Resend a trail batch not committed after this long. */
  readonly trailResendMs: number;
  readonly now: () => number;
}

export const keyNodeDefaults = { trailFlushMs: 250, trailBatchMax: 500, trailResendMs: 60_000 } as const;
/**
 * Reads not yet on chain that a key node holds at most. Beyond it (the chain has not taken the trail
 * for a long while) reads of personal content wait: none may go unrecorded, and none unbounded.
 */
export const trailOutboxEntriesMax = 100_000;

export interface OpenedLicense {
  readonly id: string;
  readonly holder: string;
  /** Only the fields the policy allows, by name (holderName, holderCode and the type's personal fields). */
  readonly fields: { readonly [name: string]: unknown };
  readonly policyRules: readonly string[];
  readonly basis: "issuer" | "consent";
  readonly status: string;
}

export class LicenseKeyNode {
  private timer: NodeJS.Timeout | null = null;
  private flushing = false;
  private stopped = false;

  private constructor(
    private readonly node: ChainNode,
    private readonly keys: KeyStore,
    private readonly outbox: TrailOutbox,
    private readonly pseudonymKey: Uint8Array | null,
    private readonly options: KeyNodeOptions,
  ) {}

  static open(node: ChainNode, options: KeyNodeOptions): LicenseKeyNode {
    mkdirSync(path.join(options.dir, path.dirname(keyNodeFiles.keyStore)), { recursive: true, mode: 0o700 });
    const keys = KeyStore.open({
      path: path.join(options.dir, keyNodeFiles.keyStore),
      passphrase: options.passphrase,
      create: true,
      now: options.now,
    });
    const outbox = TrailOutbox.open(path.join(options.dir, keyNodeFiles.trailOutbox));
    let pseudonymKey: Uint8Array | null = null;
    try {
      pseudonymKey = readSecretFile(
        path.join(options.dir, keyNodeFiles.pseudonymKey),
        options.passphrase,
        pseudonymKeyPurpose,
      );
    } catch (error) {
      if (!(error instanceof CodedError && error.code === "NOT_FOUND")) throw error;
    }
    const keyNode = new LicenseKeyNode(node, keys, outbox, pseudonymKey, options);
    node.ledger.licenseListeners.push((ops) => keyNode.onCommitted(ops.forgotten, ops.trail));
    return keyNode;
  }

  serves(dept: string): boolean {
    return this.options.departments.includes(dept);
  }

  get departments(): readonly string[] {
    return this.options.departments;
  }

  async pseudonym(codeType: string, code: string): Promise<string> {
    if (this.pseudonymKey === null)
      throw new CodedError("DECRYPT_UNAVAILABLE", "this node holds no pseudonym key", "code");
    return pseudonymOf(this.pseudonymKey, codeType, code);
  }

  /** The department's public key for the subject, made on first need; says whether it is on chain. */
  async departmentKey(
    dept: string,
    pseudonym: string,
  ): Promise<{ publicKey: Uint8Array; published: boolean }> {
    this.requireServes(dept);
    const reader = licenseReader(this.node.ledger.state);
    const subject = reader.subject(pseudonym);
    if (subject.status === "forgotten")
      throw new CodedError("SUBJECT_FORGOTTEN", `data subject ${pseudonym} has been forgotten`, "pseudonym");
    const onChain = this.node.ledger.state.get(licenseKeys.deptSubjectKey(pseudonym, dept));
    const { publicKey } = await this.keys.getOrCreateEncryptionKey(dept, pseudonym);
    if (onChain !== undefined && !Buffer.from(onChain).equals(Buffer.from(publicKey))) {
      throw new CodedError(
        "CONFLICT",
        `${dept}'s key for this subject on chain is not this node's`,
        "pseudonym",
      );
    }
    return { publicKey, published: onChain !== undefined };
  }

  /** Opens a license's personal content for the caller (see the file comment for the checks). */
  async open(caller: Identity, ref: string, asked: readonly string[] | null): Promise<OpenedLicense> {
    const state = this.node.ledger.state;
    const reader = licenseReader(state);
    const { head, version } = reader.resolve(ref);
    const type = reader.type(head.typeCode);
    const decision = decideDecrypt(
      reader.policy(type.code),
      caller,
      { issuers: type.issuers, issuerDept: head.issuerDept },
      type.personalFields,
      asked,
    );
    if (decision.denied !== null) {
      throw new CodedError(
        "POLICY_DENIED",
        `${caller.dept} may not read ${decision.denied.field} of ${type.code}: rule ${decision.denied.rule}`,
        decision.denied.field,
      );
    }
    if (decision.fields.length === 0)
      throw new CodedError(
        "POLICY_DENIED",
        `${caller.dept} may read no field of ${type.code}: rule default-deny`,
      );
    const subject = reader.subject(version.holder);
    if (subject.status === "forgotten")
      throw new CodedError("SUBJECT_FORGOTTEN", "the holder has been forgotten; the content is unreadable");
    const basis = this.basisFor(caller.dept, head.issuerDept, head.licenseKey);
    const wrapped = readRecord(state, licenseKeys.wrappedKey(version.id, caller.dept)) as
      | WrappedKey
      | undefined;
    if (wrapped === undefined)
      throw new CodedError("CONSENT_REQUIRED", `no key for ${caller.dept} on version ${version.id}`);
    this.requireServes(caller.dept);
    if (this.outbox.size >= trailOutboxEntriesMax)
      throw new CodedError(
        "RATE_LIMITED",
        "the access trail has not reached the chain yet; try again shortly",
      );
    const personal = await this.decrypt(caller.dept, version, wrapped);
    const fields: Record<string, unknown> = {};
    for (const name of decision.fields) {
      if ((holderFields as readonly string[]).includes(name))
        fields[name] = name === "holderName" ? personal.holderName : personal.holderCode;
      else if (Object.hasOwn(personal.fields, name)) fields[name] = personal.fields[name];
    }
    const entry: AccessTrailEntry = {
      licenseId: version.id,
      holder: version.holder,
      readerDept: caller.dept,
      readerId: caller.enrollmentId,
      readAtMs: this.options.now(),
      policyRule: decision.rules[0]!,
      fields: decision.fields,
      basis,
    };
    // Durable before the plaintext is returned: no read goes unrecorded, even across a crash.
    this.outbox.add(entry);
    this.schedule();
    return {
      id: version.id,
      holder: version.holder,
      fields,
      policyRules: [...new Set(decision.rules)],
      basis,
      status: effectiveStatus(head, version, this.options.now()),
    };
  }

  private basisFor(dept: string, issuerDept: string, licenseKey: string): "issuer" | "consent" {
    if (dept === issuerDept) return "issuer";
    const consent = readRecord(this.node.ledger.state, licenseKeys.consent(licenseKey, dept)) as
      | ConsentRecord
      | undefined;
    if (consent?.status !== "granted")
      throw new CodedError(
        "CONSENT_REQUIRED",
        `the holder has not consented to ${dept} reading this license`,
      );
    if (consent.untilMs !== null && consent.untilMs < this.options.now())
      throw new CodedError("CONSENT_REQUIRED", `the holder's consent for ${dept} has ended`);
    return "consent";
  }

  private async decrypt(dept: string, version: LicenseVersion, wrapped: WrappedKey) {
    if (version.sealed === null)
      throw new CodedError("STORAGE_CORRUPT", `license ${version.id} has no sealed content`);
    const dataKey = await this.keys.unwrap(dept, version.holder, wrapped, version.id, dept);
    try {
      return await openPersonal(version.id, version.sealed, dataKey);
    } finally {
      dataKey.fill(0);
    }
  }

  private requireServes(dept: string): void {
    if (!this.serves(dept)) {
      throw new CodedError(
        "DECRYPT_UNAVAILABLE",
        `this node holds no keys for ${dept}; ask ${dept}'s key node`,
        "dept",
      );
    }
  }

  // ---- committed blocks ----

  private onCommitted(forgotten: readonly string[], trail: ReadonlyArray<{ txId: string }>): void {
    for (const pseudonym of forgotten) this.keys.destroySubject(pseudonym);
    for (const txId of new Set(trail.map((t) => t.txId))) this.outbox.settle(txId);
  }

  // ---- trail flushing ----

  start(): void {
    this.schedule();
  }

  private schedule(): void {
    if (this.timer !== null || this.stopped) return;
    this.timer = setTimeout(() => {
      this.timer = null;
      void this.flush();
    }, this.options.trailFlushMs);
    this.timer.unref();
  }

  /** Sends unsent entries in batches; requeues batches that never committed. */
  async flush(): Promise<void> {
    if (this.flushing || this.stopped) return;
    this.flushing = true;
    try {
      this.requeueLost();
      for (;;) {
        const batch = this.outbox.unsent(this.options.trailBatchMax);
        if (batch.length === 0) break;
        const built = await buildTx({
          chainId: this.node.ledger.params().chainId,
          type: "license.access.record",
          payload: { entries: batch.map((p) => trailEntryPayload(p.entry)) as unknown as Canonical },
          signers: [this.options.identity],
          nowMs: this.options.now(),
        });
        const status = await this.node.submit(built.bytes);
        if (status.status === "rejected") {
          // Not admitted now (mempool full, syncing): try again on the next tick.
          break;
        }
        this.outbox.markSent(
          batch.map((p) => p.seq),
          built.id,
          this.options.now(),
        );
        if (batch.length < this.options.trailBatchMax) break;
      }
    } catch {
      // The entries stay in the outbox; the next tick tries again.
    } finally {
      this.flushing = false;
      if (this.outbox.size > 0) this.schedule();
    }
  }

  private requeueLost(): void {
    const before = this.options.now() - this.options.trailResendMs;
    for (const txId of this.outbox.staleTxs(before)) {
      const status = this.node.status(txId);
      if (status.status === "committed") this.outbox.settle(txId);
      else if (status.status !== "pending") this.outbox.requeue(txId);
    }
  }

  get pendingTrail(): number {
    return this.outbox.size;
  }

  async stop(): Promise<void> {
    this.stopped = true;
    if (this.timer !== null) clearTimeout(this.timer);
    this.timer = null;
    this.keys.close();
    this.outbox.close();
  }
}
