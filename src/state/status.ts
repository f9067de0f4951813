/**
 * What a run leaves behind for the admin and for monitoring, and `vmsnap
 * status`, which shows it. After every `run` (once everything is thawed):
 * the result in `<stateDir>/last-result.json` (the same file a hook's holder
 * writes), the Prometheus textfile, and, when the run ended before its log
 * was opened (no readable config), its result in the default log file, so
 * even a run that failed at once leaves a record.
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
import { type HolderInfo, holderPaths, liveHolder } from "../hook/channel.ts";
import { lastResultPath, readLastResult, writeLastResult } from "./last_result.ts";
import { type ResultForMetrics, writeMetrics } from "./metrics.ts";
import { ensureDirectory } from "../sys/permissions.ts";
import { configFileProblems } from "../preflight/preflight.ts";
import { redact } from "../secrets.ts";
import { escapeForTerminal } from "../sys/terminal.ts";

/**
 * Where a config sends the state and the metrics; the defaults when it cannot
 * be read or fails the permission rules.
 *
 * @example
 * ```ts
 * import { recordPlaces } from "./status.ts";
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
    if (configFileProblems(configPath).length > 0) throw new Error("untrusted config");
    const { config, problems, locations } = loadConfig(configPath);
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
 * import { recordRun } from "./status.ts";
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

/** The last result and when it was recorded, or why there is none. */
export interface Status {
  ok: boolean;
  stateDir: string;
  /** When the result was written (the file's time). */
  recordedAt?: string;
  ageSeconds?: number;
  // deno-lint-ignore no-explicit-any
  lastResult?: any;
  message?: string;
  /** A hook's holder holding right now (between a freeze and its thaw). */
  holding?: HolderInfo;
}

/**
 * Reads the last result under the config's stateDir.
 *
 * @example
 * ```ts
 * import { readStatus } from "./status.ts";
 * const status = readStatus({ configPath: "/etc/azure/VMSnapshotScriptPluginConfig.json" });
 * ```
 */
export function readStatus(options: { configPath: string; now?: Date }): Status {
  const { stateDir } = recordPlaces(options.configPath);
  const lastResult = readLastResult(stateDir);
  const holder = liveHolder(holderPaths(stateDir));
  const holding = holder ? { holding: holder } : {};
  if (!lastResult) {
    return {
      ok: false,
      stateDir,
      ...holding,
      message: `no result recorded in ${stateDir}: vmsnap has not run here yet (or cannot read ${
        lastResultPath(stateDir)
      }). Fix: run vmsnap run, or check the timer: systemctl list-timers vmsnap.timer.`,
    };
  }
  const mtime = statSync(lastResultPath(stateDir)).mtime;
  return {
    ok: lastResult.exitCode === 0,
    stateDir,
    recordedAt: mtime.toISOString(),
    ageSeconds: Math.round(((options.now ?? new Date()).getTime() - mtime.getTime()) / 1000),
    lastResult,
    ...holding,
  };
}

/** "3 h 12 min" */
function age(seconds: number): string {
  if (seconds < 90) return `${seconds} s`;
  const minutes = Math.round(seconds / 60);
  if (minutes < 90) return `${minutes} min`;
  const hours = Math.floor(minutes / 60);
  if (hours < 48) return `${hours} h ${minutes % 60} min`;
  return `${Math.floor(hours / 24)} days ${hours % 24} h`;
}

/**
 * `vmsnap status` in words.
 *
 * @example
 * ```ts
 * import { formatStatus, readStatus } from "./status.ts";
 * console.log(formatStatus(readStatus({ configPath: "/etc/azure/VMSnapshotScriptPluginConfig.json" })));
 * ```
 */
export function formatStatus(status: Status): string {
  const h = status.holding;
  const holding = h
    ? `a hold is in progress: run ${h.runId} (${h.agent}), holder pid ${h.pid}, since ${h.since}\n`
    : "";
  if (!status.lastResult) return `${holding}vmsnap status: ${status.message}`;
  const r = status.lastResult;
  const mode = r.mode === "hook" ? `hook (${r.hook?.agent})` : "run";
  const lines = [
    `last ${mode} ${r.runId}: ${r.status}, ${r.consistency}-consistent${
      r.snapshotTaken ? "" : " (no snapshot)"
    }, exit ${r.exitCode}`,
    `  recorded ${status.recordedAt} (${
      age(status.ageSeconds ?? 0)
    } ago), took ${r.durationMs} ms, frozen ${r.freeze?.frozenMs ?? 0} ms`,
  ];
  for (const p of r.plugins ?? []) {
    const hold = p.resume?.facts?.holdMs;
    const ok = p.quiesce?.ok && p.resume?.ok
      ? "ok"
      : p.checks?.length
      ? `not run: ${p.checks[0].code}`
      : "failed";
    lines.push(
      `  plugin ${p.name} (${p.type}): ${ok}${typeof hold === "number" ? `, held ${hold} ms` : ""}`,
    );
  }
  for (const e of r.errors ?? []) {
    lines.push(`  [${e.code}]${e.plugin ? ` (${e.plugin})` : ""} ${e.message}`);
  }
  // Error messages may quote script output: never raw escape sequences on a terminal.
  return redact(escapeForTerminal(holding + lines.join("\n")));
}
