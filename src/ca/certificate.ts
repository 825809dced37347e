/**
 * X.509 certificates at the DER level: reading the parts Node's X509Certificate does not expose, and
 * building the TBSCertificate we sign.
 *
 * Why our own encoder: @peculiar/x509 re-parses every extension through asn1js, which cannot carry an
 * OID arc wider than 56 bits and silently drops it, and our identity extension's OID (2.25.<UUID>)
 * has a 128-bit arc. The profile is small and fixed, so the encoder is too; Node's X509Certificate
 * re-reads and verifies every certificate we build before it leaves the CA.
 */
import { createHash, type KeyObject, sign } from "node:crypto";
import { isIP } from "node:net";
import {
  bytesEqual,
  concatBytes,
  contentOf,
  type DerElement,
  derBitString,
  derOctetString,
  derOid,
  derSequence,
  derSet,
  derTag,
  derTime,
  derTrue,
  derUnsignedInteger,
  derUtf8String,
  encodeOidContent,
  expectTag,
  readChildren,
  readElement,
  tlv,
} from "./der.ts";

export const oids = {
  ecdsaWithSha256: "1.2.840.10045.4.3.2",
  commonName: "2.5.4.3",
  organization: "2.5.4.10",
  organizationalUnit: "2.5.4.11",
  subjectKeyIdentifier: "2.5.29.14",
  keyUsage: "2.5.29.15",
  subjectAltName: "2.5.29.17",
  basicConstraints: "2.5.29.19",
  authorityKeyIdentifier: "2.5.29.35",
  extKeyUsage: "2.5.29.37",
  serverAuth: "1.3.6.1.5.5.7.3.1",
  clientAuth: "1.3.6.1.5.5.7.3.2",
} as const;

// ---------------------------------------------------------------------------------------------
// Reading

export interface RawExtension {
  readonly oid: Uint8Array;
  readonly critical: boolean;
  /** Content of extnValue. */
  readonly value: Uint8Array;
}

export interface CertificateParts {
  readonly version: number;
  readonly signatureAlgorithmOid: Uint8Array;
  /** Full DER of the subject Name, to copy byte for byte into the issuer field of children. */
  readonly subjectDer: Uint8Array;
  /** Full DER of the SubjectPublicKeyInfo, as it appears in the certificate. */
  readonly spkiDer: Uint8Array;
  readonly extensions: readonly RawExtension[];
}

/** Throws DerError on malformed input; callers turn that into their own coded error. */
export function readCertificateParts(der: Uint8Array): CertificateParts {
  const certificate = readElement(der, 0);
  if (certificate.tag !== derTag.sequence || certificate.end !== der.length) {
    throw new Error("not exactly one DER certificate");
  }
  const [tbs, signatureAlgorithm] = readChildren(der, certificate);
  const fields = readChildren(der, expectTag(tbs, derTag.sequence, "tbsCertificate"));
  const algorithmFields = readChildren(der, expectTag(signatureAlgorithm, derTag.sequence, "algorithm"));
  const hasVersion = fields[0]?.tag === derTag.explicit0;
  const subject = expectTag(fields[hasVersion ? 5 : 4], derTag.sequence, "subject");
  const spki = expectTag(fields[hasVersion ? 6 : 5], derTag.sequence, "subjectPublicKeyInfo");
  return {
    version: hasVersion ? readVersion(der, fields[0]!) : 1,
    signatureAlgorithmOid: contentOf(der, expectTag(algorithmFields[0], derTag.oid, "algorithm OID")),
    subjectDer: der.subarray(subject.offset, subject.end),
    spkiDer: der.subarray(spki.offset, spki.end),
    extensions: readExtensions(der, fields),
  };
}

function readVersion(der: Uint8Array, wrapper: DerElement): number {
  const [integer] = readChildren(der, wrapper);
  const content = contentOf(der, expectTag(integer, derTag.integer, "version"));
  return content.length === 1 ? content[0]! + 1 : 0;
}

function readExtensions(der: Uint8Array, tbsFields: DerElement[]): RawExtension[] {
  const wrapper = tbsFields.find((field) => field.tag === derTag.explicit3);
  if (wrapper === undefined) return [];
  const [list] = readChildren(der, wrapper);
  return readChildren(der, expectTag(list, derTag.sequence, "extensions")).map((extension) => {
    const parts = readChildren(der, expectTag(extension, derTag.sequence, "extension"));
    const oid = contentOf(der, expectTag(parts[0], derTag.oid, "extension OID"));
    const critical = parts.length === 3 && parts[1]!.tag === derTag.boolean && der[parts[1]!.start] === 0xff;
    const value = expectTag(parts[parts.length - 1], derTag.octetString, "extnValue");
    return { oid, critical, value: contentOf(der, value) };
  });
}

/** Encoded OIDs by dotted form; only OIDs named in our code are looked up, so it stays small. */
const oidContents = new Map<string, Uint8Array>();

export function findExtensions(parts: CertificateParts, dottedOid: string): RawExtension[] {
  let oid = oidContents.get(dottedOid);
  if (oid === undefined) {
    oid = encodeOidContent(dottedOid);
    oidContents.set(dottedOid, oid);
  }
  const wanted = oid;
  return parts.extensions.filter((extension) => bytesEqual(extension.oid, wanted));
}

/** The keyIdentifier inside a subjectKeyIdentifier extension value (an OCTET STRING). */
export function readSubjectKeyId(parts: CertificateParts): Uint8Array | null {
  const [extension] = findExtensions(parts, oids.subjectKeyIdentifier);
  if (extension === undefined) return null;
  const inner = readElement(extension.value, 0);
  return contentOf(extension.value, expectTag(inner, derTag.octetString, "keyIdentifier"));
}

// ---------------------------------------------------------------------------------------------
// Building

export interface ExtensionSpec {
  readonly oid: string;
  readonly critical: boolean;
  /** DER (or, for our identity extension, the bytes) that go inside extnValue. */
  readonly value: Uint8Array;
}

export interface CertificateTemplate {
  /** Magnitude bytes of a positive serial number. */
  readonly serial: Uint8Array;
  readonly issuerDer: Uint8Array;
  readonly subjectDer: Uint8Array;
  readonly notBeforeMs: number;
  readonly notAfterMs: number;
  readonly subjectPublicKeySpki: Uint8Array;
  readonly extensions: readonly ExtensionSpec[];
}

const ecdsaWithSha256Algorithm = derSequence(derOid(oids.ecdsaWithSha256));

/** DER of a signed v3 certificate: ECDSA P-256 with SHA-256 under `issuerKey`. */
export function buildCertificate(template: CertificateTemplate, issuerKey: KeyObject): Uint8Array {
  const tbs = derSequence(
    tlv(derTag.explicit0, derUnsignedInteger(Uint8Array.of(2))),
    derUnsignedInteger(template.serial),
    ecdsaWithSha256Algorithm,
    template.issuerDer,
    derSequence(derTime(template.notBeforeMs), derTime(template.notAfterMs)),
    template.subjectDer,
    template.subjectPublicKeySpki,
    tlv(derTag.explicit3, derSequence(...template.extensions.map(encodeExtension))),
  );
  const signature = sign("sha256", tbs, issuerKey);
  return derSequence(tbs, ecdsaWithSha256Algorithm, derBitString(new Uint8Array(signature)));
}

function encodeExtension(extension: ExtensionSpec): Uint8Array {
  const critical = extension.critical ? [derTrue] : [];
  return derSequence(derOid(extension.oid), ...critical, derOctetString(extension.value));
}

/** O, OU, CN, each its own RDN, as UTF8String ("_" is legal in an id but not in PrintableString). */
export function encodeName(organization: string, organizationalUnit: string, commonName: string): Uint8Array {
  const rdn = (oid: string, value: string) => derSet(derSequence(derOid(oid), derUtf8String(value)));
  return derSequence(
    rdn(oids.organization, organization),
    rdn(oids.organizationalUnit, organizationalUnit),
    rdn(oids.commonName, commonName),
  );
}

export function basicConstraints(isCa: boolean): ExtensionSpec {
  // cA defaults to FALSE, and DER omits defaults: an end entity's value is an empty SEQUENCE.
  return { oid: oids.basicConstraints, critical: true, value: isCa ? derSequence(derTrue) : derSequence() };
}

export const keyUsageBits = { digitalSignature: 0, keyCertSign: 5, cRLSign: 6 } as const;

/** A named-bit BIT STRING, trailing zero bits dropped as DER requires. */
export function keyUsage(bits: readonly number[]): ExtensionSpec {
  const highest = Math.max(...bits);
  const bytes = new Uint8Array(Math.floor(highest / 8) + 1);
  for (const bit of bits) bytes[Math.floor(bit / 8)]! |= 0x80 >> (bit % 8);
  const unused = 7 - (highest % 8);
  return { oid: oids.keyUsage, critical: true, value: derBitString(bytes, unused) };
}

export function extendedKeyUsage(purposes: readonly string[]): ExtensionSpec {
  return { oid: oids.extKeyUsage, critical: false, value: derSequence(...purposes.map(derOid)) };
}

export function subjectKeyIdentifier(keyId: Uint8Array): ExtensionSpec {
  return { oid: oids.subjectKeyIdentifier, critical: false, value: derOctetString(keyId) };
}

export function authorityKeyIdentifier(keyId: Uint8Array): ExtensionSpec {
  return { oid: oids.authorityKeyIdentifier, critical: false, value: derSequence(tlv(0x80, keyId)) };
}

export function subjectAltName(dnsNames: readonly string[], ipAddresses: readonly string[]): ExtensionSpec {
  const names = [
    ...dnsNames.map((name) => tlv(0x82, new TextEncoder().encode(name))),
    ...ipAddresses.map((address) => tlv(0x87, ipBytes(address))),
  ];
  return { oid: oids.subjectAltName, critical: false, value: derSequence(...names) };
}

/** RFC 5280 §4.2.1.2 method 1: SHA-1 of the subjectPublicKey bits. */
export function keyIdentifier(spki: Uint8Array): Uint8Array {
  const [, bits] = readChildren(spki, readElement(spki, 0));
  const content = contentOf(spki, expectTag(bits, derTag.bitString, "subjectPublicKey"));
  return new Uint8Array(createHash("sha1").update(content.subarray(1)).digest());
}

export function ipBytes(address: string): Uint8Array {
  const family = isIP(address);
  if (family === 4) return Uint8Array.from(address.split(".").map(Number));
  if (family === 6) return ipv6Bytes(address);
  throw new Error("not an IP address");
}

function ipv6Bytes(address: string): Uint8Array {
  const [head = "", tail] = address.split("::");
  const groups = (part: string): number[] => {
    if (part === "") return [];
    return part.split(":").flatMap((group) => {
      if (!group.includes(".")) return [Number.parseInt(group, 16)];
      const v4 = ipBytes(group);
      return [(v4[0]! << 8) | v4[1]!, (v4[2]! << 8) | v4[3]!];
    });
  };
  const front = groups(head);
  const back = tail === undefined ? [] : groups(tail);
  const all = [...front, ...new Array<number>(8 - front.length - back.length).fill(0), ...back];
  return concatBytes(all.map((group) => Uint8Array.of(group >> 8, group & 0xff)));
}
