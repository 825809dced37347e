/**
 * Node's own crypto behind the core's ports: P-256 verification with cached KeyObjects (importing a
 * key costs more than the verification itself) and signing that always publishes low S.
 */
import crypto, { type KeyObject } from "node:crypto";
import {
  isCanonicalP256Signature,
  normalizeP256Signature,
  type SignatureVerifier,
  type Signer,
} from "../core/signature.ts";
import type { VerifyPool } from "./verify-pool.ts";

/** Bounded: a flood of distinct keys evicts old ones instead of growing without end. */
export const keyCacheEntriesMax = 100_000;

/** Consensus signatures remembered by verifyRemembered: ~150 heights of four validators' messages. */
export const rememberedSignaturesMax = 1024;

export class NodeSignatureVerifier implements SignatureVerifier {
  private readonly keys = new Map<string, KeyObject>();
  /** Inputs of consensus signatures that verified (key, message and signature), oldest first out. */
  private readonly remembered = new Set<string>();
  /** `verifyRemembered` as a verifier port, for the consensus driver and last-commit checks. */
  readonly consensus: Pick<SignatureVerifier, "verify"> = {
    verify: (publicKeySpki, message, signature) => this.verifyRemembered(publicKeySpki, message, signature),
  };

  /** With a pool, asynchronous checks go to its worker threads in batches; without, to libuv's pool. */
  constructor(private readonly pool: VerifyPool | null = null) {}

  /** Stops the pool's workers (if any). */
  async close(): Promise<void> {
    await this.pool?.close();
  }

  keyObject(spki: Uint8Array): KeyObject {
    const id = Buffer.from(spki).toString("base64");
    let key = this.keys.get(id);
    if (key === undefined) {
      key = crypto.createPublicKey({ key: Buffer.from(spki), format: "der", type: "spki" });
      if (this.keys.size >= keyCacheEntriesMax) this.keys.delete(this.keys.keys().next().value as string);
      this.keys.set(id, key);
    }
    return key;
  }

  verify(publicKeySpki: Uint8Array, message: Uint8Array, signature: Uint8Array): boolean {
    if (!isCanonicalP256Signature(signature)) return false;
    try {
      const key = this.keyObject(publicKeySpki);
      return crypto.verify("sha256", message, { key, dsaEncoding: "ieee-p1363" }, signature);
    } catch {
      return false;
    }
  }

  /**
   * `verify` for consensus messages, remembering each success by all three inputs: a precommit is
   * checked once as a vote and again in the next block's last commit, and the second check is then a
   * lookup. Only the very same key, message and signature match, so the answer is verify's.
   */
  verifyRemembered(publicKeySpki: Uint8Array, message: Uint8Array, signature: Uint8Array): boolean {
    const key = `${Buffer.from(publicKeySpki).toString("base64")} ${Buffer.from(message).toString("base64")} ${Buffer.from(signature).toString("base64")}`;
    if (this.remembered.has(key)) return true;
    const ok = this.verify(publicKeySpki, message, signature);
    if (ok) {
      if (this.remembered.size >= rememberedSignaturesMax)
        this.remembered.delete(this.remembered.values().next().value as string);
      this.remembered.add(key);
    }
    return ok;
  }

  verifyAsync(publicKeySpki: Uint8Array, message: Uint8Array, signature: Uint8Array): Promise<boolean> {
    if (!isCanonicalP256Signature(signature)) return Promise.resolve(false);
    if (this.pool !== null) return this.pool.verify(publicKeySpki, message, signature);
    let key: KeyObject;
    try {
      key = this.keyObject(publicKeySpki);
    } catch {
      return Promise.resolve(false);
    }
    // The callback form runs on libuv's thread pool, so verification uses every core.
    return new Promise((resolve) => {
      crypto.verify("sha256", message, { key, dsaEncoding: "ieee-p1363" }, signature, (error, ok) => {
        resolve(error === null && ok);
      });
    });
  }
}

export class NodeSigner implements Signer {
  readonly publicKeySpki: Uint8Array;

  constructor(private readonly privateKey: KeyObject) {
    if (
      privateKey.asymmetricKeyType !== "ec" ||
      privateKey.asymmetricKeyDetails?.namedCurve !== "prime256v1"
    ) {
      throw new TypeError("signing key must be a P-256 private key");
    }
    this.publicKeySpki = new Uint8Array(
      crypto.createPublicKey(privateKey).export({ format: "der", type: "spki" }),
    );
  }

  signSync(message: Uint8Array): Uint8Array {
    const raw = crypto.sign("sha256", message, { key: this.privateKey, dsaEncoding: "ieee-p1363" });
    return normalizeP256Signature(raw);
  }

  sign(message: Uint8Array): Promise<Uint8Array> {
    return Promise.resolve(this.signSync(message));
  }
}
