/**
 * `vmsnap check`: every check that would stop an application-consistent
 * snapshot, reported at once; changes nothing.
 *
 * @module
 */
import { formatCheckReport, runChecks } from "../../preflight/check.ts";
import { redact, redactValue, shortSecretWarnings } from "../../secrets.ts";
import { escapeForTerminal } from "../../sys/terminal.ts";
import { EXIT } from "../../exit_codes.ts";
import type { CommandSpec, GivenOptions, Invocation } from "../command.ts";
import type { Io } from "../io.ts";

/** `vmsnap check`'s help. */
export const spec: CommandSpec = {
  summary: "check the config, permissions and freeze targets; changes nothing",
  usage: "vmsnap check [--config PATH] [--json] [--connect]",
  description: `Runs every check that would stop an application-consistent snapshot and reports all
problems at once, each with its code, the file, line and column, and the fix:
  - the config file: root-owned, mode 600 or stricter, in root-only directories
  - the config: valid JSONC, every key known, every value in range
  - pre/post scripts and the snapshot command: exist, root-owned, no group/other bits,
    every directory on the way root-owned and not group/other-writable (symlinks followed)
  - the log and state directories
  - the filesystems that would be frozen, in order, and why each other mount is skipped
  - with --connect: each database plugin connects and checks the privileges quiesce
    needs, naming the missing GRANT
  - each backup agent vmsnap's hook is installed for: will it run the hook as it is set
    up now, and does it wait long enough (its timeout against the hook's and the hold's)
  - SELinux: its mode, the label and boolean qemu-ga needs to run the hook unconfined,
    recent AVC denials of vmsnap, each with its fix
What a dead run left (frozen filesystems, processes, a database lock) is reported, not
undone: vmsnap recover undoes it. Changes nothing.
Exit 0 when there is no problem, 1 when there is at least one (warnings do not count).`,
  options: {
    connect: {
      type: "boolean",
      help: "also connect to each database and verify the privileges quiesce needs",
    },
  },
};

/** `vmsnap check`'s own options. */
export interface CheckArgs {
  connect: boolean;
}

/**
 * Reads `--connect`.
 *
 * @example
 * ```ts
 * import { parse } from "./check.ts";
 * parse({ command: "check", values: { connect: true }, positionals: [], help: false }).connect; // true
 * ```
 */
export function parse(given: GivenOptions): CheckArgs {
  return { connect: given.values.connect === true };
}

/**
 * Prints the report; exit 0 without a problem, 1 with one.
 *
 * @example
 * ```ts
 * import { handler } from "./check.ts";
 * const io = { stdout: (t: string) => console.log(t), stderr: (t: string) => console.error(t), env: {} };
 * await handler({ command: "check", configPath: "/etc/x.json", configGiven: true, json: false, help: false, positionals: [], connect: false }, io);
 * ```
 */
export async function handler(args: Invocation & CheckArgs, io: Io): Promise<number> {
  const report = await runChecks({ configPath: args.configPath, connect: args.connect });
  (await import("../../hook/agent_checks.ts")).addAgentChecks(report);
  // Secrets (inline passwords, credentials in URIs) never reach the output: redacted in the
  // object before it is printed (escaping cannot hide them), then scrubbed from the text.
  const shown = redactValue({
    ...report,
    warnings: [...report.warnings, ...shortSecretWarnings()],
  });
  const text = args.json
    ? JSON.stringify(shown, null, 2)
    : escapeForTerminal(formatCheckReport(shown));
  io.stdout(`${redact(text)}\n`);
  return report.ok ? EXIT.ok : EXIT.degraded;
}
