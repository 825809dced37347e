/**
 * A holder whose keys the key vault keeps (custody "vault"), as a SubjectKeyHolder: the SDK's
 * holder functions (grantConsent, withdrawConsent, forgetSelf, myLicenses, whoReadMyData) then work
 * the same for vault custody as for keys on the holder's own device. Browser-safe.
 */
import { decodeSubjectStatement } from "../core/license/statement.ts";
import type { SubjectKeyHolder } from "./licenses.ts";
import type { VaultClient } from "./vault-client.ts";

export function vaultSubjectKeys(vault: VaultClient, pseudonym: string): SubjectKeyHolder {
  return {
    pseudonym,
    rewrap: (wrappedKey, licenseId, dept, deptPublicKey) =>
      vault.rewrap(pseudonym, { licenseId, wrappedKey, dept, deptPublicKey }),
    async sign(encodedStatement) {
      // The vault signs a forget statement only as part of forgetting (sign, then destroy the
      // holder's keys), so forgetSelf through the vault is the holder's whole forget.
      if (decodeSubjectStatement(encodedStatement).action === "forget")
        return (await vault.forget(pseudonym, encodedStatement)).signature;
      return vault.signStatement(pseudonym, encodedStatement);
    },
    signRead: (message) => vault.signRead(pseudonym, message),
  };
}
