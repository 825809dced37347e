import type { Command } from "commander";
import { auditDataDir } from "../../storage/audit.ts";
import { printJson } from "../common.ts";

export function registerVerifyCommand(program: Command): void {
  program
    .command("verify")
    .description("recompute every hash and root from genesis; name the first height or key altered by hand")
    .requiredOption(
      "--data <dir>",
      "the node's data folder (stop the node first, or it reads a moment's snapshot)",
    )
    .option("--quiet", "no progress on stderr")
    .action((flags: { data: string; quiet?: boolean }) => {
      let lastShown = 0;
      const report = auditDataDir(flags.data, {
        onProgress: (h, latest) => {
          if (flags.quiet || (h - lastShown < 1000 && h !== latest)) return;
          lastShown = h;
          process.stderr.write(`verified ${h}/${latest} blocks\r`);
        },
      });
      if (!flags.quiet) process.stderr.write("\n");
      printJson(report);
      if (!report.ok) {
        const p = report.problem!;
        const where = [
          p.height === undefined ? "" : `height ${p.height}`,
          p.key === undefined ? "" : `key ${p.key}`,
        ]
          .filter(Boolean)
          .join(", ");
        process.stderr.write(`citychain: LEDGER_ALTERED: ${where}: ${p.what}\n`);
        process.exitCode = 1;
      }
    });
}
