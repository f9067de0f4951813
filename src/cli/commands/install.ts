/**
 * `vmsnap install --for AGENT`: puts in place the files through which a
 * backup agent calls `vmsnap hook` (src/hook/install.ts). `uninstall` shares
 * its options and its handler.
 *
 * @module
 */
import { resolve } from "node:path";
import type { AgentName } from "../../hook/agents.ts";
import { EXIT } from "../../exit_codes.ts";
import type { CommandSpec, GivenOptions, Invocation, OptionSpec } from "../command.ts";
import { FOR_OPTION, readAgent } from "../agent_option.ts";
import { type Io, reportFailure } from "../io.ts";

/** The options of install and uninstall. */
export const INSTALL_OPTIONS: Record<string, OptionSpec> = {
  for: FOR_OPTION,
  root: { type: "string", arg: "DIR", help: "install under this prefix (default /)" },
  "dry-run": { type: "boolean", help: "print the changes, change nothing" },
};

/** `vmsnap install`'s help. */
export const spec: CommandSpec = {
  summary: "install the hook files of a backup agent (qemu-ga, vmware, azure, gcp, aws)",
  usage: "vmsnap install --for AGENT [--config PATH] [--root DIR] [--dry-run]",
  description: `Puts in place the files through which AGENT calls vmsnap hook, and prints every
change. Idempotent; whatever was there is backed up to /var/backups/vmsnap first and
restored by vmsnap uninstall. --root DIR installs under a prefix. See docs/hooks.md.
Exit 0 when done (or nothing to change); 2 when it failed, the error naming the file;
64 for --for generic, which has nothing to install.`,
  options: INSTALL_OPTIONS,
};

/** The own options of install and uninstall. */
export interface InstallArgs {
  agent: AgentName;
  /** The prefix everything is written under. */
  root: string;
  dryRun: boolean;
}

/**
 * Reads `--for` (not needed with --help), `--root` and `--dry-run`.
 *
 * @example
 * ```ts
 * import { parse } from "./install.ts";
 * parse({ command: "install", values: { for: "gcp", root: "/x" }, positionals: [], help: false }).root; // "/x"
 * ```
 */
export function parse(given: GivenOptions): Partial<InstallArgs> {
  return {
    ...(given.help ? {} : { agent: readAgent(given) }),
    root: resolve((given.values.root as string | undefined) ?? "/"),
    dryRun: given.values["dry-run"] === true,
  };
}

/**
 * Installs the agent's hook files, printing every change.
 *
 * @example
 * ```ts
 * import { handler } from "./install.ts";
 * const io = { stdout: (t: string) => console.log(t), stderr: (t: string) => console.error(t), env: {} };
 * await handler({ command: "install", configPath: "/etc/x.json", configGiven: false, json: false, help: false, positionals: [], agent: "vmware", root: "/", dryRun: true }, io);
 * ```
 */
export function handler(args: Invocation & InstallArgs, io: Io): Promise<number> {
  return changeAgentFiles("install", args, io);
}

/**
 * install or uninstall: the changes printed (JSON with --json), exit 0; or
 * the coded error on stderr, exit 2 (64 for `--for generic`, which has
 * nothing to install).
 *
 * @example
 * ```ts
 * import { changeAgentFiles } from "./install.ts";
 * const io = { stdout: (t: string) => console.log(t), stderr: (t: string) => console.error(t), env: {} };
 * await changeAgentFiles("uninstall", { command: "uninstall", configPath: "/etc/x.json", configGiven: false, json: false, help: false, positionals: [], agent: "vmware", root: "/", dryRun: true }, io);
 * ```
 */
export async function changeAgentFiles(
  command: "install" | "uninstall",
  args: Invocation & InstallArgs,
  io: Io,
): Promise<number> {
  const options = {
    agent: args.agent,
    configPath: args.configGiven ? args.configPath : undefined,
    root: args.root,
    dryRun: args.dryRun,
  };
  const { formatInstall, install, uninstall } = await import("../../hook/install.ts");
  try {
    const done = command === "install" ? install(options) : uninstall(options);
    io.stdout(`${formatInstall(done, { command, ...options, json: args.json })}\n`);
    return EXIT.ok;
  } catch (error) {
    return reportFailure(io, command, error, { fallback: "InstallFailed" });
  }
}
