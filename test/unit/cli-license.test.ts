/**
 * `citychain license …` and `citychain subject …` as real child processes against one node in this
 * process: catalogue set-up, a self-custody holder, issue → show → verify (exit 0 valid, 3 revoked)
 * → search, the holder's own list, and the one-line errors (a malformed id names its field; an
 * unregistered holder is refused before anything is sent).
 */
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import fs from "node:fs";
import path from "node:path";
import { after, before, describe, test } from "node:test";
import { Command } from "commander";
import { registerLicenseCommands } from "../../src/cli/commands/license.ts";
import { registerSubjectCommands } from "../../src/cli/commands/subject.ts";
import { usccCheckChar } from "../../src/core/license/identifier.ts";
import { startTestNetwork, type TestNetwork } from "../helpers/net.ts";

/** JSON answers, read loosely: the assertions check their shape. */
// biome-ignore lint/suspicious/noExplicitAny: see above
type Loose = Record<string, any>;

const binPath = path.resolve(import.meta.dirname, "../../bin/citychain.mjs");
const uscc = (body17: string) => body17 + usccCheckChar(body17);
const policeCode = uscc("11330100MB0000001");
const typeCode = `${policeCode}001`;
const subjectPassphrase = "holder passphrase for tests";

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

describe("citychain license and subject", () => {
  let net: TestNetwork;
  let dir: string;
  let issued: Loose;
  const holderCode = citizenId("99010119900307123");

  /** Identity options of a member of the test network. */
  const as = (enrollmentId: string): string[] => {
    const m = net.member(enrollmentId);
    return [
      "--url",
      net.url,
      "--cert",
      m.certPath,
      "--key",
      m.keyPath,
      "--ca-cert",
      net.layout.caCertPath,
      "--passphrase-file",
      net.layout.passphrasePath,
    ];
  };
  const cli = (args: string[]) => runCli(args, { CITYCHAIN_SUBJECT_PASSPHRASE: subjectPassphrase });

  before(async () => {
    net = await startTestNetwork();
    dir = fs.mkdtempSync(path.join(net.layout.dir, "cli-"));
    fs.writeFileSync(
      path.join(dir, "type.json"),
      JSON.stringify({
        code: typeCode,
        name: "Residence certificate",
        schema: {
          type: "object",
          properties: {
            number: { type: "string", minLength: 1, maxLength: 32 },
            address: { type: "string", minLength: 1, maxLength: 200 },
          },
          required: ["number", "address"],
          additionalProperties: false,
        },
        issuers: ["police"],
        personalFields: ["address"],
        validityDays: 3650,
        rules: [
          { id: "police-issue", effect: "allow", dept: "$issuers", roles: ["officer"], actions: ["issue"] },
          {
            id: "police-manage",
            effect: "allow",
            dept: "$issuer",
            roles: ["officer", "admin"],
            actions: ["suspend", "revoke", "query", "decrypt"],
            fields: ["*"],
          },
          {
            id: "tax-read",
            effect: "allow",
            dept: "tax",
            roles: ["officer"],
            actions: ["decrypt"],
            fields: ["*"],
          },
          { id: "members-query", effect: "allow", dept: "*", roles: ["*"], actions: ["query"] },
        ],
      }),
    );
    fs.writeFileSync(
      path.join(dir, "content.json"),
      JSON.stringify({ number: "R-1", address: "1 Lake Road" }),
    );
  });

  after(() => net?.close());

  test("register-type reads a type file; the node lists the type", async () => {
    const admin = await net.clientFor("infocenter.admin");
    await admin.send("license.issuer.set", { dept: "police", creditCode: policeCode, areaCode: "330100" });
    const registered = await cli([
      "license",
      "register-type",
      ...as("police.admin"),
      "--file",
      path.join(dir, "type.json"),
    ]);
    assert.equal(registered.code, 0, registered.stderr);
    assert.match(registered.stdout, new RegExp(`^registered type ${typeCode} at height \\d+\n$`));
    const { types } = (await admin.request<{ types: Loose[] }>("GET", "/v1/license-types")).body;
    assert.deepEqual(
      types.map((t) => t.code),
      [typeCode],
    );
  });

  test("issuing to a holder who is not registered fails with one clear line", async () => {
    const stranger = citizenId("99010119800101123");
    const result = await cli([
      "license",
      "issue",
      ...as("police.officer"),
      "--type",
      typeCode,
      "--serial",
      "20260000009",
      "--holder-code-type",
      "111",
      "--holder-code",
      stranger,
      "--holder-name",
      "Zhang San",
      "--content",
      path.join(dir, "content.json"),
    ]);
    assert.equal(result.code, 1);
    assert.match(
      result.stderr,
      /^citychain: SUBJECT_UNKNOWN: the holder is not a registered data subject[^\n]*\n$/,
    );
  });

  test("a self-custody holder is registered; issue, show and verify (exit 0)", async () => {
    const keysDir = path.join(dir, "holder-keys");
    const registered = ok(
      await cli([
        "subject",
        "register",
        ...as("police.officer"),
        "--code-type",
        "111",
        "--code",
        holderCode,
        "--custody",
        "self",
        "--keys-dir",
        keysDir,
        "--json",
      ]),
    );
    assert.match(registered.pseudonym, /^[0-9a-f]{64}$/);
    assert.equal((fs.statSync(path.join(keysDir, "signing.key")).mode & 0o777).toString(8), "600");
    assert.ok(!fs.readFileSync(path.join(keysDir, "signing.key"), "utf8").includes("PRIVATE KEY"));

    issued = ok(
      await cli([
        "license",
        "issue",
        ...as("police.officer"),
        "--type",
        typeCode,
        "--serial",
        "20260000001",
        "--holder-code-type",
        "111",
        "--holder-code",
        holderCode,
        "--holder-name",
        "Zhang San",
        "--content",
        path.join(dir, "content.json"),
        "--valid-until",
        "2036-12-31T23:59:59Z",
        "--json",
      ]),
    );
    assert.equal(issued.holder, registered.pseudonym);
    assert.match(issued.qr, /^CCL1:CITYCHAIN-DEV:/);

    const [shown, human, verified, byQr] = await Promise.all([
      cli(["license", "show", issued.id, ...as("tax.officer"), "--json"]),
      cli(["license", "show", issued.id, ...as("tax.officer")]),
      cli(["license", "verify", issued.id, ...as("tax.officer"), "--json"]),
      cli(["license", "verify", "--qr", issued.qr, ...as("tax.officer")]),
    ]);
    const view = ok(shown);
    assert.equal(view.status, "valid");
    assert.deepEqual(view.content, { number: "R-1" });
    assert.equal(human.code, 0);
    assert.match(
      human.stdout,
      new RegExp(`^${issued.id.replaceAll(".", "\\.")}  Residence certificate  valid\n`),
    );
    assert.ok(!human.stdout.includes("Lake Road"));
    assert.equal(ok(verified).status, "valid");
    assert.equal(byQr.code, 0, byQr.stderr);
    assert.match(byQr.stdout, /: valid\n/);
  });

  test("search by holder code; the holder lists their own licenses with their own keys", async () => {
    const [byCode, mine] = await Promise.all([
      cli([
        "license",
        "search",
        ...as("tax.officer"),
        "--holder-code-type",
        "111",
        "--holder-code",
        holderCode,
        "--json",
      ]),
      cli([
        "subject",
        "licenses",
        ...as("tax.officer"),
        "--keys-dir",
        path.join(dir, "holder-keys"),
        "--json",
      ]),
    ]);
    assert.deepEqual(
      ok(byCode).items.map((i: Loose) => i.id),
      [issued.id],
    );
    assert.deepEqual(
      ok(mine).items.map((i: Loose) => i.id),
      [issued.id],
    );
  });

  test("the department publishes its key, the holder grants with their own keys, the department opens", async () => {
    const tax = as("tax.officer");
    ok(await cli(["subject", "department-key", issued.holder, ...tax, "--json"]));
    const keys = ["--keys-dir", path.join(dir, "holder-keys")];
    ok(
      await cli([
        "subject",
        "grant",
        "--license",
        issued.licenseKey,
        "--dept",
        "tax",
        ...keys,
        ...tax,
        "--json",
      ]),
    );
    const opened = ok(await cli(["license", "open", issued.id, ...tax, "--json"]));
    assert.equal(opened.basis, "consent");
    assert.deepEqual(opened.fields, { holderName: "Zhang San", holderCode, address: "1 Lake Road" });
  });

  test("revoked: verify exits 3 and says so", async () => {
    ok(
      await cli([
        "license",
        "revoke",
        issued.licenseKey,
        "--reason",
        "replaced",
        ...as("police.officer"),
        "--json",
      ]),
    );
    const verified = await cli(["license", "verify", issued.licenseKey, ...as("tax.officer")]);
    assert.equal(verified.code, 3, verified.stderr);
    assert.match(verified.stdout, /: revoked\n/);
  });

  test("a malformed id: exit 1 and one LICENSE_ID_MALFORMED line naming the field", async () => {
    const wrongCheck = `${issued.id.slice(0, -1)}${issued.id.endsWith("0") ? "1" : "0"}`;
    const [check, garbage] = await Promise.all([
      cli(["license", "verify", wrongCheck, ...as("tax.officer")]),
      cli(["license", "show", "not-a-license", ...as("tax.officer")]),
    ]);
    assert.equal(check.code, 1);
    assert.equal(check.stdout, "");
    assert.match(check.stderr, /^citychain: LICENSE_ID_MALFORMED: [^\n]+ \(field checkChar\)\n$/);
    assert.equal(garbage.code, 1);
    assert.match(garbage.stderr, /^citychain: LICENSE_ID_MALFORMED: [^\n]+ \(field id\)\n$/);
  });

  test("every command has a description and --help", () => {
    const program = new Command("citychain");
    registerLicenseCommands(program);
    registerSubjectCommands(program);
    for (const group of program.commands) {
      assert.ok(group.commands.length > 0, group.name());
      for (const command of group.commands) {
        assert.ok(command.description().length > 0, command.name());
        assert.match(command.helpInformation(), /--help/, command.name());
      }
    }
    assert.deepEqual(
      program.commands.find((c) => c.name() === "subject")!.commands.map((c) => c.name()),
      ["pseudonym", "register", "show", "department-key", "grant", "withdraw", "licenses", "trail", "forget"],
    );
  });
});

/** A syntactically valid (synthetic) 18-character citizen ID: 17 digits and the MOD 11-2 check. */
function citizenId(body17: string): string {
  const weights = [7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2];
  const sum = [...body17].reduce((s, c, i) => s + Number(c) * weights[i]!, 0);
  return body17 + "10X98765432"[sum % 11];
}
