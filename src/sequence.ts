/**
 * `vmsnap run`: the story of one backup, top to bottom.
 *
 *   check → quiesce → freeze → snapshot → thaw → resume → report
 *
 * Each step is a function below, in that order. The rules that hold
 * throughout: every failure path thaws; every plugin whose quiesce was
 * attempted is resumed; nothing writes to a filesystem while it is frozen
 * (log records and the timeline wait in memory); every error is kept for the
 * result.
 *
 * @module
 */
import { randomBytes } from "node:crypto";
import process from "node:process";
import type { Readable } from "node:stream";
import { checkSnapshotCommand } from "./check.ts";
import { type Config, loadConfig, type LogLevel } from "./config.ts";
import {
  achievedConsistency,
  type Consistency,
  exitCodeFor,
  requestedConsistency,
} from "./consistency.ts";
import { type Problem, VmsnapError, withFix } from "./errors.ts";
import { checkLogFile, EventLog, type LogStats } from "./event_log.ts";
import { createFreezer, type Freezer, thawAndConfirm } from "./freeze.ts";
import { type FreezeTarget, planFreeze } from "./freeze_targets.ts";
import { type GuardClient, type GuardReport, startGuard } from "./guard.ts";
import { acquireRunLock, type RunLock } from "./lock.ts";
import { readMounts } from "./mountinfo.ts";
import { Output, type OutputStreams } from "./output.ts";
import { checkFile, ensureDirectory } from "./permissions.ts";
import {
  clearFreezeMarker,
  describeRecovery,
  recoverAll,
  recoveredAnything,
  type Recovery,
  writeFreezeMarker,
} from "./recover.ts";
import { type SnapshotMethod, type SnapshotOutcome, takeSnapshot } from "./snapshot.ts";
import type {
  PluginConfig,
  PluginEnv,
  PluginRuntime,
  RunError,
  StepResult,
} from "../plugins/plugin.ts";
import { PLUGINS } from "../plugins/registry.ts";

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

/** One plugin in the result. */
export interface PluginReport {
  name: string;
  type: string;
  /** Problems that kept it from running. */
  checks: Problem[];
  quiesce: StepResult | null;
  resume: StepResult | null;
}

/** One frozen filesystem in the result. */
export interface MountReport {
  mountPoint: string;
  fsType: string;
  device: string;
  frozen: boolean;
  freezeMs?: number;
  thawed?: boolean;
  thawMs?: number;
  error?: string;
}

/** The result object: the last line of `--json` output, and what the log ends with. */
export interface RunResult {
  event: "result";
  runId: string;
  status: "success" | "degraded" | "failed";
  consistency: Consistency;
  requestedConsistency: Consistency;
  snapshotTaken: boolean;
  exitCode: 0 | 1 | 2;
  errors: RunError[];
  warnings: Problem[];
  plugins: PluginReport[];
  freeze: {
    enabled: boolean;
    method?: string;
    mounts: MountReport[];
    frozenMs: number;
    guard?: { pid: number; steppedIn?: GuardReport };
  };
  snapshot: SnapshotOutcome | null;
  recovered?: Recovery;
  log: { file?: string } & LogStats;
  durationMs: number;
}

/** State shared by the steps of one run. */
interface Run {
  runId: string;
  started: number;
  output: Output;
  log: EventLog;
  errors: RunError[];
  warnings: Problem[];
  /** Aborts on the first SIGINT/SIGTERM/SIGHUP. */
  interrupt: AbortController;
  config?: Config;
  lock?: RunLock;
  recovered?: Recovery;
  plugins: { config: PluginConfig; report: PluginReport; runtime?: PluginRuntime }[];
  targets: FreezeTarget[];
  freezeProblems: Problem[];
  method?: SnapshotMethod;
  freeze: RunResult["freeze"];
  snapshot: SnapshotOutcome | null;
  /** Why no snapshot is taken although the run goes on to resume. */
  noSnapshot?: string;
}

/** A step found that the run cannot go on. */
class Stop extends Error {}

/** A run id: sortable time, then randomness. */
export function newRunId(): string {
  const time = new Date().toISOString().replace(/[-:]/g, "").replace(/\.\d+Z$/, "Z");
  return `${time}-${randomBytes(3).toString("hex")}`;
}

/**
 * Runs one backup and returns its result. Never throws for a failure of the
 * backup itself: those are in the result.
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
export async function runBackup(options: RunOptions): Promise<RunResult> {
  const runId = newRunId();
  const run: Run = {
    runId,
    started: performance.now(),
    output: new Output(options.json, options.streams),
    log: new EventLog({ runId, level: options.logLevel ?? "info" }),
    errors: [],
    warnings: [],
    interrupt: new AbortController(),
    plugins: [],
    targets: [],
    freezeProblems: [],
    freeze: { enabled: false, mounts: [], frozenMs: 0 },
    snapshot: null,
  };
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
  try {
    await check(run, options);
    await quiesce(run);
    const freezer = await createFreezer();
    await freezeSnapshotThaw(run, freezer, options);
    await resume(run);
  } catch (error) {
    if (!(error instanceof Stop)) {
      run.errors.push({
        code: "InternalError",
        message: `internal error: ${
          (error as Error).stack ?? error
        }. Fix: report this with the log; filesystems were thawed and plugins resumed.`,
      });
      await resume(run);
    }
  } finally {
    for (const s of signals) process.off(s, onSignal);
  }
  return report(run);
}

/** A phase where the fault-injection hook can pause a run. */
type PausePoint = "quiesce" | "frozen" | "thaw" | "resume";

/**
 * Fault injection for tests: `VMSNAP_PAUSE_AT=frozen` (comma-separated
 * phases) pauses the run at that phase for `VMSNAP_PAUSE_MS` (default 3000)
 * and says so on stderr, so a test can deliver a signal in a known phase. A
 * signal to vmsnap ends the pause at once.
 */
async function pauseAt(run: Run, phase: PausePoint): Promise<void> {
  if (!(process.env.VMSNAP_PAUSE_AT ?? "").split(",").includes(phase)) return;
  process.stderr.write(`vmsnap: paused at ${phase} (VMSNAP_PAUSE_AT)\n`);
  const ms = Math.min(Number(process.env.VMSNAP_PAUSE_MS ?? 3000), 60_000);
  await new Promise<void>((resolve) => {
    const timer = setTimeout(resolve, ms);
    run.interrupt.signal.addEventListener("abort", () => {
      clearTimeout(timer);
      resolve();
    }, { once: true });
  });
}

// ── check ────────────────────────────────────────────────────────────────────

/** Everything `vmsnap check` checks; a failure here stops before anything runs. */
async function check(run: Run, options: RunOptions): Promise<void> {
  const stop = (code: RunError["code"], message: string): never => {
    run.errors.push({ code, message });
    throw new Stop(message);
  };
  run.output.say("check", options.configPath);
  if (process.getuid?.() !== 0) {
    stop(
      "NotRoot",
      `vmsnap run must run as root (uid ${process.getuid?.()}). Fix: sudo vmsnap run ...`,
    );
  }
  // The config: readable, parseable, root's, valid. Otherwise nothing runs at all.
  let loaded;
  try {
    loaded = loadConfig(options.configPath);
  } catch (error) {
    if (error instanceof VmsnapError) stop(error.code, error.message);
    throw error;
  }
  const syntax = loaded.problems.filter((p) => p.code === "IncorrectJSONConfigFile");
  if (syntax.length > 0) stop("IncorrectJSONConfigFile", syntax.map((p) => p.message).join("\n"));
  const permission = checkFile(options.configPath, {
    role: "config",
    notFound: "ConfigFileNotFound",
    permission: "InsufficientPermissionforConfigFile",
    what: "config file",
  });
  if (permission.length > 0) stop(permission[0].code, permission[0].message);
  if (loaded.problems.length > 0) {
    run.errors.push(
      ...loaded.problems.map(withFix).map((p) => ({ code: p.code, message: p.message })),
    );
    stop(
      "InvalidConfig",
      `${options.configPath} has ${loaded.problems.length} problem(s), listed above; nothing was run. Fix: run vmsnap check and correct them.`,
    );
  }
  // What Azure's framework tolerates, run accepts the same way, each with its warning.
  run.warnings.push(...loaded.lenient, ...loaded.warnings);
  const config = run.config = loaded.config;

  // The log, now that we know where it goes.
  const logProblems = checkLogFile(config.log.file);
  run.log = new EventLog({
    runId: run.runId,
    file: logProblems.length ? undefined : config.log.file,
    level: options.logLevel ?? config.log.level,
  });
  if (logProblems.length) {
    run.errors.push({ code: logProblems[0].code, message: logProblems[0].message });
  }
  run.log.record("info", "run-start", { config: options.configPath, pid: process.pid });

  // How the snapshot is taken.
  run.method = options.snapshotCommand
    ? {
      kind: "command",
      command: options.snapshotCommand,
      timeoutInSeconds: config.snapshot?.timeoutInSeconds ?? 60,
    }
    : options.external
    ? { kind: "external", timeoutInSeconds: config.snapshot?.timeoutInSeconds ?? 60 }
    : config.snapshot ?? undefined;
  if (!run.method) {
    stop(
      "NoSnapshotMethod",
      `${options.configPath} sets no snapshot method. Fix: set snapshot.command or snapshot.external, or pass --snapshot-command ARGV... or --external.`,
    );
  }
  if (run.method!.kind === "command") {
    const refused = checkSnapshotCommand(run.method!.command);
    if (refused.length > 0) stop(refused[0].code, refused[0].message);
  }

  // One run at a time; then what an earlier run may have left.
  try {
    ensureDirectory(config.stateDir, "stateDir");
    run.lock = acquireRunLock(config.stateDir, run.runId);
  } catch (error) {
    if (error instanceof VmsnapError) stop(error.code, error.message);
    throw error;
  }
  const recovered = await recoverAll(config.stateDir, { deadRun: run.lock.tookOverFrom });
  if (recoveredAnything(recovered)) {
    run.recovered = recovered;
    run.log.record("warning", "recovered", { ...recovered });
    for (const line of describeRecovery(recovered)) {
      run.warnings.push({ code: "Recovered", message: line });
      run.output.say("recover", line);
    }
    for (const lock of recovered.pluginLocks.filter((l) => l.error)) {
      run.errors.push({
        code: "PluginResumeFailed",
        message: `a lock left by run ${lock.runId}: ${lock.error}`,
        plugin: lock.plugin,
      });
    }
  }

  // Each plugin's own checks: a plugin that fails them does not run.
  for (const plugin of config.plugins) {
    const definition = PLUGINS.get(plugin.type)!;
    const problems = (await definition.check(plugin, { locate: () => undefined })).map(withFix);
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

  // The freeze targets.
  if (config.fsFreezeEnabled) {
    try {
      const plan = planFreeze(readMounts(), config.freeze);
      run.targets = plan.targets;
      run.freezeProblems = plan.problems;
      run.warnings.push(...plan.warnings);
      if (plan.targets.length === 0 && plan.problems.length === 0) {
        run.warnings.push({
          code: "FreezeNotSupported",
          message:
            "fsFreezeEnabled is true but no filesystem qualifies for freezing; the snapshot is at most crash-consistent.",
        });
      }
    } catch (error) {
      run.freezeProblems = [{
        code: "MountinfoUnreadable",
        message: `cannot read /proc/self/mountinfo: ${(error as Error).message}`,
      }];
    }
  }
  const failed = run.plugins.filter((p) => !p.runtime);
  if (failed.length > 0 && !config.continueBackupOnFailure) {
    stop(
      failed[0].report.checks[0].code,
      `plugin ${
        failed[0].config.name
      } failed its checks and continueBackupOnFailure is false: no snapshot was taken.`,
    );
  }
}

// ── quiesce ──────────────────────────────────────────────────────────────────

function pluginEnv(run: Run, signal: AbortSignal): PluginEnv {
  return {
    runId: run.runId,
    stateDir: run.config!.stateDir,
    configFile: run.config!.file,
    signal,
    log: (level, event, fields) => run.log.record(level, event, fields),
  };
}

/**
 * Runs one step (quiesce or resume) of the given plugins in parallel: records
 * each result, logs it, shows it on the timeline, and emits the step's event.
 */
async function pluginStep(
  run: Run,
  plugins: Run["plugins"],
  step: "quiesce" | "resume",
  signal: AbortSignal,
): Promise<void> {
  run.output.say(step, plugins.map((p) => p.config.name).join(", "));
  await Promise.all(plugins.map(async (p) => {
    const result = await p.runtime![step](pluginEnv(run, signal));
    p.report[step] = result;
    run.errors.push(...result.errors);
    run.log.record(result.ok ? "info" : "error", step, {
      plugin: p.config.name,
      ok: result.ok,
      durationMs: result.durationMs,
    });
    const outcome = result.ok ? (result.skipped ? "nothing to do" : "ok") : result.errors[0]?.code;
    run.output.say(step, `${p.config.name}: ${outcome} (${result.durationMs} ms)`);
  }));
  run.output.event({
    event: step === "quiesce" ? "quiesced" : "resumed",
    runId: run.runId,
    plugins: plugins.map((p) => ({ name: p.config.name, ok: p.report[step]?.ok })),
  });
}

/** Every plugin's pre step, in parallel. */
async function quiesce(run: Run): Promise<void> {
  await pauseAt(run, "quiesce");
  if (run.interrupt.signal.aborted) return;
  const ready = run.plugins.filter((p) => p.runtime);
  if (ready.length === 0) return;
  await pluginStep(run, ready, "quiesce", run.interrupt.signal);
  const failed = ready.find((p) => !p.report.quiesce?.ok);
  if (failed && !run.config!.continueBackupOnFailure) {
    run.noSnapshot =
      `plugin ${failed.config.name} failed to quiesce and continueBackupOnFailure is false`;
  }
}

// ── freeze → snapshot → thaw ─────────────────────────────────────────────────

/**
 * Freezes the targets (children first) under the guard, takes the snapshot,
 * and thaws in reverse whatever happened. The log and the timeline are held
 * in memory from just before the first freeze until the thaw is confirmed.
 */
async function freezeSnapshotThaw(run: Run, freezer: Freezer, options: RunOptions): Promise<void> {
  if (run.interrupt.signal.aborted) return;
  if (run.noSnapshot) {
    run.log.record("warning", "no-snapshot", { reason: run.noSnapshot });
    run.output.say("snapshot", `skipped: ${run.noSnapshot}`);
    return;
  }
  const config = run.config!;
  const continueOnFailure = config.continueBackupOnFailure;
  run.freeze = { enabled: config.fsFreezeEnabled, method: freezer.method, mounts: [], frozenMs: 0 };
  let freezeFailed = run.freezeProblems.length > 0;
  for (const p of run.freezeProblems) {
    run.errors.push({ code: p.code, message: withFix(p).message });
  }

  let guard: GuardClient | undefined;
  const frozen: MountReport[] = [];
  let frozenAt = 0;
  const doFreeze = config.fsFreezeEnabled && !freezeFailed && run.targets.length > 0;
  if (doFreeze) {
    const mounts = run.targets.map((t) => t.mountPoint);
    try {
      writeFreezeMarker(config.stateDir, { runId: run.runId, mounts });
      guard = await startGuard({
        op: "arm",
        runId: run.runId,
        mounts,
        maxFrozenMs: config.freeze.maxFrozenSeconds * 1000,
        stateDir: config.stateDir,
      });
      run.freeze.guard = { pid: guard.pid };
    } catch (error) {
      clearFreezeMarker(config.stateDir);
      run.errors.push({
        code: "GuardFailed",
        message: `${(error as Error).message}; nothing was frozen. Fix: see the log.`,
      });
      freezeFailed = true;
    }
  }
  try {
    if (guard) {
      run.output.say("freeze", run.targets.map((t) => t.mountPoint).join(", "));
      // From here until the thaw is confirmed, nothing is written to any filesystem.
      run.log.hold();
      run.output.hold();
      frozenAt = performance.now();
      for (const target of run.targets) {
        const op = freezer.freeze(target.mountPoint);
        const report: MountReport = {
          mountPoint: target.mountPoint,
          fsType: target.fsType,
          device: target.device,
          frozen: op.ok,
          freezeMs: round(op.ms),
        };
        run.freeze.mounts.push(report);
        run.log.record(op.ok ? "info" : "error", "freeze", {
          mount: target.mountPoint,
          ok: op.ok,
          ms: report.freezeMs,
          error: op.error,
        });
        if (!op.ok) {
          report.error = op.error;
          run.errors.push({
            code: "FreezeFailed",
            message:
              `could not freeze ${target.mountPoint} (${target.fsType} on ${target.source}): ${op.error}. Everything frozen before it was thawed. Fix: exclude it (freeze.exclude) or resolve the error.`,
          });
          freezeFailed = true;
          break;
        }
        frozen.push(report);
        if (guard.expired()) break;
      }
    }
    if (frozen.length > 0) await pauseAt(run, "frozen");
    // A freeze that failed: thaw now, then a crash-consistent snapshot or none.
    if (freezeFailed && frozen.length > 0) thawAll(run, freezer, frozen, frozenAt);
    const snapshotAllowed = !run.interrupt.signal.aborted && (!freezeFailed || continueOnFailure);
    if (snapshotAllowed) {
      const mounts = frozen.filter((m) => !m.thawed).map((m) => m.mountPoint);
      if (options.json && run.method!.kind !== "external" && mounts.length > 0) {
        run.output.event({ event: "frozen", runId: run.runId, mounts });
      }
      run.output.say(
        "snapshot",
        run.method!.kind === "command"
          ? run.method!.command.join(" ")
          : "waiting for the caller (external)",
      );
      run.snapshot = await takeSnapshot(run.method!, {
        runId: run.runId,
        mounts,
        signal: run.interrupt.signal,
        log: (level, event, fields) => run.log.record(level, event, fields),
        announce: (event) => run.output.handshake(event),
        stdin: options.stdin,
      });
      if (run.snapshot.error) run.errors.push(run.snapshot.error);
      if (run.snapshot.taken) {
        run.output.event({
          event: "snapshot-taken",
          runId: run.runId,
          durationMs: run.snapshot.durationMs,
        });
      }
    } else if (freezeFailed && !continueOnFailure) {
      run.errors.push({
        code: "FreezeFailed",
        message: "the freeze failed and continueBackupOnFailure is false: no snapshot was taken.",
      });
    }
  } finally {
    // Thaw: always, in reverse, each confirmed.
    if (frozen.length > 0) await pauseAt(run, "thaw");
    thawAll(run, freezer, frozen, frozenAt);
    if (guard) {
      const guardDied = guard.died();
      const leftovers = await guard.release(frozen.map((m) => m.mountPoint));
      if (guardDied) {
        run.warnings.push({
          code: "GuardFailed",
          message:
            `the freeze guard (pid ${guard.pid}) died during the freeze; vmsnap thawed and confirmed every mount itself. Fix: find out what killed it (dmesg, the OOM killer).`,
        });
      }
      const steppedIn = guard.expired();
      if (steppedIn) {
        run.freeze.guard!.steppedIn = steppedIn;
        run.errors.push({
          code: "FreezeTimeout",
          message:
            `the filesystems were still frozen after freeze.maxFrozenSeconds (${config.freeze.maxFrozenSeconds} s); the guard thawed ${
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
      clearFreezeMarker(config.stateDir);
    }
    run.log.release();
    run.output.release();
    if (guard) {
      run.output.say("thaw", `${frozen.length} filesystem(s), frozen ${run.freeze.frozenMs} ms`);
      run.output.event({
        event: "thawed",
        runId: run.runId,
        mounts: frozen.map((m) => m.mountPoint),
        frozenMs: run.freeze.frozenMs,
      });
    }
  }
}

const round = (ms: number) => Math.round(ms * 1000) / 1000;

/** Thaws frozen mounts in reverse order, confirming each. */
function thawAll(run: Run, freezer: Freezer, frozen: MountReport[], frozenAt: number): void {
  const pending = frozen.filter((m) => m.thawed === undefined);
  if (pending.length === 0) return;
  for (const mount of [...pending].reverse()) {
    const result = thawAndConfirm(freezer, mount.mountPoint);
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
  run.freeze.frozenMs = Math.round(performance.now() - frozenAt);
}

// ── resume ───────────────────────────────────────────────────────────────────

/** The post step of every plugin whose pre step was attempted, in parallel. */
async function resume(run: Run): Promise<void> {
  const attempted = run.plugins.filter((p) => p.report.quiesce && !p.report.resume);
  if (attempted.length === 0) return;
  await pauseAt(run, "resume");
  // Resume is not stopped by a signal: the applications must come back.
  await pluginStep(run, attempted, "resume", new AbortController().signal);
}

// ── report ───────────────────────────────────────────────────────────────────

/** Builds the result, logs it, prints it, and releases the lock. */
function report(run: Run): RunResult {
  const config = run.config;
  const plugins = run.plugins.map((p) => p.report);
  const freezeRequested = config?.fsFreezeEnabled ?? false;
  const freezeHeld = run.freeze.mounts.length > 0 &&
    run.freeze.mounts.every((m) => m.frozen && m.thawed) &&
    run.freeze.mounts.length === run.targets.length &&
    !run.freeze.guard?.steppedIn;
  const snapshotTaken = run.snapshot?.taken ?? false;
  const facts = {
    snapshotTaken,
    plugins: plugins.length,
    // Held to the end: quiesced, and no lock lost before resume.
    pluginsHeld: plugins.length > 0 &&
      plugins.every((p) =>
        p.quiesce?.ok && !p.resume?.errors.some((e) => e.code === "PluginLockLost")
      ),
    freezeRequested,
    freezeHeld,
  };
  const requested = requestedConsistency(facts);
  let consistency = achievedConsistency(facts);
  // The guard stepped in: the snapshot may have caught filesystems mid-write.
  if (run.freeze.guard?.steppedIn && consistency !== "none") consistency = "crash";
  const exitCode = exitCodeFor(requested, consistency);
  const result: RunResult = {
    event: "result",
    runId: run.runId,
    status: exitCode === 2
      ? "failed"
      : exitCode === 0 && run.errors.length === 0
      ? "success"
      : "degraded",
    consistency,
    requestedConsistency: requested,
    snapshotTaken,
    exitCode,
    errors: run.errors,
    warnings: run.warnings.map(withFix),
    plugins,
    freeze: run.freeze,
    snapshot: run.snapshot,
    ...(run.recovered ? { recovered: run.recovered } : {}),
    log: { file: run.log.file, ...run.log.stats },
    durationMs: Math.round(performance.now() - run.started),
  };
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
  run.output.event(result as unknown as Record<string, unknown>);
  const verdict = `vmsnap run ${run.runId}: ${result.status}, ${consistency}-consistent${
    snapshotTaken ? "" : " (no snapshot)"
  }, exit ${exitCode}, ${result.durationMs} ms`;
  const lines = result.errors.map((e) =>
    `  [${e.code}]${e.plugin ? ` (${e.plugin})` : ""} ${e.message}`
  );
  run.output.verdict([verdict, ...lines].join("\n"));
  return result;
}
