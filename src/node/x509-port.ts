/** The core's X.509 port, backed by the membership service's certificate profile (node:crypto). */
import { parseIdentityCert, verifyIssuedBy } from "../ca/identity.ts";
import { CodedError } from "../core/errors.ts";
import type { CertInfo, X509Port } from "../core/identity.ts";

export const nodeX509: X509Port = {
  parse(der: Uint8Array): CertInfo {
    try {
      return parseIdentityCert(der);
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
