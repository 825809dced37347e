/**
 * A read cache over the committed world state. Only the ledger writes the store, and it tells the
 * cache every write of every block, so the cache never disagrees with the store. Values are handed
 * out as the same arrays until they change, which lets decoders memoise on them.
 */
import type { StateReader } from "../core/state.ts";

export const stateCacheEntriesMax = 200_000;

const absent = new Uint8Array(0);

export class CachedState implements StateReader {
  private readonly entries = new Map<string, Uint8Array>();

  constructor(
    private readonly load: (key: string) => Uint8Array | undefined,
    private readonly entriesMax: number = stateCacheEntriesMax,
  ) {}

  get(key: string): Uint8Array | undefined {
    let value = this.entries.get(key);
    if (value === undefined) {
      value = this.load(key) ?? absent;
      this.remember(key, value);
    }
    return value === absent ? undefined : value;
  }

  /** Called after a block's writes are durable. */
  applyCommitted(writes: ReadonlyMap<string, Uint8Array | null>): void {
    for (const [key, value] of writes) {
      if (this.entries.has(key)) this.entries.set(key, value ?? absent);
    }
  }

  private remember(key: string, value: Uint8Array): void {
    if (this.entries.size >= this.entriesMax) this.entries.delete(this.entries.keys().next().value as string);
    this.entries.set(key, value);
  }
}
