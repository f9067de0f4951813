/**
 * `vmsnap install --for AGENT`: puts in place the files through which a
 * backup agent calls `vmsnap hook` (src/hook/install.ts). `uninstall` shares
 * its options and its handler.
 *
 * @module
 */
import { posix, resolve } from "node:path";
import type { AgentName } from "../../hook/agents.ts";
import { EXIT } from "../../exit_codes.ts";
import {
  type CommandSpec,
  type GivenOptions,
  type Invocation,
  type OptionSpec,
  UsageError,
} from "../command.ts";
import { FOR_OPTION, readAgent } from "../agent_option.ts";
import { type Io, reportFailure } from "../io.ts";

/** The options of uninstall (install has more). */
export const UNINSTALL_OPTIONS: Record<string, OptionSpec> = {
  for: FOR_OPTION,
  root: { type: "string", arg: "DIR", help: "install under this prefix (default /)" },
  "dry-run": { type: "boolean", help: "print the changes, change nothing" },
};

/** The options of install. */
export const INSTALL_OPTIONS: Record<string, OptionSpec> = {
  ...UNINSTALL_OPTIONS,
  "hook-dir": {
    type: "string",
    arg: "DIR",
    help: "the directory the agent's hook script runs, when install cannot find it (qemu-ga)",
  },
  "agent-config": {
    type: "string",
    arg: "FILE",
    help: "the agent's own config file (qemu-ga.conf, tools.conf, instance_configs.cfg)",
  },
  "selinux-boolean": {
    type: "boolean",
    help: "also turn on the agent's SELinux boolean (virt_qemu_ga_run_unconfined)",
  },
};

/** `vmsnap install`'s help. */
export const spec: CommandSpec = {
  summary: "install the hook files of a backup agent (qemu-ga, vmware, azure, gcp, aws)",
  usage:
    "vmsnap install --for AGENT [--config PATH] [--root DIR] [--dry-run] [--hook-dir DIR] [--agent-config FILE] [--selinux-boolean]",
  description: `Finds how AGENT is set up on this system (its service, its hook script and the
directory that script runs, its config), puts in place the files through which it calls
vmsnap hook, switches its hook on the way the distribution does it (a systemd drop-in,
/etc/sysconfig/qemu-ga, OpenRC conf.d, qemu-ga.conf), says what it found, and prints every
change. Where install cannot tell, it refuses with the paths it looked at
(AgentSetupUnknown): name them with --hook-dir and --agent-config. Idempotent; whatever
was there is backed up to /var/backups/vmsnap first and restored by vmsnap uninstall.
Where SELinux is on, labels what it wrote (semanage fcontext, restorecon); the boolean
only with --selinux-boolean. A running agent that must read a changed file is restarted
(after 10 s, from outside it, when install runs inside it: qemu-ga's guest-exec).
--root DIR installs under a prefix (an image): nothing is run there, what to run is
printed. See docs/hooks.md.
Exit 0 when done (or nothing to change); 2 when it failed or could not tell, the error
naming the file; 64 for --for generic, which has nothing to install.`,
  options: INSTALL_OPTIONS,
};

/** The own options of install and uninstall. */
export interface InstallArgs {
  agent: AgentName;
  /** The prefix everything is written under. */
  root: string;
  dryRun: boolean;
  /** `--hook-dir`, a path on the target system. */
  hookDir?: string;
  /** `--agent-config`, a path on the target system. */
  agentConfig?: string;
  selinuxBoolean: boolean;
}

/** A path option given on the target system: absolute, or a usage error. */
function targetPath(given: GivenOptions, name: string): string | undefined {
  const value = given.values[name] as string | undefined;
  if (value === undefined) return undefined;
  if (!value.startsWith("/")) {
    throw new UsageError(`--${name} must be an absolute path on the target system, not ${value}.`);
  }
  return posix.normalize(value).replace(/(.)\/+$/, "$1");
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
    hookDir: targetPath(given, "hook-dir"),
    agentConfig: targetPath(given, "agent-config"),
    selinuxBoolean: given.values["selinux-boolean"] === true,
  };
}

/**
 * Installs the agent's hook files, printing every change.
 *
 * @example
 * ```ts
 * import { handler } from "./install.ts";
 * const io = { stdout: (t: string) => console.log(t), stderr: (t: string) => console.error(t), env: {} };
 * await handler({ command: "install", configPath: "/etc/x.json", configGiven: false, json: false, help: false, positionals: [], agent: "vmware", root: "/", dryRun: true, selinuxBoolean: false }, io);
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
 * await changeAgentFiles("uninstall", { command: "uninstall", configPath: "/etc/x.json", configGiven: false, json: false, help: false, positionals: [], agent: "vmware", root: "/", dryRun: true, selinuxBoolean: false }, io);
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
    hookDir: args.hookDir,
    agentConfig: args.agentConfig,
    selinuxBoolean: args.selinuxBoolean,
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
