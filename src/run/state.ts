/**
 * A run from its start: its identity, output, log, errors and warnings, the
 * interrupt, and what each step records for the result.
 *
 * @module
 */
import { randomBytes } from "node:crypto";
import process from "node:process";
import type { Config, LogLevel, SnapshotConfig } from "../config/config.ts";
import { type Problem, VmsnapError } from "../errors.ts";
import { EventLog } from "../state/event_log.ts";
import type { FreezeHandle, FreezePool, Freezer } from "../freeze/freezer.ts";
import type { FreezeTarget } from "../freeze/plan.ts";
import type { GuardClient, GuardProcess } from "../freeze/guard.ts";
import type { RunLock } from "../state/lock.ts";
import { Output, type OutputStreams } from "./output.ts";
import type {
  FreezeReport,
  MountReport,
  PluginReport,
  Recovery,
  RunError,
  RunEvent,
  SnapshotOutcome,
} from "../protocol.ts";
import { PRODUCTION_DEPS, type RunDeps } from "./deps.ts";
import type { PluginConfig, PluginRuntime } from "../../plugins/plugin.ts";

/** One configured plugin in a run. */
export interface RunPlugin {
  config: PluginConfig;
  report: PluginReport;
  /** Absent when the plugin failed its checks (it does not run). */
  runtime?: PluginRuntime;
}

/** A run from its start: what every step, and the result, can rely on. */
export interface RunState {
  runId: string;
  started: number;
  output: Output;
  log: EventLog;
  errors: RunError[];
  warnings: Problem[];
  /** Aborts on the first SIGINT/SIGTERM/SIGHUP. */
  interrupt: AbortController;
  deps: RunDeps;
  /** Set once the config is loaded (the result needs it even when the run stopped later). */
  config?: Config;
  lock?: RunLock;
  /** The guard started early (not armed yet); dismissed at the end if never armed. */
  guardProcess?: GuardProcess;
  recovered?: Recovery;
  plugins: RunPlugin[];
  targets: FreezeTarget[];
  /** The targets grouped into levels frozen one after another, each level concurrently. */
  levels: FreezeTarget[][];
  /** Worker threads for concurrent syncfs/FIFREEZE (two targets or more); closed after the thaw. */
  freezePool?: FreezePool;
  freeze: FreezeReport;
  snapshot: SnapshotOutcome | null;
  /**
   * The config could not be used and the command line named a snapshot
   * method: the run went on with the defaults, as Azure's framework does.
   */
  configFallback?: boolean;
  /**
   * Hook mode where the agent freezes (qemu-ga, VMware, Azure) and the config
   * asked for a freeze: whether the agent's freeze held, by its word (a thaw
   * after the freeze hook; `freezeFail` or no thaw is not held). vmsnap freezes
   * nothing itself then; the result trusts the agent as it does for plugins.
   */
  agentFreeze?: { held: boolean };
}

/** A run whose preflight passed: config, method, lock and plugins are there. */
export interface PreparedRun extends RunState {
  config: Config;
  method: SnapshotConfig;
  lock: RunLock;
  /** Problems of the freeze plan (they fail the freeze step, not the run). */
  freezeProblems: Problem[];
  /** Why no snapshot is taken although the run goes on to resume. */
  noSnapshot?: string;
  /** What this run froze, in freeze order. */
  frozen: MountReport[];
  freezeFailed: boolean;
  frozenAt: number;
  guard?: GuardClient;
  freezer?: Freezer;
  /** Each target opened once (verified against the plan): freeze, thaw and confirm go through it. */
  handles: Map<string, FreezeHandle>;
  /** Events that wait for the thaw (written right after FITHAW, not in the frozen window). */
  afterThaw?: RunEvent[];
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
  return {
    runId,
    started: performance.now(),
    output: new Output(options.json, options.streams),
    log: new EventLog({ runId, level: options.logLevel ?? "info" }),
    errors: [],
    warnings: [],
    interrupt: new AbortController(),
    deps: options.deps ?? PRODUCTION_DEPS,
    plugins: [],
    targets: [],
    levels: [],
    freeze: { enabled: false, mounts: [], frozenMs: 0 },
    snapshot: null,
  };
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
    run.errors.push({
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
  run.errors.push({ code: first.code, message: first.message });
  throw new RunStopped(first);
}
