/**
 * The one place that loads @peculiar/x509. It needs reflect-metadata before it is evaluated, and a
 * WebCrypto provider; we hand it Node's own WebCrypto so no second crypto implementation is involved.
 * We use it only where Node cannot help: building and reading CSRs. (Certificates are built by
 * certificate.ts, because this library cannot encode our extension's OID; see there.)
 */
import "reflect-metadata";
import * as x509 from "@peculiar/x509";

x509.cryptoProvider.set(globalThis.crypto);

/** ECDSA over P-256 with SHA-256: the only signature algorithm of this profile (ecdsa-with-SHA256). */
export const ecdsaP256Sha256 = { name: "ECDSA", namedCurve: "P-256", hash: "SHA-256" } as const;

export { x509 };
