/** The `citychain` command. */
import { Command } from "commander";
import { registerClientCommands } from "./commands/client.ts";
import { registerDevnetCommand } from "./commands/devnet.ts";
import { registerNodeCommands } from "./commands/node.ts";
import { registerVerifyCommand } from "./commands/verify.ts";
import { reportError } from "./common.ts";

const program = new Command()
  .name("citychain")
  .description("permissioned blockchain for a city's departments: e-licenses shared across departments")
  .version("0.1.0")
  .showHelpAfterError("(add --help for usage)");

registerDevnetCommand(program);
registerNodeCommands(program);
registerClientCommands(program);
registerVerifyCommand(program);
(await import("./commands/ca.ts")).registerCaCommands(program);
(await import("./commands/vault.ts")).registerVaultCommands(program);
(await import("./commands/license.ts")).registerLicenseCommands(program);
(await import("./commands/subject.ts")).registerSubjectCommands(program);
(await import("./commands/validators.ts")).registerValidatorCommands(program);

try {
  await program.parseAsync(process.argv);
} catch (error) {
  process.exitCode = reportError(error);
}
