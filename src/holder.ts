/**
 * The holder: the process that keeps the databases quiesced between a backup
 * agent's freeze hook and its thaw hook. `vmsnap hook freeze` starts it (this
 * binary in the hidden `__holder` mode) in its own session, with stdin,
 * stdout and stderr on /dev/null and no other inherited descriptor, and cwd
 * `/`. It
 *
 * 1. takes the run lock, listens on its socket (src/holder_channel.ts);
 * 2. quiesces every plugin, stage by stage (src/stages.ts);
 * 3. for agents that freeze nothing (gcp, aws, generic), freezes the targets
 *    under the guard, as `run` does;
 * 4. tells the waiting freeze hook, and from then on writes nothing to disk
 *    (the agent freezes next, or the holder did);
 * 5. ends the hold on the thaw/post/freezeFail hook, at `hook.maxHoldSeconds`,
 *    on SIGTERM, or when the freeze hook went away before it was told:
 *    thaws what it froze, resumes in reverse stage order, writes the result
 *    (the same JSON as `run`'s, plus `hook`) to the log and to
 *    `last-result.json`, answers the thaw hook, and exits.
 *
 * @module
 */
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import process from "node:process";
import { type AgentName, AGENTS, type HookEvent } from "./agents.ts";
import { type Config, loadConfig, type LogLevel } from "./config.ts";
import { achievedConsistency, exitCodeFor, requestedConsistency } from "./consistency.ts";
import { type Code, type Problem, VmsnapError, withFix } from "./errors.ts";
import { EventLog } from "./event_log.ts";
import { createFreezer, type Freezer, thawAndConfirm } from "./freeze.ts";
import { type FreezeTarget, planFreeze } from "./freeze_targets.ts";
import { type GuardClient, startGuard } from "./guard.ts";
import {
  type HolderConnection,
  holderPaths,
  type HolderServer,
  listenForHooks,
  liveHolder,
} from "./holder_channel.ts";
import { writeLastResult } from "./last_result.ts";
import { writeMetrics } from "./metrics.ts";
import { acquireRunLock, type RunLock } from "./lock.ts";
import { readMounts } from "./mountinfo.ts";
import { ensureDirectory } from "./permissions.ts";
import { clearFreezeMarker, writeFreezeMarker } from "./recover.ts";
import type { MountReport, PluginReport, RunResult } from "./sequence.ts";
import { runStaged } from "./stages.ts";
import type { PluginConfig, PluginEnv, PluginRuntime, RunError } from "../plugins/plugin.ts";
import { PLUGINS } from "../plugins/registry.ts";

/** What the freeze hook hands the holder (in `VMSNAP_HOLDER`). */
export interface HolderSpec {
  runId: string;
  configPath: string;
  agent: AgentName;
  logLevel?: LogLevel;
  /** The freeze hook must attach within this long, or the holder gives up. */
  attachTimeoutMs: number;
  /** The agent's own arguments (VMware's script argument, GCP's disk list), for the log. */
  agentArgs: string[];
}

/** How a hold ended. */
export type HoldEnd =
  | HookEvent
  | "deadline"
  | "hook-gone"
  | "abort"
  | "signal"
  | "quiesce-failed"
  | "freeze-failed";

/** The hook part of the result. */
export interface HookInfo {
  agent: AgentName;
  /** Who froze the filesystems: the agent, vmsnap's holder, or nobody (fsFreezeEnabled false). */
  freezeBy: "agent" | "vmsnap" | "nobody";
  holderPid: number;
  /** How the thaw hook's peer was checked. */
  peerCheck: string;
  maxHoldSeconds: number;
  agentArgs: string[];
  endedBy: HoldEnd;
  /** Milliseconds from the holder's start to "quiesced", and to the end of the hold. */
  quiescedAfterMs?: number;
  heldMs?: number;
}

/** The result of a hook-mode run: `run`'s result plus how the hold went. */
export type HookResult = RunResult & { mode: "hook"; hook: HookInfo };

/** What the holder tells the waiting freeze hook once everything is quiesced (and frozen). */
export interface QuiescedAnswer {
  event: "quiesced";
  runId: string;
  holderPid: number;
  freezeBy: HookInfo["freezeBy"];
  plugins: { name: string; stage: number; ok: boolean; durationMs: number; code?: string }[];
  frozen: string[];
  errors: RunError[];
  maxHoldSeconds: number;
}

interface Plugin {
  config: PluginConfig;
  report: PluginReport;
  runtime?: PluginRuntime;
}

/** The state of one hold. */
class Hold {
  readonly started = performance.now();
  readonly errors: RunError[] = [];
  readonly warnings: Problem[] = [];
  readonly plugins: Plugin[] = [];
  targets: FreezeTarget[] = [];
  readonly freeze: RunResult["freeze"] = { enabled: false, mounts: [], frozenMs: 0 };
  frozen: MountReport[] = [];
  frozenAt = 0;
  guard?: GuardClient;
  freezer?: Freezer;
  /** Aborts a quiesce in progress (the hook went away, abort, signal). */
  readonly interrupt = new AbortController();
  end?: { by: HoldEnd; connection?: HolderConnection };
  #ended!: () => void;
  readonly ended = new Promise<void>((resolve) => (this.#ended = resolve));
  quiescedAfterMs?: number;

  constructor(
    readonly spec: HolderSpec,
    readonly config: Config,
    readonly log: EventLog,
  ) {}

  /** Ends the hold (the first reason wins; later thaw requests are answered with the result). */
  finish(by: HoldEnd, connection?: HolderConnection): void {
    if (this.end) {
      if (connection) this.waiting.push(connection);
      return;
    }
    this.end = { by, connection };
    this.interrupt.abort();
    this.#ended();
  }

  /** Thaw hooks that came after the end was decided. */
  readonly waiting: HolderConnection[] = [];

  env(signal: AbortSignal): PluginEnv {
    return {
      runId: this.spec.runId,
      stateDir: this.config.stateDir,
      configFile: this.config.file,
      signal,
      log: (level, event, fields) => this.log.record(level, event, fields),
    };
  }
}

const round = (ms: number) => Math.round(ms * 1000) / 1000;

/** Leaves a reason for the freeze hook when the holder cannot even start listening. */
function failStart(dir: string, runId: string, code: Code, message: string): number {
  try {
    writeFileSync(join(dir, `failed-${runId}.json`), JSON.stringify({ code, message }), {
      mode: 0o600,
    });
  } catch {
    // The hook reports the exit code alone.
  }
  return 2;
}

/**
 * The holder's main: returns the exit code. Reads its orders from
 * `VMSNAP_HOLDER`.
 *
 * @example
 * ```ts
 * // Started by `vmsnap hook freeze` as `vmsnap __holder`; not for people.
 * ```
 */
export async function holderMain(): Promise<number> {
  const spec = JSON.parse(process.env.VMSNAP_HOLDER ?? "{}") as HolderSpec;
  const config = loadConfig(spec.configPath).config;
  const paths = holderPaths(config.stateDir);
  let lock: RunLock;
  try {
    ensureDirectory(config.stateDir, "stateDir");
    ensureDirectory(paths.dir, "hook directory");
    lock = acquireRunLock(config.stateDir, spec.runId);
  } catch (error) {
    if (!(error instanceof VmsnapError)) throw error;
    const holder = liveHolder(paths);
    return failStart(
      paths.dir,
      spec.runId,
      holder ? "HoldInProgress" : error.code,
      holder
        ? `the holder of run ${holder.runId} (pid ${holder.pid}, for ${holder.agent}, since ${holder.since}) still holds; it was left intact. Fix: send its thaw hook first, or wait for its hook.maxHoldSeconds.`
        : error.message,
    );
  }
  const log = new EventLog({
    runId: spec.runId,
    file: config.log.file,
    level: spec.logLevel ?? config.log.level,
  });
  const hold = new Hold(spec, config, log);
  let attach: HolderConnection | undefined;
  let attached: () => void = () => {};
  const attachedNow = new Promise<void>((resolve) => (attached = resolve));
  let server: HolderServer;
  try {
    server = await listenForHooks(paths, { runId: spec.runId, agent: spec.agent }, (c) => {
      if (c.request.op === "attach" && !attach) {
        attach = c;
        attached();
      } else if (c.request.op === "thaw") {
        hold.finish(c.request.event, c);
      } else if (c.request.op === "abort") {
        hold.finish("abort", c);
      } else {
        c.answer({ event: "error", message: `unexpected request ${JSON.stringify(c.request)}` });
      }
    });
  } catch (error) {
    lock.release();
    return failStart(paths.dir, spec.runId, "HolderFailed", (error as Error).message);
  }
  log.record("info", "hold-start", {
    agent: spec.agent,
    pid: process.pid,
    config: spec.configPath,
    agentArgs: spec.agentArgs,
    peerCheck: server.peerCheck(),
  });
  const onSignal = (signal: string) => {
    hold.errors.push({
      code: "Interrupted",
      message: `the holder received ${signal}: it thawed what it froze and resumed every plugin.`,
    });
    hold.finish("signal");
  };
  const signals = ["SIGINT", "SIGTERM", "SIGHUP"] as const;
  for (const s of signals) process.on(s, onSignal);
  const deadline = setTimeout(() => hold.finish("deadline"), config.hook.maxHoldSeconds * 1000);

  // The freeze hook must attach in time, and stay until it is told.
  const attachTimer = setTimeout(() => {
    if (!attach) hold.finish("hook-gone");
  }, spec.attachTimeoutMs);
  attachedNow.then(() => {
    clearTimeout(attachTimer);
    attach!.closed.then(() => {
      if (hold.quiescedAfterMs === undefined) hold.finish("hook-gone");
    });
  });

  try {
    await quiesce(hold);
    if (!hold.end) await freezeTargets(hold);
    if (!hold.end) {
      await Promise.race([attachedNow, hold.ended]);
    }
    if (!hold.end && attach && !attach.isClosed()) {
      hold.quiescedAfterMs = Math.round(performance.now() - hold.started);
      const answer: QuiescedAnswer = {
        event: "quiesced",
        runId: spec.runId,
        holderPid: process.pid,
        freezeBy: freezeBy(hold),
        plugins: hold.plugins.map((p) => ({
          name: p.config.name,
          stage: p.config.stage ?? 0,
          ok: p.report.quiesce?.ok ?? false,
          durationMs: p.report.quiesce?.durationMs ?? 0,
          ...(p.report.quiesce?.ok ? {} : { code: p.report.quiesce?.errors[0]?.code }),
        })),
        frozen: hold.frozen.map((m) => m.mountPoint),
        errors: hold.errors,
        maxHoldSeconds: config.hook.maxHoldSeconds,
      };
      log.record("info", "quiesced", { ...answer, event: undefined });
      // From here on the filesystems are (or are about to be) frozen: nothing goes to disk.
      log.hold();
      attach.answer(answer as unknown as Record<string, unknown>);
      await hold.ended;
    } else if (!hold.end) {
      hold.finish("hook-gone");
    }
  } catch (error) {
    hold.errors.push({
      code: "InternalError",
      message: `internal error in the holder: ${
        (error as Error).stack ?? error
      }. Fix: report this with the log; filesystems were thawed and plugins resumed.`,
    });
    hold.finish("abort");
  } finally {
    clearTimeout(deadline);
    clearTimeout(attachTimer);
    for (const s of signals) process.off(s, onSignal);
  }
  await thawTargets(hold);
  log.release();
  await resume(hold);
  const result = report(hold, server.peerCheck());
  const writeError = writeLastResult(config.stateDir, result);
  if (writeError) log.record("error", "last-result", { error: writeError });
  const metrics = writeMetrics(config.metrics.textfile, result);
  if (metrics.error) log.record("debug", "metrics", { error: metrics.error });
  log.close();
  const answer = { event: "result", result };
  hold.end?.connection?.answer(answer);
  // A freeze hook still waiting (quiesce failed, or it was aborted) gets the result too.
  if (attach && hold.quiescedAfterMs === undefined) attach.answer(answer);
  for (const c of hold.waiting) c.answer(answer);
  server.close();
  lock.release();
  // Let the answers drain before the process goes.
  await new Promise((resolve) => setTimeout(resolve, 50));
  return 0;
}

function freezeBy(hold: Hold): HookInfo["freezeBy"] {
  if (AGENTS[hold.spec.agent].freezes) return "agent";
  return hold.config.fsFreezeEnabled ? "vmsnap" : "nobody";
}

/** Checks and creates every plugin, then quiesces them stage by stage. */
async function quiesce(hold: Hold): Promise<void> {
  for (const plugin of hold.config.plugins) {
    const definition = PLUGINS.get(plugin.type)!;
    const problems = (await definition.check(plugin, { locate: () => undefined })).map(withFix);
    hold.plugins.push({
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
      hold.errors.push({ code: p.code, message: p.message, plugin: plugin.name });
    }
  }
  const continueOnFailure = hold.config.continueBackupOnFailure;
  if (hold.plugins.some((p) => !p.runtime) && !continueOnFailure) {
    return hold.finish("quiesce-failed");
  }
  let failed = false;
  await runStaged({
    items: hold.plugins.filter((p) => p.runtime),
    stageOf: (p) => p.config.stage,
    order: "ascending",
    step: (group) =>
      Promise.all(group.map(async (p) => {
        const result = await p.runtime!.quiesce(hold.env(hold.interrupt.signal));
        p.report.quiesce = result;
        hold.errors.push(...result.errors);
        if (!result.ok) failed = true;
        hold.log.record(result.ok ? "info" : "error", "quiesce", {
          plugin: p.config.name,
          stage: p.config.stage ?? 0,
          ok: result.ok,
          durationMs: result.durationMs,
        });
      })).then(() => {}),
    goOn: () => !hold.end && (!failed || continueOnFailure),
  });
  if (failed && !continueOnFailure && !hold.end) hold.finish("quiesce-failed");
}

/** For agents that freeze nothing: freeze the targets under the guard, children first. */
async function freezeTargets(hold: Hold): Promise<void> {
  const { config } = hold;
  if (AGENTS[hold.spec.agent].freezes || !config.fsFreezeEnabled) return;
  hold.freeze.enabled = true;
  let problems: Problem[];
  try {
    const plan = planFreeze(readMounts(), config.freeze);
    hold.targets = plan.targets;
    problems = plan.problems;
    hold.warnings.push(...plan.warnings);
  } catch (error) {
    problems = [{
      code: "MountinfoUnreadable",
      message: `cannot read /proc/self/mountinfo: ${(error as Error).message}`,
    }];
  }
  for (const p of problems) hold.errors.push({ code: p.code, message: withFix(p).message });
  if (problems.length > 0 || hold.targets.length === 0) {
    if (problems.length > 0 && !config.continueBackupOnFailure) hold.finish("freeze-failed");
    return;
  }
  const mounts = hold.targets.map((t) => t.mountPoint);
  const freezer = hold.freezer = await createFreezer();
  hold.freeze.method = freezer.method;
  try {
    writeFreezeMarker(config.stateDir, { runId: hold.spec.runId, mounts });
    hold.guard = await startGuard({
      op: "arm",
      runId: hold.spec.runId,
      mounts,
      maxFrozenMs: config.freeze.maxFrozenSeconds * 1000,
      stateDir: config.stateDir,
    });
    hold.freeze.guard = { pid: hold.guard.pid };
  } catch (error) {
    clearFreezeMarker(config.stateDir);
    hold.errors.push({
      code: "GuardFailed",
      message: `${(error as Error).message}; nothing was frozen. Fix: see the log.`,
    });
    if (!config.continueBackupOnFailure) hold.finish("freeze-failed");
    return;
  }
  // From the first freeze until the thaw is confirmed, nothing is written to any filesystem.
  hold.log.hold();
  hold.frozenAt = performance.now();
  for (const target of hold.targets) {
    const op = freezer.freeze(target.mountPoint);
    const mount: MountReport = {
      mountPoint: target.mountPoint,
      fsType: target.fsType,
      device: target.device,
      frozen: op.ok,
      freezeMs: round(op.ms),
    };
    hold.freeze.mounts.push(mount);
    hold.log.record(op.ok ? "info" : "error", "freeze", {
      mount: target.mountPoint,
      ok: op.ok,
      ms: mount.freezeMs,
      error: op.error,
    });
    if (!op.ok) {
      mount.error = op.error;
      hold.errors.push({
        code: "FreezeFailed",
        message:
          `could not freeze ${target.mountPoint} (${target.fsType} on ${target.source}): ${op.error}. Everything frozen before it was thawed. Fix: exclude it (freeze.exclude) or resolve the error.`,
      });
      await thawTargets(hold);
      if (!config.continueBackupOnFailure) hold.finish("freeze-failed");
      return;
    }
    hold.frozen.push(mount);
  }
}

/** Thaws what the holder froze (reverse order, each confirmed) and lets the guard go. */
async function thawTargets(hold: Hold): Promise<void> {
  const { guard, freezer } = hold;
  if (!guard || !freezer) return;
  hold.guard = undefined;
  for (const mount of [...hold.frozen].reverse().filter((m) => m.thawed === undefined)) {
    const result = thawAndConfirm(freezer, mount.mountPoint);
    mount.thawed = result.confirmed;
    mount.thawMs = round(result.ms);
    hold.log.record(result.confirmed ? "info" : "error", "thaw", {
      mount: mount.mountPoint,
      confirmed: result.confirmed,
      ms: mount.thawMs,
      error: result.error,
    });
    if (!result.confirmed) {
      mount.error = result.error;
      hold.errors.push({
        code: "ThawFailed",
        message:
          `could not confirm that ${mount.mountPoint} is thawed: ${result.error}. Fix: run fsfreeze --unfreeze ${mount.mountPoint} now.`,
      });
    }
  }
  hold.freeze.frozenMs = Math.round(performance.now() - hold.frozenAt);
  const guardDied = guard.died();
  const leftovers = await guard.release(hold.frozen.map((m) => m.mountPoint));
  if (guardDied) {
    hold.warnings.push({
      code: "GuardFailed",
      message:
        `the freeze guard (pid ${guard.pid}) died during the hold; the holder thawed and confirmed every mount itself. Fix: find out what killed it.`,
    });
  }
  const steppedIn = guard.expired();
  if (steppedIn) {
    hold.freeze.guard!.steppedIn = steppedIn;
    hold.errors.push({
      code: "FreezeTimeout",
      message:
        `the filesystems were still frozen after freeze.maxFrozenSeconds (${hold.config.freeze.maxFrozenSeconds} s); the guard thawed ${
          steppedIn.thawed.map((t) => t.mount).join(", ")
        } after ${steppedIn.afterMs} ms. A snapshot taken after that is not consistent. Fix: send the post hook sooner or raise freeze.maxFrozenSeconds.`,
    });
  }
  for (const mount of leftovers) {
    hold.errors.push({
      code: "ThawFailed",
      message: `${mount} was still frozen after the holder's thaw; the guard thawed it.`,
    });
  }
  clearFreezeMarker(hold.config.stateDir);
}

/** Resumes every plugin whose quiesce was attempted, stages in descending order. */
async function resume(hold: Hold): Promise<void> {
  const attempted = hold.plugins.filter((p) => p.report.quiesce && !p.report.resume);
  // Resume is not stopped by anything: the applications must come back.
  const never = new AbortController().signal;
  await runStaged({
    items: attempted,
    stageOf: (p) => p.config.stage,
    order: "descending",
    step: (group) =>
      Promise.all(group.map(async (p) => {
        const result = await p.runtime!.resume(hold.env(never));
        p.report.resume = result;
        hold.errors.push(...result.errors);
        hold.log.record(result.ok ? "info" : "error", "resume", {
          plugin: p.config.name,
          ok: result.ok,
          durationMs: result.durationMs,
        });
      })).then(() => {}),
  });
}

/** Why the hold ended, as an error for the result (none for a normal thaw). */
function endError(hold: Hold): RunError | undefined {
  const by = hold.end?.by;
  const seconds = hold.config.hook.maxHoldSeconds;
  switch (by) {
    case "deadline":
      return {
        code: "HoldTimeout",
        message:
          `no thaw/post hook came within hook.maxHoldSeconds (${seconds} s): the holder resumed every plugin and ended the hold. A snapshot taken after that is not application-consistent. Fix: find out why the agent's thaw came late (or never), or raise hook.maxHoldSeconds.`,
      };
    case "hook-gone":
      return {
        code: "HookAborted",
        message:
          "the freeze hook went away (killed by its agent, or timed out) before it was told that everything was quiesced: the holder resumed every plugin. Fix: check the agent's hook timeout and its log.",
      };
    case "abort":
      return {
        code: "HookTimeout",
        message:
          "the freeze hook gave up waiting (its --timeout) and told the holder to resume everything. Fix: make quiesce faster or raise --timeout within the agent's own limit.",
      };
    case "freezeFail":
      return {
        code: "SnapshotFailed",
        message:
          "the agent reported freezeFail: its own freeze or snapshot failed after the freeze hook; every plugin was resumed.",
      };
    default:
      return undefined;
  }
}

/** Builds the result: `run`'s result, plus how the hold went. */
function report(hold: Hold, peerCheck: string): HookResult {
  const { config, spec } = hold;
  const by = hold.end?.by ?? "abort";
  const error = endError(hold);
  if (error) hold.errors.push(error);
  const plugins = hold.plugins.map((p) => p.report);
  const freezeRequested = freezeBy(hold) === "vmsnap";
  const freezeHeld = hold.freeze.mounts.length > 0 &&
    hold.freeze.mounts.every((m) => m.frozen && m.thawed) &&
    hold.freeze.mounts.length === hold.targets.length &&
    !hold.freeze.guard?.steppedIn;
  const snapshotTaken = by === "thaw";
  const facts = {
    snapshotTaken,
    plugins: plugins.length,
    pluginsHeld: plugins.length > 0 &&
      plugins.every((p) =>
        p.quiesce?.ok && !p.resume?.errors.some((e) => e.code === "PluginLockLost")
      ),
    freezeRequested,
    freezeHeld,
  };
  const requested = requestedConsistency(facts);
  let consistency = achievedConsistency(facts);
  if (hold.freeze.guard?.steppedIn && consistency !== "none") consistency = "crash";
  const exitCode = exitCodeFor(requested, consistency);
  const result: HookResult = {
    event: "result",
    runId: spec.runId,
    status: exitCode === 2
      ? "failed"
      : exitCode === 0 && hold.errors.length === 0
      ? "success"
      : "degraded",
    consistency,
    requestedConsistency: requested,
    snapshotTaken,
    exitCode,
    errors: hold.errors,
    warnings: hold.warnings.map(withFix),
    plugins,
    freeze: hold.freeze,
    snapshot: null,
    log: { file: hold.log.file, ...hold.log.stats },
    durationMs: Math.round(performance.now() - hold.started),
    mode: "hook",
    hook: {
      agent: spec.agent,
      freezeBy: freezeBy(hold),
      holderPid: process.pid,
      peerCheck,
      maxHoldSeconds: config.hook.maxHoldSeconds,
      agentArgs: spec.agentArgs,
      endedBy: by,
      ...(hold.quiescedAfterMs !== undefined ? { quiescedAfterMs: hold.quiescedAfterMs } : {}),
      heldMs: Math.round(performance.now() - hold.started),
    },
  };
  hold.log.record(exitCode === 0 ? "info" : exitCode === 1 ? "warning" : "error", "result", {
    ...result,
    event: undefined,
    log: undefined,
  });
  return result;
}
