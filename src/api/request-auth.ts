/**
 * Node side of signed API requests (docs/api-auth.md): given a request that parseSignedRequest accepted
 * and the public key the API layer resolved for its keyid on the ledger, decide whether to believe it.
 *
 * Three checks, cheapest first: the `created` time is within the skew window, the nonce has not been
 * seen for this key within that window, and the ECDSA P-256 signature verifies. The nonce is recorded
 * only once the signature has verified, so requests nobody signed can never fill the replay cache.
 *
 * Where the signature is checked: on the event loop itself while the loop has time to spare (its busy
 * share over the last ~100 ms below `inlineBelowBusyShare`), otherwise on libuv's thread pool. One
 * check costs ~45 µs; handing it to the pool costs a thread hop whose wake-up, on a 2-core machine,
 * added 2 ms to the p99 of sequential requests (server-side p99 of a holder search 3.6 → 1.5 ms,
 * docs/benchmarks.md). Under load the pool lets both cores verify, which is worth far more.
 *
 * Not here: resolving keyid or X-Citychain-Cert to an identity (chain to a root, validity, revocation,
 * department). The API layer does that against the ledger and hands us the resulting key.
 */
import { createPublicKey, verify as cryptoVerify, type KeyObject } from "node:crypto";
import { performance } from "node:perf_hooks";
import { toHex } from "../core/encoding.ts";
import { assert, CodedError } from "../core/errors.ts";
import type { ParsedSignedRequest } from "../core/httpsig.ts";
import { authHeaders } from "../core/httpsig.ts";
import { isCanonicalP256Signature, p256SignatureBytes } from "../core/signature.ts";

export interface RequestVerifierOptions {
  /** How far `created` may lie from the node's clock, either way. Default 300_000 (5 minutes). */
  readonly clockSkewMsMax?: number;
  /** Nonces remembered at once across all keys. Default 1_000_000 (about 145 MB of heap when full). */
  readonly nonceCacheEntriesMax?: number;
  /** Parsed public keys kept; only a speed-up, so evicting one is harmless. Default 10_000. */
  readonly keyCacheEntriesMax?: number;
  /**
   * Verify on the event loop while its busy share is below this (0 = always on the pool). Default 0.9.
   */
  readonly inlineBelowBusyShare?: number;
  /** The event loop's recent busy share, 0..1 (a port for tests). Default: eventLoopBusyShare(). */
  readonly busyShare?: () => number;
  /** Wall clock, integer ms since the Unix epoch (a port, so tests can move time). */
  readonly now: () => number;
}

export const requestVerifierDefaults = {
  clockSkewMsMax: 300_000,
  nonceCacheEntriesMax: 1_000_000,
  keyCacheEntriesMax: 10_000,
  inlineBelowBusyShare: 0.9,
} as const;

/** How long one reading of the event loop's busy share stands before it is taken again. */
const busyShareWindowMs = 100;

/**
 * The event loop's busy share (0..1) over the last completed window of ~100 ms, from Node's
 * event-loop utilisation counters; cheap enough to call per request.
 */
export function eventLoopBusyShare(): () => number {
  let mark = performance.eventLoopUtilization();
  let markAt = performance.now();
  let share = 0;
  return () => {
    const at = performance.now();
    if (at - markAt >= busyShareWindowMs) {
      const next = performance.eventLoopUtilization();
      share = performance.eventLoopUtilization(next, mark).utilization;
      mark = next;
      markAt = at;
    }
    return share;
  };
}

const keyIdPattern = /^[0-9a-f]{64}$/;
const noncePattern = /^[A-Za-z0-9_-]{1,64}$/;

export class RequestVerifier {
  private readonly clockSkewMsMax: number;
  private readonly keyCacheEntriesMax: number;
  private readonly now: () => number;
  private readonly nonces: NonceCache;
  private readonly inlineBelowBusyShare: number;
  private readonly busyShare: () => number;
  /** SPKI hex -> parsed key, oldest use first (a Map keeps insertion order, so this is an LRU). */
  private readonly keys = new Map<string, KeyObject>();
  /**
   * Lower edge of the accepted `created` window. It never moves back, even when the wall clock does:
   * a nonce is evicted only once its `created` falls below this edge, so a request whose nonce was
   * forgotten can never come back inside the window and be replayed.
   */
  private windowStartMs = Number.NEGATIVE_INFINITY;
  /** Nonces created before this second are gone; eviction runs at most once per second of clock. */
  private evictedBeforeS = Number.NEGATIVE_INFINITY;

  constructor(options: RequestVerifierOptions) {
    this.clockSkewMsMax = options.clockSkewMsMax ?? requestVerifierDefaults.clockSkewMsMax;
    const nonceCacheEntriesMax = options.nonceCacheEntriesMax ?? requestVerifierDefaults.nonceCacheEntriesMax;
    this.keyCacheEntriesMax = options.keyCacheEntriesMax ?? requestVerifierDefaults.keyCacheEntriesMax;
    assert(
      Number.isSafeInteger(this.clockSkewMsMax) && this.clockSkewMsMax >= 1000,
      "clockSkewMsMax is an integer of at least 1000 ms (created has whole seconds)",
    );
    assert(
      Number.isSafeInteger(nonceCacheEntriesMax) && nonceCacheEntriesMax > 0,
      "nonceCacheEntriesMax > 0",
    );
    assert(
      Number.isSafeInteger(this.keyCacheEntriesMax) && this.keyCacheEntriesMax > 0,
      "keyCacheEntriesMax > 0",
    );
    this.inlineBelowBusyShare = options.inlineBelowBusyShare ?? requestVerifierDefaults.inlineBelowBusyShare;
    assert(
      this.inlineBelowBusyShare >= 0 && this.inlineBelowBusyShare <= 1,
      "inlineBelowBusyShare is a share between 0 and 1",
    );
    this.busyShare = options.busyShare ?? eventLoopBusyShare();
    this.now = options.now;
    this.nonces = new NonceCache(nonceCacheEntriesMax);
  }

  /** Nonces currently remembered (for metrics and tests). */
  get nonceCacheEntries(): number {
    return this.nonces.size;
  }

  /**
   * Resolves when the request is fresh, unreplayed and signed by `publicKeySpki` (P-256 SPKI DER);
   * otherwise rejects with AUTH_CLOCK_SKEW, AUTH_REPLAYED, AUTH_BAD_SIGNATURE or RATE_LIMITED.
   */
  async verify(parsed: ParsedSignedRequest, publicKeySpki: Uint8Array): Promise<void> {
    assertParsed(parsed);
    this.checkCreated(parsed.createdS);
    const nonceKey = `${parsed.keyId}.${parsed.nonce}`;
    // Cheap early refusals that spare a signature check; both are repeated after it, because other
    // requests may have run while this one waited on the pool.
    this.nonces.checkCanAdd(nonceKey);
    if (!isCanonicalP256Signature(parsed.signature)) {
      throw new CodedError(
        "AUTH_BAD_SIGNATURE",
        "signature is not canonical: r or s out of range, or s is high (normalise s to n - s)",
        authHeaders.signature,
      );
    }
    const key = this.publicKey(publicKeySpki);
    const valid =
      this.busyShare() < this.inlineBelowBusyShare
        ? verifyHere(key, parsed.signatureBase, parsed.signature)
        : await verifyOnPool(key, parsed.signatureBase, parsed.signature);
    if (!valid) {
      throw new CodedError(
        "AUTH_BAD_SIGNATURE",
        "signature does not verify with the key for keyid",
        authHeaders.signature,
      );
    }
    this.nonces.checkCanAdd(nonceKey);
    this.nonces.add(nonceKey, parsed.createdS);
  }

  private checkCreated(createdS: number): void {
    const nowMs = this.now();
    assert(Number.isFinite(nowMs), "now() returns a finite number of ms");
    const windowStartMs = Math.max(this.windowStartMs, nowMs - this.clockSkewMsMax);
    this.windowStartMs = windowStartMs;
    // created * 1000 < windowStartMs  <=>  created < ceil(windowStartMs / 1000), for whole seconds.
    const createdSMin = Math.ceil(windowStartMs / 1000);
    if (createdSMin > this.evictedBeforeS) {
      this.evictedBeforeS = createdSMin;
      this.nonces.evictCreatedBefore(createdSMin);
    }
    const createdMs = createdS * 1000;
    if (createdMs < windowStartMs || createdMs > nowMs + this.clockSkewMsMax) {
      throw new CodedError(
        "AUTH_CLOCK_SKEW",
        `created ${new Date(createdMs).toISOString()} is more than ${this.clockSkewMsMax / 1000} s ` +
          `from the node's clock ${new Date(nowMs).toISOString()}: check the client's clock`,
        authHeaders.signatureInput,
      );
    }
  }

  private publicKey(spki: Uint8Array): KeyObject {
    const cacheKey = toHex(spki);
    const cached = this.keys.get(cacheKey);
    if (cached !== undefined) {
      this.keys.delete(cacheKey);
      this.keys.set(cacheKey, cached);
      return cached;
    }
    const key = parseP256PublicKey(spki);
    if (this.keys.size >= this.keyCacheEntriesMax) {
      const oldest = this.keys.keys().next();
      if (oldest.done !== true) this.keys.delete(oldest.value);
    }
    this.keys.set(cacheKey, key);
    return key;
  }
}

/**
 * keyId.nonce pairs seen within the window, bucketed by `created` second so that eviction is one pass
 * over at most (2 * window + 1) seconds' buckets, whatever the order requests arrive in.
 */
class NonceCache {
  private readonly createdSByKey = new Map<string, number>();
  private readonly keysByCreatedS = new Map<number, string[]>();
  private readonly entriesMax: number;

  constructor(entriesMax: number) {
    this.entriesMax = entriesMax;
  }

  get size(): number {
    return this.createdSByKey.size;
  }

  checkCanAdd(key: string): void {
    if (this.createdSByKey.has(key)) {
      throw new CodedError(
        "AUTH_REPLAYED",
        "this keyid and nonce were already used: sign every request with a fresh nonce",
        authHeaders.signatureInput,
      );
    }
    // When full of nonces that are still inside the window, refuse rather than forget one: a forgotten
    // nonce would let its request be replayed until the window closes, silently. Refusing is loud and
    // lasts at most one window, and only signed requests (from CA-issued identities) can fill the cache.
    if (this.createdSByKey.size >= this.entriesMax) {
      throw new CodedError(
        "RATE_LIMITED",
        "too many signed requests within the replay window; retry shortly",
      );
    }
  }

  add(key: string, createdS: number): void {
    assert(!this.createdSByKey.has(key), "a nonce is recorded once");
    assert(this.createdSByKey.size < this.entriesMax, "the nonce cache stays within its bound");
    this.createdSByKey.set(key, createdS);
    const bucket = this.keysByCreatedS.get(createdS);
    if (bucket === undefined) this.keysByCreatedS.set(createdS, [key]);
    else bucket.push(key);
  }

  evictCreatedBefore(createdSMin: number): void {
    for (const [createdS, keys] of this.keysByCreatedS) {
      if (createdS >= createdSMin) continue;
      for (const key of keys) this.createdSByKey.delete(key);
      this.keysByCreatedS.delete(createdS);
    }
  }
}

function assertParsed(parsed: ParsedSignedRequest): void {
  // parseSignedRequest guarantees these; a caller that built the object by hand is a programming error.
  assert(keyIdPattern.test(parsed.keyId), "parsed.keyId is a certificate id");
  assert(noncePattern.test(parsed.nonce), "parsed.nonce is base64url");
  assert(Number.isSafeInteger(parsed.createdS) && parsed.createdS >= 0, "parsed.createdS is whole seconds");
  assert(parsed.signature.length === p256SignatureBytes, "parsed.signature is 64 bytes");
  assert(parsed.signatureBase.length > 0, "parsed.signatureBase is not empty");
}

function parseP256PublicKey(spki: Uint8Array): KeyObject {
  let key: KeyObject;
  try {
    key = createPublicKey({ key: Buffer.from(spki), format: "der", type: "spki" });
  } catch (error) {
    throw new CodedError(
      "AUTH_BAD_SIGNATURE",
      `the key for keyid is not a valid SPKI public key: ${(error as Error).message}`,
      authHeaders.signature,
    );
  }
  // RFC 9421 §3.2: the key must suit the algorithm named by alg, here ecdsa-p256-sha256.
  if (key.asymmetricKeyType !== "ec" || key.asymmetricKeyDetails?.namedCurve !== "prime256v1") {
    throw new CodedError("AUTH_BAD_SIGNATURE", "the key for keyid is not a P-256 key", authHeaders.signature);
  }
  return key;
}

function checkFailed(error: Error): CodedError {
  return new CodedError(
    "AUTH_BAD_SIGNATURE",
    `signature check failed: ${error.message}`,
    authHeaders.signature,
  );
}

/** crypto.verify without a callback: on the event loop, no thread hop. */
function verifyHere(key: KeyObject, message: Uint8Array, signature: Uint8Array): boolean {
  try {
    return cryptoVerify("sha256", message, { key, dsaEncoding: "ieee-p1363" }, signature);
  } catch (error) {
    throw checkFailed(error as Error);
  }
}

/** crypto.verify with a callback runs on the libuv thread pool, so both cores verify in parallel. */
function verifyOnPool(key: KeyObject, message: Uint8Array, signature: Uint8Array): Promise<boolean> {
  return new Promise((resolve, reject) => {
    cryptoVerify("sha256", message, { key, dsaEncoding: "ieee-p1363" }, signature, (error, valid) => {
      if (error === null) resolve(valid);
      else reject(checkFailed(error));
    });
  });
}
