/**
 * Lays out a fresh local network in one folder: a root CA with its registry, the sample
 * departments, an admin, an officer and an auditor per department (keys generated locally, enrolled
 * through CSRs), node identities and data folders with a shared genesis.json.
 *
 *   <dir>/ca/                         root CA (key encrypted) and its registry
 *   <dir>/secrets/passphrase          the one passphrase of this dev network's keys (mode 0600)
 *   <dir>/identities/<id>/cert.pem    member certificates; key.pem beside each, encrypted
 *   <dir>/nodes/node<i>/              node data folders (see src/node/config.ts)
 *   <dir>/vault/                      the key vault's folder (src/vault/index.ts), same passphrase
 *   <dir>/vault-tls/{cert,key}.pem    the vault's HTTPS identity (a server certificate from the CA)
 *   <dir>/network.json                what was created, for tools and tests
 *
 * A development convenience only: production keeps each key's passphrase with its owner.
 */
import crypto from "node:crypto";
import fs from "node:fs";
import path from "node:path";
import { createCsr, createRootCa } from "../ca/authority.ts";
import type { Role } from "../ca/identity.ts";
import { generateP256KeyPair, writeEncryptedPrivateKey } from "../ca/keys.ts";
import { openRegistry } from "../ca/registry.ts";
import { keyNodeFiles, pseudonymKeyPurpose } from "../license/key-node.ts";
import { writeSecretFile } from "../license/secret-file.ts";
import { defaultP2pConfig, nodeFiles, writeNodeConfig } from "../node/config.ts";
import type { GenesisFile } from "../node/genesis-file.ts";
import { initVault, vaultFiles } from "../vault/index.ts";

export const sampleDepartments = [
  { code: "infocenter", name: "Municipal Information Center" },
  { code: "civil", name: "Civil Affairs Bureau" },
  { code: "police", name: "Public Security Bureau" },
  { code: "social", name: "Human Resources and Social Security Bureau" },
  { code: "tax", name: "Taxation Bureau" },
  { code: "realestate", name: "Real Estate Registration Center" },
  { code: "land", name: "Planning and Natural Resources Bureau" },
  { code: "fund", name: "Housing Provident Fund Management Center" },
  { code: "health", name: "Health Commission" },
  { code: "market", name: "Market Regulation Administration" },
] as const;

export interface MemberFiles {
  readonly enrollmentId: string;
  readonly dept: string;
  readonly roles: readonly string[];
  readonly certPath: string;
  readonly keyPath: string;
}

export interface NetworkLayout {
  readonly dir: string;
  readonly chainId: string;
  readonly caCertPath: string;
  readonly passphrasePath: string;
  readonly members: MemberFiles[];
  readonly nodes: Array<{
    readonly name: string;
    readonly dir: string;
    readonly dept: string;
    readonly apiPort: number;
    readonly p2pPort: number | null;
    readonly observer: boolean;
  }>;
  /** The key vault; absent in networks laid out before the devnet ran one. */
  readonly vault?: VaultFiles;
}

export interface VaultFiles {
  readonly dir: string;
  readonly apiPort: number;
  readonly url: string;
  /** The identity the vault's operators act as on chain (a member, e.g. infocenter.vault). */
  readonly enrollmentId: string;
  /** The vault's HTTPS certificate and key (encrypted with the network passphrase). */
  readonly tlsCertPath: string;
  readonly tlsKeyPath: string;
}

/** The vault listens this far above node0's API port. */
export const vaultPortOffset = 50;

export interface BootstrapOptions {
  readonly dir: string;
  readonly chainId?: string;
  readonly nodes?: number;
  readonly apiPortBase?: number;
  /** Peer port of node0; node i listens on base+i. Default apiPortBase + 100. */
  readonly p2pPortBase?: number;
  /** Full replicas that follow without voting (not in the genesis validator set). */
  readonly observers?: number;
  /** Force consensus over p2p even for one validator (default: only when there are several nodes). */
  readonly consensus?: boolean;
  readonly timeoutCommitMs?: number;
  readonly tls?: boolean;
  readonly blockIntervalMs?: number;
  /** Lay out a key vault too (default true). */
  readonly vault?: boolean;
  /** Departments to create; defaults to the ten sample departments. */
  readonly departments?: ReadonlyArray<{ code: string; name: string }>;
  readonly now?: () => number;
}

const memberProfiles: ReadonlyArray<{ suffix: string; roles: Role[] }> = [
  { suffix: "admin", roles: ["admin", "officer"] },
  { suffix: "officer", roles: ["officer"] },
  { suffix: "auditor", roles: ["auditor"] },
];

type Enroll = (
  enrollmentId: string,
  dept: string,
  roles: Role[],
  kind: "user" | "node",
  outDir: string,
) => Promise<{ certPem: string; privateKey: crypto.KeyObject }>;

/**
 * The key vault's folder, holding the nodes' pseudonym key (written before init, so init adopts it
 * rather than making another), its HTTPS identity, and the member its operators act as.
 */
async function layOutVault(
  dir: string,
  operator: string,
  apiPort: number,
  pseudonymKey: Uint8Array,
  passphrase: string,
  enroll: Enroll,
): Promise<{ vault: VaultFiles; member: MemberFiles }> {
  const vaultDir = path.join(dir, "vault");
  fs.mkdirSync(vaultDir, { recursive: true, mode: 0o700 });
  writeSecretFile(path.join(vaultDir, vaultFiles.pseudonymKey), pseudonymKey, passphrase, {
    purpose: pseudonymKeyPurpose,
  });
  initVault(vaultDir, passphrase);
  // A server certificate needs a node profile (serverAuth, 127.0.0.1): the CA issues no other kind.
  const tlsDir = path.join(dir, "vault-tls");
  const tls = await enroll(`${operator}.vault-tls`, operator, ["node"], "node", tlsDir);
  const tlsCertPath = path.join(tlsDir, "cert.pem");
  const tlsKeyPath = path.join(tlsDir, "key.pem");
  fs.writeFileSync(tlsCertPath, tls.certPem);
  writeEncryptedPrivateKey(tlsKeyPath, tls.privateKey, passphrase);
  const enrollmentId = `${operator}.vault`;
  const memberDir = path.join(dir, "identities", enrollmentId);
  const { certPem, privateKey } = await enroll(enrollmentId, operator, ["officer"], "user", memberDir);
  const member: MemberFiles = {
    enrollmentId,
    dept: operator,
    roles: ["officer"],
    certPath: path.join(memberDir, "cert.pem"),
    keyPath: path.join(memberDir, "key.pem"),
  };
  fs.writeFileSync(member.certPath, certPem);
  writeEncryptedPrivateKey(member.keyPath, privateKey, passphrase);
  return {
    vault: {
      dir: vaultDir,
      apiPort,
      url: `https://127.0.0.1:${apiPort}`,
      enrollmentId,
      tlsCertPath,
      tlsKeyPath,
    },
    member,
  };
}

export async function bootstrapNetwork(options: BootstrapOptions): Promise<NetworkLayout> {
  const dir = path.resolve(options.dir);
  if (fs.existsSync(path.join(dir, "network.json"))) throw new Error(`${dir} already holds a network`);
  fs.mkdirSync(path.join(dir, "secrets"), { recursive: true, mode: 0o700 });
  const passphrase = crypto.randomBytes(24).toString("base64url");
  const passphrasePath = path.join(dir, "secrets", "passphrase");
  fs.writeFileSync(passphrasePath, `${passphrase}\n`, { mode: 0o600 });
  const now = options.now ?? Date.now;
  const chainId = options.chainId ?? "citychain-dev";
  const departments = options.departments ?? sampleDepartments;
  const operator = departments[0]!.code;

  const ca = await createRootCa({
    dir: path.join(dir, "ca"),
    validityDays: 3650,
    passphrase,
    dept: operator,
    now,
  });
  const registry = openRegistry({ ca, now });
  try {
    for (const d of departments) registry.registerDepartment(d.code, d.name);
    const enroll: Enroll = async (enrollmentId, dept, roles, kind, outDir) => {
      const { secret } = await registry.registerIdentity({ enrollmentId, dept, roles, kind });
      const keys = generateP256KeyPair();
      const certPem = await registry.enroll(
        enrollmentId,
        secret,
        await createCsr(keys.privateKey, enrollmentId),
      );
      fs.mkdirSync(outDir, { recursive: true, mode: 0o700 });
      return { certPem, privateKey: keys.privateKey };
    };

    const members: MemberFiles[] = [];
    for (const d of departments) {
      for (const p of memberProfiles) {
        const enrollmentId = `${d.code}.${p.suffix}`;
        const memberDir = path.join(dir, "identities", enrollmentId);
        const { certPem, privateKey } = await enroll(enrollmentId, d.code, p.roles, "user", memberDir);
        const certPath = path.join(memberDir, "cert.pem");
        const keyPath = path.join(memberDir, "key.pem");
        fs.writeFileSync(certPath, certPem);
        writeEncryptedPrivateKey(keyPath, privateKey, passphrase);
        members.push({ enrollmentId, dept: d.code, roles: p.roles, certPath, keyPath });
      }
    }

    const nodeCount = options.nodes ?? 1;
    const observerCount = options.observers ?? 0;
    const apiPortBase = options.apiPortBase ?? 7001;
    const p2pPortBase = options.p2pPortBase ?? apiPortBase + 100;
    const networked = options.consensus ?? nodeCount + observerCount > 1;
    const nodes: NetworkLayout["nodes"][number][] = [];
    const validators: GenesisFile["validators"] = [];
    const total = nodeCount + observerCount;
    // One consortium pseudonym key, on every node (docs/licenses.md "Pseudonyms").
    const pseudonymKey = crypto.randomBytes(32);
    for (let i = 0; i < total; i++) {
      const observer = i >= nodeCount;
      const dept = departments[i % departments.length]!.code;
      const name = `node${i}`;
      const nodeDir = path.join(dir, "nodes", name);
      const { certPem, privateKey } = await enroll(
        `${dept}.${name}`,
        dept,
        ["node"],
        "node",
        path.join(nodeDir, "identity"),
      );
      fs.writeFileSync(path.join(nodeDir, nodeFiles.cert), certPem);
      writeEncryptedPrivateKey(path.join(nodeDir, nodeFiles.key), privateKey, passphrase);
      fs.writeFileSync(path.join(nodeDir, nodeFiles.caCert), ca.certPem);
      fs.mkdirSync(path.join(nodeDir, "secrets"), { recursive: true, mode: 0o700 });
      fs.mkdirSync(path.join(nodeDir, "keys"), { recursive: true, mode: 0o700 });
      writeSecretFile(path.join(nodeDir, keyNodeFiles.pseudonymKey), pseudonymKey, passphrase, {
        purpose: pseudonymKeyPurpose,
      });
      const peers = Array.from({ length: total }, (_, j) => j)
        .filter((j) => j !== i)
        .map((j) => `127.0.0.1:${p2pPortBase + j}`);
      writeNodeConfig(nodeDir, {
        api: { host: "127.0.0.1", port: apiPortBase + i, tls: options.tls ?? true },
        blockIntervalMs: options.blockIntervalMs ?? 25,
        // Each department's per-subject keys live on one validator: department j on node j mod N.
        keyDepartments: observer ? [] : departments.filter((_, j) => j % nodeCount === i).map((d) => d.code),
        p2p: networked
          ? {
              ...defaultP2pConfig,
              port: p2pPortBase + i,
              peers,
              observer,
              timeoutCommitMs: options.timeoutCommitMs ?? defaultP2pConfig.timeoutCommitMs,
            }
          : null,
      });
      if (!observer) validators.push({ certificate: certPem, power: 10 });
      nodes.push({
        name,
        dir: nodeDir,
        dept,
        apiPort: apiPortBase + i,
        p2pPort: networked ? p2pPortBase + i : null,
        observer,
      });
    }

    const genesis: GenesisFile = {
      chainId,
      genesisTime: new Date(now()).toISOString(),
      operatorDept: operator,
      roots: [ca.certPem],
      departments: departments.map((d) => ({ code: d.code, name: d.name })),
      validators,
    };
    for (const n of nodes)
      fs.writeFileSync(path.join(n.dir, nodeFiles.genesis), `${JSON.stringify(genesis, null, 2)}\n`);
    const vault =
      options.vault === false
        ? undefined
        : await layOutVault(dir, operator, apiPortBase + vaultPortOffset, pseudonymKey, passphrase, enroll);
    if (vault !== undefined) members.push(vault.member);
    const caCertPath = path.join(dir, "ca", "ca-cert.pem");
    const layout: NetworkLayout = {
      dir,
      chainId,
      caCertPath,
      passphrasePath,
      members,
      nodes,
      ...(vault === undefined ? {} : { vault: vault.vault }),
    };
    fs.writeFileSync(path.join(dir, "network.json"), `${JSON.stringify(layout, null, 2)}\n`);
    return layout;
  } finally {
    registry.close();
  }
}

export function readNetworkLayout(dir: string): NetworkLayout {
  return JSON.parse(fs.readFileSync(path.join(dir, "network.json"), "utf8")) as NetworkLayout;
}
