/**
 * vmsnap: application-consistent snapshots for Linux VMs. A drop-in for Azure
 * Backup's pre/post-script framework that quiesces applications, freezes
 * filesystems, takes the snapshot, thaws and resumes.
 *
 * This module is both the public API and the binary's entry point.
 *
 * @example
 * ```ts
 * import { runChecks } from "./mod.ts";
 * const report = await runChecks({ configPath: "/etc/azure/VMSnapshotScriptPluginConfig.json" });
 * console.log(report.ok, report.freezeTargets.map((t) => t.mountPoint));
 * ```
 *
 * @module
 */
import process from "node:process";
import { cli } from "./src/cli/main.ts";
import * as config from "./src/config/config.ts";
import { PLUGINS } from "./plugins/registry.ts";

export { main } from "./src/cli/main.ts";
export { type CheckReport, formatCheckReport, runChecks } from "./src/preflight/check.ts";
export {
  type Config,
  type ConfigOptions,
  DEFAULT_CONFIG_PATH,
  type LoadedConfig,
} from "./src/config/config.ts";
export { PLUGINS } from "./plugins/registry.ts";
export { CODES, type Problem, VmsnapError } from "./src/errors.ts";
export { type FreezeTarget, planFreeze } from "./src/freeze/plan.ts";
export { parseMountinfo, readMounts } from "./src/sys/mountinfo.ts";
export { checkFile, resolveSecurely } from "./src/sys/permissions.ts";
export { VERSION } from "./src/version.ts";

/** The plugin types vmsnap knows: what a config is read with unless a caller passes its own. */
const PRODUCTION: config.ConfigOptions = { plugins: PLUGINS };

/**
 * Parses and validates config text (problems come back, never thrown), with
 * vmsnap's plugin types unless `options` names others.
 *
 * @example
 * ```ts
 * import { parseConfig } from "./mod.ts";
 * const { config, problems } = parseConfig('{ "fsFreezeEnabled": false }', "/etc/azure/x.json");
 * ```
 */
export function parseConfig(
  text: string,
  file: string,
  options: config.ConfigOptions = PRODUCTION,
): config.LoadedConfig {
  return config.parseConfig(text, file, options);
}

/**
 * Reads and parses a config file, with vmsnap's plugin types unless
 * `options` names others; throws a {@linkcode VmsnapError} when the file
 * cannot be read at all.
 *
 * @example
 * ```ts
 * import { loadConfig } from "./mod.ts";
 * const { config, problems } = loadConfig("/etc/azure/VMSnapshotScriptPluginConfig.json");
 * ```
 */
export function loadConfig(
  file: string,
  options: config.ConfigOptions = PRODUCTION,
): config.LoadedConfig {
  return config.loadConfig(file, options);
}

if (import.meta.main) {
  await cli(process.argv.slice(2));
}
