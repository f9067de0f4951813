/**
 * A run from its start: its identity, output, log, interrupt and
 * dependencies; the errors and warnings it collects, each through one
 * function (`fail`, `warn`); and the parts the steps fill in, each written by
 * one module:
 *
 * - `setup` by src/run/prepare.ts: the config, the snapshot method, the lock,
 *   what recovery did, who freezes, and the freeze session
 *   (src/freeze/session.ts, which owns everything that exists only while
 *   frozen);
 * - `plugins` by src/run/plugins.ts: each configured plugin, its report and
 *   runtime;
 * - `snapshot` by src/run/snapshot_step.ts.
 *
 * The result (src/run/result.ts) is built from them. A run that stopped
 * keeps what it had got to: the result needs it, and what was set up is let
 * go at the end.
 *
 * @module
 */
import { randomBytes } from "node:crypto";
import process from "node:process";
import type { Config, LogLevel, SnapshotConfig } from "../config/config.ts";
import { type Problem, VmsnapError } from "../errors.ts";
import { EventLog } from "../state/event_log.ts";
import type { FreezeSession } from "../freeze/session.ts";
import type { RunLock } from "../state/lock.ts";
import { Output, type OutputStreams } from "./output.ts";
import type { PluginReport, Recovery, RunError, SnapshotOutcome } from "../protocol.ts";
import { PRODUCTION_DEPS, type RunDeps } from "./deps.ts";
import type { PluginConfig, PluginRuntime } from "../../plugins/plugin.ts";

/** One configured plugin in a run. */
export interface RunPlugin {
  config: PluginConfig;
  report: PluginReport;
  /** Absent when the plugin failed its checks (it does not run). */
  runtime?: PluginRuntime;
}

/** Who freezes the filesystems: the agent (hook mode), vmsnap, or nobody (fsFreezeEnabled false). */
export type FreezeBy = "agent" | "vmsnap" | "nobody";

/** What preparing the run got to, written by src/run/prepare.ts only. */
export interface RunSetup {
  /** Set once the config is loaded (with `freezeBy`). */
  config?: Config;
  freezeBy?: FreezeBy;
  /**
   * The config could not be used and the command line named a snapshot
   * method: the run went on with the defaults, as Azure's framework does.
   */
  configFallback?: boolean;
  method?: SnapshotConfig;
  lock?: RunLock;
  recovered?: Recovery;
  /** Made once the method is known; with vmsnap freezing, its guard starts then. */
  session?: FreezeSession;
}

/** A run from its start: what every step, and the result, can rely on. */
export interface RunState {
  readonly runId: string;
  readonly started: number;
  readonly output: Output;
  /** In memory until the config names the file (src/run/prepare.ts opens it). */
  log: EventLog;
  /** Aborts on the first SIGINT/SIGTERM/SIGHUP. */
  readonly interrupt: AbortController;
  readonly deps: RunDeps;
  /** The errors, in the order met (added through `fail` only). */
  readonly errors: readonly RunError[];
  /** The warnings (added through `warn` only). */
  readonly warnings: readonly Problem[];
  /** Records an error for the result. */
  fail(problem: RunError): void;
  /** Records warnings for the result. */
  warn(...problems: Problem[]): void;
  readonly setup: RunSetup;
  readonly plugins: RunPlugin[];
  /** The snapshot, once taken or tried (src/run/snapshot_step.ts). */
  snapshot: SnapshotOutcome | null;
}

/** A run whose preflight passed: config, method, lock, plugins and freeze session are there. */
export interface PreparedRun extends RunState {
  readonly setup: RunSetup & {
    config: Config;
    freezeBy: FreezeBy;
    method: SnapshotConfig;
    lock: RunLock;
    session: FreezeSession;
  };
}

/**
 * True once everything a prepared run needs is there.
 *
 * @example
 * ```ts
 * import { isPrepared, type RunState } from "./state.ts";
 * declare const run: RunState;
 * if (isPrepared(run)) console.log(run.setup.config.stateDir);
 * ```
 */
export function isPrepared(run: RunState): run is PreparedRun {
  const { config, freezeBy, method, lock, session } = run.setup;
  return config !== undefined && freezeBy !== undefined && method !== undefined &&
    lock !== undefined && session !== undefined;
}

/** A step found that the run cannot go on (the reason, coded, is also in `run.errors`). */
export class RunStopped extends VmsnapError {
  constructor(problem: Problem) {
    super(problem.code, problem.message);
    this.name = "RunStopped";
  }
}

/**
 * A run id: sortable time, then randomness.
 *
 * @example
 * ```ts
 * import { newRunId } from "./state.ts";
 * newRunId(); // "20261126T045100Z-a1b2c3"
 * ```
 */
export function newRunId(): string {
  const time = new Date().toISOString().replace(/[-:]/g, "").replace(/\.\d+Z$/, "Z");
  return `${time}-${randomBytes(3).toString("hex")}`;
}

/** What a new run needs. */
export interface NewRunOptions {
  json: boolean;
  streams: OutputStreams;
  logLevel?: LogLevel;
  deps?: RunDeps;
  /** An id to continue (hook mode's freeze and thaw share one). */
  runId?: string;
}

/**
 * A new run: its id, output and an in-memory log until the config names the file.
 *
 * @example
 * ```ts
 * import process from "node:process";
 * import { newRun } from "./state.ts";
 * const run = newRun({ json: true, streams: { stdout: (t) => process.stdout.write(t), stderr: (t) => process.stderr.write(t) } });
 * ```
 */
export function newRun(options: NewRunOptions): RunState {
  const runId = options.runId ?? newRunId();
  const deps = options.deps ?? PRODUCTION_DEPS;
  const errors: RunError[] = [];
  const warnings: Problem[] = [];
  return {
    runId,
    started: deps.now(),
    output: new Output(options.json, options.streams),
    log: new EventLog({ runId, level: options.logLevel ?? "info" }),
    interrupt: new AbortController(),
    deps,
    errors,
    warnings,
    fail: (problem) => void errors.push(problem),
    warn: (...problems) => void warnings.push(...problems),
    setup: {},
    plugins: [],
    snapshot: null,
  };
}

/**
 * Records the first of the problems and stops the run with it.
 *
 * @example
 * ```ts
 * import { newRun, stopWith } from "./state.ts";
 * const run = newRun({ json: true, streams: { stdout: () => {}, stderr: () => {} } });
 * stopWith(run, [{ code: "NotRoot", message: "vmsnap run must run as root." }]);
 * ```
 */
export function stopWith(run: RunState, problems: Problem[]): never {
  const [first] = problems;
  run.fail({ code: first.code, message: first.message });
  throw new RunStopped(first);
}

/**
 * The first SIGINT/SIGTERM/SIGHUP aborts the run (it still thaws and
 * resumes); returns the function that stops listening.
 *
 * @example
 * ```ts
 * import process from "node:process";
 * import { newRun, watchSignals } from "./state.ts";
 * const run = newRun({ json: true, streams: { stdout: (t) => process.stdout.write(t), stderr: (t) => process.stderr.write(t) } });
 * const unwatch = watchSignals(run);
 * unwatch();
 * ```
 */
export function watchSignals(run: RunState): () => void {
  const onSignal = (signal: string) => {
    run.log.record("warning", "signal", { signal });
    if (run.interrupt.signal.aborted) return;
    run.fail({
      code: "Interrupted",
      message:
        `vmsnap received ${signal}: running scripts were stopped, filesystems thawed, applications resumed.`,
    });
    run.interrupt.abort();
  };
  const signals = ["SIGINT", "SIGTERM", "SIGHUP"] as const;
  for (const s of signals) process.on(s, onSignal);
  return () => {
    for (const s of signals) process.off(s, onSignal);
  };
}
