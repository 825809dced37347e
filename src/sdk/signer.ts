/**
 * A signer on WebCrypto, so the same code signs in the browser and in Node. Signatures are P1363
 * and normalised to low S, the one form every node accepts.
 */
import { normalizeP256Signature, type Signer } from "../core/signature.ts";

export class WebCryptoSigner implements Signer {
  private constructor(
    private readonly privateKey: CryptoKey,
    readonly publicKeySpki: Uint8Array,
  ) {}

  /** From an unencrypted PKCS#8 DER private key and its SPKI DER public key. */
  static async fromPkcs8(pkcs8: Uint8Array, publicKeySpki: Uint8Array): Promise<WebCryptoSigner> {
    const key = await globalThis.crypto.subtle.importKey(
      "pkcs8",
      pkcs8 as Uint8Array<ArrayBuffer>,
      { name: "ECDSA", namedCurve: "P-256" },
      false,
      ["sign"],
    );
    return new WebCryptoSigner(key, publicKeySpki);
  }

  /** From a CryptoKey pair, e.g. one generated non-extractable in the browser. */
  static async fromKeyPair(pair: CryptoKeyPair): Promise<WebCryptoSigner> {
    const spki = new Uint8Array(await globalThis.crypto.subtle.exportKey("spki", pair.publicKey));
    return new WebCryptoSigner(pair.privateKey, spki);
  }

  async sign(message: Uint8Array): Promise<Uint8Array> {
    const raw = await globalThis.crypto.subtle.sign(
      { name: "ECDSA", hash: "SHA-256" },
      this.privateKey,
      message as Uint8Array<ArrayBuffer>,
    );
    return normalizeP256Signature(new Uint8Array(raw));
  }
}
