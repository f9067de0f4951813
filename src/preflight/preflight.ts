/**
 * Preflight: the checks that stand before anything runs, each a small
 * function that returns the problems it found (`[]` when none). `vmsnap check`
 * runs them all and collects; `vmsnap run` (and hook mode) runs the same
 * functions and stops at the first blocking problem.
 *
 * @module
 */
import { dirname } from "node:path";
import process from "node:process";
import {
  type Config,
  type ConfigOptions,
  loadConfig,
  type LoadedConfig,
  type SnapshotConfig,
} from "../config/config.ts";
import { DEFAULT_SNAPSHOT_TIMEOUT_SECONDS, DEFAULT_STATE_DIR } from "../defaults.ts";
import { type Problem, VmsnapError } from "../errors.ts";
import { checkLogFile } from "../state/event_log.ts";
import { type FreezePlan, planFreeze } from "../freeze/plan.ts";
import type { Mount } from "../sys/mountinfo.ts";
import { checkDirectory, checkExecutable, checkFile, ensureDirectory } from "../sys/permissions.ts";
import { findLeftovers } from "../state/recover.ts";
import type { Location } from "../config/syntax.ts";
import type { PluginConfig, PluginDefinition } from "../../plugins/plugin.ts";
import { PLUGINS } from "../../plugins/registry.ts";

/** The permission rules, as a dependency (tests that run without root pass their own). */
export interface Trust {
  checkFile: typeof checkFile;
  checkDirectory: typeof checkDirectory;
  ensureDirectory: typeof ensureDirectory;
  checkLogFile: typeof checkLogFile;
  checkExecutable: typeof checkExecutable;
}

/** The real permission rules. */
export const TRUST: Trust = {
  checkFile,
  checkDirectory,
  ensureDirectory,
  checkLogFile,
  checkExecutable,
};

/**
 * `run` needs root: freezing and running root's scripts.
 *
 * @example
 * ```ts
 * import { rootProblems } from "./preflight.ts";
 * rootProblems(true); // []
 * ```
 */
export function rootProblems(isRoot: boolean): Problem[] {
  return isRoot ? [] : [{
    code: "NotRoot",
    message: `vmsnap run must run as root (uid ${process.getuid?.()}). Fix: sudo vmsnap run ...`,
  }];
}

/**
 * The config file's owner, mode and directories.
 *
 * @example
 * ```ts
 * import { configFileProblems } from "./preflight.ts";
 * configFileProblems("/etc/azure/VMSnapshotScriptPluginConfig.json");
 * ```
 */
export function configFileProblems(path: string, trust: Trust = TRUST): Problem[] {
  return trust.checkFile(path, {
    role: "config",
    notFound: "ConfigFileNotFound",
    permission: "InsufficientPermissionforConfigFile",
    what: "config file",
  });
}

/** The plugin types a config is read with unless the caller injects its own. */
const PRODUCTION_CONFIG: ConfigOptions = { plugins: PLUGINS };

/**
 * Reads and parses the config; a file that cannot be read at all is one
 * problem and no config. The plugin types are the registry's unless the
 * caller (a run with its deps) passes its own.
 *
 * @example
 * ```ts
 * import { readConfig } from "./preflight.ts";
 * const { loaded, problems } = readConfig("/etc/azure/VMSnapshotScriptPluginConfig.json");
 * ```
 */
export function readConfig(
  path: string,
  options: ConfigOptions = PRODUCTION_CONFIG,
): { loaded?: LoadedConfig; problems: Problem[] } {
  try {
    return { loaded: loadConfig(path, options), problems: [] };
  } catch (error) {
    if (!(error instanceof VmsnapError)) throw error;
    return { problems: [{ ...error.problems[0], code: error.code, message: error.message }] };
  }
}

/**
 * The config's syntax errors (nothing else can be trusted while there are any).
 *
 * @example
 * ```ts
 * import { readConfig, syntaxProblems } from "./preflight.ts";
 * const { loaded } = readConfig("/etc/azure/VMSnapshotScriptPluginConfig.json");
 * if (loaded) syntaxProblems(loaded);
 * ```
 */
export function syntaxProblems(loaded: LoadedConfig): Problem[] {
  return loaded.problems.filter((p) => p.code === "IncorrectJSONConfigFile");
}

/**
 * The directory of the log file, the one way it is computed.
 *
 * @example
 * ```ts
 * import { logDirectory } from "./preflight.ts";
 * logDirectory({ log: { file: "/var/log/vmsnap/vmsnap.log", level: "info" } }); // "/var/log/vmsnap"
 * ```
 */
export function logDirectory(config: Pick<Config, "log">): string {
  return dirname(config.log.file);
}

/**
 * The log file: its directory root's and not writable by others, the file
 * (when it exists) a regular file.
 *
 * @example
 * ```ts
 * import { logFileProblems } from "./preflight.ts";
 * logFileProblems({ log: { file: "/var/log/vmsnap/vmsnap.log", level: "info" } });
 * ```
 */
export function logFileProblems(config: Pick<Config, "log">, trust: Trust = TRUST): Problem[] {
  return trust.checkLogFile(config.log.file);
}

/**
 * stateDir: root's and not writable by others.
 *
 * @example
 * ```ts
 * import { stateDirProblems } from "./preflight.ts";
 * stateDirProblems({ stateDir: "/var/lib/vmsnap" });
 * ```
 */
export function stateDirProblems(
  config: Pick<Config, "stateDir">,
  trust: Trust = TRUST,
): Problem[] {
  return trust.checkDirectory(config.stateDir, "stateDir");
}

/** What the command line says about the snapshot method. */
export interface MethodOverrides {
  /** `run --snapshot-command ARGV...`: replaces the config's method. */
  snapshotCommand?: string[];
  /** `run --external`. */
  external?: boolean;
}

/**
 * How the snapshot is taken: the command line's choice, else the config's.
 *
 * @example
 * ```ts
 * import { snapshotMethod } from "./preflight.ts";
 * snapshotMethod({ snapshot: null }, { external: true }); // { kind: "external", timeoutInSeconds: 60 }
 * ```
 */
export function snapshotMethod(
  config: Pick<Config, "snapshot">,
  overrides: MethodOverrides,
): SnapshotConfig | undefined {
  // Each method keeps its own timeout: the config's for the same kind, else the default.
  const timeoutOf = (kind: SnapshotConfig["kind"]) =>
    config.snapshot?.kind === kind
      ? config.snapshot.timeoutInSeconds
      : DEFAULT_SNAPSHOT_TIMEOUT_SECONDS;
  if (overrides.snapshotCommand) {
    return {
      kind: "command",
      command: overrides.snapshotCommand,
      timeoutInSeconds: timeoutOf("command"),
    };
  }
  if (overrides.external) return { kind: "external", timeoutInSeconds: timeoutOf("external") };
  return config.snapshot ?? undefined;
}

/**
 * Checks the executable of a snapshot command (and its interpreter) by the
 * executable rule.
 *
 * @example
 * ```ts
 * import { snapshotCommandProblems } from "./preflight.ts";
 * snapshotCommandProblems(["/usr/local/sbin/snap.sh"]);
 * ```
 */
export function snapshotCommandProblems(argv: string[], trust: Trust = TRUST): Problem[] {
  return trust.checkExecutable(argv[0], {
    notFound: "SnapshotCommandNotFound",
    permission: "InsufficientPermissionforSnapshotCommand",
    what: "snapshot command",
  });
}

/**
 * `run` needs a snapshot method, and a command must pass the rules.
 *
 * @example
 * ```ts
 * import { snapshotMethodProblems } from "./preflight.ts";
 * snapshotMethodProblems(undefined, "/etc/azure/x.json")[0].code; // "NoSnapshotMethod"
 * ```
 */
export function snapshotMethodProblems(
  method: SnapshotConfig | undefined,
  configPath: string,
  trust: Trust = TRUST,
): Problem[] {
  if (!method) {
    return [{
      code: "NoSnapshotMethod",
      message:
        `${configPath} sets no snapshot method. Fix: set snapshot.command or snapshot.external, or pass --snapshot-command ARGV... or --external.`,
    }];
  }
  return method.kind === "command" ? snapshotCommandProblems(method.command, trust) : [];
}

/**
 * One plugin's own checks (its files, their permissions), each problem
 * naming the plugin.
 *
 * @example
 * ```ts
 * import { pluginProblems } from "./preflight.ts";
 * import { PLUGINS } from "../../plugins/registry.ts";
 * const plugin = { type: "script", name: "app" };
 * await pluginProblems(PLUGINS.get("script")!, plugin, () => undefined);
 * ```
 */
export async function pluginProblems<C extends PluginConfig>(
  definition: PluginDefinition<C>,
  plugin: C,
  locate: (path: string) => Location | undefined,
): Promise<Problem[]> {
  return (await definition.check(plugin, { locate })).map((p) => ({
    ...p,
    plugin: p.plugin ?? plugin.name,
  }));
}

/**
 * The freeze plan for the mounts read now, or the problem that kept vmsnap
 * from reading them.
 *
 * @example
 * ```ts
 * import { freezePlan } from "./preflight.ts";
 * import { readMounts } from "../sys/mountinfo.ts";
 * const { plan, problems } = freezePlan({ freeze: { mounts: ["/data"], exclude: [], maxFrozenSeconds: 10, expediteRcu: false } }, () => readMounts());
 * ```
 */
export function freezePlan(
  config: Pick<Config, "freeze">,
  readMounts: () => Mount[],
  source = "/proc/self/mountinfo",
): { plan?: FreezePlan; problems: Problem[] } {
  let mounts;
  try {
    mounts = readMounts();
  } catch (error) {
    return {
      problems: [{
        code: "MountinfoUnreadable",
        message: `cannot read ${source}: ${(error as Error).message}.`,
      }],
    };
  }
  const plan = planFreeze(mounts, config.freeze);
  return { plan, problems: plan.problems };
}

/**
 * The stateDir whose markers recovery may act on: the config's, when the
 * config passes the permission rules and is readable, or the default when
 * there is no config; and in both cases only when the directory itself passes
 * them. Otherwise no stateDir and an `UntrustedState` problem saying why
 * (a marker there could be forged).
 *
 * @example
 * ```ts
 * import { trustedStateDir } from "./preflight.ts";
 * const { stateDir, problems } = trustedStateDir("/etc/azure/VMSnapshotScriptPluginConfig.json");
 * ```
 */
export function trustedStateDir(
  configPath: string,
  trust: Trust = TRUST,
): { stateDir?: string; problems: Problem[] } {
  const untrusted = (why: string, problems: Problem[]) => ({
    problems: [{
      code: "UntrustedState" as const,
      message:
        `recovery refused: ${why}, so what it names could be forged; nothing was thawed, killed or removed. ${
          problems.map((p) => `[${p.code}] ${p.message}`).join(" ")
        }`,
    }],
  });
  let stateDir = DEFAULT_STATE_DIR;
  const fileProblems = configFileProblems(configPath, trust);
  if (!fileProblems.some((p) => p.code === "ConfigFileNotFound")) {
    if (fileProblems.length > 0) {
      return untrusted(`${configPath} fails the permission rules`, fileProblems);
    }
    const { loaded, problems } = readConfig(configPath);
    if (!loaded || syntaxProblems(loaded).length > 0) {
      return untrusted(`${configPath} cannot be read`, loaded ? syntaxProblems(loaded) : problems);
    }
    stateDir = loaded.config.stateDir;
  }
  const dirProblems = trust.checkDirectory(stateDir, "stateDir");
  if (dirProblems.length > 0) {
    return untrusted(`stateDir ${stateDir} fails the permission rules`, dirProblems);
  }
  return { stateDir, problems: [] };
}

/**
 * What a dead run left in stateDir, reported without changing anything.
 *
 * @example
 * ```ts
 * import { leftoverProblems } from "./preflight.ts";
 * leftoverProblems({ stateDir: "/var/lib/vmsnap" });
 * ```
 */
export function leftoverProblems(config: Pick<Config, "stateDir">): Problem[] {
  return findLeftovers(config.stateDir);
}

/**
 * A freeze that is enabled but has nothing to freeze: a warning.
 *
 * @example
 * ```ts
 * import { nothingToFreeze } from "./preflight.ts";
 * nothingToFreeze({ targets: [], problems: [], warnings: [], skipped: [] }).length; // 1
 * ```
 */
export function nothingToFreeze(plan: FreezePlan): Problem[] {
  return plan.targets.length === 0 && plan.problems.length === 0
    ? [{
      code: "FreezeNotSupported",
      message:
        "fsFreezeEnabled is true but no filesystem qualifies for freezing; the snapshot is at most crash-consistent.",
    }]
    : [];
}
