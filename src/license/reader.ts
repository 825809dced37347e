/**
 * Typed reads of the license registry's records from a node's current state, with the stable errors
 * a caller sees when something is missing. Shared by the API routes and the key node.
 */
import type { Canonical } from "../core/encoding.ts";
import { CodedError } from "../core/errors.ts";
import { licenseIdRoot, parseLicenseId } from "../core/license/identifier.ts";
import {
  type LicenseEffectiveStatus,
  type LicenseHead,
  type LicensePolicy,
  type LicenseType,
  type LicenseVersion,
  licenseKeys,
  type SubjectRecord,
} from "../core/license/records.ts";
import type { StateReader } from "../core/state.ts";
import { readRecord } from "../core/system-state.ts";

export interface LicenseReader {
  type(code: string): LicenseType;
  policy(code: string): LicensePolicy;
  head(licenseKey: string): LicenseHead;
  version(id: string): LicenseVersion;
  /** Resolves a full identifier or a license key to the version and its head. */
  resolve(ref: string): { head: LicenseHead; version: LicenseVersion };
  subject(pseudonym: string): SubjectRecord;
}

/**
 * `read` decides how records are decoded: readRecord (the default) remembers them for the next read
 * of the same value; readRecordOnce does not, for sweeps over many records read once.
 */
export function licenseReader(
  state: StateReader,
  read: (state: StateReader, key: string) => Canonical | undefined = readRecord,
): LicenseReader {
  const record = <T>(key: string) => read(state, key) as T | undefined;
  const reader: LicenseReader = {
    type(code) {
      const type = record<LicenseType>(licenseKeys.type(code));
      if (type === undefined) throw new CodedError("LICENSE_TYPE_UNKNOWN", `no license type ${code}`, "code");
      return type;
    },
    policy(code) {
      const policy = record<LicensePolicy>(licenseKeys.policy(code));
      if (policy === undefined) throw new CodedError("STORAGE_CORRUPT", `license type ${code} has no policy`);
      return policy;
    },
    head(licenseKey) {
      const head = record<LicenseHead>(licenseKeys.head(licenseKey));
      if (head === undefined) throw new CodedError("LICENSE_NOT_FOUND", `no license ${licenseKey}`, "id");
      return head;
    },
    version(id) {
      const version = record<LicenseVersion>(licenseKeys.version(id));
      if (version === undefined) throw new CodedError("LICENSE_NOT_FOUND", `no license ${id}`, "id");
      return version;
    },
    resolve(ref) {
      if (ref.startsWith(`${licenseIdRoot}.`)) {
        const parts = parseLicenseId(ref);
        const version = reader.version(ref);
        return { head: reader.head(`${parts.typeCode}.${parts.issuerCode}.${parts.serial}`), version };
      }
      if (!licenseKeyPattern.test(ref))
        throw new CodedError("LICENSE_ID_MALFORMED", "not a license identifier or license key", "id");
      const head = reader.head(ref);
      return { head, version: reader.version(head.currentId) };
    },
    subject(pseudonym) {
      const subject = record<SubjectRecord>(licenseKeys.subject(pseudonym));
      if (subject === undefined)
        throw new CodedError("SUBJECT_UNKNOWN", `no data subject ${pseudonym}`, "pseudonym");
      return subject;
    },
  };
  return reader;
}

const licenseKeyPattern = /^[0-9A-Z]{21}\.[0-9A-Z]{18}\.[0-9A-Z]{1,32}$/;

export function effectiveStatus(
  head: Pick<LicenseHead, "status">,
  version: Pick<LicenseVersion, "validUntilMs">,
  nowMs: number,
): LicenseEffectiveStatus {
  if (head.status !== "valid") return head.status;
  return version.validUntilMs !== null && version.validUntilMs < nowMs ? "expired" : "valid";
}
