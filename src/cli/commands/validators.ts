/**
 * `citychain validators list|add|remove`: the validator set and its changes while the chain runs
 * (docs/operations.md "Adding and removing validators"). Changes are configuration transactions
 * signed by an admin of the operator department; `list` follows every change from genesis.json and
 * verifies each one (docs/spec/consensus.md "Validator set changes").
 */
import { X509Certificate } from "node:crypto";
import fs from "node:fs";
import path from "node:path";
import type { Command } from "commander";
import { validatorIdOf, validatorsHashOf } from "../../core/block.ts";
import { CodedError } from "../../core/errors.ts";
import { checkGenesis } from "../../core/genesis.ts";
import { decodeTx } from "../../core/tx.ts";
import { readNetworkLayout } from "../../devnet/bootstrap.ts";
import { readGenesisFile } from "../../node/genesis-file.ts";
import { nodeX509 } from "../../node/x509-port.ts";
import { validatorPagesMax } from "../../sdk/client.ts";
import { CitychainError } from "../../sdk/errors.ts";
import { loadIdentity } from "../../sdk/node.ts";
import type { TxIdentity } from "../../sdk/tx-builder.ts";
import {
  followValidatorChanges,
  sameValidators,
  type TrustedValidatorSet,
  VerificationError,
  validatorsFromJson,
} from "../../sdk/verify.ts";
import {
  type ClientFlags,
  clientFromFlags,
  genesisPathFromFlags,
  printJson,
  withClientOptions,
} from "../common.ts";
import { writeTxFile } from "./client.ts";

const validatorIdPattern = /^[0-9a-f]{64}$/;

function readCertificate(file: string): X509Certificate {
  try {
    return new X509Certificate(fs.readFileSync(path.resolve(file)));
  } catch (error) {
    throw new CodedError(
      "BAD_REQUEST",
      `--node-cert: not a certificate (${(error as Error).message})`,
      "nodeCert",
    );
  }
}

interface ChangeFlags extends ClientFlags {
  coSigners?: string;
  out?: string;
}

/** Co-signing identities from the --network folder (a devnet holds every department's admin). */
async function coSignersOf(flags: ChangeFlags): Promise<TxIdentity[]> {
  if (flags.coSigners === undefined) return [];
  const network = flags.network ?? process.env.CITYCHAIN_NETWORK;
  if (network === undefined)
    throw new CodedError(
      "BAD_REQUEST",
      "--co-signers needs --network; otherwise use --out and tx cosign",
      "coSigners",
    );
  const layout = readNetworkLayout(network);
  const passphrase = fs.readFileSync(layout.passphrasePath, "utf8").trim();
  return Promise.all(
    flags.coSigners
      .split(",")
      .filter(Boolean)
      .map(async (id) => {
        const member = layout.members.find((m) => m.enrollmentId === id.trim());
        if (member === undefined)
          throw new CodedError("NOT_FOUND", `no member ${id} in ${network}`, "coSigners");
        return loadIdentity(member.certPath, member.keyPath, { passphrase });
      }),
  );
}

/**
 * Signs the change (with any co-signers) and submits it, or with --out writes it for the other
 * departments' admins to co-sign (`citychain tx cosign`) and someone to send (`citychain tx send`).
 */
async function submit(flags: ChangeFlags, type: string, payload: Record<string, unknown>) {
  const client = await clientFromFlags(flags);
  const built = await client.buildTx(type, payload as never, await coSignersOf(flags));
  if (flags.out !== undefined) {
    writeTxFile(flags.out, built.bytes);
    printJson({ txId: built.id, file: flags.out, signatures: decodeTx(built.bytes).signatures.length });
    return;
  }
  const status = await client.submitBytes(built.bytes, { wait: true });
  if (status.status === "rejected" || (status.status === "committed" && status.code !== "OK"))
    throw new CitychainError(status.code ?? "TX_FAILED", status.message ?? "transaction failed", 400);
  printJson({ ...status, takesEffectAt: status.height === undefined ? undefined : status.height + 1 });
}

function withChangeOptions(command: Command): Command {
  return withClientOptions(command)
    .option(
      "--co-signers <ids>",
      "with --network: admins of other departments who approve, e.g. civil.admin,police.admin (departments holding > 2/3 of the power must sign)",
    )
    .option(
      "--out <file>",
      "sign only: write the transaction to <file> for co-signers (tx cosign, then tx send)",
    );
}

export function registerValidatorCommands(program: Command): void {
  const validators = program
    .command("validators")
    .description("the validator set: list it (verified from genesis), add or remove a department node");

  withClientOptions(
    validators
      .command("list")
      .description("every change of the set since genesis, each verified, and the set now")
      .option("--genesis <file>", "genesis.json to trust (default: the --network's)"),
  ).action(async (flags: ClientFlags & { genesis?: string }) => {
    const file = genesisPathFromFlags(flags);
    if (file === undefined)
      throw new CodedError(
        "BAD_REQUEST",
        "give --genesis (or --network): the set to verify the changes from",
        "genesis",
      );
    const client = await clientFromFlags(flags);
    let trusted: TrustedValidatorSet = {
      height: 1,
      validators: checkGenesis(readGenesisFile(file), nodeX509),
    };
    const changes: Array<{ height: number; validators: number; totalPower: number }> = [];
    // Pages of up to 100 changes each: a bound, far above any real chain's history.
    for (let page = 0; page < validatorPagesMax; page++) {
      const answer = await client.validatorChanges(trusted.height);
      trusted = await followValidatorChanges(trusted, answer.changes);
      for (const c of answer.changes)
        changes.push({
          height: c.height,
          validators: c.validators.length,
          totalPower: c.validators.reduce((sum, v) => sum + v.power, 0),
        });
      if (answer.more) continue;
      const next = validatorsFromJson(answer.next.validators);
      if (!sameValidators(next, validatorsHashOf(trusted.validators)))
        throw new VerificationError("the node's current set is not the one its changes lead to");
      printJson({
        verified: true,
        changes,
        validators: answer.next.validators.map((v) => ({ id: v.id, dept: v.dept, power: v.power })),
        fromHeight: answer.next.height,
      });
      return;
    }
    throw new CodedError("BAD_REQUEST", `more than ${validatorPagesMax} pages of validator changes`);
  });

  withChangeOptions(
    validators
      .command("add")
      .description("make a department node a validator (or change its power) from the next height on")
      .requiredOption("--node-cert <file>", "the node's certificate, PEM (kind and role node)")
      .option("--power <n>", "voting power (a change moves less than a third of the total)", "10"),
  ).action(async (flags: ChangeFlags & { nodeCert: string; power: string }) => {
    const cert = readCertificate(flags.nodeCert);
    const power = Number(flags.power);
    if (!Number.isSafeInteger(power) || power < 1)
      throw new CodedError("BAD_REQUEST", "--power: a positive integer", "power");
    await submit(flags, "config.validator.set", { certificate: new Uint8Array(cert.raw), power });
  });

  withChangeOptions(
    validators
      .command("remove")
      .description("remove a validator from the next height on (by id, or by its certificate)")
      .option("--id <hex>", "validator id (SHA-256 of its public key, as `list` prints)")
      .option("--node-cert <file>", "the validator's certificate, PEM"),
  ).action(async (flags: ChangeFlags & { id?: string; nodeCert?: string }) => {
    if ((flags.id === undefined) === (flags.nodeCert === undefined))
      throw new CodedError("BAD_REQUEST", "give one of --id or --node-cert", "id");
    let id = flags.id;
    if (id === undefined) {
      const spki = readCertificate(flags.nodeCert!).publicKey.export({ type: "spki", format: "der" });
      id = Buffer.from(validatorIdOf(new Uint8Array(spki))).toString("hex");
    }
    if (!validatorIdPattern.test(id))
      throw new CodedError("BAD_REQUEST", "--id: 64 lower-case hex digits", "id");
    await submit(flags, "config.validator.remove", { validatorId: id });
  });
}
