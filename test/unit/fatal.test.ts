/**
 * A node stops on an error nothing handled, after one fatal JSON log line saying what happened and
 * what to do (src/node/fatal.ts). The disk-full case runs for real: a chain store capped by SQLite's
 * max_page_count commits blocks in a child process until one fails; the child must exit 1 with a
 * STORAGE_FULL line, and the folder must open again at the last block that committed, its state
 * tree whole.
 */
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { afterEach, beforeEach, describe, it } from "node:test";
import { CodedError } from "../../src/core/errors.ts";
import { auditSmtStore, smtNodeKeyToHex } from "../../src/core/smt.ts";
import { fatalAdvice } from "../../src/node/fatal.ts";
import { ChainStore } from "../../src/storage/chain-store.ts";

let dir: string;
beforeEach(() => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), "citychain-fatal-"));
});
afterEach(() => fs.rmSync(dir, { recursive: true, force: true }));

const repo = path.resolve(import.meta.dirname, "../..");

function withCode(message: string, code: string): Error {
  return Object.assign(new Error(message), { code });
}

/** The child's last stdout line, parsed. */
function fatalLine(stdout: string): Record<string, unknown> & { err: { code?: string; message: string } } {
  const lines = stdout.trim().split("\n");
  return JSON.parse(lines[lines.length - 1]!);
}

describe("fatal errors", () => {
  it("names the failure and what to do", () => {
    assert.equal(fatalAdvice(withCode("database or disk is full", "SQLITE_FULL")).code, "STORAGE_FULL");
    assert.equal(fatalAdvice(withCode("no space left on device", "ENOSPC")).code, "STORAGE_FULL");
    assert.equal(fatalAdvice(withCode("disk I/O error", "SQLITE_IOERR_WRITE")).code, "STORAGE_IO");
    assert.equal(fatalAdvice(withCode("i/o error", "EIO")).code, "STORAGE_IO");
    const corrupt = fatalAdvice(new CodedError("STORAGE_CORRUPT", "tree root differs"));
    assert.equal(corrupt.code, "STORAGE_CORRUPT");
    assert.match(corrupt.advice, /citychain verify/);
    assert.equal(fatalAdvice(new TypeError("x is undefined")).code, "INTERNAL");
    assert.equal(fatalAdvice("a thrown string").code, "INTERNAL");
    assert.equal(fatalAdvice(null).code, "INTERNAL");
    assert.equal(fatalAdvice(withCode("odd", "SQLITE_BUSY")).code, "INTERNAL");
  });

  it("a full disk during a block commit: one STORAGE_FULL line, exit 1, the folder opens at the last block", () => {
    const child = spawnSync(
      process.execPath,
      ["--import", "tsx", "test/helpers/disk-full-child.ts", dir, "200"],
      { cwd: repo, encoding: "utf8", timeout: 60_000 },
    );
    assert.equal(child.status, 1, child.stderr);
    const line = fatalLine(child.stdout);
    assert.equal(line.level, 60);
    assert.equal(line.code, "STORAGE_FULL");
    assert.equal(line.origin, "uncaughtException");
    assert.equal(line.err.code, "SQLITE_FULL");
    assert.match(String(line.msg), /free space, then restart/);
    const heights = child.stderr
      .trim()
      .split("\n")
      .filter((l) => /^\d+$/.test(l))
      .map(Number);
    assert.ok(heights.length >= 2, "some blocks committed before the disk filled");
    const last = heights[heights.length - 1]!;

    const store = ChainStore.open(dir);
    try {
      assert.equal(store.latestHeight(), last, "the failed block left nothing behind");
      assert.equal(store.treeHeight(), last);
      const audit = auditSmtStore({ get: (k) => store.treeNode(smtNodeKeyToHex(k)) });
      assert.equal(
        audit.leafCount,
        50 * heights.length,
        "every committed block's keys, nothing of the failed one",
      );
    } finally {
      store.close();
    }
  });

  it("an unhandled rejection stops the node too", () => {
    const child = spawnSync(
      process.execPath,
      [
        "--import",
        "tsx",
        "--input-type=module",
        "-e",
        `import pino from "pino";
         import { installFatalHandlers } from "./src/node/fatal.ts";
         installFatalHandlers(pino());
         Promise.reject(new TypeError("nobody awaited this"));
         setTimeout(() => console.log("still running"), 2000);`,
      ],
      { cwd: repo, encoding: "utf8", timeout: 60_000 },
    );
    assert.equal(child.status, 1, child.stderr);
    assert.doesNotMatch(child.stdout, /still running/);
    const line = fatalLine(child.stdout);
    assert.equal(line.code, "INTERNAL");
    assert.equal(line.origin, "unhandledRejection");
    assert.equal(line.err.message, "nobody awaited this");
  });
});
