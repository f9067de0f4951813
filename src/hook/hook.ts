/**
 * `vmsnap hook <event> --for <agent>`: what a backup agent runs around its
 * own snapshot.
 *
 * - `freeze` (`pre`): the checks `run` makes, then a holder is started
 *   (src/hook/holder.ts) and the hook waits until it has quiesced everything
 *   (and, for agents that freeze nothing, frozen the targets). Exit 0 then;
 *   otherwise the coded error, after the holder resumed what it quiesced.
 * - `thaw` (`post`) and `freezeFail`: the holder thaws what it froze,
 *   resumes every plugin, writes the result, and the hook prints it. No
 *   holder: said plainly, recovery runs, exit 2.
 *
 * The hook never waits longer than its timeout.
 *
 * @module
 */
import {
  existsSync,
  fstatSync,
  mkdirSync,
  readFileSync,
  rmSync,
  statSync,
  writeFileSync,
} from "node:fs";
import { join } from "node:path";
import process from "node:process";
import { type AgentName, AGENTS, type HookEvent } from "./agents.ts";
import type { LogLevel } from "../config/config.ts";
import { type Code, type Problem, VmsnapError, withFix } from "../errors.ts";
import {
  configFileProblems,
  readConfig,
  rootProblems,
  syntaxProblems,
} from "../preflight/preflight.ts";
import type { HookResult, QuiescedAnswer } from "./holder.ts";
import { type HolderProcess, type HookDeps, PRODUCTION_HOOK_DEPS } from "./deps.ts";
import {
  askHolder,
  clearHolderFiles,
  type HolderPaths,
  holderPaths,
  lastHolder,
  liveHolder,
} from "./channel.ts";
import { readLastResult } from "../state/last_result.ts";
import { unwritableStateDir } from "../state/lock.ts";
import type { OutputStreams } from "../run/output.ts";
import { describeRecovery, recoverAll } from "../state/recover.ts";
import { redact } from "../secrets.ts";
import { recordPlaces } from "../state/record.ts";
import { newRunId } from "../run/state.ts";

/** What `vmsnap hook` was asked to do. */
export interface HookOptions {
  event: HookEvent;
  agent: AgentName;
  configPath: string;
  json: boolean;
  logLevel?: LogLevel;
  /** Overrides the agent's default timeout. */
  timeoutSeconds?: number;
  /** The agent's own arguments after the event. */
  agentArgs: string[];
  streams: OutputStreams;
}

/** How long a hook whose recovery was cut short gives its last line to be written, then ends. */
const ABANDONED_EXIT_MS = 500;

/** One hook invocation: what it was asked, its dependencies, and its deadline (on `deps.now()`). */
interface HookCall {
  options: HookOptions;
  deps: HookDeps;
  deadline: number;
}

/** The milliseconds left before the hook's deadline. */
const left = (call: HookCall) => call.deadline - call.deps.now();

/**
 * Runs one hook invocation and returns its exit code. `deps` replaces the
 * uid, the clock, the permission rules, the freezer and the start of the
 * holder (tests); by default the real ones.
 *
 * @example
 * ```ts
 * import process from "node:process";
 * import { runHook } from "./hook.ts";
 * process.exitCode = await runHook({
 *   event: "freeze",
 *   agent: "qemu-ga",
 *   configPath: "/etc/vmsnap/vmsnap.json",
 *   json: false,
 *   agentArgs: [],
 *   streams: { stdout: (t) => process.stdout.write(t), stderr: (t) => process.stderr.write(t) },
 * });
 * ```
 */
export async function runHook(
  options: HookOptions,
  deps: HookDeps = PRODUCTION_HOOK_DEPS,
): Promise<number> {
  const timeoutSeconds = options.timeoutSeconds ?? AGENTS[options.agent].timeoutSeconds;
  const call = { options, deps, deadline: deps.now() + timeoutSeconds * 1000 };
  try {
    return options.event === "freeze" ? await freeze(call) : await thaw(call);
  } catch (error) {
    if (!(error instanceof VmsnapError)) throw error;
    say(options, {
      event: "hook-error",
      hook: options.event,
      agent: options.agent,
      code: error.code,
      message: withFix({ code: error.code, message: error.message }).message,
    }, `vmsnap hook ${options.event} (${options.agent}): [${error.code}] ${error.message}`);
    return 2;
  }
}

/** Prints one line: JSON on stdout with --json, else text on stderr. Kept short (agents cap it). */
function say(options: HookOptions, json: Record<string, unknown>, text: string): void {
  if (options.json) options.streams.stdout(`${redact(JSON.stringify(json))}\n`);
  else options.streams.stderr(`${redact(text)}\n`);
}

/** Stops the hook with the first problem, if any. */
function stopOn(problems: Problem[]): void {
  if (problems.length > 0) throw new VmsnapError(problems[0].code, problems[0].message);
}

/** The checks that stop a freeze before anything runs (run's preflight, src/preflight/preflight.ts). */
function preflight(call: HookCall): { stateDir: string } {
  const { options, deps } = call;
  stopOn(rootProblems(deps.uid() === 0));
  const read = readConfig(options.configPath, { plugins: deps.plugins });
  stopOn(read.problems);
  const loaded = read.loaded!;
  stopOn(syntaxProblems(loaded));
  stopOn(configFileProblems(options.configPath, deps.trust));
  if (loaded.problems.length > 0) {
    throw new VmsnapError(
      "InvalidConfig",
      `${options.configPath} has ${loaded.problems.length} problem(s), the first: ${
        loaded.problems[0].message
      } Fix: run vmsnap check and correct them.`,
    );
  }
  return { stateDir: loaded.config.stateDir };
}

/** Says what a dead holder left (the next hook reports it), and forgets it. */
function deadHolder(paths: HolderPaths, stateDir: string): string | undefined {
  const info = lastHolder(paths);
  if (!info || liveHolder(paths)) return undefined;
  clearHolderFiles(paths);
  const last = readLastResult<HookResult>(stateDir);
  if (last?.runId === info.runId) return undefined;
  return `[HolderDied] the holder of run ${info.runId} (pid ${info.pid}, for ${info.agent}, since ${info.since}) died without finishing: its database sessions ended with it (locks released), and recovery undid what it left.`;
}

/**
 * Recovers what a dead run left and says so; false when that did not finish
 * before the hook's deadline (a dead run's database lock on a server that
 * does not answer): the hook must not wait for it (qemu-ga waits with no limit).
 */
async function recoverAndSay(call: HookCall, stateDir: string): Promise<boolean> {
  const { options, deps } = call;
  const paths = holderPaths(stateDir);
  let timer: ReturnType<typeof setTimeout> | undefined;
  const late = new Promise<undefined>((resolve) => {
    timer = setTimeout(() => resolve(undefined), Math.max(0, left(call)));
  });
  // Thaw first: what a dead holder left frozen may hold stateDir, where everything else writes.
  // The report is kept for the next run or recover: a stray thaw (qemu-ga -F runs the thaw hook on
  // every guest-fsfreeze-thaw) must not erase why a run died, nor may the freeze hook's stderr.
  const keepFor = `vmsnap hook ${options.event} (${options.agent})`;
  const recovering = recoverAll(stateDir, {
    keepFor,
    freezerOf: deps.createFreezer,
    plugins: deps.plugins,
  });
  const recovery = await Promise.race([recovering, late]);
  clearTimeout(timer);
  if (!recovery) {
    // The recovery goes on in this process (a connection to a server that does not answer) and
    // would keep it alive past the hook's timeout: once the hook's line is out, the process ends.
    setTimeout(() => process.exit(), ABANDONED_EXIT_MS).unref();
    return false;
  }
  const died = deadHolder(paths, stateDir);
  if (died) options.streams.stderr(`vmsnap: recovered: ${redact(died)}\n`);
  for (const p of describeRecovery(recovery)) {
    options.streams.stderr(`vmsnap: recovered: ${redact(p.message)}\n`);
  }
  return true;
}

/** Said when recovery was cut short by the hook's timeout. */
function recoveryCutShort(options: HookOptions, stateDir: string): string {
  return `recovering what an earlier run left in ${stateDir} did not finish within the hook's timeout (${
    options.timeoutSeconds ?? AGENTS[options.agent].timeoutSeconds
  } s); the next vmsnap start tries again. Fix: run vmsnap recover --config ${options.configPath} and see what it waits for (a dead run's database lock on a server that does not answer?).`;
}

/**
 * Only root can have put what is in stateDir and its hook directory (the
 * holder's pid file, token and socket, a freeze marker, lock markers): else a
 * user could plant a "holder" that answers the thaw hook, or a marker that
 * recovery would act on as root. Read-only: nothing is written here.
 */
function trustedHolderDir(call: HookCall, stateDir: string, paths: HolderPaths): void {
  const { checkDirectory } = call.deps.trust;
  const problems = [
    ...checkDirectory(stateDir, "stateDir"),
    ...checkDirectory(paths.dir, "the holder's directory"),
  ];
  if (problems.length > 0) {
    throw new VmsnapError(
      "InsecureDirectory",
      `${
        problems[0].message
      } Nothing there was trusted: no holder was contacted, nothing recovered.`,
    );
  }
}

/**
 * The stateDir and the holder's directory exist and take a file: a full or
 * read-only stateDir is StateDirUnwritable here, where the hook can say it
 * (the holder could not leave its reason there).
 */
function stateDirWritable(call: HookCall, stateDir: string, paths: HolderPaths): void {
  try {
    call.deps.trust.ensureDirectory(stateDir, "stateDir");
    mkdirSync(paths.dir, { recursive: true, mode: 0o700 });
    const probe = join(paths.dir, `probe-${process.pid}`);
    writeFileSync(probe, "vmsnap\n", { mode: 0o600, flag: "wx" });
    rmSync(probe, { force: true });
  } catch (error) {
    const coded = error instanceof VmsnapError ? error : unwritableStateDir(stateDir, error);
    if (coded) throw new VmsnapError(coded.code, coded.message, { cause: error });
    throw error;
  }
}

/**
 * `freeze`/`pre`: the checks, recovery, then a holder that quiesces (and
 * freezes, for agents that do not); the hook waits until it says so.
 */
async function freeze(call: HookCall): Promise<number> {
  const { options } = call;
  const { stateDir } = preflight(call);
  const paths = holderPaths(stateDir);
  trustedHolderDir(call, stateDir, paths);
  const live = liveHolder(paths);
  if (live) {
    throw new VmsnapError(
      "HoldInProgress",
      `the holder of run ${live.runId} (pid ${live.pid}, for ${live.agent}, since ${live.since}) still holds; it was left intact and nothing else was done. Fix: send its thaw/post hook first, or wait for its hook.maxHoldSeconds.`,
    );
  }
  if (!await recoverAndSay(call, stateDir)) {
    throw new VmsnapError(
      "HookTimeout",
      `${recoveryCutShort(options, stateDir)} Nothing was quiesced or frozen.`,
    );
  }
  // After the recovery: a filesystem a dead run left frozen would block any write here.
  stateDirWritable(call, stateDir, paths);
  const runId = newRunId();
  const holder = await call.deps.spawnHolder({
    runId,
    configPath: options.configPath,
    agent: options.agent,
    logLevel: options.logLevel,
    attachTimeoutMs: Math.max(1000, left(call)),
    agentArgs: options.agentArgs,
  });
  await holderListening(call, paths, runId, holder);
  const reply = await askHolder(paths, { op: "attach" }, left(call));
  if ("failed" in reply) {
    if (reply.failed === "timeout") return await giveUp(paths, runId);
    if (holder.exited() !== undefined) throw startFailure(paths, runId, holder.exited());
    throw new VmsnapError("HolderFailed", `the holder did not answer: ${reply.detail}`);
  }
  if (reply.answer.event === "quiesced") {
    sayQuiesced(options, reply.answer as unknown as QuiescedAnswer);
    return 0;
  }
  return printResult(options, reply.answer.result as HookResult);
}

/** Waits for the holder's socket; it may exit (its reason left for us), or miss the deadline. */
async function holderListening(
  call: HookCall,
  paths: HolderPaths,
  runId: string,
  holder: HolderProcess,
): Promise<void> {
  while (!existsSync(paths.socket) || liveHolder(paths)?.runId !== runId) {
    if (holder.exited() !== undefined) throw startFailure(paths, runId, holder.exited());
    if (left(call) < 0) {
      holder.stop();
      throw new VmsnapError(
        "HookTimeout",
        `the holder (pid ${holder.pid}) was still preparing (the checks, recovering what an earlier run left) when the hook's timeout passed: it was stopped before it quiesced anything. Fix: run vmsnap check --config ${call.options.configPath}, and vmsnap recover; or raise --timeout within the agent's own limit.`,
      );
    }
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
}

/** The freeze hook's line once everything is quiesced (and frozen, or the agent freezes next). */
function sayQuiesced(options: HookOptions, q: QuiescedAnswer): void {
  const plugins = q.plugins.map((p) =>
    `${p.name}${p.stage ? ` (stage ${p.stage})` : ""}: ${
      p.ok ? "ok" : p.code ?? "failed"
    } ${p.durationMs} ms`
  );
  const frozen = q.freezeBy === "vmsnap"
    ? `froze ${q.frozen.join(", ") || "nothing"}`
    : q.freezeBy === "agent"
    ? `${options.agent} freezes now`
    : "nothing frozen (fsFreezeEnabled is false)";
  say(
    { ...options, streams: clearOfFrozen(options.streams, q.frozen) },
    q as unknown as Record<string, unknown>,
    `vmsnap hook freeze (${options.agent}) run ${q.runId}: quiesced ${
      plugins.join(", ") || "no plugin"
    }; ${frozen}; holder pid ${q.holderPid} holds until thaw/post or ${q.maxHoldSeconds} s${
      q.errors.length ? `\n${q.errors.map((e) => `  [${e.code}] ${e.message}`).join("\n")}` : ""
    }`,
  );
}

/**
 * The streams, less any that is a file on a filesystem the holder just froze
 * (`vmsnap hook pre >> /var/log/backup.log` with /var frozen): a write there
 * would block the hook until the guard thaws. What it would have said is in
 * the holder's log and result.
 */
function clearOfFrozen(streams: OutputStreams, frozen: string[]): OutputStreams {
  const devices = new Set<number>();
  for (const mount of frozen) {
    try {
      devices.add(statSync(mount).dev);
    } catch {
      // gone: nothing of ours is written there
    }
  }
  const onFrozen = (fd: number) => {
    try {
      const stat = fstatSync(fd);
      return !stat.isFIFO() && !stat.isSocket() && !stat.isCharacterDevice() &&
        devices.has(stat.dev);
    } catch {
      return false;
    }
  };
  const none = () => {};
  return {
    ...streams,
    stdout: onFrozen(1) ? none : streams.stdout,
    stderr: onFrozen(2) ? none : streams.stderr,
  };
}

/** The hook's timeout passed while the holder quiesced: tell it to resume everything, report. */
async function giveUp(paths: HolderPaths, runId: string): Promise<number> {
  const reply = await askHolder(paths, { op: "abort", reason: "hook timeout" }, 10_000);
  const detail = "answer" in reply
    ? `the holder resumed everything (run ${runId}, ${
      (reply.answer.result as HookResult | undefined)?.status ?? "?"
    })`
    : `the holder did not confirm (${reply.detail})`;
  throw new VmsnapError(
    "HookTimeout",
    `the holder did not finish quiescing within the hook's timeout; ${detail}.`,
  );
}

/** Why the holder exited before it listened. */
function startFailure(paths: HolderPaths, runId: string, exited: number | undefined): VmsnapError {
  const file = join(paths.dir, `failed-${runId}.json`);
  try {
    const { code, message } = JSON.parse(readFileSync(file, "utf8"));
    rmSync(file, { force: true });
    return new VmsnapError(code, message);
  } catch {
    return new VmsnapError(
      "HolderFailed",
      `the holder exited (${exited}) before it listened. Fix: see the log.`,
    );
  }
}

/** `thaw`/`post`/`freezeFail`: the holder ends its hold and answers with the result. */
async function thaw(call: HookCall): Promise<number> {
  const { options, deps } = call;
  // The config's stateDir, or the default when the config cannot be read: the holder must be found.
  const { stateDir } = recordPlaces(options.configPath);
  const paths = holderPaths(stateDir);
  if (deps.uid() !== 0) {
    throw new VmsnapError("NotRoot", `vmsnap hook must run as root (uid ${deps.uid()}).`);
  }
  trustedHolderDir(call, stateDir, paths);
  const request = { op: "thaw", event: options.event as "thaw" | "freezeFail" } as const;
  const reply = liveHolder(paths)
    ? await askHolder(paths, request, Math.max(0, left(call)))
    : { failed: "no-holder" as const, detail: "" };
  if ("answer" in reply && reply.answer.event === "result") {
    return printResult(options, reply.answer.result as HookResult);
  }
  if ("failed" in reply && reply.failed === "timeout") {
    throw new VmsnapError(
      "HookTimeout",
      reply.sent
        ? `the holder received the ${options.event} but did not finish within the hook's timeout: it goes on thawing what it froze and resuming every plugin (a slow post-script or database?); vmsnap status shows its result when it is done.`
        : `the holder did not answer the ${options.event} within the hook's timeout; it ends its hold by itself at hook.maxHoldSeconds.`,
    );
  }
  throw await noHolder(call, stateDir, paths);
}

/** No holder to thaw: why, as far as the last result tells, after recovering. */
async function noHolder(
  call: HookCall,
  stateDir: string,
  paths: HolderPaths,
): Promise<VmsnapError> {
  const last = readLastResult<HookResult>(stateDir);
  const lastHold = lastHolder(paths);
  const recovered = await recoverAndSay(call, stateDir);
  let code: Code = "NoHolder";
  let why =
    `no holder is running for ${stateDir}: the freeze hook did not run, failed, or its hold already ended.`;
  if (!recovered) why += ` And ${recoveryCutShort(call.options, stateDir)}`;
  if (last?.mode === "hook" && last.hook.endedBy !== "thaw" && last.hook.endedBy !== "freezeFail") {
    const ended = last.errors.find((e) =>
      ["HoldTimeout", "HookAborted", "HookTimeout", "Interrupted"].includes(e.code)
    );
    if (last.hook.endedBy === "deadline") code = "HoldTimeout";
    why += ` The last hold (run ${last.runId}, ${last.hook.agent}) ended by ${last.hook.endedBy}${
      ended ? `: [${ended.code}] ${ended.message}` : ""
    }`;
  } else if (lastHold && lastHold.runId !== last?.runId) {
    code = "HolderDied";
    why +=
      ` The holder of run ${lastHold.runId} (pid ${lastHold.pid}) died without a result: its database sessions ended with it.`;
  }
  return new VmsnapError(code, why);
}

/** Prints the result of a hold: one verdict line (and the errors), or the JSON with --json. */
function printResult(options: HookOptions, result: HookResult): number {
  const verdict =
    `vmsnap hook ${options.event} (${options.agent}) run ${result.runId}: ${result.status}, ${result.consistency}-consistent, hold ended by ${result.hook.endedBy} after ${result.hook.heldMs} ms, exit ${result.exitCode}`;
  const lines = result.errors.map((e) =>
    `  [${e.code}]${e.plugin ? ` (${e.plugin})` : ""} ${e.message}`
  );
  say(options, result as unknown as Record<string, unknown>, [verdict, ...lines].join("\n"));
  return result.exitCode;
}
