/**
 * A data subject's signed statement: how a holder (or the key vault on their behalf) authorises a
 * consent grant, a withdrawal or forgetting. The transaction that carries it may be submitted by any
 * registered identity (a citizen portal, the vault, a counter clerk): the statement, not the
 * submitter, is the holder's word. It names the chain and carries the subject's next sequence
 * number, so it counts once, on one chain, and an old grant cannot be replayed after a withdrawal.
 *
 * Bytes signed: "citychain/subject-statement/v1" ‖ 0x00 ‖ canonical CBOR of
 *   [1, chainId, pseudonym, seq, action, licenseKey, dept, wrappedKeyHash, untilMs]
 * with P-256 ECDSA (P1363, low S) under the subject's signing key (src/core/signature.ts).
 */
import { bytesEqual, type Canonical, decodeCanonical, encodeCanonical, fromUtf8, utf8 } from "../encoding.ts";
import { CodedError } from "../errors.ts";
import { chainIdPattern } from "../tx.ts";

export const subjectStatementTag = utf8("citychain/subject-statement/v1\u0000");
export const subjectStatementVersion = 1;
export const subjectStatementBytesMax = 1024;

export const subjectActions = ["consent.grant", "consent.withdraw", "forget"] as const;
export type SubjectAction = (typeof subjectActions)[number];

export interface SubjectStatement {
  readonly chainId: string;
  readonly pseudonym: string;
  readonly seq: number;
  readonly action: SubjectAction;
  /** The license concerned; "" for "forget". */
  readonly licenseKey: string;
  /** The department concerned; "" for "forget". */
  readonly dept: string;
  /** SHA-256 of the wrapped key a grant hands over; empty otherwise. */
  readonly wrappedKeyHash: Uint8Array;
  /** A grant's end (ms since epoch), or null for "until withdrawn". */
  readonly untilMs: number | null;
}

export function encodeSubjectStatement(s: SubjectStatement): Uint8Array {
  return encodeCanonical([
    subjectStatementVersion,
    s.chainId,
    s.pseudonym,
    s.seq,
    s.action,
    s.licenseKey,
    s.dept,
    s.wrappedKeyHash,
    s.untilMs,
  ]);
}

/** The exact bytes the subject signs. */
export function subjectStatementSigningBytes(encoded: Uint8Array): Uint8Array {
  const out = new Uint8Array(subjectStatementTag.length + encoded.length);
  out.set(subjectStatementTag, 0);
  out.set(encoded, subjectStatementTag.length);
  return out;
}

function malformed(message: string): never {
  throw new CodedError("PAYLOAD_INVALID", `statement: ${message}`, "statement");
}

export function decodeSubjectStatement(bytes: Uint8Array): SubjectStatement {
  if (bytes.length > subjectStatementBytesMax) malformed(`longer than ${subjectStatementBytesMax} bytes`);
  let value: Canonical;
  try {
    value = decodeCanonical(bytes, subjectStatementBytesMax);
  } catch {
    malformed("not canonical CBOR");
  }
  if (!Array.isArray(value) || value.length !== 9) malformed("must be a 9-element array");
  const [version, chainId, pseudonym, seq, action, licenseKey, dept, wrappedKeyHash, untilMs] = value;
  if (version !== subjectStatementVersion) malformed(`unknown version ${String(version)}`);
  if (typeof chainId !== "string" || typeof pseudonym !== "string") malformed("chain and pseudonym");
  if (typeof seq !== "number" || !Number.isSafeInteger(seq) || seq < 0) malformed("seq");
  if (typeof action !== "string" || !(subjectActions as readonly string[]).includes(action))
    malformed("action");
  if (typeof licenseKey !== "string" || typeof dept !== "string") malformed("licenseKey and dept");
  if (!(wrappedKeyHash instanceof Uint8Array)) malformed("wrappedKeyHash");
  if (untilMs !== null && (typeof untilMs !== "number" || !Number.isSafeInteger(untilMs) || untilMs < 0))
    malformed("untilMs");
  return {
    chainId,
    pseudonym,
    seq,
    action: action as SubjectAction,
    licenseKey,
    dept,
    wrappedKeyHash,
    untilMs: untilMs as number | null,
  };
}

/**
 * A holder's proof for reading their own records (their licenses, who read their data): a signature
 * by the subject's signing key over the chain, the pseudonym, the request line and a time, so it is
 * good for that one request for a few minutes and nowhere else. Reads change nothing, so a replay
 * inside the window only repeats the same answer to whoever already holds it.
 */
export const subjectReadTag = utf8("citychain/subject-read/v1\u0000");
export const subjectReadHeader = "x-citychain-subject";

export function subjectReadSigningBytes(
  chainId: string,
  pseudonym: string,
  method: string,
  pathWithQuery: string,
  createdMs: number,
): Uint8Array {
  const text = `${chainId}\u0000${pseudonym}\u0000${method.toUpperCase()} ${pathWithQuery}\u0000${createdMs}`;
  const body = utf8(text);
  const out = new Uint8Array(subjectReadTag.length + body.length);
  out.set(subjectReadTag, 0);
  out.set(body, subjectReadTag.length);
  return out;
}

/** A read proof is a few hundred bytes; anything longer is not one (and is never signed). */
export const subjectReadBytesMax = 1024;

export interface SubjectRead {
  readonly chainId: string;
  readonly pseudonym: string;
  /** "/v1/subjects/<pseudonym>/<record>[?query]", exactly as the node will see it. */
  readonly pathWithQuery: string;
  readonly createdMs: number;
}

// Only GET reads of the subject's own records: a record name and a plain query, nothing to escape.
const subjectReadPathPattern =
  /^\/v1\/subjects\/([0-9a-f]{64})\/[a-z][a-z-]{0,31}(\?[A-Za-z0-9._~%&=+-]{0,512})?$/;
const createdMsPattern = /^(0|[1-9][0-9]{0,14})$/;

function notReadProof(message: string): never {
  throw new CodedError("PAYLOAD_INVALID", `read proof: ${message}`, "message");
}

/**
 * Parses bytes that claim to be a subject read proof, strictly: the tag, then exactly chain id,
 * pseudonym, "GET <path of that subject's records>" and a decimal time, NUL-separated, in the one
 * byte form subjectReadSigningBytes makes. A custodian checks this before it signs, so its key
 * signs read proofs for the holder and nothing else.
 */
export function parseSubjectReadBytes(bytes: Uint8Array): SubjectRead {
  if (bytes.length > subjectReadBytesMax) notReadProof(`longer than ${subjectReadBytesMax} bytes`);
  if (!bytesEqual(bytes.subarray(0, subjectReadTag.length), subjectReadTag)) notReadProof("wrong tag");
  let text: string;
  try {
    text = fromUtf8(bytes.subarray(subjectReadTag.length));
  } catch {
    notReadProof("not UTF-8");
  }
  const parts = text.split("\u0000");
  if (parts.length !== 4) notReadProof("must be chain, pseudonym, request and time");
  const [chainId, pseudonym, request, created] = parts as [string, string, string, string];
  if (!chainIdPattern.test(chainId)) notReadProof("chain id");
  if (!/^[0-9a-f]{64}$/.test(pseudonym)) notReadProof("pseudonym");
  if (!request.startsWith("GET ")) notReadProof("only GET requests");
  const pathWithQuery = request.slice("GET ".length);
  const path = subjectReadPathPattern.exec(pathWithQuery);
  if (path === null) notReadProof("not a path of a subject's own records");
  if (path[1] !== pseudonym) notReadProof("the path names another subject");
  if (!createdMsPattern.test(created) || !Number.isSafeInteger(Number(created))) notReadProof("time");
  const proof = { chainId, pseudonym, pathWithQuery, createdMs: Number(created) };
  // One byte form: what we parsed must be exactly what the SDK would have made.
  const again = subjectReadSigningBytes(chainId, pseudonym, "GET", pathWithQuery, proof.createdMs);
  if (!bytesEqual(again, bytes)) notReadProof("not in canonical form");
  return proof;
}
