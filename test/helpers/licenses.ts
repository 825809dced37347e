/**
 * The license catalogue the license tests share: police issue residence certificates (birth date
 * and address personal), and the tax bureau may read the holder's name and number only.
 */
import assert from "node:assert/strict";
import { usccCheckChar } from "../../src/core/license/identifier.ts";
import { canonicalJson } from "../../src/core/license/json.ts";
import { CitychainError } from "../../src/sdk/errors.ts";
import type { TestNetwork } from "./net.ts";

const uscc = (body17: string) => body17 + usccCheckChar(body17);
export const policeCode = uscc("11330100MB0000001");
export const taxCode = uscc("11330100MB0000002");
export const typeCode = `${policeCode}001`;

export const residenceSchema = {
  type: "object",
  properties: {
    number: { type: "string", minLength: 1, maxLength: 32 },
    birthDate: { type: "string", format: "date" },
    address: { type: "string", minLength: 1, maxLength: 200 },
    district: { type: "string", minLength: 1, maxLength: 64 },
  },
  required: ["number", "birthDate", "address", "district"],
  additionalProperties: false,
};

export const residenceRules: Array<{ [key: string]: string | string[] }> = [
  { id: "police-issue", effect: "allow", dept: "$issuers", roles: ["officer", "admin"], actions: ["issue"] },
  {
    id: "police-manage",
    effect: "allow",
    dept: "$issuer",
    roles: ["officer", "admin"],
    actions: ["amend", "suspend", "revoke", "query", "decrypt"],
    fields: ["*"],
  },
  {
    id: "tax-name-number",
    effect: "allow",
    dept: "tax",
    roles: ["officer"],
    actions: ["decrypt"],
    fields: ["holderName", "holderCode"],
  },
  { id: "members-query", effect: "allow", dept: "*", roles: ["*"], actions: ["query"] },
];

export async function setUpResidenceCatalogue(net: TestNetwork): Promise<void> {
  const admin = await net.clientFor("infocenter.admin");
  await admin.send("license.issuer.set", { dept: "police", creditCode: policeCode, areaCode: "330100" });
  await admin.send("license.issuer.set", { dept: "tax", creditCode: taxCode, areaCode: "330100" });
  await (await net.clientFor("police.admin")).send("license.type.register", {
    code: typeCode,
    name: "Residence certificate",
    schema: canonicalJson(residenceSchema),
    issuers: ["police"],
    personalFields: ["birthDate", "address"],
    validityDays: 3650,
    rules: residenceRules,
  });
}

/** A synthetic 18-character citizen ID: 17 digits and the MOD 11-2 check. */
export function citizenId(body17: string): string {
  const weights = [7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2];
  const sum = [...body17].reduce((s, c, i) => s + Number(c) * weights[i]!, 0);
  return body17 + "10X98765432"[sum % 11];
}

/** Awaits a rejection with this stable code (and field, when given); returns the error. */
export async function expectCode(
  promise: Promise<unknown>,
  code: string,
  field?: string,
): Promise<CitychainError> {
  try {
    await promise;
  } catch (error) {
    assert.ok(error instanceof CitychainError, `expected CitychainError, got ${String(error)}`);
    assert.equal(error.code, code, error.message);
    if (field !== undefined) assert.equal(error.field, field, error.message);
    return error;
  }
  assert.fail(`expected ${code}`);
}
