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
import { describeKill, runProcess } from "../src/sys/process_runner.ts";
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
export async function runScriptSafely(
  options: Parameters<typeof runScript>[0],
): Promise<StepResult> {
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
export async function runScript(options: {
  plugin: string;
  phase: Phase;
  step: ScriptStep;
  timeoutInSeconds: number;
  env: PluginEnv;
}): Promise<StepResult> {
  const { plugin, phase, step, env } = options;
  const started = performance.now();
  const budgetMs = options.timeoutInSeconds * 1000;
  const deadline = started + budgetMs;
  const what = `${phase}-script ${step.path} of plugin "${plugin}"`;
  const attempts: Record<string, unknown>[] = [];
  const finish = (
    ok: boolean,
    errors: RunError[],
    extra: Record<string, unknown> = {},
  ): StepResult => ({
    ok,
    durationMs: Math.round(performance.now() - started),
    errors,
    facts: { script: step.path, attempts, ...extra },
  });
  const fail = (code: Code, message: string) => finish(false, [{ code, message, plugin }]);
  let last: Awaited<ReturnType<typeof runProcess>> | undefined;
  for (let attempt = 1; attempt <= step.retries + 1; attempt++) {
    const refused = checkScript(step.path, { phase, what });
    if (refused.length > 0) return fail(refused[0].code, refused[0].message);
    const remaining = Math.round(deadline - performance.now());
    if (remaining <= 0) break;
    const argv = runsDirectly(step.path)
      ? [step.path, ...step.params]
      : ["/bin/sh", step.path, ...step.params];
    let logged = 0;
    last = await runProcess({
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
      timeoutMs: remaining,
      signal: env.signal,
      onLine: (stream, line) => {
        if (logged++ < LOGGED_LINES) {
          env.log("info", "script-output", { plugin, phase, attempt, stream, line });
        }
      },
    });
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
    attempts.push(record);
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
    if (last.exitCode === 0 && !last.timedOut && !last.aborted) {
      return finish(true, [], { exitCode: 0, leftovers: last.leftovers });
    }
    if (last.aborted) {
      return fail(
        "Interrupted",
        `${what} was stopped by a signal to vmsnap (attempt ${attempt}); ${
          describeKill(last, "the script")
        }`,
      );
    }
    if (last.timedOut) break;
    if (attempt <= step.retries) {
      env.log("info", "script-retry", { plugin, phase, attempt: attempt + 1 });
      await sleep(Math.min(500 * attempt, Math.max(0, deadline - performance.now())), env.signal);
      if (env.signal.aborted) {
        return fail("Interrupted", `${what} was not retried: vmsnap received a signal.`);
      }
    }
  }
  const tries = attempts.length;
  if (!last || last.timedOut || performance.now() >= deadline) {
    return fail(
      CODES[phase].timeout,
      `${what} did not finish within timeoutInSeconds (${options.timeoutInSeconds} s for all ${tries} attempt(s) together); ${
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
    CODES[phase].failed,
    `${what} ${how} on attempt ${tries} of ${step.retries + 1}.${
      lastLines(last.tail)
    }\n  Fix: run the script by hand (${step.path}) and read the log; correct it or the application it drives.`,
  );
}
