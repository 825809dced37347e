/**
 * The access trail's outbox: every read of personal content a node serves is written here, durably,
 * before the plaintext leaves the node; a background flush puts the entries on chain in batches
 * (`license.access.record`), so reads cost one local SQLite insert rather than a block. An entry
 * leaves the outbox only when the block that records it is committed; entries whose transaction was
 * lost (rejected, expired, node restart) are sent again.
 */
import { closeSync, openSync } from "node:fs";
import Database from "better-sqlite3";
import { encodeCanonical } from "../core/encoding.ts";
import type { AccessTrailEntry } from "../core/license/records.ts";

export interface PendingEntry {
  readonly seq: number;
  readonly entry: AccessTrailEntry;
}

export class TrailOutbox {
  private readonly db: Database.Database;
  /** Entries held, kept in step with the table so the read path does not count rows. */
  private count: number;

  static open(path: string): TrailOutbox {
    try {
      closeSync(openSync(path, "wx", 0o600));
    } catch {
      // exists already
    }
    return new TrailOutbox(new Database(path));
  }

  private constructor(db: Database.Database) {
    this.db = db;
    db.pragma("journal_mode = WAL");
    // An acknowledged read must be recorded even after a power cut.
    db.pragma("synchronous = FULL");
    db.exec(`CREATE TABLE IF NOT EXISTS outbox (
      seq INTEGER PRIMARY KEY, entry TEXT NOT NULL, tx_id TEXT, sent_ms INTEGER) STRICT;
      CREATE INDEX IF NOT EXISTS outbox_by_tx ON outbox (tx_id);`);
    this.count = (db.prepare("SELECT COUNT(*) AS n FROM outbox").get() as { n: number }).n;
  }

  add(entry: AccessTrailEntry): void {
    this.db.prepare("INSERT INTO outbox (entry) VALUES (?)").run(JSON.stringify(entry));
    this.count++;
  }

  /** Entries not yet in a transaction, oldest first. */
  unsent(limit: number): PendingEntry[] {
    const rows = this.db
      .prepare("SELECT seq, entry FROM outbox WHERE tx_id IS NULL ORDER BY seq LIMIT ?")
      .all(limit) as Array<{ seq: number; entry: string }>;
    return rows.map((r) => ({ seq: r.seq, entry: JSON.parse(r.entry) as AccessTrailEntry }));
  }

  markSent(seqs: readonly number[], txId: string, nowMs: number): void {
    const mark = this.db.prepare("UPDATE outbox SET tx_id = ?, sent_ms = ? WHERE seq = ?");
    this.db.transaction(() => {
      for (const seq of seqs) mark.run(txId, nowMs, seq);
    })();
  }

  /** The transaction committed: its entries are on chain. */
  settle(txId: string): number {
    const { changes } = this.db.prepare("DELETE FROM outbox WHERE tx_id = ?").run(txId);
    this.count -= changes;
    return changes;
  }

  /** Transactions sent before `beforeMs` and still unsettled: candidates to resend. */
  staleTxs(beforeMs: number): string[] {
    const rows = this.db
      .prepare("SELECT DISTINCT tx_id FROM outbox WHERE tx_id IS NOT NULL AND sent_ms < ?")
      .all(beforeMs) as Array<{ tx_id: string }>;
    return rows.map((r) => r.tx_id);
  }

  /** The transaction will never commit: its entries go back to the queue. */
  requeue(txId: string): void {
    this.db.prepare("UPDATE outbox SET tx_id = NULL, sent_ms = NULL WHERE tx_id = ?").run(txId);
  }

  get size(): number {
    return this.count;
  }

  close(): void {
    this.db.close();
  }
}

/** Canonical form of a trail entry for the transaction payload. */
export function trailEntryPayload(entry: AccessTrailEntry) {
  const value = {
    licenseId: entry.licenseId,
    holder: entry.holder,
    readerDept: entry.readerDept,
    readerId: entry.readerId,
    readAtMs: entry.readAtMs,
    policyRule: entry.policyRule,
    fields: [...entry.fields],
    basis: entry.basis,
  };
  encodeCanonical(value); // asserts it is encodable before it reaches a transaction
  return value;
}
