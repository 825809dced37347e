/**
 * License indexes in the node's database (docs/licenses.md "Search"): one row per license with the
 * fields people search by, a license's events (its history) and the access trail. Written inside
 * the block's storage transaction by ChainStore.commitBlock; read by the API with keyset pagination
 * (a cursor, never OFFSET), so a page costs the same at the millionth license as at the first.
 */
import type Database from "better-sqlite3";
import { CodedError } from "../core/errors.ts";
import type { LicenseEventRow, LicenseIndexOps, LicenseRow, TrailRow } from "../core/license/index-ops.ts";

export const licenseIndexSchema = `
CREATE TABLE IF NOT EXISTS licenses (
  license_key TEXT PRIMARY KEY, current_id TEXT NOT NULL, type_code TEXT NOT NULL,
  issuer_dept TEXT NOT NULL, holder TEXT NOT NULL, status TEXT NOT NULL,
  valid_from_ms INTEGER NOT NULL, valid_until_ms INTEGER, status_index INTEGER NOT NULL,
  first_issued_ms INTEGER NOT NULL, height INTEGER NOT NULL
) WITHOUT ROWID;
DROP INDEX IF EXISTS licenses_by_holder;
CREATE INDEX IF NOT EXISTS licenses_by_holder_covering
  ON licenses (holder, first_issued_ms, license_key, type_code, issuer_dept, status, valid_until_ms);
CREATE INDEX IF NOT EXISTS licenses_by_type ON licenses (type_code, first_issued_ms, license_key);
CREATE INDEX IF NOT EXISTS licenses_by_issuer ON licenses (issuer_dept, first_issued_ms, license_key);
CREATE INDEX IF NOT EXISTS licenses_by_status ON licenses (status, first_issued_ms, license_key);
CREATE INDEX IF NOT EXISTS licenses_by_date ON licenses (first_issued_ms, license_key);
CREATE TABLE IF NOT EXISTS license_events (
  seq INTEGER PRIMARY KEY, license_key TEXT NOT NULL, license_id TEXT NOT NULL, event TEXT NOT NULL,
  by_id TEXT NOT NULL, tx_id TEXT NOT NULL, height INTEGER NOT NULL, at_ms INTEGER NOT NULL, dept TEXT
);
CREATE INDEX IF NOT EXISTS license_events_by_key ON license_events (license_key, seq);
CREATE TABLE IF NOT EXISTS access_trail (
  seq INTEGER PRIMARY KEY, license_id TEXT NOT NULL, holder TEXT NOT NULL, reader_dept TEXT NOT NULL,
  reader_id TEXT NOT NULL, read_at_ms INTEGER NOT NULL, policy_rule TEXT NOT NULL, fields TEXT NOT NULL,
  basis TEXT NOT NULL, tx_id TEXT NOT NULL, height INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS access_trail_by_holder ON access_trail (holder, seq);
CREATE INDEX IF NOT EXISTS access_trail_by_dept ON access_trail (reader_dept, read_at_ms, seq);
CREATE INDEX IF NOT EXISTS access_trail_by_time ON access_trail (read_at_ms, seq);
`;

export const licensePageSizeMax = 500;
/** Distinct search shapes kept prepared (filters present or not, and how many type codes). */
const searchStatementsMax = 256;

export interface LicenseSearch {
  readonly holder?: string;
  readonly typeCode?: string;
  readonly issuerDept?: string;
  /** "expired" means stored as valid with validity passed at `nowMs`. */
  readonly status?: "valid" | "suspended" | "revoked" | "expired";
  /** Issued at or after (ms). */
  readonly fromMs?: number;
  /** Issued before (ms). */
  readonly toMs?: number;
  /** Only these types (what the caller may query); undefined = all. */
  readonly typeCodes?: readonly string[];
  readonly nowMs: number;
  readonly limit: number;
  /** Opaque cursor from the previous page. */
  readonly cursor?: string;
}

/**
 * What a search returns per license: enough to page on and to judge the caller's right to query it;
 * the API reads the records themselves from state. The holder index carries all of it and every
 * column a search filters on, so a search by holder never visits the table (docs/licenses.md "Search").
 */
export interface LicenseHit {
  readonly licenseKey: string;
  readonly typeCode: string;
  readonly issuerDept: string;
  readonly firstIssuedMs: number;
}

export interface Page<T> {
  readonly items: T[];
  readonly nextCursor: string | null;
}

export interface TrailSearch {
  readonly holder?: string;
  readonly readerDept?: string;
  readonly fromMs?: number;
  readonly toMs?: number;
  readonly limit: number;
  readonly cursor?: string;
}

interface RawLicense {
  license_key: string;
  current_id: string;
  type_code: string;
  issuer_dept: string;
  holder: string;
  status: string;
  valid_from_ms: number;
  valid_until_ms: number | null;
  status_index: number;
  first_issued_ms: number;
  height: number;
}

interface RawTrail {
  seq: number;
  license_id: string;
  holder: string;
  reader_dept: string;
  reader_id: string;
  read_at_ms: number;
  policy_rule: string;
  fields: string;
  basis: string;
  tx_id: string;
  height: number;
}

export class LicenseIndex {
  private readonly upsertLicense: Database.Statement;
  private readonly insertEvent: Database.Statement;
  private readonly insertTrail: Database.Statement;
  private readonly eventsByKey: Database.Statement;
  private readonly byKey: Database.Statement;

  constructor(private readonly db: Database.Database) {
    this.upsertLicense = db.prepare(`
      INSERT INTO licenses (license_key, current_id, type_code, issuer_dept, holder, status,
        valid_from_ms, valid_until_ms, status_index, first_issued_ms, height)
      VALUES (@licenseKey, @currentId, @typeCode, @issuerDept, @holder, @status,
        @validFromMs, @validUntilMs, @statusIndex, @firstIssuedMs, @height)
      ON CONFLICT (license_key) DO UPDATE SET current_id = excluded.current_id, status = excluded.status,
        valid_from_ms = excluded.valid_from_ms, valid_until_ms = excluded.valid_until_ms,
        height = excluded.height`);
    this.insertEvent = db.prepare(`
      INSERT INTO license_events (license_key, license_id, event, by_id, tx_id, height, at_ms, dept)
      VALUES (@licenseKey, @licenseId, @event, @by, @txId, @height, @atMs, @dept)`);
    this.insertTrail = db.prepare(`
      INSERT INTO access_trail (license_id, holder, reader_dept, reader_id, read_at_ms, policy_rule,
        fields, basis, tx_id, height)
      VALUES (@licenseId, @holder, @readerDept, @readerId, @readAtMs, @policyRule, @fieldsText, @basis,
        @txId, @height)`);
    this.eventsByKey = db.prepare(
      "SELECT * FROM license_events WHERE license_key = ? AND seq > ? ORDER BY seq LIMIT ?",
    );
    this.byKey = db.prepare("SELECT * FROM licenses WHERE license_key = ?");
  }

  /** Called inside the block's storage transaction. */
  apply(ops: LicenseIndexOps): void {
    for (const row of ops.licenses) this.upsertLicense.run(row);
    for (const row of ops.events) this.insertEvent.run(row);
    for (const row of ops.trail) this.insertTrail.run({ ...row, fieldsText: row.fields.join(",") });
  }

  license(licenseKey: string): LicenseRow | undefined {
    const row = this.byKey.get(licenseKey) as RawLicense | undefined;
    return row === undefined ? undefined : toLicense(row);
  }

  /** Statements by SQL text: a search's SQL depends only on which filters it uses (few shapes). */
  private readonly searchStatements = new Map<string, Database.Statement>();

  private statement(sql: string): Database.Statement {
    let statement = this.searchStatements.get(sql);
    if (statement === undefined) {
      if (this.searchStatements.size >= searchStatementsMax) this.searchStatements.clear();
      statement = this.db.prepare(sql);
      this.searchStatements.set(sql, statement);
    }
    return statement;
  }

  search(q: LicenseSearch): Page<LicenseHit> {
    const query = this.searchQuery(q);
    if (query === null) return { items: [], nextCursor: null };
    const { sql, args } = query;
    const rows = (this.statement(sql).raw().all(args) as Array<[string, string, string, number]>).map(
      ([licenseKey, typeCode, issuerDept, firstIssuedMs]): LicenseHit => ({
        licenseKey,
        typeCode,
        issuerDept,
        firstIssuedMs,
      }),
    );
    const limit = args.limit as number;
    if (rows.length < limit) return { items: rows, nextCursor: null };
    rows.pop();
    const last = rows[rows.length - 1]!;
    return { items: rows, nextCursor: encodeCursor(last.firstIssuedMs, last.licenseKey) };
  }

  /** SQLite's plan for a search (EXPLAIN QUERY PLAN details): which index serves it. */
  searchPlan(q: LicenseSearch): string[] {
    const query = this.searchQuery(q);
    if (query === null) return [];
    return (
      this.db.prepare(`EXPLAIN QUERY PLAN ${query.sql}`).all(query.args) as Array<{ detail: string }>
    ).map((row) => row.detail);
  }

  private searchQuery(q: LicenseSearch): { sql: string; args: Record<string, string | number> } | null {
    const where: string[] = [];
    const args: Record<string, string | number> = { limit: Math.min(q.limit, licensePageSizeMax) + 1 };
    // A holder has a handful of licenses while a type, an issuer or a status can have millions, but
    // without statistics SQLite rates every equality alike and may walk the status index (it is in
    // the wanted order) through a million rows. With a holder, the other columns are written as
    // expressions (+column), which no index can serve, so the holder index always drives.
    const other = q.holder === undefined ? "" : "+";
    const eq = (column: string, name: string, value: string | undefined) => {
      if (value === undefined) return;
      where.push(`${column} = @${name}`);
      args[name] = value;
    };
    eq("holder", "holder", q.holder);
    eq(`${other}type_code`, "typeCode", q.typeCode);
    eq(`${other}issuer_dept`, "issuerDept", q.issuerDept);
    if (q.status === "expired") {
      where.push(`${other}status = 'valid' AND valid_until_ms IS NOT NULL AND valid_until_ms < @nowMs`);
      args.nowMs = q.nowMs;
    } else if (q.status === "valid") {
      where.push(`${other}status = 'valid' AND (valid_until_ms IS NULL OR valid_until_ms >= @nowMs)`);
      args.nowMs = q.nowMs;
    } else eq(`${other}status`, "status", q.status);
    if (q.fromMs !== undefined) {
      where.push("first_issued_ms >= @fromMs");
      args.fromMs = q.fromMs;
    }
    if (q.toMs !== undefined) {
      where.push("first_issued_ms < @toMs");
      args.toMs = q.toMs;
    }
    if (q.typeCodes !== undefined) {
      if (q.typeCodes.length === 0) return null;
      const names = q.typeCodes.map((code, i) => {
        args[`t${i}`] = code;
        return `@t${i}`;
      });
      where.push(`${other}type_code IN (${names.join(",")})`);
    }
    if (q.cursor !== undefined) {
      const [ms, key] = decodeCursor(q.cursor);
      where.push("(first_issued_ms < @cMs OR (first_issued_ms = @cMs AND license_key < @cKey))");
      args.cMs = ms;
      args.cKey = key;
    }
    const sql = `SELECT license_key, type_code, issuer_dept, first_issued_ms FROM licenses
      ${where.length > 0 ? `WHERE ${where.join(" AND ")}` : ""}
      ORDER BY first_issued_ms DESC, license_key DESC LIMIT @limit`;
    return { sql, args };
  }

  events(licenseKey: string, afterSeq: number, limit: number): Array<LicenseEventRow & { seq: number }> {
    const rows = this.eventsByKey.all(licenseKey, afterSeq, Math.min(limit, licensePageSizeMax)) as Array<{
      seq: number;
      license_key: string;
      license_id: string;
      event: string;
      by_id: string;
      tx_id: string;
      height: number;
      at_ms: number;
      dept: string | null;
    }>;
    return rows.map((r) => ({
      seq: r.seq,
      licenseKey: r.license_key,
      licenseId: r.license_id,
      event: r.event,
      by: r.by_id,
      txId: r.tx_id,
      height: r.height,
      atMs: r.at_ms,
      dept: r.dept,
    }));
  }

  /** Every license of a type with its status-list index and stored status (for status lists). */
  statusEntries(typeCode: string): Array<{ index: number; status: string }> {
    return (
      this.db
        .prepare("SELECT status_index AS i, status AS s FROM licenses WHERE type_code = ?")
        .raw()
        .all(typeCode) as Array<[number, string]>
    ).map(([index, status]) => ({ index, status }));
  }

  trail(q: TrailSearch): Page<TrailRow & { seq: number }> {
    const where: string[] = [];
    const args: Record<string, string | number> = { limit: Math.min(q.limit, licensePageSizeMax) + 1 };
    if (q.holder !== undefined) {
      where.push("holder = @holder");
      args.holder = q.holder;
    }
    if (q.readerDept !== undefined) {
      where.push("reader_dept = @readerDept");
      args.readerDept = q.readerDept;
    }
    if (q.fromMs !== undefined) {
      where.push("read_at_ms >= @fromMs");
      args.fromMs = q.fromMs;
    }
    if (q.toMs !== undefined) {
      where.push("read_at_ms < @toMs");
      args.toMs = q.toMs;
    }
    if (q.cursor !== undefined) {
      where.push("seq > @cSeq");
      args.cSeq = Number(decodeCursor(q.cursor)[0]);
    }
    const sql = `SELECT * FROM access_trail ${where.length > 0 ? `WHERE ${where.join(" AND ")}` : ""}
      ORDER BY seq LIMIT @limit`;
    const rows = (this.statement(sql).all(args) as RawTrail[]).map(toTrail);
    const limit = args.limit as number;
    if (rows.length < limit) return { items: rows, nextCursor: null };
    rows.pop();
    return { items: rows, nextCursor: encodeCursor(rows[rows.length - 1]!.seq, "") };
  }
}

function toLicense(r: RawLicense): LicenseRow {
  return {
    licenseKey: r.license_key,
    currentId: r.current_id,
    typeCode: r.type_code,
    issuerDept: r.issuer_dept,
    holder: r.holder,
    status: r.status as LicenseRow["status"],
    validFromMs: r.valid_from_ms,
    validUntilMs: r.valid_until_ms,
    statusIndex: r.status_index,
    firstIssuedMs: r.first_issued_ms,
    height: r.height,
  };
}

function toTrail(r: RawTrail): TrailRow & { seq: number } {
  return {
    seq: r.seq,
    licenseId: r.license_id,
    holder: r.holder,
    readerDept: r.reader_dept,
    readerId: r.reader_id,
    readAtMs: r.read_at_ms,
    policyRule: r.policy_rule,
    fields: r.fields === "" ? [] : r.fields.split(","),
    basis: r.basis as TrailRow["basis"],
    txId: r.tx_id,
    height: r.height,
  };
}

const cursorPattern = /^[0-9]{1,16}~[0-9A-Z.]{0,96}$/;

function encodeCursor(ms: number, key: string): string {
  return Buffer.from(`${ms}~${key}`).toString("base64url");
}

function decodeCursor(cursor: string): [number, string] {
  const text = Buffer.from(cursor, "base64url").toString();
  if (!cursorPattern.test(text))
    throw new CodedError("BAD_REQUEST", "cursor is not one this node issued", "cursor");
  const [ms, key] = text.split("~") as [string, string];
  return [Number(ms), key];
}
