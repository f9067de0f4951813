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

export { main } from "./src/cli/main.ts";
export { type CheckReport, formatCheckReport, runChecks } from "./src/preflight/check.ts";
export { type Config, DEFAULT_CONFIG_PATH, loadConfig, parseConfig } from "./src/config/config.ts";
export { CODES, type Problem, VmsnapError } from "./src/errors.ts";
export { type FreezeTarget, planFreeze } from "./src/freeze/plan.ts";
export { parseMountinfo, readMounts } from "./src/sys/mountinfo.ts";
export { checkFile, resolveSecurely } from "./src/sys/permissions.ts";
export { VERSION } from "./src/version.ts";

if (import.meta.main) {
  await cli(process.argv.slice(2));
}
