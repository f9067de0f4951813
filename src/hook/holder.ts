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
import { newRun, type PreparedRun, RunStopped } from "../run/state.ts";
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

/**
 * The holder's main: returns the exit code. Reads its orders from
 * `VMSNAP_HOLDER`. The hold is `run`'s steps (src/run/) with the
 * snapshot left to the agent: prepare, quiesce (stage by stage), freeze for
 * agents that do not, then on the end of the hold thaw, resume and the
 * result.
 *
 * @example
 * ```ts
 * // Started by `vmsnap hook freeze` as `vmsnap __holder`; not for people.
 * ```
 */
export async function holderMain(): Promise<number> {
  const spec = JSON.parse(process.env.VMSNAP_HOLDER ?? "{}") as HolderSpec;
  const agent = AGENTS[spec.agent];
  const run = newRun({ json: false, streams: SILENT, logLevel: spec.logLevel, runId: spec.runId });
  let prepared: PreparedRun;
  try {
    // The snapshot is the agent's: "external" only satisfies the method check.
    prepared = await prepareRun(run, {
      configPath: spec.configPath,
      logLevel: spec.logLevel,
      external: true,
      // Where the agent freezes, the holder must not (a second FIFREEZE fails or deadlocks).
      agentFreezes: agent.freezes,
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
  const { config, freezeBy, session } = prepared.setup;
  const paths = holderPaths(config.stateDir);
  const ending = new HoldEnding(prepared.interrupt);
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
        ending.finish(c.request.event, c);
      } else if (c.request.op === "abort") {
        ending.finish("abort", c);
      } else {
        c.answer({ event: "error", message: `unexpected request ${JSON.stringify(c.request)}` });
      }
    });
  } catch (error) {
    prepared.fail({
      code: "HolderFailed",
      message: `the holder could not listen on ${paths.socket}: ${(error as Error).message}`,
    });
    finishRun(prepared);
    return failStart(paths.dir, spec.runId, "HolderFailed", prepared.errors.at(-1)!.message);
  }
  prepared.log.record("info", "hold-start", {
    agent: spec.agent,
    pid: process.pid,
    config: spec.configPath,
    agentArgs: spec.agentArgs,
    freezeBy,
    peerCheck: server.peerCheck(),
  });
  const onSignal = (signal: string) => {
    prepared.fail({
      code: "Interrupted",
      message: `the holder received ${signal}: it thawed what it froze and resumed every plugin.`,
    });
    ending.finish("signal");
  };
  const signals = ["SIGINT", "SIGTERM", "SIGHUP"] as const;
  for (const s of signals) process.on(s, onSignal);
  const deadline = setTimeout(() => ending.finish("deadline"), config.hook.maxHoldSeconds * 1000);
  // The freeze hook must attach in time, and stay until it is told.
  const attachTimer = setTimeout(() => attach ?? ending.finish("hook-gone"), spec.attachTimeoutMs);
  let quiescedAfterMs: number | undefined;
  attachedNow.then(() => {
    clearTimeout(attachTimer);
    attach!.closed.then(() => quiescedAfterMs ?? ending.finish("hook-gone"));
  });

  try {
    // Nothing is quiesced or frozen for a freeze hook that is gone (killed by its agent while the
    // holder prepared): it attaches as soon as the socket is there, or never.
    await Promise.race([attachedNow, ending.ended]);
    const quiesced = ending.by ? {} : await quiesceAll(prepared);
    if (quiesced.noSnapshot) ending.finish("quiesce-failed");
    if (!ending.by && freezeBy === "vmsnap") {
      await freezeTargets(prepared);
      if (session.failed && !config.continueBackupOnFailure) ending.finish("freeze-failed");
    }
    if (!ending.by) await Promise.race([attachedNow, ending.ended]);
    if (!ending.by && attach && !attach.isClosed()) {
      quiescedAfterMs = Math.round(performance.now() - prepared.started);
      const answer = quiescedAnswer(prepared, freezeBy);
      prepared.log.record("info", "quiesced", { ...answer, event: undefined });
      // From here on the filesystems are (or are about to be) frozen: nothing goes to disk.
      session.hold();
      attach.answer(answer as unknown as Record<string, unknown>);
      await ending.ended;
    } else if (!ending.by) {
      ending.finish("hook-gone");
    }
  } catch (error) {
    prepared.fail({
      code: "InternalError",
      message: `internal error in the holder: ${
        (error as Error).stack ?? error
      }. Fix: report this with the log; filesystems were thawed and plugins resumed.`,
    });
    ending.finish("internal-error");
  } finally {
    clearTimeout(deadline);
    clearTimeout(attachTimer);
    for (const s of signals) process.off(s, onSignal);
  }
  // The hold is ending: a signal now (the agent's service stopping) must not cut the thaw, the
  // resume (a MongoDB fsyncLock outlives its connection) or the result short. Said, then finished.
  const lateSignal = (signal: string) => {
    prepared.warn({
      code: "Interrupted",
      message:
        `the holder received ${signal} while it ended the hold: it finished thawing, resuming and recording first.`,
    });
  };
  for (const s of signals) process.on(s, lateSignal);
  const by = ending.by ?? "abort";
  // Thaw what the holder froze (and write what the log held), then resume, stages descending.
  await thawTargets(prepared);
  await resumeAll(prepared);
  // The snapshot was the agent's: taken when it sent thaw/post.
  const snapshot = {
    kind: "external" as const,
    taken: by === "thaw",
    durationMs: Math.round(performance.now() - prepared.started),
    answer: by,
  };
  // The agent's freeze is what the config's fsFreezeEnabled asked for; it held if the agent said thaw.
  const agentFreeze = freezeBy === "agent" && config.fsFreezeEnabled
    ? { held: by === "thaw" }
    : undefined;
  const ended = endError(by, config.hook.maxHoldSeconds);
  if (ended) prepared.fail(ended);
  const result: HookResult = {
    ...finishRun(prepared, { snapshot, agentFreeze }),
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
      heldMs: Math.round(performance.now() - prepared.started),
    },
  };
  // The last result (vmsnap status) and the metrics, as after a run.
  recordRun(result, { configPath: spec.configPath });
  // No new connection from here (the files go); the open ones get the result.
  server.close();
  const answer = { event: "result", result };
  ending.connection?.answer(answer);
  // A freeze hook still waiting (quiesce failed, or it gave up) gets the result too.
  if (attach && quiescedAfterMs === undefined) attach.answer(answer);
  for (const c of ending.waiting) c.answer(answer);
  // Let the answers drain before the process goes.
  await new Promise((resolve) => setTimeout(resolve, 50));
  for (const s of signals) process.off(s, lateSignal);
  return 0;
}

/** What the waiting freeze hook is told. */
function quiescedAnswer(run: PreparedRun, freezeBy: HookInfo["freezeBy"]): QuiescedAnswer {
  return {
    event: "quiesced",
    runId: run.runId,
    holderPid: process.pid,
    freezeBy,
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
