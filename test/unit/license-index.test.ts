/**
 * The license index's searches on a real SQLite database: results and paging, and the query plans
 * that keep a search by holder on the holder index (a few rows) whatever other filters come with it.
 */
import assert from "node:assert/strict";
import { test } from "node:test";
import Database from "better-sqlite3";
import type { LicenseRow } from "../../src/core/license/index-ops.ts";
import { LicenseIndex, licenseIndexSchema } from "../../src/storage/license-index.ts";

function indexWith(rows: LicenseRow[]): LicenseIndex {
  const db = new Database(":memory:");
  db.exec(licenseIndexSchema);
  const index = new LicenseIndex(db);
  index.apply({ licenses: rows, events: [], trail: [], forgotten: [] });
  return index;
}

function row(i: number, holder: string, status: LicenseRow["status"] = "valid"): LicenseRow {
  return {
    licenseKey: `K${String(i).padStart(6, "0")}`,
    currentId: `I${i}`,
    typeCode: i % 2 === 0 ? "TA" : "TB",
    issuerDept: i % 3 === 0 ? "police" : "civil",
    holder,
    status,
    validFromMs: 0,
    validUntilMs: null,
    statusIndex: i,
    height: 1,
    firstIssuedMs: 1_000 + i,
  };
}

test("a holder's licenses come newest first, page by page, with type and status filters", () => {
  const rows: LicenseRow[] = [];
  for (let i = 0; i < 300; i++)
    rows.push(row(i, i % 3 === 0 ? "alice" : "bob", i % 5 === 0 ? "revoked" : "valid"));
  const index = indexWith(rows);
  const alice = rows.filter((r) => r.holder === "alice").sort((a, b) => b.firstIssuedMs - a.firstIssuedMs);
  const seen: string[] = [];
  let cursor: string | undefined;
  for (let page = 0; page < 10; page++) {
    const result = index.search({
      holder: "alice",
      nowMs: 0,
      limit: 30,
      ...(cursor === undefined ? {} : { cursor }),
    });
    seen.push(...result.items.map((hit) => hit.licenseKey));
    if (result.nextCursor === null) break;
    cursor = result.nextCursor;
  }
  assert.deepEqual(
    seen,
    alice.map((r) => r.licenseKey),
  );
  const hit = index.search({ holder: "alice", nowMs: 0, limit: 1 }).items[0]!;
  assert.deepEqual(hit, {
    licenseKey: alice[0]!.licenseKey,
    typeCode: alice[0]!.typeCode,
    issuerDept: alice[0]!.issuerDept,
    firstIssuedMs: alice[0]!.firstIssuedMs,
  });
  const revokedTa = index.search({
    holder: "alice",
    status: "revoked",
    typeCodes: ["TA"],
    nowMs: 0,
    limit: 500,
  });
  assert.deepEqual(
    revokedTa.items.map((h) => h.licenseKey),
    alice.filter((r) => r.status === "revoked" && r.typeCode === "TA").map((r) => r.licenseKey),
  );
  assert.equal(index.search({ holder: "alice", typeCodes: [], nowMs: 0, limit: 10 }).items.length, 0);
});

test("a search by holder runs on the covering holder index, whatever else it filters on", () => {
  const index = indexWith([row(1, "alice")]);
  const shapes = [
    {},
    { status: "valid" as const },
    { status: "revoked" as const },
    { status: "expired" as const },
    { typeCode: "TA" },
    { issuerDept: "police" },
    { typeCodes: ["TA", "TB"] },
    { typeCode: "TA", issuerDept: "police", status: "suspended" as const, fromMs: 0, toMs: 5_000 },
  ];
  for (const shape of shapes) {
    const plan = index.searchPlan({ holder: "alice", nowMs: 0, limit: 50, ...shape }).join("; ");
    assert.match(plan, /USING COVERING INDEX licenses_by_holder_covering \(holder=\?/, JSON.stringify(shape));
    assert.doesNotMatch(plan, /TEMP B-TREE/, JSON.stringify(shape));
  }
  // Without a holder the other indexes still serve their own filters.
  assert.match(index.searchPlan({ status: "revoked", nowMs: 0, limit: 50 }).join(";"), /licenses_by_status/);
  assert.match(index.searchPlan({ typeCode: "TA", nowMs: 0, limit: 50 }).join(";"), /licenses_by_type/);
});
