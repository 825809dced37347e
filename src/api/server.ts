/**
 * The node's HTTP/JSON API, versioned under /v1, with a JSON Schema on every route (validation and
 * the OpenAPI document come from the same schemas).
 *
 * Every request, read or write, carries an RFC 9421 signature by a CA-issued identity (see
 * docs/api-auth.md). The signer is judged by the ledger: a certificate chained to a trusted root,
 * not expired, not revoked, of a registered, active department. Failures are JSON errors with a
 * stable code and 401/403; malformed input is a 400 naming the field.
 */
import swagger from "@fastify/swagger";
import Fastify, { type FastifyError, type FastifyInstance, type FastifyRequest } from "fastify";
import { decodeCanonical, fromBase64, fromHex, toBase64, toHex } from "../core/encoding.ts";
import { CodedError, errorStatus, isErrorCode } from "../core/errors.ts";
import { certificateUnknownError, parseSignedRequest } from "../core/httpsig.ts";
import { type Identity, resolveIdentity } from "../core/identity.ts";
import { proofToJson } from "../core/smt-proof.ts";
import { encodeValidators, stateKeys } from "../core/system-state.ts";
import { blockToJson, canonicalToJson, commitToJson, headerToJson } from "../core/views.ts";
import type { LicenseKeyNode } from "../license/key-node.ts";
import type { NetworkStatus } from "../node/network-node.ts";
import type { ChainNode, TxStatus } from "../node/node.ts";
import { sendError, validatorCompiler } from "./http-common.ts";
import { registerLicenseRoutes } from "./license-routes.ts";
import { commitAt, proofAnchor, provenEntry, validatorsToJson } from "./proofs.ts";
import { RequestVerifier } from "./request-auth.ts";
import * as schemas from "./schemas.ts";

export interface ApiOptions {
  /** Largest request body accepted, in bytes. */
  readonly bodyBytesMax: number;
  /** Transactions in one batch submission. */
  readonly batchTxsMax: number;
  readonly clockSkewMsMax: number;
  readonly tls?: { readonly certPem: string; readonly keyPem: string; readonly passphrase?: string };
  readonly logger: boolean;
  /** The node's key node: license decryption, pseudonyms and department keys (absent in tools). */
  readonly keyNode?: LicenseKeyNode;
  /** The peer network and consensus, for `GET /v1/status` (null or absent in solo mode). */
  readonly network?: () => NetworkStatus | null;
}

export const defaultApiOptions: ApiOptions = {
  bodyBytesMax: 8 * 1024 * 1024,
  batchTxsMax: 2000,
  clockSkewMsMax: 300_000,
  logger: false,
};

declare module "fastify" {
  interface FastifyRequest {
    identity: Identity | null;
    rawBody: Buffer | null;
  }
}

export const apiVersion = "1.0.0";

export async function buildApi(node: ChainNode, now: () => number, options: ApiOptions = defaultApiOptions) {
  const app: FastifyInstance = Fastify({
    logger: options.logger,
    bodyLimit: options.bodyBytesMax,
    ...(options.tls === undefined
      ? {}
      : {
          https: { cert: options.tls.certPem, key: options.tls.keyPem, passphrase: options.tls.passphrase },
        }),
  }) as unknown as FastifyInstance;
  app.setValidatorCompiler(validatorCompiler());
  const verifier = new RequestVerifier({ now, clockSkewMsMax: options.clockSkewMsMax });

  await app.register(swagger, {
    openapi: {
      openapi: "3.1.0",
      info: {
        title: "citychain node API",
        version: apiVersion,
        description: "Every request carries an RFC 9421 HTTP message signature by a CA-issued identity.",
      },
      components: {
        securitySchemes: {
          httpSignature: {
            type: "apiKey",
            in: "header",
            name: "Signature",
            description: "RFC 9421 signature with Signature-Input and Content-Digest; see docs/api-auth.md",
          },
        },
      },
      security: [{ httpSignature: [] }],
    },
  });

  app.decorateRequest("identity", null);
  app.decorateRequest("rawBody", null);
  // Keep the exact body bytes: the signature covers their digest, not re-serialised JSON. JSON is the
  // only body type: Fastify's default text/plain parser would hand routes a body the signature skipped.
  app.removeAllContentTypeParsers();
  app.addContentTypeParser("application/json", { parseAs: "buffer" }, (request, body, done) => {
    const buffer = body as Buffer;
    request.rawBody = buffer;
    if (buffer.length === 0) return done(null, undefined);
    try {
      done(null, JSON.parse(buffer.toString("utf8")));
    } catch {
      done(new CodedError("BAD_REQUEST", "body is not valid JSON"), undefined);
    }
  });

  app.addHook("preValidation", async (request) => {
    request.identity = await authenticate(node, verifier, request, now);
  });

  app.setErrorHandler((error: FastifyError | CodedError, request, reply) => sendError(error, request, reply));
  app.setNotFoundHandler((request, reply) =>
    sendError(
      new CodedError("NOT_FOUND", `no route ${request.method} ${request.url.split("?")[0]}`),
      request,
      reply,
    ),
  );

  registerRoutes(app, node, options);
  registerLicenseRoutes(app, node, now, options.keyNode ?? null);
  await app.ready();
  return app;
}

/**
 * Query strings and path parameters arrive as text, so they are coerced to their schema's types; a JSON
 * body is typed already, and coercing it would let {"tx": 123} pass as the string "123".
 */

async function authenticate(
  node: ChainNode,
  verifier: RequestVerifier,
  request: FastifyRequest,
  now: () => number,
): Promise<Identity> {
  const parsed = parseSignedRequest({
    method: request.method,
    url: request.url,
    headers: request.headers,
    ...(request.rawBody === null || request.rawBody.length === 0 ? {} : { body: request.rawBody }),
  });
  const { ledger } = node;
  let identity: Identity;
  if (parsed.certDer === undefined) {
    const der = ledger.state.get(stateKeys.cert(parsed.keyId));
    if (der === undefined) throw certificateUnknownError("the ledger");
    identity = ledger.identityAt(der, now());
  } else {
    identity = resolveIdentity(ledger.x509, ledger.state, parsed.certDer, now());
  }
  await verifier.verify(parsed, identity.publicKeySpki);
  return identity;
}

const canonicalNullByte = 0xf6;

function statusToJson(status: TxStatus) {
  if (status.status !== "committed") return status;
  let data: unknown = null;
  // Most results carry no data: canonical null is the one byte 0xf6, not worth a decoder per answer.
  if (!(status.data.length === 1 && status.data[0] === canonicalNullByte)) {
    try {
      data = canonicalToJson(decodeCanonical(status.data, 1024 * 1024));
    } catch {
      data = { $bytes: toBase64(status.data) };
    }
  }
  return {
    txId: status.txId,
    status: status.status,
    height: status.height,
    index: status.index,
    code: status.code,
    message: status.message,
    data,
  };
}

function httpStatusOf(status: TxStatus): number {
  if (status.status === "pending") return 202;
  if (status.status === "committed") return 200;
  return isErrorCode(status.code) ? errorStatus[status.code] : 400;
}

function registerRoutes(app: FastifyInstance, node: ChainNode, options: ApiOptions): void {
  const ledger = node.ledger;

  app.post("/v1/tx", { schema: schemas.submitTx }, async (request, reply) => {
    const body = request.body as { tx: string; wait?: boolean; waitMs?: number };
    const status = await node.submit(fromBase64(body.tx, "tx"));
    const final =
      body.wait === true && status.status === "pending"
        ? await node.waitFor(status.txId, body.waitMs ?? 30_000)
        : status;
    if (final.status === "rejected") {
      // Refused while the client waited (e.g. its signer was revoked earlier in the same block): an
      // error like any other, since the error statuses' schema would strip a status body to {}.
      const code = isErrorCode(final.code) ? final.code : "BAD_REQUEST";
      throw new CodedError(code, `transaction ${final.txId} was rejected: ${final.message}`);
    }
    return reply.code(httpStatusOf(final) as 200).send(statusToJson(final));
  });

  app.post("/v1/txs", { schema: schemas.submitTxs }, async (request, reply) => {
    const body = request.body as { txs: string[]; wait?: boolean; waitMs?: number };
    if (body.txs.length > options.batchTxsMax) {
      throw new CodedError("BAD_REQUEST", `at most ${options.batchTxsMax} transactions per batch`, "txs");
    }
    const results = await Promise.all(
      body.txs.map(async (b64, i) => {
        try {
          const status = await node.submit(fromBase64(b64, `txs[${i}]`));
          const final =
            body.wait === true && status.status === "pending"
              ? await node.waitFor(status.txId, body.waitMs ?? 30_000)
              : status;
          return statusToJson(final);
        } catch (error) {
          if (error instanceof CodedError) return { index: i, error: error.toJSON() };
          throw error;
        }
      }),
    );
    return reply.code(200).send({ results });
  });

  app.get("/v1/tx/:id", { schema: schemas.getTx }, async (request, reply) => {
    const { id } = request.params as { id: string };
    const status = node.status(id);
    if (status.status === "rejected" && status.code === "TX_NOT_FOUND") {
      throw new CodedError("TX_NOT_FOUND", `no transaction ${id}`, "id");
    }
    return reply.code(200).send(statusToJson(status));
  });

  app.get("/v1/blocks/latest", { schema: schemas.getBlock }, async () => {
    const block = ledger.latest();
    return blockToJson(block, commitAt(node, block.header.height));
  });

  app.get("/v1/blocks/:ref", { schema: schemas.getBlockByRef }, async (request) => {
    const { ref } = request.params as { ref: string };
    const row = /^\d{1,15}$/.test(ref)
      ? ledger.store.blockByHeight(Number(ref))
      : ledger.store.blockByHash(fromHex(ref, "ref"));
    if (row === undefined) throw new CodedError("BLOCK_NOT_FOUND", `no block ${ref}`, "ref");
    const block = ledger.blockAt(row.height)!;
    return blockToJson(block, commitAt(node, row.height));
  });

  app.get("/v1/state", { schema: schemas.getState }, async (request) => {
    const { key } = request.query as { key: string };
    return { ...provenEntry(node, key), ...proofAnchor(node) };
  });

  app.get("/v1/validators", { schema: schemas.getValidators }, async (request) => {
    const { after } = request.query as { after: number };
    const pageMax = 100;
    const changes = ledger.validatorChanges(after, pageMax + 1);
    return {
      height: ledger.height(),
      next: { height: ledger.height() + 1, validators: validatorsToJson(ledger.validators()) },
      changes: changes.slice(0, pageMax).map((change) => {
        const block = ledger.blockAt(change.height - 1)!;
        const commitOrNull = commitAt(node, change.height - 1);
        return {
          height: change.height,
          validators: validatorsToJson(change.validators),
          value: toBase64(encodeValidators(change.validators)),
          proof: change.proof === null ? null : proofToJson(change.proof),
          header: headerToJson(block.header, block.hash, block.headerBytes),
          commit: commitOrNull === null ? null : commitToJson(commitOrNull),
        };
      }),
      more: changes.length > pageMax,
    };
  });

  app.get("/v1/status", { schema: schemas.getStatus }, async (request) => {
    const block = ledger.latest();
    return {
      chainId: block.header.chainId,
      version: apiVersion,
      height: block.header.height,
      latestHash: toHex(block.hash),
      latestTime: new Date(block.header.timeMs).toISOString(),
      stateRoot: toHex(block.header.stateRoot),
      syncing: node.syncing,
      validatorId: toHex(node.validatorId),
      mempool: { txs: node.mempool.size, bytes: node.mempool.sizeBytes },
      storage: ledger.store.treeFlushStatus(),
      network: options.network?.() ?? null,
      caller: {
        certId: request.identity!.certId,
        enrollmentId: request.identity!.enrollmentId,
        dept: request.identity!.dept,
        roles: [...request.identity!.roles],
      },
    };
  });

  app.get("/v1/openapi.json", { schema: { hide: true } as object }, async () => app.swagger());
}
