import type { HandlerRegistry, TxHandler } from "../execution.ts";
import { licenseHandlers } from "../license/handlers.ts";
import { configHandlers } from "./config.ts";
import { evidenceHandlers } from "./evidence.ts";
import { kvHandlers } from "./kv.ts";

/** The built-in transaction types. A type is consensus: adding one is a protocol upgrade. */
export function builtinHandlers(): HandlerRegistry {
  return new Map<string, TxHandler>([
    ...configHandlers,
    ...evidenceHandlers,
    ...kvHandlers,
    ...licenseHandlers,
  ]);
}
