/**
 * The key vault (docs/licenses.md, "Key vault"): its folder, and opening what the service needs.
 *
 * Folder layout (mode 0700):
 *   keys.db              KeyStore: the holders' private keys, sealed under the vault passphrase
 *   pseudonym-key.json   the consortium pseudonym key, a secret file under the same passphrase
 *   vault.db             audit log and signed forget statements (nothing secret)
 */
import { randomBytes } from "node:crypto";
import { existsSync, mkdirSync } from "node:fs";
import { join } from "node:path";
import { KeyStore } from "../license/key-store.ts";
import { readSecretFile, type ScryptParams, writeSecretFile } from "../license/secret-file.ts";
import { pseudonymKeyBytes } from "../sdk/sealing.ts";
import { VaultAudit } from "./service.ts";

export {
  type AuditEntry,
  buildVaultService,
  defaultAuditors,
  defaultCallers,
  type RoleGrant,
  VaultAudit,
  type VaultServiceLimits,
  type VaultServiceOptions,
  vaultServiceDefaults,
  vaultSignActionsDefault,
  wrappedKeyFromJson,
  wrappedKeyToJson,
} from "./service.ts";

export const vaultFiles = {
  keyStore: "keys.db",
  pseudonymKey: "pseudonym-key.json",
  audit: "vault.db",
} as const;

/** The purpose bound into the pseudonym key's secret file (and checked when it is read). */
export const pseudonymKeyPurpose = "pseudonym-key";

export interface VaultInitResult {
  readonly dir: string;
  readonly keyStorePath: string;
  readonly keyStoreCreated: boolean;
  readonly pseudonymKeyPath: string;
  /** False when the folder already had a pseudonym key (e.g. the consortium's, copied in). */
  readonly pseudonymKeyCreated: boolean;
  readonly auditPath: string;
}

/** Creates the vault folder, its key store and, if absent, a new consortium pseudonym key. */
export function initVault(
  dir: string,
  passphrase: string,
  options: { scrypt?: ScryptParams } = {},
): VaultInitResult {
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  const keyStorePath = join(dir, vaultFiles.keyStore);
  const pseudonymKeyPath = join(dir, vaultFiles.pseudonymKey);
  const auditPath = join(dir, vaultFiles.audit);
  const keyStoreCreated = !existsSync(keyStorePath);
  // Opening checks the passphrase against an existing store, so init never mixes two passphrases.
  KeyStore.open({
    path: keyStorePath,
    passphrase,
    create: true,
    ...(options.scrypt ? { scrypt: options.scrypt } : {}),
  }).close();
  const pseudonymKeyCreated = !existsSync(pseudonymKeyPath);
  if (pseudonymKeyCreated) {
    const key = new Uint8Array(randomBytes(pseudonymKeyBytes));
    writeSecretFile(pseudonymKeyPath, key, passphrase, {
      purpose: pseudonymKeyPurpose,
      ...(options.scrypt ? { scrypt: options.scrypt } : {}),
    });
    key.fill(0);
  } else {
    readSecretFile(pseudonymKeyPath, passphrase, pseudonymKeyPurpose).fill(0);
  }
  VaultAudit.open(auditPath).close();
  return { dir, keyStorePath, keyStoreCreated, pseudonymKeyPath, pseudonymKeyCreated, auditPath };
}

export interface OpenedVault {
  readonly keyStore: KeyStore;
  readonly pseudonymKey: Uint8Array;
  readonly audit: VaultAudit;
  close(): void;
}

/** Opens an initialised vault folder; KEY_LOCKED for a wrong passphrase, NOT_FOUND for a missing part. */
export function openVault(dir: string, passphrase: string): OpenedVault {
  const pseudonymKey = readSecretFile(join(dir, vaultFiles.pseudonymKey), passphrase, pseudonymKeyPurpose);
  const keyStore = KeyStore.open({ path: join(dir, vaultFiles.keyStore), passphrase });
  const audit = VaultAudit.open(join(dir, vaultFiles.audit));
  return {
    keyStore,
    pseudonymKey,
    audit,
    close() {
      keyStore.close();
      audit.close();
      pseudonymKey.fill(0);
    },
  };
}
