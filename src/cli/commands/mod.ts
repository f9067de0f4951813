/**
 * The command table: every command's module, in the order of the help. One
 * source for dispatch, `--help`, the man page and the bash completion: a
 * command added here appears in all of them.
 *
 * @module
 */
import type { CommandModule, CommandSpec } from "../command.ts";
import * as check from "./check.ts";
import * as run from "./run.ts";
import * as recover from "./recover.ts";
import * as hook from "./hook.ts";
import * as install from "./install.ts";
import * as uninstall from "./uninstall.ts";
import * as init from "./init.ts";
import * as status from "./status.ts";
import * as schema from "./schema.ts";
import * as version from "./version.ts";
import * as help from "./help.ts";
import * as guard from "./guard.ts";
import * as holder from "./holder.ts";

/** The commands that do something, by name (help, the command line's own, is not one). */
export const COMMAND_MODULES: Record<string, CommandModule> = {
  check,
  run,
  recover,
  hook,
  install,
  uninstall,
  init,
  status,
  schema,
  version,
};

/** Every command's spec, help last: what `--help`, the man page and the completion show. */
export const COMMANDS: Record<string, CommandSpec> = {
  ...Object.fromEntries(Object.entries(COMMAND_MODULES).map(([name, m]) => [name, m.spec])),
  help: { ...help.spec, words: [...Object.keys(COMMAND_MODULES), "help"] },
};

/**
 * The binary's hidden modes, started by itself: `__guard` by `run`, `__holder` by `hook
 * freeze`. Never shown; only the word alone starts one.
 */
export const HIDDEN_COMMANDS: Record<string, { handler(): Promise<number> }> = {
  __guard: guard,
  __holder: holder,
};
