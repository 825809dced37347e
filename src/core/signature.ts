/**
 * Signature rules shared by every node and the SDK (consensus-critical).
 *
 * Scheme "ecdsa-p256-sha256": ECDSA over P-256 with SHA-256, signature as the 64-byte IEEE P1363
 * form r || s. The one verification rule: r and s in [1, n-1] and s <= n/2 ("low S"). OpenSSL and
 * WebCrypto produce high S half of the time, so signers normalise (s -> n - s) before they publish;
 * verifiers refuse high S, so no signature has two valid byte forms. Keys are SPKI DER.
 *
 * The crypto behind it is a port (`SignatureVerifier`) so a national-algorithm suite (SM2/SM3) can be
 * added beside it without touching the callers.
 */

export const signatureSchemeP256 = "ecdsa-p256-sha256";
export type SignatureScheme = typeof signatureSchemeP256;

export const p256SignatureBytes = 64;

const curveOrder = 0xffffffff00000000ffffffffffffffffbce6faada7179e84f3b9cac2fc632551n;
const halfOrder = curveOrder >> 1n;

function readScalar(bytes: Uint8Array, offset: number): bigint {
  let v = 0n;
  for (let i = offset; i < offset + 32; i++) v = (v << 8n) | BigInt(bytes[i]!);
  return v;
}

function writeScalar(value: bigint, out: Uint8Array, offset: number): void {
  let v = value;
  for (let i = offset + 31; i >= offset; i--) {
    out[i] = Number(v & 0xffn);
    v >>= 8n;
  }
}

const curveOrderBytes = new Uint8Array(32);
writeScalar(curveOrder, curveOrderBytes, 0);
const halfOrderBytes = new Uint8Array(32);
writeScalar(halfOrder, halfOrderBytes, 0);

/** Compares the 32-byte big-endian scalar at bytes[offset..] with `bound`: <0, 0 or >0. */
function compareScalar(bytes: Uint8Array, offset: number, bound: Uint8Array): number {
  for (let i = 0; i < 32; i++) {
    const d = bytes[offset + i]! - bound[i]!;
    if (d !== 0) return d;
  }
  return 0;
}

function isZeroScalar(bytes: Uint8Array, offset: number): boolean {
  for (let i = offset; i < offset + 32; i++) if (bytes[i] !== 0) return false;
  return true;
}

/**
 * True when the signature has the one accepted form (length, ranges, low S). Compared byte-wise:
 * every transaction's signatures pass here, and reading them as BigInts cost ~8 µs each.
 */
export function isCanonicalP256Signature(signature: Uint8Array): boolean {
  if (signature.length !== p256SignatureBytes) return false;
  return (
    !isZeroScalar(signature, 0) &&
    compareScalar(signature, 0, curveOrderBytes) < 0 &&
    !isZeroScalar(signature, 32) &&
    compareScalar(signature, 32, halfOrderBytes) <= 0
  );
}

/** Returns the low-S form of a P1363 signature (a copy; the input is not changed). */
export function normalizeP256Signature(signature: Uint8Array): Uint8Array {
  if (signature.length !== p256SignatureBytes) throw new RangeError("P-256 signature must be 64 bytes");
  const out = signature.slice();
  const s = readScalar(signature, 32);
  if (s > halfOrder) writeScalar(curveOrder - s, out, 32);
  return out;
}

export interface SignatureVerifier {
  /** Verifies `signature` over `message` with the SPKI DER public key; false on any malformed input. */
  verify(publicKeySpki: Uint8Array, message: Uint8Array, signature: Uint8Array): boolean;
  /** The same, off the calling thread where the platform allows (node: libuv pool; browser: WebCrypto). */
  verifyAsync(publicKeySpki: Uint8Array, message: Uint8Array, signature: Uint8Array): Promise<boolean>;
}

export interface Signer {
  readonly publicKeySpki: Uint8Array;
  /** Returns a canonical (low-S) P1363 signature over `message`. */
  sign(message: Uint8Array): Promise<Uint8Array>;
}
