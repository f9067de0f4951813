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
import { dirname, join } from "node:path";
import { type AgentName, AGENTS } from "./agents.ts";
import type { InstallPlan, PlannedFile, TargetSystem } from "./agents/agent.ts";
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

/**
 * The system under `root`, as the agents' plans read it.
 *
 * @example
 * ```ts
 * import { targetSystem } from "./install.ts";
 * targetSystem("/").exists("/etc/qemu/fsfreeze-hook");
 * ```
 */
export function targetSystem(root: string): TargetSystem {
  const under = (path: string) => join(root, path);
  return {
    root,
    read(path) {
      try {
        return readFileSync(under(path), "utf8");
      } catch {
        return undefined;
      }
    },
    exists: (path) => existsSync(under(path)),
    mode(path) {
      try {
        return statSync(under(path)).mode & 0o7777;
      } catch {
        return undefined;
      }
    },
    list(dir) {
      try {
        return readdirSync(under(dir));
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
  return { ...agent.plan({ system, config, hook }), config };
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

/** The agent runs the hook as root: the binary it execs must be one only root can change. */
function binaryWarnings(options: InstallOptions): string[] {
  const binary = (options.vmsnap ?? selfCommand([]))[0];
  return checkExecutable(binary, BINARY_RULE).map((problem) =>
    `WARNING: the agent will run ${binary} as root, but ${problem.message}`
  );
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

/** Writes the manifest uninstall reads (root only). */
function writeManifest(root: string, manifest: Manifest): void {
  mkdirSync(join(root, BACKUP_DIR), { recursive: true, mode: 0o700 });
  writeFileSync(manifestPath(root, manifest.agent), JSON.stringify(manifest, null, 2), {
    mode: 0o600,
  });
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
  const changes = plan.files.flatMap((file) => putFile(file, manifest, options, system));
  if (!options.dryRun && plan.files.length > 0) writeManifest(options.root, manifest);
  if (changes.some((c) => c.action !== "unchanged")) reload(options, system, changes);
  return { changes, notes, print: plan.print };
}

/**
 * One planned file: left alone when it has the content and mode already;
 * else what was there is backed up first (once: the manifest remembers it),
 * then it is written whole.
 */
function putFile(
  file: PlannedFile,
  manifest: Manifest,
  options: InstallOptions,
  system: TargetSystem,
): Change[] {
  const { root, dryRun } = options;
  const target = join(root, file.path);
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
  return changes;
}

/** The commands that make the agent take the change, only on the running system. */
function reload(options: InstallOptions, system: TargetSystem, changes: Change[]): void {
  if (options.root !== "/") return;
  for (const argv of AGENTS[options.agent].reload(system)) {
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
  for (const file of [...manifest.files].reverse()) {
    const undone = undoFile(file, options, system);
    changes.push(...undone.changes);
    notes.push(...undone.notes);
  }
  if (!options.dryRun) rmSync(manifestPath(options.root, options.agent), { force: true });
  if (changes.some((c) => c.action !== "unchanged")) reload(options, system, changes);
  return { changes, notes };
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
  const target = join(root, file.path);
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
      const mode = statSync(join(root, file.backup)).mode & 0o7777;
      writeAtomically(target, readFileSync(join(root, file.backup), "utf8"), mode);
      rmSync(join(root, file.backup), { force: true });
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
