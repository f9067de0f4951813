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
import { spawn } from "node:child_process";
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
import type { HolderSpec, HookResult, QuiescedAnswer } from "./holder.ts";
import {
  askHolder,
  clearHolderFiles,
  type HolderPaths,
  holderPaths,
  lastHolder,
  liveHolder,
} from "./channel.ts";
import { readLastResult } from "../state/last_result.ts";
import { closeOnExecAbove2 } from "../sys/libc.ts";
import { unwritableStateDir } from "../state/lock.ts";
import { checkDirectory, ensureDirectory } from "../sys/permissions.ts";
import type { OutputStreams } from "../run/output.ts";
import { describeRecovery, recoverAll } from "../state/recover.ts";
import { redact } from "../secrets.ts";
import { selfCommand } from "../sys/self.ts";
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

/** A hook that stops with a coded error. */
class HookStop extends Error {
  constructor(readonly code: Code, message: string) {
    super(message);
  }
}

/**
 * Runs one hook invocation and returns its exit code.
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
export async function runHook(options: HookOptions): Promise<number> {
  const deadline = performance.now() +
    (options.timeoutSeconds ?? AGENTS[options.agent].timeoutSeconds) * 1000;
  try {
    return options.event === "freeze"
      ? await freeze(options, deadline)
      : await thaw(options, deadline);
  } catch (error) {
    if (!(error instanceof HookStop)) throw error;
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

/** The checks that stop a freeze before anything runs (run's preflight, src/preflight/preflight.ts). */
function preflight(options: HookOptions): { stateDir: string } {
  const stop = (problems: Problem[]) => {
    if (problems.length > 0) throw new HookStop(problems[0].code, problems[0].message);
  };
  stop(rootProblems(process.getuid?.() === 0));
  const read = readConfig(options.configPath);
  stop(read.problems);
  const loaded = read.loaded!;
  stop(syntaxProblems(loaded));
  stop(configFileProblems(options.configPath));
  if (loaded.problems.length > 0) {
    throw new HookStop(
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
async function recoverAndSay(
  options: HookOptions,
  stateDir: string,
  deadline: number,
): Promise<boolean> {
  const paths = holderPaths(stateDir);
  let timer: ReturnType<typeof setTimeout> | undefined;
  const late = new Promise<undefined>((resolve) => {
    timer = setTimeout(() => resolve(undefined), Math.max(0, deadline - performance.now()));
  });
  // Thaw first: what a dead holder left frozen may hold stateDir, where everything else writes.
  // The report is kept for the next run or recover: a stray thaw (qemu-ga -F runs the thaw hook on
  // every guest-fsfreeze-thaw) must not erase why a run died, nor may the freeze hook's stderr.
  const keepFor = `vmsnap hook ${options.event} (${options.agent})`;
  const recovery = await Promise.race([recoverAll(stateDir, { keepFor }), late]);
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
function trustedHolderDir(stateDir: string, paths: HolderPaths): void {
  const problems = [
    ...checkDirectory(stateDir, "stateDir"),
    ...checkDirectory(paths.dir, "the holder's directory"),
  ];
  if (problems.length > 0) {
    throw new HookStop(
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
function stateDirWritable(stateDir: string, paths: HolderPaths): void {
  try {
    ensureDirectory(stateDir, "stateDir");
    mkdirSync(paths.dir, { recursive: true, mode: 0o700 });
    const probe = join(paths.dir, `probe-${process.pid}`);
    writeFileSync(probe, "vmsnap\n", { mode: 0o600, flag: "wx" });
    rmSync(probe, { force: true });
  } catch (error) {
    const coded = error instanceof VmsnapError ? error : unwritableStateDir(stateDir, error);
    if (coded) throw new HookStop(coded.code, coded.message);
    throw error;
  }
}

async function freeze(options: HookOptions, deadline: number): Promise<number> {
  const { stateDir } = preflight(options);
  const paths = holderPaths(stateDir);
  trustedHolderDir(stateDir, paths);
  const live = liveHolder(paths);
  if (live) {
    throw new HookStop(
      "HoldInProgress",
      `the holder of run ${live.runId} (pid ${live.pid}, for ${live.agent}, since ${live.since}) still holds; it was left intact and nothing else was done. Fix: send its thaw/post hook first, or wait for its hook.maxHoldSeconds.`,
    );
  }
  if (!await recoverAndSay(options, stateDir, deadline)) {
    throw new HookStop(
      "HookTimeout",
      `${recoveryCutShort(options, stateDir)} Nothing was quiesced or frozen.`,
    );
  }
  // After the recovery: a filesystem a dead run left frozen would block any write here.
  stateDirWritable(stateDir, paths);
  const runId = newRunId();
  const spec: HolderSpec = {
    runId,
    configPath: options.configPath,
    agent: options.agent,
    logLevel: options.logLevel,
    attachTimeoutMs: Math.max(1000, deadline - performance.now()),
    agentArgs: options.agentArgs,
  };
  // The holder inherits nothing but /dev/null: an agent reading our output until EOF must not wait for it.
  await closeOnExecAbove2();
  const [command, ...args] = selfCommand(["__holder"]);
  const child = spawn(command, args, {
    detached: true,
    stdio: "ignore",
    cwd: "/",
    env: { PATH: "/usr/sbin:/usr/bin:/sbin:/bin", LANG: "C", VMSNAP_HOLDER: JSON.stringify(spec) },
  });
  let exited: number | null | undefined;
  child.on("exit", (code) => (exited = code ?? -1));
  child.on("error", () => (exited = -1));
  child.unref();
  const failure = () => startFailure(paths, runId, exited);
  // Wait for the holder's socket, then attach and wait for "quiesced".
  while (!existsSync(paths.socket) || liveHolder(paths)?.runId !== runId) {
    if (exited !== undefined) throw failure();
    if (performance.now() > deadline) {
      child.kill("SIGTERM");
      throw new HookStop(
        "HookTimeout",
        `the holder (pid ${child.pid}) was still preparing (the checks, recovering what an earlier run left) when the hook's timeout passed: it was stopped before it quiesced anything. Fix: run vmsnap check --config ${options.configPath}, and vmsnap recover; or raise --timeout within the agent's own limit.`,
      );
    }
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
  const reply = await askHolder(paths, { op: "attach" }, deadline - performance.now());
  if ("failed" in reply) {
    if (reply.failed === "timeout") return await giveUp(paths, runId);
    if (exited !== undefined) throw failure();
    throw new HookStop("HolderFailed", `the holder did not answer: ${reply.detail}`);
  }
  if (reply.answer.event === "quiesced") {
    const q = reply.answer as unknown as QuiescedAnswer;
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
      reply.answer,
      `vmsnap hook freeze (${options.agent}) run ${q.runId}: quiesced ${
        plugins.join(", ") || "no plugin"
      }; ${frozen}; holder pid ${q.holderPid} holds until thaw/post or ${q.maxHoldSeconds} s${
        q.errors.length ? `\n${q.errors.map((e) => `  [${e.code}] ${e.message}`).join("\n")}` : ""
      }`,
    );
    return 0;
  }
  return printResult(options, reply.answer.result as HookResult);
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
  throw new HookStop(
    "HookTimeout",
    `the holder did not finish quiescing within the hook's timeout; ${detail}.`,
  );
}

/** Why the holder exited before it listened. */
function startFailure(paths: HolderPaths, runId: string, exited: number | null | undefined) {
  const file = join(paths.dir, `failed-${runId}.json`);
  try {
    const { code, message } = JSON.parse(readFileSync(file, "utf8"));
    rmSync(file, { force: true });
    return new HookStop(code, message);
  } catch {
    return new HookStop(
      "HolderFailed",
      `the holder exited (${exited}) before it listened. Fix: see the log.`,
    );
  }
}

async function thaw(options: HookOptions, deadline: number): Promise<number> {
  // The config's stateDir, or the default when the config cannot be read: the holder must be found.
  const { stateDir } = recordPlaces(options.configPath);
  const paths = holderPaths(stateDir);
  if (process.getuid?.() !== 0) {
    throw new HookStop("NotRoot", `vmsnap hook must run as root (uid ${process.getuid?.()}).`);
  }
  trustedHolderDir(stateDir, paths);
  const request = { op: "thaw", event: options.event as "thaw" | "freezeFail" } as const;
  const reply = liveHolder(paths)
    ? await askHolder(paths, request, Math.max(0, deadline - performance.now()))
    : { failed: "no-holder" as const, detail: "" };
  if ("answer" in reply && reply.answer.event === "result") {
    return printResult(options, reply.answer.result as HookResult);
  }
  if ("failed" in reply && reply.failed === "timeout") {
    throw new HookStop(
      "HookTimeout",
      reply.sent
        ? `the holder received the ${options.event} but did not finish within the hook's timeout: it goes on thawing what it froze and resuming every plugin (a slow post-script or database?); vmsnap status shows its result when it is done.`
        : `the holder did not answer the ${options.event} within the hook's timeout; it ends its hold by itself at hook.maxHoldSeconds.`,
    );
  }
  // No holder: say why, as far as the last result tells, and recover.
  const last = readLastResult<HookResult>(stateDir);
  const lastHold = lastHolder(paths);
  const recovered = await recoverAndSay(options, stateDir, deadline);
  let code: Code = "NoHolder";
  let why =
    `no holder is running for ${stateDir}: the freeze hook did not run, failed, or its hold already ended.`;
  if (!recovered) why += ` And ${recoveryCutShort(options, stateDir)}`;
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
  throw new HookStop(code, why);
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
