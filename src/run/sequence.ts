/**
 * `vmsnap run`: the story of one backup, top to bottom.
 *
 *   check → quiesce → freeze → snapshot → thaw → resume → report
 *
 * Each step is a function of its own module in src/run/ (prepare.ts,
 * plugins.ts, freeze_step.ts around the freeze session, snapshot_step.ts,
 * result.ts), which hook mode calls too; this module only puts them in order
 * and keeps the promises: every failure path thaws, every plugin whose
 * quiesce was attempted is resumed, every error is kept for the result.
 *
 * @module
 */
import type { Readable } from "node:stream";
import type { LogLevel } from "../config/config.ts";
import type { OutputStreams } from "./output.ts";
import type { RunResult } from "../protocol.ts";
import { PRODUCTION_DEPS, type RunDeps } from "./deps.ts";
import { newRun, type PreparedRun, type RunState, RunStopped, watchSignals } from "./state.ts";
import { prepareRun } from "./prepare.ts";
import { quiesceAll, resumeAll, snapshotWanted } from "./plugins.ts";
import { freezeTargets, thawTargets } from "./freeze_step.ts";
import { snapshotStep } from "./snapshot_step.ts";
import { finishRun } from "./result.ts";
import { type HandshakeReader, openHandshake } from "./snapshot.ts";

export type { MountReport, PluginReport, RunResult } from "../protocol.ts";
export type { RunDeps } from "./deps.ts";
export { newRunId } from "./state.ts";

/** What `vmsnap run` was asked to do. */
export interface RunOptions {
  configPath: string;
  json: boolean;
  logLevel?: LogLevel;
  /** Replaces the config's snapshot method. */
  snapshotCommand?: string[];
  external?: boolean;
  streams: OutputStreams;
  /** The caller's answers in the external handshake. */
  stdin: Readable;
}

/**
 * Runs one backup and returns its result. Never throws for a failure of the
 * backup itself: those are in the result. `deps` replaces the freezer, the
 * guard, the mount table, the plugins, the uid, the clock and the
 * fault-injection pause (tests); by default the real ones.
 *
 * @example
 * ```ts
 * import process from "node:process";
 * import { runBackup } from "./sequence.ts";
 * const result = await runBackup({
 *   configPath: "/etc/azure/VMSnapshotScriptPluginConfig.json",
 *   json: true,
 *   streams: { stdout: (t) => process.stdout.write(t), stderr: (t) => process.stderr.write(t) },
 *   stdin: process.stdin,
 * });
 * process.exitCode = result.exitCode;
 * ```
 */
export async function runBackup(
  options: RunOptions,
  deps: RunDeps = PRODUCTION_DEPS,
): Promise<RunResult> {
  const run = newRun({
    json: options.json,
    streams: options.streams,
    logLevel: options.logLevel,
    deps,
  });
  const unwatch = watchSignals(run);
  try {
    await backUp(await prepareRun(run, options), options);
  } catch (error) {
    if (!(error instanceof RunStopped)) recordInternalError(run, error, false);
  } finally {
    unwatch();
  }
  return finishRun(run);
}

/**
 * Quiesce, then the frozen window, then resume: whatever fails or throws,
 * every plugin whose quiesce was attempted is resumed.
 */
async function backUp(run: PreparedRun, options: RunOptions): Promise<void> {
  let handshake: HandshakeReader | undefined;
  try {
    // The external handshake's reader is built before quiesce: neither in the quiesced →
    // frozen gap nor in the frozen window (about a millisecond).
    if (run.setup.method.kind === "external") {
      handshake = await openHandshake(options.stdin);
      // The `frozen` line must not be stdout's first write: the runtime builds its stdout
      // stream on first use (a millisecond or more), which would fall in the frozen window.
      options.streams.stdout("");
    }
    const quiesced = await quiesceAll(run);
    if (snapshotWanted(run, quiesced)) await frozenWindow(run, options.stdin, handshake);
  } catch (error) {
    recordInternalError(run, error, true);
  } finally {
    handshake?.close();
    await resumeAll(run);
  }
}

/** Freeze, snapshot, thaw: whatever fails or throws, what was frozen is thawed. */
async function frozenWindow(
  run: PreparedRun,
  stdin: Readable,
  handshake: HandshakeReader | undefined,
): Promise<void> {
  try {
    await freezeTargets(run);
    await snapshotStep(run, stdin, handshake);
  } finally {
    await thawTargets(run);
  }
}

/** An error no step expected: kept for the result with its stack. */
function recordInternalError(run: RunState, error: unknown, started: boolean): void {
  // Say only what happened: before the quiesce step, nothing was started and nothing undone.
  run.fail({
    code: "InternalError",
    message: `internal error: ${(error as Error).stack ?? error}. Fix: report this with the log; ${
      started
        ? "filesystems were thawed and plugins resumed"
        : "nothing had been started (no plugin quiesced, nothing frozen)"
    }.`,
  });
}
