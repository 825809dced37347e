/**
 * The license scenario on four validator processes in BFT consensus (real TLS, real SQLite, separate
 * key nodes per department): issue, share with consent, revoke, verify every license from another
 * node against genesis validators; reads go to the reader's key node only; the access trail reaches
 * every node's index; all nodes agree on the state root.
 */
import assert from "node:assert/strict";
import fs from "node:fs";
import path from "node:path";
import { after, before, describe, test } from "node:test";
import { runLicenseScenario, type ScenarioReport } from "../../src/devnet/license-scenario.ts";
import type { CitychainError } from "../../src/sdk/errors.ts";
import { openLicense } from "../../src/sdk/licenses.ts";
import { createProcessNetwork, type ProcessNetwork } from "./process-net.ts";

describe("licenses on a four-validator network", () => {
  let net: ProcessNetwork;
  let report: ScenarioReport;

  before(async () => {
    net = await createProcessNetwork({ nodes: 4 });
    for (let i = 0; i < 4; i++) await net.start(i);
    report = await runLicenseScenario({
      layout: net.layout,
      client: (id, i) => net.client(id, i),
      citizens: 5,
      enterprises: 2,
      concurrency: 6,
    });
  });

  after(() => net?.close());

  test("every license issued verifies from another node: all valid but the one revoked", () => {
    assert.equal(report.subjects, 7);
    assert.equal(report.issued, 5 * 5 + 2);
    assert.deepEqual(report.verified, { valid: report.issued - 1, revoked: 1, other: 0 });
  });

  test("the shared license was read by tax under the field policy: name and number only", () => {
    assert.deepEqual([...report.shared.fieldsRead].sort(), ["holderCode", "holderName"]);
  });

  test("personal content is read only at the reader's own key node", async () => {
    const taxNode = keyNodeIndex(net, "tax");
    const other = (taxNode + 1) % 4;
    const tax = await net.client("tax.officer", other);
    await assert.rejects(
      openLicense(tax, report.shared.licenseId),
      (e: CitychainError) => e.code === "DECRYPT_UNAVAILABLE",
    );
  });

  test("the access trail of that read is on every node", async () => {
    for (let i = 0; i < 4; i++) {
      const auditor = await net.client("infocenter.auditor", i);
      let items: Array<{ licenseId: string; readerDept: string }> = [];
      for (let attempt = 0; attempt < 100; attempt++) {
        items = (await auditor.request<{ items: typeof items }>("GET", "/v1/access-trail?dept=tax")).body
          .items;
        if (items.length > 0) break;
        await new Promise((r) => setTimeout(r, 100));
      }
      assert.deepEqual(
        items.map((t) => t.licenseId),
        [report.shared.licenseId],
        `node${i}`,
      );
    }
  });

  test("all four nodes hold the same state at the same height", async () => {
    const admin = await net.client("infocenter.admin", 0);
    const { height } = await admin.status();
    const roots = new Set<string>();
    for (let i = 0; i < 4; i++) {
      const client = await net.client("infocenter.admin", i);
      for (let attempt = 0; attempt < 100 && (await client.status()).height < height; attempt++) {
        await new Promise((r) => setTimeout(r, 50));
      }
      roots.add((await client.block(height)).header.stateRoot);
    }
    assert.equal(roots.size, 1);
  });
});

function keyNodeIndex(net: ProcessNetwork, dept: string): number {
  return net.layout.nodes.findIndex((n) => {
    const config = JSON.parse(fs.readFileSync(path.join(n.dir, "node.json"), "utf8")) as {
      keyDepartments: string[];
    };
    return config.keyDepartments.includes(dept);
  });
}
