/**
 * Batch license proofs as canonical CBOR (`POST /v1/licenses/proofs` with `Accept: application/cbor`,
 * docs/licenses.md "Verifying"). The answer carries the same evidence as the JSON one — both records
 * of every license with their state proofs, one header, its commit and the validator set — as bytes
 * instead of base64 and hex, so a verifier checks it exactly as it checks the JSON form.
 *
 * Why it is cheap: a proof depends only on the state root, so while no block commits, each license's
 * item (records and proofs, already encoded) and the block's anchor (header, commit, validators,
 * already encoded) are kept, and an answer is the items copied one after another behind a fixed
 * prefix. Only the caller's right to query each license is judged per request.
 */
import { validatorsToCanonical } from "../core/block.ts";
import { type Canonical, encodeCanonical } from "../core/encoding.ts";
import { assert, type CodedError } from "../core/errors.ts";
import { licenseKeys } from "../core/license/records.ts";
import { encodeProof } from "../core/smt-proof.ts";
import type { LicenseReader } from "../license/reader.ts";
import type { ChainNode } from "../node/node.ts";

export const cborMediaType = "application/cbor";

/** What a reference resolved to at the cached height, and its item once encoded. */
export interface ProvenLicense {
  readonly id: string;
  readonly licenseKey: string;
  readonly typeCode: string;
  readonly issuerDept: string;
  /** The canonical CBOR item {id, licenseKey, version, versionProof, head, headProof}, once asked for. */
  item: Uint8Array | null;
}

/**
 * Licenses proven at the current height, by the reference they were asked for (identifier or
 * license key), dropped when a block commits. At most `entriesMax` (oldest first out).
 */
export class LicenseProofCache {
  private height = -1;
  private readonly licenses = new Map<string, ProvenLicense>();
  private anchor: Uint8Array | null = null;

  constructor(
    private readonly node: ChainNode,
    private readonly reader: LicenseReader,
    private readonly entriesMax: number,
  ) {
    assert(entriesMax > 0, "the license proof cache needs room for one license");
  }

  /** Resolves `ref` at the current height; throws LICENSE_NOT_FOUND and the like. */
  license(ref: string): ProvenLicense {
    this.sameHeight();
    let proven = this.licenses.get(ref);
    if (proven === undefined) {
      const { head, version } = this.reader.resolve(ref);
      proven = {
        id: version.id,
        licenseKey: head.licenseKey,
        typeCode: head.typeCode,
        issuerDept: head.issuerDept,
        item: null,
      };
      if (this.licenses.size >= this.entriesMax)
        this.licenses.delete(this.licenses.keys().next().value as string);
      this.licenses.set(ref, proven);
    }
    return proven;
  }

  /**
   * The answer's fields after "items", encoded: {commit, header, height, validators} without its
   * map head. Kept for the height once the commit is known (it can arrive after the block).
   */
  anchorRest(): Uint8Array {
    this.sameHeight();
    if (this.anchor !== null) return this.anchor;
    const ledger = this.node.ledger;
    const block = ledger.latest();
    const commit = ledger.store.commitBytes(block.header.height);
    const encoded = encodeCanonical({
      commit: commit === undefined ? null : commit,
      header: block.headerBytes,
      height: block.header.height,
      // The set that signed this header's commit (the next height's may differ after a change).
      validators: validatorsToCanonical(
        block.header.height === 0 ? ledger.validators() : ledger.votersAt(block.header.height),
      ),
    });
    // A map of four entries starts with the one byte 0xa4; the answer writes its own head of five.
    assert(encoded[0] === 0xa4, "anchor map head");
    const rest = encoded.subarray(1);
    if (commit !== undefined) this.anchor = rest;
    return rest;
  }

  private sameHeight(): void {
    const height = this.node.ledger.height();
    if (height === this.height) return;
    this.licenses.clear();
    this.anchor = null;
    this.height = height;
  }

  /** The license's item, proven and encoded on first use at this height (same synchronous step). */
  item(proven: ProvenLicense): Uint8Array {
    proven.item ??= this.prove(proven);
    return proven.item;
  }

  private prove(proven: ProvenLicense): Uint8Array {
    const ledger = this.node.ledger;
    const versionKey = licenseKeys.version(proven.id);
    const headKey = licenseKeys.head(proven.licenseKey);
    const versionValue = ledger.state.get(versionKey);
    const headValue = ledger.state.get(headKey);
    assert(versionValue !== undefined && headValue !== undefined, "resolved license records are in state");
    return encodeCanonical({
      id: proven.id,
      licenseKey: proven.licenseKey,
      version: versionValue,
      versionProof: encodeProof(ledger.proof(versionKey)),
      head: headValue,
      headProof: encodeProof(ledger.proof(headKey)),
    });
  }
}

/** An item for a reference the node refused (unknown, malformed, not the caller's to query). */
export function errorItem(ref: string, error: CodedError): Uint8Array {
  return encodeCanonical({ id: ref, error: error.toJSON() as { [key: string]: Canonical } });
}

/** 0xa5 (map of five) then the text "items": the answer's keys sort "items" first (shortest). */
const answerPrefix = new Uint8Array([0xa5, 0x65, ...new TextEncoder().encode("items")]);

/** Canonical CBOR head of an array of `count` items (major type 4, shortest length form). */
export function cborArrayHead(count: number): Uint8Array {
  assert(Number.isSafeInteger(count) && count >= 0 && count <= 0xffff, "array length in range");
  if (count < 24) return new Uint8Array([0x80 + count]);
  if (count < 0x100) return new Uint8Array([0x98, count]);
  return new Uint8Array([0x99, count >> 8, count & 0xff]);
}

/**
 * The whole answer, canonical CBOR: {items: [...], commit, header, height, validators}. Items are
 * already canonical, so copying them behind the array head gives the canonical array.
 */
export function proofsAnswer(items: readonly Uint8Array[], anchorRest: Uint8Array): Buffer {
  const arrayHead = cborArrayHead(items.length);
  let length = answerPrefix.length + arrayHead.length + anchorRest.length;
  for (const item of items) length += item.length;
  const out = Buffer.allocUnsafe(length);
  let at = 0;
  for (const part of [answerPrefix, arrayHead, ...items, anchorRest]) {
    out.set(part, at);
    at += part.length;
  }
  assert(at === length, "answer length");
  return out;
}

export function wantsCbor(accept: string | undefined): boolean {
  return accept?.includes(cborMediaType) === true;
}
