/**
 * What a run leaves behind for the admin and for monitoring (`vmsnap status`
 * shows it). After every `run` (once everything is thawed) and every hook
 * hold: the result in `<stateDir>/last-result.json`, the Prometheus
 * textfile, and, when the run ended before its log was opened (no readable
 * config), its result in the default log file, so even a run that failed at
 * once leaves a record.
 *
 * @module
 */
import { statSync } from "node:fs";
import { dirname } from "node:path";
import process from "node:process";
import {
  DEFAULT_LOG_FILE,
  DEFAULT_METRICS_FILE,
  DEFAULT_STATE_DIR,
  loadConfig,
} from "../config/config.ts";
import { EventLog } from "./event_log.ts";
import { writeLastResult } from "./last_result.ts";
import { type ResultForMetrics, writeMetrics } from "./metrics.ts";
import { checkFile, ensureDirectory, type FileRule } from "../sys/permissions.ts";
import { PLUGINS } from "../../plugins/registry.ts";

/** The config file's permission rule, as preflight applies it. */
const CONFIG_RULE: FileRule = {
  role: "config",
  notFound: "ConfigFileNotFound",
  permission: "InsufficientPermissionforConfigFile",
  what: "config file",
};

/**
 * Where a config sends the state and the metrics; the defaults when it cannot
 * be read or fails the permission rules.
 *
 * @example
 * ```ts
 * import { recordPlaces } from "./record.ts";
 * recordPlaces("/nonexistent.json").stateDir; // "/var/lib/vmsnap"
 * ```
 */
export function recordPlaces(configPath: string): {
  stateDir: string;
  metricsFile: string;
  metricsConfigured: boolean;
} {
  try {
    // Only a config root alone can write chooses where root writes (else a user could aim it).
    if (checkFile(configPath, CONFIG_RULE).length > 0) throw new Error("untrusted config");
    const { config, problems, locations } = loadConfig(configPath, { plugins: PLUGINS });
    if (!problems.some((p) => p.code === "IncorrectJSONConfigFile")) {
      return {
        stateDir: config.stateDir,
        metricsFile: config.metrics?.textfile ?? DEFAULT_METRICS_FILE,
        metricsConfigured: locations.has("metrics.textfile"),
      };
    }
  } catch {
    // No readable config: the defaults.
  }
  return {
    stateDir: DEFAULT_STATE_DIR,
    metricsFile: DEFAULT_METRICS_FILE,
    metricsConfigured: false,
  };
}

/** A result as `run` returns it (what recording needs of it). */
export type RecordedResult = ResultForMetrics & { log?: { file?: string } };

/**
 * Records a finished run: last result, metrics, and the default log when the
 * run's own log was never opened. Root only (the places are root's). Returns
 * what could not be written, one line each, for stderr.
 *
 * @example
 * ```ts
 * import { recordRun } from "./record.ts";
 * // after runBackup() returned (everything thawed):
 * // for (const line of recordRun(result, { configPath })) console.error(line);
 * ```
 */
export function recordRun(result: RecordedResult, options: { configPath: string }): string[] {
  if (process.getuid?.() !== 0) return [];
  // Refused by the lock: another run owns the record (and may have stateDir's filesystem frozen).
  if (result.errors.some((e) => e.code === "AnotherRunInProgress")) return [];
  const problems: string[] = [];
  const places = recordPlaces(options.configPath);
  try {
    ensureDirectory(places.stateDir, "stateDir");
    const error = writeLastResult(places.stateDir, result);
    if (error) problems.push(`could not record the result: ${error}`);
  } catch (error) {
    problems.push(`could not record the result: ${(error as Error).message}`);
  }
  const metrics = writeMetrics(places.metricsFile, result);
  // The default place may simply not exist (no node_exporter); a configured one must.
  if (metrics.error && (places.metricsConfigured || existsDir(places.metricsFile))) {
    problems.push(`could not write the metrics textfile: ${metrics.error}`);
  }
  if (!result.log?.file) {
    try {
      ensureDirectory(dirname(DEFAULT_LOG_FILE), "log directory");
      const log = new EventLog({ runId: result.runId, file: DEFAULT_LOG_FILE, level: "info" });
      log.record(result.exitCode === 0 ? "info" : "error", "result", {
        ...result,
        event: undefined,
        config: options.configPath,
      });
      log.close();
      if (log.stats.lost) problems.push(`could not write ${DEFAULT_LOG_FILE}: ${log.stats.error}`);
    } catch (error) {
      problems.push(`could not write ${DEFAULT_LOG_FILE}: ${(error as Error).message}`);
    }
  }
  return problems;
}

function existsDir(file: string): boolean {
  try {
    return statSync(dirname(file)).isDirectory();
  } catch {
    return false;
  }
}
