/**
 * The node's embedded database (SQLite through better-sqlite3): blocks, commit certificates, the
 * transaction index, world state and the state tree's nodes.
 *
 * Crash safety: a block, its commit, its results and its state writes go to disk in one SQLite
 * transaction (WAL journal, synchronous=FULL), and nothing is acknowledged before that transaction
 * returns. After `kill -9` at any instant the database holds every block up to the last
 * acknowledged one, whole, and nothing of a block that was not acknowledged.
 *
 * The state tree's nodes are written every `treeFlushBlocks` blocks (or sooner when the unwritten
 * ones grow past `treeFlushBytesMax`), not with every block: between two flushes they are held in
 * memory, each node once in its latest version. The stored tree is therefore the tree of block
 * `treeHeight()`; what carries it to the latest block is in the block transactions already: each
 * state row records the height that last wrote it, and a deletion leaves a row in state_deletions.
 * A restart replays those (Ledger) and `citychain verify` checks both (audit.ts). A node rewritten
 * by many blocks, like the upper ones every block touches, is written once per flush instead of
 * once per block: bench/storage.ts measures the difference.
 */
import fs from "node:fs";
import path from "node:path";
import Database from "better-sqlite3";
import { assert, CodedError } from "../core/errors.ts";
import type { LicenseIndexOps } from "../core/license/index-ops.ts";
import { LicenseIndex, licenseIndexSchema } from "./license-index.ts";

/**
 * 3: the state tree's nodes are written in flushes (meta `treeHeight`, table state_deletions; see
 * the note at the top). A version-2 store's tree is at its latest block and
 * is upgraded in place on open; a version-2 binary refuses a version-3 store, whose stored tree may
 * lag its blocks.
 */
export const chainStoreSchemaVersion = 3;
const upgradableSchemaVersions = new Set(["2"]);
export const chainDbFileName = "chain.db";

export interface StoredTx {
  readonly id: string;
  readonly height: number;
  readonly index: number;
  readonly code: string;
  readonly message: string;
  readonly data: Uint8Array;
}

export interface BlockRow {
  readonly height: number;
  readonly hash: Uint8Array;
  readonly timeMs: number;
  readonly txCount: number;
  readonly bytes: Uint8Array;
}

export interface BlockCommitBatch {
  readonly height: number;
  readonly hash: Uint8Array;
  readonly timeMs: number;
  readonly blockBytes: Uint8Array;
  readonly txCount: number;
  readonly commitBytes: Uint8Array | null;
  readonly txs: ReadonlyArray<Omit<StoredTx, "height">>;
  readonly stateWrites: ReadonlyMap<string, Uint8Array | null>;
  /**
   * The state tree's node writes for this block (SmtBatchResult.nodeWrites). The store keeps copies
   * until its next flush, so the arrays may be reused afterwards.
   */
  readonly treeWrites: ReadonlyMap<string, Uint8Array | null>;
  readonly stateRoot: Uint8Array;
  /** Node-local records that must move with the block (e.g. the next height's proposer priorities). */
  readonly meta?: ReadonlyMap<string, Uint8Array>;
  /** Index rows derived from the block (src/core/license/index-ops.ts). */
  readonly licenseIndex?: LicenseIndexOps;
}

const schema = `
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value BLOB NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS blocks (
  height INTEGER PRIMARY KEY, hash BLOB NOT NULL UNIQUE, time_ms INTEGER NOT NULL,
  tx_count INTEGER NOT NULL, block BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS commits (height INTEGER PRIMARY KEY, commit_bytes BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS txs (
  id BLOB PRIMARY KEY, height INTEGER NOT NULL, idx INTEGER NOT NULL, code TEXT NOT NULL,
  message TEXT NOT NULL, data BLOB NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS state (key TEXT PRIMARY KEY, value BLOB NOT NULL, height INTEGER NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS tree_nodes (node_key TEXT PRIMARY KEY, node BLOB NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS state_deletions (
  height INTEGER NOT NULL, key TEXT NOT NULL, PRIMARY KEY (height, key)) WITHOUT ROWID;
`;

export interface ChainStoreOptions {
  readonly readonly?: boolean;
  /**
   * Blocks between two writes of the state tree's nodes; 1 writes them with every block. Each
   * flush makes that block's commit slower (bench/storage.ts reports the longest commit), and a
   * restart after a crash replays up to this many blocks' state writes into the tree (reading the
   * whole state table to find them).
   */
  readonly treeFlushBlocks?: number;
  /** Bytes of unwritten tree nodes (and their keys) that make the next block flush early. */
  readonly treeFlushBytesMax?: number;
  /**
   * Flushes fall on heights h with h % treeFlushBlocks === treeFlushPhase (and at the latest
   * treeFlushBlocks after the last one). Nodes given different phases flush at different heights,
   * so the slower commit of a flush block holds up one node of a height, not all of them at once.
   */
  readonly treeFlushPhase?: number;
}

export const chainStoreDefaults = {
  treeFlushBlocks: 32,
  treeFlushBytesMax: 32 * 1024 * 1024,
  treeFlushPhase: 0,
} as const;

/** Meta key of the height whose state tree the tree_nodes table holds. */
const treeHeightMetaKey = "treeHeight";

/**
 * WAL pages (4 KiB) before SQLite copies them back into the database file. A 2,000-transaction block
 * writes ~7 MiB of pages (random keys touch a page each), so SQLite's default of 1,000 pages
 * checkpointed inside every block's commit; at 64 MiB a page rewritten by several blocks is copied
 * back once, and block commits took ~22 % less time in total (measured on 60 blocks of 2,000
 * transactions, noisy machine). Crash safety is the WAL's and does not change; the WAL file may grow
 * to about this size.
 */
export const walCheckpointPages = 16_384;

/** SQLite's own page cache for the chain database, in KiB (64 MiB). */
export const chainDbCacheKib = 65_536;

/**
 * Bytes of the chain database read through a memory map instead of read() calls: a point lookup in a
 * 2 GB store took ~5.4 µs instead of ~8.2 µs (200,000 random keys, pages in the OS cache), and a
 * holder search makes about twenty. This is address space, not memory the node holds: the pages are
 * the operating system's file cache. It is also SQLite's build limit (larger values are clamped); a
 * store beyond it reads the rest as before. One caveat SQLite documents: a disk error on a mapped
 * page stops the process (SIGBUS) instead of failing the one read with an error.
 */
export const chainDbMmapBytes = 0x7fff_0000;

function prepareWritable(db: Database.Database): void {
  // One process owns a node's database while it runs. Holding the lock for the connection's life
  // (and keeping the WAL index in process memory) spares every read its lock round trip: a
  // point lookup costs ~1.7 µs instead of ~9 µs, and admission makes several per transaction.
  // A second process (a stray second node, `citychain verify`) gets SQLITE_BUSY until it stops.
  db.pragma("locking_mode = EXCLUSIVE");
  db.pragma("journal_mode = WAL");
  db.pragma("synchronous = FULL");
  db.pragma(`wal_autocheckpoint = ${walCheckpointPages}`);
  db.exec(schema);
  // Stores made before 2026-12-07 have an index of transactions by height that nothing reads; each
  // transaction paid an insert into it (bench/storage.ts). Dropping it changes no answer.
  db.exec("DROP INDEX IF EXISTS txs_by_height");
  db.exec(licenseIndexSchema);
  const version = db.prepare("SELECT value FROM meta WHERE key = 'schema'").get() as
    | { value: Buffer }
    | undefined;
  if (version === undefined) {
    db.prepare("INSERT INTO meta (key, value) VALUES ('schema', ?)").run(
      Buffer.from(String(chainStoreSchemaVersion)),
    );
  } else if (upgradableSchemaVersions.has(version.value.toString())) {
    // A version-2 store wrote its tree with every block: the tree is the latest block's. Recording
    // that height makes it a version-3 store with nothing to replay.
    db.transaction(() => {
      const latest = db.prepare("SELECT MAX(height) AS h FROM blocks").get() as { h: number | null };
      if (latest.h !== null) {
        db.prepare("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)").run(
          treeHeightMetaKey,
          Buffer.from(String(latest.h)),
        );
      }
      db.prepare("UPDATE meta SET value = ? WHERE key = 'schema'").run(
        Buffer.from(String(chainStoreSchemaVersion)),
      );
    }).immediate();
  } else if (version.value.toString() !== String(chainStoreSchemaVersion)) {
    throw new CodedError("STORAGE_CORRUPT", `database schema ${version.value.toString()} is not supported`);
  }
}

/** What a held tree node counts toward treeFlushBytesMax: its key and its bytes. */
function heldSize(nodeKey: string, node: Uint8Array | null): number {
  return nodeKey.length + (node?.length ?? 0);
}

function hexToBuffer(hex: string): Buffer {
  return Buffer.from(hex, "hex");
}

export class ChainStore {
  readonly db: Database.Database;
  readonly licenseIndex: LicenseIndex;
  private readonly statements;
  private readonly deletions;
  private heightCache: number;
  private readonly treeFlushBlocks: number;
  private readonly treeFlushBytesMax: number;
  private readonly treeFlushPhase: number;
  /** Height of the tree that tree_nodes holds; -1 before genesis. */
  private treeHeightCache: number;
  /** Tree nodes written by blocks after treeHeightCache (null: deleted), each in its latest version. */
  private unflushedNodes = new Map<string, Uint8Array | null>();
  /** Their bytes, keys included (a replaced version no longer counts). */
  private unflushedBytes = 0;

  private constructor(db: Database.Database, options: ChainStoreOptions) {
    this.db = db;
    this.treeFlushBlocks = options.treeFlushBlocks ?? chainStoreDefaults.treeFlushBlocks;
    this.treeFlushBytesMax = options.treeFlushBytesMax ?? chainStoreDefaults.treeFlushBytesMax;
    assert(
      Number.isSafeInteger(this.treeFlushBlocks) && this.treeFlushBlocks >= 1,
      "treeFlushBlocks is a positive integer",
    );
    assert(this.treeFlushBytesMax >= 0, "treeFlushBytesMax is not negative");
    this.treeFlushPhase = options.treeFlushPhase ?? chainStoreDefaults.treeFlushPhase;
    assert(
      Number.isSafeInteger(this.treeFlushPhase) &&
        this.treeFlushPhase >= 0 &&
        this.treeFlushPhase < this.treeFlushBlocks,
      "treeFlushPhase is an integer below treeFlushBlocks",
    );
    this.licenseIndex = new LicenseIndex(db);
    this.statements = {
      getMeta: db.prepare<[string], { value: Buffer }>("SELECT value FROM meta WHERE key = ?"),
      putMeta: db.prepare<[string, Uint8Array]>("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)"),
      maxHeight: db.prepare<[], { h: number | null }>("SELECT MAX(height) AS h FROM blocks"),
      blockByHeight: db.prepare<[number], RawBlockRow>("SELECT * FROM blocks WHERE height = ?"),
      blockByHash: db.prepare<[Buffer], RawBlockRow>("SELECT * FROM blocks WHERE hash = ?"),
      blocksFrom: db.prepare<[number, number], RawBlockRow>(
        "SELECT * FROM blocks WHERE height >= ? ORDER BY height LIMIT ?",
      ),
      insertBlock: db.prepare<[number, Uint8Array, number, number, Uint8Array]>(
        "INSERT INTO blocks (height, hash, time_ms, tx_count, block) VALUES (?, ?, ?, ?, ?)",
      ),
      insertCommit: db.prepare<[number, Uint8Array]>(
        "INSERT OR REPLACE INTO commits (height, commit_bytes) VALUES (?, ?)",
      ),
      getCommit: db.prepare<[number], { commit_bytes: Buffer }>(
        "SELECT commit_bytes FROM commits WHERE height = ?",
      ),
      insertTx: db.prepare<[Buffer, number, number, string, string, Uint8Array]>(
        "INSERT INTO txs (id, height, idx, code, message, data) VALUES (?, ?, ?, ?, ?, ?)",
      ),
      getTx: db.prepare<[Buffer], RawTxRow>("SELECT * FROM txs WHERE id = ?"),
      hasTx: db.prepare<[Buffer], { one: number }>("SELECT 1 AS one FROM txs WHERE id = ?"),
      getState: db.prepare<[string], { value: Buffer }>("SELECT value FROM state WHERE key = ?"),
      putState: db.prepare<[string, Uint8Array, number]>(
        "INSERT OR REPLACE INTO state (key, value, height) VALUES (?, ?, ?)",
      ),
      deleteState: db.prepare<[string]>("DELETE FROM state WHERE key = ?"),
      stateRange: db.prepare<[string, string, number], { key: string; value: Buffer }>(
        "SELECT key, value FROM state WHERE key > ? AND key < ? ORDER BY key LIMIT ?",
      ),
      allState: db.prepare<[], { key: string; value: Buffer }>("SELECT key, value FROM state ORDER BY key"),
      getNode: db.prepare<[string], { node: Buffer }>("SELECT node FROM tree_nodes WHERE node_key = ?"),
      putNode: db.prepare<[string, Uint8Array]>(
        "INSERT OR REPLACE INTO tree_nodes (node_key, node) VALUES (?, ?)",
      ),
      deleteNode: db.prepare<[string]>("DELETE FROM tree_nodes WHERE node_key = ?"),
    };
    // A version-2 store opened read-only has no such table, and its tree is at its latest block.
    const hasDeletions =
      db.prepare("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'state_deletions'").get() !==
      undefined;
    this.deletions = hasDeletions
      ? {
          add: db.prepare<[number, string]>(
            "INSERT OR IGNORE INTO state_deletions (height, key) VALUES (?, ?)",
          ),
          after: db.prepare<[number], { key: string }>(
            "SELECT key FROM state_deletions WHERE height > ? ORDER BY height, key",
          ),
          clear: db.prepare<[number]>("DELETE FROM state_deletions WHERE height <= ?"),
        }
      : null;
    this.heightCache = this.statements.maxHeight.get()?.h ?? -1;
    const treeHeight = this.statements.getMeta.get(treeHeightMetaKey)?.value.toString();
    // Absent in a version-2 store opened read-only (its tree is at its latest block) and before genesis.
    this.treeHeightCache = treeHeight === undefined ? this.heightCache : Number(treeHeight);
    if (!Number.isSafeInteger(this.treeHeightCache) || this.treeHeightCache > this.heightCache) {
      throw new CodedError(
        "STORAGE_CORRUPT",
        `stored state tree height ${treeHeight} is not a stored block's`,
      );
    }
  }

  static open(dir: string, options: ChainStoreOptions = {}): ChainStore {
    fs.mkdirSync(dir, { recursive: true, mode: 0o700 });
    const file = path.join(dir, chainDbFileName);
    if (options.readonly && !fs.existsSync(file)) {
      throw new CodedError("NOT_FOUND", `no chain database at ${file}`);
    }
    const db = new Database(file, { readonly: options.readonly ?? false });
    try {
      if (!options.readonly) prepareWritable(db);
      db.pragma(`cache_size = -${chainDbCacheKib}`);
      db.pragma(`mmap_size = ${chainDbMmapBytes}`);
      return new ChainStore(db, options);
    } catch (error) {
      db.close();
      if ((error as { code?: string }).code === "SQLITE_BUSY") {
        throw new CodedError("CONFLICT", `${file} is in use by a running node; stop it first`);
      }
      throw error;
    }
  }

  /** Writes the tree nodes held in memory (a clean stop leaves nothing to replay), then closes. */
  close(): void {
    if (this.unflushedNodes.size > 0 && this.db.open && !this.db.readonly) {
      this.db.transaction(() => this.writeTree(this.heightCache)).immediate();
      this.treeHeightCache = this.heightCache;
      this.clearUnflushed();
    }
    this.db.close();
  }

  /** Height of the last committed block, -1 before genesis. */
  latestHeight(): number {
    return this.heightCache;
  }

  getMeta(key: string): Uint8Array | undefined {
    return this.statements.getMeta.get(key)?.value;
  }

  putMeta(key: string, value: Uint8Array): void {
    this.statements.putMeta.run(key, Buffer.from(value));
  }

  /** Meta entries whose keys start with `prefix`, in key order (e.g. the validator-set history). */
  metaWithPrefix(prefix: string): Array<{ key: string; value: Uint8Array }> {
    // Keys are ASCII; U+FFFF sorts after every key that starts with the prefix.
    return this.db
      .prepare<[string, string], { key: string; value: Buffer }>(
        "SELECT key, value FROM meta WHERE key >= ? AND key < ? ORDER BY key",
      )
      .all(prefix, `${prefix}\uffff`);
  }

  blockByHeight(height: number): BlockRow | undefined {
    return toBlockRow(this.statements.blockByHeight.get(height));
  }

  blockByHash(hash: Uint8Array): BlockRow | undefined {
    return toBlockRow(this.statements.blockByHash.get(Buffer.from(hash)));
  }

  *blocksFrom(height: number, pageSize = 256): IterableIterator<BlockRow> {
    let next = height;
    for (;;) {
      const rows = this.statements.blocksFrom.all(next, pageSize);
      for (const row of rows) yield toBlockRow(row)!;
      if (rows.length < pageSize) return;
      next = rows[rows.length - 1]!.height + 1;
    }
  }

  commitBytes(height: number): Uint8Array | undefined {
    return this.statements.getCommit.get(height)?.commit_bytes;
  }

  /** Stores the commit certificate of a block already stored (it can arrive after the block). */
  putCommit(height: number, commitBytes: Uint8Array): void {
    this.statements.insertCommit.run(height, Buffer.from(commitBytes));
  }

  getTx(id: string): StoredTx | undefined {
    const row = this.statements.getTx.get(hexToBuffer(id));
    if (row === undefined) return undefined;
    return { id, height: row.height, index: row.idx, code: row.code, message: row.message, data: row.data };
  }

  isCommitted(id: string): boolean {
    return this.statements.hasTx.get(hexToBuffer(id)) !== undefined;
  }

  getState(key: string): Uint8Array | undefined {
    return this.statements.getState.get(key)?.value;
  }

  /** Keys strictly between `after` and `before`, in order, at most `limit`. */
  stateRange(after: string, before: string, limit: number): Array<{ key: string; value: Uint8Array }> {
    return this.statements.stateRange.all(after, before, limit);
  }

  *allState(): IterableIterator<{ key: string; value: Uint8Array }> {
    yield* this.statements.allState.iterate();
  }

  /** A state-tree node of the latest block's tree (held in memory if not yet flushed). */
  treeNode(nodeKey: string): Uint8Array | undefined {
    const unflushed = this.unflushedNodes.get(nodeKey);
    if (unflushed !== undefined) return unflushed ?? undefined;
    return this.statements.getNode.get(nodeKey)?.node;
  }

  /** The height whose state tree tree_nodes holds, as of the last flush; see the note at the top. */
  treeHeight(): number {
    return this.treeHeightCache;
  }

  /** For `GET /v1/status`: the stored tree's height and the tree nodes held until the next flush. */
  treeFlushStatus(): { treeHeight: number; heldTreeNodes: number; heldTreeBytes: number } {
    return {
      treeHeight: this.treeHeightCache,
      heldTreeNodes: this.unflushedNodes.size,
      heldTreeBytes: this.unflushedBytes,
    };
  }

  /**
   * What the blocks after `treeHeight()` changed in the state, as each key's final value (null:
   * deleted): applied to the stored tree they give the latest block's tree. The recorded deletions
   * go first, so a key deleted and written again since ends with its current value. Reads the
   * whole state table (state rows are not indexed by height): a restart after a crash and
   * `citychain verify` are its only callers.
   *
   * At most `keysMax` keys (the tree's batch limit): flushes come every treeFlushBlocks blocks and
   * before the held nodes pass their byte limit, far below it, so more means the tree height or
   * the rows' heights were altered, and the read stops with STORAGE_CORRUPT rather than gather them.
   */
  stateChangesAfterTree(keysMax: number): Map<string, Uint8Array | null> {
    const changes = new Map<string, Uint8Array | null>();
    const add = (key: string, value: Uint8Array | null) => {
      changes.set(key, value);
      if (changes.size > keysMax) {
        throw new CodedError(
          "STORAGE_CORRUPT",
          `more than ${keysMax} keys changed after block ${this.treeHeightCache} (the stored tree's): more than one replay takes and more than flushing ever leaves, so the tree height or the state rows' heights were altered; run \`citychain verify\``,
        );
      }
    };
    for (const row of this.deletions?.after.iterate(this.treeHeightCache) ?? []) add(row.key, null);
    const written = this.db.prepare<[number], { key: string; value: Buffer }>(
      "SELECT key, value FROM state WHERE height > ?",
    );
    for (const row of written.iterate(this.treeHeightCache)) add(row.key, row.value);
    return changes;
  }

  /**
   * Stores the tree nodes of the latest block's tree computed by replaying stateChangesAfterTree
   * over the stored tree (Ledger does this on start): they are written now, as a flush.
   */
  flushReplayedTree(nodeWrites: ReadonlyMap<string, Uint8Array | null>): void {
    assert(this.unflushedNodes.size === 0, "the state changes are replayed before any block commits");
    this.db.transaction(() => this.writeTree(this.heightCache, nodeWrites)).immediate();
    this.treeHeightCache = this.heightCache;
  }

  private writableDeletions() {
    assert(this.deletions !== null, "a store opened read-only is not written");
    return this.deletions;
  }

  private clearUnflushed(): void {
    this.unflushedNodes = new Map();
    this.unflushedBytes = 0;
  }

  /**
   * Inside a transaction: the held nodes, then `latest` (newer), to tree_nodes, the tree's height
   * recorded and the deletions up to it forgotten.
   */
  private writeTree(height: number, latest: ReadonlyMap<string, Uint8Array | null> = new Map()): void {
    const s = this.statements;
    const write = (nodeKey: string, node: Uint8Array | null) => {
      if (node === null) s.deleteNode.run(nodeKey);
      else s.putNode.run(nodeKey, node);
    };
    for (const [nodeKey, node] of this.unflushedNodes) if (!latest.has(nodeKey)) write(nodeKey, node);
    for (const [nodeKey, node] of latest) write(nodeKey, node);
    s.putMeta.run(treeHeightMetaKey, Buffer.from(String(height)));
    this.writableDeletions().clear.run(height);
  }

  /** Writes a whole block in one transaction; see the crash-safety note at the top. */
  commitBlock(batch: BlockCommitBatch): void {
    assert(
      batch.height === this.heightCache + 1,
      `commit of height ${batch.height} after ${this.heightCache}`,
    );
    const s = this.statements;
    const deletions = this.writableDeletions();
    // What holding this block's nodes would add: a node held already is replaced, not added to.
    let heldGrowth = 0;
    for (const [nodeKey, node] of batch.treeWrites) {
      heldGrowth += heldSize(nodeKey, node);
      if (this.unflushedNodes.has(nodeKey))
        heldGrowth -= heldSize(nodeKey, this.unflushedNodes.get(nodeKey)!);
    }
    const flush =
      this.treeHeightCache < 0 ||
      batch.height % this.treeFlushBlocks === this.treeFlushPhase ||
      batch.height - this.treeHeightCache >= this.treeFlushBlocks ||
      this.unflushedBytes + heldGrowth >= this.treeFlushBytesMax;
    // Values bind as they are (better-sqlite3 takes any Uint8Array): copying each one into a Buffer
    // first cost a copy of the whole block and of every state value and tree node.
    const write = this.db.transaction(() => {
      s.insertBlock.run(batch.height, batch.hash, batch.timeMs, batch.txCount, batch.blockBytes);
      if (batch.commitBytes !== null) s.insertCommit.run(batch.height, batch.commitBytes);
      for (const tx of batch.txs) {
        s.insertTx.run(hexToBuffer(tx.id), batch.height, tx.index, tx.code, tx.message, tx.data);
      }
      for (const [key, value] of batch.stateWrites) {
        if (value === null) {
          s.deleteState.run(key);
          if (!flush) deletions.add.run(batch.height, key);
        } else s.putState.run(key, value, batch.height);
      }
      if (flush) this.writeTree(batch.height, batch.treeWrites);
      s.putMeta.run("stateRoot", batch.stateRoot);
      for (const [key, value] of batch.meta ?? []) s.putMeta.run(key, value);
      if (batch.licenseIndex !== undefined) this.licenseIndex.apply(batch.licenseIndex);
    });
    // A throw leaves the store as it was: the block's nodes are held only once it is stored.
    write.immediate();
    this.heightCache = batch.height;
    if (flush) {
      this.treeHeightCache = batch.height;
      this.clearUnflushed();
    } else {
      // Copies: a batch's node writes are views into buffers the whole batch shares.
      for (const [nodeKey, node] of batch.treeWrites) this.unflushedNodes.set(nodeKey, node?.slice() ?? null);
      this.unflushedBytes += heldGrowth;
    }
  }
}

interface RawBlockRow {
  height: number;
  hash: Buffer;
  time_ms: number;
  tx_count: number;
  block: Buffer;
}

interface RawTxRow {
  height: number;
  idx: number;
  code: string;
  message: string;
  data: Buffer;
}

function toBlockRow(row: RawBlockRow | undefined): BlockRow | undefined {
  if (row === undefined) return undefined;
  return { height: row.height, hash: row.hash, timeMs: row.time_ms, txCount: row.tx_count, bytes: row.block };
}
