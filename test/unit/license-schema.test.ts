/**
 * License type content schemas (src/core/license/schema.ts): the allowed subset of JSON Schema,
 * the errors that name a field, the public projection, splitting and the bounded compile cache.
 */
import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { CodedError } from "../../src/core/errors.ts";
import { canonicalJson, type JsonObject } from "../../src/core/license/json.ts";
import {
  checkPattern,
  compiledSchemaCacheEntriesMax,
  compiledSchemaCacheSize,
  compileLicenseSchema,
  compilePublicSchema,
  licenseSchemaLimits,
  publicProjection,
  splitContent,
  validateContent,
} from "../../src/core/license/schema.ts";

const businessLicense: JsonObject = {
  $schema: "https://json-schema.org/draft/2020-12/schema",
  title: "Business license",
  type: "object",
  properties: {
    number: { type: "string", pattern: "^[0-9A-Z]{18}$", maxLength: 18 },
    companyName: { type: "string", minLength: 1, maxLength: 200 },
    legalRepresentative: { type: "string", minLength: 1, maxLength: 100 },
    birthDate: { type: "string", format: "date" },
    email: { type: "string", format: "email" },
    capitalYuan: { type: "integer", minimum: 0, maximum: 1e15 },
    kind: { enum: ["sole", "partnership", "company"] },
    address: { $ref: "#/$defs/address" },
    scopes: { type: "array", items: { type: "string", maxLength: 50 }, minItems: 1, maxItems: 20 },
  },
  required: ["number", "companyName", "legalRepresentative", "birthDate", "kind"],
  additionalProperties: false,
  $defs: {
    address: {
      type: "object",
      properties: { city: { type: "string", minLength: 2, maxLength: 50 }, street: { type: "string" } },
      required: ["city"],
      additionalProperties: false,
    },
  },
};
const personal = ["legalRepresentative", "birthDate", "email"];

const goodContent: JsonObject = {
  number: "91310000MA1FL4XX1X",
  companyName: "Example Trading Co.",
  legalRepresentative: "Zhang San",
  birthDate: "1980-02-29",
  email: "zhang@example.cn",
  capitalYuan: 1000000,
  kind: "company",
  address: { city: "Shanghai", street: "1 Century Ave" },
  scopes: ["wholesale"],
};

function schemaText(schema: JsonObject): string {
  return canonicalJson(schema, "schema");
}

function refused(schema: JsonObject | string, fragment: RegExp): void {
  const text = typeof schema === "string" ? schema : schemaText(schema);
  assert.throws(
    () => compileLicenseSchema(text),
    (error: unknown) => {
      assert.ok(error instanceof CodedError);
      assert.equal(error.code, "PAYLOAD_INVALID");
      assert.equal(error.field, "schema");
      assert.match(error.message, fragment);
      return true;
    },
  );
}

function contentError(schema: JsonObject, content: unknown): CodedError {
  const compiled = compileLicenseSchema(schemaText(schema));
  try {
    validateContent(compiled, content, "content");
  } catch (error) {
    assert.ok(error instanceof CodedError);
    assert.equal(error.code, "LICENSE_CONTENT_INVALID");
    return error;
  }
  assert.fail("content was accepted");
}

function withProperty(name: string, sub: JsonObject | boolean): JsonObject {
  return { type: "object", properties: { [name]: sub }, additionalProperties: false };
}

describe("license schema: the allowed subset", () => {
  test("a realistic schema compiles and accepts good content", () => {
    const compiled = compileLicenseSchema(schemaText(businessLicense));
    validateContent(compiled, goodContent, "content");
    assert.match(compiled.schemaHash, /^[0-9a-f]{64}$/);
    assert.ok(Object.isFrozen(compiled.schema));
  });

  test("the top level must be a closed object with properties", () => {
    refused({ type: "string" }, /top level must have type "object"/);
    refused({ type: "object", additionalProperties: false }, /top level must have properties/);
    refused({ type: "object", properties: {} }, /additionalProperties: false/);
    refused({ type: "object", properties: {}, additionalProperties: true }, /additionalProperties: false/);
    refused("[1,2]", /top level must have type "object"|must be a JSON object/);
    refused("{not json", /not valid JSON/);
  });

  test("unknown and unsafe keywords are refused, naming where", () => {
    refused(withProperty("a", { type: "string", foo: 1 }), /#\/properties\/a: keyword "foo"/);
    refused(withProperty("a", { type: "number", multipleOf: 0.1 }), /keyword "multipleOf"/);
    refused(withProperty("a", { anyOf: [{ type: "string" }] }), /keyword "anyOf"/);
    refused(withProperty("a", { $id: "https://x.example/a" }), /keyword "\$id"/);
    refused(withProperty("a", { $dynamicRef: "#x" }), /keyword "\$dynamicRef"/);
    refused(withProperty("a", { $defs: {} }), /\$defs is allowed at the top level only/);
    refused({ ...withProperty("a", true), $schema: "http://json-schema.org/draft-07/schema#" }, /\$schema/);
  });

  test("only local references to $defs", () => {
    refused(withProperty("a", { $ref: "https://evil.example/schema.json" }), /only local references/);
    refused(withProperty("a", { $ref: "other.json#/x" }), /only local references/);
    refused(withProperty("a", { $ref: "#/properties/b" }), /only local references/);
    refused(withProperty("a", { $ref: "#/$defs/missing" }), /names no entry of \$defs/);
    const recursive: JsonObject = {
      ...withProperty("tree", { $ref: "#/$defs/node" }),
      $defs: {
        node: {
          type: "object",
          properties: { children: { type: "array", items: { $ref: "#/$defs/node" } } },
          additionalProperties: false,
        },
      },
    };
    compileLicenseSchema(schemaText(recursive));
  });

  test("formats: a fixed set", () => {
    for (const format of ["date", "date-time", "email", "uri"]) {
      compileLicenseSchema(schemaText(withProperty("a", { type: "string", format })));
    }
    for (const format of ["regex", "hostname", "ipv4", "duration", "nonsense"]) {
      refused(withProperty("a", { type: "string", format }), /format: must be one of/);
    }
  });

  test("formats check the calendar and are length-capped", () => {
    const schema = withProperty("d", { type: "string", format: "date" });
    assert.match(contentError(schema, { d: "2023-02-29" }).message, /must match format "date"/);
    validateContent(compileLicenseSchema(schemaText(schema)), { d: "2024-02-29" }, "content");
    const dateTime = withProperty("t", { type: "string", format: "date-time" });
    validateContent(compileLicenseSchema(schemaText(dateTime)), { t: "2024-02-29T12:00:00Z" }, "content");
    contentError(dateTime, { t: "2024-02-29T12:00:00" }); // no offset: not RFC 3339
    const email = withProperty("e", { type: "string", format: "email" });
    contentError(email, { e: `${"a".repeat(250)}@b.cn` });
  });

  test("property names are identifiers", () => {
    refused(withProperty("address.city", { type: "string" }), /property name "address.city"/);
    refused(withProperty("__proto__", { type: "string" }), /property name "__proto__"/);
  });

  test("size and nesting are bounded", () => {
    const properties: JsonObject = {};
    for (let i = 0; i < 600; i++) properties[`field${i}`] = { type: "string", maxLength: 10 };
    refused({ type: "object", properties, additionalProperties: false }, /bytes|longer than/);
    let deep: JsonObject = { type: "string" };
    for (let i = 0; i < licenseSchemaLimits.schemaNestingMax + 1; i++) {
      deep = { type: "object", properties: { x: deep }, additionalProperties: false };
    }
    refused(deep, /nested deeper/);
  });

  test("Ajv's strict mode still applies (types beside type-specific keywords)", () => {
    refused(withProperty("a", { minLength: 1 }), /strict mode/);
    refused(withProperty("a", { type: "string", pattern: "([a-z]", maxLength: 5 }), /schema/);
  });
});

describe("license schema: patterns", () => {
  test("safe patterns pass", () => {
    for (const p of [
      "^[0-9]{6}$",
      "^[A-Z]{2}[0-9]{4,8}$",
      "^(?:[0-9]{3}-)?[0-9]{4}$",
      "^\\d+\\.\\d+$",
      "^(a|b)$",
    ]) {
      assert.equal(checkPattern(p), null, p);
    }
  });

  test("patterns that can backtrack catastrophically are refused", () => {
    for (const p of ["(a+)+$", "^(a|a)*$", "^(\\d{2,})*$", "(x*y?)+", "^(a|ab){2,}$"]) {
      assert.match(checkPattern(p) ?? "", /repeated group/, p);
    }
    assert.match(checkPattern("^\\d*\\d*\\d*\\d*x$") ?? "", /variable quantifiers/);
    assert.match(checkPattern("(a)\\1") ?? "", /backreferences/);
    assert.match(checkPattern("(?<n>a)\\k<n>") ?? "", /backreferences/);
    assert.match(checkPattern("^(?=a)a$") ?? "", /lookahead/);
    assert.match(checkPattern("a".repeat(licenseSchemaLimits.patternCharsMax + 1)) ?? "", /longer than/);
  });

  test("group prefixes are not quantifiers", () => {
    assert.equal(checkPattern("^(?:ab)+$"), null);
    assert.equal(checkPattern("^(?<year>[0-9]{4})-(?<month>[0-9]{2})$"), null);
    assert.equal(checkPattern("^(?:a)(?:b)(?:c)(?:d)x*y*z*$"), null, "group prefixes count no quantifier");
    assert.match(checkPattern("^(?:a+)+$") ?? "", /repeated group/);
  });

  test("characters inside a class or escaped are not quantifiers", () => {
    assert.equal(checkPattern("^([+*?|])+$"), null);
    assert.equal(checkPattern("^(\\+)+$"), null);
  });

  test("a pattern needs a small maxLength beside it", () => {
    refused(withProperty("a", { type: "string", pattern: "^[0-9]+$" }), /needs maxLength/);
    refused(withProperty("a", { type: "string", pattern: "^[0-9]+$", maxLength: 1000 }), /needs maxLength/);
    refused(
      withProperty("a", { type: "string", pattern: "(a+)+", maxLength: 10 }),
      /#\/properties\/a\/pattern/,
    );
  });
});

describe("license schema: content errors name the field", () => {
  const cases: Array<[string, JsonObject, string, RegExp]> = [
    ["wrong format", { ...goodContent, birthDate: "1980-13-01" }, "content.birthDate", /format "date"/],
    [
      "missing required",
      { ...goodContent, companyName: undefined as never },
      "content.companyName",
      /required/,
    ],
    ["unknown field", { ...goodContent, extra: 1 }, "content.extra", /not a field/],
    ["nested", { ...goodContent, address: { city: "X" } }, "content.address.city", /fewer than 2/],
    [
      "nested unknown",
      { ...goodContent, address: { city: "XY", zip: "1" } },
      "content.address.zip",
      /not a field/,
    ],
    ["nested missing", { ...goodContent, address: {} }, "content.address.city", /required/],
    ["array item", { ...goodContent, scopes: ["a".repeat(51)] }, "content.scopes.0", /more than 50/],
    ["type", { ...goodContent, capitalYuan: "1" }, "content.capitalYuan", /must be integer/],
    ["enum", { ...goodContent, kind: "trust" }, "content.kind", /allowed values/],
    ["pattern", { ...goodContent, number: "x" }, "content.number", /must match pattern/],
  ];
  for (const [name, content, field, message] of cases) {
    test(name, () => {
      const json = JSON.parse(JSON.stringify(content)) as JsonObject; // drops the undefined member
      const error = contentError(businessLicense, json);
      assert.equal(error.field, field);
      assert.ok(error.message.startsWith(`${field}: `), error.message);
      assert.match(error.message, message);
    });
  }

  test("a non-object content names the prefix", () => {
    assert.equal(contentError(businessLicense, [1]).field, "content");
  });
});

describe("license schema: public projection and splitting", () => {
  test("projection drops personal properties and their required entries", () => {
    const compiled = compileLicenseSchema(schemaText(businessLicense));
    const projection = publicProjection(compiled.schema, personal);
    const properties = projection["properties"] as JsonObject;
    for (const name of personal) assert.equal(Object.hasOwn(properties, name), false);
    assert.deepEqual(projection["required"], ["number", "companyName", "kind"]);
    assert.equal(projection["additionalProperties"], false);
    assert.ok(Object.hasOwn(compiled.schema["properties"] as JsonObject, "birthDate"), "input untouched");
  });

  test("public content validates against the projection; personal fields there are refused", () => {
    const { publicContent, personalFields } = splitContent(goodContent, personal);
    assert.deepEqual(Object.keys(personalFields).sort(), ["birthDate", "email", "legalRepresentative"]);
    assert.equal(Object.hasOwn(publicContent, "birthDate"), false);
    const publicSchema = compilePublicSchema(schemaText(businessLicense), personal);
    validateContent(publicSchema, publicContent, "publicContent");
    assert.throws(
      () => validateContent(publicSchema, { ...publicContent, birthDate: "1980-02-29" }, "publicContent"),
      { code: "LICENSE_CONTENT_INVALID", field: "publicContent.birthDate" },
    );
  });

  test("personal fields must be top-level properties, listed once", () => {
    const compiled = compileLicenseSchema(schemaText(businessLicense));
    for (const fields of [["city"], ["address.city"], ["nope"], ["email", "email"], ["__proto__"]]) {
      assert.throws(() => publicProjection(compiled.schema, fields), {
        code: "PAYLOAD_INVALID",
        field: "personalFields",
      });
    }
  });

  test("a projection with no required entry left omits required", () => {
    const schema: JsonObject = {
      type: "object",
      properties: { a: { type: "string" }, b: { type: "string" } },
      required: ["a"],
      additionalProperties: false,
    };
    const projection = publicProjection(compileLicenseSchema(schemaText(schema)).schema, ["a"]);
    assert.equal(Object.hasOwn(projection, "required"), false);
    compileLicenseSchema(schemaText(projection));
  });
});

describe("license schema: determinism and the cache", () => {
  test("the same verdict every time, cached or freshly compiled", () => {
    const text = schemaText(businessLicense);
    const bad = { ...goodContent, address: { city: "X" } };
    const verdicts = new Set<string>();
    for (let i = 0; i < 50; i++) {
      const compiled = compileLicenseSchema(text);
      try {
        validateContent(compiled, bad, "content");
        verdicts.add("ok");
      } catch (error) {
        verdicts.add(JSON.stringify((error as CodedError).toJSON()));
      }
    }
    assert.equal(verdicts.size, 1);
    assert.equal(compileLicenseSchema(text), compileLicenseSchema(text), "served from the cache");
  });

  test("the cache is bounded and evicts the least recently used", () => {
    const first = schemaText(withProperty("first", { type: "string" }));
    const firstCompiled = compileLicenseSchema(first);
    for (let i = 0; i < compiledSchemaCacheEntriesMax + 20; i++) {
      compileLicenseSchema(schemaText(withProperty(`p${i}`, { type: "string" })));
      assert.ok(compiledSchemaCacheSize() <= compiledSchemaCacheEntriesMax);
      if (i % 10 === 0) compileLicenseSchema(first); // keep it recent
    }
    assert.equal(compileLicenseSchema(first), firstCompiled);
    const evicted = schemaText(withProperty("p0", { type: "string" }));
    const again = compileLicenseSchema(evicted);
    validateContent(again, { p0: "x" }, "content"); // recompiled, same verdicts
  });

  test("refused schemas are refused every time and leave nothing cached", () => {
    const before = compiledSchemaCacheSize();
    for (let i = 0; i < 5; i++) refused(withProperty("a", { $ref: "https://evil.example/x" }), /only local/);
    assert.equal(compiledSchemaCacheSize(), before);
  });
});
