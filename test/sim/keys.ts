/**
 * P-256 keys derived from the simulation seed. node:crypto cannot generate a key pair from a seed, but
 * it can import a private scalar: ECDH computes the public point, and the JWK form makes a KeyObject.
 * So validator ids (hashes of the public keys), and with them the proposer order, are the same in
 * every run of a seed. ECDSA signatures stay randomized; nothing in consensus branches on them.
 */
import crypto, { type KeyObject } from "node:crypto";
import { type Validator, validatorIdOf } from "../../src/core/block.ts";
import { normalizeP256Signature } from "../../src/core/signature.ts";
import type { Prng } from "./prng.ts";

const curveOrder = 0xffffffff00000000ffffffffffffffffbce6faada7179e84f3b9cac2fc632551n;

export interface SimKey {
  readonly privateKey: KeyObject;
  readonly publicKeySpki: Uint8Array;
  readonly id: Uint8Array;
  sign(message: Uint8Array): Uint8Array;
}

function scalarFrom(prng: Prng): Buffer {
  for (;;) {
    const bytes = Buffer.from(prng.bytes(32));
    const d = BigInt(`0x${bytes.toString("hex")}`);
    if (d > 0n && d < curveOrder) return bytes;
  }
}

export function deriveKey(prng: Prng): SimKey {
  const d = scalarFrom(prng);
  const ecdh = crypto.createECDH("prime256v1");
  ecdh.setPrivateKey(d);
  const point = ecdh.getPublicKey(); // 0x04 || x || y
  const b64 = (b: Buffer) => b.toString("base64url");
  const jwk = {
    kty: "EC",
    crv: "P-256",
    d: b64(d),
    x: b64(point.subarray(1, 33)),
    y: b64(point.subarray(33, 65)),
  };
  const privateKey = crypto.createPrivateKey({ key: jwk, format: "jwk" });
  const publicKeySpki = new Uint8Array(
    crypto.createPublicKey(privateKey).export({ format: "der", type: "spki" }),
  );
  return {
    privateKey,
    publicKeySpki,
    id: validatorIdOf(publicKeySpki),
    sign(message) {
      const raw = crypto.sign("sha256", message, { key: privateKey, dsaEncoding: "ieee-p1363" });
      return normalizeP256Signature(new Uint8Array(raw));
    },
  };
}

export function validatorFor(key: SimKey, power: number, index: number): Validator {
  return { id: key.id, publicKeySpki: key.publicKeySpki, power, dept: `dept${index}` };
}
