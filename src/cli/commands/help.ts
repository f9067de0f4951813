/**
 * `vmsnap help [COMMAND]`. Its handler is the command line's own
 * (`showHelp` in ../help.ts): it needs every command's spec, and like
 * `--help` it changes nothing.
 *
 * @module
 */
import type { CommandSpec } from "../command.ts";

/** `vmsnap help`'s help (the table adds its words: the commands). */
export const spec: CommandSpec = {
  summary: "show help for vmsnap or a command",
  usage: "vmsnap help [COMMAND]",
  description: "Shows the general help, or a command's help.",
  options: {},
  positionals: 1,
};
