/**
 * JSON Schemas of the API's routes: Fastify validates requests and serialises responses with them,
 * and the OpenAPI document at /v1/openapi.json is generated from them.
 */
const hex64 = { type: "string", pattern: "^[0-9a-f]{64}$" } as const;
const base64 = { type: "string", pattern: "^[A-Za-z0-9+/]*={0,2}$", maxLength: 8 * 1024 * 1024 } as const;

/** The body of every error answer, shared by the node API and the membership service. */
export const errorResponseSchema = {
  type: "object",
  properties: {
    error: {
      type: "object",
      properties: { code: { type: "string" }, message: { type: "string" }, field: { type: "string" } },
      required: ["code", "message"],
    },
  },
} as const;

export const apiErrorResponses = {
  400: errorResponseSchema,
  401: errorResponseSchema,
  403: errorResponseSchema,
  404: errorResponseSchema,
  409: errorResponseSchema,
  413: errorResponseSchema,
  429: errorResponseSchema,
  503: errorResponseSchema,
} as const;

const txStatus = {
  type: "object",
  properties: {
    txId: hex64,
    status: { type: "string", enum: ["pending", "committed", "rejected"] },
    height: { type: "integer" },
    index: { type: "integer" },
    code: { type: "string", description: "OK, or the stable error code of a failed or rejected transaction" },
    message: { type: "string" },
    data: { description: 'the handler\'s result; byte strings appear as {"$bytes": base64}' },
  },
  required: ["txId", "status"],
} as const;

export const validatorsJson = {
  type: "array",
  items: {
    type: "object",
    properties: {
      id: hex64,
      publicKey: { type: "string" },
      power: { type: "integer" },
      dept: { type: "string" },
    },
  },
} as const;

export const header = {
  type: "object",
  properties: {
    chainId: { type: "string" },
    height: { type: "integer" },
    time: { type: "string", format: "date-time" },
    timeMs: { type: "integer" },
    hash: hex64,
    prevHash: hex64,
    txRoot: hex64,
    resultsRoot: hex64,
    stateRoot: hex64,
    validatorsHash: hex64,
    proposer: hex64,
    lastCommitHash: hex64,
    headerBytes: {
      type: "string",
      description: "canonical CBOR header, base64; the hash is over these bytes",
    },
  },
} as const;

export const commit = {
  type: ["object", "null"],
  properties: {
    height: { type: "integer" },
    round: { type: "integer" },
    blockHash: hex64,
    signatures: {
      type: "array",
      items: { type: "object", properties: { validatorId: hex64, signature: { type: "string" } } },
    },
  },
} as const;

const block = {
  type: "object",
  properties: {
    header,
    txs: { type: "array", items: { type: "string" }, description: "canonical CBOR transactions, base64" },
    lastCommit: commit,
    commit,
  },
} as const;

export const submitTx = {
  summary: "Submit a signed transaction",
  description:
    "Admits a transaction into the mempool after checking its signatures and signers. Idempotent: resending a pending or committed transaction returns its status. With wait=true the call returns when the transaction commits (200) or after waitMs (202, still pending).",
  body: {
    type: "object",
    properties: {
      tx: base64,
      wait: { type: "boolean" },
      waitMs: { type: "integer", minimum: 0, maximum: 60_000 },
    },
    required: ["tx"],
    additionalProperties: false,
  },
  response: { 200: txStatus, 202: txStatus, ...apiErrorResponses },
} as const;

export const submitTxs = {
  summary: "Submit a batch of signed transactions",
  description:
    "Each transaction is admitted or refused on its own; results come back in order. With wait=true the call returns once every admitted transaction has committed, or after waitMs.",
  body: {
    type: "object",
    properties: {
      txs: { type: "array", items: base64, minItems: 1, maxItems: 2000 },
      wait: { type: "boolean" },
      waitMs: { type: "integer", minimum: 0, maximum: 60_000 },
    },
    required: ["txs"],
    additionalProperties: false,
  },
  response: {
    200: {
      type: "object",
      properties: {
        results: {
          type: "array",
          items: {
            type: "object",
            properties: {
              ...txStatus.properties,
              index: { type: "integer" },
              error: errorResponseSchema.properties.error,
            },
          },
        },
      },
    },
    ...apiErrorResponses,
  },
} as const;

export const getTx = {
  summary: "A transaction's status and result",
  params: { type: "object", properties: { id: hex64 }, required: ["id"] },
  response: { 200: txStatus, ...apiErrorResponses },
} as const;

export const getBlock = {
  summary: "The latest committed block with its commit certificate",
  response: { 200: block, ...apiErrorResponses },
} as const;

export const getBlockByRef = {
  summary: "A block by height or by hash",
  params: {
    type: "object",
    properties: { ref: { type: "string", pattern: "^(?:[0-9]{1,15}|[0-9a-f]{64})$" } },
    required: ["ref"],
  },
  response: { 200: block, ...apiErrorResponses },
} as const;

export const getState = {
  summary: "A state key's value with its proof against the latest block's state root",
  description:
    "The proof shows inclusion (or non-inclusion when value is null) against header.stateRoot; the header's hash is signed by the validators in commit.",
  querystring: {
    type: "object",
    properties: { key: { type: "string", minLength: 1, maxLength: 512 } },
    required: ["key"],
    additionalProperties: false,
  },
  response: {
    200: {
      type: "object",
      properties: {
        key: { type: "string" },
        value: { type: ["string", "null"] },
        valueHash: { type: ["string", "null"] },
        height: { type: "integer" },
        proof: { type: "object", additionalProperties: true },
        header,
        commit,
        validators: validatorsJson,
      },
    },
    ...apiErrorResponses,
  },
} as const;

export const getValidators = {
  summary: "The validator set of the next height and every change of the set, with proofs",
  description:
    "Each change took effect at `height`; its proof shows the new list as state key sys/validators in the state root of block height - 1, whose header is signed (commit) by the set before the change. A client that trusts the genesis set follows the changes in order (SDK followValidatorChanges). Paged by `after` (a height), at most 100 changes per answer.",
  querystring: {
    type: "object",
    properties: { after: { type: "integer", minimum: 0, default: 0 } },
    additionalProperties: false,
  },
  response: {
    200: {
      type: "object",
      properties: {
        height: { type: "integer", description: "the latest block" },
        next: {
          type: "object",
          properties: { height: { type: "integer" }, validators: validatorsJson },
        },
        changes: {
          type: "array",
          items: {
            type: "object",
            properties: {
              height: { type: "integer" },
              validators: validatorsJson,
              value: { type: "string", description: "base64 of the canonical list, the proven value" },
              proof: { type: "object", additionalProperties: true },
              header,
              commit,
            },
          },
        },
        more: { type: "boolean", description: "more changes follow the last one listed" },
      },
    },
    ...apiErrorResponses,
  },
} as const;

export const getStatus = {
  summary: "Node status",
  response: {
    200: {
      type: "object",
      properties: {
        chainId: { type: "string" },
        version: { type: "string" },
        height: { type: "integer" },
        latestHash: hex64,
        latestTime: { type: "string" },
        stateRoot: hex64,
        syncing: { type: "boolean" },
        validatorId: hex64,
        mempool: { type: "object", properties: { txs: { type: "integer" }, bytes: { type: "integer" } } },
        storage: {
          type: "object",
          properties: {
            treeHeight: { type: "integer" },
            heldTreeNodes: { type: "integer" },
            heldTreeBytes: { type: "integer" },
          },
        },
        network: {
          type: ["object", "null"],
          properties: {
            validator: { type: "boolean" },
            peers: {
              type: "array",
              items: {
                type: "object",
                properties: {
                  nodeId: hex64,
                  dept: { type: "string" },
                  role: { type: "string" },
                  direction: { type: "string" },
                  height: { type: "integer" },
                  rttMs: { type: ["number", "null"] },
                },
              },
            },
            consensus: {
              type: ["object", "null"],
              properties: {
                height: { type: "integer" },
                round: { type: "integer" },
                step: { type: "string" },
              },
            },
            counters: { type: "object", additionalProperties: { type: "integer" } },
          },
        },
        caller: {
          type: "object",
          properties: {
            certId: hex64,
            enrollmentId: { type: "string" },
            dept: { type: "string" },
            roles: { type: "array", items: { type: "string" } },
          },
        },
      },
    },
    ...apiErrorResponses,
  },
} as const;
