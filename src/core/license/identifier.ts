/**
 * Electronic license identifiers (GB/T 36904-2018) and the holder codes a license names.
 *
 *   1.2.156.3005.2.<type code>.<issuer code>.<serial>.<version>.<check char>
 *
 * The identifier is the key of a license version in world state and in every signature, so there is
 * exactly one spelling of each: upper case only (lower case is refused, never folded), no padding, no
 * whitespace. Parsing is strict because a lenient parser would let two strings name one license.
 * Pure and deterministic (no clock, no randomness, no I/O): it runs inside the state machine.
 *
 * Check characters (pinned by test/unit/license-identifier.test.ts, with public vectors where they exist):
 * - identifier: ISO/IEC 7064 MOD 37,36 (hybrid system) over type code + issuer code + serial + version,
 *   concatenated without dots;
 * - unified social credit code: GB 32100-2015, weighted sum MOD 31;
 * - citizen ID number: GB 11643-1999, ISO/IEC 7064 MOD 11-2.
 */
import { assert, CodedError } from "../errors.ts";

export const licenseIdRoot = "1.2.156.3005.2";
/** Checked before anything else, so a hostile input costs no more than this to refuse. */
export const licenseIdLengthMax = 128;

/** GB 32100-2015 alphabet: digits and upper-case letters without I, O, S, V, Z (31 characters). */
export const usccAlphabet = "0123456789ABCDEFGHJKLMNPQRTUWXY";
export const usccPattern = /^[0-9A-HJ-NP-RTUW-Y]{18}$/;
/** The defining authority's unified social credit code, then a 3-digit sequence it assigns. */
export const licenseTypeCodePattern = /^[0-9A-HJ-NP-RTUW-Y]{18}[0-9]{3}$/;
/** The issuing department's unified social credit code. */
export const licenseIssuerCodePattern = usccPattern;
export const licenseSerialLengthMax = 32;
export const licenseSerialPattern = /^[0-9A-Z]{1,32}$/;
export const licenseVersionMin = 1;
export const licenseVersionMax = 999;
export const licenseVersionPattern = /^(?!000)[0-9]{3}$/;
export const licenseCheckCharPattern = /^[0-9A-Z]$/;

/** Which part of an identifier is wrong; "root" covers the fixed prefix and the framing as a whole. */
export type LicenseIdField = "root" | "typeCode" | "issuerCode" | "serial" | "version" | "checkChar";

export interface LicenseIdParts {
  readonly typeCode: string;
  readonly issuerCode: string;
  readonly serial: string;
  /** 1..999; written as 3 digits. */
  readonly version: number;
  readonly checkChar: string;
}

/** What an issuer chooses; the check character follows from it. */
export type LicenseIdFields = Omit<LicenseIdParts, "checkChar">;
export type LicenseKeyFields = Pick<LicenseIdParts, "typeCode" | "issuerCode" | "serial">;

const expectedShape = {
  typeCode: "21 characters: an 18-character unified social credit code (GB 32100) and 3 digits",
  issuerCode: "an 18-character unified social credit code (GB 32100)",
  serial: `1 to ${licenseSerialLengthMax} characters of 0-9 A-Z`,
  version: "3 digits from 001 to 999",
  checkChar: "one character of 0-9 A-Z",
} as const;

function malformed(field: LicenseIdField, message: string): never {
  throw new CodedError("LICENSE_ID_MALFORMED", message, field);
}

function quote(value: string): string {
  return JSON.stringify(value);
}

function upperAscii(value: string): string {
  return value.replace(/[a-z]/g, (letter) => letter.toUpperCase());
}

/** True when the only thing wrong is ASCII lower case, so the message can say exactly that. */
function isLowerCaseOf(value: string, pattern: RegExp): boolean {
  return /[a-z]/.test(value) && pattern.test(upperAscii(value));
}

function checkShape(field: Exclude<LicenseIdField, "root">, value: string, pattern: RegExp): void {
  if (pattern.test(value)) return;
  if (isLowerCaseOf(value, pattern)) {
    malformed(field, `${field} must be upper case (lower case is not folded), found ${quote(value)}`);
  }
  malformed(field, `${field} must be ${expectedShape[field]}, found ${quote(value)}`);
}

/**
 * Enforced because real identifiers satisfy it: both public examples we have,
 * 1.2.156.3005.2.11100000000013338W011.11430000006122244L.20230000403.001.U and
 * 1.2.156.3005.2.11100000000013338W032.11220000013544541J.2430599.001.F, carry credit codes whose
 * GB 32100 check characters are right (11100000000013338W, 11430000006122244L, 11220000013544541J).
 * A mistyped code is then reported against its own field, not only as a wrong check character.
 */
function checkUsccOf(field: "typeCode" | "issuerCode", code: string): void {
  if (isValidUscc(code)) return;
  const expected = usccCheckChar(code.slice(0, 17));
  malformed(
    field,
    `${field} holds unified social credit code ${code} whose check character is ${code[17]}, expected ${expected} (GB 32100)`,
  );
}

function checkKeyFields(fields: LicenseKeyFields): void {
  checkShape("typeCode", fields.typeCode, licenseTypeCodePattern);
  checkShape("issuerCode", fields.issuerCode, licenseIssuerCodePattern);
  checkShape("serial", fields.serial, licenseSerialPattern);
  checkUsccOf("typeCode", fields.typeCode.slice(0, 18));
  checkUsccOf("issuerCode", fields.issuerCode);
}

function checkVersionNumber(version: number): void {
  if (Number.isInteger(version) && version >= licenseVersionMin && version <= licenseVersionMax) return;
  malformed("version", `version must be an integer from 1 to 999, found ${String(version)}`);
}

function versionText(version: number): string {
  return String(version).padStart(3, "0");
}

// ISO/IEC 7064 MOD 37,36: alphabet 0-9 A-Z, M = 36, M + 1 = 37.
const iso7064Alphabet = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ";
const iso7064Modulus = 36;

/**
 * ISO/IEC 7064 MOD 37,36 check character. p starts at M; for each character s = (p + value) mod M,
 * with 0 read as M, then p = 2s mod (M + 1). The check character is the one whose value a makes
 * (p + a) mod M = 1, i.e. a = (M + 1 - p) mod M. The hybrid system is chosen by the standard because
 * it catches every single substitution and every adjacent transposition while staying in 0-9 A-Z.
 */
export function iso7064Mod37_36CheckChar(payload: string): string {
  assert(payload.length >= 1 && payload.length <= licenseIdLengthMax, "MOD 37,36 payload length");
  let p = iso7064Modulus;
  for (const character of payload) {
    const value = iso7064Alphabet.indexOf(character);
    // The message is built only on failure: this loop runs for every identifier a node reads.
    if (value < 0) assert(false, `MOD 37,36 payload character ${quote(character)} outside 0-9 A-Z`);
    const s = (p + value) % iso7064Modulus || iso7064Modulus;
    p = (2 * s) % (iso7064Modulus + 1);
  }
  return iso7064Alphabet[(iso7064Modulus + 1 - p) % iso7064Modulus]!;
}

function licenseIdCheckChar(fields: LicenseIdFields): string {
  return iso7064Mod37_36CheckChar(
    `${fields.typeCode}${fields.issuerCode}${fields.serial}${versionText(fields.version)}`,
  );
}

/** Parses and fully validates an identifier; throws LICENSE_ID_MALFORMED naming the wrong part. */
export function parseLicenseId(text: unknown): LicenseIdParts {
  if (typeof text !== "string") malformed("root", `a license identifier is a string, found ${typeof text}`);
  if (text.length > licenseIdLengthMax) {
    malformed(
      "root",
      `a license identifier has at most ${licenseIdLengthMax} characters, found ${text.length}`,
    );
  }
  const prefix = `${licenseIdRoot}.`;
  if (!text.startsWith(prefix)) {
    malformed(
      "root",
      `a license identifier starts with ${prefix}, found ${quote(text.slice(0, prefix.length))}`,
    );
  }
  const parts = text.slice(prefix.length).split(".");
  if (parts.length !== 5) {
    malformed(
      "root",
      `expected 5 dot-separated parts after ${licenseIdRoot} (type code, issuer code, serial, version, check character), found ${parts.length}`,
    );
  }
  const [typeCode, issuerCode, serial, version, checkChar] = parts as [
    string,
    string,
    string,
    string,
    string,
  ];
  checkKeyFields({ typeCode, issuerCode, serial });
  checkShape("version", version, licenseVersionPattern);
  checkShape("checkChar", checkChar, licenseCheckCharPattern);
  const fields = { typeCode, issuerCode, serial, version: Number.parseInt(version, 10) };
  const expected = licenseIdCheckChar(fields);
  if (checkChar !== expected) malformed("checkChar", `check character is ${checkChar}, expected ${expected}`);
  return { ...fields, checkChar };
}

export function isLicenseId(text: unknown): text is string {
  try {
    parseLicenseId(text);
    return true;
  } catch (error) {
    if (error instanceof CodedError && error.code === "LICENSE_ID_MALFORMED") return false;
    throw error;
  }
}

/** Builds the identifier with its check character; any checkChar on the input is ignored. */
export function formatLicenseId(fields: LicenseIdFields): string {
  checkKeyFields(fields);
  checkVersionNumber(fields.version);
  const text = [
    licenseIdRoot,
    fields.typeCode,
    fields.issuerCode,
    fields.serial,
    versionText(fields.version),
    licenseIdCheckChar(fields),
  ].join(".");
  assert(text.length <= licenseIdLengthMax, "formatted license identifier within the length limit");
  return text;
}

/** `<typeCode>.<issuerCode>.<serial>`: names a license across its versions (the state key of its head). */
export function licenseKeyOf(fields: LicenseKeyFields): string {
  checkKeyFields(fields);
  return `${fields.typeCode}.${fields.issuerCode}.${fields.serial}`;
}

/** The identifier of the next version of the same license (an amendment keeps the old version). */
export function nextVersionId(id: string): string {
  const parts = parseLicenseId(id);
  if (parts.version >= licenseVersionMax) {
    malformed("version", `version ${versionText(parts.version)} is the last one; versions run 001 to 999`);
  }
  return formatLicenseId({ ...parts, version: parts.version + 1 });
}

// GB 32100-2015: weight of position i (0-based) is 3^i mod 31.
const usccWeights = [1, 3, 9, 27, 19, 26, 16, 17, 20, 29, 25, 13, 8, 24, 10, 30, 28] as const;
const usccModulus = 31;

/** GB 32100-2015 check character of the first 17 characters of a unified social credit code. */
export function usccCheckChar(body: string): string {
  assert(body.length === 17, "unified social credit code body has 17 characters");
  let sum = 0;
  for (let index = 0; index < 17; index++) {
    const value = usccAlphabet.indexOf(body[index]!);
    if (value < 0)
      assert(false, `unified social credit code character ${quote(body[index]!)} outside GB 32100`);
    sum += value * usccWeights[index]!;
  }
  return usccAlphabet[(usccModulus - (sum % usccModulus)) % usccModulus]!;
}

export function isValidUscc(code: string): boolean {
  return usccPattern.test(code) && usccCheckChar(code.slice(0, 17)) === code[17];
}

// GB 11643-1999: weight of position i (0-based) is 2^(17 - i) mod 11; check value 10 is written X.
const citizenIdWeights = [7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2] as const;
const citizenIdCheckChars = "10X98765432";
const citizenIdPattern = /^[0-9]{17}[0-9X]$/;
/** The core has no clock, so a future birth date is the caller's to refuse; a past bound is ours. */
const citizenBirthYearMin = 1800;

function citizenIdCheckChar(body: string): string {
  let sum = 0;
  for (let index = 0; index < 17; index++) sum += Number(body[index]) * citizenIdWeights[index]!;
  return citizenIdCheckChars[sum % 11]!;
}

function isCalendarDate(year: number, month: number, day: number): boolean {
  if (month < 1 || month > 12 || day < 1) return false;
  const isLeap = (year % 4 === 0 && year % 100 !== 0) || year % 400 === 0;
  const daysInMonth = [31, isLeap ? 29 : 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31][month - 1]!;
  return day <= daysInMonth;
}

/** GB 11643-1999 18-character citizen ID number: MOD 11-2 check (X upper case) and a real birth date. */
export function isValidCitizenId(code: string): boolean {
  if (!citizenIdPattern.test(code)) return false;
  const year = Number(code.slice(6, 10));
  const month = Number(code.slice(10, 12));
  const day = Number(code.slice(12, 14));
  if (year < citizenBirthYearMin || !isCalendarDate(year, month, day)) return false;
  return citizenIdCheckChar(code.slice(0, 17)) === code[17];
}

export interface HolderCodeType {
  /** 持证主体代码类型代码 */
  readonly code: string;
  /** 持证主体代码类型名称, as the sources spell it. */
  readonly name: string;
  readonly nameEn: string;
  readonly holder: "person" | "organisation";
}

/**
 * The holder code types (持证主体代码类型) the platform accepts. The code list belongs to GB/T 36903-2018
 * Annex A (the directory fields of GB/T 36902 refer to it); the standard's text was not available to us,
 * so only codes confirmed by public material are listed:
 * - 111 and 001: a public e-license API model citing GB/T 36903-2018 ("111 公民身份证号码 001 统一社会信用代码"),
 *   and a public e-license record whose holder type 111 is named 公民身份号码;
 * - all seven: the 持证主体代码类型 dictionary of a public provincial road-transport e-license system
 *   (Java enum DictValueEnums, DZZZ_CERTIFICATE_HOLDER_TYPE: 001, 099, 111, 411-414, 511, 516, 999,
 *   and military ID codes 114-122 left out here as not needed by a city);
 * - 414 and 511 also agree with GA/T 517 常用证件代码 (414 普通护照, 511 台湾居民来往大陆通行证).
 * Foreigner's permanent residence ID, organisation code and business registration number were not
 * found with a confirmed code, so they are left out (use 999 / 099 until confirmed).
 */
const holderCodeTypeEntries: HolderCodeType[] = [
  { code: "001", name: "统一社会信用代码", nameEn: "unified social credit code", holder: "organisation" },
  {
    code: "099",
    name: "其它法人与其它组织有效证件代码",
    nameEn: "other valid organisation document number",
    holder: "organisation",
  },
  { code: "111", name: "公民身份号码", nameEn: "citizen ID number", holder: "person" },
  { code: "414", name: "普通护照护照号", nameEn: "ordinary passport number", holder: "person" },
  {
    code: "511",
    name: "台湾居民来往大陆通行证号码",
    nameEn: "Mainland travel permit for Taiwan residents",
    holder: "person",
  },
  {
    code: "516",
    name: "港澳居民来往内地通行证号码",
    nameEn: "Mainland travel permit for Hong Kong and Macao residents",
    holder: "person",
  },
  {
    code: "999",
    name: "其它自然人有效证件号码",
    nameEn: "other valid personal document number",
    holder: "person",
  },
];
export const holderCodeTypes: readonly HolderCodeType[] = Object.freeze(
  holderCodeTypeEntries.map((entry) => Object.freeze(entry)),
);

export const holderCodeLengthMax = 64;
/** Where no check is known: upper-case letters, digits and inner hyphens, one spelling per document. */
export const holderCodeGeneralPattern = /^[0-9A-Z](?:[0-9A-Z-]{0,62}[0-9A-Z])?$/;
/**
 * Ministry of Public Security rule (2010): H (Hong Kong) or M (Macao), 8 digits of lifetime number,
 * then 2 digits counting renewals; cards since 2013 print the 9-character number on its own.
 */
export const hkMacaoPermitPattern = /^[HM][0-9]{8}(?:[0-9]{2})?$/;

function invalidHolderCode(field: "holderCodeType" | "holderCode", message: string): never {
  throw new CodedError("LICENSE_CONTENT_INVALID", message, field);
}

/**
 * Checks a holder code against its type. The pair feeds the holder's pseudonym (docs/licenses.md), so a
 * code with two spellings would split one person into two subjects: lower case is refused, not folded.
 * Messages never repeat the code: it is personal data, and errors reach logs and API replies.
 */
export function validateHolderCode(codeType: string, code: string): void {
  const type = holderCodeTypes.find((entry) => entry.code === codeType);
  if (type === undefined) {
    const accepted = holderCodeTypes.map((entry) => entry.code).join(", ");
    invalidHolderCode(
      "holderCodeType",
      `holder code type must be one of ${accepted}, found ${quote(codeType)}`,
    );
  }
  if (code.length > holderCodeLengthMax) {
    invalidHolderCode(
      "holderCode",
      `holder code has at most ${holderCodeLengthMax} characters, found ${code.length}`,
    );
  }
  const [valid, expected] = holderCodeCheck(type.code, code);
  if (valid) return;
  if (/[a-z]/.test(code) && holderCodeCheck(type.code, upperAscii(code))[0]) {
    invalidHolderCode("holderCode", "holder code must be upper case (lower case is not folded)");
  }
  invalidHolderCode("holderCode", `holder code of type ${type.code} must be ${expected}`);
}

function holderCodeCheck(codeType: string, code: string): [valid: boolean, expected: string] {
  switch (codeType) {
    case "001":
      return [isValidUscc(code), "a unified social credit code with a valid GB 32100 check character"];
    case "111":
      return [
        isValidCitizenId(code),
        "an 18-character citizen ID number with a valid GB 11643 check and birth date",
      ];
    case "516":
      return [
        hkMacaoPermitPattern.test(code),
        "H or M followed by 8 digits (and optionally 2 renewal digits)",
      ];
    default:
      return [holderCodeGeneralPattern.test(code), "1 to 64 characters of 0-9 A-Z and inner hyphens"];
  }
}
