/**
 * Runs one side of a script plugin (the pre- or the post-script): every
 * attempt within one budget (`timeoutInSeconds` for all attempts together,
 * as Azure documents it), a short backoff between attempts, each attempt
 * logged with its exit code, duration and output.
 *
 * @module
 */
import { statSync } from "node:fs";
import { checkFile, checkInterpreter, FIXED_PATH } from "../src/sys/permissions.ts";
import { describeKill, type ProcessResult, runProcess } from "../src/sys/process_runner.ts";
import type { PluginEnv, RunError, StepResult } from "./plugin.ts";
import type { Code, Problem } from "../src/errors.ts";

/** One side of a script plugin: the pre-script or the post-script. */
export interface ScriptStep {
  /** Absolute path of the script. */
  path: string;
  /** Arguments, passed as argv (empty strings included, as Azure passes them). */
  params: string[];
  /** Retries after the first attempt. */
  retries: number;
  /** JSON path of the script's path in the config, for messages. */
  key: string;
}

/** The phases a script runs in. */
export type Phase = "pre" | "post";

/** The codes of each phase, Azure's names. */
export const PHASE_CODES: Record<Phase, { notFound: Code; permission: Code }> = {
  pre: { notFound: "Pre-ScriptNotFound", permission: "InsufficientPermissionforPre-Script" },
  post: { notFound: "Post-ScriptNotFound", permission: "InsufficientPermissionforPost-Script" },
};

/** The fixed PATH scripts get. */
export const SCRIPT_PATH = FIXED_PATH;

/** True when the script is exec'd (its owner may execute it), false when it is run as `sh FILE`. */
function runsDirectly(path: string): boolean {
  return (statSync(path).mode & 0o100) !== 0;
}

/**
 * Checks a script before it is run: the script rule on the file (Azure's,
 * made strict), then the executable rule on what interprets it (its `#!`
 * interpreter and `env`'s target when exec'd, `/bin/sh` otherwise).
 *
 * @example
 * ```ts
 * import { checkScript } from "./script_runner.ts";
 * checkScript("/etc/azure/pre.sh", { phase: "pre", what: "pre-script" }); // [] when safe
 * ```
 */
export function checkScript(path: string, options: { phase: Phase; what: string }): Problem[] {
  const rule = { ...PHASE_CODES[options.phase], what: options.what };
  const file = checkFile(path, { role: "script", ...rule });
  if (file.length > 0) return file;
  let honoursShebang: boolean;
  try {
    honoursShebang = runsDirectly(path);
  } catch (error) {
    return [{ code: rule.notFound, message: `${rule.what} ${path}: ${(error as Error).message}.` }];
  }
  return checkInterpreter(path, { ...rule, honoursShebang });
}

/** Output lines logged per attempt; the rest are counted. */
const LOGGED_LINES = 1000;

const CODES: Record<Phase, { failed: Code; timeout: Code }> = {
  pre: { failed: "Pre-ScriptExecutionFailed", timeout: "Pre-ScriptTimeout" },
  post: { failed: "Post-ScriptExecutionFailed", timeout: "Post-ScriptTimeout" },
};

const sleep = (ms: number, signal?: AbortSignal) =>
  new Promise<void>((resolve) => {
    const timer = setTimeout(resolve, ms);
    signal?.addEventListener("abort", () => {
      clearTimeout(timer);
      resolve();
    }, { once: true });
  });

/** The last lines of output, indented, for a message. */
function lastLines(tail: { stdout: string[]; stderr: string[] }, count = 5): string {
  const lines = [
    ...tail.stdout.slice(-count).map((l) => `stdout: ${l}`),
    ...tail.stderr.slice(-count).map((l) => `stderr: ${l}`),
  ];
  return lines.length ? ` Last output:\n    ${lines.join("\n    ")}` : " It printed nothing.";
}

/**
 * {@linkcode runScript}, which never throws: whatever goes wrong inside (a
 * bug, a file vanishing under it) becomes a failed step with the phase's
 * code, so the sequence still resumes the other plugins, writes the result
 * and releases the lock.
 *
 * @example
 * ```ts
 * import { runScriptSafely, type ScriptStep } from "./script_runner.ts";
 * import type { PluginEnv } from "./plugin.ts";
 * declare const step: ScriptStep, env: PluginEnv;
 * const result = await runScriptSafely({ plugin: "app", phase: "post", step, timeoutInSeconds: 30, env });
 * result.ok; // false with a coded error instead of a throw
 * ```
 */
export async function runScriptSafely(options: RunScriptOptions): Promise<StepResult> {
  const started = performance.now();
  try {
    return await runScript(options);
  } catch (error) {
    const { plugin, phase, step } = options;
    return {
      ok: false,
      durationMs: Math.round(performance.now() - started),
      errors: [{
        code: CODES[phase].failed,
        message: `${phase}-script ${step.path} of plugin "${plugin}" could not be run: ${
          (error as Error)?.message ?? String(error)
        }.\n  Fix: run the script by hand and read the log; if it runs there, report this to vmsnap with the log.`,
        plugin,
      }],
      facts: { script: step.path, internalError: String((error as Error)?.stack ?? error) },
    };
  }
}

/** What one script run needs: the options, the budget, the attempts so far. */
interface ScriptRun extends RunScriptOptions {
  /** `pre-script /path of plugin "name"`, for messages. */
  what: string;
  started: number;
  /** When the budget for all attempts ends (performance.now()). */
  deadline: number;
  attempts: Record<string, unknown>[];
}

/** What {@linkcode runScript} runs. */
export interface RunScriptOptions {
  plugin: string;
  phase: Phase;
  step: ScriptStep;
  /** The budget of all attempts together. */
  timeoutInSeconds: number;
  env: PluginEnv;
}

/** The step's result, with the attempts as facts. */
function finish(
  run: ScriptRun,
  ok: boolean,
  errors: RunError[],
  extra: Record<string, unknown> = {},
): StepResult {
  return {
    ok,
    durationMs: Math.round(performance.now() - run.started),
    errors,
    facts: { script: run.step.path, attempts: run.attempts, ...extra },
  };
}

/** A failed step with one coded error naming the plugin. */
function fail(run: ScriptRun, code: Code, message: string): StepResult {
  return finish(run, false, [{ code, message, plugin: run.plugin }]);
}

/** One attempt: exec'd directly or with /bin/sh, its output logged (the first LOGGED_LINES lines). */
function runAttempt(run: ScriptRun, attempt: number, remainingMs: number): Promise<ProcessResult> {
  const { plugin, phase, step, env } = run;
  const argv = runsDirectly(step.path)
    ? [step.path, ...step.params]
    : ["/bin/sh", step.path, ...step.params];
  let logged = 0;
  return runProcess({
    argv,
    env: {
      PATH: SCRIPT_PATH,
      LANG: "C",
      HOME: "/root",
      VMSNAP_PHASE: phase,
      VMSNAP_RUN_ID: env.runId,
      VMSNAP_ATTEMPT: String(attempt),
      VMSNAP_PLUGIN: plugin,
    },
    timeoutMs: remainingMs,
    signal: env.signal,
    onLine: (stream, line) => {
      if (logged++ < LOGGED_LINES) {
        env.log("info", "script-output", { plugin, phase, attempt, stream, line });
      }
    },
  });
}

/** Records an attempt in the facts and the log, with what it left running or could not kill. */
function recordAttempt(run: ScriptRun, attempt: number, last: ProcessResult): void {
  const { plugin, phase, step, env } = run;
  const record = {
    attempt,
    exitCode: last.exitCode,
    signal: last.signal,
    durationMs: last.durationMs,
    timedOut: last.timedOut,
    outputLines: last.lines,
    outputBytes: last.bytes,
    tracking: last.tracking,
    ...(last.survivors.length > 0 ? { survivors: last.survivors.length } : {}),
  };
  run.attempts.push(record);
  env.log(last.exitCode === 0 ? "info" : "warning", "script-attempt", {
    plugin,
    phase,
    script: step.path,
    ...record,
    unloggedLines: Math.max(0, last.lines - LOGGED_LINES),
    spawnError: last.spawnError,
    ...(last.viaShell ? { runWith: "/bin/sh (no #! line)" } : {}),
  });
  const processes = (level: "warning" | "error", event: string, extra: object) =>
    env.log(level, event, { plugin, phase, script: step.path, ...extra });
  if (last.survivors.length > 0) {
    processes("error", "script-survivors", {
      processes: last.survivors,
      cgroup: last.cgroup,
      note: "still running after SIGKILL (blocked in the kernel); not counted as killed",
    });
  }
  if (last.leftovers.length > 0) {
    processes("warning", "script-left-processes", {
      processes: last.leftovers,
      note: "left running, as the script intended; vmsnap did not wait for their output",
    });
  }
}

/** The step after an attempt: done (ok, or interrupted), or undefined to go on. */
function attemptOutcome(
  run: ScriptRun,
  attempt: number,
  last: ProcessResult,
): StepResult | undefined {
  if (last.exitCode === 0 && !last.timedOut && !last.aborted) {
    return finish(run, true, [], { exitCode: 0, leftovers: last.leftovers });
  }
  if (last.aborted) {
    return fail(
      run,
      "Interrupted",
      `${run.what} was stopped by a signal to vmsnap (attempt ${attempt}); ${
        describeKill(last, "the script")
      }`,
    );
  }
  return undefined;
}

/** Waits before the next attempt (less when the budget ends); a failure when a signal came. */
async function backOff(run: ScriptRun, attempt: number): Promise<StepResult | undefined> {
  const { env } = run;
  env.log("info", "script-retry", { plugin: run.plugin, phase: run.phase, attempt: attempt + 1 });
  await sleep(Math.min(500 * attempt, Math.max(0, run.deadline - performance.now())), env.signal);
  if (!env.signal.aborted) return undefined;
  return fail(run, "Interrupted", `${run.what} was not retried: vmsnap received a signal.`);
}

/** The failure after the last attempt: out of time, or the last attempt's exit. */
function failedAttempts(run: ScriptRun, last: ProcessResult | undefined): StepResult {
  const { phase, step } = run;
  const tries = run.attempts.length;
  if (!last || last.timedOut || performance.now() >= run.deadline) {
    return fail(
      run,
      CODES[phase].timeout,
      `${run.what} did not finish within timeoutInSeconds (${run.timeoutInSeconds} s for all ${tries} attempt(s) together); ${
        last ? describeKill(last, "the script") : "it was not started."
      }${
        last ? lastLines(last.tail) : ""
      }\n  Fix: make the script faster or raise timeoutInSeconds in the config.`,
    );
  }
  const how = last.spawnError
    ? `could not be started (${last.spawnError})`
    : last.signal
    ? `was killed by ${last.signal}`
    : `exited with code ${last.exitCode}`;
  return fail(
    run,
    CODES[phase].failed,
    `${run.what} ${how} on attempt ${tries} of ${step.retries + 1}.${
      lastLines(last.tail)
    }\n  Fix: run the script by hand (${step.path}) and read the log; correct it or the application it drives.`,
  );
}

/**
 * Runs a script with its retries. The script is exec'd directly when its
 * owner may execute it (the shebang is honoured), else with /bin/sh (Azure
 * accepts mode 600). Its permissions are checked again before each attempt.
 *
 * @example
 * ```ts
 * import { runScript, type ScriptStep } from "./script_runner.ts";
 * import type { PluginEnv } from "./plugin.ts";
 * declare const step: ScriptStep, env: PluginEnv;
 * const result = await runScript({ plugin: "app", phase: "pre", step, timeoutInSeconds: 30, env });
 * ```
 */
export async function runScript(options: RunScriptOptions): Promise<StepResult> {
  const started = performance.now();
  const { plugin, phase, step } = options;
  const run: ScriptRun = {
    ...options,
    what: `${phase}-script ${step.path} of plugin "${plugin}"`,
    started,
    deadline: started + options.timeoutInSeconds * 1000,
    attempts: [],
  };
  let last: ProcessResult | undefined;
  for (let attempt = 1; attempt <= step.retries + 1; attempt++) {
    const refused = checkScript(step.path, { phase, what: run.what });
    if (refused.length > 0) return fail(run, refused[0].code, refused[0].message);
    const remaining = Math.round(run.deadline - performance.now());
    if (remaining <= 0) break;
    last = await runAttempt(run, attempt, remaining);
    recordAttempt(run, attempt, last);
    const done = attemptOutcome(run, attempt, last);
    if (done) return done;
    if (last.timedOut) break;
    if (attempt <= step.retries) {
      const interrupted = await backOff(run, attempt);
      if (interrupted) return interrupted;
    }
  }
  return failedAttempts(run, last);
}
