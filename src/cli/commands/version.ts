/**
 * `vmsnap version` (and `vmsnap --version`).
 *
 * @module
 */
import { EXIT } from "../../exit_codes.ts";
import { VERSION } from "../../version.ts";
import type { CommandSpec, Invocation } from "../command.ts";
import type { Io } from "../io.ts";

/** `vmsnap version`'s help. */
export const spec: CommandSpec = {
  summary: "print the version",
  usage: "vmsnap version",
  description: "Prints `vmsnap <version>`.",
  options: {},
};

/**
 * Prints `vmsnap <version>`, or `{"version": ...}` with --json.
 *
 * @example
 * ```ts
 * import { handler } from "./version.ts";
 * const io = { stdout: (t: string) => console.log(t), stderr: (t: string) => console.error(t), env: {} };
 * await handler({ command: "version", configPath: "/etc/x.json", configGiven: false, json: false, help: false, positionals: [] }, io);
 * ```
 */
export function handler(args: Invocation, io: Io): Promise<number> {
  io.stdout(args.json ? `${JSON.stringify({ version: VERSION })}\n` : `vmsnap ${VERSION}\n`);
  return Promise.resolve(EXIT.ok);
}
