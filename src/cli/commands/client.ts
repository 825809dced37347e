/** Commands that talk to a node: tx submit|cosign|send|status, query, block, status. */
import fs from "node:fs";
import path from "node:path";
import type { Command } from "commander";
import { type Canonical, fromBase64, fromHex, fromUtf8, toBase64, utf8 } from "../../core/encoding.ts";
import { CodedError } from "../../core/errors.ts";
import { decodeTx } from "../../core/tx.ts";
import type { CitychainClient } from "../../sdk/client.ts";
import { cosignTx } from "../../sdk/tx-builder.ts";
import { type ClientFlags, clientFromFlags, printJson, withClientOptions } from "../common.ts";

/** JSON to canonical values: {"$bytes": base64}, {"$hex": hex} and {"$text": utf8} become byte strings. */
export function jsonToCanonical(value: unknown, field = "payload"): Canonical {
  if (value === null || typeof value === "boolean" || typeof value === "string") return value;
  if (typeof value === "number") {
    if (!Number.isSafeInteger(value))
      throw new CodedError("PAYLOAD_INVALID", `${field}: only integers`, field);
    return value;
  }
  if (Array.isArray(value)) return value.map((v, i) => jsonToCanonical(v, `${field}[${i}]`));
  if (typeof value === "object") {
    const entries = Object.entries(value as Record<string, unknown>);
    if (entries.length === 1) {
      const [k, v] = entries[0]!;
      if (k === "$bytes" && typeof v === "string") return fromBase64(v, field);
      if (k === "$hex" && typeof v === "string") return fromHex(v, field);
      if (k === "$text" && typeof v === "string") return utf8(v);
    }
    return Object.fromEntries(entries.map(([k, v]) => [k, jsonToCanonical(v, `${field}.${k}`)]));
  }
  throw new CodedError("PAYLOAD_INVALID", `${field}: unsupported JSON value`, field);
}

function parsePayload(text: string): Canonical {
  const source = text.startsWith("@") ? fs.readFileSync(text.slice(1), "utf8") : text;
  try {
    return jsonToCanonical(JSON.parse(source));
  } catch (error) {
    if (error instanceof CodedError) throw error;
    throw new CodedError(
      "PAYLOAD_INVALID",
      `payload is not valid JSON: ${(error as Error).message}`,
      "payload",
    );
  }
}

function showValue(value: Uint8Array | null): { text?: string; base64?: string } | null {
  if (value === null) return null;
  try {
    return { text: fromUtf8(value), base64: toBase64(value) };
  } catch {
    return { base64: toBase64(value) };
  }
}

/** A transaction file: base64 of its canonical bytes, one line. */
export function writeTxFile(file: string, bytes: Uint8Array): void {
  fs.writeFileSync(path.resolve(file), `${toBase64(bytes)}\n`);
}

export function readTxFile(file: string): Uint8Array {
  const text = fs.readFileSync(path.resolve(file), "utf8").trim();
  return fromBase64(text, "file");
}

export async function submitAndPrint(
  client: CitychainClient,
  bytes: Uint8Array,
  flags: { wait: boolean; waitMs: string },
): Promise<void> {
  const status = await client.submitBytes(bytes, { wait: flags.wait, waitMs: Number(flags.waitMs) });
  printJson(status);
  if (status.status === "rejected" || (status.status === "committed" && status.code !== "OK"))
    process.exitCode = 1;
}

export function registerClientCommands(program: Command): void {
  const tx = program.command("tx").description("submit transactions and follow them");
  withClientOptions(
    tx
      .command("submit")
      .description("sign and submit a transaction")
      .requiredOption("--type <type>", "transaction type, e.g. kv.put")
      .requiredOption(
        "--payload <json>",
        'payload as JSON, or @file; bytes as {"$text": …}, {"$bytes": base64}, {"$hex": …}',
      )
      .option("--no-wait", "return once the node accepted it, without waiting for the commit")
      .option("--wait-ms <ms>", "longest wait for the commit", "30000")
      .option(
        "--out <file>",
        "sign only: write the transaction to <file> for co-signers (tx cosign, tx send)",
      ),
  ).action(
    async (
      flags: ClientFlags & { type: string; payload: string; wait: boolean; waitMs: string; out?: string },
    ) => {
      const client = await clientFromFlags(flags);
      const built = await client.buildTx(flags.type, parsePayload(flags.payload));
      if (flags.out !== undefined) {
        writeTxFile(flags.out, built.bytes);
        printJson({ txId: built.id, file: flags.out, signatures: 1 });
        return;
      }
      await submitAndPrint(client, built.bytes, flags);
    },
  );
  withClientOptions(
    tx
      .command("cosign <file>")
      .description(
        "add your signature to a transaction file another party signed (multi-department approval)",
      ),
  ).action(async (file: string, flags: ClientFlags) => {
    const client = await clientFromFlags(flags);
    const signed = await cosignTx(readTxFile(file), client.identity);
    writeTxFile(file, signed.bytes);
    printJson({ txId: signed.id, file, signatures: decodeTx(signed.bytes).signatures.length });
  });
  withClientOptions(
    tx
      .command("send <file>")
      .description("submit a signed transaction file")
      .option("--no-wait", "return once the node accepted it, without waiting for the commit")
      .option("--wait-ms <ms>", "longest wait for the commit", "30000"),
  ).action(async (file: string, flags: ClientFlags & { wait: boolean; waitMs: string }) => {
    await submitAndPrint(await clientFromFlags(flags), readTxFile(file), flags);
  });
  withClientOptions(tx.command("status <txId>").description("a transaction's status and result")).action(
    async (txId: string, flags: ClientFlags) => printJson(await (await clientFromFlags(flags)).tx(txId)),
  );

  withClientOptions(
    program
      .command("query <key>")
      .description(
        "read a state key; its proof and the block's commit are verified before anything is printed",
      )
      .option("--raw", "print the node's answer without verifying it"),
  ).action(async (key: string, flags: ClientFlags & { raw?: boolean }) => {
    const client = await clientFromFlags(flags);
    if (flags.raw) return printJson(await client.stateRaw(key));
    const { value, height } = await client.state(key);
    printJson({ key, height, verified: true, value: showValue(value) });
  });

  withClientOptions(
    program.command("block [ref]").description("a block by height or hash (default: latest)"),
  ).action(async (ref: string | undefined, flags: ClientFlags) =>
    printJson(await (await clientFromFlags(flags)).block(ref ?? "latest")),
  );

  withClientOptions(program.command("status").description("the node's status")).action(
    async (flags: ClientFlags) => printJson(await (await clientFromFlags(flags)).status()),
  );
}
