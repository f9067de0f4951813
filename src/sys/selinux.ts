/**
 * SELinux as it concerns a backup agent's hook: the mode and policy of a
 * target system, the SELinux tools it has, how its policy labels a path, the
 * commands that let qemu-ga run vmsnap's hook unconfined the vendor's way,
 * and the AVC denials of vmsnap in the audit log.
 *
 * The vendor's way (fedora-selinux/selinux-policy, `policy/modules/contrib/
 * virt.te` and `virt.fc` on RHEL 9 (c9s), `virt_supplementary.te`/`.fc` on
 * Fedora and RHEL 10): qemu-ga runs as `virt_qemu_ga_t`; a file labelled
 * `virt_qemu_ga_unconfined_exec_t` is an entry point of
 * `virt_qemu_ga_unconfined_t` (an unconfined domain), and qemu-ga enters it
 * only while the boolean `virt_qemu_ga_run_unconfined` is on (off: the hook
 * runs, confined, in `virt_qemu_ga_t`). The policy already labels
 * `/etc/qemu-ga/fsfreeze-hook.d(/.*)?` that way; a hook elsewhere needs a
 * `semanage fcontext` rule, which survives a relabel, then `restorecon`.
 *
 * @module
 */
import { spawnSync } from "node:child_process";
import { posix } from "node:path";
import process from "node:process";
import { kindUnder, readUnder } from "./under_root.ts";

/** The type that makes a file an entry point out of qemu-ga's confinement. */
export const QGA_UNCONFINED_TYPE = "virt_qemu_ga_unconfined_exec_t";
/** The boolean that lets qemu-ga enter it. */
export const QGA_UNCONFINED_BOOLEAN = "virt_qemu_ga_run_unconfined";
/** qemu-ga's own domain. */
export const QGA_DOMAIN = "virt_qemu_ga_t";

/** The SELinux tools vmsnap uses. */
export const SELINUX_TOOLS = [
  "semanage",
  "restorecon",
  "getsebool",
  "setsebool",
  "ausearch",
] as const;
/** One of them. */
export type SelinuxTool = typeof SELINUX_TOOLS[number];
const TOOL_DIRS = ["/usr/sbin", "/sbin", "/usr/bin", "/bin"];

/** SELinux on a target system. */
export interface SelinuxState {
  /** `absent`: no SELinux config and no selinuxfs. */
  mode: "enforcing" | "permissive" | "disabled" | "absent";
  /** How the mode was found. */
  modeSource: string;
  /** `SELINUX=` of /etc/selinux/config (the mode at next boot). */
  configMode?: string;
  /** `SELINUXTYPE=` (targeted, mls, minimum). */
  policyType?: string;
  /** Each tool's path on the target system, when it is there. */
  tools: Partial<Record<SelinuxTool, string>>;
  looked: string[];
}

/** Reads `KEY=value` from /etc/selinux/config. */
function configValue(text: string | undefined, key: string): string | undefined {
  return text?.match(new RegExp(`^\\s*${key}\\s*=\\s*"?([A-Za-z0-9_-]+)"?`, "m"))?.[1];
}

/**
 * Finds SELinux's mode, policy type and tools under a root. On the running
 * system (`live`, the default for root "/"), `/sys/fs/selinux/enforce`
 * decides and its absence means SELinux is off now; under another root (an
 * image, a fixture) the config file's mode is what the system boots with.
 *
 * @example
 * ```ts
 * import { detectSelinux } from "./selinux.ts";
 * const se = detectSelinux({ root: "/" });
 * console.log(se.mode, se.policyType, se.tools.semanage ?? "no semanage");
 * ```
 */
export function detectSelinux(options: { root: string; live?: boolean }): SelinuxState {
  const { root } = options;
  const live = options.live ?? root === "/";
  const enforcePath = "/sys/fs/selinux/enforce";
  const configPath = "/etc/selinux/config";
  const looked = [enforcePath, configPath];
  const config = readUnder(root, configPath);
  const configMode = configValue(config, "SELINUX");
  const policyType = configValue(config, "SELINUXTYPE");
  const tools: SelinuxState["tools"] = {};
  for (const tool of SELINUX_TOOLS) {
    const found = TOOL_DIRS.map((dir) => posix.join(dir, tool)).find((p) =>
      kindUnder(root, p).executable
    );
    if (found) tools[tool] = found;
    looked.push(...TOOL_DIRS.map((dir) => posix.join(dir, tool)));
  }
  const enforce = readUnder(root, enforcePath)?.trim();
  const base = { configMode, policyType, tools, looked };
  if (enforce === "1" || enforce === "0") {
    const mode = enforce === "1" ? "enforcing" : "permissive";
    return { ...base, mode, modeSource: `${enforcePath} is ${enforce}` };
  }
  if (config === undefined) {
    return {
      ...base,
      mode: "absent",
      modeSource: `neither ${enforcePath} nor ${configPath} exists`,
    };
  }
  if (live) {
    return { ...base, mode: "disabled", modeSource: `no ${enforcePath}: SELinux is not running` };
  }
  const mode = configMode === "enforcing" || configMode === "permissive" ? configMode : "disabled";
  return { ...base, mode, modeSource: `${configPath}: SELINUX=${configMode ?? "(unset)"}` };
}

/** A file context rule that labels a path. */
export interface FileContext {
  /** The rule's path regex. */
  spec: string;
  /** The SELinux type it gives. */
  type: string;
  /** The file the rule is in (file_contexts or file_contexts.local). */
  file: string;
}

/** The last rule of a file_contexts text that matches the path. */
function lastMatch(text: string, path: string, file: string): FileContext | undefined {
  let found: FileContext | undefined;
  for (const line of text.split("\n")) {
    const fields = line.trim().split(/\s+/);
    if (fields.length < 2 || fields[0].startsWith("#")) continue;
    const context = fields[fields.length - 1];
    const fileType = fields.length === 3 ? fields[1] : undefined;
    if (fileType !== undefined && fileType !== "--" && fileType !== "-d") continue;
    let matches = false;
    try {
      matches = new RegExp(`^(?:${fields[0]})$`).test(path);
    } catch {
      continue;
    }
    const type = context.split(":")[2];
    if (matches && type) found = { spec: fields[0], type, file };
  }
  return found;
}

/**
 * How the policy labels a path: the local rules (`semanage fcontext`'s
 * file_contexts.local) first, else the policy's file_contexts, the last
 * matching rule of each (the more specific rules come later).
 *
 * @example
 * ```ts
 * import { fileContextFor } from "./selinux.ts";
 * fileContextFor({ root: "/", policyType: "targeted", path: "/etc/qemu-ga/fsfreeze-hook.d/vmsnap" })?.type;
 * // "virt_qemu_ga_unconfined_exec_t" on RHEL
 * ```
 */
export function fileContextFor(
  options: { root: string; policyType: string; path: string },
): FileContext | undefined {
  const dir = `/etc/selinux/${options.policyType}/contexts/files`;
  for (const name of ["file_contexts.local", "file_contexts"]) {
    const file = `${dir}/${name}`;
    const text = readUnder(options.root, file);
    const found = text === undefined ? undefined : lastMatch(text, options.path, file);
    if (found) return found;
  }
  return undefined;
}

/** A path as an exact file-context regex (`semanage fcontext` takes regexes). */
export function fcontextSpec(path: string): string {
  return path.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");
}

/** What to run so that qemu-ga runs vmsnap's hook unconfined, and how to undo it. */
export interface SelinuxPlan {
  /** Whether SELinux is in the way at all (enforcing or permissive, qemu-ga confined). */
  applies: boolean;
  reason: string;
  /** Commands, in order. */
  commands: string[][];
  /** Commands that undo them, in order. */
  undo: string[][];
  /** Tools the commands need that the system lacks, with the package that has them. */
  missing: { tool: SelinuxTool; package: string }[];
  /** What the admin must know or run (the boolean when not asked for). */
  notes: string[];
}

/** The package of each tool on the RHEL family. */
const TOOL_PACKAGES: Record<SelinuxTool, string> = {
  semanage: "policycoreutils-python-utils",
  restorecon: "policycoreutils",
  getsebool: "policycoreutils",
  setsebool: "policycoreutils",
  ausearch: "audit",
};

/** The hook's label: restorecon alone when the policy already gives the type, else a rule first. */
function hookLabel(state: SelinuxState, root: string, hook: string) {
  const current = state.policyType
    ? fileContextFor({ root, policyType: state.policyType, path: hook })
    : undefined;
  if (current?.type === QGA_UNCONFINED_TYPE) {
    return {
      commands: [["restorecon", "-v", hook]],
      undo: [] as string[][],
      note:
        `the policy already labels ${hook} ${QGA_UNCONFINED_TYPE} (${current.spec} in ${current.file})`,
    };
  }
  const spec = fcontextSpec(hook);
  return {
    commands: [["semanage", "fcontext", "-a", "-t", QGA_UNCONFINED_TYPE, spec], [
      "restorecon",
      "-v",
      hook,
    ]],
    undo: [["semanage", "fcontext", "-d", spec], ["restorecon", "-v", hook]],
    note: `${hook} is labelled ${
      current?.type ?? "by no rule"
    } by the policy: a local rule gives it ${QGA_UNCONFINED_TYPE}`,
  };
}

/**
 * Plans the vendor's labelling of vmsnap's hook for qemu-ga: the hook file
 * as an entry point of the unconfined domain (a `semanage fcontext` rule
 * unless the policy has one, then `restorecon`), the vmsnap binary restored
 * to its default label (a binary moved from /tmp keeps `user_tmp_t`), and
 * the boolean only when asked (`setBoolean`; else a note says which command
 * to run and why).
 *
 * @example
 * ```ts
 * import { detectSelinux, planSelinux } from "./selinux.ts";
 * const state = detectSelinux({ root: "/" });
 * const plan = planSelinux({ state, root: "/", hook: "/etc/qemu-ga/fsfreeze-hook.d/vmsnap", binary: "/usr/bin/vmsnap", setBoolean: false });
 * for (const argv of plan.commands) console.log(argv.join(" "));
 * ```
 */
export function planSelinux(
  options: { state: SelinuxState; root: string; hook: string; binary: string; setBoolean: boolean },
): SelinuxPlan {
  const { state, root, hook, binary } = options;
  if (state.mode === "absent" || state.mode === "disabled") {
    return {
      applies: false,
      reason: `SELinux is ${state.mode} (${state.modeSource})`,
      commands: [],
      undo: [],
      missing: [],
      notes: [],
    };
  }
  const label = hookLabel(state, root, hook);
  const commands = [...label.commands, ["restorecon", "-v", binary]];
  const undo = [...label.undo];
  const booleanOn = ["setsebool", "-P", QGA_UNCONFINED_BOOLEAN, "on"];
  const notes = [label.note];
  if (options.setBoolean) {
    commands.push(booleanOn);
    undo.push(["setsebool", "-P", QGA_UNCONFINED_BOOLEAN, "off"]);
  } else {
    notes.push(
      `qemu-ga enters ${QGA_UNCONFINED_TYPE} files unconfined only with the boolean ${QGA_UNCONFINED_BOOLEAN} on; without it the hook runs confined as ${QGA_DOMAIN} and cannot reach a database socket or start vmsnap's holder. Run: ${
        booleanOn.join(" ")
      } (or vmsnap install --selinux-boolean).`,
    );
  }
  const needed = [...new Set([...commands, ...undo].map((argv) => argv[0] as SelinuxTool))];
  const missing = needed.filter((tool) => !state.tools[tool]).map((tool) => ({
    tool,
    package: TOOL_PACKAGES[tool],
  }));
  const reason = `SELinux is ${state.mode} (${state.modeSource}), policy ${
    state.policyType ?? "unknown"
  }: qemu-ga runs confined as ${QGA_DOMAIN}`;
  return { applies: true, reason, commands, undo, missing, notes };
}

/** What one command gave. */
export interface RanCommand {
  argv: string[];
  status: number | null;
  stdout: string;
  stderr: string;
}

/**
 * Runs SELinux commands in order, stopping at the first that fails. Each
 * tool is run from `toolDir` when given (tests: stand-ins that record their
 * calls), else found on PATH; `env` adds to the environment.
 *
 * @example
 * ```ts
 * import { runSelinuxCommands } from "./selinux.ts";
 * const ran = runSelinuxCommands([["getsebool", "virt_qemu_ga_run_unconfined"]], {});
 * console.log(ran[0].stdout);
 * ```
 */
export function runSelinuxCommands(
  commands: string[][],
  options: { toolDir?: string; env?: Record<string, string> },
): RanCommand[] {
  const ran: RanCommand[] = [];
  for (const argv of commands) {
    const program = options.toolDir ? posix.join(options.toolDir, argv[0]) : argv[0];
    const result = spawnSync(program, argv.slice(1), {
      encoding: "utf8",
      timeout: 120_000,
      env: options.env ? { ...process.env, ...options.env } : process.env,
    });
    ran.push({
      argv,
      status: result.status,
      stdout: result.stdout ?? "",
      stderr: result.stderr ?? (result.error ? String(result.error) : ""),
    });
    if (result.status !== 0) break;
  }
  return ran;
}

/**
 * Reads `getsebool NAME` output (`NAME --> on`).
 *
 * @example
 * ```ts
 * import { parseGetsebool } from "./selinux.ts";
 * parseGetsebool("virt_qemu_ga_run_unconfined --> off\n"); // false
 * ```
 */
export function parseGetsebool(output: string): boolean | undefined {
  const m = output.match(/-->\s*(on|off)/);
  return m ? m[1] === "on" : undefined;
}

/** One AVC denial. */
export interface AvcDenial {
  /** `audit(<time>:<serial>)`. */
  stamp: string;
  permissions: string[];
  comm: string;
  /** `path=` or `name=`, when given. */
  target?: string;
  scontext: string;
  tcontext: string;
  tclass: string;
  permissive: boolean;
  /** What to do about it. */
  fix: string;
}

/** The value of `key=` in an audit record (quoted or not). */
function field(line: string, key: string): string | undefined {
  const m = line.match(new RegExp(`(?:^|\\s)${key}=("([^"]*)"|\\S+)`));
  return m ? (m[2] ?? m[1]) : undefined;
}

/** The fix for a denial, from the domain it happened in. */
function fixFor(scontext: string): string {
  const domain = scontext.split(":")[2];
  if (domain === QGA_DOMAIN) {
    return `vmsnap ran confined as ${QGA_DOMAIN}: label its hook ${QGA_UNCONFINED_TYPE} (vmsnap install --for qemu-ga does, or semanage fcontext -a -t ${QGA_UNCONFINED_TYPE} '<hook>' && restorecon -v <hook>) and turn on the boolean: setsebool -P ${QGA_UNCONFINED_BOOLEAN} on`;
  }
  return `vmsnap ran as ${
    domain ?? scontext
  }, which the policy does not let do this: run vmsnap from an unconfined domain, or write a local policy module for it (audit2allow -a -M vmsnap shows one; read it before loading it)`;
}

/**
 * Parses raw audit records (the audit log, or `ausearch -m avc -c vmsnap
 * --raw`) into the AVC denials of one command name.
 *
 * @example
 * ```ts
 * import { parseAvcDenials } from "./selinux.ts";
 * const line = 'type=AVC msg=audit(1.5:7): avc:  denied  { connectto } for  pid=9 comm="vmsnap" path="/run/x.sock" scontext=system_u:system_r:virt_qemu_ga_t:s0 tcontext=system_u:system_r:mysqld_t:s0 tclass=unix_stream_socket permissive=0';
 * parseAvcDenials(line, "vmsnap")[0].permissions; // ["connectto"]
 * ```
 */
export function parseAvcDenials(text: string, comm: string): AvcDenial[] {
  const denials: AvcDenial[] = [];
  for (const line of text.split("\n")) {
    if (!/type=AVC\b/.test(line) || !/avc:\s+denied/.test(line)) continue;
    if (field(line, "comm") !== comm) continue;
    const scontext = field(line, "scontext") ?? "";
    denials.push({
      stamp: line.match(/audit\(([^)]*)\)/)?.[1] ?? "",
      permissions: line.match(/denied\s+\{([^}]*)\}/)?.[1].trim().split(/\s+/) ?? [],
      comm,
      target: field(line, "path") ?? field(line, "name"),
      scontext,
      tcontext: field(line, "tcontext") ?? "",
      tclass: field(line, "tclass") ?? "",
      permissive: field(line, "permissive") === "1",
      fix: fixFor(scontext),
    });
  }
  return denials;
}

/** The audit log auditd writes. */
export const AUDIT_LOG = "/var/log/audit/audit.log";

/**
 * The AVC denials of a command in the audit log under a root (`ausearch`
 * reads the same records on a live system: `ausearchCommand`).
 *
 * @example
 * ```ts
 * import { readAvcDenials } from "./selinux.ts";
 * console.log(readAvcDenials({ root: "/", comm: "vmsnap" }).denials.length);
 * ```
 */
export function readAvcDenials(
  options: { root: string; comm: string; log?: string },
): { log: string; found: boolean; denials: AvcDenial[] } {
  const log = options.log ?? AUDIT_LOG;
  const text = readUnder(options.root, log);
  return {
    log,
    found: text !== undefined,
    denials: text ? parseAvcDenials(text, options.comm) : [],
  };
}

/**
 * The `ausearch` command that lists a command's AVC denials in raw form
 * (for `parseAvcDenials`).
 *
 * @example
 * ```ts
 * import { ausearchCommand } from "./selinux.ts";
 * ausearchCommand("vmsnap"); // ["ausearch", "-m", "avc", "-c", "vmsnap", "--raw"]
 * ```
 */
export function ausearchCommand(comm: string): string[] {
  return ["ausearch", "-m", "avc", "-c", comm, "--raw"];
}
