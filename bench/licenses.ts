/**
 * Benchmark (not a test) of the license registry on one node process:
 *   1. licenses issued per second (pre-built `license.issue` transactions: content sealed, data keys
 *      wrapped with HPKE and signed before the clock starts; submitted in batches, waiting for commit);
 *   2. licenses verified per second with proof: the node serving batch proofs (POST /v1/licenses/proofs,
 *      256 licenses per signed request) as JSON and as binary (Accept: application/cbor), each with a
 *      cold proof cache (a block has just committed) and then warm, single-license GETs for
 *      comparison, and what the verifying client itself sustains for each format;
 *   3. holder search latency (GET /v1/licenses?holder=…, end to end with request signing) with
 *      1,000,000 licenses in the store.
 *
 *   npm run bench:licenses -- [--licenses 20000] [--subjects 1000] [--store-licenses 1000000] [--searches 2000] [--search-warmup 200]
 *
 * Step 3 seeds the store directly: with the node stopped, it copies real license records (state rows
 * and index rows, exactly as execution writes them) under new identifiers and holders until the store
 * holds --store-licenses licenses. The seeded rows are not in the state tree (a proof of one would
 * fail, and `citychain verify` on this throwaway folder would say so); search does not use the tree.
 */
import { execFile, execFileSync } from "node:child_process";
import fs from "node:fs";
import https from "node:https";
import os from "node:os";
import path from "node:path";
import { PerformanceObserver } from "node:perf_hooks";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";
import { type Canonical, decodeCanonical, encodeCanonical } from "../src/core/encoding.ts";
import { sha256Hex } from "../src/core/hash.ts";
import { signRequest } from "../src/core/httpsig.ts";
import {
  formatLicenseId,
  licenseKeyOf,
  parseLicenseId,
  usccCheckChar,
} from "../src/core/license/identifier.ts";
import type { LicenseRow } from "../src/core/license/index-ops.ts";
import { canonicalJson } from "../src/core/license/json.ts";
import {
  type LicenseHead,
  type LicenseVersion,
  licenseKeys,
  wrappedKeyToCanonical,
} from "../src/core/license/records.ts";
import type { CitychainClient } from "../src/sdk/client.ts";
import { type LicenseProofsJson, verifyLicenseProofs, verifyLicenseProofsCbor } from "../src/sdk/licenses.ts";
import {
  contentHash,
  generateEncryptionKeyPair,
  generateSigningKeyPair,
  sealPersonal,
} from "../src/sdk/sealing.ts";
import { buildTx } from "../src/sdk/tx-builder.ts";
import { validatorsFromJson } from "../src/sdk/verify.ts";
import { ChainStore } from "../src/storage/chain-store.ts";
import { createProcessNetwork } from "../test/e2e/process-net.ts";
import { describeLoad, lanes, measure, percentile } from "./common.ts";

const { values: args } = parseArgs({
  options: {
    licenses: { type: "string", default: "20000" },
    subjects: { type: "string", default: "1000" },
    batch: { type: "string", default: "500" },
    connections: { type: "string", default: "4" },
    "proof-rounds": { type: "string", default: "3" },
    /** Warm rounds ask for every batch this many times, so a round lasts long enough to time. */
    "warm-passes": { type: "string", default: "5" },
    "store-licenses": { type: "string", default: "1000000" },
    searches: { type: "string", default: "2000" },
    /**
     * Searches run before the timed ones (other random holders), right after the node restarted on
     * the seeded store: its first requests compile code and touch cold pages. Reported on their own.
     */
    "search-warmup": { type: "string", default: "200" },
    /** Internal: run only the store seeding (in a child process, see seedInChild). */
    "seed-dir": { type: "string" },
    "seed-template": { type: "string" },
    /** Internal: time the pre-signed searches in this file (in a child process, see benchSearch). */
    "search-file": { type: "string" },
  },
});
const licenseCount = Number(args.licenses);
const subjectCount = Number(args.subjects);
const batchSize = Number(args.batch);
const connections = Number(args.connections);
const storeLicenses = Number(args["store-licenses"]);
const searchCount = Number(args.searches);
const searchWarmupCount = Number(args["search-warmup"]);

const uscc = (body17: string) => body17 + usccCheckChar(body17);
const policeCode = uscc("11330100MB0000003");
const typeCode = `${policeCode}001`;
const schema = {
  type: "object",
  properties: {
    number: { type: "string", minLength: 1, maxLength: 32 },
    district: { type: "string", minLength: 1, maxLength: 64 },
    birthDate: { type: "string", format: "date" },
    address: { type: "string", minLength: 1, maxLength: 200 },
  },
  required: ["number", "district", "birthDate", "address"],
  additionalProperties: false,
};

function out(line: string): void {
  process.stdout.write(`${line}\n`);
}

interface Subject {
  readonly pseudonym: string;
  readonly encryptionKey: Uint8Array;
  deptKey: Uint8Array;
}

async function submitAll(client: CitychainClient, txs: readonly Uint8Array[]): Promise<number> {
  let next = 0;
  let ok = 0;
  await lanes(
    connections,
    () => {
      if (next >= txs.length) return undefined;
      next += batchSize;
      return txs.slice(next - batchSize, next);
    },
    async (batch) => {
      const results = await client.submitBatch(batch, { wait: true, waitMs: 60_000 });
      ok += results.filter((r) => r.status === "committed" && r.code === "OK").length;
    },
  );
  return ok;
}

async function setUp(net: Awaited<ReturnType<typeof createProcessNetwork>>) {
  const admin = await net.client("infocenter.admin");
  const police = await net.client("police.officer");
  await admin.send("license.issuer.set", { dept: "police", creditCode: policeCode, areaCode: "330100" });
  await (await net.client("police.admin")).send("license.type.register", {
    code: typeCode,
    name: "Residence certificate",
    schema: canonicalJson(schema),
    issuers: ["police"],
    personalFields: ["birthDate", "address"],
    validityDays: 3650,
  });
  const chainId = await police.chainId();
  // Once with the full certificate, so the pre-built transactions can name it by id.
  await police.send("kv.put", { key: "bench/hello", value: new Uint8Array([1]) });
  const subjects: Subject[] = [];
  const registrations: Uint8Array[] = [];
  for (let i = 0; i < subjectCount; i++) {
    const pseudonym = sha256Hex(new TextEncoder().encode(`bench-subject-${i}`));
    const enc = await generateEncryptionKeyPair();
    const sig = await generateSigningKeyPair();
    subjects.push({ pseudonym, encryptionKey: enc.publicKey, deptKey: new Uint8Array() });
    const payload = {
      pseudonym,
      encryptionKey: enc.publicKey,
      signingKey: sig.publicKeySpki,
      custody: "self",
    };
    registrations.push(
      (
        await buildTx({
          chainId,
          type: "license.subject.register",
          payload,
          signers: [police.identity],
          nowMs: Date.now(),
          certById: true,
        })
      ).bytes,
    );
  }
  const registered = await submitAll(police, registrations);
  let k = 0;
  await lanes(
    8,
    () => (k < subjects.length ? subjects[k++] : undefined),
    async (s) => {
      const key = (
        await police.request<{ publicKey: string }>("POST", `/v1/subjects/${s.pseudonym}/department-key`, {})
      ).body;
      s.deptKey = new Uint8Array(Buffer.from(key.publicKey, "base64"));
    },
  );
  const published = await submitAll(
    police,
    await Promise.all(
      subjects.map(
        async (s) =>
          (
            await buildTx({
              chainId,
              type: "license.subject.key",
              payload: { pseudonym: s.pseudonym, publicKey: s.deptKey },
              signers: [police.identity],
              nowMs: Date.now(),
              certById: true,
            })
          ).bytes,
      ),
    ),
  );
  out(`set-up: ${registered} subjects registered, ${published} department keys published`);
  return { police, chainId, subjects };
}

async function prebuildLicenses(police: CitychainClient, chainId: string, subjects: readonly Subject[]) {
  const t0 = performance.now();
  const ids: string[] = [];
  const txs: Uint8Array[] = [];
  for (let i = 0; i < licenseCount; i++) {
    const subject = subjects[i % subjects.length]!;
    const id = formatLicenseId({
      typeCode,
      issuerCode: policeCode,
      serial: `2026${String(i).padStart(7, "0")}`,
      version: 1,
    });
    const publicContent = { number: `RC-${i}`, district: "Xihu" };
    const sealed = await sealPersonal(
      id,
      {
        holderName: `Citizen ${i}`,
        holderCode: `99010119900101${String(i % 1000).padStart(3, "0")}X`,
        fields: { birthDate: "1990-01-01", address: `${i} Wensan Road` },
      },
      [
        { label: "holder", publicKey: subject.encryptionKey },
        { label: "police", publicKey: subject.deptKey },
      ],
    );
    const payload: { [key: string]: Canonical } = {
      id,
      holder: subject.pseudonym,
      holderCodeType: "111",
      publicContent: canonicalJson(publicContent),
      sealed: { nonce: sealed.sealed.nonce, ciphertext: sealed.sealed.ciphertext },
      contentHash: await contentHash(sealed.personalWithSalt, publicContent),
      wrappedKeys: Object.fromEntries(
        Object.entries(sealed.wrapped).map(([l, w]) => [l, wrappedKeyToCanonical(w)]),
      ),
    };
    txs.push(
      (
        await buildTx({
          chainId,
          type: "license.issue",
          payload,
          signers: [police.identity],
          nowMs: Date.now(),
          ttlMs: 3_600_000,
          certById: true,
        })
      ).bytes,
    );
    ids.push(id);
  }
  out(
    `pre-built ${licenseCount} license.issue transactions in ${((performance.now() - t0) / 1000).toFixed(1)} s (sealing and signing, not measured)`,
  );
  return { ids, txs };
}

/** Occurrences of `pattern` in `bytes` (memchr-speed; counting proven items without decoding). */
function countOccurrences(bytes: Buffer, pattern: Buffer): number {
  let count = 0;
  for (let at = bytes.indexOf(pattern); at >= 0; at = bytes.indexOf(pattern, at + pattern.length)) count++;
  return count;
}

/** Each proven item of a binary answer has exactly one "versionProof" key (an error item has none). */
const versionProofKey = Buffer.concat([Buffer.from([0x60 + 12]), Buffer.from("versionProof")]);

async function benchVerify(
  pid: number,
  clients: readonly CitychainClient[],
  ids: readonly string[],
  nextBlock: () => Promise<void>,
) {
  const rounds = Number(args["proof-rounds"]);
  const batches: string[][] = [];
  for (let i = 0; i < ids.length; i += 256) batches.push(ids.slice(i, i + 256));
  let sampleJson: LicenseProofsJson | undefined;
  let sampleCbor: Uint8Array | undefined;
  for (const format of ["json", "cbor"] as const) {
    // A block commits first, so the first round starts with every proof cache empty.
    await nextBlock();
    for (let round = 0; round < rounds; round++) {
      const requests = round === 0 ? batches.length : batches.length * Number(args["warm-passes"]);
      let next = 0;
      let proven = 0;
      const m = await measure(pid, () =>
        lanes(
          connections * 2,
          () => (next < requests ? batches[next++ % batches.length] : undefined),
          async (batch) => {
            const client = clients[next % clients.length]!;
            // Counted, not parsed: parsing half a megabyte per batch would measure the load generator.
            // One answer of each format is parsed and checked in full below.
            if (format === "json") {
              const { text } = await client.requestText("POST", "/v1/licenses/proofs", { ids: batch });
              proven += text.split('"licenseKey":').length - 1;
              sampleJson ??= JSON.parse(text) as LicenseProofsJson;
            } else {
              const { bytes } = await client.requestBytes("POST", "/v1/licenses/proofs", "application/cbor", {
                ids: batch,
              });
              proven += countOccurrences(
                Buffer.from(bytes.buffer, bytes.byteOffset, bytes.length),
                versionProofKey,
              );
              sampleCbor ??= bytes;
            }
          },
        ),
      );
      out(
        `verify (batch proofs, ${format}, ${round === 0 ? "cold" : "warm"} cache): ${proven} licenses proven in ${m.seconds.toFixed(2)} s = ${(proven / m.seconds).toFixed(0)}/s; ${describeLoad(m)}`,
      );
    }
  }
  const singles = Math.min(2000, ids.length);
  let s = 0;
  const single = await measure(pid, () =>
    lanes(
      connections * 2,
      () => (s < singles ? ids[s++] : undefined),
      async (id) => {
        await clients[s % clients.length]!.request("GET", `/v1/licenses/${id}/proof`);
      },
    ),
  );
  out(
    `verify (one signed GET per license): ${singles} in ${single.seconds.toFixed(2)} s = ${(singles / single.seconds).toFixed(0)}/s; ${describeLoad(single)}`,
  );
  if (sampleJson !== undefined && sampleCbor !== undefined) {
    const trusted = validatorsFromJson(sampleJson.validators);
    let t0 = performance.now();
    const checked = await verifyLicenseProofs(sampleJson, trusted, Date.now());
    let seconds = (performance.now() - t0) / 1000;
    out(
      `client-side check of one JSON batch (commit + ${checked.length} licenses' proofs): ${(checked.length / seconds).toFixed(0)} licenses/s on one core`,
    );
    t0 = performance.now();
    const checkedCbor = await verifyLicenseProofsCbor(sampleCbor, trusted, Date.now());
    seconds = (performance.now() - t0) / 1000;
    const failed = checkedCbor.filter((o) => "error" in o).length;
    out(
      `client-side check of one binary batch (decode + commit + ${checkedCbor.length} licenses' proofs, ${failed} refused): ${(checkedCbor.length / seconds).toFixed(0)} licenses/s on one core`,
    );
  }
}

/** With the node stopped: copies real records under new ids and holders up to `storeLicenses`. */
function seedStore(dir: string, templateId: string): { holders: string[]; seeded: number } {
  const store = ChainStore.open(dir);
  try {
    const version = decodeCanonical(
      store.getState(licenseKeys.version(templateId))!,
      1 << 20,
    ) as unknown as LicenseVersion;
    const head = decodeCanonical(
      store.getState(licenseKeys.head(version.licenseKey))!,
      1 << 20,
    ) as unknown as LicenseHead;
    const existing = (store.db.prepare("SELECT COUNT(*) AS n FROM licenses").get() as { n: number }).n;
    const put = store.db.prepare("INSERT OR REPLACE INTO state (key, value, height) VALUES (?, ?, ?)");
    const holders: string[] = [];
    const perHolder = 10;
    let seeded = 0;
    const t0 = performance.now();
    for (let start = 0; start < storeLicenses - existing; start += 10_000) {
      const end = Math.min(storeLicenses - existing, start + 10_000);
      const rows: LicenseRow[] = [];
      store.db.transaction(() => {
        for (let j = start; j < end; j++) {
          const holder = sha256Hex(new TextEncoder().encode(`seeded-holder-${Math.floor(j / perHolder)}`));
          if (j % perHolder === 0) holders.push(holder);
          const id = formatLicenseId({
            typeCode,
            issuerCode: policeCode,
            serial: `9${String(j).padStart(10, "0")}`,
            version: 1,
          });
          const licenseKey = licenseKeyOf(parseLicenseId(id));
          const issuedAtMs = version.issuedAtMs - j * 1000;
          put.run(
            licenseKeys.version(id),
            Buffer.from(
              encodeCanonical({ ...version, id, licenseKey, holder, issuedAtMs } as unknown as Canonical),
            ),
            version.height,
          );
          put.run(
            licenseKeys.head(licenseKey),
            Buffer.from(
              encodeCanonical({
                ...head,
                licenseKey,
                holder,
                currentId: id,
                statusIndex: 1_000_000 + j,
              } as unknown as Canonical),
            ),
            version.height,
          );
          rows.push({
            licenseKey,
            currentId: id,
            typeCode,
            issuerDept: "police",
            holder,
            status: "valid",
            validFromMs: version.validFromMs,
            validUntilMs: version.validUntilMs,
            statusIndex: 1_000_000 + j,
            height: version.height,
            firstIssuedMs: issuedAtMs,
          });
        }
        store.licenseIndex.apply({ licenses: rows, events: [], trail: [], forgotten: [] });
      })();
      seeded = end;
    }
    out(
      `seeded ${seeded} licenses (state and index rows) in ${((performance.now() - t0) / 1000).toFixed(1)} s; store now holds ${existing + seeded}`,
    );
    return { holders, seeded };
  } finally {
    store.close();
  }
}

function get(
  agent: https.Agent,
  url: string,
  headers: Record<string, string>,
): Promise<{ status: number; text: string }> {
  return new Promise((resolve, reject) => {
    const request = https.get(url, { agent, headers }, (response) => {
      const chunks: Buffer[] = [];
      response.on("data", (chunk: Buffer) => chunks.push(chunk));
      response.on("end", () =>
        resolve({ status: response.statusCode ?? 0, text: Buffer.concat(chunks).toString("utf8") }),
      );
      response.on("error", reject);
    });
    request.on("error", reject);
  });
}

/**
 * Holder searches one at a time. The requests are signed before the clock starts (their signatures
 * stay valid for minutes), so the figure is the node's answer time over TLS on loopback, not the
 * client's signing; one SDK round trip with signing is reported beside it.
 */
async function benchSearch(
  pid: number,
  client: CitychainClient,
  url: string,
  caPem: string,
  holders: readonly string[],
) {
  const requests: Array<{ path: string; headers: Record<string, string> }> = [];
  for (let i = 0; i < searchWarmupCount + searchCount; i++) {
    const path = `/v1/licenses?holder=${holders[Math.floor(Math.random() * holders.length)]!}&limit=50`;
    const { identity } = client;
    const headers = await signRequest({
      method: "GET",
      url: path,
      signer: identity.signer,
      certId: identity.certId,
      certDer: identity.certDer,
      nowMs: Date.now(),
    });
    requests.push({ path, headers });
  }
  // The timed loop runs in a fresh child process: this one holds the pre-built transactions and
  // everything the earlier phases left, and its collections (up to ~17 ms each here) would land in
  // the measured latencies. The child's own collections are still counted and reported.
  const file = path.join(os.tmpdir(), `citychain-searches-${process.pid}.json`);
  fs.writeFileSync(file, JSON.stringify({ url, caPem, requests }));
  let timed: { latencies: number[]; found: number; gcMs: number[] } = { latencies: [], found: 0, gcMs: [] };
  const m = await measure(pid, async () => {
    const output = await new Promise<string>((resolve, reject) =>
      execFile(
        process.execPath,
        [...process.execArgv, fileURLToPath(import.meta.url), "--search-file", file],
        { maxBuffer: 64 * 1024 * 1024 },
        (error, stdout) => (error === null ? resolve(stdout) : reject(error)),
      ),
    );
    timed = JSON.parse(output.trim().split("\n").at(-1)!);
  });
  fs.rmSync(file, { force: true });
  const { found, gcMs: loadgenGcMs } = timed;
  const warmup = timed.latencies.slice(0, searchWarmupCount).sort((a, b) => a - b);
  const latencies = timed.latencies.slice(searchWarmupCount).sort((a, b) => a - b);
  if (warmup.length > 0) {
    out(
      `holder search warm-up (the first ${warmup.length} after the node restarted, not in the figures below): p50 ${percentile(warmup, 50).toFixed(2)} ms, p99 ${percentile(warmup, 99).toFixed(2)} ms, max ${warmup[warmup.length - 1]!.toFixed(2)} ms`,
    );
  }
  out(
    `holder search: ${searchCount} sequential searches, p50 ${percentile(latencies, 50).toFixed(2)} ms, p90 ${percentile(latencies, 90).toFixed(2)} ms, p99 ${percentile(latencies, 99).toFixed(2)} ms, max ${latencies[latencies.length - 1]!.toFixed(2)} ms (${(found / (searchWarmupCount + searchCount)).toFixed(1)} licenses per answer; pre-signed requests, node:https over TLS on loopback, one kept-alive connection, timed in a fresh process); ${describeLoad(m)}; load generator GC ${loadgenGcMs.length} pauses, ${loadgenGcMs.reduce((a, b) => a + b, 0).toFixed(1)} ms in all, longest ${Math.max(0, ...loadgenGcMs).toFixed(2)} ms`,
  );
  const sdk: number[] = [];
  for (let i = 0; i < Math.min(200, searchCount); i++) {
    const t0 = performance.now();
    await client.request("GET", `/v1/licenses?holder=${holders[i % holders.length]!}&limit=50`);
    sdk.push(performance.now() - t0);
  }
  sdk.sort((a, b) => a - b);
  out(
    `holder search through the SDK (signing each request): p50 ${percentile(sdk, 50).toFixed(2)} ms, p99 ${percentile(sdk, 99).toFixed(2)} ms`,
  );
}

async function main() {
  out(
    `citychain license benchmark: 1 node on ${os.cpus().length} cores (${os.cpus()[0]?.model ?? "?"}), load average ${os
      .loadavg()
      .map((l) => l.toFixed(2))
      .join(" ")}`,
  );
  const net = await createProcessNetwork({ nodes: 1 });
  try {
    let child = await net.start(0);
    const { police, chainId, subjects } = await setUp(net);
    const { ids, txs } = await prebuildLicenses(police, chainId, subjects);
    const issued = await measure(child.pid!, () => submitAll(police, txs));
    out(
      `issue: ${issued.result} of ${licenseCount} licenses committed in ${issued.seconds.toFixed(2)} s = ${(issued.result / issued.seconds).toFixed(0)}/s; ${describeLoad(issued)}`,
    );
    const readers = await Promise.all(
      ["tax.officer", "civil.officer", "market.officer", "health.officer"].map((id) => net.client(id)),
    );
    let tick = 0;
    const nextBlock = async () => {
      await police.send("kv.put", { key: "bench/tick", value: new Uint8Array([tick++ & 0xff]) });
    };
    await benchVerify(child.pid!, readers, ids, nextBlock);

    await net.stop(0);
    const { holders } = seedInChild(path.join(net.layout.nodes[0]!.dir), ids[0]!);
    child = await net.start(0);
    const caPem = fs.readFileSync(net.layout.caCertPath, "utf8");
    await benchSearch(child.pid!, readers[0]!, net.url(0), caPem, holders);
  } finally {
    await net.close();
  }
}

/**
 * Seeding a million rows leaves a process's heap full of garbage, and its collections would land in
 * the search latencies measured next: the seeding runs in a child process (this script with
 * --seed-dir), which prints its report and, last, the holders as one JSON line.
 */
function seedInChild(dir: string, templateId: string): { holders: string[]; seeded: number } {
  const output = execFileSync(
    process.execPath,
    [
      ...process.execArgv,
      fileURLToPath(import.meta.url),
      ...process.argv.slice(2),
      "--seed-dir",
      dir,
      "--seed-template",
      templateId,
    ],
    { maxBuffer: 512 * 1024 * 1024, encoding: "utf8", stdio: ["ignore", "pipe", "inherit"] },
  );
  const lines = output.trimEnd().split("\n");
  for (const line of lines.slice(0, -1)) out(line);
  return JSON.parse(lines[lines.length - 1]!) as { holders: string[]; seeded: number };
}

/** The child side of benchSearch: sequential pre-signed searches, timed, on one kept-alive connection. */
async function timeSearches(file: string): Promise<void> {
  const { url, caPem, requests } = JSON.parse(fs.readFileSync(file, "utf8")) as {
    url: string;
    caPem: string;
    requests: Array<{ path: string; headers: Record<string, string> }>;
  };
  // node:https: a lighter client than fetch, so less of the load generator's own work (and garbage)
  // lands in the measured latencies.
  const agent = new https.Agent({ keepAlive: true, maxSockets: 1, ca: caPem });
  const gcMs: number[] = [];
  const gcObserver = new PerformanceObserver((list) => {
    for (const entry of list.getEntries()) gcMs.push(entry.duration);
  });
  gcObserver.observe({ entryTypes: ["gc"] });
  const latencies: number[] = [];
  let found = 0;
  for (const r of requests) {
    const t0 = performance.now();
    const response = await get(agent, url + r.path, r.headers);
    latencies.push(performance.now() - t0);
    if (response.status !== 200) throw new Error(`search answered ${response.status}: ${response.text}`);
    found += response.text.split('"licenseKey":').length - 1;
  }
  gcObserver.disconnect();
  agent.destroy();
  out(JSON.stringify({ latencies, found, gcMs }));
}

if (args["search-file"] !== undefined) await timeSearches(args["search-file"]);
else if (args["seed-dir"] === undefined) await main();
else out(JSON.stringify(seedStore(args["seed-dir"], args["seed-template"]!)));
