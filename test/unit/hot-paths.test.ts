/**
 * The node's hot paths made cheaper for throughput keep their meaning: native SHA-256 in the core
 * equals the JavaScript one the browser SDK uses, and the chain database belongs to one process.
 */
import assert from "node:assert/strict";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { describe, it } from "node:test";
import { sha256 as nobleSha256 } from "@noble/hashes/sha2.js";
import { toHex } from "../../src/core/encoding.ts";
import { sha256 } from "../../src/core/hash.ts";
import { ChainStore } from "../../src/storage/chain-store.ts";

describe("core SHA-256", () => {
  it("equals @noble/hashes for one part and for several, at every length around block sizes", () => {
    for (const length of [0, 1, 31, 32, 55, 56, 63, 64, 65, 200, 1000, 4096]) {
      const data = Uint8Array.from({ length }, (_, i) => (i * 131 + length) & 0xff);
      assert.equal(toHex(sha256(data)), toHex(nobleSha256(data)), `length ${length}`);
      const cut = length >> 1;
      assert.equal(toHex(sha256(data.subarray(0, cut), data.subarray(cut))), toHex(nobleSha256(data)));
    }
  });

  it("returns a plain 32-byte Uint8Array", () => {
    const digest = sha256(new Uint8Array([1, 2, 3]));
    assert.equal(digest.length, 32);
    assert.equal(Object.getPrototypeOf(digest), Uint8Array.prototype);
  });
});

describe("chain store", () => {
  it("is held by one process (connection) at a time while open, and free again once closed", () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), "citychain-store-"));
    try {
      const first = ChainStore.open(dir);
      first.putMeta("probe", new Uint8Array([1]));
      assert.throws(() => {
        const second = ChainStore.open(dir);
        second.close();
      }, /in use by a running node/);
      first.close();
      const again = ChainStore.open(dir);
      assert.deepEqual([...again.getMeta("probe")!], [1]);
      again.close();
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });
});
