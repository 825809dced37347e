/**
 * The license registry end to end on one real node (in process, real TLS API, SQLite, key store):
 * catalogue, policy, issuing with sealed personal content, field-level reads, consent grant and
 * withdrawal, proofs, lifecycle, search, the access trail and forgetting a subject.
 */
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { formatLicenseId } from "../../src/core/license/identifier.ts";
import { canonicalJson } from "../../src/core/license/json.ts";
import { readStatusBit } from "../../src/license/vc.ts";
import type { CitychainClient } from "../../src/sdk/client.ts";
import {
  amendLicense,
  decodeLicenseProofsCbor,
  ensureDepartmentKey,
  forgetSelf,
  grantConsent,
  issueLicense,
  type LicenseProofJson,
  type LicenseProofsCbor,
  type LicenseProofsJson,
  localSubjectKeys,
  myLicenses,
  openLicense,
  type SubjectKeyHolder,
  setLicenseStatus,
  type VerifiedLicense,
  verifyLicense,
  verifyLicenseProof,
  verifyLicenseProofs,
  verifyLicenseProofsCbor,
  verifyLicenses,
  whoReadMyData,
  withdrawConsent,
} from "../../src/sdk/licenses.ts";
import { generateEncryptionKeyPair, generateSigningKeyPair } from "../../src/sdk/sealing.ts";
import { validatorsFromJson } from "../../src/sdk/verify.ts";
import { auditDataDir } from "../../src/storage/audit.ts";
import { citizenId, expectCode, policeCode, setUpResidenceCatalogue, typeCode } from "../helpers/licenses.ts";
import { startTestNetwork, type TestNetwork } from "../helpers/net.ts";

describe("licenses on one node", () => {
  let net: TestNetwork;
  let police: CitychainClient;
  let tax: CitychainClient;
  let holder: SubjectKeyHolder;
  let pseudonym: string;
  let issued: { id: string; licenseKey: string };
  const reads: Array<{ dept: string; id: string }> = [];

  before(async () => {
    net = await startTestNetwork();
    police = await net.clientFor("police.officer");
    tax = await net.clientFor("tax.officer");
    await setUpResidenceCatalogue(net);
    // A citizen with keys of their own.
    const enc = await generateEncryptionKeyPair();
    const sig = await generateSigningKeyPair();
    pseudonym = (
      await police.request<{ pseudonym: string }>("POST", "/v1/subjects/pseudonym", {
        codeType: "111",
        code: citizenId("99010119900307123"),
      })
    ).body.pseudonym;
    await police.send("license.subject.register", {
      pseudonym,
      encryptionKey: enc.publicKey,
      signingKey: sig.publicKeySpki,
      custody: "self",
    });
    holder = localSubjectKeys(pseudonym, enc.privateKeyPkcs8, sig.privateKeyPkcs8);
    issued = await issueLicense(police, {
      typeCode,
      serial: "20260000001",
      holder: pseudonym,
      holderCodeType: "111",
      holderName: "Zhang San",
      holderCode: citizenId("99010119900307123"),
      content: { number: "R-0001", birthDate: "1990-03-07", address: "1 West Lake Road", district: "Xihu" },
    });
  });

  after(() => net?.close());

  test("the issued license is public in its directory fields only", async () => {
    const view = (await tax.request<Record<string, unknown>>("GET", `/v1/licenses/${issued.id}`)).body;
    assert.equal(view.status, "valid");
    assert.equal(view.issuerDept, "police");
    assert.equal(view.holder, pseudonym);
    assert.deepEqual(view.content, { number: "R-0001", district: "Xihu" });
    const text = JSON.stringify(view);
    for (const secret of ["Zhang", "1990-03-07", "West Lake", "990101"])
      assert.ok(!text.includes(secret), secret);
  });

  test("a department that may not issue the type is refused", async () => {
    await expectCode(
      issueLicense(tax, {
        typeCode,
        serial: "20260000002",
        holder: pseudonym,
        holderCodeType: "111",
        holderName: "Zhang San",
        holderCode: citizenId("99010119900307123"),
        content: { number: "R-0002", birthDate: "1990-03-07", address: "x", district: "Xihu" },
      }),
      "POLICY_DENIED",
    );
  });

  test("content that violates the schema is refused with the failing field", async () => {
    const base = {
      typeCode,
      serial: "20260000003",
      holder: pseudonym,
      holderCodeType: "111",
      holderName: "Zhang San",
      holderCode: citizenId("99010119900307123"),
    };
    await assert.rejects(
      issueLicense(police, {
        ...base,
        content: { number: "R-3", birthDate: "1990-02-30", address: "x", district: "d" },
      }),
      (e: { code?: string; field?: string }) =>
        e.code === "LICENSE_CONTENT_INVALID" && e.field === "content.birthDate",
    );
    // The node checks the public part itself, whatever the client did.
    const id = formatLicenseId({ typeCode, issuerCode: policeCode, serial: "20260000004", version: 1 });
    await expectCode(
      police.send("license.issue", {
        id,
        holder: pseudonym,
        holderCodeType: "111",
        publicContent: canonicalJson({ number: "R-4" }),
        sealed: { nonce: new Uint8Array(12), ciphertext: new Uint8Array(32) },
        contentHash: new Uint8Array(32),
        wrappedKeys: {},
      }),
      "LICENSE_CONTENT_INVALID",
    ).then((e) => assert.match(e.message, /^content\.district: is required/));
    await expectCode(
      police.send("license.issue", {
        id,
        holder: pseudonym,
        holderCodeType: "111",
        publicContent: canonicalJson({ number: "R-4", district: "Xihu", address: "in clear" }),
        sealed: { nonce: new Uint8Array(12), ciphertext: new Uint8Array(32) },
        contentHash: new Uint8Array(32),
        wrappedKeys: {},
      }),
      "LICENSE_CONTENT_INVALID",
    ).then((e) => assert.match(e.message, /^content\.address is personal/));
  });

  test("a malformed identifier is refused naming the wrong part", async () => {
    const wrongCheck = `${issued.id.slice(0, -1)}${issued.id.endsWith("0") ? "1" : "0"}`;
    await expectCode(
      police.request("GET", `/v1/licenses/${wrongCheck}`),
      "LICENSE_ID_MALFORMED",
      "checkChar",
    );
  });

  test("the issuer reads every field; tax without consent reads nothing", async () => {
    const mine = await openLicense(police, issued.id);
    reads.push({ dept: "police", id: issued.id });
    assert.deepEqual(mine.fields, {
      holderName: "Zhang San",
      holderCode: citizenId("99010119900307123"),
      birthDate: "1990-03-07",
      address: "1 West Lake Road",
    });
    assert.equal(mine.basis, "issuer");
    await expectCode(openLicense(tax, issued.id), "CONSENT_REQUIRED");
  });

  test("with consent, a field-level policy shows tax the name and number only", async () => {
    await ensureDepartmentKey(tax, pseudonym);
    await grantConsent(tax, holder, issued.licenseKey, "tax");
    const seen = await openLicense(tax, issued.id);
    reads.push({ dept: "tax", id: issued.id });
    assert.deepEqual(Object.keys(seen.fields).sort(), ["holderCode", "holderName"]);
    assert.equal(seen.basis, "consent");
    assert.deepEqual(seen.policyRules, ["tax-name-number"]);
    const denied = await expectCode(openLicense(tax, issued.id, ["address"]), "POLICY_DENIED", "address");
    assert.match(denied.message, /default-deny/);
  });

  test("withdrawing consent stops new reads by that department", async () => {
    await withdrawConsent(tax, holder, issued.licenseKey, "tax");
    await expectCode(openLicense(tax, issued.id), "CONSENT_REQUIRED");
    // The issuer is unaffected.
    await openLicense(police, issued.id, ["holderName"]);
    reads.push({ dept: "police", id: issued.id });
  });

  test("an amendment is a new version; the old one stays, consents carry over when the issuer keeps them", async () => {
    const base = {
      holderName: "Zhang San",
      holderCode: citizenId("99010119900307123"),
      content: { number: "R-0005", birthDate: "1990-03-07", address: "5 Old Street", district: "Xihu" },
    };
    const first = await issueLicense(police, {
      ...base,
      typeCode,
      serial: "20260000005",
      holder: pseudonym,
      holderCodeType: "111",
    });
    await grantConsent(tax, holder, first.licenseKey, "tax");
    await expectCode(
      amendLicense(tax, {
        ...base,
        licenseKey: first.licenseKey,
        content: { ...base.content, address: "x" },
      }),
      "POLICY_DENIED",
    );
    const second = await amendLicense(police, {
      ...base,
      licenseKey: first.licenseKey,
      content: { ...base.content, address: "6 New Street" },
      keepConsents: ["tax"],
    });
    assert.match(second.id, /\.002\.[0-9A-Z]$/);
    const old = (await tax.request<{ current: boolean; version: number }>("GET", `/v1/licenses/${first.id}`))
      .body;
    assert.deepEqual([old.current, old.version], [false, 1]);
    const now = (await tax.request<{ id: string }>("GET", `/v1/licenses/${first.licenseKey}`)).body;
    assert.equal(now.id, second.id);
    const mine = await openLicense(police, second.id, ["address"]);
    reads.push({ dept: "police", id: second.id });
    assert.equal(mine.fields.address, "6 New Street");
    const theirs = await openLicense(tax, first.licenseKey);
    reads.push({ dept: "tax", id: second.id });
    assert.deepEqual(Object.keys(theirs.fields).sort(), ["holderCode", "holderName"]);
    const history = (
      await tax.request<{ events: Array<{ event: string }> }>(
        "GET",
        `/v1/licenses/${first.licenseKey}/history`,
      )
    ).body;
    assert.deepEqual(
      history.events.map((e) => e.event),
      ["issue", "consent.grant", "amend"],
    );
  });

  test("a license past its validity is expired for readers and verifiers", async () => {
    const dayMs = 86_400_000;
    const lapsed = await issueLicense(police, {
      typeCode,
      serial: "20260000006",
      holder: pseudonym,
      holderCodeType: "111",
      holderName: "Zhang San",
      holderCode: citizenId("99010119900307123"),
      content: { number: "R-0006", birthDate: "1990-03-07", address: "x", district: "Xihu" },
      validFromMs: Date.now() - 2 * dayMs,
      validUntilMs: Date.now() - dayMs,
    });
    const view = (
      await tax.request<{ status: string; storedStatus: string }>("GET", `/v1/licenses/${lapsed.id}`)
    ).body;
    assert.deepEqual([view.status, view.storedStatus], ["expired", "valid"]);
    assert.equal((await verifyLicense(tax, lapsed.id)).status, "expired");
    assert.equal((await verifyLicense(tax, lapsed.id, { nowMs: Date.now() - 1.5 * dayMs })).status, "valid");
  });

  test("a replayed or foreign consent statement is refused", async () => {
    const { encodeSubjectStatement } = await import("../../src/core/license/statement.ts");
    const subject = (await tax.request<{ nextSeq: number }>("GET", `/v1/subjects/${pseudonym}`)).body;
    assert.ok(subject.nextSeq >= 3);
    // A withdrawal the holder signed for an earlier sequence number: already used, so refused.
    const statement = (seq: number, chainId = "citychain-dev") =>
      encodeSubjectStatement({
        chainId,
        pseudonym,
        seq,
        action: "consent.withdraw",
        licenseKey: issued.licenseKey,
        dept: "tax",
        wrappedKeyHash: new Uint8Array(0),
        untilMs: null,
      });
    const old = statement(1);
    await expectCode(
      tax.send("license.consent.withdraw", { statement: old, signature: await holder.sign(old) }),
      "CONFLICT",
    );
    const elsewhere = statement(subject.nextSeq, "another-chain");
    await expectCode(
      tax.send("license.consent.withdraw", { statement: elsewhere, signature: await holder.sign(elsewhere) }),
      "PAYLOAD_INVALID",
    );
    const forged = statement(subject.nextSeq);
    await expectCode(
      tax.send("license.consent.withdraw", { statement: forged, signature: new Uint8Array(64).fill(1) }),
      "SIGNATURE_INVALID",
    );
  });

  test("a proof verifies offline and a tampered one does not", async () => {
    const verified = await verifyLicense(tax, issued.id, { nowMs: Date.now() });
    assert.equal(verified.status, "valid");
    assert.equal(verified.issuerDept, "police");
    const proof = (await tax.request<LicenseProofJson>("GET", `/v1/licenses/${issued.id}/proof`)).body;
    const trusted = validatorsFromJson(proof.validators);
    await verifyLicenseProof(proof, trusted, Date.now());
    const tampered = structuredClone(proof);
    const bytes = Buffer.from(tampered.head.value!, "base64");
    bytes[bytes.length - 3] = bytes[bytes.length - 3]! ^ 1;
    tampered.head.value = bytes.toString("base64");
    await assert.rejects(verifyLicenseProof(tampered, trusted, Date.now()), /proof/);
    const batch = await verifyLicenses(tax, [issued.id, issued.licenseKey, `${typeCode}.${policeCode}.X1`], {
      trusted,
    });
    assert.equal((batch[0] as { status: string }).status, "valid");
    assert.equal((batch[1] as { id: string }).id, issued.id);
    assert.equal((batch[2] as { error: { code: string } }).error.code, "LICENSE_NOT_FOUND");
    const otherHeader = structuredClone(proof);
    otherHeader.commit = null;
    await assert.rejects(verifyLicenseProof(otherHeader, trusted, Date.now()), /commit/);
  });

  test("a binary batch answer verifies to what the JSON answer verifies to", async () => {
    const refs = [issued.id, issued.licenseKey, `${typeCode}.${policeCode}.X1`, "not-a-license"];
    // Both answers must describe one height; a block committing between the two requests is retried.
    const attemptsMax = 5;
    for (let attempt = 1; ; attempt++) {
      const json = (await tax.request<LicenseProofsJson>("POST", "/v1/licenses/proofs", { ids: refs })).body;
      const { bytes } = await tax.requestBytes("POST", "/v1/licenses/proofs", "application/cbor", {
        ids: refs,
      });
      const cbor = decodeLicenseProofsCbor(bytes);
      if (cbor.height !== json.height && attempt < attemptsMax) continue;
      assert.equal(cbor.height, json.height);
      const trusted = validatorsFromJson(json.validators);
      assert.deepEqual(cbor.validators, trusted);
      const nowMs = Date.now();
      const fromJson = await verifyLicenseProofs(json, trusted, nowMs);
      const fromCbor = await verifyLicenseProofsCbor(bytes, trusted, nowMs);
      assert.deepEqual(fromCbor, fromJson);
      assert.equal((fromCbor[0] as VerifiedLicense).id, issued.id);
      assert.equal((fromCbor[1] as VerifiedLicense).licenseKey, issued.licenseKey);
      assert.equal((fromCbor[2] as { error: { code: string } }).error.code, "LICENSE_NOT_FOUND");
      assert.equal((fromCbor[3] as { error: { code: string } }).error.code, "LICENSE_ID_MALFORMED");
      // The SDK's default is the binary answer: same outcome through verifyLicenses.
      assert.deepEqual(
        (await verifyLicenses(tax, refs, { trusted, nowMs })).map((o) =>
          "error" in o ? o.error.code : o.id,
        ),
        [issued.id, issued.id, "LICENSE_NOT_FOUND", "LICENSE_ID_MALFORMED"],
      );
      return;
    }
  });

  test("a tampered binary answer does not verify", async () => {
    const { bytes } = await tax.requestBytes("POST", "/v1/licenses/proofs", "application/cbor", {
      ids: [issued.id],
    });
    const answer = decodeLicenseProofsCbor(bytes);
    const trusted = answer.validators;
    const nowMs = Date.now();
    await verifyLicenseProofsCbor(bytes, trusted, nowMs);
    const item = answer.items[0] as Extract<LicenseProofsCbor["items"][number], { head: Uint8Array }>;
    const withItem = (changed: Partial<typeof item>): LicenseProofsCbor => ({
      ...answer,
      items: [{ ...item, ...changed }],
    });
    const flipped = (b: Uint8Array, at: number) => {
      const copy = Uint8Array.from(b);
      copy[at] = copy[at]! ^ 1;
      return copy;
    };
    // A byte of the head record, as it sits in the raw answer.
    const headAt = Buffer.from(bytes).indexOf(Buffer.from(item.head));
    assert.ok(headAt > 0);
    await assert.rejects(
      verifyLicenseProofsCbor(flipped(bytes, headAt + item.head.length - 3), trusted, nowMs),
      /proof/,
    );
    // Records, proofs and names changed in the decoded answer.
    await assert.rejects(
      verifyLicenseProofsCbor(withItem({ version: flipped(item.version, 10) }), trusted, nowMs),
      /proof/,
    );
    await assert.rejects(
      verifyLicenseProofsCbor(
        withItem({ versionProof: flipped(item.versionProof, item.versionProof.length - 1) }),
        trusted,
        nowMs,
      ),
      /proof/,
    );
    await assert.rejects(
      verifyLicenseProofsCbor(withItem({ head: item.version, headProof: item.versionProof }), trusted, nowMs),
      /proof/,
    );
    await assert.rejects(
      verifyLicenseProofsCbor(withItem({ id: `${issued.id.slice(0, -3)}X.1` }), trusted, nowMs),
      /proof|malformed/,
    );
    // The anchor: no commit, a commit for another block, another header, another validator set.
    await assert.rejects(verifyLicenseProofsCbor({ ...answer, commit: null }, trusted, nowMs), /commit/);
    await assert.rejects(
      verifyLicenseProofsCbor(
        { ...answer, commit: { ...answer.commit!, blockHash: new Uint8Array(32) } },
        trusted,
        nowMs,
      ),
      /another block/,
    );
    await assert.rejects(
      verifyLicenseProofsCbor(
        { ...answer, headerBytes: flipped(answer.headerBytes, answer.headerBytes.length - 1) },
        trusted,
        nowMs,
      ),
    );
    await assert.rejects(
      verifyLicenseProofsCbor(answer, [{ ...trusted[0]!, power: trusted[0]!.power + 1 }], nowMs),
      /validator set/,
    );
    // Bytes that are not the canonical answer at all.
    await assert.rejects(
      verifyLicenseProofsCbor(bytes.subarray(0, bytes.length - 1), trusted, nowMs),
      /CBOR/,
    );
  });

  test("suspend, resume and revoke are the issuer's, and verifiers see the status", async () => {
    await expectCode(setLicenseStatus(tax, "suspend", issued.licenseKey, "test"), "POLICY_DENIED");
    await setLicenseStatus(police, "suspend", issued.licenseKey, "under review");
    assert.equal((await verifyLicense(tax, issued.licenseKey)).status, "suspended");
    await setLicenseStatus(police, "resume", issued.licenseKey);
    await setLicenseStatus(police, "revoke", issued.licenseKey, "replaced");
    assert.equal((await verifyLicense(tax, issued.licenseKey)).status, "revoked");
    await expectCode(setLicenseStatus(police, "resume", issued.licenseKey), "LICENSE_STATE");
    const history = (
      await tax.request<{ events: Array<{ event: string }> }>(
        "GET",
        `/v1/licenses/${issued.licenseKey}/history`,
      )
    ).body;
    assert.deepEqual(
      history.events.map((e) => e.event),
      ["issue", "consent.grant", "consent.withdraw", "suspend", "resume", "revoke"],
    );
  });

  test("search by holder and status runs on the index, page by page", async () => {
    type Page = { items: Array<{ id: string; status: string; holder: string }>; nextCursor: string | null };
    const byHolder = (await tax.request<Page>("GET", `/v1/licenses?holder=${pseudonym}`)).body;
    assert.equal(byHolder.items.length, 3);
    assert.ok(byHolder.items.every((i) => i.holder === pseudonym));
    assert.equal(byHolder.items[2]!.id, issued.id, "newest first");
    assert.deepEqual(byHolder.items.map((i) => i.status).sort(), ["expired", "revoked", "valid"]);
    for (const status of ["revoked", "valid", "expired", "suspended"]) {
      const page = (await tax.request<Page>("GET", `/v1/licenses?status=${status}&type=${typeCode}`)).body;
      assert.equal(page.items.length, status === "suspended" ? 0 : 1, status);
    }
    const seen: string[] = [];
    let cursor: string | null = null;
    do {
      const query: string = cursor === null ? "" : `&cursor=${encodeURIComponent(cursor)}`;
      const page: Page = (await tax.request<Page>("GET", `/v1/licenses?holder=${pseudonym}&limit=1${query}`))
        .body;
      seen.push(...page.items.map((i) => i.id));
      cursor = page.nextCursor;
    } while (cursor !== null && seen.length < 10);
    assert.deepEqual(
      seen,
      byHolder.items.map((i) => i.id),
    );
    await expectCode(tax.request("GET", "/v1/licenses?cursor=bm9wZQ"), "BAD_REQUEST", "cursor");
  });

  test("the access trail lists every read made, for the auditor", async () => {
    const auditor = await net.clientFor("infocenter.auditor");
    let items: Array<{ licenseId: string; readerDept: string; fields: string[] }> = [];
    for (let i = 0; i < 100 && items.length < reads.length; i++) {
      items = (await auditor.request<{ items: typeof items }>("GET", "/v1/access-trail")).body.items;
      if (items.length < reads.length) await new Promise((r) => setTimeout(r, 100));
    }
    assert.deepEqual(
      items.map((i) => ({ dept: i.readerDept, id: i.licenseId })),
      reads,
    );
    const taxAuditor = await net.clientFor("tax.auditor");
    const own = (await taxAuditor.request<{ items: typeof items }>("GET", "/v1/access-trail")).body.items;
    assert.deepEqual(
      own.map((i) => ({ dept: i.readerDept, id: i.licenseId })),
      reads.filter((r) => r.dept === "tax"),
    );
    await expectCode(taxAuditor.request("GET", "/v1/access-trail?dept=police"), "FORBIDDEN", "dept");
  });

  test("the holder lists their own licenses and who read their data, with their own key only", async () => {
    const mine = await myLicenses(tax, holder);
    const all = (
      await tax.request<{ items: Array<{ id: string }> }>("GET", `/v1/licenses?holder=${pseudonym}`)
    ).body;
    assert.deepEqual(
      mine.items.map((i) => i.id),
      all.items.map((i) => i.id),
    );
    assert.ok(mine.items.some((i) => i.id === issued.id));
    const trail = await whoReadMyData(police, holder);
    assert.deepEqual(
      trail.items.map((i) => ({ dept: i.readerDept, id: i.licenseId })),
      reads,
    );
    await expectCode(tax.request("GET", `/v1/subjects/${pseudonym}/licenses`), "AUTH_MISSING");
    const stranger = localSubjectKeys(
      pseudonym,
      (await generateEncryptionKeyPair()).privateKeyPkcs8,
      (await generateSigningKeyPair()).privateKeyPkcs8,
    );
    await expectCode(myLicenses(tax, stranger), "AUTH_BAD_SIGNATURE");
  });

  test("a license exports as a Verifiable Credential whose status list shows the revocation", async () => {
    const vc = (await tax.request<Record<string, unknown>>("GET", `/v1/licenses/${issued.id}/vc`)).body;
    assert.deepEqual(vc.type, ["VerifiableCredential", "ElectronicLicense"]);
    assert.ok(!JSON.stringify(vc).includes("West Lake"));
    const status = (
      vc.credentialStatus as Array<{
        statusPurpose: string;
        statusListIndex: string;
        statusListCredential: string;
      }>
    ).find((s) => s.statusPurpose === "revocation")!;
    const listPath = new URL(status.statusListCredential).pathname;
    const list = (await tax.request<{ credentialSubject: { encodedList: string } }>("GET", listPath)).body;
    assert.equal(readStatusBit(list.credentialSubject.encodedList, Number(status.statusListIndex)), true);
    const suspension = (
      await tax.request<{ credentialSubject: { encodedList: string } }>(
        "GET",
        listPath.replace("revocation", "suspension"),
      )
    ).body;
    assert.equal(
      readStatusBit(suspension.credentialSubject.encodedList, Number(status.statusListIndex)),
      false,
    );
  });

  test("a forgotten subject's content cannot be decrypted, and the ledger still verifies", async () => {
    await forgetSelf(tax, holder);
    await expectCode(openLicense(police, issued.id), "SUBJECT_FORGOTTEN");
    await expectCode(ensureDepartmentKey(police, pseudonym), "SUBJECT_FORGOTTEN");
    // The running node holds its store exclusively: audit it stopped, as an operator would.
    await net.node.close();
    const report = auditDataDir(net.layout.nodes[0]!.dir);
    assert.equal(report.ok, true, JSON.stringify(report));
  });
});
