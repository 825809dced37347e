/**
 * `citychain ca …` as real processes: init a CA, serve it, register and enroll through the CLI, and
 * check the files it writes. Then, on a bootstrapped network with a real node, revoke a member
 * through the CA service and watch the node refuse that member; and replay a revocation the ledger
 * missed with `ca sync`.
 */
import assert from "node:assert/strict";
import { type ChildProcess, spawn } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { after, before, describe, test } from "node:test";
import { Command } from "commander";
import { parseIdentityCert, readPrivateKey, verifyIssuedBy } from "../../src/ca/index.ts";
import { registerCaCommands } from "../../src/cli/commands/ca.ts";
import { CitychainError } from "../../src/sdk/errors.ts";
import { createProcessNetwork, freePort, type ProcessNetwork } from "./process-net.ts";

/** JSON answers, read loosely: the assertions check their shape. */
// biome-ignore lint/suspicious/noExplicitAny: see above
type Loose = Record<string, any>;

const binPath = path.resolve(import.meta.dirname, "../../bin/citychain.mjs");

interface CliResult {
  code: number;
  stdout: string;
  stderr: string;
}

function runCli(args: string[], env: NodeJS.ProcessEnv = {}): Promise<CliResult> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, [binPath, ...args], {
      stdio: ["ignore", "pipe", "pipe"],
      env: { ...process.env, ...env },
    });
    let stdout = "";
    let stderr = "";
    child.stdout.on("data", (d) => (stdout += d));
    child.stderr.on("data", (d) => (stderr += d));
    child.on("exit", (code) => resolve({ code: code ?? -1, stdout, stderr }));
  });
}

function ok(result: CliResult): Loose {
  assert.equal(result.code, 0, `exit ${result.code}: ${result.stderr}`);
  return JSON.parse(result.stdout) as Loose;
}

/** Starts `ca serve` and waits until it answers; the caller stops it by its pid. */
async function serve(args: string[], logFile: string): Promise<{ child: ChildProcess; url: string }> {
  const port = await freePort();
  const log = fs.openSync(logFile, "a");
  const child = spawn(process.execPath, [binPath, "ca", "serve", "--port", String(port), ...args], {
    stdio: ["ignore", log, log],
  });
  const url = `http://127.0.0.1:${port}`;
  const deadline = Date.now() + 20_000;
  for (;;) {
    if (child.exitCode !== null) throw new Error(`ca serve exited: ${fs.readFileSync(logFile, "utf8")}`);
    try {
      const response = await fetch(`${url}/v1/ca/certificate`);
      if (response.status === 200) return { child, url };
    } catch {
      // not listening yet
    }
    if (Date.now() > deadline) throw new Error(`ca serve did not start: ${fs.readFileSync(logFile, "utf8")}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

async function stop(child: ChildProcess | undefined): Promise<void> {
  if (child === undefined || child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise((r) => child.once("exit", r));
  child.kill("SIGTERM");
  await exited;
}

describe("a standalone CA through the CLI", () => {
  let dir: string;
  let caDir: string;
  let caPass: string;
  let keyPass: string;
  let server: { child: ChildProcess; url: string } | undefined;

  before(async () => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), "citychain-ca-cli-"));
    caDir = path.join(dir, "ca");
    caPass = path.join(dir, "ca.pass");
    keyPass = path.join(dir, "key.pass");
    fs.writeFileSync(caPass, "ca passphrase for the test\n", { mode: 0o600 });
    fs.writeFileSync(keyPass, "member key passphrase\n", { mode: 0o600 });
    const init = ok(await runCli(["ca", "init", "--dir", caDir, "--passphrase-file", caPass]));
    assert.equal(init.operatorDept, "infocenter");
    assert.equal(fs.statSync(caDir).mode & 0o777, 0o700);
    server = await serve(["--dir", caDir, "--passphrase-file", caPass], path.join(dir, "serve.log"));
  });

  after(async () => {
    await stop(server?.child);
    fs.rmSync(dir, { recursive: true, force: true });
  });

  test("register offline, enroll through the service: an encrypted 0600 key and the right certificate", async () => {
    const registered = ok(
      await runCli([
        "ca",
        "register",
        "--dir",
        caDir,
        "--passphrase-file",
        caPass,
        "--id",
        "infocenter.admin",
        "--roles",
        "admin,officer",
      ]),
    );
    const secretFile = path.join(dir, "secret");
    fs.writeFileSync(secretFile, registered.secret, { mode: 0o600 });
    const outDir = path.join(dir, "admin");
    const enrolled = ok(
      await runCli([
        "ca",
        "enroll",
        "--url",
        server!.url,
        "--id",
        "infocenter.admin",
        "--secret-file",
        secretFile,
        "--out-dir",
        outDir,
        "--passphrase-file",
        keyPass,
        "--ca-cert",
        path.join(caDir, "ca-cert.pem"),
      ]),
    );
    const keyPem = fs.readFileSync(enrolled.keyPath, "utf8");
    assert.match(keyPem, /^-----BEGIN ENCRYPTED PRIVATE KEY-----/);
    assert.equal(fs.statSync(enrolled.keyPath).mode & 0o777, 0o600);
    assert.equal(fs.statSync(outDir).mode & 0o777, 0o700);
    const cert = parseIdentityCert(fs.readFileSync(enrolled.certPath, "utf8"));
    const root = parseIdentityCert(fs.readFileSync(path.join(caDir, "ca-cert.pem"), "utf8"));
    assert.equal(cert.enrollmentId, "infocenter.admin");
    assert.equal(cert.dept, "infocenter");
    assert.deepEqual([...cert.roles], ["admin", "officer"]);
    assert.ok(verifyIssuedBy(cert, root));
    // The key opens with its passphrase and is the certified one.
    const key = readPrivateKey(enrolled.keyPath, { passphrase: "member key passphrase" });
    const { createPublicKey } = await import("node:crypto");
    assert.deepEqual(
      new Uint8Array(createPublicKey(key).export({ type: "spki", format: "der" })),
      cert.publicKeySpki,
    );

    // The new admin now registers someone through the service, signing with that key.
    const remote = ok(
      await runCli([
        "ca",
        "register",
        "--url",
        server!.url,
        "--cert",
        enrolled.certPath,
        "--key",
        enrolled.keyPath,
        "--passphrase-file",
        keyPass,
        "--id",
        "infocenter.bob",
        "--roles",
        "officer",
      ]),
    );
    assert.match(remote.secret, /^[A-Za-z0-9_-]{43}$/);

    // The secret was for one use: a second enrollment is one coded line and a non-zero exit.
    const again = await runCli([
      "ca",
      "enroll",
      "--url",
      server!.url,
      "--id",
      "infocenter.admin",
      "--secret-file",
      secretFile,
      "--out-dir",
      path.join(dir, "again"),
      "--passphrase-file",
      keyPass,
    ]);
    assert.notEqual(again.code, 0);
    assert.match(again.stderr, /^citychain: CA_BAD_SECRET: [^\n]+\n$/);
    assert.equal(fs.existsSync(path.join(dir, "again")), false, "nothing is left behind");
  });

  test("every subcommand has --help", async () => {
    // Two real processes show that --help exits 0 with usage on stdout; every subcommand's help text
    // is rendered in-process (a process per subcommand would cost a second each).
    for (const args of [
      ["ca", "--help"],
      ["ca", "enroll", "--help"],
    ]) {
      const result = await runCli(args);
      assert.equal(result.code, 0, `${args.join(" ")}: ${result.stderr}`);
      assert.match(result.stdout, /^Usage: citychain ca/);
    }
    const program = new Command("citychain");
    registerCaCommands(program);
    const ca = program.commands.find((command) => command.name() === "ca")!;
    assert.deepEqual(
      ca.commands.map((command) => command.name()),
      ["init", "serve", "register-dept", "register", "enroll", "reenroll", "revoke", "revocations", "sync"],
    );
    for (const command of ca.commands) {
      const help = command.helpInformation();
      assert.match(help, new RegExp(`^Usage: citychain ca ${command.name()} \\[options\\]`), command.name());
      assert.match(help, /--help/, command.name());
      assert.ok(command.description().length > 0, command.name());
    }
  });

  test("bad calls print one line with a code and exit non-zero", async () => {
    const cases = await Promise.all([
      runCli(["ca", "revoke", "--url", server!.url, "--id", "infocenter.bob"]), // no --reason
      runCli(["ca", "register", "--dir", caDir, "--id", "tax.x", "--roles", "officer"], {
        CITYCHAIN_CA_PASSPHRASE: "wrong passphrase!",
      }),
      // The admin enrolled by the first test, calling a port nobody listens on.
      runCli([
        "ca",
        "revocations",
        "--url",
        "http://127.0.0.1:1",
        "--cert",
        path.join(dir, "admin", "cert.pem"),
        "--key",
        path.join(dir, "admin", "key.pem"),
        "--passphrase-file",
        keyPass,
      ]),
    ]);
    const codes = ["BAD_REQUEST", "KEY_LOCKED", "UNREACHABLE"];
    for (const [i, result] of cases.entries()) {
      assert.notEqual(result.code, 0, `case ${i}`);
      assert.match(
        result.stderr,
        new RegExp(`^citychain: ${codes[i]}: [^\\n]+\\n$`),
        `case ${i}: ${result.stderr}`,
      );
    }
  });
});

describe("CA decisions on the ledger", () => {
  let net: ProcessNetwork;
  let server: { child: ChildProcess; url: string } | undefined;
  let caDir: string;

  before(async () => {
    net = await createProcessNetwork({ blockIntervalMs: 10 });
    await net.start();
    caDir = path.join(net.layout.dir, "ca");
    server = await serve(
      [
        "--dir",
        caDir,
        "--passphrase-file",
        net.layout.passphrasePath,
        "--ledger-url",
        net.url(),
        "--network",
        net.layout.dir,
        "--as",
        "infocenter.admin",
      ],
      path.join(net.layout.dir, "ca-serve.log"),
    );
  });

  after(async () => {
    await stop(server?.child);
    await net?.close();
  });

  async function refused(enrollmentId: string): Promise<CitychainError> {
    const client = await net.client(enrollmentId);
    try {
      await client.status();
    } catch (error) {
      assert.ok(error instanceof CitychainError, String(error));
      return error;
    }
    throw new Error(`${enrollmentId} was not refused`);
  }

  test("revoking tax.auditor through the CA service makes the node refuse it with 403 CERT_REVOKED", async () => {
    const before = await (await net.client("tax.auditor")).status();
    assert.ok(before.height >= 0);

    const answer = ok(
      await runCli([
        "ca",
        "revoke",
        "--url",
        server!.url,
        "--network",
        net.layout.dir,
        "--as",
        "infocenter.admin",
        "--id",
        "tax.auditor",
        "--reason",
        "keyCompromise",
      ]),
    );
    assert.equal(answer.ledger.status, "committed", JSON.stringify(answer.ledger));
    assert.ok(answer.ledger.height > 0);
    assert.equal(answer.identity.enrollmentId, "tax.auditor");
    assert.equal(answer.revoked.length, 1);

    const error = await refused("tax.auditor");
    assert.equal(error.status, 403);
    assert.equal(error.code, "CERT_REVOKED");
    // Others are untouched.
    await (await net.client("tax.officer")).status();
  });

  test("a revocation the ledger missed is replayed by `ca sync`, once", async () => {
    // Offline, without ledger options: the CA decides, the ledger does not know yet.
    const offline = ok(
      await runCli([
        "ca",
        "revoke",
        "--dir",
        caDir,
        "--passphrase-file",
        net.layout.passphrasePath,
        "--id",
        "land.officer",
        "--reason",
        "affiliationChanged",
      ]),
    );
    assert.equal(offline.ledger.status, "not-configured");
    await (await net.client("land.officer")).status();

    const sync = ["ca", "sync", "--dir", caDir, "--network", net.layout.dir, "--as", "infocenter.admin"];
    const first = ok(await runCli(sync));
    assert.equal(first.failed, 0, JSON.stringify(first));
    assert.equal(first.recorded, 1, JSON.stringify(first));
    assert.ok(
      first.items.some(
        (item: { kind: string; id: string; result: string }) =>
          item.kind === "identity" && item.id === "land.officer" && item.result === "recorded",
      ),
      JSON.stringify(first),
    );
    const error = await refused("land.officer");
    assert.equal(error.code, "CERT_REVOKED");

    const second = ok(await runCli(sync));
    assert.equal(second.recorded, 0, JSON.stringify(second));
    assert.equal(second.failed + second.pending, 0);
    assert.ok(second.present >= 12, "10 departments and 2 revoked identities are on the ledger");
  });
});
