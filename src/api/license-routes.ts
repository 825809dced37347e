/**
 * License routes of the node API (docs/api.md "Licenses", docs/licenses.md). Reads are judged by the
 * license type's access policy (action "query") with the caller's department and roles; a denial is
 * 403 POLICY_DENIED naming the rule. Search runs on the node's license indexes, filtered to the
 * types the caller may query, with cursor pagination.
 */
import type { FastifyInstance, FastifyRequest } from "fastify";
import { toHex } from "../core/encoding.ts";
import { CodedError } from "../core/errors.ts";
import type { Identity } from "../core/identity.ts";
import { validateHolderCode } from "../core/license/identifier.ts";
import { decide, policyDenied } from "../core/license/policy.ts";
import {
  type LicenseHead,
  type LicenseType,
  type LicenseVersion,
  licenseKeys,
} from "../core/license/records.ts";
import { subjectReadHeader, subjectReadSigningBytes } from "../core/license/statement.ts";
import { readDepartment, readRecordOnce } from "../core/system-state.ts";
import type { LicenseKeyNode } from "../license/key-node.ts";
import { effectiveStatus, type LicenseReader, licenseReader } from "../license/reader.ts";
import {
  buildLicenseCredential,
  buildStatusListCredential,
  departmentIssuerId,
  type StatusPurpose,
} from "../license/vc.ts";
import type { ChainNode } from "../node/node.ts";
import {
  cborMediaType,
  errorItem,
  LicenseProofCache,
  type ProvenLicense,
  proofsAnswer,
  wantsCbor,
} from "./license-proofs.ts";
import * as s from "./license-schemas.ts";
import { ProofCache, proofAnchor } from "./proofs.ts";

const iso = (ms: number | null) => (ms === null ? null : new Date(ms).toISOString());

export function licenseToJson(type: LicenseType, head: LicenseHead, version: LicenseVersion, nowMs: number) {
  return {
    id: version.id,
    licenseKey: version.licenseKey,
    version: version.version,
    current: head.currentId === version.id,
    currentId: head.currentId,
    name: type.name,
    typeCode: version.typeCode,
    issuerCode: version.issuerCode,
    issuerDept: version.issuerDept,
    holder: version.holder,
    holderCodeType: version.holderCodeType,
    areaCode: version.areaCode,
    issuedAt: iso(version.issuedAtMs),
    validFrom: iso(version.validFromMs),
    validUntil: iso(version.validUntilMs),
    status: effectiveStatus(head, version, nowMs),
    storedStatus: head.status,
    statusReason: head.statusReason,
    statusChangedAt: iso(head.statusChangedAtMs),
    statusIndex: head.statusIndex,
    content: JSON.parse(version.publicContent) as unknown,
    personalFields: ["holderName", "holderCode", ...type.personalFields],
    contentHash: toHex(version.contentHash),
    issuedBy: version.issuedBy,
    txId: version.txId,
    height: version.height,
  };
}

/** The caller may query this license (or type, before there is a license). */
export function requireQuery(
  reader: LicenseReader,
  caller: Identity,
  type: LicenseType,
  issuerDept: string | null,
): string {
  const verdict = decide(reader.policy(type.code), caller, { issuers: type.issuers, issuerDept }, "query");
  if (!verdict.allowed)
    throw policyDenied(verdict.rule, `${caller.dept} may not query ${type.code} licenses`);
  return verdict.rule;
}

/** Types whose licenses the caller may see in a search: each type's policy, evaluated once. */
function queryableTypes(node: ChainNode, reader: LicenseReader, caller: Identity): string[] | undefined {
  const codes: string[] = [];
  let all = true;
  for (const { key } of node.ledger.store.stateRange("lic/type/", "lic/type0", typesMax)) {
    const type = reader.type(key.slice("lic/type/".length));
    // "$issuer" rules depend on the license; a search treats the caller's own licenses as its own.
    const asIssuer = decide(
      reader.policy(type.code),
      caller,
      { issuers: type.issuers, issuerDept: caller.dept },
      "query",
    );
    const asOther = decide(
      reader.policy(type.code),
      caller,
      { issuers: type.issuers, issuerDept: null },
      "query",
    );
    if (asOther.allowed) codes.push(type.code);
    else {
      all = false;
      if (asIssuer.allowed) codes.push(type.code);
    }
  }
  return all ? undefined : codes;
}

const typesMax = 10_000;
const statusListsCachedMax = 256;
const queryableCacheEntriesMax = 4096;
/** About 2 KiB each: 200 MiB at most. */
const proofCacheEntriesMax = 100_000;
/** Licenses whose binary proof items are kept for the current height; about 2 KiB each: 80 MiB. */
const licenseProofCacheEntriesMax = 40_000;
const subjectReadSkewMs = 300_000;

/** Where this node is reached, as the caller reached it (for links in exported documents). */
function baseUrlOf(request: FastifyRequest): string {
  const host =
    typeof request.headers.host === "string" && /^[A-Za-z0-9.:[\]-]{1,255}$/.test(request.headers.host)
      ? request.headers.host
      : "localhost";
  return `${request.protocol}://${host}`;
}

function caller(request: FastifyRequest): Identity {
  return request.identity!;
}

export function registerLicenseRoutes(
  app: FastifyInstance,
  node: ChainNode,
  now: () => number,
  keyNode: LicenseKeyNode | null,
): void {
  const reader = licenseReader(node.ledger.state);
  // A search page reads its licenses' records straight from the committed store, once: random
  // holders' records rarely repeat, and keeping them in the state cache cost more in garbage
  // collection than the cache saved (docs/benchmarks.md "Licenses").
  const store = node.ledger.store;
  const pageReader = licenseReader({ get: (key) => store.getState(key) }, readRecordOnce);
  const proofs = new ProofCache(node, proofCacheEntriesMax);
  const licenseProofs = new LicenseProofCache(node, reader, licenseProofCacheEntriesMax);
  // What a department and role set may search depends only on the catalogue and the policies, so it
  // is worked out once per height rather than on every search.
  const queryableCache = new Map<string, string[] | undefined>();
  let queryableHeight = -1;
  const queryable = (who: Identity): string[] | undefined => {
    if (node.ledger.height() !== queryableHeight) {
      queryableCache.clear();
      queryableHeight = node.ledger.height();
    }
    const key = `${who.dept}/${[...who.roles].sort().join(",")}`;
    if (!queryableCache.has(key)) {
      if (queryableCache.size >= queryableCacheEntriesMax) queryableCache.clear();
      queryableCache.set(key, queryableTypes(node, reader, who));
    }
    return queryableCache.get(key);
  };

  app.get("/v1/license-types", { schema: s.listTypes }, async () => {
    const rows = store.stateRange("lic/type/", "lic/type0", typesMax);
    const types = rows.map(({ key }) => typeToJson(reader.type(key.slice("lic/type/".length))));
    return { types };
  });

  app.get("/v1/license-types/:code", { schema: s.getType }, async (request) => {
    const { code } = request.params as { code: string };
    const type = reader.type(code);
    return { ...typeToJson(type), policy: reader.policy(code) };
  });

  app.get("/v1/licenses", { schema: s.searchLicenses }, async (request) => {
    const q = request.query as {
      holder?: string;
      type?: string;
      issuer?: string;
      status?: "valid" | "suspended" | "revoked" | "expired";
      from?: string;
      to?: string;
      cursor?: string;
      limit?: number;
    };
    const who = caller(request);
    const typeCodes = queryable(who);
    const nowMs = now();
    const page = store.licenseIndex.search({
      ...(q.holder === undefined ? {} : { holder: q.holder }),
      ...(q.type === undefined ? {} : { typeCode: q.type }),
      ...(q.issuer === undefined ? {} : { issuerDept: q.issuer }),
      ...(q.status === undefined ? {} : { status: q.status }),
      ...(q.from === undefined ? {} : { fromMs: Date.parse(q.from) }),
      ...(q.to === undefined ? {} : { toMs: Date.parse(q.to) }),
      ...(q.cursor === undefined ? {} : { cursor: q.cursor }),
      ...(typeCodes === undefined ? {} : { typeCodes }),
      nowMs,
      limit: q.limit ?? 50,
    });
    const items = page.items.flatMap((row) => {
      const type = reader.type(row.typeCode);
      // A type allowed only for its issuer: skip other departments' licenses of it.
      if (
        !decide(reader.policy(type.code), who, { issuers: type.issuers, issuerDept: row.issuerDept }, "query")
          .allowed
      )
        return [];
      const head = pageReader.head(row.licenseKey);
      return [licenseToJson(type, head, pageReader.version(head.currentId), nowMs)];
    });
    return { items, nextCursor: page.nextCursor };
  });

  app.get("/v1/licenses/:id", { schema: s.getLicense }, async (request) => {
    const { id } = request.params as { id: string };
    const { head, version } = reader.resolve(id);
    const type = reader.type(head.typeCode);
    requireQuery(reader, caller(request), type, head.issuerDept);
    return licenseToJson(type, head, version, now());
  });

  app.get("/v1/licenses/:id/proof", { schema: s.getLicenseProof }, async (request) => {
    const { id } = request.params as { id: string };
    const { head, version } = reader.resolve(id);
    const type = reader.type(head.typeCode);
    requireQuery(reader, caller(request), type, head.issuerDept);
    // Entries and anchor are read in one synchronous step: they describe the same height.
    return {
      id: version.id,
      licenseKey: head.licenseKey,
      version: proofs.entry(licenseKeys.version(version.id)),
      head: proofs.entry(licenseKeys.head(head.licenseKey)),
      ...proofAnchor(node),
    };
  });

  app.post("/v1/licenses/proofs", { schema: s.licenseProofs }, async (request, reply) => {
    const { ids } = request.body as { ids: string[] };
    const who = caller(request);
    // The caller's right to query depends on the type and the issuing department only: judged once
    // per pair in a batch.
    const verdicts = new Map<string, CodedError | null>();
    const mayQuery = (proven: ProvenLicense): void => {
      const pair = `${proven.typeCode}/${proven.issuerDept}`;
      let denial = verdicts.get(pair);
      if (denial === undefined) {
        try {
          requireQuery(reader, who, reader.type(proven.typeCode), proven.issuerDept);
          denial = null;
        } catch (error) {
          if (!(error instanceof CodedError)) throw error;
          denial = error;
        }
        verdicts.set(pair, denial);
      }
      if (denial !== null) throw denial;
    };
    // Synchronous from here to the answer: every item and the anchor describe one height.
    if (wantsCbor(request.headers.accept)) {
      const items = ids.map((ref) => {
        try {
          const proven = licenseProofs.license(ref);
          mayQuery(proven);
          return licenseProofs.item(proven);
        } catch (error) {
          if (error instanceof CodedError) return errorItem(ref, error);
          throw error;
        }
      });
      return reply.type(cborMediaType).send(proofsAnswer(items, licenseProofs.anchorRest()));
    }
    // The JSON answer is assembled from cached, already serialised entries (its shape is the schema's).
    const items = ids.map((ref) => {
      try {
        const proven = licenseProofs.license(ref);
        mayQuery(proven);
        return `{"id":${JSON.stringify(proven.id)},"licenseKey":${JSON.stringify(proven.licenseKey)},"version":${proofs.json(licenseKeys.version(proven.id))},"head":${proofs.json(licenseKeys.head(proven.licenseKey))}}`;
      } catch (error) {
        if (error instanceof CodedError) return JSON.stringify({ id: ref, error: error.toJSON() });
        throw error;
      }
    });
    const anchor = JSON.stringify(proofAnchor(node));
    return reply
      .type("application/json; charset=utf-8")
      .send(`{"items":[${items.join(",")}],${anchor.slice(1)}`);
  });

  app.get("/v1/licenses/:id/history", { schema: s.getHistory }, async (request) => {
    const { id } = request.params as { id: string };
    const q = request.query as { after?: number; limit?: number };
    const { head } = reader.resolve(id);
    requireQuery(reader, caller(request), reader.type(head.typeCode), head.issuerDept);
    const events = store.licenseIndex.events(head.licenseKey, q.after ?? 0, q.limit ?? 100);
    return {
      licenseKey: head.licenseKey,
      events: events.map((e) => ({ ...e, at: iso(e.atMs) })),
      next: events.length === (q.limit ?? 100) ? events[events.length - 1]!.seq : null,
    };
  });

  app.get("/v1/subjects/:pseudonym", { schema: s.getSubject }, async (request) => {
    const { pseudonym } = request.params as { pseudonym: string };
    const subject = reader.subject(pseudonym);
    return {
      pseudonym,
      status: subject.status,
      custody: subject.custody,
      nextSeq: subject.nextSeq,
      encryptionKey: Buffer.from(subject.encryptionKey).toString("base64"),
      signingKey: Buffer.from(subject.signingKey).toString("base64"),
      sinceHeight: subject.sinceHeight,
    };
  });

  const requireKeyNode = (): LicenseKeyNode => {
    if (keyNode === null) throw new CodedError("DECRYPT_UNAVAILABLE", "this node holds no license keys");
    return keyNode;
  };

  app.post("/v1/licenses/:id/open", { schema: s.openLicense }, async (request) => {
    const { id } = request.params as { id: string };
    const body = (request.body ?? {}) as { fields?: string[] };
    return requireKeyNode().open(caller(request), id, body.fields ?? null);
  });

  app.post("/v1/subjects/pseudonym", { schema: s.pseudonymOf }, async (request) => {
    const who = caller(request);
    if (!who.roles.some((r) => r === "officer" || r === "admin" || r === "auditor"))
      throw new CodedError("FORBIDDEN", "computing pseudonyms needs the officer, admin or auditor role");
    const body = request.body as { codeType: string; code: string };
    validateHolderCode(body.codeType, body.code);
    return { pseudonym: await requireKeyNode().pseudonym(body.codeType, body.code) };
  });

  app.post("/v1/subjects/:pseudonym/department-key", { schema: s.departmentKey }, async (request) => {
    const { pseudonym } = request.params as { pseudonym: string };
    const who = caller(request);
    if (!who.roles.some((r) => r === "officer" || r === "admin"))
      throw new CodedError("FORBIDDEN", "department keys are made for officers and admins");
    const key = await requireKeyNode().departmentKey(who.dept, pseudonym);
    return {
      pseudonym,
      dept: who.dept,
      publicKey: Buffer.from(key.publicKey).toString("base64"),
      published: key.published,
    };
  });

  app.get("/v1/licenses/:id/vc", { schema: s.getCredential }, async (request) => {
    const { id } = request.params as { id: string };
    const { head, version } = reader.resolve(id);
    const type = reader.type(head.typeCode);
    requireQuery(reader, caller(request), type, head.issuerDept);
    return buildLicenseCredential({
      version,
      head,
      type,
      issuerName: readDepartment(node.ledger.state, version.issuerDept)?.name ?? version.issuerDept,
      chainId: node.ledger.params().chainId,
      baseUrl: baseUrlOf(request),
    });
  });

  // Status lists are cached per type, purpose and height: a list is rebuilt at most once a block.
  const statusLists = new Map<string, { height: number; credential: unknown }>();
  app.get("/v1/status-lists/:type/:purpose", { schema: s.getStatusList }, async (request) => {
    const { type: code, purpose } = request.params as { type: string; purpose: StatusPurpose };
    const type = reader.type(code);
    const height = node.ledger.height();
    const cacheKey = `${code}/${purpose}/${baseUrlOf(request)}`;
    const cached = statusLists.get(cacheKey);
    if (cached !== undefined && cached.height === height) return cached.credential;
    const setWhen = purpose === "revocation" ? "revoked" : "suspended";
    const credential = buildStatusListCredential({
      typeCode: code,
      purpose,
      baseUrl: baseUrlOf(request),
      entries: store.licenseIndex
        .statusEntries(code)
        .map((e) => ({ index: e.index, set: e.status === setWhen })),
      validFromMs: node.ledger.latest().header.timeMs,
      issuer: {
        id: departmentIssuerId(type.definedBy),
        name: readDepartment(node.ledger.state, type.definedBy)?.name ?? type.definedBy,
      },
    });
    if (statusLists.size >= statusListsCachedMax)
      statusLists.delete(statusLists.keys().next().value as string);
    statusLists.set(cacheKey, { height, credential });
    return credential;
  });

  // ---- the holder's own view, authorised by the holder's signing key (X-Citychain-Subject) ----

  app.get("/v1/subjects/:pseudonym/licenses", { schema: s.subjectLicenses }, async (request) => {
    const { pseudonym } = request.params as { pseudonym: string };
    await requireSubject(request, pseudonym);
    const q = request.query as { cursor?: string; limit?: number };
    const nowMs = now();
    const page = store.licenseIndex.search({
      holder: pseudonym,
      nowMs,
      limit: q.limit ?? 50,
      ...(q.cursor === undefined ? {} : { cursor: q.cursor }),
    });
    const items = page.items.map((row) => {
      const head = pageReader.head(row.licenseKey);
      return licenseToJson(reader.type(row.typeCode), head, pageReader.version(head.currentId), nowMs);
    });
    return { items, nextCursor: page.nextCursor };
  });

  app.get("/v1/subjects/:pseudonym/access-trail", { schema: s.subjectTrail }, async (request) => {
    const { pseudonym } = request.params as { pseudonym: string };
    await requireSubject(request, pseudonym);
    const q = request.query as { cursor?: string; limit?: number };
    const page = store.licenseIndex.trail({
      holder: pseudonym,
      limit: q.limit ?? 100,
      ...(q.cursor === undefined ? {} : { cursor: q.cursor }),
    });
    return { items: page.items.map(trailToJson), nextCursor: page.nextCursor };
  });

  async function requireSubject(request: FastifyRequest, pseudonym: string): Promise<void> {
    const header = request.headers[subjectReadHeader];
    const match = typeof header === "string" ? /^([0-9]{1,15}):([A-Za-z0-9+/]{86}==)$/.exec(header) : null;
    if (match === null)
      throw new CodedError(
        "AUTH_MISSING",
        `the holder's own records need an ${subjectReadHeader} header`,
        subjectReadHeader,
      );
    const createdMs = Number(match[1]);
    if (Math.abs(now() - createdMs) > subjectReadSkewMs)
      throw new CodedError(
        "AUTH_CLOCK_SKEW",
        "the holder's proof is too old or from the future",
        subjectReadHeader,
      );
    const subject = reader.subject(pseudonym);
    const message = subjectReadSigningBytes(
      node.ledger.params().chainId,
      pseudonym,
      request.method,
      request.url,
      createdMs,
    );
    const signature = Buffer.from(match[2]!, "base64");
    if (!(await node.ledger.verifier.verifyAsync(subject.signingKey, message, signature)))
      throw new CodedError("AUTH_BAD_SIGNATURE", "the holder's proof does not verify", subjectReadHeader);
  }

  app.get("/v1/access-trail", { schema: s.getTrail }, async (request) => {
    const q = request.query as { dept?: string; from?: string; to?: string; cursor?: string; limit?: number };
    const who = caller(request);
    const operator = node.ledger.params().operatorDept;
    if (!who.roles.includes("auditor") && !(who.dept === operator && who.roles.includes("admin")))
      throw new CodedError("FORBIDDEN", "the access trail is for auditors");
    // A department's auditor sees its own department's reads; the information center's sees all.
    const dept = who.dept === operator ? q.dept : who.dept;
    if (q.dept !== undefined && dept !== q.dept)
      throw new CodedError("FORBIDDEN", `an auditor of ${who.dept} sees only ${who.dept}'s reads`, "dept");
    const page = store.licenseIndex.trail({
      ...(dept === undefined ? {} : { readerDept: dept }),
      ...(q.from === undefined ? {} : { fromMs: Date.parse(q.from) }),
      ...(q.to === undefined ? {} : { toMs: Date.parse(q.to) }),
      ...(q.cursor === undefined ? {} : { cursor: q.cursor }),
      limit: q.limit ?? 100,
    });
    return { items: page.items.map(trailToJson), nextCursor: page.nextCursor };
  });
}

export function trailToJson(row: {
  licenseId: string;
  holder: string;
  readerDept: string;
  readerId: string;
  readAtMs: number;
  policyRule: string;
  fields: readonly string[];
  basis: string;
  txId: string;
  height: number;
}) {
  return {
    licenseId: row.licenseId,
    holder: row.holder,
    readerDept: row.readerDept,
    readerId: row.readerId,
    readAt: iso(row.readAtMs),
    policyRule: row.policyRule,
    fields: row.fields,
    basis: row.basis,
    txId: row.txId,
    height: row.height,
  };
}

function typeToJson(type: LicenseType) {
  return {
    code: type.code,
    name: type.name,
    definedBy: type.definedBy,
    schema: JSON.parse(type.schema) as unknown,
    issuers: type.issuers,
    personalFields: type.personalFields,
    validityDays: type.validityDays,
    sinceHeight: type.sinceHeight,
  };
}
