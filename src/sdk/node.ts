/** Node-only helpers: load an identity from PEM files, and a fetch that trusts the consortium root. */
import crypto from "node:crypto";
import fs from "node:fs";
import { Agent } from "undici";
import { type ReadPrivateKeyOptions, readPrivateKey } from "../ca/keys.ts";
import { CodedError } from "../core/errors.ts";
import { NodeSigner } from "../node/crypto-node.ts";
import type { FetchLike } from "./client.ts";
import type { TxIdentity } from "./tx-builder.ts";

/**
 * The identity in a certificate and its private key, signing with node:crypto (synchronous, on the
 * calling thread: a P-256 signature costs less than handing it to WebCrypto's thread pool).
 */
export async function loadIdentity(
  certPath: string,
  keyPath: string,
  keyOptions: ReadPrivateKeyOptions,
): Promise<TxIdentity> {
  const cert = new crypto.X509Certificate(fs.readFileSync(certPath));
  const certDer = new Uint8Array(cert.raw);
  const signer = new NodeSigner(readPrivateKey(keyPath, keyOptions));
  if (!Buffer.from(signer.publicKeySpki).equals(cert.publicKey.export({ format: "der", type: "spki" }))) {
    throw new CodedError(
      "CA_BAD_CERT",
      `the key in ${keyPath} does not belong to the certificate in ${certPath}`,
    );
  }
  return { signer, certDer, certId: crypto.createHash("sha256").update(certDer).digest("hex") };
}

/**
 * A fetch over undici that trusts only the given CA certificate(s) for TLS. It uses undici's
 * request API rather than its WHATWG fetch: the client needs a status and the body, and the
 * request API gives them for a fraction of fetch's per-request work (no Request/Response/Headers
 * objects, no stream adapters).
 */
export function nodeFetch(caPem?: string, connections = 16): FetchLike {
  const dispatcher = new Agent({
    connect: caPem === undefined ? {} : { ca: caPem },
    connections,
    pipelining: 1,
  });
  return async (url, init) => {
    const { origin, pathname, search } = new URL(url);
    const answer = await transport(() =>
      dispatcher.request({
        origin,
        path: pathname + search,
        method: init.method,
        headers: init.headers,
        ...(init.body === undefined ? {} : { body: init.body }),
      }),
    );
    return {
      status: answer.statusCode,
      text: () => transport(() => answer.body.text()),
      arrayBuffer: () => transport(() => answer.body.arrayBuffer()),
    };
  };
}

/**
 * Fails as WHATWG fetch fails: a connection refused, reset or cut, a TLS failure or a timeout is a
 * TypeError whose `cause` is undici's error (with its `code`, e.g. ECONNRESET). Callers (the CLI,
 * the CA's ledger sync, the benchmarks' retries) tell "the network failed" from "the server said
 * no" by that, whichever fetch they were given; undici's request API throws its errors bare.
 */
async function transport<T>(step: () => Promise<T>): Promise<T> {
  try {
    return await step();
  } catch (error) {
    throw new TypeError("fetch failed", { cause: error });
  }
}
