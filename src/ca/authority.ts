/**
 * The certificate authority of the information center: a self-signed P-256 root that issues user and
 * node certificates from CSRs. The CA decides every field of what it signs; a CSR contributes only
 * its public key, and only after its self-signature proves the requester holds the private key.
 */
import { createPublicKey, type KeyObject, randomBytes } from "node:crypto";
import { existsSync, mkdirSync, readFileSync } from "node:fs";
import { isIP } from "node:net";
import { join } from "node:path";
import { assert, CodedError } from "../core/errors.ts";
import {
  authorityKeyIdentifier,
  basicConstraints,
  buildCertificate,
  type CertificateTemplate,
  type ExtensionSpec,
  encodeName,
  extendedKeyUsage,
  keyIdentifier,
  keyUsage,
  keyUsageBits,
  oids,
  readCertificateParts,
  readSubjectKeyId,
  subjectAltName,
  subjectKeyIdentifier,
} from "./certificate.ts";
import { bytesEqual } from "./der.ts";
import {
  caFail,
  certificateBytesMax,
  encodeIdentityExtension,
  type Identity,
  type IdentityClaims,
  identityExtensionOid,
  isP256,
  parseIdentityCert,
  type Role,
  validateClaims,
  validateDeptCode,
  validateEnrollmentId,
  verifyIssuedBy,
} from "./identity.ts";
import {
  encryptPrivateKeyPem,
  generateP256KeyPair,
  privateKeyFileMode,
  publicKeyFromSpki,
  readPrivateKey,
  toSigningCryptoKey,
  toVerifyingCryptoKey,
  writeFileDurably,
} from "./keys.ts";
import { derToPem, pemToDer } from "./pem.ts";
import { ecdsaP256Sha256, x509 } from "./x509.ts";

/** Files in a CA directory. The directory itself is created owner-only (0700). */
export const caKeyFileName = "ca-key.pem";
export const caCertFileName = "ca-cert.pem";
export const caDirMode = 0o700;
export const certFileMode = 0o644;

export const defaultOperatorDept = "infocenter";
/** Longest life of a root; a root's rollover is a governance event, so it is rare. */
export const rootValidityDaysMax = 30 * 365;
/** Longest life of a user or node certificate. */
export const leafValidityDaysMax = 10 * 365;
/** Issued certificates start this far in the past, so a node whose clock runs behind accepts them. */
export const notBeforeBackdateMs = 5 * 60_000;
/** Largest CSR we parse; a P-256 CSR is about 300 bytes. */
export const csrBytesMax = 8 * 1024;
/** Extra subject alternative names a node certificate may carry, of each kind. */
export const extraSansMax = 16;

const dayMs = 86_400_000;

export interface IssueProfile {
  readonly enrollmentId: string;
  readonly dept: string;
  readonly roles: readonly Role[];
  /** The CA issues end-entity certificates only; intermediate CAs are not supported yet. */
  readonly kind: "user" | "node";
  readonly validityDays: number;
  /** Node certificates only, beside the "localhost" every node certificate carries. */
  readonly dnsNames?: readonly string[];
  /** Node certificates only, beside the 127.0.0.1 every node certificate carries. */
  readonly ipAddresses?: readonly string[];
}

export interface CertificateAuthority {
  readonly dir: string;
  readonly certPem: string;
  readonly identity: Identity;
  /** The CA's clock in integer ms; injected so tests and simulations control time. */
  readonly now: () => number;
  /** Verifies the CSR and issues a certificate with the profile's claims; returns PEM. */
  issueFromCsr(csrPem: string, profile: IssueProfile): Promise<string>;
}

export interface CreateRootCaOptions {
  readonly dir: string;
  /** The root's CN, which is its enrollment id: "<dept>.<name>". Default "<dept>.root-ca". */
  readonly commonName?: string;
  readonly validityDays: number;
  readonly passphrase: string;
  /** The operator's department code. Default "infocenter". */
  readonly dept?: string;
  readonly now?: () => number;
}

export interface LoadCaOptions {
  readonly now?: () => number;
  readonly allowPlaintext?: boolean;
}

// ---------------------------------------------------------------------------------------------
// Root creation and loading

export async function createRootCa(options: CreateRootCaOptions): Promise<CertificateAuthority> {
  const now = options.now ?? Date.now;
  const dept = validateDeptCode(options.dept ?? defaultOperatorDept);
  const claims = validateClaims({
    enrollmentId: options.commonName ?? `${dept}.root-ca`,
    dept,
    roles: ["registrar"],
    kind: "ca",
  });
  const validityDays = validateValidityDays(options.validityDays, rootValidityDaysMax);
  const { privateKey, publicKey } = generateP256KeyPair();
  // Encrypt before touching the disk: a passphrase that is too short fails with nothing written.
  const keyPem = encryptPrivateKeyPem(privateKey, options.passphrase);
  const spki = spkiOf(publicKey);
  const nowMs = now();
  const name = encodeName(claims.dept, claims.roles[0]!, claims.enrollmentId);
  const der = buildCertificate(
    {
      serial: randomSerial(),
      issuerDer: name,
      subjectDer: name,
      notBeforeMs: floorToSecond(nowMs - notBeforeBackdateMs),
      notAfterMs: floorToSecond(nowMs + validityDays * dayMs),
      subjectPublicKeySpki: spki,
      extensions: [
        basicConstraints(true),
        keyUsage([keyUsageBits.keyCertSign, keyUsageBits.cRLSign]),
        subjectKeyIdentifier(keyIdentifier(spki)),
        identityExtension(claims),
      ],
    },
    privateKey,
  );
  const certPem = derToPem(der, "CERTIFICATE");
  const identity = parseIdentityCert(der);
  assert(verifyIssuedBy(identity, identity), "a new root verifies as its own issuer");
  const keyPath = join(options.dir, caKeyFileName);
  const certPath = join(options.dir, caCertFileName);
  if (existsSync(keyPath) || existsSync(certPath))
    caFail("CONFLICT", `${options.dir} already holds a CA`, "dir");
  mkdirSync(options.dir, { recursive: true, mode: caDirMode });
  // The key goes first: a crash between the two writes leaves a directory createRootCa refuses to
  // reuse, rather than a certificate whose key is lost.
  writeFileDurably(keyPath, keyPem, { mode: privateKeyFileMode });
  writeFileDurably(certPath, certPem, { mode: certFileMode });
  return new LocalCertificateAuthority(options.dir, certPem, identity, privateKey, now);
}

export async function loadCa(
  dir: string,
  passphrase: string,
  options: LoadCaOptions = {},
): Promise<CertificateAuthority> {
  const certPem = readCertFile(join(dir, caCertFileName));
  const identity = parseIdentityCert(certPem);
  if (identity.kind !== "ca" || !identity.isCa)
    caFail("CA_BAD_CERT", `${caCertFileName} is not a CA certificate`);
  const privateKey = readPrivateKey(join(dir, caKeyFileName), {
    passphrase,
    allowPlaintext: options.allowPlaintext === true,
  });
  if (!bytesEqual(spkiOf(createPublicKey(privateKey)), identity.publicKeySpki)) {
    caFail("CA_BAD_CERT", `${caKeyFileName} does not belong to ${caCertFileName}`);
  }
  return new LocalCertificateAuthority(dir, certPem, identity, privateKey, options.now ?? Date.now);
}

function readCertFile(path: string): string {
  try {
    return readFileSync(path, "utf8").slice(0, certificateBytesMax * 2);
  } catch {
    caFail("CA_BAD_INPUT", `cannot read ${path}; is this a CA directory?`, "dir");
  }
}

// ---------------------------------------------------------------------------------------------
// Issuing

class LocalCertificateAuthority implements CertificateAuthority {
  private readonly subjectDer: Uint8Array;
  private readonly keyId: Uint8Array;

  constructor(
    readonly dir: string,
    readonly certPem: string,
    readonly identity: Identity,
    private readonly privateKey: KeyObject,
    readonly now: () => number,
  ) {
    // Copy the name and key id from the CA certificate's own bytes, so children match it exactly.
    const parts = readCertificateParts(identity.der);
    this.subjectDer = parts.subjectDer;
    this.keyId = readSubjectKeyId(parts) ?? keyIdentifier(identity.publicKeySpki);
  }

  async issueFromCsr(csrPem: string, profile: IssueProfile): Promise<string> {
    const checked = validateIssueProfile(profile);
    const csr = await verifyCsr(csrPem);
    const der = buildCertificate(this.leafTemplate(checked, csr.publicKeySpki, this.now()), this.privateKey);
    // Check our own output as every node will: a certificate they would refuse must never leave.
    assert(verifyIssuedBy(parseIdentityCert(der), this.identity), "an issued certificate verifies");
    return derToPem(der, "CERTIFICATE");
  }

  private leafTemplate(profile: CheckedProfile, spki: Uint8Array, nowMs: number): CertificateTemplate {
    const { claims } = profile;
    return {
      serial: randomSerial(),
      issuerDer: this.subjectDer,
      subjectDer: encodeName(claims.dept, claims.roles[0]!, claims.enrollmentId),
      ...this.validityWindow(nowMs, profile.validityDays),
      subjectPublicKeySpki: spki,
      extensions: this.leafExtensions(profile, spki),
    };
  }

  /** Clamped into the CA's own validity: a child outliving its issuer would fail later, obscurely. */
  private validityWindow(nowMs: number, validityDays: number): { notBeforeMs: number; notAfterMs: number } {
    if (nowMs >= this.identity.notAfterMs) caFail("CERT_EXPIRED", "the CA certificate has expired", "ca");
    const notBeforeMs = Math.max(floorToSecond(nowMs - notBeforeBackdateMs), this.identity.notBeforeMs);
    const notAfterMs = Math.min(floorToSecond(nowMs + validityDays * dayMs), this.identity.notAfterMs);
    return { notBeforeMs, notAfterMs };
  }

  private leafExtensions(profile: CheckedProfile, spki: Uint8Array): ExtensionSpec[] {
    const isNode = profile.claims.kind === "node";
    const extensions = [
      basicConstraints(false),
      keyUsage([keyUsageBits.digitalSignature]),
      extendedKeyUsage(isNode ? [oids.serverAuth, oids.clientAuth] : [oids.clientAuth]),
      authorityKeyIdentifier(this.keyId),
      subjectKeyIdentifier(keyIdentifier(spki)),
      identityExtension(profile.claims),
    ];
    if (isNode) {
      const dnsNames = unique(["localhost", ...profile.dnsNames]);
      extensions.push(subjectAltName(dnsNames, unique(["127.0.0.1", ...profile.ipAddresses])));
    }
    return extensions;
  }
}

interface CheckedProfile {
  readonly claims: IdentityClaims;
  readonly validityDays: number;
  readonly dnsNames: readonly string[];
  readonly ipAddresses: readonly string[];
}

function validateIssueProfile(profile: IssueProfile): CheckedProfile {
  const claims = validateClaims(profile);
  if (claims.kind === "ca") caFail("CA_BAD_INPUT", "this CA issues user and node certificates only", "kind");
  const dnsNames = profile.dnsNames ?? [];
  const ipAddresses = profile.ipAddresses ?? [];
  if (claims.kind !== "node" && dnsNames.length + ipAddresses.length > 0) {
    caFail("CA_BAD_INPUT", "only node certificates carry subject alternative names", "dnsNames");
  }
  return {
    claims,
    validityDays: validateValidityDays(profile.validityDays, leafValidityDaysMax),
    dnsNames: validateDnsNames(dnsNames),
    ipAddresses: validateIpAddresses(ipAddresses),
  };
}

function validateValidityDays(value: unknown, daysMax: number): number {
  if (typeof value !== "number" || !Number.isInteger(value) || value < 1 || value > daysMax) {
    caFail("CA_BAD_INPUT", `validityDays is an integer in 1..${daysMax}`, "validityDays");
  }
  return value;
}

const dnsNamePattern =
  /^(?=.{1,253}$)[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)*$/;

export function validateDnsNames(value: readonly unknown[]): string[] {
  if (!Array.isArray(value) || value.length > extraSansMax) {
    caFail("CA_BAD_INPUT", `at most ${extraSansMax} DNS names`, "dnsNames");
  }
  for (const name of value) {
    if (typeof name !== "string" || !dnsNamePattern.test(name)) {
      caFail("CA_BAD_INPUT", "a DNS name is lower-case labels of [a-z0-9-] joined by dots", "dnsNames");
    }
  }
  return [...(value as string[])];
}

export function validateIpAddresses(value: readonly unknown[]): string[] {
  if (!Array.isArray(value) || value.length > extraSansMax) {
    caFail("CA_BAD_INPUT", `at most ${extraSansMax} IP addresses`, "ipAddresses");
  }
  for (const address of value) {
    if (typeof address !== "string" || isIP(address) === 0) {
      caFail("CA_BAD_INPUT", "an IP address is IPv4 or IPv6 text", "ipAddresses");
    }
  }
  return [...(value as string[])];
}

function unique(values: string[]): string[] {
  return [...new Set(values)];
}

// ---------------------------------------------------------------------------------------------
// CSRs

export interface VerifiedCsr {
  /** SubjectPublicKeyInfo DER of the requested P-256 key. */
  readonly publicKeySpki: Uint8Array;
  readonly publicKey: KeyObject;
}

/** Parses a PEM CSR, requires a P-256 key and ecdsa-with-SHA256, and checks its self-signature. */
export async function verifyCsr(csrPem: unknown): Promise<VerifiedCsr> {
  if (typeof csrPem !== "string") caFail("CA_BAD_CSR", "a CSR is PEM text", "csr");
  const der = pemToDer(csrPem, "CERTIFICATE REQUEST");
  if (der === null || der.length > csrBytesMax) {
    caFail("CA_BAD_CSR", `a CSR is one PEM CERTIFICATE REQUEST block of at most ${csrBytesMax} bytes`, "csr");
  }
  const csr = parseCsr(der);
  const publicKey = csrKey(csr);
  const algorithm = csr.signatureAlgorithm;
  if (algorithm.name !== "ECDSA" || algorithm.hash.name !== "SHA-256") {
    caFail("CA_BAD_CSR", "the CSR must be signed with ecdsa-with-SHA256", "csr");
  }
  if (!(await verifyCsrSignature(csr))) {
    caFail("CA_BAD_CSR", "the CSR's signature does not match the key it contains", "csr");
  }
  return { publicKeySpki: spkiOf(publicKey), publicKey };
}

function parseCsr(der: Uint8Array<ArrayBuffer>): x509.Pkcs10CertificateRequest {
  try {
    return new x509.Pkcs10CertificateRequest(der);
  } catch {
    caFail("CA_BAD_CSR", "not a parsable PKCS#10 CSR", "csr");
  }
}

function csrKey(csr: x509.Pkcs10CertificateRequest): KeyObject {
  let key: KeyObject;
  try {
    key = publicKeyFromSpki(new Uint8Array(csr.publicKey.rawData));
  } catch {
    caFail("CA_BAD_CSR", "the CSR's public key is unreadable", "csr");
  }
  if (!isP256(key)) caFail("CA_BAD_CSR", "the CSR's key must be an EC P-256 key", "csr");
  return key;
}

async function verifyCsrSignature(csr: x509.Pkcs10CertificateRequest): Promise<boolean> {
  try {
    return await csr.verify();
  } catch (error) {
    if (error instanceof CodedError) throw error;
    return false;
  }
}

/** A CSR for `enrollmentId`, for clients. The CA overrides its subject, so the CN is a courtesy. */
export async function createCsr(privateKey: KeyObject, enrollmentId: string): Promise<string> {
  validateEnrollmentId(enrollmentId);
  if (!isP256(privateKey)) caFail("CA_BAD_INPUT", "the key must be an EC P-256 private key", "privateKey");
  const keys = {
    privateKey: await toSigningCryptoKey(privateKey),
    publicKey: await toVerifyingCryptoKey(createPublicKey(privateKey)),
  };
  const csr = await x509.Pkcs10CertificateRequestGenerator.create({
    name: new x509.Name([{ CN: [{ utf8String: enrollmentId }] }]),
    keys,
    signingAlgorithm: ecdsaP256Sha256,
  });
  return derToPem(new Uint8Array(csr.rawData), "CERTIFICATE REQUEST");
}

// ---------------------------------------------------------------------------------------------
// Shared pieces of the profile

function identityExtension(claims: IdentityClaims): ExtensionSpec {
  return { oid: identityExtensionOid, critical: false, value: encodeIdentityExtension(claims) };
}

/** 128 random bits; the encoder adds a leading zero octet when needed so the serial stays positive. */
function randomSerial(): Uint8Array {
  const serial = new Uint8Array(randomBytes(16));
  if (serial.every((byte) => byte === 0)) serial[15] = 1;
  return serial;
}

function spkiOf(publicKey: KeyObject): Uint8Array {
  return new Uint8Array(publicKey.export({ type: "spki", format: "der" }));
}

function floorToSecond(ms: number): number {
  return Math.floor(ms / 1000) * 1000;
}
