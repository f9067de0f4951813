/**
 * `vmsnap check`: everything that would stop an application-consistent
 * snapshot, found in one go and changing nothing.
 *
 * @module
 */
import { type Config, configNotRegular, type LoadedConfig } from "../config/config.ts";
import { type Problem, toProblem, withFix } from "../errors.ts";
import type { FreezeTarget, SkippedMount } from "../freeze/plan.ts";
import { readMounts } from "../sys/mountinfo.ts";
import {
  configFileProblems,
  freezePlan,
  leftoverProblems,
  logDirectory,
  logFileProblems,
  pluginProblems,
  readConfig,
  snapshotCommandProblems,
  stateDirProblems,
  syntaxProblems,
} from "./preflight.ts";
import type { Location } from "../config/syntax.ts";
import { locateProblems } from "../../plugins/plugin.ts";
import type { PluginDefinition } from "../../plugins/plugin.ts";
import { PLUGINS } from "../../plugins/registry.ts";

/** One line of the report. */
export interface CheckStep {
  name: string;
  ok: boolean;
  /** Not a problem, but listed under the warnings. */
  warning?: boolean;
  detail: string;
}

/** What `vmsnap check` found. */
export interface CheckReport {
  ok: boolean;
  configFile: string;
  checks: CheckStep[];
  problems: Problem[];
  warnings: Problem[];
  freezeTargets: FreezeTarget[];
  skippedMounts: SkippedMount[];
  /** The normalized config, or null when the file could not be read or parsed. */
  config: Config | null;
}

/** What to check. */
export interface CheckOptions {
  configPath: string;
  /** An argv that replaces the config's snapshot command (`run --snapshot-command`). */
  snapshotCommand?: string[];
  /** Where the mount table is read from (tests pass a fixture). */
  mountinfoPath?: string;
  /** Also connect to each database and verify the privileges quiesce needs. */
  connect?: boolean;
  /** The plugin types (default: the registry's). */
  plugins?: ReadonlyMap<string, PluginDefinition>;
}

/**
 * Checks the executable of a snapshot command (and its interpreter) by the executable rule.
 *
 * @example
 * ```ts
 * import { checkSnapshotCommand } from "./check.ts";
 * checkSnapshotCommand(["/usr/local/sbin/snap.sh"]);
 * ```
 */
export const checkSnapshotCommand = (argv: string[]): Problem[] => snapshotCommandProblems(argv);

/**
 * Runs every check: the config file's permissions, its syntax and values,
 * each plugin's files, the snapshot command, vmsnap's directories, and the
 * freeze targets.
 *
 * @example
 * ```ts
 * import { runChecks } from "./check.ts";
 * const report = await runChecks({ configPath: "/etc/azure/VMSnapshotScriptPluginConfig.json" });
 * if (!report.ok) for (const p of report.problems) console.error(p.code, p.message);
 * ```
 */
export async function runChecks(options: CheckOptions): Promise<CheckReport> {
  const report = newReport(options.configPath);
  const loaded = checkConfig(report, options);
  if (!loaded) return finish(report);
  const config = loaded.config;
  report.config = config;
  // What a dead run left is reported, not undone: check changes nothing (vmsnap recover does).
  step(report, "leftovers of a dead run", leftoverProblems(config), "none");
  const locate = (path: string): Location | undefined => loaded.locations.get(path);
  await checkPlugins(report, { config, locate, options });
  checkSnapshot(report, { config, locate, options });
  step(report, "directories", [
    ...locateProblems(logFileProblems(config), "log.file", locate),
    ...locateProblems(stateDirProblems(config), "stateDir", locate),
  ], `${logDirectory(config)}, ${config.stateDir}`);
  checkFreeze(report, { config, locate, options });
  return finish(report);
}

/** A report before any check (its keys in the order `check --json` prints them). */
function newReport(configFile: string): CheckReport {
  return {
    ok: false,
    configFile,
    checks: [],
    problems: [],
    warnings: [],
    freezeTargets: [],
    skippedMounts: [],
    config: null,
  };
}

/** One check: ok with its detail, or failed with the count of what it found. */
function step(report: CheckReport, name: string, found: Problem[], detail: string): void {
  report.problems.push(...found);
  report.checks.push({
    name,
    ok: found.length === 0,
    detail: found.length === 0 ? detail : `${found.length} problem${found.length > 1 ? "s" : ""}`,
  });
}

/** What the checks after the config's own need. */
interface Checked {
  config: Config;
  locate: (path: string) => Location | undefined;
  options: CheckOptions;
}

/**
 * The config file (there, a regular file, root's) and its syntax and values;
 * the loaded config when it can be checked further.
 */
function checkConfig(report: CheckReport, options: CheckOptions): LoadedConfig | undefined {
  const file = options.configPath;
  const filePermission = configFileProblems(file);
  if (filePermission.some((p) => p.code === "ConfigFileNotFound")) {
    step(report, "config file", filePermission, "");
    return undefined;
  }
  // A directory, device or FIFO: one problem for one cause (the permission rules would add another).
  const notRegular = configNotRegular(file);
  if (notRegular) {
    step(report, "config file", [notRegular], "");
    return undefined;
  }
  step(
    report,
    "config file permissions",
    filePermission,
    "root-owned, no group/other or execute bits",
  );
  const { loaded, problems: unreadable } = readConfig(file, {
    plugins: options.plugins ?? PLUGINS,
  });
  if (!loaded) {
    step(report, "config syntax", unreadable, "");
    return undefined;
  }
  const syntax = syntaxProblems(loaded);
  step(report, "config syntax", syntax, "valid JSONC");
  if (syntax.length > 0) return undefined;
  // What Azure's framework tolerates (run goes on, with a warning) is a problem here.
  step(report, "config values", [...loaded.problems, ...loaded.lenient], "all keys valid");
  report.warnings.push(...loaded.warnings);
  return loaded;
}

/** Each plugin's own checks, and with --connect its server's privileges. */
async function checkPlugins(
  report: CheckReport,
  { config, locate, options }: Checked,
): Promise<void> {
  const plugins = options.plugins ?? PLUGINS;
  for (const plugin of config.plugins) {
    const definition = plugins.get(plugin.type)!;
    const found = await pluginProblems(definition, plugin, locate);
    let detail = "ready";
    if (options.connect && found.length === 0 && definition.connectCheck) {
      try {
        const started = performance.now();
        found.push(...await definition.connectCheck(plugin));
        detail = `connected, privileges ok (${Math.round(performance.now() - started)} ms)`;
      } catch (error) {
        found.push(toProblem(error, "PluginConnectFailed", plugin.name));
      }
    }
    step(report, `plugin ${plugin.name} (${plugin.type})`, found, detail);
  }
}

/** The snapshot method: the command's executable, the external handshake, or none (a warning). */
function checkSnapshot(report: CheckReport, { config, locate, options }: Checked): void {
  const command = options.snapshotCommand ??
    (config.snapshot?.kind === "command" ? config.snapshot.command : undefined);
  if (command) {
    const found = options.snapshotCommand
      ? checkSnapshotCommand(command)
      : locateProblems(checkSnapshotCommand(command), "snapshot.command[0]", locate);
    step(report, "snapshot command", found, command.join(" "));
  } else if (config.snapshot?.kind === "external") {
    report.checks.push({ name: "snapshot", ok: true, detail: "external handshake" });
  } else {
    // Not a problem (hook mode needs none), but `run` as configured would stop with NoSnapshotMethod.
    report.checks.push({
      name: "snapshot",
      ok: true,
      warning: true,
      detail: "none configured: vmsnap run needs --snapshot-command or --external",
    });
    report.warnings.push({
      code: "NoSnapshotMethod",
      message:
        `${options.configPath} configures no snapshot method: vmsnap run will stop with NoSnapshotMethod unless it is given --snapshot-command ARGV... or --external. Fix: pass one of them, or set "snapshot" in the config.`,
    });
  }
}

/** What would be frozen, in order, and what would not (with why). */
function checkFreeze(report: CheckReport, { config, locate, options }: Checked): void {
  if (!config.fsFreezeEnabled) {
    report.checks.push({ name: "freeze", ok: true, detail: "disabled (fsFreezeEnabled: false)" });
    return;
  }
  const { plan, problems: unreadableMounts } = freezePlan(
    config,
    () => readMounts(options.mountinfoPath),
    options.mountinfoPath,
  );
  if (!plan) {
    step(report, "freeze targets", unreadableMounts, "");
    return;
  }
  report.freezeTargets = plan.targets;
  report.skippedMounts = plan.skipped;
  report.warnings.push(...plan.warnings.map((w) => locateProblems([w], w.path!, locate)[0]));
  const mode = config.freeze.mounts === "auto" ? "auto" : "listed";
  step(
    report,
    `freeze targets (${mode})`,
    plan.problems.map((p) => locateProblems([p], p.path!, locate)[0]),
    `${plan.targets.length} filesystem${plan.targets.length === 1 ? "" : "s"}`,
  );
}

function finish(report: CheckReport): CheckReport {
  report.problems = report.problems.map(withFix);
  report.warnings = report.warnings.map(withFix);
  report.ok = report.problems.length === 0;
  return report;
}

/**
 * The readable report: one line per check, then the problems with their fix,
 * the warnings, and what would be frozen.
 *
 * @example
 * ```ts
 * import { formatCheckReport, runChecks } from "./check.ts";
 * console.log(formatCheckReport(await runChecks({ configPath: "/etc/azure/x.json" })));
 * ```
 */
export function formatCheckReport(report: CheckReport): string {
  const lines = [`vmsnap check: ${report.configFile}`, ""];
  for (const check of report.checks) {
    lines.push(
      `  ${check.ok ? check.warning ? "warn" : "ok  " : "FAIL"}  ${check.name}${
        check.detail ? `: ${check.detail}` : ""
      }`,
    );
  }
  const list = (title: string, problems: Problem[]) => {
    if (problems.length === 0) return;
    lines.push("", `${title}:`);
    for (const p of problems) lines.push(`  [${p.code}] ${p.message}`);
  };
  list("Problems", report.problems);
  list("Warnings", report.warnings);
  if (report.freezeTargets.length > 0) {
    lines.push("", "Would freeze, in this order (thaw in reverse):");
    report.freezeTargets.forEach((t, i) =>
      lines.push(`  ${i + 1}. ${t.mountPoint}  (${t.fsType} on ${t.source}, device ${t.device})`)
    );
  }
  const unlisted = report.skippedMounts.filter((s) => s.reason === "not in freeze.mounts");
  const skipped = report.skippedMounts.filter((s) => s.reason !== "not in freeze.mounts");
  if (skipped.length + unlisted.length > 0) {
    lines.push("", "Not frozen:");
    for (const s of skipped) lines.push(`  ${s.mountPoint}  (${s.fsType}): ${s.reason}`);
    if (unlisted.length > 0) {
      lines.push(`  ${unlisted.length} other mount(s): not in freeze.mounts (--json lists them)`);
    }
  }
  const n = report.problems.length;
  lines.push(
    "",
    n === 0
      ? `OK: no problems${report.warnings.length ? `, ${report.warnings.length} warning(s)` : ""}.`
      : `${n} problem${n > 1 ? "s" : ""}: fix ${n > 1 ? "them" : "it"} and run vmsnap check again.`,
  );
  return lines.join("\n");
}
