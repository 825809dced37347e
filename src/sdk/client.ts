/**
 * The citychain client: signs every request (RFC 9421) with a CA-issued identity, submits signed
 * transactions, reads blocks and state, and verifies proofs itself. Runs in Node and the browser;
 * in Node, pass a `fetch` that trusts the consortium root (see `nodeFetch` in ./node.ts).
 */

import type { Validator } from "../core/block.ts";
import type { Canonical } from "../core/encoding.ts";
import { toBase64 } from "../core/encoding.ts";
import { isCertificateUnknownError, signRequest } from "../core/httpsig.ts";
import type { CommitJson, HeaderJson } from "../core/views.ts";
import { CitychainError } from "./errors.ts";
import { type BuiltTx, buildTx, type TxIdentity } from "./tx-builder.ts";
import {
  followValidatorChanges,
  headerValidatorsHash,
  type StateResponse,
  sameValidators,
  type TrustedValidatorSet,
  type ValidatorsJson,
  validatorsFromJson,
  verifyStateResponse,
} from "./verify.ts";

export type FetchLike = (
  input: string,
  init: { method: string; headers: Record<string, string>; body?: Uint8Array },
) => Promise<{
  status: number;
  text(): Promise<string>;
  /** Binary answers (application/cbor); every fetch of Node and the browsers has it. */
  arrayBuffer?(): Promise<ArrayBuffer>;
}>;

export interface ClientOptions {
  /** Base URL of a node's API, e.g. https://127.0.0.1:7001 */
  readonly url: string;
  readonly identity: TxIdentity;
  readonly fetch?: FetchLike;
  /** Clock in ms; default Date.now. */
  readonly now?: () => number;
  /**
   * Validator set trusted for proofs: the genesis set. Later sets are reached by following the
   * chain's validator changes, each checked against the set before it (validatorsFor). When absent,
   * proofs are checked against the set the node reports.
   */
  readonly trustedValidators?: readonly Validator[];
  /**
   * Whether requests carry the certificate (X-Citychain-Cert, ~1 KB). Default: only while the
   * node's ledger does not know it. Requests go without it; a 401 CERT_UNKNOWN naming the header
   * (refused before anything is done, so nothing happens twice) is answered by sending the same
   * request again, newly signed, with the certificate, which then goes with every request for a
   * while (`certificateResendMs`, doubling each time the node still does not know it) before the
   * client tries without it again. true: always; false: never.
   */
  readonly sendCertificate?: boolean;
}

/**
 * After a node answered CERT_UNKNOWN, requests carry the certificate for `initialMs` before one goes
 * without it again, twice as long after each further CERT_UNKNOWN, up to `maxMs`. A certificate
 * reaches the ledger with its holder's first committed transaction, seconds after its first
 * request; one that never does (an identity that only reads) costs a handful of extra round trips
 * in its first minutes and then one every five minutes.
 */
export const certificateResendMs = { initialMs: 5_000, maxMs: 300_000 } as const;

export interface TxStatusJson {
  txId: string;
  status: "pending" | "committed" | "rejected";
  height?: number;
  index?: number;
  code?: string;
  message?: string;
  data?: unknown;
}

export interface BlockJson {
  header: HeaderJson;
  txs: string[];
  lastCommit: CommitJson | null;
  commit: CommitJson | null;
}

/** Pages of validator changes a client follows (100 changes each): a bound, not an expected size. */
export const validatorPagesMax = 1000;

export class CitychainClient {
  private readonly fetchFn: FetchLike;
  private readonly now: () => number;
  private chainIdCache: string | null = null;
  /** The last set reached by following validator changes, and the genesis set it started from. */
  private followed: { genesis: readonly Validator[]; trusted: TrustedValidatorSet } | null = null;
  /** With the default sendCertificate, requests carry the certificate until this time (ms)… */
  private certificateUntilMs = Number.NEGATIVE_INFINITY;
  /** …and the next CERT_UNKNOWN turns them on for this long. */
  private certificateNextMs: number = certificateResendMs.initialMs;

  constructor(private readonly options: ClientOptions) {
    this.fetchFn = options.fetch ?? (globalThis.fetch as unknown as FetchLike);
    this.now = options.now ?? Date.now;
  }

  get identity(): TxIdentity {
    return this.options.identity;
  }

  async request<T>(
    method: "GET" | "POST",
    path: string,
    body?: unknown,
    extraHeaders: Record<string, string> = {},
  ): Promise<{ status: number; body: T }> {
    const { status, text } = await this.requestText(method, path, body, extraHeaders);
    let parsed: unknown;
    try {
      parsed = text.length === 0 ? null : JSON.parse(text);
    } catch {
      throw new CitychainError("BAD_RESPONSE", `node answered ${status} with non-JSON`, status);
    }
    if (status >= 400) {
      const e = (parsed as { error?: { code: string; message: string; field?: string } } | null)?.error;
      throw new CitychainError(e?.code ?? "HTTP_ERROR", e?.message ?? `HTTP ${status}`, status, e?.field);
    }
    return { status, body: parsed as T };
  }

  /** A signed request whose answer is returned as text, unparsed (tools that stream or count). */
  async requestText(
    method: "GET" | "POST",
    path: string,
    body?: unknown,
    extraHeaders: Record<string, string> = {},
  ): Promise<{ status: number; text: string }> {
    const response = await this.fetchSigned(method, path, body, extraHeaders);
    return { status: response.status, text: await response.text() };
  }

  /**
   * A signed request asking for a binary answer (`accept`, e.g. application/cbor). The bytes come
   * back as they are; an error answer (JSON) becomes a CitychainError like in `request`.
   */
  async requestBytes(
    method: "GET" | "POST",
    path: string,
    accept: string,
    body?: unknown,
  ): Promise<{ status: number; bytes: Uint8Array }> {
    const response = await this.fetchSigned(method, path, body, { accept });
    if (response.status >= 400 || response.arrayBuffer === undefined) {
      const e = errorInAnswer(await response.text());
      if (response.status < 400) throw new CitychainError("BAD_RESPONSE", "this fetch cannot read bytes", 0);
      throw new CitychainError(
        e?.code ?? "HTTP_ERROR",
        e?.message ?? `HTTP ${response.status}`,
        response.status,
        e?.field,
      );
    }
    return { status: response.status, bytes: new Uint8Array(await response.arrayBuffer()) };
  }

  private async fetchSigned(
    method: "GET" | "POST",
    path: string,
    body: unknown,
    extraHeaders: Record<string, string>,
  ): ReturnType<FetchLike> {
    const bytes = body === undefined ? undefined : new TextEncoder().encode(JSON.stringify(body));
    const fixed = this.options.sendCertificate;
    const withCertificate = fixed ?? this.now() < this.certificateUntilMs;
    const response = await this.fetchOnce(method, path, bytes, extraHeaders, withCertificate);
    if (fixed !== undefined || withCertificate) return response;
    if (response.status !== 401) {
      // A success without it: the node knows it, and a later CERT_UNKNOWN starts the backoff over.
      if (response.status < 400) this.certificateNextMs = certificateResendMs.initialMs;
      return response;
    }
    const text = await response.text();
    // Only the request's own refusal: a transaction naming an unknown certificate is CERT_UNKNOWN too.
    if (!isCertificateUnknownError(errorInAnswer(text)))
      return { status: response.status, text: async () => text };
    // Requests sent together are refused together: only the first refusal opens (and doubles) a window.
    const now = this.now();
    if (now >= this.certificateUntilMs) {
      this.certificateUntilMs = now + this.certificateNextMs;
      this.certificateNextMs = Math.min(2 * this.certificateNextMs, certificateResendMs.maxMs);
    }
    return this.fetchOnce(method, path, bytes, extraHeaders, true);
  }

  private async fetchOnce(
    method: "GET" | "POST",
    path: string,
    bytes: Uint8Array | undefined,
    extraHeaders: Record<string, string>,
    withCertificate: boolean,
  ): ReturnType<FetchLike> {
    const { identity } = this.options;
    const headers = await signRequest({
      method,
      url: path,
      ...(bytes === undefined ? {} : { body: bytes }),
      signer: identity.signer,
      certId: identity.certId,
      ...(withCertificate ? { certDer: identity.certDer } : {}),
      nowMs: this.now(),
    });
    if (bytes !== undefined) headers["content-type"] = "application/json";
    Object.assign(headers, extraHeaders);
    return this.fetchFn(this.options.url + path, {
      method,
      headers,
      ...(bytes === undefined ? {} : { body: bytes }),
    });
  }

  async status(): Promise<{ chainId: string; height: number; latestHash: string; [k: string]: unknown }> {
    return (await this.request<{ chainId: string; height: number; latestHash: string }>("GET", "/v1/status"))
      .body;
  }

  async chainId(): Promise<string> {
    this.chainIdCache ??= (await this.status()).chainId;
    return this.chainIdCache;
  }

  async buildTx(type: string, payload: Canonical, coSigners: readonly TxIdentity[] = []): Promise<BuiltTx> {
    return buildTx({
      chainId: await this.chainId(),
      type,
      payload,
      signers: [this.options.identity, ...coSigners],
      nowMs: this.now(),
    });
  }

  async submitBytes(
    bytes: Uint8Array,
    options: { wait?: boolean; waitMs?: number } = {},
  ): Promise<TxStatusJson> {
    const body = {
      tx: toBase64(bytes),
      ...(options.wait ? { wait: true } : {}),
      ...(options.waitMs === undefined ? {} : { waitMs: options.waitMs }),
    };
    return (await this.request<TxStatusJson>("POST", "/v1/tx", body)).body;
  }

  async submitBatch(
    txs: readonly Uint8Array[],
    options: { wait?: boolean; waitMs?: number } = {},
  ): Promise<Array<TxStatusJson & { error?: { code: string; message: string } }>> {
    const body = { txs: txs.map(toBase64), ...options };
    return (await this.request<{ results: TxStatusJson[] }>("POST", "/v1/txs", body)).body.results;
  }

  /** Builds, signs and submits; with wait, resolves when committed (throws on a failed or rejected result). */
  async send(
    type: string,
    payload: Canonical,
    options: { wait?: boolean; coSigners?: TxIdentity[] } = {},
  ): Promise<TxStatusJson> {
    const tx = await this.buildTx(type, payload, options.coSigners);
    const status = await this.submitBytes(tx.bytes, { wait: options.wait ?? true });
    if (status.status === "rejected" || (status.status === "committed" && status.code !== "OK")) {
      throw new CitychainError(status.code ?? "TX_FAILED", status.message ?? "transaction failed", 400);
    }
    return status;
  }

  async tx(id: string): Promise<TxStatusJson> {
    return (await this.request<TxStatusJson>("GET", `/v1/tx/${id}`)).body;
  }

  async block(ref: number | string | "latest" = "latest"): Promise<BlockJson> {
    return (await this.request<BlockJson>("GET", `/v1/blocks/${ref}`)).body;
  }

  /** Reads a state key and verifies its proof and the block's commit before returning the value. */
  async state(key: string): Promise<{ value: Uint8Array | null; height: number }> {
    const response = (await this.request<StateResponse>("GET", `/v1/state?key=${encodeURIComponent(key)}`))
      .body;
    const anchor = this.options.trustedValidators;
    const trusted =
      anchor === undefined
        ? validatorsFromJson(response.validators)
        : await this.validatorsFor(response.header, anchor);
    const value = await verifyStateResponse(response, trusted);
    return { value, height: response.height };
  }

  /** GET /v1/validators: the next height's set and the changes after `after`, unverified. */
  async validatorChanges(after = 0): Promise<ValidatorsJson> {
    return (await this.request<ValidatorsJson>("GET", `/v1/validators?after=${after}`)).body;
  }

  /**
   * The validators that signed `header`, reached from `genesis` (the set trusted at height 1) by
   * following the chain's changes up to the header's height, each one verified. Returns `genesis`
   * itself while the set never changed; the caller's commit check then decides.
   */
  async validatorsFor(
    header: { height: number; headerBytes: string | Uint8Array },
    genesis: readonly Validator[],
  ): Promise<readonly Validator[]> {
    const wanted = headerValidatorsHash(header.headerBytes);
    if (sameValidators(genesis, wanted)) return genesis;
    // Trust reached earlier from the same genesis set is a verified starting point.
    const known = this.followed;
    if (known !== null && known.genesis === genesis && known.trusted.height <= header.height) {
      if (sameValidators(known.trusted.validators, wanted)) return known.trusted.validators;
    }
    let trusted: TrustedValidatorSet =
      known !== null && known.genesis === genesis && known.trusted.height <= header.height
        ? known.trusted
        : { height: 1, validators: genesis };
    for (let page = 0; page < validatorPagesMax; page++) {
      const answer = await this.validatorChanges(trusted.height);
      trusted = await followValidatorChanges(trusted, answer.changes, header.height);
      const last = answer.changes.at(-1);
      if (!answer.more || last === undefined || last.height > header.height) break;
    }
    this.followed = { genesis, trusted };
    return trusted.validators;
  }

  /** The raw /v1/state answer, unverified (for tools that verify later or elsewhere). */
  async stateRaw(key: string): Promise<StateResponse> {
    return (await this.request<StateResponse>("GET", `/v1/state?key=${encodeURIComponent(key)}`)).body;
  }
}

/** The `error` object of a JSON error answer ({"error": {"code": …}}), or undefined. */
function errorInAnswer(text: string): { code?: string; message?: string; field?: string } | undefined {
  try {
    const error = (JSON.parse(text) as { error?: unknown } | null)?.error;
    return typeof error === "object" && error !== null ? error : undefined;
  } catch {
    return undefined;
  }
}
