/**
 * License type content schemas. A license type carries a JSON Schema (a subset of draft 2020-12) of
 * its content; every node validates the public part of each issued content with it inside
 * execution, and the SDK validates the whole content before sealing it. Because the verdict is part
 * of the state transition, the subset is chosen so that the verdict is the same on every node and
 * costs a bounded amount of work:
 *
 * - an explicit allow-list of keywords (no `multipleOf`: float remainders differ by value; no
 *   `$id`, no remote or dynamic references: nothing is ever fetched; no `format: "regex"`: it would
 *   compile caller-chosen expressions);
 * - a small fixed set of formats, each with a length cap checked before its regular expression runs;
 * - `pattern` screened for the shapes that backtrack catastrophically (see `checkPattern`), capped
 *   in length, and only on strings that also declare a small `maxLength`;
 * - property names that are plain identifiers, so a failing field's path (`content.address.city`)
 *   is unambiguous;
 * - bounded schema size (canonical UTF-8 bytes) and nesting.
 *
 * Pure and deterministic: no clock, no randomness, no I/O. Ajv compiles validators with `new
 * Function`, which browsers allow unless a Content Security Policy forbids `unsafe-eval`.
 */
import { Ajv2020, type ErrorObject, type ValidateFunction } from "ajv/dist/2020.js";
import { fullFormats } from "ajv-formats/dist/formats.js";
import { utf8 } from "../encoding.ts";
import { assert, CodedError } from "../errors.ts";
import { sha256Hex } from "../hash.ts";
import { canonicalJson, isJsonObject, type JsonLimits, type JsonObject, parseJsonLimited } from "./json.ts";

export const licenseSchemaLimits = {
  /** Canonical JSON (RFC 8785) of the schema, in UTF-8 bytes: it is stored in every license type. */
  schemaBytesMax: 16 * 1024,
  /** Subschemas nested inside one another (properties, items, prefixItems, $defs). */
  schemaNestingMax: 12,
  /** Characters of one `pattern`. */
  patternCharsMax: 128,
  /** A string with a `pattern` must declare `maxLength` at most this (code points). */
  patternSubjectCharsMax: 256,
  /**
   * Quantifiers with a variable count (`*`, `+`, `{n,}`, `{n,m}` with m > n) in one pattern. Even
   * without nesting, k overlapping ones can cost about n^k / k! steps on an n-character string; with
   * n <= 256 and k <= 3 that stays below about 3 million.
   */
  patternVariableQuantifiersMax: 3,
} as const;

/** Compiled validators kept per process: one per distinct schema text in use (types are few). */
export const compiledSchemaCacheEntriesMax = 128;

/** Characters of a string checked against each format; longer is refused before any regex runs. */
export const formatCharsMax = {
  date: 10,
  "date-time": 64,
  email: 254,
  uri: 2048,
} as const;
export type LicenseSchemaFormat = keyof typeof formatCharsMax;

export const licenseSchemaKeywords = [
  "type",
  "properties",
  "required",
  "additionalProperties",
  "items",
  "prefixItems",
  "enum",
  "const",
  "minLength",
  "maxLength",
  "pattern",
  "minimum",
  "maximum",
  "exclusiveMinimum",
  "exclusiveMaximum",
  "minItems",
  "maxItems",
  "format",
  "title",
  "description",
  "$ref",
] as const;
/** Keywords the root schema may carry besides the ones any subschema may. */
const rootOnlyKeywords = ["$schema", "$defs"] as const;
const draft202012 = "https://json-schema.org/draft/2020-12/schema";

/** Property, personal field and $defs names: identifiers, so field paths need no escaping. */
export const schemaPropertyNamePattern = /^[A-Za-z_][A-Za-z0-9_]{0,63}$/;
/** `__proto__` matches the pattern but would set a prototype when copied into a plain object. */
export function isPropertyName(name: string): boolean {
  return schemaPropertyNamePattern.test(name) && name !== "__proto__";
}
const localRefPattern = /^#\/\$defs\/([A-Za-z_][A-Za-z0-9_]{0,63})$/;

const schemaJsonLimits: JsonLimits = {
  bytesMax: licenseSchemaLimits.schemaBytesMax,
  depthMax: 2 * licenseSchemaLimits.schemaNestingMax + 4,
  itemsMax: 4096,
};

export interface LicenseSchema {
  /** The parsed schema, deep-frozen: it is shared by every user of the cache. */
  readonly schema: JsonObject;
  /** SHA-256 (hex) of the schema text it was compiled from: the cache key. */
  readonly schemaHash: string;
  readonly validate: ValidateFunction;
}

function invalidSchema(where: string, message: string): never {
  throw new CodedError(
    "PAYLOAD_INVALID",
    `schema${where === "#" ? "" : ` at ${where}`}: ${message}`,
    "schema",
  );
}

// ---------------------------------------------------------------------------------------------
// Compilation and cache

/**
 * Compiles a license type's schema text, or throws PAYLOAD_INVALID (field "schema") saying what is
 * outside the allowed subset. Compiled validators are cached by the text's SHA-256, least recently
 * used first out, because execution validates every issue against its type's schema.
 */
export function compileLicenseSchema(schemaText: string): LicenseSchema {
  const schemaHash = sha256Hex(utf8(schemaText));
  const cached = compiledCache.get(schemaHash);
  if (cached !== undefined) {
    compiledCache.delete(schemaHash); // re-insert: Map order is the recency order
    compiledCache.set(schemaHash, cached);
    return cached;
  }
  const schema = parseLicenseSchema(schemaText);
  const compiled: LicenseSchema = { schema, schemaHash, validate: compileWithAjv(schema) };
  rememberCompiled(compiled);
  return compiled;
}

/** The schema of a type's public content: compiles the projection of `schemaText`. */
export function compilePublicSchema(schemaText: string, personalFields: readonly string[]): LicenseSchema {
  const full = compileLicenseSchema(schemaText);
  return compileLicenseSchema(canonicalJson(publicProjection(full.schema, personalFields), "schema"));
}

const compiledCache = new Map<string, LicenseSchema>();

function rememberCompiled(compiled: LicenseSchema): void {
  compiledCache.set(compiled.schemaHash, compiled);
  while (compiledCache.size > compiledSchemaCacheEntriesMax) {
    const oldest = compiledCache.keys().next().value as string;
    compiledCache.delete(oldest);
  }
  assert(compiledCache.size <= compiledSchemaCacheEntriesMax, "schema cache bounded");
}

/** For tests and metrics: how many compiled validators are held now. */
export function compiledSchemaCacheSize(): number {
  return compiledCache.size;
}

function parseLicenseSchema(schemaText: string): JsonObject {
  const value = parseJsonLimited(schemaText, "schema", schemaJsonLimits);
  const bytes = utf8(canonicalJson(value, "schema")).length;
  if (bytes > licenseSchemaLimits.schemaBytesMax) {
    invalidSchema("#", `${bytes} bytes as canonical JSON, more than ${licenseSchemaLimits.schemaBytesMax}`);
  }
  if (!isJsonObject(value)) invalidSchema("#", "must be a JSON object");
  checkRootSchema(value);
  return deepFreeze(value);
}

const ajv = new Ajv2020({
  strict: true,
  allErrors: false,
  // The validator must see exactly the caller's content: no defaults filled in, nothing coerced or removed.
  useDefaults: false,
  coerceTypes: false,
  removeAdditional: false,
  // `u` flag: one regex dialect (the stricter one) on every engine.
  unicodeRegExp: true,
  validateFormats: true,
  addUsedSchema: false,
  formats: boundedFormats(),
});

function compileWithAjv(schema: JsonObject): ValidateFunction {
  try {
    return ajv.compile(schema);
  } catch (error) {
    invalidSchema("#", (error as Error).message);
  } finally {
    // Ajv keeps every schema it compiled (keyed by object); our own LRU is the only cache.
    ajv.removeSchema(schema);
  }
}

/** ajv-formats' full (not fast) checks of the allowed formats, each behind a length cap. */
function boundedFormats() {
  const formats: Record<string, { type: "string"; validate: (text: string) => boolean }> = {};
  for (const name of Object.keys(formatCharsMax) as LicenseSchemaFormat[]) {
    const inner = fullFormats[name];
    const test =
      typeof inner === "function"
        ? inner
        : inner instanceof RegExp
          ? (text: string) => inner.test(text)
          : (inner as { validate: (text: string) => boolean }).validate;
    const charsMax = formatCharsMax[name];
    formats[name] = { type: "string", validate: (text) => text.length <= charsMax && test(text) };
  }
  return formats;
}

function deepFreeze<T>(value: T): T {
  if (value !== null && typeof value === "object") {
    for (const member of Object.values(value)) deepFreeze(member);
    Object.freeze(value);
  }
  return value;
}

// ---------------------------------------------------------------------------------------------
// The allowed subset

function checkRootSchema(root: JsonObject): void {
  if (root["type"] !== "object") invalidSchema("#", 'top level must have type "object"');
  if (!isJsonObject(root["properties"])) invalidSchema("#", "top level must have properties");
  if (root["additionalProperties"] !== false) {
    invalidSchema("#", "top level must have additionalProperties: false (content is closed)");
  }
  if (root["$schema"] !== undefined && root["$schema"] !== draft202012) {
    invalidSchema("#/$schema", `must be "${draft202012}" or absent`);
  }
  const defs = root["$defs"] ?? {};
  if (!isJsonObject(defs)) invalidSchema("#/$defs", "must be an object");
  // Defs may refer to one another in any order: collect every name before checking any body.
  const defNames = new Set(Object.keys(defs));
  for (const [name, sub] of Object.entries(defs)) {
    if (!isPropertyName(name)) invalidSchema("#/$defs", `name "${name}" is not an identifier`);
    checkSubschema(sub, `#/$defs/${name}`, 1, defNames);
  }
  checkKeywords(root, "#", 0, defNames, true);
}

/** Boolean schemas (true/false) are allowed anywhere a subschema is. */
function checkSubschema(node: unknown, where: string, nesting: number, defNames: ReadonlySet<string>): void {
  if (nesting > licenseSchemaLimits.schemaNestingMax) {
    invalidSchema(where, `nested deeper than ${licenseSchemaLimits.schemaNestingMax} subschemas`);
  }
  if (typeof node === "boolean") return;
  if (!isJsonObject(node)) invalidSchema(where, "a subschema must be an object or a boolean");
  checkKeywords(node, where, nesting, defNames, false);
}

function checkKeywords(
  node: JsonObject,
  where: string,
  nesting: number,
  defNames: ReadonlySet<string>,
  isRoot: boolean,
): void {
  for (const keyword of Object.keys(node)) {
    const allowed =
      (licenseSchemaKeywords as readonly string[]).includes(keyword) ||
      (isRoot && (rootOnlyKeywords as readonly string[]).includes(keyword));
    if (!allowed) {
      invalidSchema(
        where,
        keyword === "$defs" || keyword === "$schema"
          ? `${keyword} is allowed at the top level only`
          : `keyword "${keyword}" is not in the allowed subset`,
      );
    }
  }
  checkRef(node, where, defNames);
  checkFormat(node, where);
  checkPatternKeyword(node, where);
  checkChildren(node, where, nesting, defNames);
}

function checkRef(node: JsonObject, where: string, defNames: ReadonlySet<string>): void {
  const ref = node["$ref"];
  if (ref === undefined) return;
  const match = typeof ref === "string" ? localRefPattern.exec(ref) : null;
  if (match === null) invalidSchema(`${where}/$ref`, 'only local references "#/$defs/<name>" are allowed');
  if (!defNames.has(match[1]!)) invalidSchema(`${where}/$ref`, `"${ref}" names no entry of $defs`);
}

function checkFormat(node: JsonObject, where: string): void {
  const format = node["format"];
  if (format === undefined) return;
  if (typeof format !== "string" || !Object.hasOwn(formatCharsMax, format)) {
    invalidSchema(`${where}/format`, `must be one of ${Object.keys(formatCharsMax).join(", ")}`);
  }
}

function checkPatternKeyword(node: JsonObject, where: string): void {
  const pattern = node["pattern"];
  if (pattern === undefined) return;
  if (typeof pattern !== "string") invalidSchema(`${where}/pattern`, "must be a string");
  const maxLength = node["maxLength"];
  if (typeof maxLength !== "number" || maxLength > licenseSchemaLimits.patternSubjectCharsMax) {
    invalidSchema(
      where,
      `a pattern needs maxLength of at most ${licenseSchemaLimits.patternSubjectCharsMax} beside it`,
    );
  }
  const problem = checkPattern(pattern);
  if (problem !== null) invalidSchema(`${where}/pattern`, problem);
}

function checkChildren(
  node: JsonObject,
  where: string,
  nesting: number,
  defNames: ReadonlySet<string>,
): void {
  const properties = node["properties"];
  if (properties !== undefined) {
    if (!isJsonObject(properties)) invalidSchema(`${where}/properties`, "must be an object");
    for (const [name, sub] of Object.entries(properties)) {
      if (!isPropertyName(name)) {
        invalidSchema(
          `${where}/properties`,
          `property name "${name}" must match ${schemaPropertyNamePattern.source}`,
        );
      }
      checkSubschema(sub, `${where}/properties/${name}`, nesting + 1, defNames);
    }
  }
  for (const keyword of ["items", "additionalProperties"] as const) {
    if (node[keyword] !== undefined)
      checkSubschema(node[keyword], `${where}/${keyword}`, nesting + 1, defNames);
  }
  const prefixItems = node["prefixItems"];
  if (prefixItems !== undefined) {
    if (!Array.isArray(prefixItems)) invalidSchema(`${where}/prefixItems`, "must be an array");
    prefixItems.forEach((sub, i) => {
      checkSubschema(sub, `${where}/prefixItems/${i}`, nesting + 1, defNames);
    });
  }
}

// ---------------------------------------------------------------------------------------------
// Patterns

/**
 * Screens a regular expression for catastrophic backtracking, or returns why it is refused.
 * JavaScript's engine backtracks, and no linear-time engine is available on every node and browser,
 * so the screen is syntactic and conservative: no backreferences or lookaround (they defeat the
 * analysis), no repeated group that itself contains a quantifier or an alternation (star height 1,
 * which rules out the exponential cases such as `(a+)+` and `(a|a)*`), and at most
 * `patternVariableQuantifiersMax` variable quantifiers, which with the bounded subject length keeps
 * the polynomial cases such as `\d*\d*\d*x` small. Syntax errors are left to the RegExp constructor.
 */
export function checkPattern(pattern: string): string | null {
  if (pattern.length > licenseSchemaLimits.patternCharsMax) {
    return `longer than ${licenseSchemaLimits.patternCharsMax} characters`;
  }
  // Per open group: does it contain a quantifier or an alternation so far?
  const groups: Array<{ risky: boolean }> = [];
  let variableQuantifiers = 0;
  let lastAtomRisky = false; // the atom a quantifier would apply to: a group that was risky
  for (let i = 0; i < pattern.length; i++) {
    const c = pattern[i]!;
    if (c === "\\") {
      const next = pattern[i + 1] ?? "";
      if (/[1-9]/.test(next) || next === "k") return "backreferences are not allowed";
      i += 1;
      lastAtomRisky = false;
      continue;
    }
    if (c === "[") {
      i = skipClass(pattern, i);
      lastAtomRisky = false;
      continue;
    }
    if (c === "(") {
      if (/^\(\?<?[=!]/.test(pattern.slice(i, i + 4))) return "lookahead and lookbehind are not allowed";
      groups.push({ risky: false });
      // Skip a group's "?:" or "?<name>" prefix: that "?" is syntax, not a quantifier.
      const prefix = /^\(\?(?::|<[A-Za-z_][A-Za-z0-9_]*>)/.exec(pattern.slice(i, i + 72));
      if (prefix !== null) i += prefix[0].length - 1;
      continue;
    }
    if (c === ")") {
      const closed = groups.pop();
      lastAtomRisky = closed?.risky ?? false;
      if (closed?.risky && groups.length > 0) groups[groups.length - 1]!.risky = true;
      continue;
    }
    if (c === "|") {
      if (groups.length > 0) groups[groups.length - 1]!.risky = true;
      continue;
    }
    const quantifier = readQuantifier(pattern, i);
    if (quantifier !== null) {
      if (quantifier.repeats && lastAtomRisky) {
        return "a repeated group may not contain a quantifier or an alternation (catastrophic backtracking)";
      }
      if (quantifier.variable) variableQuantifiers += 1;
      if (groups.length > 0) groups[groups.length - 1]!.risky = true;
      i = quantifier.end;
      lastAtomRisky = false;
      continue;
    }
    lastAtomRisky = false;
  }
  if (variableQuantifiers > licenseSchemaLimits.patternVariableQuantifiersMax) {
    return `more than ${licenseSchemaLimits.patternVariableQuantifiersMax} variable quantifiers (*, +, {n,}, {n,m})`;
  }
  return null;
}

/** Index of the `]` closing the class that opens at `start` (or the end of the pattern). */
function skipClass(pattern: string, start: number): number {
  for (let i = start + 1; i < pattern.length; i++) {
    if (pattern[i] === "\\") i += 1;
    else if (pattern[i] === "]") return i;
  }
  return pattern.length;
}

interface Quantifier {
  /** Index of the quantifier's last character (a lazy `?` included). */
  readonly end: number;
  /** More than one repetition possible: what makes a risky group dangerous. */
  readonly repeats: boolean;
  /** The count is not fixed. */
  readonly variable: boolean;
}

function readQuantifier(pattern: string, i: number): Quantifier | null {
  const c = pattern[i];
  const lazy = (end: number) => (pattern[end + 1] === "?" ? end + 1 : end);
  if (c === "*" || c === "+") return { end: lazy(i), repeats: true, variable: true };
  if (c === "?") return { end: lazy(i), repeats: false, variable: true };
  if (c !== "{") return null;
  const match = /^\{(\d+)(,(\d*))?\}/.exec(pattern.slice(i, i + 24));
  if (match === null) return null; // a literal "{" (the u flag refuses it later)
  const min = Number(match[1]);
  const max = match[2] === undefined ? min : match[3] === "" ? Number.POSITIVE_INFINITY : Number(match[3]);
  return { end: lazy(i + match[0].length - 1), repeats: max > 1, variable: max > min };
}

// ---------------------------------------------------------------------------------------------
// Projection, content validation and splitting

/**
 * The schema of the non-personal part of content: the personal properties and their `required`
 * entries removed. Every personal field must be a top-level property, so nothing personal can hide
 * inside a public object.
 */
export function publicProjection(schema: JsonObject, personalFields: readonly string[]): JsonObject {
  const properties = schema["properties"];
  assert(isJsonObject(properties), "a compiled license schema has top-level properties");
  checkPersonalFields(properties, personalFields);
  const personal = new Set(personalFields);
  const publicProperties: JsonObject = Object.fromEntries(
    Object.entries(properties).filter(([name]) => !personal.has(name)),
  );
  const projection: JsonObject = { ...schema, properties: publicProperties };
  const required = schema["required"];
  if (Array.isArray(required)) {
    const publicRequired = required.filter((name) => typeof name === "string" && !personal.has(name));
    if (publicRequired.length > 0) projection["required"] = publicRequired;
    else delete projection["required"];
  }
  return projection;
}

function checkPersonalFields(properties: JsonObject, personalFields: readonly string[]): void {
  const seen = new Set<string>();
  for (const name of personalFields) {
    if (seen.has(name)) {
      throw new CodedError("PAYLOAD_INVALID", `personalFields: "${name}" is listed twice`, "personalFields");
    }
    seen.add(name);
    if (!isPropertyName(name) || !Object.hasOwn(properties, name)) {
      throw new CodedError(
        "PAYLOAD_INVALID",
        `personalFields: "${name}" is not a top-level property of the schema`,
        "personalFields",
      );
    }
  }
}

/**
 * Validates parsed content (already bounded by `parseJsonLimited` or `checkShape`) or throws
 * LICENSE_CONTENT_INVALID naming the first failing field, e.g. `content.address.city`.
 */
export function validateContent(compiled: LicenseSchema, content: unknown, fieldPrefix: string): void {
  if (compiled.validate(content)) return;
  const error = compiled.validate.errors?.[0];
  assert(error !== undefined, "a failed validation reports an error");
  const field = errorField(fieldPrefix, error);
  throw new CodedError("LICENSE_CONTENT_INVALID", `${field}: ${errorMessage(error)}`, field);
}

function errorField(prefix: string, error: ErrorObject): string {
  // Property names are identifiers, so a pointer's segments need no ~0/~1 unescaping beyond this.
  const segments = error.instancePath === "" ? [] : error.instancePath.slice(1).split("/");
  const params = error.params as { missingProperty?: string; additionalProperty?: string };
  if (error.keyword === "required" && params.missingProperty !== undefined)
    segments.push(params.missingProperty);
  if (error.keyword === "additionalProperties" && params.additionalProperty !== undefined) {
    segments.push(params.additionalProperty);
  }
  const path = segments.map((s) => s.replaceAll("~1", "/").replaceAll("~0", "~"));
  return [prefix, ...path].filter((s) => s !== "").join(".");
}

function errorMessage(error: ErrorObject): string {
  if (error.keyword === "required") return "is required";
  if (error.keyword === "additionalProperties") return "is not a field of this license type";
  return error.message ?? `fails ${error.keyword}`;
}

/** Splits content into the public part (stored in clear) and the personal fields (sealed). */
export function splitContent(
  content: JsonObject,
  personalFields: readonly string[],
): { publicContent: JsonObject; personalFields: JsonObject } {
  const personal = new Set(personalFields);
  // fromEntries defines own properties, so even a "__proto__" key stays data.
  const entries = Object.entries(content);
  return {
    publicContent: Object.fromEntries(entries.filter(([name]) => !personal.has(name))),
    personalFields: Object.fromEntries(entries.filter(([name]) => personal.has(name))),
  };
}
