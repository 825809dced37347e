/**
 * Deterministic execution of a block's transactions ("order, then execute").
 *
 * Every validator runs this over the same ordered transactions and the same prior state and must get
 * the same writes and results: it reads no clock (block time comes in the context), no randomness
 * and nothing outside the state and the ports.
 *
 * Two kinds of failure:
 *  - rejected: the transaction is not authentic here (bad signature, unknown or untrusted
 *    certificate, revoked or expired signer, unknown department, wrong chain, expired, replayed).
 *    It has no effect and is not part of the block; a proposer leaves it out, and a block from a
 *    peer that contains one is invalid. Only valid identities ever put anything on the ledger.
 *  - failed: authentic, but the handler refused it (not allowed, bad payload, conflict). It is
 *    recorded with its error code and leaves no writes; its id is spent and can never be replayed.
 */
import { type Canonical, encodeCanonical, encodeCanonicalTransient, fromHex } from "./encoding.ts";
import { CodedError, type ErrorCode, isErrorCode } from "./errors.ts";
import { findCertificate, type Identity, resolveIdentity, type X509Port } from "./identity.ts";
import { merkleRootOf } from "./merkle.ts";
import { StateOverlay, type StateReader } from "./state.ts";
import { type ChainParams, stateKeys } from "./system-state.ts";
import type { Tx } from "./tx.ts";

export interface BlockContext {
  readonly chainId: string;
  readonly height: number;
  readonly timeMs: number;
  readonly params: ChainParams;
}

export interface ExecutionPorts {
  readonly x509: X509Port;
  /** True when a transaction with this id committed in an earlier block. */
  isCommitted(txId: string): boolean;
  /** Checks signature `index` of `tx` with the given key (verdicts are usually cached from admission). */
  checkSignature(tx: Tx, index: number, publicKeySpki: Uint8Array): boolean;
  /** Checks a signature over other bytes (a data subject's statement) under the one P-256 rule. */
  verify(publicKeySpki: Uint8Array, message: Uint8Array, signature: Uint8Array): boolean;
}

export interface TxResult {
  readonly txId: string;
  readonly code: "OK" | ErrorCode;
  /** Human-readable; not hashed, so wording may change between versions without a fork. */
  readonly message: string;
  readonly data: Canonical;
}

export interface TxCall {
  readonly block: BlockContext;
  readonly tx: Tx;
  readonly signers: readonly Identity[];
  readonly sender: Identity;
  readonly state: StateOverlay;
  readonly payload: Canonical;
  readonly verify: ExecutionPorts["verify"];
  /** A certificate judged as of this block (trusted root, validity, revocations, department). */
  readonly identityOf: (der: Uint8Array) => Identity;
}

export type TxHandler = (call: TxCall) => Canonical;

export type HandlerRegistry = ReadonlyMap<string, TxHandler>;

export interface RejectedTx {
  readonly txId: string;
  readonly error: CodedError;
}

export interface BlockExecution {
  readonly writes: Map<string, Uint8Array | null>;
  /** One per included transaction, in order. */
  readonly results: TxResult[];
  /** Transactions that take no part in the block (see "rejected" above). */
  readonly rejected: RejectedTx[];
  /** The transactions that are part of the block, in order. */
  readonly included: Tx[];
}

class Rejection extends Error {
  constructor(readonly error: CodedError) {
    super(error.message);
  }
}

export function executeBlock(
  ports: ExecutionPorts,
  handlers: HandlerRegistry,
  base: StateReader,
  block: BlockContext,
  txs: readonly Tx[],
): BlockExecution {
  const blockState = new StateOverlay(base);
  const out: BlockExecution = { writes: blockState.writes, results: [], rejected: [], included: [] };
  const seenInBlock = new Set<string>();
  const identities: IdentityMemo = new Map();
  for (const tx of txs) {
    let signers: Identity[];
    try {
      signers = authenticate(ports, blockState, block, tx, seenInBlock, identities);
    } catch (error) {
      if (!(error instanceof Rejection)) throw error;
      out.rejected.push({ txId: tx.id, error: error.error });
      continue;
    }
    seenInBlock.add(tx.id);
    out.included.push(tx);
    const txState = new StateOverlay(blockState);
    try {
      const data = executeTx(ports, handlers, txState, block, tx, signers);
      if (writesSystemKeys(txState.writes)) identities.clear();
      txState.mergeInto(blockState);
      out.results.push({ txId: tx.id, code: "OK", message: "", data });
    } catch (error) {
      out.results.push(failure(tx.id, error));
    }
  }
  return out;
}

function failure(txId: string, error: unknown): TxResult {
  const fatal = ["INVARIANT_BROKEN", "STORAGE_CORRUPT", "INTERNAL"];
  if (error instanceof CodedError && isErrorCode(error.code) && !fatal.includes(error.code)) {
    return { txId, code: error.code, message: error.message, data: null };
  }
  // Anything else is a bug in a handler or a broken invariant: stop rather than diverge.
  throw error;
}

/**
 * Identities already resolved in this block, by the certificate bytes they came from. An identity's
 * validity is a function of the certificate, the block time (fixed within a block) and system
 * records under "sys/" (roots, revocations, departments, certificates); a transaction that writes
 * any of those clears the memo, so the next one is judged on the new records. Bounded by the
 * block's transaction count. Saves the roots, revocation and department reads for a sender's every
 * further transaction in the block.
 */
type IdentityMemo = Map<Uint8Array, Identity>;

const systemKeyPrefix = "sys/";

/** Whether writes touch the platform's own records (sys/: roots, departments, revocations, validators). */
export function writesSystemKeys(writes: ReadonlyMap<string, unknown>): boolean {
  for (const key of writes.keys()) if (key.startsWith(systemKeyPrefix)) return true;
  return false;
}

/** Throws Rejection when the transaction cannot be part of this block. */
function authenticate(
  ports: ExecutionPorts,
  state: StateReader,
  block: BlockContext,
  tx: Tx,
  seenInBlock: ReadonlySet<string>,
  identities: IdentityMemo,
): Identity[] {
  try {
    checkEnvelope(ports, block, tx, seenInBlock);
    return tx.signatures.map((s, i) => {
      const der = findCertificate(state, s.signer);
      let identity = identities.get(der);
      if (identity === undefined) {
        identity = resolveIdentity(ports.x509, state, der, block.timeMs);
        identities.set(der, identity);
      }
      if (!ports.checkSignature(tx, i, identity.publicKeySpki)) {
        throw new CodedError("SIGNATURE_INVALID", `signature ${i} does not verify`, `signatures[${i}]`);
      }
      return identity;
    });
  } catch (error) {
    if (
      error instanceof CodedError &&
      error.code !== "INVARIANT_BROKEN" &&
      error.code !== "STORAGE_CORRUPT"
    ) {
      throw new Rejection(error);
    }
    throw error;
  }
}

function executeTx(
  ports: ExecutionPorts,
  handlers: HandlerRegistry,
  state: StateOverlay,
  block: BlockContext,
  tx: Tx,
  signers: readonly Identity[],
): Canonical {
  const handler = handlers.get(tx.body.type);
  if (handler === undefined)
    throw new CodedError("TX_UNKNOWN_TYPE", `unknown transaction type ${tx.body.type}`);
  const data = handler({
    block,
    tx,
    signers,
    sender: signers[0]!,
    state,
    payload: tx.body.payload,
    verify: ports.verify,
    identityOf: (der) => resolveIdentity(ports.x509, state, der, block.timeMs),
  });
  rememberCertificates(state, tx, signers);
  return data;
}

function checkEnvelope(
  ports: ExecutionPorts,
  block: BlockContext,
  tx: Tx,
  seenInBlock: ReadonlySet<string>,
): void {
  if (tx.body.chainId !== block.chainId)
    throw new CodedError("TX_WRONG_CHAIN", `transaction is for ${tx.body.chainId}`);
  if (tx.bytes.length > block.params.txBytesMax)
    throw new CodedError("TX_TOO_LARGE", "transaction too large");
  if (tx.body.expiresAtMs < block.timeMs)
    throw new CodedError("TX_EXPIRED", "transaction expired before its block");
  if (tx.body.expiresAtMs > block.timeMs + block.params.txTtlMsMax) {
    throw new CodedError("TX_EXPIRY_TOO_FAR", `expiry more than ${block.params.txTtlMsMax} ms ahead`);
  }
  if (seenInBlock.has(tx.id) || ports.isCommitted(tx.id)) {
    throw new CodedError("TX_ALREADY_COMMITTED", `transaction ${tx.id} already committed`);
  }
}

/** A certificate used once in full may afterwards be referred to by its id (smaller transactions). */
function rememberCertificates(state: StateOverlay, tx: Tx, signers: readonly Identity[]): void {
  tx.signatures.forEach((s, i) => {
    if (s.signer.kind !== "cert") return;
    const key = stateKeys.cert(signers[i]!.certId);
    if (state.get(key) === undefined) state.set(key, s.signer.der);
  });
}

/** What a result's leaf in the block's results root encodes (its message is not hashed). */
function resultLeafValue(result: TxResult): Canonical {
  return [fromHex(result.txId), result.code, result.data];
}

export function resultLeaf(result: TxResult): Uint8Array {
  return encodeCanonical(resultLeafValue(result));
}

export function resultsRootOf(results: readonly TxResult[]): Uint8Array {
  // Each leaf is encoded into the encoder's scratch buffer and hashed from there.
  return merkleRootOf(results.length, (i) => encodeCanonicalTransient(resultLeafValue(results[i]!)));
}
