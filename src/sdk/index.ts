/**
 * The SDK's browser-safe entry: no node:* imports anywhere below it (checked by
 * test/unit/sdk-bundle.test.ts, which bundles it for the browser). Node users may also import
 * ./node.ts for PEM files and a fetch that trusts the consortium root.
 */

export { verifyMerkleProof } from "../core/merkle.ts";
export { proofFromJson, verifyProof } from "../core/smt-proof.ts";
export { encodeLicenseQr, parseLicenseQr } from "../license/qr.ts";
export { buildLicenseCredential, readStatusBit } from "../license/vc.ts";
export {
  type BlockJson,
  CitychainClient,
  type ClientOptions,
  type FetchLike,
  type TxStatusJson,
} from "./client.ts";
export { CitychainError } from "./errors.ts";
export {
  type AmendInput,
  amendLicense,
  decodeLicenseProofsCbor,
  ensureDepartmentKey,
  forgetSelf,
  grantConsent,
  type IssueInput,
  type IssueResult,
  issueLicense,
  type LicenseProofJson,
  type LicenseProofOutcome,
  type LicenseProofsCbor,
  type LicenseProofsJson,
  licenseProofsMax,
  licenseType,
  localSubjectKeys,
  myLicenses,
  openLicense,
  type SubjectKeyHolder,
  setLicenseStatus,
  type VerifiedLicense,
  verifyLicense,
  verifyLicenseProof,
  verifyLicenseProofs,
  verifyLicenseProofsCbor,
  verifyLicenses,
  whoReadMyData,
  withdrawConsent,
} from "./licenses.ts";
export {
  contentHash,
  generateEncryptionKeyPair,
  generateSigningKeyPair,
  openPersonal,
  pseudonymOf,
  sealPersonal,
} from "./sealing.ts";
export { WebCryptoSigner } from "./signer.ts";
export { type BuildTxInput, type BuiltTx, buildTx, type TxIdentity } from "./tx-builder.ts";
export { VaultClient } from "./vault-client.ts";
export { vaultSubjectKeys } from "./vault-holder.ts";
export {
  followValidatorChanges,
  type StateResponse,
  type TrustedValidatorSet,
  type ValidatorChangeJson,
  type ValidatorJson,
  type ValidatorsJson,
  VerificationError,
  validatorsFromJson,
  verifyCommittedHeader,
  verifyCommittedHeaderBytes,
  verifyStateResponse,
} from "./verify.ts";
