/**
 * PEM armour (RFC 7468) for one labelled block. Strict on purpose: exactly one block with the label
 * we expect, so a file holding a certificate plus something else is refused instead of half-read.
 */

/** Longest PEM text we accept; a P-256 certificate or CSR is under 2 KiB. */
export const pemCharsMax = 64 * 1024;

export function pemToDer(pem: string, label: string): Uint8Array<ArrayBuffer> | null {
  if (pem.length > pemCharsMax) return null;
  const begin = `-----BEGIN ${label}-----`;
  const end = `-----END ${label}-----`;
  const first = pem.indexOf(begin);
  const last = pem.indexOf(end);
  if (first < 0 || last < first) return null;
  if (pem.indexOf(begin, first + 1) >= 0 || pem.indexOf("-----BEGIN", last) >= 0) return null;
  const body = pem.slice(first + begin.length, last).replace(/\s+/g, "");
  if (!/^[A-Za-z0-9+/]+={0,2}$/.test(body)) return null;
  return new Uint8Array(Buffer.from(body, "base64"));
}

export function derToPem(der: Uint8Array, label: string): string {
  const base64 = Buffer.from(der).toString("base64");
  const lines = base64.match(/.{1,64}/g) ?? [];
  return `-----BEGIN ${label}-----\n${lines.join("\n")}\n-----END ${label}-----\n`;
}
