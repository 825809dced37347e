/**
 * JSON Schemas of the license routes (see license-routes.ts); validation and the OpenAPI document
 * come from them like every other route's.
 */
import { apiErrorResponses, commit, header, validatorsJson } from "./schemas.ts";

const pseudonym = { type: "string", pattern: "^[0-9a-f]{64}$" } as const;
const typeCode = { type: "string", pattern: "^[0-9A-Z]{18}[0-9]{3}$" } as const;
const licenseRef = {
  type: "string",
  minLength: 1,
  maxLength: 128,
  description:
    "a full GB/T 36904 identifier (one version) or a license key <type>.<issuer>.<serial> (current version)",
} as const;
const cursor = { type: "string", maxLength: 256 } as const;
const time = { type: "string", format: "date-time" } as const;
const deptCode = { type: "string", pattern: "^[a-z][a-z0-9-]{1,31}$" } as const;

const licenseType = {
  type: "object",
  properties: {
    code: { type: "string" },
    name: { type: "string" },
    definedBy: { type: "string" },
    schema: { type: "object", additionalProperties: true },
    issuers: { type: "array", items: { type: "string" } },
    personalFields: { type: "array", items: { type: "string" } },
    validityDays: { type: ["integer", "null"] },
    sinceHeight: { type: "integer" },
    policy: { type: "object", additionalProperties: true },
  },
} as const;

export const license = {
  type: "object",
  properties: {
    id: { type: "string" },
    licenseKey: { type: "string" },
    version: { type: "integer" },
    current: { type: "boolean" },
    currentId: { type: "string" },
    name: { type: "string" },
    typeCode: { type: "string" },
    issuerCode: { type: "string" },
    issuerDept: { type: "string" },
    holder: { type: "string", description: "keyed pseudonym of the holder" },
    holderCodeType: { type: "string" },
    areaCode: { type: "string" },
    issuedAt: { type: "string" },
    validFrom: { type: "string" },
    validUntil: { type: ["string", "null"] },
    status: { type: "string", enum: ["valid", "suspended", "revoked", "expired"] },
    storedStatus: { type: "string" },
    statusReason: { type: ["string", "null"] },
    statusChangedAt: { type: "string" },
    statusIndex: { type: "integer" },
    content: { type: "object", additionalProperties: true, description: "the public (non-personal) content" },
    personalFields: { type: "array", items: { type: "string" } },
    contentHash: { type: "string" },
    issuedBy: { type: "string" },
    txId: { type: "string" },
    height: { type: "integer" },
  },
} as const;

const provenEntry = {
  type: "object",
  properties: {
    key: { type: "string" },
    value: { type: ["string", "null"] },
    valueHash: { type: ["string", "null"] },
    proof: { type: "object", additionalProperties: true },
  },
} as const;

const trailEntry = {
  type: "object",
  properties: {
    licenseId: { type: "string" },
    holder: { type: "string" },
    readerDept: { type: "string" },
    readerId: { type: "string" },
    readAt: { type: "string" },
    policyRule: { type: "string" },
    fields: { type: "array", items: { type: "string" } },
    basis: { type: "string" },
    txId: { type: "string" },
    height: { type: "integer" },
  },
} as const;

export const listTypes = {
  summary: "License types in the catalogue",
  response: {
    200: { type: "object", properties: { types: { type: "array", items: licenseType } } },
    ...apiErrorResponses,
  },
} as const;

export const getType = {
  summary: "A license type with its access policy",
  params: { type: "object", properties: { code: typeCode }, required: ["code"] },
  response: { 200: licenseType, ...apiErrorResponses },
} as const;

export const searchLicenses = {
  summary: "Search licenses the caller may see, newest first, by holder, type, issuer, status and issue date",
  querystring: {
    type: "object",
    properties: {
      holder: pseudonym,
      type: typeCode,
      issuer: deptCode,
      status: { type: "string", enum: ["valid", "suspended", "revoked", "expired"] },
      from: time,
      to: time,
      cursor,
      limit: { type: "integer", minimum: 1, maximum: 500 },
    },
    additionalProperties: false,
  },
  response: {
    200: {
      type: "object",
      properties: { items: { type: "array", items: license }, nextCursor: { type: ["string", "null"] } },
    },
    ...apiErrorResponses,
  },
} as const;

export const getLicense = {
  summary: "One license: a version by its identifier, or the current version by license key",
  params: { type: "object", properties: { id: licenseRef }, required: ["id"] },
  response: { 200: license, ...apiErrorResponses },
} as const;

export const getLicenseProof = {
  summary: "A license version and its head with state proofs, the header and its commit certificate",
  description:
    "Verify offline: each entry's proof against header.stateRoot, the header hash against commit signatures of > 2/3 of the validators' power.",
  params: { type: "object", properties: { id: licenseRef }, required: ["id"] },
  response: {
    200: {
      type: "object",
      properties: {
        id: { type: "string" },
        licenseKey: { type: "string" },
        version: provenEntry,
        head: provenEntry,
        height: { type: "integer" },
        header,
        commit,
        validators: validatorsJson,
      },
    },
    ...apiErrorResponses,
  },
} as const;

export const getHistory = {
  summary: "A license's events: issue, amendments, status changes and consents",
  params: { type: "object", properties: { id: licenseRef }, required: ["id"] },
  querystring: {
    type: "object",
    properties: {
      after: { type: "integer", minimum: 0 },
      limit: { type: "integer", minimum: 1, maximum: 500 },
    },
    additionalProperties: false,
  },
  response: {
    200: {
      type: "object",
      properties: {
        licenseKey: { type: "string" },
        events: {
          type: "array",
          items: {
            type: "object",
            properties: {
              seq: { type: "integer" },
              licenseId: { type: "string" },
              event: { type: "string" },
              by: { type: "string" },
              txId: { type: "string" },
              height: { type: "integer" },
              at: { type: "string" },
              dept: { type: ["string", "null"] },
            },
          },
        },
        next: { type: ["integer", "null"] },
      },
    },
    ...apiErrorResponses,
  },
} as const;

export const getSubject = {
  summary: "A data subject's public record: status, custody and public keys",
  params: { type: "object", properties: { pseudonym }, required: ["pseudonym"] },
  response: {
    200: {
      type: "object",
      properties: {
        pseudonym: { type: "string" },
        status: { type: "string" },
        custody: { type: "string" },
        nextSeq: { type: "integer" },
        encryptionKey: { type: "string" },
        signingKey: { type: "string" },
        sinceHeight: { type: "integer" },
      },
    },
    ...apiErrorResponses,
  },
} as const;

export const getTrail = {
  summary: "Reads of personal content, for auditors: by reading department and time",
  querystring: {
    type: "object",
    properties: {
      dept: deptCode,
      from: time,
      to: time,
      cursor,
      limit: { type: "integer", minimum: 1, maximum: 500 },
    },
    additionalProperties: false,
  },
  response: {
    200: {
      type: "object",
      properties: { items: { type: "array", items: trailEntry }, nextCursor: { type: ["string", "null"] } },
    },
    ...apiErrorResponses,
  },
} as const;

export const trailEntrySchema = trailEntry;

export const openLicense = {
  summary: "Read a license's personal content, on the key node of the caller's department",
  description:
    "Allowed by the type's policy (action decrypt, field by field) and, for a department other than the issuer, the holder's consent. Only the allowed fields are returned; every read is recorded on chain in the access trail.",
  params: { type: "object", properties: { id: licenseRef }, required: ["id"] },
  body: {
    type: ["object", "null"],
    properties: {
      fields: { type: "array", items: { type: "string", maxLength: 64 }, maxItems: 66, uniqueItems: true },
    },
    additionalProperties: false,
  },
  response: {
    200: {
      type: "object",
      properties: {
        id: { type: "string" },
        holder: { type: "string" },
        fields: { type: "object", additionalProperties: true },
        policyRules: { type: "array", items: { type: "string" } },
        basis: { type: "string", enum: ["issuer", "consent"] },
        status: { type: "string" },
      },
    },
    ...apiErrorResponses,
    410: apiErrorResponses[404],
  },
} as const;

export const pseudonymOf = {
  summary: "The keyed pseudonym of a holder code (needs the consortium pseudonym key on this node)",
  body: {
    type: "object",
    properties: {
      codeType: { type: "string", pattern: "^[0-9]{3}$" },
      code: { type: "string", minLength: 1, maxLength: 64 },
    },
    required: ["codeType", "code"],
    additionalProperties: false,
  },
  response: {
    200: { type: "object", properties: { pseudonym: { type: "string" } } },
    ...apiErrorResponses,
  },
} as const;

export const departmentKey = {
  summary: "The caller's department's public key for a subject, made on this key node on first need",
  description:
    "Publish it with a license.subject.key transaction (or as deptKey in license.issue) before licenses or consents can be wrapped to it.",
  params: { type: "object", properties: { pseudonym }, required: ["pseudonym"] },
  body: { type: "object", properties: {}, additionalProperties: false },
  response: {
    200: {
      type: "object",
      properties: {
        pseudonym: { type: "string" },
        dept: { type: "string" },
        publicKey: { type: "string" },
        published: { type: "boolean" },
      },
    },
    ...apiErrorResponses,
    410: apiErrorResponses[404],
  },
} as const;

export const getCredential = {
  summary: "A license version exported as a W3C Verifiable Credential 2.0 (public data only)",
  params: { type: "object", properties: { id: licenseRef }, required: ["id"] },
  response: { 200: { type: "object", additionalProperties: true }, ...apiErrorResponses },
} as const;

export const getStatusList = {
  summary: "A license type's W3C Bitstring Status List credential (revocation or suspension)",
  params: {
    type: "object",
    properties: { type: typeCode, purpose: { type: "string", enum: ["revocation", "suspension"] } },
    required: ["type", "purpose"],
  },
  response: { 200: { type: "object", additionalProperties: true }, ...apiErrorResponses },
} as const;

const holderPage = {
  type: "object",
  properties: { cursor, limit: { type: "integer", minimum: 1, maximum: 500 } },
  additionalProperties: false,
} as const;

export const subjectLicenses = {
  summary: "The holder's own licenses (authorised by the holder's X-Citychain-Subject proof)",
  params: { type: "object", properties: { pseudonym }, required: ["pseudonym"] },
  querystring: holderPage,
  response: {
    200: {
      type: "object",
      properties: { items: { type: "array", items: license }, nextCursor: { type: ["string", "null"] } },
    },
    ...apiErrorResponses,
  },
} as const;

export const subjectTrail = {
  summary: "Who read the holder's personal content (authorised by the holder's X-Citychain-Subject proof)",
  params: { type: "object", properties: { pseudonym }, required: ["pseudonym"] },
  querystring: holderPage,
  response: {
    200: {
      type: "object",
      properties: { items: { type: "array", items: trailEntry }, nextCursor: { type: ["string", "null"] } },
    },
    ...apiErrorResponses,
  },
} as const;

export const licenseProofsMax = 256;

export const licenseProofs = {
  summary: "Proofs for many licenses at once, against one header and commit (one signature check per batch)",
  description:
    'With Accept: application/cbor the same evidence comes as canonical CBOR (docs/licenses.md "Binary batch answers"); the JSON shape below is the default.',
  body: {
    type: "object",
    properties: { ids: { type: "array", items: licenseRef, minItems: 1, maxItems: licenseProofsMax } },
    required: ["ids"],
    additionalProperties: false,
  },
  response: {
    200: {
      type: "object",
      properties: {
        items: {
          type: "array",
          items: {
            type: "object",
            properties: {
              id: { type: "string" },
              licenseKey: { type: "string" },
              version: provenEntry,
              head: provenEntry,
              error: {
                type: "object",
                properties: {
                  code: { type: "string" },
                  message: { type: "string" },
                  field: { type: "string" },
                },
              },
            },
          },
        },
        height: { type: "integer" },
        header,
        commit,
        validators: validatorsJson,
      },
    },
    ...apiErrorResponses,
  },
} as const;
