/**
 * `vmsnap uninstall --for AGENT`: removes what `vmsnap install` put in place
 * and restores what was there (src/hook/install.ts).
 *
 * @module
 */
import type { CommandSpec, Invocation } from "../command.ts";
import type { Io } from "../io.ts";
import { changeAgentFiles, INSTALL_OPTIONS, type InstallArgs } from "./install.ts";

export { parse } from "./install.ts";

/** `vmsnap uninstall`'s help. */
export const spec: CommandSpec = {
  summary: "remove what vmsnap install put in place and restore what was there",
  usage: "vmsnap uninstall --for AGENT [--root DIR] [--dry-run]",
  description: `Undoes vmsnap install --for AGENT, restoring the backed-up files.
Exit 0 when done (or nothing to undo); 2 when it failed, the error naming the file.`,
  options: INSTALL_OPTIONS,
};

/**
 * Removes the agent's hook files, restoring the backed-up ones.
 *
 * @example
 * ```ts
 * import { handler } from "./uninstall.ts";
 * const io = { stdout: (t: string) => console.log(t), stderr: (t: string) => console.error(t), env: {} };
 * await handler({ command: "uninstall", configPath: "/etc/x.json", configGiven: false, json: false, help: false, positionals: [], agent: "vmware", root: "/", dryRun: true }, io);
 * ```
 */
export function handler(args: Invocation & InstallArgs, io: Io): Promise<number> {
  return changeAgentFiles("uninstall", args, io);
}
