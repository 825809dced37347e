/**
 * Signed API requests: the citychain profile of RFC 9421 (HTTP Message Signatures) with RFC 9530
 * Content-Digest. docs/api-auth.md is the normative description; this file is the one place that
 * defines the bytes a client signs and a node verifies.
 *
 * Portable on purpose (no node:* imports): the browser SDK, Node clients and the node itself share it,
 * so all of them build the signature base from the same code. Structured fields (RFC 8941/9651) are
 * parsed and serialised by `structured-headers`, never by hand.
 *
 * Syntax only: this file says whether a request is well formed and what was signed. The time window,
 * the signature and replays are checked by the node (src/api/request-auth.ts) once the API layer has
 * resolved `keyId` to a public key on the ledger.
 */
import type { InnerList, Item, Parameters } from "structured-headers";
import { isInnerList, parseDictionary, serializeDictionary, serializeInnerList } from "structured-headers";
import { bytesEqual, toBase64, utf8 } from "./encoding.ts";
import { assert, CodedError } from "./errors.ts";
import { sha256, sha256Hex } from "./hash.ts";
import {
  isCanonicalP256Signature,
  p256SignatureBytes,
  type Signer,
  signatureSchemeP256,
} from "./signature.ts";

/** The one signature label this profile uses (RFC 9421 §4.1). */
export const signatureLabel = "sig1";
/** RFC 9421 `tag` parameter: names this profile and its version, so no other RFC 9421 use can be replayed as ours. */
export const signatureTag = "citychain-api-v1";
/** RFC 9421 `alg` parameter, from the HTTP Signature Algorithms registry; the same scheme as src/core/signature.ts. */
export const signatureAlg = signatureSchemeP256;

/**
 * The refusal of a request whose signer `holder` (the ledger, the vault, this CA) does not know and
 * whose certificate it did not carry: 401 CERT_UNKNOWN naming the header, which is what tells a
 * client (the SDK) that sending the same request again with the certificate can succeed.
 */
export function certificateUnknownError(holder: string): CodedError {
  return new CodedError(
    "CERT_UNKNOWN",
    `certificate not known to ${holder}: send it in X-Citychain-Cert`,
    authHeaders.cert,
  );
}

/** True for `certificateUnknownError`'s answer ({"error": {code, field}}), not for other CERT_UNKNOWNs. */
export function isCertificateUnknownError(error: { code?: unknown; field?: unknown } | undefined): boolean {
  return error?.code === "CERT_UNKNOWN" && error.field === authHeaders.cert;
}

/** Header names as they appear in component identifiers (lower case) and in `CodedError.field`. */
export const authHeaders = {
  signatureInput: "signature-input",
  signature: "signature",
  contentDigest: "content-digest",
  cert: "x-citychain-cert",
} as const;

export const httpsigLimits = {
  /** Each auth header, after duplicate lines are combined; real ones are a few hundred bytes. */
  authHeaderBytesMax: 8 * 1024,
  nonceBytesMin: 16,
  /** 48 bytes are 64 base64url characters, the most a nonce may have on the wire. */
  nonceBytesMax: 48,
  nonceCharsMin: 22,
  nonceCharsMax: 64,
} as const;

const componentMethod = "@method";
const componentPath = "@path";
const componentQuery = "@query";

/** An RFC 9110 token without lower-case letters: fetch() upper-cases only some methods, so we refuse to guess. */
const signingMethodPattern = /^[!#$%&'*+.^_`|~0-9A-Z-]+$/;
/** Any RFC 9110 token: the method as the server received it. */
const methodPattern = /^[!#$%&'*+.^_`|~0-9A-Za-z-]+$/;
/** Origin-form request target (RFC 9112 §3.2.1): visible ASCII only, so it is already percent-encoded. */
const originFormPattern = /^\/[\x21-\x22\x24-\x7e]*$/;
const certIdPattern = /^[0-9a-f]{64}$/;
const noncePattern = /^[A-Za-z0-9_-]+$/;
const base64Pattern = /^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$/;
/** A component value may hold visible ASCII, spaces and tabs: nothing that could forge a line of the base. */
const componentValuePattern = /^[\t\x20-\x7e]*$/;
const componentNamePattern = /^@?[a-z0-9!#$%&'*+.^_`|~-]+$/;

/** One covered component: its identifier (no parameters in this profile) and its canonical value. */
export interface SignatureComponent {
  readonly name: string;
  readonly value: string;
}

/** A signature parameter (RFC 9421 §2.3) in the order it is serialised. */
export type SignatureParameter = readonly [name: string, value: string | number];

export type RequestHeaders = Readonly<Record<string, string | readonly string[] | undefined>>;

export interface SignRequestInput {
  readonly method: string;
  /** Path and query as sent on the wire (origin-form, already percent-encoded), e.g. `url.pathname + url.search`. */
  readonly url: string;
  readonly body?: Uint8Array;
  readonly signer: Signer;
  /** Lower-case hex SHA-256 of the signer's certificate DER. */
  readonly certId: string;
  /** Sent as X-Citychain-Cert when the ledger may not know the certificate yet. */
  readonly certDer?: Uint8Array;
  readonly nowMs: number;
  /** 16 to 48 random bytes; drawn from globalThis.crypto.getRandomValues when absent. */
  readonly nonce?: Uint8Array;
}

export interface SignedRequestInput {
  readonly method: string;
  /** The request target as received (origin-form), e.g. Node's `req.url`. */
  readonly url: string;
  readonly headers: RequestHeaders;
  /** The body bytes exactly as received (after any Content-Encoding, before parsing). */
  readonly body?: Uint8Array;
}

export interface ParsedSignedRequest {
  /** Certificate id: lower-case hex SHA-256 of the signer's certificate DER. */
  readonly keyId: string;
  /** RFC 9421 `created`, integer seconds since the Unix epoch, as the client claimed it. */
  readonly createdS: number;
  /** The nonce exactly as sent (base64url); replays are detected on this string. */
  readonly nonce: string;
  /** The certificate presented in X-Citychain-Cert, if any; its SHA-256 equals keyId. */
  readonly certDer?: Uint8Array;
  /** The exact bytes that were signed (RFC 9421 §2.5). */
  readonly signatureBase: Uint8Array;
  /** 64-byte P1363 r || s, not yet checked for low S. */
  readonly signature: Uint8Array;
}

/** RFC 9530 Content-Digest field value for a body: `sha-256=:<base64>:`. */
export function contentDigest(body: Uint8Array): string {
  return serializeDictionary(new Map([["sha-256", byteSequence(sha256(body))]]));
}

/** The serialised `@signature-params` value: an inner list of component identifiers with parameters. */
export function serializeSignatureParams(
  componentNames: readonly string[],
  parameters: readonly SignatureParameter[],
): string {
  return serializeInnerList(signatureParamsList(componentNames, parameters));
}

/**
 * The signature base of RFC 9421 §2.5: one line `"<name>": <value>` per covered component, in order,
 * then `"@signature-params": <inner list>`, lines joined by LF with no trailing LF. The bytes signed are
 * its ASCII (= UTF-8) encoding. Generic over components so the RFC's own examples can be reproduced.
 */
export function buildSignatureBase(
  components: readonly SignatureComponent[],
  parameters: readonly SignatureParameter[],
): string {
  const names = new Set<string>();
  const lines: string[] = [];
  for (const { name, value } of components) {
    if (!componentNamePattern.test(name) || name === "@signature-params") {
      throw new CodedError(
        "BAD_REQUEST",
        `"${name}" is not a component identifier this profile allows`,
        name,
      );
    }
    if (names.has(name)) throw new CodedError("BAD_REQUEST", `component "${name}" is covered twice`, name);
    if (!componentValuePattern.test(value)) {
      throw new CodedError(
        "BAD_REQUEST",
        `component "${name}" has a value with characters outside ASCII`,
        name,
      );
    }
    names.add(name);
    lines.push(`"${name}": ${value}`);
  }
  lines.push(`"@signature-params": ${serializeSignatureParams([...names], parameters)}`);
  return lines.join("\n");
}

/** Signs a request; returns the headers to add to it (lower-case names). */
export async function signRequest(input: SignRequestInput): Promise<Record<string, string>> {
  if (!signingMethodPattern.test(input.method)) {
    throw new CodedError("BAD_REQUEST", `method "${input.method}" must be an upper-case token`, "method");
  }
  const target = splitTarget(input.url);
  if (!certIdPattern.test(input.certId)) {
    throw new CodedError("BAD_REQUEST", "certId must be 64 lower-case hex characters", "certId");
  }
  if (!Number.isSafeInteger(input.nowMs) || input.nowMs < 0) {
    throw new CodedError("BAD_REQUEST", "nowMs must be a non-negative integer", "nowMs");
  }
  const nonceBytes = input.nonce ?? randomBytes(httpsigLimits.nonceBytesMin);
  if (nonceBytes.length < httpsigLimits.nonceBytesMin || nonceBytes.length > httpsigLimits.nonceBytesMax) {
    throw new CodedError(
      "BAD_REQUEST",
      `nonce must have ${httpsigLimits.nonceBytesMin} to ${httpsigLimits.nonceBytesMax} bytes`,
      "nonce",
    );
  }

  const headers: Record<string, string> = {};
  const components: SignatureComponent[] = [
    { name: componentMethod, value: input.method },
    { name: componentPath, value: target.path },
  ];
  if (target.query !== undefined) components.push({ name: componentQuery, value: target.query });
  if (input.body !== undefined && input.body.length > 0) {
    const digest = contentDigest(input.body);
    headers[authHeaders.contentDigest] = digest;
    components.push({ name: authHeaders.contentDigest, value: digest });
  }
  if (input.certDer !== undefined) {
    if (input.certDer.length === 0 || sha256Hex(input.certDer) !== input.certId) {
      throw new CodedError("BAD_REQUEST", "certDer does not hash to certId", "certDer");
    }
    const cert = toBase64(input.certDer);
    headers[authHeaders.cert] = cert;
    components.push({ name: authHeaders.cert, value: cert });
  }

  const parameters = profileParameters(Math.floor(input.nowMs / 1000), toBase64Url(nonceBytes), input.certId);
  const base = buildSignatureBase(components, parameters);
  const signature = await input.signer.sign(utf8(base));
  // The sender asserts what it sends: a high-S signature would be refused by every node anyway.
  assert(
    isCanonicalP256Signature(signature),
    "Signer returned a signature that is not canonical low-S P1363",
  );

  const innerList = signatureParamsList(
    components.map((component) => component.name),
    parameters,
  );
  headers[authHeaders.signatureInput] = serializeDictionary(new Map([[signatureLabel, innerList]]));
  headers[authHeaders.signature] = serializeDictionary(new Map([[signatureLabel, byteSequence(signature)]]));
  for (const [name, value] of Object.entries(headers)) {
    if (value.length > httpsigLimits.authHeaderBytesMax) {
      throw new CodedError(
        "BAD_REQUEST",
        `${name} would be ${value.length} bytes, limit ${httpsigLimits.authHeaderBytesMax}`,
        name === authHeaders.cert ? "certDer" : name,
      );
    }
  }
  return headers;
}

/**
 * Validates the syntax of a signed request and returns what was signed. Throws CodedError:
 * AUTH_MISSING (no signature at all), AUTH_MALFORMED (signed, but not as this profile requires),
 * AUTH_BAD_SIGNATURE (the body does not match its digest), BAD_REQUEST (method or target unusable);
 * `field` names the header at fault.
 */
export function parseSignedRequest(request: SignedRequestInput): ParsedSignedRequest {
  const signatureInputRaw = readHeader(request.headers, authHeaders.signatureInput);
  const signatureRaw = readHeader(request.headers, authHeaders.signature);
  if (signatureInputRaw === undefined && signatureRaw === undefined) {
    throw new CodedError(
      "AUTH_MISSING",
      "request is not signed: Signature-Input and Signature headers are required",
      authHeaders.signatureInput,
    );
  }
  if (signatureInputRaw === undefined) {
    throw new CodedError("AUTH_MISSING", "Signature-Input header is missing", authHeaders.signatureInput);
  }
  if (signatureRaw === undefined) {
    throw new CodedError("AUTH_MISSING", "Signature header is missing", authHeaders.signature);
  }
  if (!methodPattern.test(request.method)) {
    throw new CodedError("BAD_REQUEST", "request method is not a token", "method");
  }
  const target = splitTarget(request.url);
  const digestRaw = readHeader(request.headers, authHeaders.contentDigest);
  const certRaw = readHeader(request.headers, authHeaders.cert);
  const body = request.body !== undefined && request.body.length > 0 ? request.body : undefined;
  if (body !== undefined && digestRaw === undefined) {
    throw new CodedError(
      "AUTH_MALFORMED",
      "a request with a body must carry Content-Digest",
      authHeaders.contentDigest,
    );
  }
  if (body === undefined && digestRaw !== undefined) {
    throw new CodedError("AUTH_MALFORMED", "Content-Digest sent without a body", authHeaders.contentDigest);
  }

  const components: SignatureComponent[] = [
    { name: componentMethod, value: request.method },
    { name: componentPath, value: target.path },
  ];
  if (target.query !== undefined) components.push({ name: componentQuery, value: target.query });
  if (digestRaw !== undefined) components.push({ name: authHeaders.contentDigest, value: digestRaw });
  if (certRaw !== undefined) components.push({ name: authHeaders.cert, value: certRaw });

  const member = parseSignatureInput(signatureInputRaw);
  checkCoveredComponents(
    member,
    components.map((component) => component.name),
  );
  const params = checkSignatureParams(member[1]);
  const signature = parseSignature(signatureRaw);
  const certDer = certRaw === undefined ? undefined : parseCert(certRaw, params.keyId);
  // Hashing the body is the costliest check, so it comes after every cheap one.
  if (body !== undefined && digestRaw !== undefined) checkContentDigest(digestRaw, body);

  // The base is built from the parameters as received (RFC 9421 §3.2); the canonical-form check in
  // parseSignatureInput makes that the same text the client serialised.
  const base = buildSignatureBase(components, params.received);
  return {
    keyId: params.keyId,
    createdS: params.createdS,
    nonce: params.nonce,
    ...(certDer === undefined ? {} : { certDer }),
    signatureBase: utf8(base),
    signature,
  };
}

/** A structured-field byte sequence item; the copy gives it the plain ArrayBuffer the library's types ask for. */
function byteSequence(bytes: Uint8Array): Item {
  return [new Uint8Array(bytes), new Map()];
}

function signatureParamsList(
  componentNames: readonly string[],
  parameters: readonly SignatureParameter[],
): InnerList {
  const items: Item[] = componentNames.map((name) => [name, new Map()]);
  return [items, new Map(parameters)];
}

/** The parameters in the order clients send them. */
function profileParameters(createdS: number, nonce: string, keyId: string): SignatureParameter[] {
  return [
    ["created", createdS],
    ["nonce", nonce],
    ["keyid", keyId],
    ["alg", signatureAlg],
    ["tag", signatureTag],
  ];
}

interface RequestTarget {
  readonly path: string;
  /** RFC 9421 §2.2.7: the query with its leading "?"; absent when the target has no "?". */
  readonly query: string | undefined;
}

function splitTarget(url: string): RequestTarget {
  if (!originFormPattern.test(url)) {
    throw new CodedError(
      "BAD_REQUEST",
      "request target must be a percent-encoded path and query starting with '/', without a fragment",
      "url",
    );
  }
  const queryStart = url.indexOf("?");
  if (queryStart === -1) return { path: url, query: undefined };
  return { path: url.slice(0, queryStart), query: url.slice(queryStart) };
}

/**
 * One header's value, as RFC 9421 §2.1 combines it: every line trimmed, lines joined by ", ", header
 * names matched without regard to case. An empty value counts as absent (RFC 8941 §4.2).
 */
function readHeader(headers: RequestHeaders, name: string): string | undefined {
  const lines: string[] = [];
  let chars = 0;
  for (const [key, value] of Object.entries(headers)) {
    if (value === undefined || key.toLowerCase() !== name) continue;
    for (const line of typeof value === "string" ? [value] : value) {
      chars += line.length + 2;
      // Checked while collecting, so a huge array of lines is refused before it is joined.
      if (chars > httpsigLimits.authHeaderBytesMax + 2) throw oversized(name);
      lines.push(line.trim());
    }
  }
  const combined = lines.join(", ");
  if (combined.length > httpsigLimits.authHeaderBytesMax) throw oversized(name);
  return combined === "" ? undefined : combined;
}

function oversized(name: string): CodedError {
  return new CodedError(
    "AUTH_MALFORMED",
    `${name} header exceeds ${httpsigLimits.authHeaderBytesMax} bytes`,
    name,
  );
}

/**
 * Parses a dictionary field and requires its canonical serialisation. A client whose serialiser
 * differs from ours would otherwise fail later with a baffling "bad signature"; this way it gets a
 * clear AUTH_MALFORMED, and duplicate keys (which a parser silently merges) are refused too.
 */
function parseCanonicalDictionary(raw: string, field: string): Map<string, Item | InnerList> {
  let dictionary: Map<string, Item | InnerList>;
  try {
    dictionary = parseDictionary(raw);
  } catch (error) {
    throw new CodedError(
      "AUTH_MALFORMED",
      `${field} is not a structured-field dictionary: ${(error as Error).message}`,
      field,
    );
  }
  let canonical: string;
  try {
    canonical = serializeDictionary(dictionary);
  } catch (error) {
    throw new CodedError(
      "AUTH_MALFORMED",
      `${field} cannot be serialised: ${(error as Error).message}`,
      field,
    );
  }
  if (canonical !== raw) {
    throw new CodedError(
      "AUTH_MALFORMED",
      `${field} is not in canonical structured-field form (expected ${truncate(canonical)})`,
      field,
    );
  }
  return dictionary;
}

function onlyMember(dictionary: Map<string, Item | InnerList>, key: string, field: string): Item | InnerList {
  const member = dictionary.get(key);
  if (dictionary.size !== 1 || member === undefined) {
    const keys = [...dictionary.keys()].join(", ");
    throw new CodedError(
      "AUTH_MALFORMED",
      `${field} must have exactly one member "${key}", found: ${keys}`,
      field,
    );
  }
  return member;
}

function parseSignatureInput(raw: string): InnerList {
  const field = authHeaders.signatureInput;
  const member = onlyMember(parseCanonicalDictionary(raw, field), signatureLabel, field);
  if (!isInnerList(member)) {
    throw new CodedError("AUTH_MALFORMED", `${field} ${signatureLabel} must be an inner list`, field);
  }
  return member;
}

function checkCoveredComponents(member: InnerList, expected: readonly string[]): void {
  const field = authHeaders.signatureInput;
  const names: string[] = [];
  for (const [value, parameters] of member[0]) {
    if (typeof value !== "string" || parameters.size > 0) {
      throw new CodedError(
        "AUTH_MALFORMED",
        `${field} components must be plain strings without parameters`,
        field,
      );
    }
    names.push(value);
  }
  if (names.length !== expected.length || names.some((name, i) => name !== expected[i])) {
    throw new CodedError(
      "AUTH_MALFORMED",
      `${field} must cover exactly (${expected.map((name) => `"${name}"`).join(" ")}) in that order for this request, ` +
        `found (${names.map((name) => `"${truncate(name)}"`).join(" ")})`,
      field,
    );
  }
}

interface ProfileParams {
  readonly createdS: number;
  readonly nonce: string;
  readonly keyId: string;
  /** All parameters in the order received, for the `@signature-params` line. */
  readonly received: readonly SignatureParameter[];
}

/** Requires exactly the profile's five parameters, in any order (the order is signed as sent). */
function checkSignatureParams(parameters: Parameters): ProfileParams {
  const field = authHeaders.signatureInput;
  const refuse = (message: string): never => {
    throw new CodedError("AUTH_MALFORMED", `${field}: ${message}`, field);
  };
  const allowed = ["created", "nonce", "keyid", "alg", "tag"];
  for (const key of parameters.keys()) {
    if (!allowed.includes(key)) refuse(`parameter "${truncate(key)}" is not part of this profile`);
  }
  const created = parameters.get("created");
  const nonce = parameters.get("nonce");
  const keyId = parameters.get("keyid");
  const alg = parameters.get("alg");
  const tag = parameters.get("tag");
  if (typeof created !== "number" || !Number.isSafeInteger(created) || created < 0) {
    return refuse("created must be a non-negative integer (seconds)");
  }
  if (
    typeof nonce !== "string" ||
    nonce.length < httpsigLimits.nonceCharsMin ||
    nonce.length > httpsigLimits.nonceCharsMax ||
    nonce.length % 4 === 1 ||
    !noncePattern.test(nonce)
  ) {
    return refuse(
      `nonce must be a string of ${httpsigLimits.nonceCharsMin} to ${httpsigLimits.nonceCharsMax} base64url characters without padding`,
    );
  }
  if (typeof keyId !== "string" || !certIdPattern.test(keyId)) {
    return refuse("keyid must be a string of 64 lower-case hex characters (the certificate id)");
  }
  if (alg !== signatureAlg) return refuse(`alg must be the string "${signatureAlg}"`);
  if (tag !== signatureTag) return refuse(`tag must be the string "${signatureTag}"`);
  const received: SignatureParameter[] = [];
  for (const [key, value] of parameters) {
    assert(
      typeof value === "string" || typeof value === "number",
      "profile parameters are strings or integers",
    );
    received.push([key, value]);
  }
  return { createdS: created, nonce, keyId, received };
}

function parseSignature(raw: string): Uint8Array {
  const field = authHeaders.signature;
  const member = onlyMember(parseCanonicalDictionary(raw, field), signatureLabel, field);
  if (isInnerList(member) || !(member[0] instanceof ArrayBuffer) || member[1].size > 0) {
    throw new CodedError(
      "AUTH_MALFORMED",
      `${field} ${signatureLabel} must be a byte sequence without parameters`,
      field,
    );
  }
  const signature = new Uint8Array(member[0]);
  if (signature.length !== p256SignatureBytes) {
    throw new CodedError(
      "AUTH_MALFORMED",
      `${field} ${signatureLabel} must be ${p256SignatureBytes} bytes (P1363 r || s), got ${signature.length}`,
      field,
    );
  }
  return signature;
}

function checkContentDigest(raw: string, body: Uint8Array): void {
  const field = authHeaders.contentDigest;
  const member = onlyMember(parseCanonicalDictionary(raw, field), "sha-256", field);
  if (isInnerList(member) || !(member[0] instanceof ArrayBuffer) || member[1].size > 0) {
    throw new CodedError("AUTH_MALFORMED", `${field} sha-256 must be a byte sequence`, field);
  }
  if (!bytesEqual(new Uint8Array(member[0]), sha256(body))) {
    throw new CodedError("AUTH_BAD_SIGNATURE", "Content-Digest does not match the body", field);
  }
}

function parseCert(raw: string, keyId: string): Uint8Array {
  const field = authHeaders.cert;
  if (!base64Pattern.test(raw)) {
    throw new CodedError("AUTH_MALFORMED", `${field} must be padded base64 of the certificate DER`, field);
  }
  const certDer = decodeBase64(raw);
  // One spelling per certificate: refuse non-zero pad bits, which atob would quietly accept.
  if (toBase64(certDer) !== raw) {
    throw new CodedError("AUTH_MALFORMED", `${field} is not in canonical base64`, field);
  }
  if (sha256Hex(certDer) !== keyId) {
    throw new CodedError("AUTH_MALFORMED", `${field} does not hash to the keyid`, field);
  }
  return certDer;
}

function decodeBase64(text: string): Uint8Array {
  const binary = atob(text);
  const out = new Uint8Array(binary.length);
  for (let i = 0; i < binary.length; i++) out[i] = binary.charCodeAt(i);
  return out;
}

function toBase64Url(bytes: Uint8Array): string {
  return toBase64(bytes).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
}

function randomBytes(length: number): Uint8Array {
  const bytes = new Uint8Array(length);
  globalThis.crypto.getRandomValues(bytes);
  return bytes;
}

/** Keeps error messages bounded when they echo attacker-chosen text. */
function truncate(text: string): string {
  return text.length > 80 ? `${text.slice(0, 80)}…` : text;
}
