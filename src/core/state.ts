/**
 * World state as seen by execution: a key-value map (UTF-8 keys, byte values) read through a
 * synchronous port, with overlays that collect a block's and a transaction's writes so a failed
 * transaction is rolled back by dropping its overlay.
 */
import { utf8 } from "./encoding.ts";
import { assert } from "./errors.ts";
import type { SmtChange } from "./smt.ts";

export interface StateReader {
  get(key: string): Uint8Array | undefined;
}

export const stateKeyLengthMax = 512;
export const stateValueBytesMax = 1024 * 1024;

/** Writes laid over a reader; `null` marks a deletion. Iteration order is insertion order. */
export class StateOverlay implements StateReader {
  readonly writes = new Map<string, Uint8Array | null>();

  constructor(private readonly base: StateReader) {}

  get(key: string): Uint8Array | undefined {
    const own = this.writes.get(key);
    if (own === null) return undefined;
    return own ?? this.base.get(key);
  }

  set(key: string, value: Uint8Array): void {
    assert(key.length > 0 && key.length <= stateKeyLengthMax, `state key length ${key.length}`);
    assert(value.length <= stateValueBytesMax, `state value of ${value.length} bytes`);
    this.writes.set(key, value);
  }

  delete(key: string): void {
    this.writes.set(key, null);
  }

  /** Moves this overlay's writes into `target` (a transaction that succeeded joins its block). */
  mergeInto(target: StateOverlay): void {
    for (const [key, value] of this.writes) target.writes.set(key, value);
  }
}

/** A state held wholly in memory (genesis, `verify`, tests). */
export class MemoryState implements StateReader {
  readonly map = new Map<string, Uint8Array>();

  get(key: string): Uint8Array | undefined {
    return this.map.get(key);
  }

  apply(writes: ReadonlyMap<string, Uint8Array | null>): void {
    for (const [key, value] of writes) {
      if (value === null) this.map.delete(key);
      else this.map.set(key, value);
    }
  }
}

/** State writes (null deletes) as the state tree's changes: each key as its UTF-8 bytes. */
export function stateTreeChanges(writes: ReadonlyMap<string, Uint8Array | null>): SmtChange[] {
  return [...writes].map(([key, value]) => ({ key: utf8(key), value }));
}
