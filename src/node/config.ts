/**
 * A node's configuration: one JSON file in its data folder (`node.json`), every option with a
 * default, and environment overrides (CITYCHAIN_API_HOST, CITYCHAIN_API_PORT,
 * CITYCHAIN_BLOCK_INTERVAL_MS, CITYCHAIN_VERIFY_WORKERS, CITYCHAIN_LOG_LEVEL). docs/operations.md lists them all.
 *
 * Data folder layout:
 *   node.json            this configuration
 *   genesis.json         the chain's genesis document
 *   chain.db, chain.db-wal, chain.db-shm   the ledger (SQLite)
 *   identity/node-cert.pem   the node's certificate (kind "node")
 *   identity/node-key.pem    its private key, encrypted PKCS#8
 *   identity/ca-cert.pem     the consortium root, for clients of the API's TLS
 */
import fs from "node:fs";
import path from "node:path";
import { CodedError } from "../core/errors.ts";

export interface P2pConfig {
  readonly host: string;
  readonly port: number;
  /** Peers to dial: "host:port" or "<nodeId>@host:port". */
  readonly peers: readonly string[];
  /** Follow the chain without voting. */
  readonly observer: boolean;
  /** Pause after a decision before the next height (CometBFT's timeout_commit). */
  readonly timeoutCommitMs: number;
  readonly timeoutProposeMs: number;
  readonly timeoutPrevoteMs: number;
  readonly timeoutPrecommitMs: number;
}

export interface NodeConfig {
  readonly api: { readonly host: string; readonly port: number; readonly tls: boolean };
  /** null: a single-validator chain whose node makes every block itself ("solo"). */
  readonly p2p: P2pConfig | null;
  readonly blockIntervalMs: number;
  readonly mempoolTxsMax: number;
  readonly mempoolBytesMax: number;
  readonly mempoolTxsPerSenderMax: number;
  readonly apiBodyBytesMax: number;
  /** Worker threads that verify transaction signatures; 0: one per core beside the main thread. */
  readonly verifyWorkers: number;
  readonly logLevel: "debug" | "info" | "warn" | "error";
  /**
   * Departments whose per-subject keys this node holds (docs/licenses.md); null: the department of
   * the node's own certificate.
   */
  readonly keyDepartments: readonly string[] | null;
}

export const defaultP2pConfig: P2pConfig = {
  host: "127.0.0.1",
  port: 7101,
  peers: [],
  observer: false,
  timeoutCommitMs: 20,
  timeoutProposeMs: 1000,
  timeoutPrevoteMs: 1000,
  timeoutPrecommitMs: 1000,
};

export const defaultNodeConfig: NodeConfig = {
  api: { host: "127.0.0.1", port: 7001, tls: true },
  p2p: null,
  blockIntervalMs: 25,
  mempoolTxsMax: 100_000,
  mempoolBytesMax: 128 * 1024 * 1024,
  mempoolTxsPerSenderMax: 20_000,
  apiBodyBytesMax: 8 * 1024 * 1024,
  verifyWorkers: 0,
  logLevel: "info",
  keyDepartments: null,
};

/** More verification threads than this only add contention. */
export const verifyWorkersMax = 64;

export const nodeFiles = {
  config: "node.json",
  genesis: "genesis.json",
  cert: path.join("identity", "node-cert.pem"),
  key: path.join("identity", "node-key.pem"),
  caCert: path.join("identity", "ca-cert.pem"),
} as const;

function intFrom(value: unknown, field: string, min: number, max: number): number {
  const n = typeof value === "string" ? Number(value) : value;
  if (typeof n !== "number" || !Number.isSafeInteger(n) || n < min || n > max) {
    throw new CodedError("BAD_REQUEST", `config: ${field} must be an integer in ${min}..${max}`, field);
  }
  return n;
}

export function readNodeConfig(dir: string, env: NodeJS.ProcessEnv = process.env): NodeConfig {
  const file = path.join(dir, nodeFiles.config);
  let raw: Record<string, unknown> = {};
  if (fs.existsSync(file)) {
    try {
      raw = JSON.parse(fs.readFileSync(file, "utf8")) as Record<string, unknown>;
    } catch (error) {
      throw new CodedError("BAD_REQUEST", `config: ${file} is not valid JSON: ${(error as Error).message}`);
    }
  }
  const known = new Set(Object.keys(defaultNodeConfig));
  for (const key of Object.keys(raw)) {
    if (!known.has(key)) throw new CodedError("BAD_REQUEST", `config: unknown option ${key}`, key);
  }
  const api = { ...defaultNodeConfig.api, ...((raw.api as object | undefined) ?? {}) } as Record<
    string,
    unknown
  >;
  const d = defaultNodeConfig;
  const host = env.CITYCHAIN_API_HOST ?? api.host;
  if (typeof host !== "string" || host.length === 0)
    throw new CodedError("BAD_REQUEST", "config: api.host", "api.host");
  const logLevel = env.CITYCHAIN_LOG_LEVEL ?? raw.logLevel ?? d.logLevel;
  if (!["debug", "info", "warn", "error"].includes(String(logLevel))) {
    throw new CodedError("BAD_REQUEST", "config: logLevel must be debug|info|warn|error", "logLevel");
  }
  return {
    p2p: readP2p(raw.p2p, env),
    api: {
      host,
      port: intFrom(env.CITYCHAIN_API_PORT ?? api.port, "api.port", 0, 65535),
      tls: api.tls !== false,
    },
    blockIntervalMs: intFrom(
      env.CITYCHAIN_BLOCK_INTERVAL_MS ?? raw.blockIntervalMs ?? d.blockIntervalMs,
      "blockIntervalMs",
      1,
      60_000,
    ),
    mempoolTxsMax: intFrom(raw.mempoolTxsMax ?? d.mempoolTxsMax, "mempoolTxsMax", 1, 10_000_000),
    mempoolBytesMax: intFrom(
      raw.mempoolBytesMax ?? d.mempoolBytesMax,
      "mempoolBytesMax",
      1024,
      8 * 1024 ** 3,
    ),
    mempoolTxsPerSenderMax: intFrom(
      raw.mempoolTxsPerSenderMax ?? d.mempoolTxsPerSenderMax,
      "mempoolTxsPerSenderMax",
      1,
      10_000_000,
    ),
    apiBodyBytesMax: intFrom(
      raw.apiBodyBytesMax ?? d.apiBodyBytesMax,
      "apiBodyBytesMax",
      1024,
      256 * 1024 * 1024,
    ),
    verifyWorkers: intFrom(
      env.CITYCHAIN_VERIFY_WORKERS ?? raw.verifyWorkers ?? d.verifyWorkers,
      "verifyWorkers",
      0,
      verifyWorkersMax,
    ),
    logLevel: logLevel as NodeConfig["logLevel"],
    keyDepartments: readKeyDepartments(raw.keyDepartments),
  };
}

function readKeyDepartments(raw: unknown): readonly string[] | null {
  if (raw === null || raw === undefined) return null;
  if (
    !Array.isArray(raw) ||
    raw.length > 64 ||
    raw.some((d) => typeof d !== "string" || !/^[a-z][a-z0-9-]{1,31}$/.test(d))
  ) {
    throw new CodedError(
      "BAD_REQUEST",
      "config: keyDepartments must be a list of department codes",
      "keyDepartments",
    );
  }
  return raw as string[];
}

function readP2p(raw: unknown, env: NodeJS.ProcessEnv): P2pConfig | null {
  if (raw === null || raw === undefined) return null;
  if (typeof raw !== "object" || Array.isArray(raw))
    throw new CodedError("BAD_REQUEST", "config: p2p must be an object", "p2p");
  const known = new Set(Object.keys(defaultP2pConfig));
  for (const key of Object.keys(raw)) {
    if (!known.has(key))
      throw new CodedError("BAD_REQUEST", `config: unknown option p2p.${key}`, `p2p.${key}`);
  }
  const p = { ...defaultP2pConfig, ...(raw as Partial<P2pConfig>) };
  if (!Array.isArray(p.peers) || p.peers.some((x) => typeof x !== "string") || p.peers.length > 256) {
    throw new CodedError("BAD_REQUEST", "config: p2p.peers must be a list of host:port", "p2p.peers");
  }
  if (typeof p.host !== "string" || p.host.length === 0)
    throw new CodedError("BAD_REQUEST", "config: p2p.host", "p2p.host");
  return {
    host: p.host,
    port: intFrom(env.CITYCHAIN_P2P_PORT ?? p.port, "p2p.port", 0, 65535),
    peers: p.peers,
    observer: p.observer === true,
    timeoutCommitMs: intFrom(p.timeoutCommitMs, "p2p.timeoutCommitMs", 0, 60_000),
    timeoutProposeMs: intFrom(p.timeoutProposeMs, "p2p.timeoutProposeMs", 10, 600_000),
    timeoutPrevoteMs: intFrom(p.timeoutPrevoteMs, "p2p.timeoutPrevoteMs", 10, 600_000),
    timeoutPrecommitMs: intFrom(p.timeoutPrecommitMs, "p2p.timeoutPrecommitMs", 10, 600_000),
  };
}

export function writeNodeConfig(dir: string, config: Partial<NodeConfig>): void {
  fs.writeFileSync(
    path.join(dir, nodeFiles.config),
    `${JSON.stringify({ ...defaultNodeConfig, ...config }, null, 2)}\n`,
  );
}
