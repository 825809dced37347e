/**
 * What a running node does with an error nothing handled: it stops. The node is crash-only (a
 * restart recovers from the chain store and the consensus WAL, and a block whose write failed was
 * rolled back and is fetched again), so carrying on after an unknown failure would only risk a state
 * the store does not hold. Before it exits it writes one fatal line to its JSON log naming what
 * happened and what the operator should do, so log collectors see why, not only a stack trace on
 * stderr (docs/operations.md, "When a node stops on its own").
 */
import { CodedError } from "../core/errors.ts";

export interface FatalAdvice {
  /** A stable code for alerting: STORAGE_FULL, STORAGE_IO, STORAGE_CORRUPT or INTERNAL. */
  readonly code: "STORAGE_FULL" | "STORAGE_IO" | "STORAGE_CORRUPT" | "INTERNAL";
  /** What happened and what to do, one sentence for the log line. */
  readonly advice: string;
}

function errorCodeOf(error: unknown): string | undefined {
  if (typeof error !== "object" || error === null || !("code" in error)) return undefined;
  const code = (error as { code: unknown }).code;
  return typeof code === "string" ? code : undefined;
}

/** Classifies an unhandled error for the operator; never throws. */
export function fatalAdvice(error: unknown): FatalAdvice {
  const code = errorCodeOf(error);
  if (code === "SQLITE_FULL" || code === "ENOSPC") {
    return {
      code: "STORAGE_FULL",
      advice:
        "the disk holding the data folder is full: free space, then restart the node (the block being written was rolled back and is fetched again from peers)",
    };
  }
  if (code !== undefined && (code.startsWith("SQLITE_IOERR") || code === "EIO")) {
    return {
      code: "STORAGE_IO",
      advice:
        "the disk failed a read or write: check it, run `citychain verify --data <folder>`, then restart the node",
    };
  }
  if (error instanceof CodedError && error.code === "STORAGE_CORRUPT") {
    return {
      code: "STORAGE_CORRUPT",
      advice:
        "the data folder does not hold what the node wrote: run `citychain verify --data <folder>`, and restore it from a backup or a peer if it fails",
    };
  }
  return {
    code: "INTERNAL",
    advice:
      "an unexpected error stopped the node: restart it (it recovers from its data folder) and report the stack trace in this line",
  };
}

interface FatalLogger {
  fatal(fields: Record<string, unknown>, message: string): void;
}

/**
 * Makes an uncaught exception or an unhandled rejection log one fatal line (the error, its code and
 * the advice) and exit with status 1. Installed once, by `citychain node start`.
 */
export function installFatalHandlers(
  log: FatalLogger,
  exit: (status: number) => never = (status) => process.exit(status),
): void {
  let stopping = false;
  const onFatal = (error: unknown, origin: string) => {
    if (stopping) return;
    stopping = true;
    const { code, advice } = fatalAdvice(error);
    try {
      log.fatal({ err: error, code, origin }, advice);
    } finally {
      exit(1);
    }
  };
  process.on("uncaughtException", (error) => onFatal(error, "uncaughtException"));
  process.on("unhandledRejection", (reason) => onFatal(reason, "unhandledRejection"));
}
