/**
 * Transactions waiting for a block: verified once on entry, kept in arrival order, de-duplicated by
 * id, and bounded three ways (count, bytes, per sender) so no client can crowd out the others.
 */

import { toHex } from "../core/encoding.ts";
import { CodedError } from "../core/errors.ts";
import type { Tx } from "../core/tx.ts";

export interface MempoolOptions {
  readonly txsMax: number;
  readonly bytesMax: number;
  readonly txsPerSenderMax: number;
}

export const defaultMempoolOptions: MempoolOptions = {
  txsMax: 100_000,
  bytesMax: 128 * 1024 * 1024,
  txsPerSenderMax: 20_000,
};

interface Entry {
  readonly tx: Tx;
  readonly sender: string;
}

export class Mempool {
  private readonly entries = new Map<string, Entry>();
  private readonly perSender = new Map<string, number>();
  private bytes = 0;

  constructor(private readonly options: MempoolOptions = defaultMempoolOptions) {}

  get size(): number {
    return this.entries.size;
  }

  get sizeBytes(): number {
    return this.bytes;
  }

  has(id: string): boolean {
    return this.entries.has(id);
  }

  /** Refuses, with a stable code, rather than dropping something already accepted. */
  checkRoom(tx: Tx): void {
    this.checkRoomFor(tx, toHex(tx.body.sender));
  }

  add(tx: Tx): void {
    const sender = toHex(tx.body.sender);
    this.checkRoomFor(tx, sender);
    this.entries.set(tx.id, { tx, sender });
    this.perSender.set(sender, (this.perSender.get(sender) ?? 0) + 1);
    this.bytes += tx.bytes.length;
  }

  private checkRoomFor(tx: Tx, sender: string): void {
    if (this.entries.has(tx.id))
      throw new CodedError("TX_DUPLICATE", `transaction ${tx.id} is already pending`);
    if (this.entries.size >= this.options.txsMax)
      throw new CodedError("MEMPOOL_FULL", "too many pending transactions");
    if (this.bytes + tx.bytes.length > this.options.bytesMax) {
      throw new CodedError("MEMPOOL_FULL", "pending transactions exceed the byte limit");
    }
    if ((this.perSender.get(sender) ?? 0) >= this.options.txsPerSenderMax) {
      throw new CodedError("RATE_LIMITED", "too many pending transactions from this sender");
    }
  }

  /** The oldest transactions, up to both limits, without removing them. */
  peek(txsMax: number, bytesMax: number): Tx[] {
    const out: Tx[] = [];
    let bytes = 0;
    for (const { tx } of this.entries.values()) {
      if (out.length >= txsMax || bytes + tx.bytes.length > bytesMax) break;
      out.push(tx);
      bytes += tx.bytes.length;
    }
    return out;
  }

  remove(id: string): void {
    const entry = this.entries.get(id);
    if (entry === undefined) return;
    this.entries.delete(id);
    this.bytes -= entry.tx.bytes.length;
    const left = (this.perSender.get(entry.sender) ?? 1) - 1;
    if (left === 0) this.perSender.delete(entry.sender);
    else this.perSender.set(entry.sender, left);
  }
}
