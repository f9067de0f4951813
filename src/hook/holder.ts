/**
 * The holder: the process that keeps the databases quiesced between a backup
 * agent's freeze hook and its thaw hook. `vmsnap hook freeze` starts it (this
 * binary in the hidden `__holder` mode) in its own session, with stdin,
 * stdout and stderr on /dev/null and no other inherited descriptor, and cwd
 * `/`. It
 *
 * 1. takes the run lock, listens on its socket (src/hook/channel.ts);
 * 2. once the freeze hook attached (never for a hook already gone), quiesces
 *    every plugin, stage by stage (src/run/stages.ts);
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
import { mkdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import process from "node:process";
import { type AgentName, AGENTS, type HookEvent } from "./agents.ts";
import type { LogLevel } from "../config/config.ts";
import type { Code } from "../errors.ts";
import {
  type HolderConnection,
  holderPaths,
  type HolderServer,
  listenForHooks,
  liveHolder,
} from "./channel.ts";
import type { RunResult } from "../protocol.ts";
import { PRODUCTION_DEPS, type RunDeps } from "../run/deps.ts";
import {
  type FreezeBy,
  newRun,
  type PreparedRun,
  type RunState,
  RunStopped,
} from "../run/state.ts";
import { prepareRun } from "../run/prepare.ts";
import { quiesceAll, resumeAll } from "../run/plugins.ts";
import { freezeTargets, thawTargets } from "../run/freeze_step.ts";
import { finishRun } from "../run/result.ts";
import { recordRun } from "../state/record.ts";
import type { RunError } from "../protocol.ts";

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
  | "freeze-failed"
  | "internal-error";

/** The hook part of the result. */
export interface HookInfo {
  agent: AgentName;
  /** Who froze the filesystems: the agent, vmsnap's holder, or nobody (fsFreezeEnabled false). */
  freezeBy: FreezeBy;
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

/** How one hold ends: the first reason wins; thaw hooks that come later get the result too. */
class HoldEnding {
  by?: HoldEnd;
  connection?: HolderConnection;
  readonly waiting: HolderConnection[] = [];
  #resolve!: () => void;
  readonly ended = new Promise<void>((resolve) => (this.#resolve = resolve));

  constructor(private readonly interrupt: AbortController) {}

  finish(by: HoldEnd, connection?: HolderConnection): void {
    if (this.by) {
      if (connection) this.waiting.push(connection);
      return;
    }
    this.by = by;
    this.connection = connection;
    // A quiesce in progress stops (its plugins are resumed); nothing else is aborted.
    this.interrupt.abort();
    this.#resolve();
  }
}

/** The freeze hook's connection, once it attached (it attaches once). */
class Attachment {
  connection?: HolderConnection;
  #resolve!: () => void;
  readonly attached = new Promise<void>((resolve) => (this.#resolve = resolve));

  accept(connection: HolderConnection): void {
    this.connection = connection;
    this.#resolve();
  }
}

/** One hold, from the moment the holder listens. */
interface Hold {
  run: PreparedRun;
  spec: HolderSpec;
  server: HolderServer;
  ending: HoldEnding;
  attachment: Attachment;
  /** Milliseconds from the holder's start to "quiesced", once the freeze hook was told. */
  quiescedAfterMs?: number;
}

/** Leaves a reason for the freeze hook when the holder stops before it listens. */
function failStart(dir: string, runId: string, code: Code, message: string): number {
  try {
    mkdirSync(dir, { recursive: true, mode: 0o700 });
    writeFileSync(join(dir, `failed-${runId}.json`), JSON.stringify({ code, message }), {
      mode: 0o600,
    });
  } catch {
    // The hook reports the exit code alone.
  }
  return 2;
}

/** The live holder, if one shows up within a second or two (it may be starting). */
async function holderSoon(paths: ReturnType<typeof holderPaths>) {
  for (let waited = 0; waited < 2000; waited += 20) {
    const holder = liveHolder(paths);
    if (holder) return holder;
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
  return liveHolder(paths);
}

/** Nowhere: the holder's stdout and stderr are /dev/null; what it says goes to the log. */
const SILENT = { stdout: () => {}, stderr: () => {} };

/** The environment variable that carries the freeze hook's {@linkcode HolderSpec}. */
export const HOLDER_SPEC_VARIABLE = "VMSNAP_HOLDER";

/**
 * The holder's orders, as the freeze hook left them in its environment.
 *
 * @example
 * ```ts
 * import { holderSpecFromEnvironment } from "./holder.ts";
 * const spec = holderSpecFromEnvironment();
 * ```
 */
export function holderSpecFromEnvironment(
  env: Record<string, string | undefined> = process.env,
): HolderSpec {
  return JSON.parse(env[HOLDER_SPEC_VARIABLE] ?? "{}") as HolderSpec;
}

/**
 * The holder's main: returns the exit code. Its orders come from the freeze
 * hook (`VMSNAP_HOLDER`), its dependencies are the run's. The hold is `run`'s
 * steps (src/run/) with the snapshot left to the agent: prepare, quiesce
 * (stage by stage), freeze for agents that do not, then on the end of the
 * hold thaw, resume and the result.
 *
 * @example
 * ```ts
 * // Started by `vmsnap hook freeze` as `vmsnap __holder`; not for people.
 * import { holderMain } from "./holder.ts";
 * import { PRODUCTION_DEPS } from "../run/deps.ts";
 * process.exitCode = await holderMain(PRODUCTION_DEPS);
 * ```
 */
export async function holderMain(
  deps: RunDeps = PRODUCTION_DEPS,
  spec: HolderSpec = holderSpecFromEnvironment(),
): Promise<number> {
  const run = newRun({
    json: false,
    streams: SILENT,
    logLevel: spec.logLevel,
    runId: spec.runId,
    deps,
  });
  const prepared = await prepareHold(run, spec);
  if (typeof prepared === "number") return prepared;
  const hold = await listen(prepared, spec);
  if (typeof hold === "number") return hold;
  await holdUntilEnd(hold);
  return await endHold(hold);
}

/**
 * `run`'s preparation, with who freezes decided first; when it stops, the
 * reason is left for the freeze hook and the exit code returned.
 */
async function prepareHold(run: RunState, spec: HolderSpec): Promise<PreparedRun | number> {
  try {
    return await prepareRun(run, {
      configPath: spec.configPath,
      logLevel: spec.logLevel,
      // The snapshot is the agent's: "external" only satisfies the method check.
      external: true,
      // Where the agent freezes, the holder must not (a second FIFREEZE fails or deadlocks).
      agentFreezes: AGENTS[spec.agent].freezes,
    });
  } catch (error) {
    if (!(error instanceof RunStopped)) throw error;
    const result = finishRun(run);
    const stateDir = run.setup.config?.stateDir;
    if (!stateDir) return 2;
    const paths = holderPaths(stateDir);
    const first = result.errors[0] ?? { code: "HolderFailed", message: "the holder stopped" };
    // A holder that won the lock a moment ago writes holder.json once it listens: wait for it.
    const holder = first.code === "AnotherRunInProgress" ? await holderSoon(paths) : undefined;
    return failStart(
      paths.dir,
      spec.runId,
      holder ? "HoldInProgress" : first.code,
      holder
        ? `the holder of run ${holder.runId} (pid ${holder.pid}, for ${holder.agent}, since ${holder.since}) still holds; it was left intact. Fix: send its thaw hook first, or wait for its hook.maxHoldSeconds.`
        : first.message,
    );
  }
}

/** Listens for the hooks on the holder's socket; when it cannot, the exit code. */
async function listen(run: PreparedRun, spec: HolderSpec): Promise<Hold | number> {
  const paths = holderPaths(run.setup.config.stateDir);
  const ending = new HoldEnding(run.interrupt);
  const attachment = new Attachment();
  try {
    const server = await listenForHooks(paths, { runId: spec.runId, agent: spec.agent }, (c) => {
      if (c.request.op === "attach" && !attachment.connection) {
        attachment.accept(c);
      } else if (c.request.op === "thaw") {
        ending.finish(c.request.event, c);
      } else if (c.request.op === "abort") {
        ending.finish("abort", c);
      } else {
        c.answer({ event: "error", message: `unexpected request ${JSON.stringify(c.request)}` });
      }
    });
    return { run, spec, server, ending, attachment };
  } catch (error) {
    const message = `the holder could not listen on ${paths.socket}: ${(error as Error).message}`;
    run.fail({ code: "HolderFailed", message });
    finishRun(run);
    return failStart(paths.dir, spec.runId, "HolderFailed", message);
  }
}

/**
 * The hold itself: once the freeze hook attached, quiesce (and freeze, for
 * agents that do not), tell the hook, and wait for the end (a thaw hook, the
 * deadline, a signal, the hook gone).
 */
async function holdUntilEnd(hold: Hold): Promise<void> {
  const { run, spec, server } = hold;
  run.log.record("info", "hold-start", {
    agent: spec.agent,
    pid: process.pid,
    config: spec.configPath,
    agentArgs: spec.agentArgs,
    freezeBy: run.setup.freezeBy,
    peerCheck: server.peerCheck(),
  });
  const unwatch = watchHold(hold);
  try {
    await quiesceAndTell(hold);
  } catch (error) {
    run.fail({
      code: "InternalError",
      message: `internal error in the holder: ${
        (error as Error).stack ?? error
      }. Fix: report this with the log; filesystems were thawed and plugins resumed.`,
    });
    hold.ending.finish("internal-error");
  } finally {
    unwatch();
  }
}

const SIGNALS = ["SIGINT", "SIGTERM", "SIGHUP"] as const;

/**
 * What ends a hold besides a thaw hook: a signal, `hook.maxHoldSeconds`, a
 * freeze hook that does not attach in time or goes away before it is told.
 * Returns the function that stops watching.
 */
function watchHold(hold: Hold): () => void {
  const { run, spec, ending, attachment } = hold;
  const onSignal = (signal: string) => {
    run.fail({
      code: "Interrupted",
      message: `the holder received ${signal}: it thawed what it froze and resumed every plugin.`,
    });
    ending.finish("signal");
  };
  for (const s of SIGNALS) process.on(s, onSignal);
  const deadline = setTimeout(
    () => ending.finish("deadline"),
    run.setup.config.hook.maxHoldSeconds * 1000,
  );
  // The freeze hook must attach in time, and stay until it is told.
  const attachTimer = setTimeout(
    () => attachment.connection ?? ending.finish("hook-gone"),
    spec.attachTimeoutMs,
  );
  attachment.attached.then(() => {
    clearTimeout(attachTimer);
    attachment.connection!.closed.then(() => hold.quiescedAfterMs ?? ending.finish("hook-gone"));
  });
  return () => {
    clearTimeout(deadline);
    clearTimeout(attachTimer);
    for (const s of SIGNALS) process.off(s, onSignal);
  };
}

/** Quiesces (and freezes), tells the waiting freeze hook, and waits for the end of the hold. */
async function quiesceAndTell(hold: Hold): Promise<void> {
  const { run, ending, attachment } = hold;
  const { config, freezeBy, session } = run.setup;
  // Nothing is quiesced or frozen for a freeze hook that is gone (killed by its agent while the
  // holder prepared): it attaches as soon as the socket is there, or never.
  await Promise.race([attachment.attached, ending.ended]);
  const quiesced = ending.by ? {} : await quiesceAll(run);
  if (quiesced.noSnapshot) ending.finish("quiesce-failed");
  if (!ending.by && freezeBy === "vmsnap") {
    await freezeTargets(run);
    if (session.failed && !config.continueBackupOnFailure) ending.finish("freeze-failed");
  }
  if (!ending.by) await Promise.race([attachment.attached, ending.ended]);
  const attach = attachment.connection;
  if (!ending.by && attach && !attach.isClosed()) {
    hold.quiescedAfterMs = Math.round(run.deps.now() - run.started);
    const answer = quiescedAnswer(run);
    run.log.record("info", "quiesced", { ...answer, event: undefined });
    // From here on the filesystems are (or are about to be) frozen: nothing goes to disk.
    session.hold();
    attach.answer(answer as unknown as Record<string, unknown>);
    await ending.ended;
  } else if (!ending.by) {
    ending.finish("hook-gone");
  }
}

/**
 * The end of the hold: thaw what the holder froze (and write what the log
 * held), resume (stages descending), record the result, and answer every
 * hook still waiting. A signal now (the agent's service stopping) must not cut
 * the thaw, the resume (a MongoDB fsyncLock outlives its connection) or the
 * result short: it is said, then finished.
 */
async function endHold(hold: Hold): Promise<number> {
  const { run } = hold;
  const lateSignal = (signal: string) => {
    run.warn({
      code: "Interrupted",
      message:
        `the holder received ${signal} while it ended the hold: it finished thawing, resuming and recording first.`,
    });
  };
  for (const s of SIGNALS) process.on(s, lateSignal);
  const by = hold.ending.by ?? "abort";
  await thawTargets(run);
  await resumeAll(run);
  const result = holdResult(hold, by);
  // The last result (vmsnap status) and the metrics, as after a run.
  recordRun(result, { configPath: hold.spec.configPath });
  await answerAll(hold, result);
  for (const s of SIGNALS) process.off(s, lateSignal);
  return 0;
}

/** The result of the hold: `run`'s, with the agent's snapshot and freeze, and how the hold went. */
function holdResult(hold: Hold, by: HoldEnd): HookResult {
  const { run, spec, server, quiescedAfterMs } = hold;
  const { config, freezeBy } = run.setup;
  const heldMs = () => Math.round(run.deps.now() - run.started);
  // The snapshot was the agent's: taken when it sent thaw/post.
  const snapshot = {
    kind: "external" as const,
    taken: by === "thaw",
    durationMs: heldMs(),
    answer: by,
  };
  // The agent's freeze is what the config's fsFreezeEnabled asked for; it held if the agent said thaw.
  const agentFreeze = freezeBy === "agent" && config.fsFreezeEnabled
    ? { held: by === "thaw" }
    : undefined;
  const ended = endError(by, config.hook.maxHoldSeconds);
  if (ended) run.fail(ended);
  return {
    ...finishRun(run, { snapshot, agentFreeze }),
    mode: "hook",
    hook: {
      agent: spec.agent,
      freezeBy,
      holderPid: process.pid,
      peerCheck: server.peerCheck(),
      maxHoldSeconds: config.hook.maxHoldSeconds,
      agentArgs: spec.agentArgs,
      endedBy: by,
      ...(quiescedAfterMs !== undefined ? { quiescedAfterMs } : {}),
      heldMs: heldMs(),
    },
  };
}

/** Closes the socket and gives the result to every hook still connected, then lets it drain. */
async function answerAll(hold: Hold, result: HookResult): Promise<void> {
  const { server, ending, attachment, quiescedAfterMs } = hold;
  // No new connection from here (the files go); the open ones get the result.
  server.close();
  const answer = { event: "result", result };
  ending.connection?.answer(answer);
  // A freeze hook still waiting (quiesce failed, or it gave up) gets the result too.
  if (attachment.connection && quiescedAfterMs === undefined) attachment.connection.answer(answer);
  for (const c of ending.waiting) c.answer(answer);
  // Let the answers drain before the process goes.
  await new Promise((resolve) => setTimeout(resolve, 50));
}

/** What the waiting freeze hook is told. */
function quiescedAnswer(run: PreparedRun): QuiescedAnswer {
  return {
    event: "quiesced",
    runId: run.runId,
    holderPid: process.pid,
    freezeBy: run.setup.freezeBy,
    plugins: run.plugins.map((p) => ({
      name: p.config.name,
      stage: p.config.stage ?? 0,
      ok: p.report.quiesce?.ok ?? false,
      durationMs: p.report.quiesce?.durationMs ?? 0,
      ...(p.report.quiesce?.ok ? {} : { code: p.report.quiesce?.errors[0]?.code }),
    })),
    frozen: run.setup.session.stillFrozen(),
    errors: [...run.errors],
    maxHoldSeconds: run.setup.config.hook.maxHoldSeconds,
  };
}

/** Why the hold ended, as an error for the result (none for a normal thaw). */
function endError(by: HoldEnd, maxHoldSeconds: number): RunError | undefined {
  switch (by) {
    case "deadline":
      return {
        code: "HoldTimeout",
        message:
          `no thaw/post hook came within hook.maxHoldSeconds (${maxHoldSeconds} s): the holder resumed every plugin and ended the hold. A snapshot taken after that is not application-consistent. Fix: find out why the agent's thaw came late (or never), or raise hook.maxHoldSeconds.`,
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
