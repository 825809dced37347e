/**
 * Who signed: resolves a signer reference to a valid identity using world state only, so every node
 * reaches the same verdict. A signer is valid at time t when its certificate
 *   - parses under our certificate profile (department, roles, kind in the citychain extension),
 *   - was issued by one of the trusted roots recorded on the ledger,
 *   - is within its validity period at t (block time in execution, the node's clock at the API),
 *   - is not revoked, nor is its enrollment identity,
 *   - belongs to a department registered on the ledger and active.
 * X.509 parsing and signature checks are a port, so the core stays free of platform crypto.
 */
import { CodedError } from "./errors.ts";
import type { StateReader } from "./state.ts";
import { readDepartment, readRevocation, readRoots, stateKeys } from "./system-state.ts";
import type { SignerRef } from "./tx.ts";
import { signerCertId } from "./tx.ts";

export interface CertInfo {
  readonly certId: string;
  readonly der: Uint8Array;
  readonly enrollmentId: string;
  readonly dept: string;
  readonly roles: readonly string[];
  readonly kind: "user" | "node" | "ca";
  readonly notBeforeMs: number;
  readonly notAfterMs: number;
  readonly publicKeySpki: Uint8Array;
  readonly isCa: boolean;
}

export interface X509Port {
  /** Parses a certificate under the citychain profile; throws CodedError CERT_UNTRUSTED when it does not fit. */
  parse(der: Uint8Array): CertInfo;
  /** True when `issuer` signed `child` (signature and issuer name). */
  verifyIssuedBy(child: CertInfo, issuer: CertInfo): boolean;
}

export interface Identity extends CertInfo {}

export function findCertificate(state: StateReader, ref: SignerRef): Uint8Array {
  if (ref.kind === "cert") return ref.der;
  const certId = signerCertId(ref);
  const der = state.get(stateKeys.cert(certId));
  if (der === undefined) {
    throw new CodedError(
      "CERT_UNKNOWN",
      `certificate ${certId} is not known to the ledger; send the certificate`,
    );
  }
  return der;
}

export function resolveIdentity(x509: X509Port, state: StateReader, der: Uint8Array, atMs: number): Identity {
  const cert = x509.parse(der);
  if (cert.isCa)
    throw new CodedError("CERT_UNTRUSTED", "a CA certificate cannot sign transactions or requests");
  const roots = readRoots(state).map((r) => x509.parse(r));
  if (!roots.some((root) => x509.verifyIssuedBy(cert, root))) {
    throw new CodedError("CERT_UNTRUSTED", `certificate ${cert.certId} is not issued by a trusted root`);
  }
  checkValidAt(cert, atMs);
  if (readRevocation(state, stateKeys.revokedCert(cert.certId)) !== undefined) {
    throw new CodedError("CERT_REVOKED", `certificate ${cert.certId} is revoked`);
  }
  if (readRevocation(state, stateKeys.revokedIdentity(cert.enrollmentId)) !== undefined) {
    throw new CodedError("CERT_REVOKED", `identity ${cert.enrollmentId} is revoked`);
  }
  const dept = readDepartment(state, cert.dept);
  if (dept === undefined) throw new CodedError("DEPT_UNKNOWN", `department ${cert.dept} is not registered`);
  if (dept.status !== "active")
    throw new CodedError("DEPT_SUSPENDED", `department ${cert.dept} is suspended`);
  return cert;
}

/** The certificate's validity period contains `atMs`, or CERT_EXPIRED. */
export function checkValidAt(cert: CertInfo, atMs: number): void {
  if (atMs < cert.notBeforeMs || atMs > cert.notAfterMs) {
    throw new CodedError(
      "CERT_EXPIRED",
      `certificate ${cert.certId} is not valid at ${new Date(atMs).toISOString()}`,
    );
  }
}

export function hasRole(identity: Identity, ...roles: string[]): boolean {
  return roles.some((r) => identity.roles.includes(r));
}
