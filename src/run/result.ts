/**
 * The end of a run: its result (consistency, status and exit code from what
 * happened), the log closed, the lock released, the result printed.
 *
 * @module
 */
import { achievedConsistency, exitCodeFor, requestedConsistency } from "./consistency.ts";
import { withFix } from "../errors.ts";
import type { Consistency, RunResult, SnapshotOutcome } from "../protocol.ts";
import { shortSecretWarnings } from "../secrets.ts";
import type { RunState } from "./state.ts";

/**
 * What hook mode knows that the run does not: the snapshot was the agent's
 * (taken when it sent thaw/post), and, where the agent froze the filesystems
 * as the config asked (qemu-ga, VMware, Azure), whether its freeze held by its
 * word (a thaw after the freeze hook; `freezeFail` or no thaw is not held).
 * vmsnap froze nothing itself then; the result trusts the agent as it does
 * for plugins.
 */
export interface AgentOutcome {
  snapshot: SnapshotOutcome;
  agentFreeze?: { held: boolean };
}

/** The consistency asked for and achieved, from what happened. */
function consistencyOf(run: RunState, agent?: AgentOutcome) {
  const plugins = run.plugins.map((p) => p.report);
  const session = run.setup.session;
  const snapshotTaken = (agent?.snapshot ?? run.snapshot)?.taken ?? false;
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
    // What the config asked for, whoever froze (vmsnap, or an agent that freezes itself).
    freezeRequested: run.setup.config?.fsFreezeEnabled ?? false,
    freezeHeld: agent?.agentFreeze ? agent.agentFreeze.held : session?.freezeHeld() ?? false,
  };
  // A config that could not be used asked for more than the defaults give (its scripts at least).
  // A plugin in a mode that holds nothing (chosen in the config) asks for no more than the freeze.
  const chosenNotHeld = plugins.some((p) => p.quiesce?.notHeld?.chosen);
  const requested: Consistency = run.setup.configFallback
    ? "application"
    : requestedConsistency(chosenNotHeld ? { ...facts, plugins: 0 } : facts);
  let achieved = achievedConsistency(facts);
  // The guard stepped in: the snapshot may have caught filesystems mid-write.
  if (session?.report.guard?.steppedIn && achieved !== "none") achieved = "crash";
  return { requested, achieved, snapshotTaken, postScriptFailed };
}

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
export function buildResult(run: RunState, agent?: AgentOutcome): RunResult {
  const { requested, achieved, snapshotTaken, postScriptFailed } = consistencyOf(run, agent);
  const { config, session, recovered } = run.setup;
  const errors = [...run.errors];
  let exitCode = exitCodeFor(requested, achieved);
  // continueBackupOnFailure false: a failed post step fails the backup, snapshot or not.
  if (postScriptFailed && snapshotTaken && config?.continueBackupOnFailure === false) {
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
    consistency: achieved,
    requestedConsistency: requested,
    snapshotTaken,
    exitCode,
    errors,
    // Passwords too short to scrub from free text, inline or read from a passwordFile at connect.
    warnings: [...run.warnings, ...shortSecretWarnings()].map(withFix),
    plugins: run.plugins.map((p) => p.report),
    freeze: session?.report ?? { enabled: false, mounts: [], frozenMs: 0 },
    snapshot: agent?.snapshot ?? run.snapshot,
    ...(recovered ? { recovered } : {}),
    log: { file: run.log.file, ...run.log.stats },
    durationMs: Math.round(run.deps.now() - run.started),
  };
}

/**
 * Ends a run: lets go what a run that stopped early had set up, builds the
 * result, logs it, closes the log, releases the lock, and prints the result
 * (a JSON line with `--json`, else the verdict).
 *
 * @example
 * ```ts
 * import { finishRun } from "./result.ts";
 * import type { RunState } from "./state.ts";
 * declare const run: RunState;
 * process.exitCode = finishRun(run).exitCode;
 * ```
 */
export function finishRun(run: RunState, agent?: AgentOutcome): RunResult {
  run.setup.session?.close();
  const result = buildResult(run, agent);
  const { exitCode } = result;
  run.log.record(exitCode === 0 ? "info" : exitCode === 1 ? "warning" : "error", "result", {
    ...result,
    event: undefined,
    log: undefined,
  });
  run.log.close();
  addLogProblems(run, result);
  run.setup.lock?.release();
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

/** What became of the log, once it is closed: lost records fail, dropped ones warn. */
function addLogProblems(run: RunState, result: RunResult): void {
  const { stats, file } = run.log;
  if (stats.lost > 0) {
    result.errors.push({
      code: "LogWriteFailed",
      message:
        `${stats.lost} log record(s) could not be written: ${stats.error}. Fix: free space on the log's filesystem or move log.file.`,
    });
    if (result.status === "success") result.status = "degraded";
  }
  if (stats.dropped > 0) {
    result.warnings.push(withFix({
      code: "LogRecordsDropped",
      message:
        `${stats.dropped} log record(s) were dropped while the filesystems were frozen (more than vmsnap holds in memory); ${file} marks the gap with a log-records-dropped record.`,
    }));
  }
  result.log = { file, ...stats };
}
