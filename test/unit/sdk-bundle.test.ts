/**
 * The SDK must run in a browser: bundle its entry for the browser platform and fail on any Node
 * builtin it would need. The bundle is then run in a bare vm context (no require, no process, no
 * Buffer) with only what a browser has: WebCrypto, TextEncoder, atob/btoa, fetch — to sign a
 * transaction and check a signature with nothing Node-specific in reach.
 */
import assert from "node:assert/strict";
import { webcrypto } from "node:crypto";
import path from "node:path";
import { test } from "node:test";
import vm from "node:vm";
import { build } from "esbuild";

const entry = path.resolve(import.meta.dirname, "../../src/sdk/index.ts");

test("the SDK bundles for the browser without Node builtins", async () => {
  const result = await build({
    entryPoints: [entry],
    bundle: true,
    platform: "browser",
    format: "iife",
    globalName: "citychain",
    write: false,
    logLevel: "silent",
    target: "es2022",
  });
  assert.equal(result.errors.length, 0);
  const code = result.outputFiles[0]!.text;
  assert.doesNotMatch(code, /require\(["']node:/);
  assert.doesNotMatch(code, /\bprocess\.versions\b/);

  const context = vm.createContext({
    crypto: webcrypto,
    TextEncoder,
    TextDecoder,
    atob,
    btoa,
    console,
  });
  vm.runInContext(`${code}; globalThis.citychain = citychain;`, context);
  const sdk = context.citychain as typeof import("../../src/sdk/index.ts");
  const pair = (await webcrypto.subtle.generateKey({ name: "ECDSA", namedCurve: "P-256" }, false, [
    "sign",
    "verify",
  ])) as CryptoKeyPair;
  const signer = await vm.runInContext("citychain.WebCryptoSigner.fromKeyPair", context)(pair);
  const built = await sdk.buildTx({
    chainId: "citychain-dev",
    type: "kv.put",
    payload: { key: "k", value: new Uint8Array([1, 2, 3]) },
    signers: [{ signer, certId: "ab".repeat(32), certDer: new Uint8Array([48, 0]) }],
    nowMs: 1_800_000_000_000,
  });
  assert.match(built.id, /^[0-9a-f]{64}$/);
  // The license side of the SDK (sealing, consent, offline verification) is in the browser bundle too.
  for (const name of [
    "issueLicense",
    "grantConsent",
    "verifyLicenseProofs",
    "sealPersonal",
    "vaultSubjectKeys",
  ] as const)
    assert.equal(typeof sdk[name], "function", name);
  const pair2 = await sdk.generateEncryptionKeyPair();
  assert.equal(pair2.publicKey.length, 65);
  assert.ok(built.bytes.length > 100);
});
