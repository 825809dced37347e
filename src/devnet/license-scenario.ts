/**
 * The license scenario on a local network (docs/licenses.md "Scenario"): the information center gives
 * the sample departments issuer codes, departments register their license types with access
 * policies, a few dozen citizens and enterprises are registered as data subjects, a few hundred
 * licenses are issued by the departments' officers at their own key nodes, one license is shared
 * with another department through the holder's consent and read there, one is revoked, and every
 * license is verified from a proof fetched from a node other than its issuer's, against the
 * validator set of genesis, trusting no node.
 */
import fs from "node:fs";
import path from "node:path";
import type { Validator } from "../core/block.ts";
import { checkGenesis } from "../core/genesis.ts";
import { licenseKeyOf, parseLicenseId, usccCheckChar } from "../core/license/identifier.ts";
import { canonicalJson, type JsonObject } from "../core/license/json.ts";
import { defaultRules } from "../core/license/policy.ts";
import type { PolicyRule } from "../core/license/records.ts";
import { readGenesisFile } from "../node/genesis-file.ts";
import { nodeX509 } from "../node/x509-port.ts";
import type { CitychainClient } from "../sdk/client.ts";
import {
  ensureDepartmentKey,
  grantConsent,
  issueLicense,
  localSubjectKeys,
  openLicense,
  type SubjectKeyHolder,
  setLicenseStatus,
  verifyLicense,
} from "../sdk/licenses.ts";
import { generateEncryptionKeyPair, generateSigningKeyPair } from "../sdk/sealing.ts";
import type { NetworkLayout } from "./bootstrap.ts";

export interface ScenarioOptions {
  readonly layout: NetworkLayout;
  /** A client signing as `enrollmentId`, talking to node `nodeIndex`. */
  readonly client: (enrollmentId: string, nodeIndex: number) => Promise<CitychainClient>;
  readonly citizens?: number;
  readonly enterprises?: number;
  /** Licenses issued in parallel. */
  readonly concurrency?: number;
  /** Makes subjects and serials distinct from earlier runs on the same network (default: random). */
  readonly run?: number;
  readonly log?: (line: string) => void;
}

export interface ScenarioReport {
  readonly types: number;
  readonly subjects: number;
  readonly issued: number;
  readonly issueSeconds: number;
  readonly shared: {
    readonly licenseId: string;
    readonly dept: string;
    readonly fieldsRead: readonly string[];
  };
  readonly revoked: string;
  readonly verified: { readonly valid: number; readonly revoked: number; readonly other: number };
  readonly verifySeconds: number;
}

/** Synthetic but well-formed unified social credit codes for the sample departments. */
export function sampleCreditCode(index: number): string {
  const body = `11330100MB${String(index).padStart(7, "0")}`;
  return body + usccCheckChar(body);
}

interface SampleType {
  readonly dept: string;
  readonly seq: string;
  readonly name: string;
  readonly holderCodeType: "111" | "001";
  readonly personalFields: readonly string[];
  readonly validityDays: number | null;
  readonly schema: JsonObject;
  readonly extraRules?: readonly PolicyRule[];
  readonly content: (n: number) => JsonObject;
}

const str = (maxLength: number) => ({ type: "string", minLength: 1, maxLength });
const date = { type: "string", format: "date" };
const object = (properties: JsonObject, required: string[]): JsonObject => ({
  type: "object",
  properties,
  required,
  additionalProperties: false,
});

const sampleTypes: readonly SampleType[] = [
  {
    dept: "market",
    seq: "001",
    name: "Business license",
    holderCodeType: "001",
    personalFields: ["legalRepresentativeId"],
    validityDays: null,
    schema: object(
      {
        companyName: str(128),
        registeredCapital: { type: "integer", minimum: 0 },
        businessScope: str(512),
        establishedOn: date,
        legalRepresentativeId: str(32),
      },
      ["companyName", "registeredCapital", "businessScope", "establishedOn", "legalRepresentativeId"],
    ),
    content: (n) => ({
      companyName: `Westlake Trading Co. ${n}`,
      registeredCapital: 1_000_000 + n,
      businessScope: "wholesale and retail of goods",
      establishedOn: "2019-05-20",
      legalRepresentativeId: `R${100000 + n}`,
    }),
  },
  {
    dept: "police",
    seq: "001",
    name: "Residence certificate",
    holderCodeType: "111",
    personalFields: ["birthDate", "address"],
    validityDays: 3650,
    schema: object({ number: str(32), district: str(64), birthDate: date, address: str(200) }, [
      "number",
      "district",
      "birthDate",
      "address",
    ]),
    // Public security sees everything it issued; the tax bureau only the holder's name and number.
    extraRules: [
      {
        id: "tax-name-number",
        effect: "allow",
        dept: "tax",
        roles: ["officer"],
        actions: ["decrypt"],
        fields: ["holderName", "holderCode"],
      },
    ],
    content: (n) => ({
      number: `RC-${n}`,
      district: "Xihu",
      birthDate: "1988-04-12",
      address: `${n} Wensan Road`,
    }),
  },
  {
    dept: "civil",
    seq: "001",
    name: "Marriage certificate",
    holderCodeType: "111",
    personalFields: ["spouseName", "spouseIdNumber"],
    validityDays: null,
    schema: object(
      { registeredOn: date, registryOffice: str(128), spouseName: str(64), spouseIdNumber: str(32) },
      ["registeredOn", "registryOffice", "spouseName", "spouseIdNumber"],
    ),
    content: (n) => ({
      registeredOn: "2015-10-01",
      registryOffice: "Xihu District Marriage Registry",
      spouseName: `Spouse ${n}`,
      spouseIdNumber: `S${200000 + n}`,
    }),
  },
  {
    dept: "realestate",
    seq: "001",
    name: "Real estate title certificate",
    holderCodeType: "111",
    personalFields: ["coOwners"],
    validityDays: null,
    schema: object(
      {
        parcelNumber: str(32),
        floorAreaM2: { type: "integer", minimum: 1, maximum: 100000 },
        usage: { enum: ["residential", "commercial"] },
        coOwners: { type: "array", items: str(64), maxItems: 8 },
      },
      ["parcelNumber", "floorAreaM2", "usage", "coOwners"],
    ),
    content: (n) => ({
      parcelNumber: `330106-${n}`,
      floorAreaM2: 60 + (n % 90),
      usage: "residential",
      coOwners: [],
    }),
  },
  {
    dept: "fund",
    seq: "001",
    name: "Housing provident fund deposit certificate",
    holderCodeType: "111",
    personalFields: ["monthlyDeposit", "balance"],
    validityDays: 365,
    schema: object(
      {
        accountStatus: { enum: ["active", "sealed"] },
        monthlyDeposit: { type: "integer", minimum: 0 },
        balance: { type: "integer", minimum: 0 },
      },
      ["accountStatus", "monthlyDeposit", "balance"],
    ),
    content: (n) => ({ accountStatus: "active", monthlyDeposit: 1200 + n, balance: 50_000 + 10 * n }),
  },
  {
    dept: "social",
    seq: "001",
    name: "Social security record",
    holderCodeType: "111",
    personalFields: ["contributionBase"],
    validityDays: 365,
    schema: object(
      {
        insuranceTypes: { type: "array", items: str(32), maxItems: 8 },
        contributionBase: { type: "integer", minimum: 0 },
      },
      ["insuranceTypes", "contributionBase"],
    ),
    content: (n) => ({ insuranceTypes: ["pension", "medical", "unemployment"], contributionBase: 6000 + n }),
  },
];

/** The default policy with `extra` rules placed before the catch-all query rule. */
function defaultRulesWith(extra: readonly PolicyRule[]): PolicyRule[] {
  const rules = defaultRules();
  return [...rules.slice(0, -1), ...extra, ...rules.slice(-1)];
}

/** A synthetic 18-digit citizen ID (region 99xxxx does not exist) with its MOD 11-2 check digit. */
export function sampleCitizenId(n: number): string {
  const birth = new Date(Date.UTC(1970, 0, 1) + (n % 14_600) * 86_400_000).toISOString().slice(0, 10);
  const body = `990101${birth.replaceAll("-", "")}${String(Math.floor(n / 14_600) % 1000).padStart(3, "0")}`;
  const weights = [7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2];
  const sum = [...body].reduce((s, c, i) => s + Number(c) * weights[i]!, 0);
  return body + "10X98765432"[sum % 11];
}

interface Subject {
  readonly pseudonym: string;
  readonly codeType: "111" | "001";
  readonly code: string;
  readonly name: string;
  readonly keys: SubjectKeyHolder;
}

/** Which node holds a department's keys (node.json keyDepartments), so officers go to it. */
function keyNodeOf(layout: NetworkLayout): (dept: string) => number {
  const map = new Map<string, number>();
  layout.nodes.forEach((n, i) => {
    const config = JSON.parse(fs.readFileSync(path.join(n.dir, "node.json"), "utf8")) as {
      keyDepartments?: string[] | null;
    };
    for (const d of config.keyDepartments ?? [n.dept]) if (!map.has(d)) map.set(d, i);
  });
  return (dept) => {
    const i = map.get(dept);
    if (i === undefined) throw new Error(`no node holds keys for ${dept}`);
    return i;
  };
}

/** The validator set of genesis.json: what a verifier trusts without asking any node. */
function genesisValidators(layout: NetworkLayout): Validator[] {
  return checkGenesis(readGenesisFile(path.join(layout.nodes[0]!.dir, "genesis.json")), nodeX509);
}

async function inParallel<T>(
  items: readonly T[],
  limit: number,
  run: (item: T) => Promise<void>,
): Promise<void> {
  let next = 0;
  await Promise.all(
    Array.from({ length: Math.min(limit, items.length) }, async () => {
      while (next < items.length) await run(items[next++]!);
    }),
  );
}

export async function runLicenseScenario(options: ScenarioOptions): Promise<ScenarioReport> {
  const { layout } = options;
  const log = options.log ?? (() => {});
  const keyNode = keyNodeOf(layout);
  const officer = (dept: string) => options.client(`${dept}.officer`, keyNode(dept));
  const operator = layout.members.find((m) => m.roles.includes("admin"))!.dept;
  const admin = await options.client(`${operator}.admin`, 0);

  // 1. Issuer codes, set by the information center.
  const depts = [...new Set(layout.members.map((m) => m.dept))];
  for (const [i, dept] of depts.entries()) {
    // Idempotent: setting the same code again changes nothing.
    await admin.send("license.issuer.set", {
      dept,
      creditCode: sampleCreditCode(i + 1),
      areaCode: "330100",
    });
  }
  log(`issuer codes set for ${depts.length} departments`);

  // 2. License types with their policies, registered by the defining departments' admins.
  const typeCodes = new Map<string, string>();
  for (const t of sampleTypes) {
    const code = sampleCreditCode(depts.indexOf(t.dept) + 1) + t.seq;
    typeCodes.set(t.name, code);
    const definer = await options.client(`${t.dept}.admin`, keyNode(t.dept));
    const known = await definer.request("GET", `/v1/license-types/${code}`).then(
      () => true,
      () => false,
    );
    if (known) continue;
    await definer.send("license.type.register", {
      code,
      name: t.name,
      schema: canonicalJson(t.schema),
      issuers: [t.dept],
      personalFields: [...t.personalFields],
      validityDays: t.validityDays,
      rules: defaultRulesWith(t.extraRules ?? []) as unknown as JsonObject[],
    });
  }
  log(`${sampleTypes.length} license types registered`);

  // 3. Data subjects: citizens and enterprises, each with keys of their own.
  const registrar = await officer(operator);
  const subjects: Subject[] = [];
  const citizenCount = options.citizens ?? 30;
  const enterpriseCount = options.enterprises ?? 6;
  const run = options.run ?? 100 + Math.floor(Math.random() * 900);
  const people = [
    ...Array.from({ length: citizenCount }, (_, n) => ({
      codeType: "111" as const,
      code: sampleCitizenId(run * 1000 + n),
      name: `Citizen ${n}`,
    })),
    ...Array.from({ length: enterpriseCount }, (_, n) => ({
      codeType: "001" as const,
      code: sampleCreditCode(100_000 + run * 100 + n),
      name: `Westlake Trading Co. ${n}`,
    })),
  ];
  await inParallel(people, options.concurrency ?? 8, async (p) => {
    const pseudonym = (
      await registrar.request<{ pseudonym: string }>("POST", "/v1/subjects/pseudonym", {
        codeType: p.codeType,
        code: p.code,
      })
    ).body.pseudonym;
    const enc = await generateEncryptionKeyPair();
    const sig = await generateSigningKeyPair();
    await registrar.send("license.subject.register", {
      pseudonym,
      encryptionKey: enc.publicKey,
      signingKey: sig.publicKeySpki,
      custody: "self",
    });
    subjects.push({
      ...p,
      pseudonym,
      keys: localSubjectKeys(pseudonym, enc.privateKeyPkcs8, sig.privateKeyPkcs8),
    });
  });
  log(`${subjects.length} data subjects registered`);

  // 4. Issue: every citizen gets one license of each citizen type, every enterprise a business license.
  const jobs: Array<{ type: SampleType; subject: Subject; n: number }> = [];
  let n = 0;
  for (const subject of subjects) {
    for (const type of sampleTypes) {
      if (type.holderCodeType === subject.codeType) jobs.push({ type, subject, n: n++ });
    }
  }
  const issued: Array<{ id: string; licenseKey: string; dept: string; type: string }> = [];
  const issueStart = performance.now();
  await inParallel(jobs, options.concurrency ?? 8, async ({ type, subject, n: i }) => {
    const client = await officer(type.dept);
    const result = await issueLicense(client, {
      typeCode: typeCodes.get(type.name)!,
      serial: `2026${run}${String(i).padStart(4, "0")}`,
      holder: subject.pseudonym,
      holderCodeType: subject.codeType,
      holderName: subject.name,
      holderCode: subject.code,
      content: type.content(i),
    });
    issued.push({ id: result.id, licenseKey: result.licenseKey, dept: type.dept, type: type.name });
  });
  const issueSeconds = (performance.now() - issueStart) / 1000;
  log(`${issued.length} licenses issued in ${issueSeconds.toFixed(1)} s`);

  // 5. Share one residence certificate with the tax bureau: the holder consents, tax reads.
  const citizen = subjects.find((s) => s.codeType === "111")!;
  const tax = await officer("tax");
  const sharedId = await findLicenseOf(tax, citizen.pseudonym, typeCodes.get("Residence certificate")!);
  await ensureDepartmentKey(tax, citizen.pseudonym);
  await grantConsent(tax, citizen.keys, licenseKeyOf(parseLicenseId(sharedId)), "tax");
  const read = await openLicense(tax, sharedId);
  log(`shared ${sharedId} with tax; tax read ${Object.keys(read.fields).join(", ")}`);

  // 6. Revoke one business license.
  const business = issued.find((l) => l.type === "Business license")!;
  await setLicenseStatus(await officer("market"), "revoke", business.licenseKey, "business deregistered");
  log(`revoked ${business.id}`);

  // 7. Verify every license from another node than its issuer's, against genesis validators only.
  const trusted = genesisValidators(layout);
  const verifiers = await Promise.all(layout.nodes.map((_, i) => options.client(`${operator}.auditor`, i)));
  const counts = { valid: 0, revoked: 0, other: 0 };
  const verifyStart = performance.now();
  await inParallel(issued, options.concurrency ?? 8, async (l) => {
    const nodeIndex = (keyNode(l.dept) + 1) % layout.nodes.length;
    const verified = await verifyLicense(verifiers[nodeIndex]!, l.id, { trusted });
    if (verified.status === "valid") counts.valid++;
    else if (verified.status === "revoked") counts.revoked++;
    else counts.other++;
  });
  const verifySeconds = (performance.now() - verifyStart) / 1000;
  log(`verified ${issued.length}: ${counts.valid} valid, ${counts.revoked} revoked, ${counts.other} other`);

  return {
    types: sampleTypes.length,
    subjects: subjects.length,
    issued: issued.length,
    issueSeconds,
    shared: { licenseId: sharedId, dept: "tax", fieldsRead: Object.keys(read.fields) },
    revoked: business.id,
    verified: counts,
    verifySeconds,
  };
}

async function findLicenseOf(client: CitychainClient, pseudonym: string, typeCode: string): Promise<string> {
  const page = (
    await client.request<{ items: Array<{ id: string }> }>(
      "GET",
      `/v1/licenses?holder=${pseudonym}&type=${typeCode}`,
    )
  ).body;
  if (page.items.length === 0) throw new Error(`no license of ${typeCode} for ${pseudonym}`);
  return page.items[0]!.id;
}
