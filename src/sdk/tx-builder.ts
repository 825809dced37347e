/** Builds and signs transactions on the client; portable (browser and Node). */
import type { Canonical } from "../core/encoding.ts";
import { bytesEqual, fromHex } from "../core/encoding.ts";
import { sha256 } from "../core/hash.ts";
import type { Signer } from "../core/signature.ts";
import {
  decodeTx,
  encodeTx,
  encodeTxBody,
  type SignerRef,
  signingBytes,
  type TxSignature,
  txIdOf,
  txLimits,
} from "../core/tx.ts";

export interface TxIdentity {
  readonly signer: Signer;
  /** Lower-case hex SHA-256 of the certificate DER. */
  readonly certId: string;
  readonly certDer: Uint8Array;
}

export interface BuildTxInput {
  readonly chainId: string;
  readonly type: string;
  readonly payload: Canonical;
  /** First identity is the sender; the others co-sign (multi-department approval). */
  readonly signers: readonly TxIdentity[];
  readonly nowMs: number;
  /** Default one hour. */
  readonly ttlMs?: number;
  /** Default 16 random bytes. */
  readonly nonce?: Uint8Array;
  /** Refer to certificates by id (smaller) once the ledger knows them. Default false: send them whole. */
  readonly certById?: boolean;
}

export interface BuiltTx {
  readonly id: string;
  readonly bytes: Uint8Array;
}

export async function buildTx(input: BuildTxInput): Promise<BuiltTx> {
  if (input.signers.length === 0) throw new TypeError("a transaction needs at least one signer");
  const nonce = input.nonce ?? globalThis.crypto.getRandomValues(new Uint8Array(16));
  const bodyBytes = encodeTxBody({
    chainId: input.chainId,
    type: input.type,
    payload: input.payload,
    nonce,
    expiresAtMs: input.nowMs + (input.ttlMs ?? 3_600_000),
    sender: fromHex(input.signers[0]!.certId, "certId"),
  });
  const message = signingBytes(bodyBytes);
  const signatures: TxSignature[] = await Promise.all(
    input.signers.map(async (s) => {
      const signer: SignerRef = input.certById
        ? { kind: "certId", certId: fromHex(s.certId, "certId") }
        : { kind: "cert", der: s.certDer };
      return { signer, signature: await s.signer.sign(message) };
    }),
  );
  return { id: txIdOf(bodyBytes), bytes: encodeTx(bodyBytes, signatures) };
}

/**
 * Adds `identity`'s signature to a transaction another party built (multi-department approval):
 * the body, so the id, stays the same; each co-signer signs the same bytes. Refuses a second
 * signature by the same certificate.
 */
export async function cosignTx(bytes: Uint8Array, identity: TxIdentity): Promise<BuiltTx> {
  const tx = decodeTx(bytes);
  const certId = fromHex(identity.certId, "certId");
  for (const s of tx.signatures) {
    const signedBy = s.signer.kind === "certId" ? s.signer.certId : sha256(s.signer.der);
    if (bytesEqual(signedBy, certId))
      throw new TypeError("this certificate has signed the transaction already");
  }
  if (tx.signatures.length >= txLimits.signaturesMax)
    throw new TypeError(`a transaction carries at most ${txLimits.signaturesMax} signatures`);
  const signature = await identity.signer.sign(signingBytes(tx.bodyBytes));
  const signatures = [
    ...tx.signatures,
    { signer: { kind: "cert" as const, der: identity.certDer }, signature },
  ];
  return { id: tx.id, bytes: encodeTx(tx.bodyBytes, signatures) };
}
