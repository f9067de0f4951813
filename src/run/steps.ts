/**
 * The steps of one backup, each a small function of a run: prepare (the
 * preflight, the lock, recovery, the plugins), quiesce, arm the guard, freeze
 * the targets, take the snapshot, thaw, release the guard, resume, and build
 * the result. `vmsnap run` (src/run/sequence.ts) calls them in that order; hook
 * mode calls the same steps from its own process (quiesce and return, freeze
 * for a cloud agent, thaw and resume on a later command).
 *
 * The rules that hold throughout: every failure path thaws; every plugin
 * whose quiesce was attempted is resumed; nothing writes to a filesystem while
 * it is frozen (log records and the timeline wait in memory); every error is
 * kept for the result.
 *
 * @module
 */
import { randomBytes } from "node:crypto";
import process from "node:process";
import type { Readable } from "node:stream";
import {
  type Config,
  type LoadedConfig,
  type LogLevel,
  parseConfig,
  type SnapshotConfig,
} from "../config/config.ts";
import { achievedConsistency, exitCodeFor, requestedConsistency } from "./consistency.ts";
import {
  FREEZE_POOL_MAX_WORKERS,
  FREEZE_POOL_READY_TIMEOUT_MS,
  GUARD_START_TIMEOUT_MS,
} from "../defaults.ts";
import { type Problem, VmsnapError, withFix } from "../errors.ts";
import { EventLog } from "../state/event_log.ts";
import {
  AGENT_THAW_ORDER,
  createFreezer,
  type FreezeHandle,
  type FreezePool,
  type Freezer,
  inThawOrder,
  runOnHandles,
  thawHandleAndConfirm,
} from "../freeze/freezer.ts";
import { freezeLevels, type FreezeTarget } from "../freeze/plan.ts";
import { type GuardClient, type GuardProcess, spawnGuard, startGuard } from "../freeze/guard.ts";
import { acquireRunLock, type RunLock, unwritableStateDir } from "../state/lock.ts";
import { type Mount, readMounts } from "../sys/mountinfo.ts";
import { Output, type OutputStreams } from "./output.ts";
import {
  configFileProblems,
  freezePlan,
  logFileProblems,
  nothingToFreeze,
  pluginProblems,
  readConfig,
  rootProblems,
  snapshotMethod,
  snapshotMethodProblems,
  syntaxProblems,
  TRUST,
  type Trust,
} from "../preflight/preflight.ts";
import type {
  ArmMessage,
  FreezeReport,
  MountReport,
  PluginReport,
  Recovery,
  RunEvent,
  RunResult,
  SnapshotOutcome,
} from "../protocol.ts";
import {
  clearFreezeMarker,
  describeRecovery,
  recoverAll,
  recoveredAnything,
  thawLeftFrozen,
  writeFreezeMarker,
} from "../state/recover.ts";
import { shortSecretWarnings } from "../secrets.ts";
import { type HandshakeReader, takeSnapshot } from "./snapshot.ts";
import { runStaged } from "./stages.ts";
import { expediteGracePeriods, readGracePeriods } from "../freeze/rcu_expedite.ts";
import type {
  PluginConfig,
  PluginDefinition,
  PluginEnv,
  PluginRuntime,
  RunError,
} from "../../plugins/plugin.ts";
import { PLUGINS } from "../../plugins/registry.ts";

/** A phase where the fault-injection hook can pause a run. */
export type PausePoint = "quiesce" | "frozen" | "thaw" | "resume";

/** What a run depends on, replaced in tests that run without root or real freezes. */
export interface RunDeps {
  /** The freezer (FFI ioctl, or `fsfreeze`). */
  createFreezer(): Promise<Freezer>;
  /** Starts and arms the freeze guard. */
  startGuard(arm: ArmMessage): Promise<GuardClient>;
  /** Starts a guard early, to be armed later (off the critical path between quiesce and freeze). */
  spawnGuard(): GuardProcess;
  /** The mount table. */
  readMounts(): Mount[];
  /** Plugin types by their `"type"` value. */
  // deno-lint-ignore no-explicit-any
  plugins: ReadonlyMap<string, PluginDefinition<any>>;
  /** True when the process runs as root. */
  isRoot(): boolean;
  /** The fault-injection pause (a no-op unless `VMSNAP_PAUSE_AT` names the phase). */
  pause(phase: PausePoint, signal: AbortSignal): Promise<void>;
  /** The permission rules for the config, directories and snapshot command. */
  trust: Trust;
  /** Takes the snapshot (command or external handshake). */
  takeSnapshot: typeof takeSnapshot;
}

/**
 * Fault injection for tests: `VMSNAP_PAUSE_AT=frozen` (comma-separated
 * phases) pauses the run at that phase for `VMSNAP_PAUSE_MS` (default 3000)
 * and says so on stderr, so a test can deliver a signal in a known phase. A
 * signal to vmsnap ends the pause at once.
 *
 * @example
 * ```ts
 * import { pauseFromEnvironment } from "./steps.ts";
 * await pauseFromEnvironment("frozen", new AbortController().signal);
 * ```
 */
export async function pauseFromEnvironment(
  phase: PausePoint,
  signal: AbortSignal,
): Promise<void> {
  if (!(process.env.VMSNAP_PAUSE_AT ?? "").split(",").includes(phase)) return;
  process.stderr.write(`vmsnap: paused at ${phase} (VMSNAP_PAUSE_AT)\n`);
  const ms = Math.min(Number(process.env.VMSNAP_PAUSE_MS ?? 3000), 60_000);
  await new Promise<void>((resolve) => {
    const timer = setTimeout(resolve, ms);
    signal.addEventListener("abort", () => {
      clearTimeout(timer);
      resolve();
    }, { once: true });
  });
}

/** The production dependencies. */
export const PRODUCTION_DEPS: RunDeps = {
  createFreezer: () => createFreezer(),
  startGuard: (arm) => startGuard(arm, GUARD_START_TIMEOUT_MS),
  spawnGuard: () => spawnGuard(),
  // A test seam: a mount table that lists only the test's own filesystems (the default freeze is auto).
  readMounts: () => readMounts(process.env.VMSNAP_TEST_MOUNTINFO || undefined),
  plugins: PLUGINS,
  isRoot: () => process.getuid?.() === 0,
  pause: pauseFromEnvironment,
  trust: TRUST,
  takeSnapshot,
};

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
 * import { newRunId } from "./steps.ts";
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
 * import { newRun } from "./steps.ts";
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
 * import { newRun, watchSignals } from "./steps.ts";
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

// ── prepare ──────────────────────────────────────────────────────────────────

/** What preparing a run needs besides the run. */
export interface PrepareOptions {
  configPath: string;
  /** `--log-level`, over the config's. */
  logLevel?: LogLevel;
  /** `--snapshot-command ARGV...`. */
  snapshotCommand?: string[];
  /** `--external`. */
  external?: boolean;
}

/** Records the problems and stops the run with the first one. */
function stopWith(run: RunState, problems: Problem[]): never {
  const [first] = problems;
  run.errors.push({ code: first.code, message: first.message });
  throw new RunStopped(first);
}

/**
 * The preflight of `run`, stopping at the first blocking problem (root, the
 * config's permissions, syntax and values, the snapshot method, the run lock);
 * then recovery of what a dead run left, each plugin's checks (a plugin that
 * fails them does not run), and the freeze plan. Throws
 * {@linkcode RunStopped} when the run cannot go on.
 *
 * @example
 * ```ts
 * import process from "node:process";
 * import { newRun, prepareRun } from "./steps.ts";
 * const run = newRun({ json: true, streams: { stdout: (t) => process.stdout.write(t), stderr: (t) => process.stderr.write(t) } });
 * const prepared = await prepareRun(run, { configPath: "/etc/azure/VMSnapshotScriptPluginConfig.json", external: true });
 * ```
 */
export async function prepareRun(run: RunState, options: PrepareOptions): Promise<PreparedRun> {
  const { deps } = run;
  run.output.say("check", options.configPath);
  const notRoot = rootProblems(deps.isRoot());
  if (notRoot.length) stopWith(run, notRoot);

  // The config: readable, parseable, root's, valid. Otherwise no script runs at all.
  const config = run.config = usableConfig(run, options);
  // A dead run's freeze may hold the filesystem of stateDir or the log (on a VM: the root):
  // thawed before anything is written there.
  const thawed = await thawLeftFrozen(config.stateDir);

  // The log, now that we know where it goes.
  const logProblems = logFileProblems(config, deps.trust);
  run.log = new EventLog({
    runId: run.runId,
    file: logProblems.length ? undefined : config.log.file,
    level: options.logLevel ?? config.log.level,
  });
  if (logProblems.length) {
    run.errors.push({ code: logProblems[0].code, message: logProblems[0].message });
  }
  run.log.record("info", "run-start", { config: options.configPath, pid: process.pid });

  const method = snapshotMethod(config, options);
  const noMethod = snapshotMethodProblems(method, options.configPath, deps.trust);
  if (!method || noMethod.length > 0) stopWith(run, noMethod);

  // The guard starts now, in parallel with the rest of the checks and quiesce; armed before the freeze.
  if (config.fsFreezeEnabled) run.guardProcess = deps.spawnGuard();
  const lock = takeLock(run, config);
  await recoverLeftovers(run, config, lock, thawed);
  await preparePlugins(run, config);
  const freezeProblems = planTargets(run, config);
  // The same object, now with its required fields: the caller's `run` sees every step's record.
  const prepared: PreparedRun = Object.assign(run, {
    config,
    method,
    lock,
    freezeProblems,
    frozen: [],
    freezeFailed: false,
    frozenAt: 0,
    handles: new Map<string, FreezeHandle>(),
  });
  const failed = prepared.plugins.filter((p) => !p.runtime);
  if (failed.length > 0 && !config.continueBackupOnFailure) {
    stopWith(prepared, [{
      code: failed[0].report.checks[0].code,
      message: `plugin ${
        failed[0].config.name
      } failed its checks and continueBackupOnFailure is false: no snapshot was taken.`,
    }]);
  }
  await startFreezePool(prepared);
  return prepared;
}

/**
 * With two targets or more, the freezer (FFI loaded now, not between quiesce
 * and freeze) and its worker threads, started while the run quiesces: one
 * fewer than the targets (this thread takes a job too), at most
 * FREEZE_POOL_MAX_WORKERS. They are used only once they are all up.
 */
async function startFreezePool(run: PreparedRun): Promise<void> {
  if (!run.config.fsFreezeEnabled || run.freezeProblems.length > 0 || run.targets.length < 2) {
    return;
  }
  const freezer = run.freezer ??= await run.deps.createFreezer();
  try {
    run.freezePool = freezer.startPool?.({
      workers: Math.min(FREEZE_POOL_MAX_WORKERS, run.targets.length - 1),
      capacity: run.targets.length,
    });
  } catch (error) {
    // No threads (a runtime without workers): frozen one after another, as with one target.
    run.log.record("warning", "freeze-pool", { ok: false, error: (error as Error).message });
  }
}

/** Ends the pool's threads (after the thaw is confirmed, or when nothing was frozen). */
function closeFreezePool(run: RunState): void {
  run.freezePool?.close();
  run.freezePool = undefined;
}

/**
 * The config when it can be used: readable, parseable, root's, valid. When it
 * cannot and the command line names a snapshot method anyway, the run goes on
 * as Azure's framework does (no scripts, the default freeze, the problem
 * reported, a lower consistency than asked); otherwise the run stops.
 */
function usableConfig(run: RunState, options: PrepareOptions): Config {
  const blocking = configProblems(options.configPath, run.deps.trust);
  if (blocking.loaded) {
    // What Azure's framework tolerates, run accepts the same way, each with its warning.
    run.warnings.push(...blocking.loaded.lenient, ...blocking.loaded.warnings);
    return blocking.loaded.config;
  }
  const problems = blocking.problems.map(withFix);
  if (!options.snapshotCommand && !options.external) {
    if (!blocking.values) stopWith(run, problems);
    run.errors.push(...problems.map(({ code, message }) => ({ code, message })));
    stopWith(run, [invalidConfig(options.configPath, problems.length)]);
  }
  run.configFallback = true;
  const [first, ...rest] = problems;
  run.errors.push(
    {
      code: first.code,
      message:
        `${first.message} As Azure's framework does, the snapshot was taken anyway: no scripts were run, the default freeze (fsFreezeEnabled, freeze.mounts "auto") and the default stateDir and log were used, so the snapshot is at most filesystem-consistent.`,
    },
    ...rest.map(({ code, message }) => ({ code, message })),
  );
  return parseConfig("{}", options.configPath).config;
}

/**
 * The config's blocking problems (unreadable, syntax, permissions, or its
 * values: `values`), or the loaded config.
 */
function configProblems(
  path: string,
  trust: Trust,
): { loaded?: LoadedConfig; problems: Problem[]; values?: true } {
  const read = readConfig(path);
  if (!read.loaded) return read;
  const syntax = syntaxProblems(read.loaded);
  if (syntax.length > 0) {
    return {
      problems: [{
        code: "IncorrectJSONConfigFile",
        message: syntax.map((p) => p.message).join("\n"),
      }],
    };
  }
  const permission = configFileProblems(path, trust);
  if (permission.length > 0) return { problems: permission };
  if (read.loaded.problems.length > 0) return { problems: read.loaded.problems, values: true };
  return { loaded: read.loaded, problems: [] };
}

/** The one error that stands for a config's several problems (listed before it). */
function invalidConfig(file: string, count: number): Problem {
  return {
    code: "InvalidConfig",
    message:
      `${file} has ${count} problem(s), listed above; nothing was run. Fix: run vmsnap check and correct them.`,
  };
}

/** One run at a time: stateDir checked (created if missing), then the run lock. */
function takeLock(run: RunState, config: Config): RunLock {
  try {
    run.deps.trust.ensureDirectory(config.stateDir, "stateDir");
    return run.lock = acquireRunLock(config.stateDir, run.runId);
  } catch (error) {
    // A full or read-only stateDir is StateDirUnwritable, not an internal error.
    const coded = error instanceof VmsnapError ? error : unwritableStateDir(config.stateDir, error);
    if (coded) stopWith(run, [{ code: coded.code, message: coded.message }]);
    throw error;
  }
}

/** What an earlier run left: undone now, reported as warnings (a lock not released is an error). */
async function recoverLeftovers(
  run: RunState,
  config: Config,
  lock: RunLock,
  thawed: Recovery["thawed"],
): Promise<void> {
  const recovered = await recoverAll(config.stateDir, { deadRun: lock.tookOverFrom, thawed });
  if (!recoveredAnything(recovered)) return;
  run.recovered = recovered;
  run.log.record("warning", "recovered", { ...recovered });
  for (const problem of describeRecovery(recovered)) {
    run.warnings.push(problem);
    run.output.say("recover", problem.message);
  }
  for (const left of recovered.pluginLocks.filter((l) => l.error)) {
    run.errors.push({
      code: "PluginResumeFailed",
      message: `a lock left by run ${left.runId}: ${left.error}`,
      plugin: left.plugin,
    });
  }
}

/** Each plugin's own checks: a plugin that fails them does not run. */
async function preparePlugins(run: RunState, config: Config): Promise<void> {
  for (const plugin of config.plugins) {
    const definition = run.deps.plugins.get(plugin.type)!;
    const problems = (await pluginProblems(definition, plugin, () => undefined)).map(withFix);
    run.plugins.push({
      config: plugin,
      report: {
        name: plugin.name,
        type: plugin.type,
        checks: problems,
        quiesce: null,
        resume: null,
      },
      runtime: problems.length ? undefined : definition.create(plugin),
    });
    for (const p of problems) {
      run.errors.push({ code: p.code, message: p.message, plugin: plugin.name });
    }
  }
}

/** The freeze targets; returns the plan's problems (they fail the freeze, not the run). */
function planTargets(run: RunState, config: Config): Problem[] {
  if (!config.fsFreezeEnabled) return [];
  const { plan, problems } = freezePlan(config, run.deps.readMounts);
  if (!plan) return problems;
  run.targets = plan.targets;
  run.levels = freezeLevels(plan.targets);
  run.warnings.push(...plan.warnings, ...nothingToFreeze(plan));
  return problems;
}

// ── quiesce and resume ───────────────────────────────────────────────────────

function pluginEnv(run: PreparedRun, signal: AbortSignal): PluginEnv {
  return {
    runId: run.runId,
    stateDir: run.config.stateDir,
    configFile: run.config.file,
    signal,
    log: (level, event, fields) => run.log.record(level, event, fields),
  };
}

/**
 * Runs one step (quiesce or resume) of the given plugins in parallel: records
 * each result, logs it, shows it on the timeline, and emits the step's event.
 */
async function pluginStep(
  run: PreparedRun,
  plugins: RunPlugin[],
  step: "quiesce" | "resume",
  signal: AbortSignal,
): Promise<void> {
  run.output.say(step, plugins.map((p) => p.config.name).join(", "));
  // Stages: quiesce ascending, resume descending; a failed quiesce stage without
  // continueBackupOnFailure (or a signal) starts no later stage.
  let failed = false;
  await runStaged({
    items: plugins,
    stageOf: (p) => p.config.stage,
    order: step === "quiesce" ? "ascending" : "descending",
    goOn: () =>
      step === "resume" || (!signal.aborted && (!failed || run.config.continueBackupOnFailure)),
    step: (group) =>
      Promise.all(group.map(async (p) => {
        const result = await p.runtime![step](pluginEnv(run, signal));
        p.report[step] = result;
        if (!result.ok) failed = true;
        run.errors.push(...result.errors);
        if (result.notHeld) {
          run.warnings.push({
            code: "PluginNotHeld",
            message: result.notHeld.reason,
            plugin: p.config.name,
          });
        }
        run.log.record(result.ok ? "info" : "error", step, {
          plugin: p.config.name,
          ok: result.ok,
          durationMs: result.durationMs,
          ...(p.config.stage ? { stage: p.config.stage } : {}),
        });
        const outcome = result.ok
          ? (result.skipped
            ? "nothing to do"
            : result.notHeld
            ? "ok, writes not held (PluginNotHeld)"
            : "ok")
          : result.errors[0]?.code;
        run.output.say(step, `${p.config.name}: ${outcome} (${result.durationMs} ms)`);
      })).then(() => {}),
  });
  run.output.event({
    event: step === "quiesce" ? "quiesced" : "resumed",
    runId: run.runId,
    plugins: plugins.map((p) => ({ name: p.config.name, ok: p.report[step]?.ok })),
  });
}

/**
 * Every ready plugin's pre step, in parallel. A failure with
 * `continueBackupOnFailure: false` sets `run.noSnapshot`.
 *
 * @example
 * ```ts
 * import { quiesceAll, type PreparedRun } from "./steps.ts";
 * declare const run: PreparedRun;
 * await quiesceAll(run);
 * ```
 */
export async function quiesceAll(run: PreparedRun): Promise<void> {
  await run.deps.pause("quiesce", run.interrupt.signal);
  if (run.interrupt.signal.aborted) return;
  const ready = run.plugins.filter((p) => p.runtime);
  if (ready.length === 0) return;
  await pluginStep(run, ready, "quiesce", run.interrupt.signal);
  const failed = ready.find((p) => !p.report.quiesce?.ok);
  if (failed && !run.config.continueBackupOnFailure) {
    run.noSnapshot =
      `plugin ${failed.config.name} failed to quiesce and continueBackupOnFailure is false`;
  }
}

/**
 * The post step of every plugin whose pre step was attempted, in parallel. A
 * signal does not stop it: the applications must come back.
 *
 * @example
 * ```ts
 * import { resumeAll, type PreparedRun } from "./steps.ts";
 * declare const run: PreparedRun;
 * await resumeAll(run);
 * ```
 */
export async function resumeAll(run: PreparedRun): Promise<void> {
  const attempted = run.plugins.filter((p) => p.report.quiesce && !p.report.resume);
  if (attempted.length === 0) return;
  await run.deps.pause("resume", run.interrupt.signal);
  await pluginStep(run, attempted, "resume", new AbortController().signal);
}

/**
 * True when the run goes on to freeze and snapshot: not interrupted, and no
 * quiesce failure that forbids a snapshot (which is logged here).
 *
 * @example
 * ```ts
 * import { snapshotWanted, type PreparedRun } from "./steps.ts";
 * declare const run: PreparedRun;
 * if (snapshotWanted(run)) console.log("freezing");
 * ```
 */
export function snapshotWanted(run: PreparedRun): boolean {
  if (run.interrupt.signal.aborted) return false;
  if (!run.noSnapshot) return true;
  run.log.record("warning", "no-snapshot", { reason: run.noSnapshot });
  run.output.say("snapshot", `skipped: ${run.noSnapshot}`);
  return false;
}

// ── freeze ───────────────────────────────────────────────────────────────────

const round = (ms: number) => Math.round(ms * 1000) / 1000;

/**
 * Writes the freeze marker and starts the guard armed with the targets.
 * Returns false (with `GuardFailed` recorded, or `StateDirUnwritable` when
 * the marker cannot be written, the marker removed and `run.freezeFailed`
 * set) when the guard does not come up: then nothing may be frozen.
 *
 * @example
 * ```ts
 * import { armGuard, type PreparedRun } from "./steps.ts";
 * declare const run: PreparedRun;
 * if (await armGuard(run)) console.log("guarded");
 * ```
 */
export async function armGuard(run: PreparedRun): Promise<boolean> {
  const mounts = run.targets.map((t) => t.mountPoint);
  try {
    const mountIds = Object.fromEntries(run.targets.map((t) => [t.mountPoint, t.mountId]));
    writeFreezeMarker(run.config.stateDir, { runId: run.runId, mounts, mountIds });
    const arm = run.guardProcess
      ? (message: ArmMessage) => run.guardProcess!.arm(message, GUARD_START_TIMEOUT_MS)
      : run.deps.startGuard;
    run.guard = await arm({
      op: "arm",
      runId: run.runId,
      mounts,
      // The guard holds only what this run freezes: every target from before its freeze (a hold
      // sent just before the ioctl may not leave this process before the ioctl blocks), each one
      // dropped again if its freeze fails or never happens.
      held: mounts,
      mountIds,
      maxFrozenMs: run.config.freeze.maxFrozenSeconds * 1000,
      stateDir: run.config.stateDir,
      // The guard puts the 0 back if this agent dies between setting it and putting it back.
      ...(run.config.freeze.expediteRcu && readGracePeriods().value === "0"
        ? { restoreRcuExpedited: true }
        : {}),
    });
    run.freeze.guard = { pid: run.guard.pid };
    return true;
  } catch (error) {
    clearFreezeMarker(run.config.stateDir);
    // The marker could not be written (stateDir full or read-only since the lock was taken).
    const unwritable = unwritableStateDir(run.config.stateDir, error);
    run.errors.push({
      code: unwritable?.code ?? "GuardFailed",
      message: unwritable
        ? `the freeze marker could not be written in stateDir ${run.config.stateDir} (${
          (error as Error).message
        }); without it a dead run's freeze could not be undone, so nothing was frozen. Fix: free space on that filesystem or remount it read-write, or set stateDir to a writable directory only root can write.`
        : `${(error as Error).message}; nothing was frozen. Fix: see the log.`,
    });
    run.freezeFailed = true;
    return false;
  }
}

/**
 * Opens every target once and checks that the descriptor is on the mount the
 * plan chose (a mount point lazily unmounted or mounted over since planning
 * resolves to another mount): a mismatch is `FreezeMountNotFound` and nothing
 * is frozen. Then syncs them all at once (syncfs, outside the frozen window,
 * so that the freeze itself has little left to flush). False when a target
 * failed.
 */
function openTargets(run: PreparedRun, freezer: Freezer, pool?: FreezePool): boolean {
  for (const target of run.targets) {
    const opened = freezer.open(target.mountPoint);
    const problem = !opened.handle
      ? `cannot open ${target.mountPoint}: ${opened.error}`
      : opened.handle.mountId !== target.mountId
      ? `${target.mountPoint} is no longer the filesystem vmsnap planned to freeze (mount ${target.mountId}: ${target.fsType} on ${target.source}, device ${target.device}); the path now leads to ${
        opened.handle.mountId === undefined
          ? "a mount vmsnap cannot identify"
          : `mount ${opened.handle.mountId}`
      }: it was unmounted, or something was mounted over it, after the plan`
      : undefined;
    if (opened.handle) run.handles.set(target.mountPoint, opened.handle);
    if (problem) {
      run.errors.push({
        code: "FreezeMountNotFound",
        message:
          `${problem}. Nothing was frozen. Fix: find what changed the mounts during the run (a pre-script?) and run again.`,
      });
      run.freezeFailed = true;
      closeHandles(run);
      return false;
    }
  }
  // syncfs blocks nobody: every target at once.
  const mounts = [...run.handles.keys()];
  const synced = runOnHandles({
    freezer,
    pool,
    op: "sync",
    handles: [...run.handles.values()],
    stopOnFailure: false,
  });
  synced.forEach((op, i) => {
    run.log.record(op?.ok ? "debug" : "warning", "syncfs", {
      mount: mounts[i],
      ok: op?.ok ?? false,
      ms: round(op?.ms ?? 0),
      thread: op?.thread,
      error: op?.error,
    });
  });
  return true;
}

/** Closes the targets' descriptors (after the thaw is confirmed, or when nothing froze). */
function closeHandles(run: PreparedRun): void {
  for (const handle of run.handles.values()) run.freezer?.close(handle);
  run.handles.clear();
}

/**
 * Freezes the targets level by level (children first), each level's targets
 * concurrently. When a FIFREEZE fails, no further level is started (and no
 * call of its level that had not started yet): the caller thaws what froze.
 */
function freezeEach(
  run: PreparedRun,
  options: { freezer: Freezer; guard: GuardClient; pool?: FreezePool },
): void {
  const { freezer, guard, pool } = options;
  run.output.say(
    "freeze",
    run.levels.map((level) => level.map((t) => t.mountPoint).join(", ")).join("; then "),
  );
  // From here until the thaw is confirmed, nothing is written to any filesystem.
  run.log.hold();
  run.output.hold();
  const expedite = run.config.freeze.expediteRcu ? expediteGracePeriods() : undefined;
  if (expedite) {
    run.freeze.rcuExpedited = expedite.state;
    run.log.record(expedite.error ? "warning" : "debug", "rcu-expedite", {
      state: expedite.state,
      error: expedite.error,
    });
  }
  try {
    run.frozenAt = performance.now();
    freezeByLevel(run, { freezer, guard, pool });
  } finally {
    // Only the FIFREEZE calls wait for grace periods: the machine's setting is back before the snapshot.
    expedite?.restore();
  }
}

/** Freezes level after level (each level's calls together), stopping after a failed level. */
function freezeByLevel(
  run: PreparedRun,
  options: { freezer: Freezer; guard: GuardClient; pool?: FreezePool },
): void {
  const { freezer, guard, pool } = options;
  for (const [index, level] of run.levels.entries()) {
    const ops = runOnHandles({
      freezer,
      pool,
      op: "freeze",
      handles: level.map((t) => run.handles.get(t.mountPoint)!),
      stopOnFailure: true,
    });
    level.forEach((target, i) => {
      const op = ops[i];
      if (!op) return; // never started: an earlier call of its level failed
      const report: MountReport = {
        mountPoint: target.mountPoint,
        fsType: target.fsType,
        device: target.device,
        frozen: op.ok,
        freezeMs: round(op.ms),
        level: index,
      };
      run.freeze.mounts.push(report);
      run.log.record(op.ok ? "info" : "error", "freeze", {
        mount: target.mountPoint,
        ok: op.ok,
        ms: report.freezeMs,
        freezeLevel: index,
        thread: op.thread,
        error: op.error,
      });
      if (op.ok) {
        run.frozen.push(report);
        return;
      }
      report.error = op.error;
      run.errors.push({
        code: "FreezeFailed",
        message:
          `could not freeze ${target.mountPoint} (${target.fsType} on ${target.source}): ${op.error}. Everything vmsnap froze in this run (before it, or beside it in the same level) was thawed again. Fix: exclude it (freeze.exclude) or resolve the error.`,
      });
      run.freezeFailed = true;
    });
    if (run.freezeFailed || guard.expired()) return;
  }
}

/**
 * The freeze stage: the plan's problems fail it; otherwise the guard is armed
 * and the targets frozen in order. A freeze that failed thaws at once what it
 * froze (the snapshot is then crash-consistent, or not taken).
 *
 * @example
 * ```ts
 * import { freezeTargets, thawTargets, type PreparedRun } from "./steps.ts";
 * declare const run: PreparedRun;
 * try {
 *   await freezeTargets(run);
 * } finally {
 *   await thawTargets(run);
 * }
 * ```
 */
export async function freezeTargets(run: PreparedRun): Promise<void> {
  const freezer = run.freezer ??= await run.deps.createFreezer();
  const { config } = run;
  run.freeze = { enabled: config.fsFreezeEnabled, method: freezer.method, mounts: [], frozenMs: 0 };
  run.freezeFailed = run.freezeProblems.length > 0;
  for (const p of run.freezeProblems) {
    run.errors.push({ code: p.code, message: withFix(p).message });
  }
  if (!config.fsFreezeEnabled || run.freezeFailed || run.targets.length === 0) return;
  // The pool started while the run quiesced; not up in time: one thread, one call after another.
  let pool = run.freezePool;
  if (pool && !await pool.ready(FREEZE_POOL_READY_TIMEOUT_MS)) {
    run.log.record("warning", "freeze-pool", { ok: false, error: "its threads did not start" });
    closeFreezePool(run);
    pool = undefined;
  }
  if (!openTargets(run, freezer, pool)) return closeFreezePool(run);
  if (!await armGuard(run)) {
    closeFreezePool(run);
    return closeHandles(run);
  }
  freezeEach(run, { freezer, guard: run.guard!, pool });
  // A freeze that failed (EBUSY: someone else's freeze) or never happened is not the guard's to
  // thaw; the drops leave with the next turn of the event loop, right now. When every target
  // froze there is nothing to drop, and no turn is spent while frozen.
  const froze = new Set(run.frozen.map((m) => m.mountPoint));
  const drops = run.targets.filter((target) => !froze.has(target.mountPoint));
  for (const target of drops) run.guard!.drop(target.mountPoint);
  if (drops.length > 0) await new Promise((resolve) => setImmediate(resolve));
  if (run.frozen.length > 0) await run.deps.pause("frozen", run.interrupt.signal);
  if (run.freezeFailed) {
    thawFrozen(run);
    // Nothing of this run is frozen now, so stateDir can be written: the marker lists every
    // planned mount, and must not lead a later recovery to thaw someone else's freeze (EBUSY).
    if (run.frozen.every((m) => m.thawed)) clearFreezeMarker(run.config.stateDir);
  }
}

// ── snapshot ─────────────────────────────────────────────────────────────────

/**
 * Takes the snapshot when allowed (not interrupted; a failed freeze only with
 * `continueBackupOnFailure`), with the mounts that are still frozen.
 *
 * @example
 * ```ts
 * import process from "node:process";
 * import { snapshotStep, type PreparedRun } from "./steps.ts";
 * declare const run: PreparedRun;
 * await snapshotStep(run, process.stdin);
 * ```
 */
export async function snapshotStep(
  run: PreparedRun,
  stdin: Readable,
  handshake?: HandshakeReader,
): Promise<void> {
  const continueOnFailure = run.config.continueBackupOnFailure;
  const allowed = !run.interrupt.signal.aborted && (!run.freezeFailed || continueOnFailure);
  if (!allowed) {
    if (run.freezeFailed && !continueOnFailure) {
      run.errors.push({
        code: "FreezeFailed",
        message: "the freeze failed and continueBackupOnFailure is false: no snapshot was taken.",
      });
    }
    return;
  }
  const { method } = run;
  const mounts = run.frozen.filter((m) => !m.thawed).map((m) => m.mountPoint);
  if (method.kind !== "external" && mounts.length > 0) {
    run.output.event({ event: "frozen", runId: run.runId, mounts });
  }
  run.output.say(
    "snapshot",
    method.kind === "command" ? method.command.join(" ") : "waiting for the caller (external)",
  );
  run.snapshot = await run.deps.takeSnapshot(method, {
    runId: run.runId,
    mounts,
    signal: run.interrupt.signal,
    log: (level, event, fields) => run.log.record(level, event, fields),
    announce: (event) => run.output.handshake(event),
    stdin,
    handshake,
  });
  if (run.snapshot.error) run.errors.push(run.snapshot.error);
  if (run.snapshot.taken) {
    const taken: RunEvent = {
      event: "snapshot-taken",
      runId: run.runId,
      durationMs: run.snapshot.durationMs,
    };
    // Still frozen: the line goes out right after the thaw's FITHAW calls (before `thawed`).
    if (run.frozen.some((m) => m.thawed === undefined)) (run.afterThaw ??= []).push(taken);
    else run.output.event(taken);
  }
}

// ── thaw ─────────────────────────────────────────────────────────────────────

/** Thaws what this run froze and has not thawed yet, in the agent's order, confirming each. */
function thawFrozen(run: PreparedRun): void {
  const pending = run.frozen.filter((m) => m.thawed === undefined);
  if (pending.length === 0 || !run.freezer) return;
  for (const mount of inThawOrder(pending, AGENT_THAW_ORDER)) {
    const result = thawHandleAndConfirm(run.freezer, run.handles.get(mount.mountPoint)!);
    mount.thawed = result.confirmed;
    mount.thawMs = round(result.ms);
    run.log.record(result.confirmed ? "info" : "error", "thaw", {
      mount: mount.mountPoint,
      confirmed: result.confirmed,
      ms: mount.thawMs,
      error: result.error,
    });
    if (!result.confirmed) {
      mount.error = result.error;
      run.errors.push({
        code: "ThawFailed",
        message:
          `could not confirm that ${mount.mountPoint} is thawed: ${result.error}. Fix: run fsfreeze --unfreeze ${mount.mountPoint} now.`,
      });
    }
  }
  run.freeze.frozenMs = Math.round(performance.now() - run.frozenAt);
}

/**
 * Tells the guard the agent's thaw is done, and records what it did: died,
 * stepped in at the deadline, or found mounts still frozen. Removes the
 * freeze marker.
 *
 * @example
 * ```ts
 * import { releaseGuard, type PreparedRun } from "./steps.ts";
 * declare const run: PreparedRun;
 * await releaseGuard(run);
 * ```
 */
export async function releaseGuard(run: PreparedRun): Promise<void> {
  const { guard } = run;
  if (!guard) return;
  const guardDied = guard.died();
  const leftovers = await guard.release(run.frozen.map((m) => m.mountPoint));
  if (guardDied) {
    // Say only what happened: the mounts whose thaw was confirmed, and those that were not.
    const unconfirmed = run.frozen.filter((m) => !m.thawed).map((m) => m.mountPoint);
    const thawed = unconfirmed.length === 0
      ? "vmsnap thawed and confirmed every mount it froze itself"
      : `vmsnap could NOT confirm the thaw of ${unconfirmed.join(", ")} (see ThawFailed)`;
    run.warnings.push({
      code: "GuardFailed",
      message:
        `the freeze guard (pid ${guard.pid}) died during the freeze; ${thawed}. Fix: find out what killed it (dmesg, the OOM killer).`,
    });
  }
  const steppedIn = guard.expired();
  if (steppedIn) {
    run.freeze.guard!.steppedIn = steppedIn;
    run.errors.push({
      code: "FreezeTimeout",
      message:
        `the filesystems were still frozen after freeze.maxFrozenSeconds (${run.config.freeze.maxFrozenSeconds} s); the guard thawed ${
          steppedIn.thawed.map((t) => t.mount).join(", ")
        } after ${steppedIn.afterMs} ms. The snapshot may be inconsistent. Fix: make the snapshot faster or raise freeze.maxFrozenSeconds; check the freeze order with vmsnap check.`,
    });
  }
  for (const mount of leftovers) {
    run.errors.push({
      code: "ThawFailed",
      message: `${mount} was still frozen after vmsnap's thaw; the guard thawed it.`,
    });
  }
  clearFreezeMarker(run.config.stateDir);
}

/**
 * The thaw stage, always run after {@linkcode freezeTargets}: thaws in
 * reverse freeze order (each confirmed), releases the guard, writes what
 * was held in memory, and emits `thawed`.
 *
 * @example
 * ```ts
 * import { thawTargets, type PreparedRun } from "./steps.ts";
 * declare const run: PreparedRun;
 * await thawTargets(run);
 * ```
 */
export async function thawTargets(run: PreparedRun): Promise<void> {
  if (run.frozen.length > 0) await run.deps.pause("thaw", run.interrupt.signal);
  thawFrozen(run);
  for (const event of run.afterThaw?.splice(0) ?? []) run.output.event(event);
  await releaseGuard(run);
  closeHandles(run);
  closeFreezePool(run);
  run.log.release();
  run.output.release();
  if (run.guard) {
    run.output.say("thaw", `${run.frozen.length} filesystem(s), frozen ${run.freeze.frozenMs} ms`);
    run.output.event({
      event: "thawed",
      runId: run.runId,
      mounts: run.frozen.map((m) => m.mountPoint),
      frozenMs: run.freeze.frozenMs,
    });
  }
}

// ── report ───────────────────────────────────────────────────────────────────

/**
 * The result of a run as it stands: consistency, status and exit code from
 * what happened.
 *
 * @example
 * ```ts
 * import { buildResult, type RunState } from "./steps.ts";
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
 * import { finishRun, type RunState } from "./steps.ts";
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
