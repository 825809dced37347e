/**
 * The consensus WAL on SQLite: records come back per height in append order, and the records of
 * decided heights are deleted in the next append's transaction (no write of their own).
 */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import Database from "better-sqlite3";
import type { WalRecord } from "../../src/consensus/wal.ts";
import { SqliteWal } from "../../src/storage/consensus-wal.ts";

function block(height: number, fill: number): WalRecord {
  return {
    kind: "block",
    height,
    blockHash: new Uint8Array(32).fill(fill),
    blockBytes: new Uint8Array([height, fill]),
  };
}

function rowsBelow(db: Database.Database, height: number): number {
  return (db.prepare("SELECT COUNT(*) AS n FROM consensus_wal WHERE height < ?").get(height) as { n: number })
    .n;
}

describe("SqliteWal", () => {
  it("replays a height's records in append order", () => {
    const db = new Database(":memory:");
    const wal = new SqliteWal(db);
    wal.append([block(1, 1), block(1, 2)]);
    wal.append([block(2, 3)]);
    wal.append([block(1, 4)]);
    assert.deepEqual(
      wal.replay(1).map((r) => (r.kind === "block" ? r.blockHash[0] : -1)),
      [1, 2, 4],
    );
    assert.equal(wal.replay(2).length, 1);
    assert.deepEqual(wal.replay(3), []);
    db.close();
  });

  it("deletes decided heights with the next append, not in a write of its own", () => {
    const db = new Database(":memory:");
    const wal = new SqliteWal(db);
    wal.append([block(1, 1)]);
    wal.append([block(2, 2)]);
    const changesBefore = (db.prepare("SELECT total_changes() AS n").get() as { n: number }).n;
    wal.truncateBelow(2);
    wal.truncateBelow(3);
    wal.truncateBelow(1); // never moves back
    assert.equal((db.prepare("SELECT total_changes() AS n").get() as { n: number }).n, changesBefore);
    assert.equal(rowsBelow(db, 3), 2);
    wal.append([block(3, 3)]);
    assert.equal(rowsBelow(db, 3), 0);
    assert.equal(wal.replay(3).length, 1);
    db.close();
  });
});
