/**
 * `vmsnap uninstall --for AGENT`: removes what `vmsnap install` put in place
 * and restores what was there (src/hook/install.ts).
 *
 * @module
 */
import type { CommandSpec, Invocation } from "../command.ts";
import type { Io } from "../io.ts";
import { changeAgentFiles, type InstallArgs, UNINSTALL_OPTIONS } from "./install.ts";

export { parse } from "./install.ts";

/** `vmsnap uninstall`'s help. */
export const spec: CommandSpec = {
  summary: "remove what vmsnap install put in place and restore what was there",
  usage: "vmsnap uninstall --for AGENT [--root DIR] [--dry-run]",
  description: `Undoes vmsnap install --for AGENT: restores the backed-up files, removes the
ones it created and the directories it made (when empty), takes away the SELinux rule
and boolean it added, and restarts the agent when it reads a restored file at start.
A file changed since install wrote it is left as it is, with a note. Creates nothing.
Exit 0 when done (or nothing to undo); 2 when it failed, the error naming the file.`,
  options: UNINSTALL_OPTIONS,
};

/**
 * Removes the agent's hook files, restoring the backed-up ones.
 *
 * @example
 * ```ts
 * import { handler } from "./uninstall.ts";
 * const io = { stdout: (t: string) => console.log(t), stderr: (t: string) => console.error(t), env: {} };
 * await handler({ command: "uninstall", configPath: "/etc/x.json", configGiven: false, json: false, help: false, positionals: [], agent: "vmware", root: "/", dryRun: true, selinuxBoolean: false }, io);
 * ```
 */
export function handler(args: Invocation & InstallArgs, io: Io): Promise<number> {
  return changeAgentFiles("uninstall", args, io);
}
