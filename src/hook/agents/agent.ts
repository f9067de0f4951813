/**
 * What an agent file of this folder describes: the agent's facts (what
 * `vmsnap hook` needs) and its install plan (what `vmsnap install` writes),
 * computed from what the plan finds on the system it installs to. The
 * mechanics of writing (backups, `--root`, `--dry-run`, idempotence, the
 * safety checks) are ../install.ts's, the same for every agent.
 *
 * @module
 */

/** An agent's name, as given to `--for`. */
export type AgentName = "qemu-ga" | "vmware" | "azure" | "gcp" | "aws" | "generic";

/**
 * The system `vmsnap install` writes to, as a plan reads it: paths are the
 * target system's (`/etc/...`), read under `--root`.
 */
export interface TargetSystem {
  /** The prefix ("/" for the running system). */
  root: string;
  /** A file's text, or undefined when it cannot be read. */
  read(path: string): string | undefined;
  exists(path: string): boolean;
  /** A file's permission bits, or undefined when it cannot be read. */
  mode(path: string): number | undefined;
  /** The names in a directory, or undefined when it cannot be read. */
  list(dir: string): string[] | undefined;
}

/** A file install puts in place. */
export interface PlannedFile {
  path: string;
  content: string;
  mode: number;
  /** Mode of a directory created for it (its parents are created 0755). */
  dirMode?: number;
  /** The agent reads this file only when it starts: a change restarts it (running system only). */
  restart?: boolean;
}

/** What install does for an agent. */
export interface InstallPlan {
  files: PlannedFile[];
  /** Printed after the changes (`note: ...`). */
  notes: string[];
  /** Printed instead of files, for the admin to put elsewhere (AWS's SSM document). */
  print?: string;
  /**
   * The file the agent executes that must leave the agent's SELinux domain
   * (qemu-ga's confined `virt_qemu_ga_t`): labelled as the vendor's entry
   * point out of it where SELinux is on. Every other file written is only
   * restored to the policy's label.
   */
  selinuxEntrypoint?: string;
}

/** What a plan is computed from. */
export interface PlanInput {
  system: TargetSystem;
  /** vmsnap's config, as the installed hooks name it. */
  config: string;
  /** The argv of `vmsnap hook [EVENT] --for AGENT --config CONFIG`. */
  hook(event?: string): string[];
  /** `--hook-dir`: the directory the agent's hook script runs, as the admin names it. */
  hookDir?: string;
  /** `--agent-config`: the agent's own config file, as the admin names it. */
  agentConfig?: string;
}

/** The service that runs an agent: what install restarts, and how it knows it runs inside it. */
export interface AgentService {
  /** systemd units, the first one found is the agent's. */
  units: string[];
  /** OpenRC services, likewise. */
  openrc: string[];
  /** The agent's executable names (an ancestor process with one of them is the agent). */
  executables: string[];
}

/** What vmsnap knows about one agent. */
export interface AgentSpec {
  name: AgentName;
  title: string;
  /** The agent freezes the filesystems itself after the freeze hook (the holder must not). */
  freezes: boolean;
  /** How long the hook waits at most, unless --timeout says otherwise (below the agent's own limit). */
  timeoutSeconds: number;
  /** vmsnap's config the installed hooks name when install is not given --config. */
  defaultConfig: string;
  /** What install writes and says; throws a VmsnapError when nothing can be installed. */
  plan(input: PlanInput): InstallPlan;
  /** The agent's service, when a file it reads only at start can change (`PlannedFile.restart`). */
  service?: AgentService;
}

/**
 * The hook's --timeout for an agent that waits `seconds`: it must give up first.
 *
 * @example
 * ```ts
 * import { belowAgent } from "./agent.ts";
 * belowAgent(60); // 55
 * ```
 */
export function belowAgent(seconds: number): number {
  return seconds >= 10 ? seconds - 5 : Math.max(1, seconds - 1);
}

/**
 * Quotes a word for sh.
 *
 * @example
 * ```ts
 * import { sh } from "./agent.ts";
 * sh("it's"); // "'it'\\''s'"
 * ```
 */
export function sh(word: string): string {
  return /^[\w@%+=:,./-]+$/.test(word) ? word : `'${word.replaceAll("'", `'\\''`)}'`;
}

/**
 * A hook wrapper script: a comment saying who installed it and why, and the
 * exec of the hook.
 *
 * @example
 * ```ts
 * import { wrapper } from "./agent.ts";
 * wrapper({ agent: "vmware", purpose: "vmtoolsd runs it.", command: ["/usr/bin/vmsnap", "hook"], tail: ' -- "$@"' });
 * ```
 */
export function wrapper(
  lines: { agent: AgentName; purpose: string; command: string[]; tail?: string },
): string {
  return [
    "#!/bin/sh",
    `# Installed by \`vmsnap install --for ${lines.agent}\`; \`vmsnap uninstall --for ${lines.agent}\` removes it.`,
    `# ${lines.purpose}`,
    `exec ${lines.command.map(sh).join(" ")}${lines.tail ?? ""}`,
    "",
  ].join("\n");
}
