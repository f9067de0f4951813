/**
 * `vmsnap status`: the last result of run or hook.
 *
 * @module
 */
import { EXIT } from "../../exit_codes.ts";
import { redact } from "../../secrets.ts";
import type { CommandSpec, Invocation } from "../command.ts";
import type { Io } from "../io.ts";

/** `vmsnap status`'s help. */
export const spec: CommandSpec = {
  summary: "show the last result of run or hook: when, status, consistency, errors",
  usage: "vmsnap status [--config PATH] [--json]",
  description: `Shows the result the last run (or hook hold) recorded in stateDir: when it ended,
its status and consistency, how long filesystems were frozen and each database held,
and its errors. Exit: the last result's exit code (0, 1, 2); 2 when nothing is recorded.`,
  options: {},
};

/**
 * Shows the last result; exits with its code.
 *
 * @example
 * ```ts
 * import { handler } from "./status.ts";
 * const io = { stdout: (t: string) => console.log(t), stderr: (t: string) => console.error(t), env: {} };
 * await handler({ command: "status", configPath: "/etc/x.json", configGiven: true, json: false, help: false, positionals: [] }, io);
 * ```
 */
export async function handler(args: Invocation, io: Io): Promise<number> {
  const { formatStatus, readStatus } = await import("../../state/status.ts");
  const status = readStatus({ configPath: args.configPath });
  io.stdout(`${args.json ? redact(JSON.stringify(status)) : formatStatus(status)}\n`);
  return status.lastResult?.exitCode ?? EXIT.failed;
}
