/**
 * The consensus write-ahead log on disk: what this node signed (proposals, votes, and the blocks
 * they name), kept in the node's SQLite database. `append` commits one SQLite transaction with
 * synchronous=FULL before it returns, so a signed message is durable before it leaves the node;
 * after a crash, `replay` hands the driver everything it signed at a height and it cannot sign
 * anything different (docs/spec/consensus.md, NoDoubleSign).
 */
import type Database from "better-sqlite3";
import type { Wal } from "../consensus/ports.ts";
import type { WalRecord } from "../consensus/wal.ts";
import { decodeWalRecord, encodeWalRecord, walRecordHeight } from "../consensus/wal.ts";
import { assert } from "../core/errors.ts";

/** Records kept for one height at most: a few per round; beyond this something is looping. */
export const walRecordsPerHeightMax = 100_000;

export class SqliteWal implements Wal {
  private readonly insert;
  private readonly select;
  private readonly count;
  private readonly prune;

  private readonly appendAll: (records: readonly WalRecord[]) => void;
  /** Heights below this are decided; their records go with the next append's transaction. */
  private pruneBelow = 0;
  private prunedBelow = 0;

  constructor(db: Database.Database) {
    db.exec(`CREATE TABLE IF NOT EXISTS consensus_wal (
      seq INTEGER PRIMARY KEY AUTOINCREMENT, height INTEGER NOT NULL, record BLOB NOT NULL);
      CREATE INDEX IF NOT EXISTS consensus_wal_by_height ON consensus_wal (height, seq);`);
    this.insert = db.prepare<[number, Buffer]>("INSERT INTO consensus_wal (height, record) VALUES (?, ?)");
    this.select = db.prepare<[number], { record: Buffer }>(
      "SELECT record FROM consensus_wal WHERE height = ? ORDER BY seq",
    );
    this.count = db.prepare<[number], { n: number }>(
      "SELECT COUNT(*) AS n FROM consensus_wal WHERE height = ?",
    );
    this.prune = db.prepare<[number]>("DELETE FROM consensus_wal WHERE height < ?");
    this.appendAll = db.transaction((records: readonly WalRecord[]) => {
      if (this.pruneBelow > this.prunedBelow) {
        this.prune.run(this.pruneBelow);
        this.prunedBelow = this.pruneBelow;
      }
      for (const record of records) {
        const height = walRecordHeight(record);
        assert(
          this.count.get(height)!.n < walRecordsPerHeightMax,
          `WAL records for height ${height} within bound`,
        );
        this.insert.run(height, Buffer.from(encodeWalRecord(record)));
      }
    });
  }

  append(records: readonly WalRecord[]): void {
    // One SQLite transaction is one durable write (the database runs synchronous=FULL).
    this.appendAll(records);
  }

  replay(height: number): readonly WalRecord[] {
    return this.select.all(height).map((row) => decodeWalRecord(row.record));
  }

  /**
   * Decided heights' records are deleted in the next append's transaction rather than in one of
   * their own: a write transaction per height fewer, and a crash before that append only leaves
   * records that `replay` of a later height never reads.
   */
  truncateBelow(height: number): void {
    this.pruneBelow = Math.max(this.pruneBelow, height);
  }
}
