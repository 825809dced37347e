/**
 * The license scenario against a running local network (start one with `npm start` first):
 *
 *   npm run scenario -- [--dir .devnet] [--citizens 50] [--enterprises 10] [--concurrency 8]
 *
 * Registers the sample departments' license types, issues a few hundred licenses to a few dozen
 * subjects, shares one across departments with the holder's consent, revokes one, and verifies every
 * license from a node other than its issuer's against the validator set of genesis.json.
 * See src/devnet/license-scenario.ts for what each step does.
 */
import fs from "node:fs";
import { parseArgs } from "node:util";
import { readNetworkLayout } from "../src/devnet/bootstrap.ts";
import { runLicenseScenario } from "../src/devnet/license-scenario.ts";
import { CitychainClient } from "../src/sdk/client.ts";
import { loadIdentity, nodeFetch } from "../src/sdk/node.ts";

const { values } = parseArgs({
  options: {
    dir: { type: "string", default: ".devnet" },
    citizens: { type: "string", default: "50" },
    enterprises: { type: "string", default: "10" },
    concurrency: { type: "string", default: "8" },
  },
});

const layout = readNetworkLayout(values.dir);
const passphrase = fs.readFileSync(layout.passphrasePath, "utf8").trim();
const fetch = nodeFetch(fs.readFileSync(layout.caCertPath, "utf8"), 64);
const clients = new Map<string, Promise<CitychainClient>>();

const report = await runLicenseScenario({
  layout,
  citizens: Number(values.citizens),
  enterprises: Number(values.enterprises),
  concurrency: Number(values.concurrency),
  log: (line) => console.log(line),
  client(enrollmentId, nodeIndex) {
    const key = `${enrollmentId}@${nodeIndex}`;
    let client = clients.get(key);
    if (client === undefined) {
      const member = layout.members.find((m) => m.enrollmentId === enrollmentId);
      if (member === undefined) throw new Error(`no member ${enrollmentId} in ${values.dir}`);
      const url = `https://127.0.0.1:${layout.nodes[nodeIndex]!.apiPort}`;
      client = loadIdentity(member.certPath, member.keyPath, { passphrase }).then(
        (identity) => new CitychainClient({ url, identity, fetch }),
      );
      clients.set(key, client);
    }
    return client;
  },
});
console.log(JSON.stringify(report, null, 2));
