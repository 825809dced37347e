/** The core's X.509 port, backed by the membership service's certificate profile (node:crypto). */
import { parseIdentityCert, verifyIssuedBy } from "../ca/identity.ts";
import { CodedError } from "../core/errors.ts";
import type { CertInfo, X509Port } from "../core/identity.ts";

/** Parsed certificates by the byte array they came from (state and transactions hand out stable arrays). */
const parsed = new WeakMap<Uint8Array, CertInfo>();

export const nodeX509: X509Port = {
  parse(der: Uint8Array): CertInfo {
    const known = parsed.get(der);
    if (known !== undefined) return known;
    try {
      const info = parseIdentityCert(der);
      parsed.set(der, info);
      return info;
    } catch (error) {
      const message = error instanceof Error ? error.message : String(error);
      throw new CodedError("CERT_UNTRUSTED", `certificate does not fit the citychain profile: ${message}`);
    }
  },
  verifyIssuedBy(child: CertInfo, issuer: CertInfo): boolean {
    return verifyIssuedBy(
      child as Parameters<typeof verifyIssuedBy>[0],
      issuer as Parameters<typeof verifyIssuedBy>[1],
    );
  },
};
