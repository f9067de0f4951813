/**
 * `vmsnap install --for <agent>` and `vmsnap uninstall --for <agent>`: put
 * the files in place through which each backup agent calls `vmsnap hook`,
 * and take them away again.
 *
 * - Idempotent: a file that already has the content is left alone.
 * - Keeps what was there: a file that is replaced or edited is first copied
 *   to `<root>/var/backups/vmsnap/` (never next to it: VMware runs every file
 *   in backupScripts.d), and a manifest per agent records what existed, so
 *   `uninstall` restores it exactly.
 * - Prints every change; `--dry-run` prints them and changes nothing;
 *   `--root DIR` installs under a prefix (tests, packaging).
 *
 * @module
 */
import { spawnSync } from "node:child_process";
import { createHash } from "node:crypto";
import {
  closeSync,
  constants,
  copyFileSync,
  existsSync,
  fchmodSync,
  lstatSync,
  mkdirSync,
  openSync,
  readdirSync,
  readFileSync,
  renameSync,
  rmSync,
  statSync,
  writeFileSync,
  writeSync,
} from "node:fs";
import { basename, dirname, join } from "node:path";
import { parse as parseJsonc } from "jsonc-parser";
import { type AgentName, AGENTS } from "./agents.ts";
import { AZURE_MAX_TIMEOUT, DEFAULT_CONFIG_PATH } from "../config/config.ts";
import { VmsnapError } from "../errors.ts";
import { checkDirectory, checkExecutable, type ExecutableRule } from "../sys/permissions.ts";
import { selfCommand } from "../sys/self.ts";

/** The vmsnap binary the installed hooks exec, judged by the executable rule. */
const BINARY_RULE: ExecutableRule = {
  notFound: "InstallFailed",
  permission: "InstallFailed",
  what: "vmsnap binary the installed hooks run",
};

/** What `vmsnap install` / `uninstall` was asked to do. */
export interface InstallOptions {
  agent: AgentName;
  /** vmsnap's config, as the hook will name it (a path on the target system). */
  configPath?: string;
  /** The prefix everything is written under ("/" for the real system). */
  root: string;
  dryRun: boolean;
  /** The command that runs vmsnap (default: this binary). */
  vmsnap?: string[];
}

/** One change, as printed. */
export interface Change {
  action: "create" | "replace" | "edit" | "unchanged" | "backup" | "remove" | "restore" | "run";
  /** The path on the target system (without the root prefix), or the command run. */
  path: string;
  detail?: string;
}

/** What install recorded for uninstall. */
interface Manifest {
  agent: AgentName;
  /** `installed`: the SHA-256 of what install wrote (uninstall leaves a file changed since). */
  files: { path: string; existed: boolean; backup?: string; installed?: string }[];
}

/** The SHA-256 of a file's text, hex. */
function digest(text: string): string {
  return createHash("sha256").update(text).digest("hex");
}

/** Where backups and manifests go (a path on the target system). */
export const BACKUP_DIR = "/var/backups/vmsnap";

/** The drop-in that makes systemd start qemu-ga with its fsfreeze hook. */
const QGA_DROPIN = "/etc/systemd/system/qemu-guest-agent.service.d/vmsnap-fsfreeze-hook.conf";
/** Where systemd reads the unit's drop-ins, most important first. */
const QGA_DROPIN_DIRS = [
  "/etc/systemd/system/qemu-guest-agent.service.d",
  "/run/systemd/system/qemu-guest-agent.service.d",
  "/usr/local/lib/systemd/system/qemu-guest-agent.service.d",
  "/lib/systemd/system/qemu-guest-agent.service.d",
  "/usr/lib/systemd/system/qemu-guest-agent.service.d",
];
const QGA_UNITS = [
  "/etc/systemd/system/qemu-guest-agent.service",
  "/lib/systemd/system/qemu-guest-agent.service",
  "/usr/lib/systemd/system/qemu-guest-agent.service",
];
/** Debian's ExecStart, when no unit is found to read it from. */
const QGA_DEFAULT_EXEC = "-/usr/sbin/qemu-ga";
const QGA_HOOK = "/etc/qemu/fsfreeze-hook";
const AZURE_CONFIG = "/etc/azure/VMSnapshotScriptPluginConfig.json";
/** vmsnap's own config when Azure's file points at vmsnap's wrappers. */
export const AZURE_VMSNAP_CONFIG = "/etc/vmsnap/vmsnap.json";
const GCP_CFG = "/etc/default/instance_configs.cfg";

/** The hook's --timeout for an agent that waits `seconds`: it must give up first. */
function belowAgent(seconds: number): number {
  return seconds >= 10 ? seconds - 5 : Math.max(1, seconds - 1);
}

/** Quotes a word for sh. */
function sh(word: string): string {
  return /^[\w@%+=:,./-]+$/.test(word) ? word : `'${word.replaceAll("'", `'\\''`)}'`;
}

/** A hook wrapper script. */
function wrapper(
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

/** The plan of one agent: files with their content and mode. */
interface Planned {
  path: string;
  content: string;
  mode: number;
  /** Mode of a directory created for it. */
  dirMode?: number;
}

/** Context for planning. */
interface Plan {
  files: Planned[];
  notes: string[];
  /** Commands to run after writing (only on the real system). */
  after: string[][];
  /** Printed instead of files (AWS). */
  print?: string;
}

function readUnder(root: string, path: string): string | undefined {
  try {
    return readFileSync(join(root, path), "utf8");
  } catch {
    return undefined;
  }
}

function modeUnder(root: string, path: string): number | undefined {
  try {
    return statSync(join(root, path)).mode & 0o7777;
  } catch {
    return undefined;
  }
}

/** Every ExecStart= of a unit file's text, in order ("" resets). */
function execStarts(text: string): string[] {
  return [...text.matchAll(/^\s*ExecStart\s*=(.*)$/gm)].map((m) => m[1].trim());
}

/**
 * qemu-ga's command line as systemd runs it without vmsnap's drop-in: the
 * unit's ExecStart, then every drop-in's (by file name, as systemd orders
 * them), so an admin's override (say, --blacklist=guest-exec) is kept. Also
 * the drop-ins that come after vmsnap's and set ExecStart (they would win).
 */
function qgaExecStart(root: string): { exec: string; after: string[] } {
  const unit = QGA_UNITS.map((u) => readUnder(root, u)).find((u) => u !== undefined);
  let execs = unit === undefined ? [] : execStarts(unit);
  const ours = basename(QGA_DROPIN);
  const dropins = new Map<string, string>();
  // The first directory that has a name wins (/etc over /run over /lib), as in systemd.
  for (const dir of QGA_DROPIN_DIRS) {
    let names: string[] = [];
    try {
      names = readdirSync(join(root, dir));
    } catch {
      continue;
    }
    for (const name of names) {
      if (name.endsWith(".conf") && !dropins.has(name)) dropins.set(name, join(dir, name));
    }
  }
  const after: string[] = [];
  for (const name of [...dropins.keys()].sort()) {
    if (name === ours) continue;
    const lines = execStarts(readUnder(root, dropins.get(name)!) ?? "");
    if (lines.length === 0) continue;
    if (name > ours) after.push(dropins.get(name)!);
    else execs = [...execs, ...lines];
  }
  const last = execs.lastIndexOf("");
  const exec = execs.slice(last + 1)[0] ?? (unit === undefined ? QGA_DEFAULT_EXEC : "");
  return { exec: exec || QGA_DEFAULT_EXEC, after };
}

function qemuPlan(options: InstallOptions, hook: (event?: string) => string[]): Plan {
  const files: Planned[] = [{
    path: "/etc/qemu/fsfreeze-hook.d/vmsnap",
    content: wrapper({
      agent: "qemu-ga",
      purpose:
        "qemu-ga -F runs /etc/qemu/fsfreeze-hook freeze|thaw, which runs this file with the same word.",
      command: hook(),
      tail: ' -- "$1"',
    }),
    mode: 0o700,
    dirMode: 0o755,
  }];
  const notes: string[] = [];
  if (!existsSync(join(options.root, QGA_HOOK))) {
    notes.push(
      `${QGA_HOOK} is missing: install the qemu-guest-agent package, which ships the script that runs fsfreeze-hook.d.`,
    );
  }
  const { exec, after } = qgaExecStart(options.root);
  for (const name of after) {
    notes.push(
      `WARNING: the drop-in ${name} sets ExecStart after vmsnap's (${QGA_DROPIN}), so systemd uses its command line, without --fsfreeze-hook. Fix: add --fsfreeze-hook=${QGA_HOOK} there, or remove its ExecStart.`,
    );
  }
  if (/(^|\s)(-F|--fsfreeze-hook)/.test(exec)) {
    notes.push(`qemu-ga already starts with its fsfreeze hook (${exec}); no drop-in needed.`);
  } else {
    files.push({
      path: QGA_DROPIN,
      content: [
        "# Installed by `vmsnap install --for qemu-ga`: start qemu-ga with its fsfreeze hook.",
        "# (-F takes its path only when attached: --fsfreeze-hook=PATH.)",
        "[Service]",
        "ExecStart=",
        `ExecStart=${exec} --fsfreeze-hook=${QGA_HOOK}`,
        "",
      ].join("\n"),
      mode: 0o644,
      dirMode: 0o755,
    });
  }
  notes.push(
    "Debian's fsfreeze-hook always exits 0: a failed vmsnap freeze does not stop qemu-ga's freeze; vmsnap status and the log say what happened.",
  );
  return {
    files,
    notes,
    after: [["systemctl", "daemon-reload"], [
      "systemctl",
      "try-restart",
      "qemu-guest-agent.service",
    ]],
  };
}

function azurePlan(options: InstallOptions, hook: (event?: string) => string[]): Plan {
  const existing = readUnder(options.root, AZURE_CONFIG);
  const pre = "/etc/azure/vmsnap-pre.sh";
  const post = "/etc/azure/vmsnap-post.sh";
  let azure: Record<string, unknown> = {};
  if (existing !== undefined) {
    const errors: unknown[] = [];
    const parsed = parseJsonc(existing, errors as never, { allowTrailingComma: true });
    if (errors.length || typeof parsed !== "object" || parsed === null || Array.isArray(parsed)) {
      throw new VmsnapError(
        "IncorrectJSONConfigFile",
        `${AZURE_CONFIG} is not a JSON object; vmsnap install does not rewrite what it cannot read. Fix: correct it or move it away, then run vmsnap install --for azure again.`,
      );
    }
    azure = parsed as Record<string, unknown>;
  }
  const ours = azure.preScriptLocation === pre;
  const timeout = Number(azure.timeoutInSeconds ?? 30);
  if (!Number.isInteger(timeout) || timeout < 1) {
    throw new VmsnapError(
      "InvalidConfigValue",
      `${AZURE_CONFIG}: timeoutInSeconds is ${
        JSON.stringify(azure.timeoutInSeconds)
      }, not a whole number of seconds of at least 1; the hook could not be given a timeout below Azure's, so nothing was changed. Fix: write a number such as 60 there, then run vmsnap install --for azure again.`,
    );
  }
  const config = options.configPath ?? AZURE_VMSNAP_CONFIG;
  if (config === AZURE_CONFIG) {
    throw new VmsnapError(
      "InvalidConfigValue",
      `--config ${AZURE_CONFIG} is Azure's file, which will point at vmsnap's wrappers; vmsnap's own config must be another file. Fix: --config ${AZURE_VMSNAP_CONFIG} (the default).`,
    );
  }
  const files: Planned[] = [];
  const notes: string[] = [];
  if (!existsSync(join(options.root, config))) {
    // The admin's Azure settings and scripts keep running, now through vmsnap.
    files.push({
      path: config,
      content: existing !== undefined && !ours
        ? existing
        : `${JSON.stringify({ fsFreezeEnabled: true }, null, 2)}\n`,
      mode: 0o600,
      dirMode: 0o700,
    });
    if (existing !== undefined && !ours) {
      notes.push(
        `vmsnap's config ${config} starts as a copy of ${AZURE_CONFIG}: its pre/post scripts now run inside vmsnap.`,
      );
    }
  } else if (existing !== undefined && !ours && azure.preScriptLocation) {
    notes.push(
      `${AZURE_CONFIG} called ${azure.preScriptLocation} and ${azure.postScriptLocation}; Azure now calls vmsnap, which runs what ${config} lists. Add them there (preScriptLocation/postScriptLocation) if they must still run.`,
    );
  }
  // The hook must give up before Azure does (Azure caps the timeout at 1800 s).
  const azureWaits = Math.min(timeout, AZURE_MAX_TIMEOUT);
  const hookTimeout = String(belowAgent(azureWaits));
  files.push(
    {
      path: pre,
      content: wrapper({
        agent: "azure",
        purpose: "Azure Backup runs `sh <preScriptLocation>` before its snapshot.",
        command: [...hook("pre"), "--timeout", hookTimeout],
      }),
      mode: 0o700,
      dirMode: 0o700,
    },
    {
      path: post,
      content: wrapper({
        agent: "azure",
        purpose: "Azure Backup runs `sh <postScriptLocation>` after its snapshot.",
        command: [...hook("post"), "--timeout", hookTimeout],
      }),
      mode: 0o700,
    },
    {
      path: AZURE_CONFIG,
      // Strict JSON: Azure's reader takes no comments. Every other Azure key is kept.
      content: `${
        JSON.stringify(
          {
            pluginName: "ScriptRunner",
            timeoutInSeconds: timeout,
            continueBackupOnFailure: true,
            fsFreezeEnabled: true,
            ...azure,
            preScriptLocation: pre,
            postScriptLocation: post,
            preScriptParams: [],
            postScriptParams: [],
            preScriptNoOfRetries: 0,
            postScriptNoOfRetries: 0,
          },
          null,
          2,
        )
      }\n`,
      mode: 0o600,
    },
  );
  notes.push(
    `Azure waits timeoutInSeconds (${azureWaits} s) for each script; the hook gives up ${
      azureWaits - Number(hookTimeout)
    } s before.`,
  );
  return { files, notes, after: [] };
}

/**
 * Sets `enabled = true` in the `[Snapshots]` section, keeping everything else.
 * Keys match in any case, as INI readers take them (Python's configparser
 * lowercases keys): `Enabled = false` left beside a new `enabled = true` is
 * a duplicate key (an error, or the later one wins).
 */
function enableGcpSnapshots(text: string): string {
  const lines = text.split("\n");
  const start = lines.findIndex((l) => /^\s*\[Snapshots\]\s*$/.test(l));
  if (start < 0) {
    const body = text === "" || text.endsWith("\n") ? text : `${text}\n`;
    return `${body}${body ? "\n" : ""}[Snapshots]\nenabled = true\n`;
  }
  let end = lines.findIndex((l, i) => i > start && /^\s*\[/.test(l));
  if (end < 0) end = lines.length;
  const at = lines.findIndex((l, i) => i > start && i < end && /^\s*enabled\s*[=:]/i.test(l));
  if (at >= 0) lines[at] = "enabled = true";
  else lines.splice(start + 1, 0, "enabled = true");
  return lines.join("\n");
}

function gcpPlan(options: InstallOptions, hook: (event?: string) => string[]): Plan {
  const cfg = readUnder(options.root, GCP_CFG) ?? "";
  const section = cfg.split(/^\s*\[Snapshots\]\s*$/m)[1]?.split(/^\s*\[/m)[0] ?? "";
  const agentTimeout = Number(section.match(/^\s*timeout_in_seconds\s*[=:]\s*(\d+)/im)?.[1] ?? 60);
  const timeout = String(belowAgent(agentTimeout));
  const script = (event: "pre" | "post") => ({
    path: `/etc/google/snapshots/${event}.sh`,
    content: wrapper({
      agent: "gcp",
      purpose:
        `The Google guest agent runs ${event}.sh with the disk list (timeout_in_seconds ${agentTimeout}).`,
      command: [...hook(event), "--timeout", timeout],
      tail: ' -- "$@"',
    }),
    mode: 0o700,
    dirMode: 0o700,
  });
  return {
    files: [script("pre"), script("post"), {
      path: GCP_CFG,
      content: enableGcpSnapshots(cfg),
      // The admin's mode is kept (the agent only reads the file).
      mode: modeUnder(options.root, GCP_CFG) ?? 0o644,
      dirMode: 0o755,
    }],
    notes: [
      "The guest agent reads instance_configs.cfg at start: restart it (systemctl restart google-guest-agent).",
    ],
    after: [],
  };
}

function awsPlan(options: InstallOptions, hook: (event?: string) => string[]): Plan {
  const config = options.configPath ?? DEFAULT_CONFIG_PATH;
  const [vmsnap] = hook("pre");
  const script = [
    "#!/bin/sh",
    'case "{{ command }}" in',
    `  pre-script) exec ${hook("pre").map(sh).join(" ")} --timeout 55 ;;`,
    `  post-script) exec ${hook("post").map(sh).join(" ")} --timeout 55 ;;`,
    `  dry-run) exec ${sh(vmsnap)} check --config ${sh(config)} ;;`,
    '  *) echo "unknown command {{ command }}" >&2; exit 64 ;;',
    "esac",
  ];
  const document = {
    schemaVersion: "2.2",
    description: "vmsnap: application-consistent snapshots for Amazon Data Lifecycle Manager",
    parameters: {
      executionId: { type: "String", default: "None", allowedPattern: "^.{1,256}$" },
      command: {
        type: "String",
        default: "dry-run",
        allowedValues: ["pre-script", "post-script", "dry-run"],
      },
    },
    mainSteps: [{
      action: "aws:runShellScript",
      name: "vmsnap",
      precondition: { StringEquals: ["platformType", "Linux"] },
      inputs: { timeoutSeconds: "60", runCommand: script },
    }],
  };
  return {
    files: [],
    notes: [
      "AWS keeps the pre and post scripts in an SSM document, not on the VM: create it (aws ssm create-document --document-type Command --content file://vmsnap.json --name vmsnap) and name it in the DLM policy's scripts (ExecutionHandler), with an ExecutionTimeout of 60 s or more.",
    ],
    after: [],
    print: JSON.stringify(document, null, 2),
  };
}

function vmwarePlan(_options: InstallOptions, hook: (event?: string) => string[]): Plan {
  return {
    files: [{
      path: "/etc/vmware-tools/backupScripts.d/vmsnap",
      content: wrapper({
        agent: "vmware",
        purpose:
          "vmtoolsd runs every file here with freeze, then thaw or freezeFail (and an optional argument).",
        command: hook(),
        tail: ' -- "$@"',
      }),
      mode: 0o700,
      dirMode: 0o755,
    }],
    notes: [],
    after: [],
  };
}

/** What each agent installs. */
function planFor(options: InstallOptions): Plan {
  const vmsnap = options.vmsnap ?? selfCommand([]);
  const config = options.agent === "azure"
    ? options.configPath ?? AZURE_VMSNAP_CONFIG
    : options.configPath ?? DEFAULT_CONFIG_PATH;
  const hook = (event?: string) => [
    ...vmsnap,
    "hook",
    ...(event ? [event] : []),
    "--for",
    options.agent,
    "--config",
    config,
  ];
  switch (options.agent) {
    case "qemu-ga":
      return qemuPlan(options, hook);
    case "vmware":
      return vmwarePlan(options, hook);
    case "azure":
      return azurePlan(options, hook);
    case "gcp":
      return gcpPlan(options, hook);
    case "aws":
      return awsPlan(options, hook);
    case "generic":
      throw new VmsnapError(
        "UsageError",
        "--for generic has nothing to install: the caller runs vmsnap hook pre --for generic and vmsnap hook post --for generic itself.",
      );
  }
}

function manifestPath(root: string, agent: AgentName): string {
  return join(root, BACKUP_DIR, `${agent}.json`);
}

function readManifest(root: string, agent: AgentName): Manifest | undefined {
  try {
    return JSON.parse(readFileSync(manifestPath(root, agent), "utf8")) as Manifest;
  } catch {
    return undefined;
  }
}

/**
 * Writes a file whole: a temporary file renamed into place, so no reader sees
 * half of it. The temporary file is created new (O_EXCL, O_NOFOLLOW) and its
 * mode set through its descriptor: a link planted at its name is never
 * followed.
 */
function writeAtomically(path: string, content: string, mode: number): void {
  const fresh = `${path}.vmsnap-new`;
  rmSync(fresh, { force: true });
  const flags = constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL | constants.O_NOFOLLOW;
  const fd = openSync(fresh, flags, mode);
  try {
    fchmodSync(fd, mode);
    writeSync(fd, content);
  } finally {
    closeSync(fd);
  }
  renameSync(fresh, path);
}

/**
 * Refuses, before anything is changed, to write where a user other than root
 * could replace what the agent runs as root (a directory on the way others
 * can write) or into a symbolic link (whose target would be edited).
 */
function refuseUnsafeTargets(root: string, paths: string[]): void {
  for (const path of paths) {
    const target = join(root, path);
    const problems = checkDirectory(dirname(target), `the directory of ${path}`);
    if (problems.length > 0) {
      throw new VmsnapError(
        "InsecureDirectory",
        `${
          problems[0].message
        } The backup agent runs what vmsnap install writes there as root; nothing was changed.`,
      );
    }
    if (lstatOrUndefined(target)?.isSymbolicLink()) {
      throw new VmsnapError(
        "InstallFailed",
        `${target} is a symbolic link; vmsnap install writes files, never through a link (its target would be changed); nothing was changed. Fix: replace the link by the file it points at, then run vmsnap install again.`,
      );
    }
  }
}

function lstatOrUndefined(path: string) {
  try {
    return lstatSync(path);
  } catch {
    return undefined;
  }
}

/**
 * Installs the agent's hook files (or, with `uninstall`, removes them and
 * restores what was there). Returns the changes, in order; with `dryRun`
 * nothing is changed.
 *
 * @example
 * ```ts
 * import { install } from "./install.ts";
 * const { changes } = install({ agent: "qemu-ga", root: "/", dryRun: true });
 * for (const c of changes) console.log(c.action, c.path);
 * ```
 */
export function install(
  options: InstallOptions,
): { changes: Change[]; notes: string[]; print?: string } {
  const plan = planFor(options);
  const { root, dryRun } = options;
  const changes: Change[] = [];
  if (options.agent !== "azure" && plan.files.length > 0) {
    const config = options.configPath ?? DEFAULT_CONFIG_PATH;
    if (!existsSync(join(root, config)) && !existsSync(config)) {
      plan.notes.push(
        `vmsnap's config ${config} does not exist yet: the hook will fail until it does (vmsnap check --config ${config}).`,
      );
    }
  }
  // The agent runs the hook as root: the binary it execs must be one only root can change.
  const binary = (options.vmsnap ?? selfCommand([]))[0];
  for (const problem of checkExecutable(binary, BINARY_RULE)) {
    plan.notes.push(`WARNING: the agent will run ${binary} as root, but ${problem.message}`);
  }
  if (plan.files.length > 0) {
    refuseUnsafeTargets(root, [
      ...plan.files.map((f) => f.path),
      join(BACKUP_DIR, `${options.agent}.json`),
      ...plan.files.map((f) => join(BACKUP_DIR, options.agent, f.path)),
    ]);
  }
  const manifest = readManifest(root, options.agent) ?? { agent: options.agent, files: [] };
  for (const file of plan.files) {
    const target = join(root, file.path);
    const current = readUnder(root, file.path);
    const currentMode = current === undefined ? undefined : statSync(target).mode & 0o7777;
    if (current === file.content && currentMode === file.mode) {
      changes.push({ action: "unchanged", path: file.path });
      continue;
    }
    let entry = manifest.files.find((f) => f.path === file.path);
    if (!entry) {
      entry = { path: file.path, existed: current !== undefined };
      if (current !== undefined) {
        entry.backup = join(BACKUP_DIR, options.agent, file.path);
        changes.push({ action: "backup", path: file.path, detail: `to ${entry.backup}` });
        if (!dryRun) {
          mkdirSync(dirname(join(root, entry.backup)), { recursive: true, mode: 0o700 });
          copyFileSync(target, join(root, entry.backup));
        }
      }
      manifest.files.push(entry);
    }
    changes.push({
      action: current === undefined ? "create" : file.path.endsWith(".cfg") ? "edit" : "replace",
      path: file.path,
      detail: `mode ${file.mode.toString(8).padStart(4, "0")}`,
    });
    entry.installed = digest(file.content);
    if (!dryRun) {
      mkdirSync(dirname(target), { recursive: true, mode: file.dirMode ?? 0o755 });
      writeAtomically(target, file.content, file.mode);
    }
  }
  if (!dryRun && plan.files.length > 0) {
    mkdirSync(join(root, BACKUP_DIR), { recursive: true, mode: 0o700 });
    writeFileSync(manifestPath(root, options.agent), JSON.stringify(manifest, null, 2), {
      mode: 0o600,
    });
  }
  const wrote = changes.some((c) => c.action !== "unchanged");
  if (wrote) runAfter(plan.after, options, changes);
  return { changes, notes: plan.notes, print: plan.print };
}

/** Commands after a change (systemd), only on the real system where systemd runs. */
function runAfter(commands: string[][], options: InstallOptions, changes: Change[]): void {
  if (options.root !== "/" || !existsSync("/run/systemd/system")) return;
  for (const argv of commands) {
    changes.push({ action: "run", path: argv.join(" ") });
    if (!options.dryRun) spawnSync(argv[0], argv.slice(1), { stdio: "ignore" });
  }
}

/**
 * Removes what `install` put in place and restores what was there before.
 *
 * @example
 * ```ts
 * import { uninstall } from "./install.ts";
 * const { changes } = uninstall({ agent: "qemu-ga", root: "/", dryRun: false });
 * ```
 */
export function uninstall(options: InstallOptions): { changes: Change[]; notes: string[] } {
  const { root, dryRun } = options;
  const manifest = readManifest(root, options.agent);
  const changes: Change[] = [];
  if (!manifest) {
    return {
      changes,
      notes: [`nothing to uninstall: vmsnap install --for ${options.agent} left no manifest.`],
    };
  }
  const notes: string[] = [];
  for (const file of [...manifest.files].reverse()) {
    const target = join(root, file.path);
    const current = readUnder(root, file.path);
    if (file.installed && current !== undefined && digest(current) !== file.installed) {
      // Someone changed it since: neither removed nor overwritten with the old copy.
      changes.push({ action: "unchanged", path: file.path, detail: "changed since install" });
      notes.push(
        `${file.path} was changed since vmsnap install wrote it, so uninstall left it as it is${
          file.backup ? `; what was there before install is kept at ${file.backup}` : ""
        }. Fix: take vmsnap's part out of it by hand${
          file.backup ? " (compare with that copy)" : ""
        }.`,
      );
      continue;
    }
    if (file.existed && file.backup) {
      changes.push({ action: "restore", path: file.path, detail: `from ${file.backup}` });
      if (!dryRun) {
        const mode = statSync(join(root, file.backup)).mode & 0o7777;
        writeAtomically(target, readFileSync(join(root, file.backup), "utf8"), mode);
        rmSync(join(root, file.backup), { force: true });
      }
    } else if (existsSync(target)) {
      changes.push({ action: "remove", path: file.path });
      if (!dryRun) rmSync(target, { force: true });
    }
  }
  if (!dryRun) rmSync(manifestPath(root, options.agent), { force: true });
  if (changes.some((c) => c.action !== "unchanged")) {
    runAfter(planAfter(options.agent), options, changes);
  }
  return { changes, notes };
}

function planAfter(agent: AgentName): string[][] {
  return agent === "qemu-ga"
    ? [["systemctl", "daemon-reload"], ["systemctl", "try-restart", "qemu-guest-agent.service"]]
    : [];
}

/**
 * The changes as printed: one line each (`create /etc/...`), then the notes
 * and anything to copy elsewhere (AWS's document); or one JSON object.
 *
 * @example
 * ```ts
 * import { formatInstall, install } from "./install.ts";
 * const options = { agent: "vmware" as const, root: "/", dryRun: true };
 * console.log(formatInstall(install(options), { command: "install", json: false, ...options }));
 * ```
 */
export function formatInstall(
  done: { changes: Change[]; notes: string[]; print?: string },
  how: { command: string; agent: AgentName; root: string; dryRun: boolean; json: boolean },
): string {
  if (how.json) return JSON.stringify({ ok: true, ...how, ...done });
  const prefix = how.root === "/" ? "" : how.root;
  return [
    `vmsnap ${how.command} --for ${how.agent} (${AGENTS[how.agent].title})${
      how.dryRun ? ": dry run, nothing changed" : ""
    }${prefix ? ` under ${prefix}` : ""}`,
    ...done.changes.map((c) =>
      `  ${c.action.padEnd(9)} ${c.action === "run" ? c.path : prefix + c.path}${
        c.detail ? ` (${c.detail})` : ""
      }`
    ),
    ...(done.changes.length === 0 && !done.print ? ["  nothing to change"] : []),
    ...done.notes.map((n) => `  note: ${n}`),
    ...(done.print ? ["", done.print] : []),
  ].join("\n");
}
