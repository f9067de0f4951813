/**
 * The end of a run: its result (consistency, status and exit code from what
 * happened), the log closed, the lock released, the result printed.
 *
 * @module
 */
import { achievedConsistency, exitCodeFor, requestedConsistency } from "./consistency.ts";
import { withFix } from "../errors.ts";
import type { RunResult } from "../protocol.ts";
import { shortSecretWarnings } from "../secrets.ts";
import type { RunState } from "./state.ts";
import { closeFreezePool } from "./freeze_step.ts";

/**
 * The result of a run as it stands: consistency, status and exit code from
 * what happened.
 *
 * @example
 * ```ts
 * import { buildResult } from "./result.ts";
 * import type { RunState } from "./state.ts";
 * declare const run: RunState;
 * const result = buildResult(run);
 * ```
 */
export function buildResult(run: RunState): RunResult {
  const plugins = run.plugins.map((p) => p.report);
  const freezeRequested = (run.config?.fsFreezeEnabled ?? false) || run.agentFreeze !== undefined;
  const freezeHeld = run.agentFreeze ? run.agentFreeze.held : run.freeze.mounts.length > 0 &&
    run.freeze.mounts.every((m) => m.frozen && m.thawed) &&
    run.freeze.mounts.length === run.targets.length &&
    !run.freeze.guard?.steppedIn;
  const snapshotTaken = run.snapshot?.taken ?? false;
  // A failed post-script (Azure's rule): the application was not held as its scripts meant.
  const postScriptFailed = plugins.some((p) =>
    p.type === "script" && p.resume !== null && !p.resume.ok
  );
  const facts = {
    snapshotTaken,
    plugins: plugins.length,
    // Held to the end: quiesced and held (PluginNotHeld), no lock lost before resume, no post-script failed.
    pluginsHeld: plugins.length > 0 && !postScriptFailed &&
      plugins.every((p) =>
        p.quiesce?.ok && !p.quiesce.notHeld &&
        !p.resume?.errors.some((e) => e.code === "PluginLockLost")
      ),
    freezeRequested,
    freezeHeld,
  };
  // A config that could not be used asked for more than the defaults give (its scripts at least).
  // A plugin in a mode that holds nothing (chosen in the config) asks for no more than the freeze.
  const chosenNotHeld = plugins.some((p) => p.quiesce?.notHeld?.chosen);
  const requested = run.configFallback
    ? "application"
    : requestedConsistency(chosenNotHeld ? { ...facts, plugins: 0 } : facts);
  let consistency = achievedConsistency(facts);
  // The guard stepped in: the snapshot may have caught filesystems mid-write.
  if (run.freeze.guard?.steppedIn && consistency !== "none") consistency = "crash";
  const errors = [...run.errors];
  let exitCode = exitCodeFor(requested, consistency);
  // continueBackupOnFailure false: a failed post step fails the backup, snapshot or not.
  if (postScriptFailed && snapshotTaken && run.config?.continueBackupOnFailure === false) {
    exitCode = 2;
    errors.push(withFix({
      code: "DiscardSnapshot",
      message:
        "the snapshot was taken, but a post-script failed and continueBackupOnFailure is false: the backup failed, discard this snapshot.",
    }));
  }
  return {
    event: "result",
    runId: run.runId,
    status: exitCode === 2
      ? "failed"
      : exitCode === 0 && errors.length === 0
      ? "success"
      : "degraded",
    consistency,
    requestedConsistency: requested,
    snapshotTaken,
    exitCode,
    errors,
    // Passwords too short to scrub from free text, inline or read from a passwordFile at connect.
    warnings: [...run.warnings, ...shortSecretWarnings()].map(withFix),
    plugins,
    freeze: run.freeze,
    snapshot: run.snapshot,
    ...(run.recovered ? { recovered: run.recovered } : {}),
    log: { file: run.log.file, ...run.log.stats },
    durationMs: Math.round(performance.now() - run.started),
  };
}

/**
 * Ends a run: builds the result, logs it, closes the log, releases the lock,
 * and prints the result (a JSON line with `--json`, else the verdict).
 *
 * @example
 * ```ts
 * import { finishRun } from "./result.ts";
 * import type { RunState } from "./state.ts";
 * declare const run: RunState;
 * process.exitCode = finishRun(run).exitCode;
 * ```
 */
export function finishRun(run: RunState): RunResult {
  run.guardProcess?.dismiss();
  closeFreezePool(run);
  const result = buildResult(run);
  const { exitCode } = result;
  run.log.record(exitCode === 0 ? "info" : exitCode === 1 ? "warning" : "error", "result", {
    ...result,
    event: undefined,
    log: undefined,
  });
  run.log.close();
  if (run.log.stats.lost > 0) {
    result.errors.push({
      code: "LogWriteFailed",
      message:
        `${run.log.stats.lost} log record(s) could not be written: ${run.log.stats.error}. Fix: free space on the log's filesystem or move log.file.`,
    });
    if (result.status === "success") result.status = "degraded";
  }
  if (run.log.stats.dropped > 0) {
    result.warnings.push(withFix({
      code: "LogRecordsDropped",
      message:
        `${run.log.stats.dropped} log record(s) were dropped while the filesystems were frozen (more than vmsnap holds in memory); ${run.log.file} marks the gap with a log-records-dropped record.`,
    }));
  }
  result.log = { file: run.log.file, ...run.log.stats };
  run.lock?.release();
  run.output.event(result);
  const verdict = `vmsnap run ${run.runId}: ${result.status}, ${result.consistency}-consistent${
    result.snapshotTaken ? "" : " (no snapshot)"
  }, exit ${exitCode}, ${result.durationMs} ms`;
  const lines = result.errors.map((e) =>
    `  [${e.code}]${e.plugin ? ` (${e.plugin})` : ""} ${e.message}`
  );
  run.output.verdict([verdict, ...lines].join("\n"));
  return result;
}
