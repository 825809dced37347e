/** Node-only helpers: load an identity from PEM files, and a fetch that trusts the consortium root. */
import crypto from "node:crypto";
import fs from "node:fs";
import { Agent, fetch as undiciFetch } from "undici";
import { type ReadPrivateKeyOptions, readPrivateKey } from "../ca/keys.ts";
import type { FetchLike } from "./client.ts";
import { WebCryptoSigner } from "./signer.ts";
import type { TxIdentity } from "./tx-builder.ts";

export async function loadIdentity(
  certPath: string,
  keyPath: string,
  keyOptions: ReadPrivateKeyOptions,
): Promise<TxIdentity> {
  const cert = new crypto.X509Certificate(fs.readFileSync(certPath));
  const certDer = new Uint8Array(cert.raw);
  const privateKey = readPrivateKey(keyPath, keyOptions);
  const pkcs8 = new Uint8Array(privateKey.export({ format: "der", type: "pkcs8" }));
  const spki = new Uint8Array(cert.publicKey.export({ format: "der", type: "spki" }));
  const signer = await WebCryptoSigner.fromPkcs8(pkcs8, spki);
  pkcs8.fill(0);
  return { signer, certDer, certId: crypto.createHash("sha256").update(certDer).digest("hex") };
}

/** A fetch over undici that trusts only the given CA certificate(s) for TLS. */
export function nodeFetch(caPem?: string, connections = 16): FetchLike {
  const dispatcher = new Agent({
    connect: caPem === undefined ? {} : { ca: caPem },
    connections,
    pipelining: 1,
  });
  return (async (url, init) => undiciFetch(url, { ...init, dispatcher })) as FetchLike;
}
