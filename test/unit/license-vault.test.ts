/**
 * The license flow for a holder without a device, whose keys the key vault keeps (custody "vault"):
 * one real node and a vault in this process, sharing the consortium pseudonym key. The vault makes
 * the subject, the information center registers it on chain, police issue, the holder (through the
 * vault) lets tax read and lists their own records, and forgetting through the vault destroys the
 * holder's keys while the ledger forgets the subject.
 */
import assert from "node:assert/strict";
import { copyFileSync, mkdirSync } from "node:fs";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import type { FastifyInstance } from "fastify";
import { decodeCanonical } from "../../src/core/encoding.ts";
import { type LicenseVersion, licenseKeys, type WrappedKey } from "../../src/core/license/records.ts";
import { keyNodeFiles } from "../../src/license/key-node.ts";
import type { CitychainClient, FetchLike } from "../../src/sdk/client.ts";
import { CitychainError } from "../../src/sdk/errors.ts";
import {
  ensureDepartmentKey,
  forgetSelf,
  grantConsent,
  issueLicense,
  myLicenses,
  openLicense,
  type SubjectKeyHolder,
  whoReadMyData,
} from "../../src/sdk/licenses.ts";
import { VaultClient } from "../../src/sdk/vault-client.ts";
import { vaultSubjectKeys } from "../../src/sdk/vault-holder.ts";
import {
  buildVaultService,
  initVault,
  type OpenedVault,
  openVault,
  vaultFiles,
} from "../../src/vault/index.ts";
import { setUpResidenceCatalogue, typeCode } from "../helpers/licenses.ts";
import { startTestNetwork, type TestNetwork } from "../helpers/net.ts";

/** How long to wait for the key node's access-trail batch to reach a block. */
const trailWaitMs = 10_000;

async function expectCode(promise: Promise<unknown>, code: string): Promise<void> {
  await assert.rejects(promise, (error: unknown) => {
    assert.ok(error instanceof CitychainError, `expected CitychainError, got ${String(error)}`);
    assert.equal(error.code, code, error.message);
    return true;
  });
}

/** A vault in this process over the network's CA, holding the node's pseudonym key. */
async function startVault(net: TestNetwork): Promise<{ opened: OpenedVault; app: FastifyInstance }> {
  const dir = join(net.layout.dir, "vault");
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  // Same consortium key, same file format and purpose: the node's secret file is the vault's.
  copyFileSync(join(net.layout.nodes[0]!.dir, keyNodeFiles.pseudonymKey), join(dir, vaultFiles.pseudonymKey));
  const init = initVault(dir, net.passphrase);
  assert.equal(init.pseudonymKeyCreated, false);
  const opened = openVault(dir, net.passphrase);
  const app = await buildVaultService({
    keyStore: opened.keyStore,
    pseudonymKey: opened.pseudonymKey,
    audit: opened.audit,
    rootCertPem: net.caPem,
    chainId: net.layout.chainId,
  });
  return { opened, app };
}

function injectFetch(app: FastifyInstance): FetchLike {
  return async (url, init) => {
    const response = await app.inject({
      method: init.method as "GET" | "POST",
      url: url.replace(/^http:\/\/vault/, ""),
      headers: init.headers,
      ...(init.body === undefined ? {} : { payload: Buffer.from(init.body) }),
    });
    return { status: response.statusCode, text: async () => response.body };
  };
}

describe("licenses of a vault-custody holder", () => {
  let net: TestNetwork;
  let vault: { opened: OpenedVault; app: FastifyInstance };
  let vaultClient: VaultClient;
  let counter: CitychainClient;
  let police: CitychainClient;
  let tax: CitychainClient;
  let holder: SubjectKeyHolder;
  let pseudonym: string;
  let issued: { id: string; licenseKey: string };
  const holderCode = citizenId("99010119850612345");

  before(async () => {
    net = await startTestNetwork();
    vault = await startVault(net);
    vaultClient = new VaultClient({
      url: "http://vault",
      identity: await net.identityFor("infocenter.officer"),
      fetch: injectFetch(vault.app),
    });
    counter = await net.clientFor("infocenter.officer");
    police = await net.clientFor("police.officer");
    tax = await net.clientFor("tax.officer");
    await setUpResidenceCatalogue(net);
  });

  after(async () => {
    await vault?.app.close();
    vault?.opened.close();
    await net?.close();
  });

  test("the vault makes the subject under the pseudonym the nodes compute, and it is registered", async () => {
    const subject = await vaultClient.createSubject("111", holderCode);
    pseudonym = subject.pseudonym;
    const fromNode = await police.request<{ pseudonym: string }>("POST", "/v1/subjects/pseudonym", {
      codeType: "111",
      code: holderCode,
    });
    assert.equal(fromNode.body.pseudonym, pseudonym);
    await counter.send("license.subject.register", {
      pseudonym,
      encryptionKey: subject.encryptionKey!,
      signingKey: subject.signingKey!,
      custody: "vault",
    });
    const onChain = (await tax.request<{ custody: string }>("GET", `/v1/subjects/${pseudonym}`)).body;
    assert.equal(onChain.custody, "vault");
    holder = vaultSubjectKeys(vaultClient, pseudonym);
  });

  test("police issue; the vault opens the holder's copy", async () => {
    issued = await issueLicense(police, {
      typeCode,
      serial: "20260000101",
      holder: pseudonym,
      holderCodeType: "111",
      holderName: "Li Si",
      holderCode,
      content: { number: "R-0101", birthDate: "1985-06-12", address: "2 Lake Road", district: "Xihu" },
    });
    const { version, wrapped } = await holderCopy(issued.id);
    const personal = await vaultClient.open(pseudonym, {
      licenseId: issued.id,
      sealed: version.sealed!,
      wrappedKey: wrapped,
    });
    assert.equal(personal.holderName, "Li Si");
    assert.deepEqual(personal.fields, { birthDate: "1985-06-12", address: "2 Lake Road" });
  });

  test("the holder grants tax consent through the vault, and tax reads what its rule allows", async () => {
    await expectCode(openLicense(tax, issued.id), "CONSENT_REQUIRED");
    await ensureDepartmentKey(tax, pseudonym);
    await grantConsent(counter, holder, issued.licenseKey, "tax");
    const seen = await openLicense(tax, issued.id);
    assert.deepEqual(seen.fields, { holderName: "Li Si", holderCode });
    assert.equal(seen.basis, "consent");
  });

  test("the holder lists their licenses and who read their data, signed by the vault", async () => {
    const mine = await myLicenses(counter, holder);
    assert.deepEqual(
      mine.items.map((i) => i.id),
      [issued.id],
    );
    let readers: string[] = [];
    for (const deadline = Date.now() + trailWaitMs; Date.now() < deadline; ) {
      readers = (await whoReadMyData(counter, holder)).items.map((i) => i.readerDept);
      if (readers.includes("tax")) break;
      await new Promise((r) => setTimeout(r, 100));
    }
    assert.ok(readers.includes("tax"), `trail: ${readers.join(", ")}`);
    const audit = vault.opened.audit.list({ afterSeq: 0, limit: 1000, pseudonym });
    const actions = new Set<string>(audit.map((e) => e.action));
    for (const action of ["subject.create", "content.open", "key.rewrap", "statement.sign", "read.sign"])
      assert.ok(actions.has(action), `vault audit has ${action}`);
  });

  test("forgetting through the vault destroys the holder's keys; the ledger forgets the subject", async () => {
    const { version, wrapped } = await holderCopy(issued.id);
    await forgetSelf(counter, holder);
    await expectCode(openLicense(tax, issued.id), "SUBJECT_FORGOTTEN");
    await expectCode(openLicense(police, issued.id), "SUBJECT_FORGOTTEN");
    await expectCode(
      vaultClient.open(pseudonym, { licenseId: issued.id, sealed: version.sealed!, wrappedKey: wrapped }),
      "VAULT_KEY_DESTROYED",
    );
    await expectCode(myLicenses(counter, holder), "VAULT_KEY_DESTROYED");
    assert.equal((await vaultClient.subject(pseudonym)).status, "destroyed");
  });

  /** The version record and the holder's wrapped key, verified from the ledger. */
  async function holderCopy(id: string): Promise<{ version: LicenseVersion; wrapped: WrappedKey }> {
    const version = (await police.state(licenseKeys.version(id))).value!;
    const wrapped = (await police.state(licenseKeys.wrappedKey(id, "holder"))).value!;
    return {
      version: decodeCanonical(version, 1024 * 1024) as unknown as LicenseVersion,
      wrapped: decodeCanonical(wrapped, 1024) as unknown as WrappedKey,
    };
  }
});

/** A syntactically valid (synthetic) 18-character citizen ID: 17 digits and the MOD 11-2 check. */
function citizenId(body17: string): string {
  const weights = [7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2];
  const sum = [...body17].reduce((s, c, i) => s + Number(c) * weights[i]!, 0);
  return body17 + "10X98765432"[sum % 11];
}
