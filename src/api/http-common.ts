/**
 * Pieces every HTTP service of citychain shares (the node API and the membership service): request
 * validation that coerces text parts (query, path) but never JSON bodies, and one mapping of errors
 * to `{"error": {code, message, field}}` with the registry's HTTP status.
 */
import { Ajv, type Options as AjvOptions } from "ajv";
import ajvFormats from "ajv-formats";
import type { FastifyError, FastifyReply, FastifyRequest } from "fastify";
import { CodedError } from "../core/errors.ts";

/**
 * Query strings and path parameters arrive as text, so they are coerced to their schema's types; a
 * JSON body is typed already, and coercing it would let {"tx": 123} pass as the string "123".
 */
export function validatorCompiler() {
  const base: AjvOptions = {
    allErrors: false,
    removeAdditional: false,
    useDefaults: true,
    addUsedSchema: false,
  };
  // ajv-formats is CommonJS: its plugin is the module's `default` property under NodeNext typing.
  const addFormats = ajvFormats.default;
  const coercing = addFormats(new Ajv({ ...base, coerceTypes: "array" }));
  const exact = addFormats(new Ajv({ ...base, coerceTypes: false }));
  return ({ schema, httpPart }: { schema: object; httpPart?: string }) =>
    (httpPart === "body" ? exact : coercing).compile(schema);
}

export function sendError(error: FastifyError | CodedError, request: FastifyRequest, reply: FastifyReply) {
  if (error instanceof CodedError) return reply.code(error.status).send({ error: error.toJSON() });
  const fe = error as FastifyError;
  if (fe.validation !== undefined) {
    const first = fe.validation[0];
    const field =
      (first?.instancePath ?? "").replace(/^\//, "").replaceAll("/", ".") ||
      (first?.params as { missingProperty?: string; additionalProperty?: string } | undefined)
        ?.missingProperty ||
      (first?.params as { additionalProperty?: string } | undefined)?.additionalProperty ||
      fe.validationContext ||
      "";
    return reply.code(400).send({
      error: {
        code: "BAD_REQUEST",
        message: `${fe.validationContext ?? "request"} ${first?.message ?? "is invalid"}`,
        field,
      },
    });
  }
  if (fe.code === "FST_ERR_CTP_BODY_TOO_LARGE") {
    return reply.code(413).send({ error: { code: "REQUEST_TOO_LARGE", message: "request body too large" } });
  }
  if (fe.code === "FST_ERR_CTP_INVALID_MEDIA_TYPE") {
    return reply
      .code(415)
      .send({ error: { code: "UNSUPPORTED_MEDIA_TYPE", message: "use Content-Type: application/json" } });
  }
  if (typeof fe.statusCode === "number" && fe.statusCode >= 400 && fe.statusCode < 500) {
    return reply.code(fe.statusCode).send({ error: { code: "BAD_REQUEST", message: fe.message } });
  }
  request.log.error({ err: error }, "internal error");
  return reply.code(500).send({ error: { code: "INTERNAL", message: "internal error" } });
}
