/**
 * A node's configuration: one JSON file in its data folder (`node.json`), every option with a
 * default, and environment overrides (CITYCHAIN_API_HOST, CITYCHAIN_API_PORT,
 * CITYCHAIN_BLOCK_INTERVAL_MS). docs/operations.md lists them all.
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

export interface NodeConfig {
  readonly api: { readonly host: string; readonly port: number; readonly tls: boolean };
  readonly blockIntervalMs: number;
  readonly mempoolTxsMax: number;
  readonly mempoolBytesMax: number;
  readonly mempoolTxsPerSenderMax: number;
  readonly apiBodyBytesMax: number;
  readonly logLevel: "debug" | "info" | "warn" | "error";
}

export const defaultNodeConfig: NodeConfig = {
  api: { host: "127.0.0.1", port: 7001, tls: true },
  blockIntervalMs: 25,
  mempoolTxsMax: 100_000,
  mempoolBytesMax: 128 * 1024 * 1024,
  mempoolTxsPerSenderMax: 20_000,
  apiBodyBytesMax: 8 * 1024 * 1024,
  logLevel: "info",
};

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
  const logLevel = raw.logLevel ?? d.logLevel;
  if (!["debug", "info", "warn", "error"].includes(String(logLevel))) {
    throw new CodedError("BAD_REQUEST", "config: logLevel must be debug|info|warn|error", "logLevel");
  }
  return {
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
    logLevel: logLevel as NodeConfig["logLevel"],
  };
}

export function writeNodeConfig(dir: string, config: Partial<NodeConfig>): void {
  fs.writeFileSync(
    path.join(dir, nodeFiles.config),
    `${JSON.stringify({ ...defaultNodeConfig, ...config }, null, 2)}\n`,
  );
}
