/**
 * The node's hot paths made cheaper for throughput keep their meaning: native SHA-256 in the core
 * equals the JavaScript one the browser SDK uses, and the chain database belongs to one process and
 * carries no index nothing reads.
 */
import assert from "node:assert/strict";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { describe, it } from "node:test";
import { sha256 as nobleSha256 } from "@noble/hashes/sha2.js";
import { toHex } from "../../src/core/encoding.ts";
import { sha256 } from "../../src/core/hash.ts";
import { isCanonicalP256Signature } from "../../src/core/signature.ts";
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

  it("drops the unread index of transactions by height from a store made before, and still finds them by id", () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), "citychain-store-"));
    const indexes = (store: ChainStore) =>
      store.db
        .prepare<[], { name: string }>(
          "SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = 'txs'",
        )
        .all()
        .map((row) => row.name);
    try {
      const old = ChainStore.open(dir);
      old.db.exec("CREATE INDEX txs_by_height ON txs (height, idx)");
      old.commitBlock({
        height: 0,
        hash: new Uint8Array(32).fill(7),
        timeMs: 1,
        blockBytes: new Uint8Array([1, 2, 3]),
        txCount: 1,
        commitBytes: null,
        txs: [{ id: "ab".repeat(32), index: 0, code: "OK", message: "", data: new Uint8Array([9]) }],
        stateWrites: new Map(),
        treeWrites: new Map(),
        stateRoot: new Uint8Array(32),
      });
      assert.deepEqual(indexes(old), ["txs_by_height"]);
      old.close();
      const reopened = ChainStore.open(dir);
      assert.deepEqual(indexes(reopened), []);
      assert.equal(reopened.getTx("ab".repeat(32))?.height, 0);
      assert.equal(reopened.isCommitted("ab".repeat(32)), true);
      reopened.close();
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe("low-S signature form", () => {
  const order = 0xffffffff00000000ffffffffffffffffbce6faada7179e84f3b9cac2fc632551n;
  const half = order >> 1n;
  const scalar = (v: bigint) => Uint8Array.from(Buffer.from(v.toString(16).padStart(64, "0"), "hex"));
  const reference = (sig: Uint8Array) => {
    const r = BigInt(`0x${Buffer.from(sig.subarray(0, 32)).toString("hex")}`);
    const s = BigInt(`0x${Buffer.from(sig.subarray(32)).toString("hex")}`);
    return r > 0n && r < order && s > 0n && s <= half;
  };

  it("agrees with the BigInt rule at every boundary and on mutated random signatures", () => {
    const edges = [0n, 1n, 2n, half - 1n, half, half + 1n, order - 1n, order, order + 1n, 2n ** 256n - 1n];
    for (const r of edges) {
      for (const s of edges) {
        const sig = new Uint8Array(64);
        sig.set(scalar(r), 0);
        sig.set(scalar(s), 32);
        assert.equal(isCanonicalP256Signature(sig), reference(sig), `r=${r} s=${s}`);
      }
    }
    let seed = 12345;
    const next = () => {
      seed = (seed * 1103515245 + 12345) >>> 0;
      return seed >>> 16;
    };
    for (let n = 0; n < 2000; n++) {
      const sig = Uint8Array.from({ length: 64 }, () => next() & 0xff);
      // Bias towards the bounds: copy a prefix of the order or half order into r or s.
      const bound = scalar(n % 2 === 0 ? order : half);
      const at = n % 3 === 0 ? 0 : 32;
      sig.set(bound.subarray(0, next() % 33), at);
      assert.equal(isCanonicalP256Signature(sig), reference(sig));
    }
    assert.equal(isCanonicalP256Signature(new Uint8Array(63)), false);
  });
});
