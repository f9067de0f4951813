/**
 * `vmsnap install --for <agent>` and `vmsnap uninstall --for <agent>`: put
 * the files in place through which each backup agent calls `vmsnap hook`,
 * and take them away again. What each agent needs is its file's plan
 * (agents/<agent>.ts); the mechanics here are the same for every agent:
 *
 * - Idempotent: a file that already has the content is left alone.
 * - Keeps what was there: a file that is replaced or edited is first copied
 *   to `<root>/var/backups/vmsnap/` (never next to it: VMware runs every file
 *   in backupScripts.d), and a manifest per agent records what existed, so
 *   `uninstall` restores it exactly.
 * - Prints every change; `--dry-run` prints them and changes nothing;
 *   `--root DIR` installs under a prefix (tests, packaging, an image), every
 *   link on the way followed inside it (./root_paths.ts).
 * - Creates the directories it needs (0755, or the plan's mode for the
 *   file's own), records them, and `uninstall` removes them when empty.
 * - Where SELinux is on, labels what it wrote (./install_selinux.ts); where
 *   the agent reads a changed file only at start, restarts it, queued when
 *   vmsnap runs inside it (./agent_restart.ts). Both only on the running
 *   system; for another root they are printed.
 *
 * @module
 */
import { createHash } from "node:crypto";
import {
  closeSync,
  constants,
  copyFileSync,
  existsSync,
  fchmodSync,
  lstatSync,
  openSync,
  readdirSync,
  readFileSync,
  renameSync,
  rmSync,
  statSync,
  writeFileSync,
  writeSync,
} from "node:fs";
import { dirname, join } from "node:path";
import { type AgentName, AGENTS } from "./agents.ts";
import { type InstallPlan, type PlannedFile, sh, type TargetSystem } from "./agents/agent.ts";
import { VmsnapError } from "../errors.ts";
import { checkDirectory, checkExecutable, type ExecutableRule } from "../sys/permissions.ts";
import { selfCommand } from "../sys/self.ts";
import { kindUnder, readUnder, resolveUnder } from "../sys/under_root.ts";
import { detectInitSystem } from "../sys/init_system.ts";
import { hostPathUnder, makeDirUnder, removeDirsUnder } from "./root_paths.ts";
import { planInstallSelinux, runSelinuxSteps } from "./install_selinux.ts";
import { insideAgent, planRestart, runningInit, runRestart } from "./agent_restart.ts";

/** The vmsnap binary the installed hooks run, judged by the executable rule. */
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
  /** `--hook-dir`: the directory the agent's hook script runs. */
  hookDir?: string;
  /** `--agent-config`: the agent's own config file. */
  agentConfig?: string;
  /** `--selinux-boolean`: turn on the agent's SELinux boolean (qemu-ga's). */
  selinuxBoolean?: boolean;
}

/** One change, as printed. */
export interface Change {
  action: "create" | "replace" | "edit" | "unchanged" | "backup" | "remove" | "restore" | "run";
  /** The path on the target system (without the root prefix), or the command run. */
  path: string;
  detail?: string;
}

/** What install or uninstall did. */
export interface InstallOutcome {
  changes: Change[];
  notes: string[];
  /** Printed for the admin to put elsewhere (AWS's SSM document). */
  print?: string;
}

/** What install recorded for uninstall (`/var/backups/vmsnap/<agent>.json`). */
export interface Manifest {
  agent: AgentName;
  /** `installed`: the SHA-256 of what install wrote (uninstall leaves a file changed since). */
  files: {
    path: string;
    existed: boolean;
    backup?: string;
    installed?: string;
    /** The agent reads it only at start: undoing it restarts the agent. */
    restart?: boolean;
  }[];
  /** Directories install created (target paths), parents first. */
  dirs?: string[];
  /** The SELinux commands that undo what install added (a rule, a boolean). */
  selinux?: string[][];
}

/** A command as the admin would type it (words quoted for sh where needed). */
function shell(argv: string[]): string {
  return argv.map(sh).join(" ");
}

/** The SHA-256 of a file's text, hex. */
function digest(text: string): string {
  return createHash("sha256").update(text).digest("hex");
}

/** Where backups and manifests go (a path on the target system). */
export const BACKUP_DIR = "/var/backups/vmsnap";

/**
 * The system under `root`, as the agents' plans read it: links followed
 * inside the root, never onto this machine's own files.
 *
 * @example
 * ```ts
 * import { targetSystem } from "./install.ts";
 * targetSystem("/").exists("/etc/qemu/fsfreeze-hook");
 * ```
 */
export function targetSystem(root: string): TargetSystem {
  const resolved = (path: string) => {
    const found = resolveUnder(root, path);
    return found === undefined ? undefined : join(root, found);
  };
  return {
    root,
    read: (path) => readUnder(root, path),
    exists: (path) => kindUnder(root, path).kind !== "missing",
    mode(path) {
      const host = resolved(path);
      return host === undefined ? undefined : statSync(host).mode & 0o7777;
    },
    list(dir) {
      const host = resolved(dir);
      try {
        return host === undefined ? undefined : readdirSync(host);
      } catch {
        return undefined;
      }
    },
  };
}

/** The agent's plan for this system, with the config its hooks name and the command they run. */
function planFor(options: InstallOptions, system: TargetSystem): InstallPlan & { config: string } {
  const agent = AGENTS[options.agent];
  const vmsnap = options.vmsnap ?? selfCommand([]);
  const config = options.configPath ?? agent.defaultConfig;
  const hook = (event?: string) => [
    ...vmsnap,
    "hook",
    ...(event ? [event] : []),
    "--for",
    options.agent,
    "--config",
    config,
  ];
  const plan = agent.plan({
    system,
    config,
    hook,
    hookDir: options.hookDir,
    agentConfig: options.agentConfig,
  });
  return { ...plan, config };
}

/** A note when the hooks name a config that does not exist yet (and the plan does not write it). */
function missingConfigNote(plan: InstallPlan & { config: string }, system: TargetSystem): string[] {
  const { config } = plan;
  if (plan.files.length === 0 || plan.files.some((f) => f.path === config)) return [];
  if (system.exists(config) || existsSync(config)) return [];
  return [
    `vmsnap's config ${config} does not exist yet: the hook will fail until it does (vmsnap check --config ${config}).`,
  ];
}

/** The vmsnap binary the hooks exec. */
function binaryOf(options: InstallOptions): string {
  return (options.vmsnap ?? selfCommand([]))[0];
}

/** The agent runs the hook as root: the binary it execs must be one only root can change. */
function binaryWarnings(options: InstallOptions): string[] {
  const binary = binaryOf(options);
  return checkExecutable(binary, BINARY_RULE).map((problem) =>
    `WARNING: the agent will run ${binary} as root, but ${problem.message}`
  );
}

function manifestPath(root: string, agent: AgentName): string {
  return hostPathUnder(root, join(BACKUP_DIR, `${agent}.json`));
}

/**
 * What `vmsnap install --for AGENT` recorded under a root, or undefined when
 * it is not installed there.
 *
 * @example
 * ```ts
 * import { readManifest } from "./install.ts";
 * const installed = readManifest("/", "qemu-ga");
 * console.log(installed?.files.map((f) => f.path) ?? "not installed");
 * ```
 */
export function readManifest(root: string, agent: AgentName): Manifest | undefined {
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
 * can write) or into a symbolic link (whose target would be edited). Paths
 * are resolved inside the root: a link never leads out of it.
 */
function refuseUnsafeTargets(root: string, paths: string[]): void {
  for (const path of paths) {
    const target = hostPathUnder(root, path);
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

/** Writes the manifest uninstall reads (root only), creating its directory like any other. */
function writeManifest(root: string, manifest: Manifest): void {
  manifest.dirs = [
    ...(manifest.dirs ?? []),
    ...makeDirUnder({ root, dir: BACKUP_DIR, mode: 0o700, dryRun: false }),
  ];
  writeFileSync(manifestPath(root, manifest.agent), JSON.stringify(manifest, null, 2), {
    mode: 0o600,
  });
}

/** Creates a directory install needs, recording the ones it made for uninstall. */
function makeDir(
  options: InstallOptions,
  manifest: Manifest,
  dir: { path: string; mode: number },
): void {
  const created = makeDirUnder({
    root: options.root,
    dir: dir.path,
    mode: dir.mode,
    dryRun: options.dryRun,
  });
  manifest.dirs = [...(manifest.dirs ?? []), ...created];
}

/**
 * Installs the agent's hook files (or, with `uninstall`, removes them and
 * restores what was there), labels them where SELinux is on, and restarts
 * the agent when it reads a changed file only at start. Returns the
 * changes, in order; with `dryRun` nothing is changed.
 *
 * @example
 * ```ts
 * import { install } from "./install.ts";
 * const { changes } = install({ agent: "qemu-ga", root: "/", dryRun: true });
 * for (const c of changes) console.log(c.action, c.path);
 * ```
 */
export function install(options: InstallOptions): InstallOutcome {
  const system = targetSystem(options.root);
  const plan = planFor(options, system);
  const notes = [...plan.notes, ...missingConfigNote(plan, system), ...binaryWarnings(options)];
  if (plan.files.length > 0) {
    refuseUnsafeTargets(options.root, [
      ...plan.files.map((f) => f.path),
      join(BACKUP_DIR, `${options.agent}.json`),
      ...plan.files.map((f) => join(BACKUP_DIR, options.agent, f.path)),
    ]);
  }
  const manifest = readManifest(options.root, options.agent) ??
    { agent: options.agent, files: [] };
  const changes: Change[] = [];
  const changed: PlannedFile[] = [];
  for (const file of plan.files) {
    const done = putFile(file, manifest, options, system);
    changes.push(...done);
    if (done.some((c) => c.action !== "unchanged")) changed.push(file);
  }
  if (!options.dryRun && plan.files.length > 0) writeManifest(options.root, manifest);
  if (plan.files.length > 0) {
    notes.push(...labelForSelinux(options, { plan, changed, manifest, changes }));
  }
  if (changed.some((f) => f.restart)) notes.push(...restartAgent(options, changes));
  return { changes, notes, print: plan.print };
}

/**
 * The SELinux step of install: run (and recorded for uninstall) on the
 * running system; printed for another root.
 */
function labelForSelinux(
  options: InstallOptions,
  done: { plan: InstallPlan; changed: PlannedFile[]; manifest: Manifest; changes: Change[] },
): string[] {
  const live = options.root === "/";
  const steps = planInstallSelinux({
    root: options.root,
    live,
    written: done.changed.map((f) => f.path),
    entrypoint: done.plan.selinuxEntrypoint,
    binary: binaryOf(options),
    setBoolean: options.selinuxBoolean === true,
  });
  if (steps.commands.length === 0) return steps.notes.map((n) => `SELinux: ${n}`);
  if (!live) {
    return [
      ...steps.notes.map((n) => `SELinux: ${n}`),
      `SELinux is on in ${options.root}: on that system, run as root: ${
        steps.commands.map((argv) => shell(argv)).join(" && ")
      }`,
    ];
  }
  for (const argv of steps.commands) done.changes.push({ action: "run", path: shell(argv) });
  if (!options.dryRun) {
    const record = () => writeManifest(options.root, done.manifest);
    done.manifest.selinux = [...(done.manifest.selinux ?? []), ...steps.undo];
    try {
      runSelinuxSteps({ root: options.root, commands: steps.commands });
    } finally {
      record();
    }
  }
  return steps.notes.map((n) => `SELinux: ${n}`);
}

/** Restarts the agent (running system only), queued when vmsnap runs inside it. */
function restartAgent(options: InstallOptions, changes: Change[]): string[] {
  const service = AGENTS[options.agent].service;
  if (!service) return [];
  if (options.root !== "/") {
    const init = detectInitSystem({ root: options.root }).kind;
    const how = init === "openrc"
      ? `rc-service ${service.openrc[0]} restart`
      : `systemctl restart ${service.units[0]}`;
    return [`on that system, restart the agent for the change to take effect (${how}).`];
  }
  const plan = planRestart({
    root: options.root,
    service,
    init: runningInit(),
    inside: insideAgent(service),
  });
  for (const argv of plan.now) changes.push({ action: "run", path: shell(argv) });
  if (plan.detached) {
    const { argv, delaySeconds } = plan.detached;
    changes.push({ action: "run", path: shell(argv), detail: `in ${delaySeconds} s, detached` });
  }
  if (options.dryRun) return [plan.say];
  const failed = runRestart(plan).find((r) => r.status !== 0);
  if (failed) {
    return [
      `WARNING: ${shell(failed.argv)} failed (exit ${failed.status}${
        failed.detail ? `: ${failed.detail}` : ""
      }): restart the agent yourself for the change to take effect.`,
    ];
  }
  return [plan.say];
}

/**
 * One planned file: left alone when it has the content and mode already;
 * else what was there is backed up first (once: the manifest remembers it),
 * then it is written whole, its directory created if needed.
 */
function putFile(
  file: PlannedFile,
  manifest: Manifest,
  options: InstallOptions,
  system: TargetSystem,
): Change[] {
  const { root, dryRun } = options;
  const target = hostPathUnder(root, file.path);
  const current = system.read(file.path);
  const currentMode = current === undefined ? undefined : statSync(target).mode & 0o7777;
  if (current === file.content && currentMode === file.mode) {
    return [{ action: "unchanged", path: file.path }];
  }
  const changes: Change[] = [];
  let entry = manifest.files.find((f) => f.path === file.path);
  if (!entry) {
    entry = { path: file.path, existed: current !== undefined };
    if (current !== undefined) {
      entry.backup = join(BACKUP_DIR, options.agent, file.path);
      changes.push({ action: "backup", path: file.path, detail: `to ${entry.backup}` });
      // Root's alone: the backups directory 0700 (its parents 0755), what is under it likewise.
      makeDir(options, manifest, { path: BACKUP_DIR, mode: 0o700 });
      makeDir(options, manifest, { path: dirname(entry.backup), mode: 0o700 });
      if (!dryRun) copyFileSync(target, hostPathUnder(root, entry.backup));
    }
    manifest.files.push(entry);
  }
  if (file.restart) entry.restart = true;
  changes.push({
    action: current === undefined
      ? "create"
      : file.restart || file.path.endsWith(".cfg")
      ? "edit"
      : "replace",
    path: file.path,
    detail: `mode ${file.mode.toString(8).padStart(4, "0")}`,
  });
  entry.installed = digest(file.content);
  makeDir(options, manifest, { path: dirname(file.path), mode: file.dirMode ?? 0o755 });
  if (!dryRun) writeAtomically(hostPathUnder(root, file.path), file.content, file.mode);
  return changes;
}

/**
 * Removes what `install` put in place and restores what was there before:
 * the SELinux rule and boolean it added, the files, the directories it
 * created; then restarts the agent if it reads an undone file at start.
 *
 * @example
 * ```ts
 * import { uninstall } from "./install.ts";
 * const { changes } = uninstall({ agent: "qemu-ga", root: "/", dryRun: false });
 * ```
 */
export function uninstall(options: InstallOptions): InstallOutcome {
  const manifest = readManifest(options.root, options.agent);
  if (!manifest) {
    return {
      changes: [],
      notes: [`nothing to uninstall: vmsnap install --for ${options.agent} left no manifest.`],
    };
  }
  const system = targetSystem(options.root);
  const changes: Change[] = [];
  const notes: string[] = [];
  notes.push(...undoSelinux(options, manifest, changes));
  let restart = false;
  const gone: string[] = [];
  for (const file of [...manifest.files].reverse()) {
    const undone = undoFile(file, options, system);
    changes.push(...undone.changes);
    notes.push(...undone.notes);
    if (undone.changes.some((c) => c.action !== "unchanged")) restart ||= file.restart === true;
    if (undone.changes.some((c) => c.action === "remove")) gone.push(file.path);
    if (file.backup && undone.changes.some((c) => c.action === "restore")) gone.push(file.backup);
  }
  gone.push(join(BACKUP_DIR, `${options.agent}.json`));
  if (!options.dryRun) rmSync(manifestPath(options.root, options.agent), { force: true });
  const dirs = removeDirsUnder({
    root: options.root,
    dirs: manifest.dirs ?? [],
    dryRun: options.dryRun,
    gone,
  });
  for (const dir of dirs) changes.push({ action: "remove", path: `${dir}/` });
  if (restart) notes.push(...restartAgent(options, changes));
  return { changes, notes };
}

/** Undoes the SELinux rule and boolean install added (running system only). */
function undoSelinux(options: InstallOptions, manifest: Manifest, changes: Change[]): string[] {
  const undo = manifest.selinux ?? [];
  if (undo.length === 0) return [];
  if (options.root !== "/") {
    return [
      `on that system, run as root: ${undo.map((argv) => shell(argv)).join(" && ")}`,
    ];
  }
  for (const argv of undo) changes.push({ action: "run", path: shell(argv) });
  if (options.dryRun) return [];
  try {
    runSelinuxSteps({ root: options.root, commands: undo });
    return [];
  } catch (error) {
    return [`WARNING: ${(error as Error).message}`];
  }
}

/**
 * One file install wrote: what was there restored from its backup, or the
 * file removed; left as it is, with a note, when someone changed it since.
 */
function undoFile(
  file: Manifest["files"][number],
  options: InstallOptions,
  system: TargetSystem,
): { changes: Change[]; notes: string[] } {
  const { root, dryRun } = options;
  const target = hostPathUnder(root, file.path);
  const current = system.read(file.path);
  if (file.installed && current !== undefined && digest(current) !== file.installed) {
    // Someone changed it since: neither removed nor overwritten with the old copy.
    return {
      changes: [{ action: "unchanged", path: file.path, detail: "changed since install" }],
      notes: [
        `${file.path} was changed since vmsnap install wrote it, so uninstall left it as it is${
          file.backup ? `; what was there before install is kept at ${file.backup}` : ""
        }. Fix: take vmsnap's part out of it by hand${
          file.backup ? " (compare with that copy)" : ""
        }.`,
      ],
    };
  }
  if (file.existed && file.backup) {
    if (!dryRun) {
      const backup = hostPathUnder(root, file.backup);
      const mode = statSync(backup).mode & 0o7777;
      writeAtomically(target, readFileSync(backup, "utf8"), mode);
      rmSync(backup, { force: true });
    }
    return {
      changes: [{ action: "restore", path: file.path, detail: `from ${file.backup}` }],
      notes: [],
    };
  }
  if (!existsSync(target)) return { changes: [], notes: [] };
  if (!dryRun) rmSync(target, { force: true });
  return { changes: [{ action: "remove", path: file.path }], notes: [] };
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
  done: InstallOutcome,
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
