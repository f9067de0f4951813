/**
 * The plugins of a run: each one's checks (a plugin that fails them does not
 * run), quiesce stage by stage before the freeze, resume in reverse after the
 * thaw.
 *
 * @module
 */
import type { Config } from "../config/config.ts";
import { withFix } from "../errors.ts";
import { pluginProblems } from "../preflight/preflight.ts";
import { runStaged } from "./stages.ts";
import type { PreparedRun, RunPlugin, RunState } from "./state.ts";
import type { PluginEnv } from "../../plugins/plugin.ts";
import type { StepResult } from "../protocol.ts";

/**
 * Each plugin's own checks: a plugin that fails them does not run.
 *
 * @example
 * ```ts
 * import type { Config } from "../config/config.ts";
 * import { preparePlugins } from "./plugins.ts";
 * import type { RunState } from "./state.ts";
 * declare const run: RunState;
 * declare const config: Config;
 * await preparePlugins(run, config);
 * ```
 */
export async function preparePlugins(run: RunState, config: Config): Promise<void> {
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
    for (const p of problems) run.fail({ code: p.code, message: p.message, plugin: plugin.name });
  }
}

function pluginEnv(run: PreparedRun, signal: AbortSignal): PluginEnv {
  return {
    runId: run.runId,
    stateDir: run.setup.config.stateDir,
    configFile: run.setup.config.file,
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
      step === "resume" ||
      (!signal.aborted && (!failed || run.setup.config.continueBackupOnFailure)),
    step: (group) =>
      Promise.all(group.map(async (p) => {
        const result = await p.runtime![step](pluginEnv(run, signal));
        if (!result.ok) failed = true;
        recordStep(run, p, step, result);
      })).then(() => {}),
  });
  run.output.event({
    event: step === "quiesce" ? "quiesced" : "resumed",
    runId: run.runId,
    plugins: plugins.map((p) => ({ name: p.config.name, ok: p.report[step]?.ok })),
  });
}

/** One plugin's quiesce or resume: in its report, the run's errors, the log and the timeline. */
function recordStep(
  run: PreparedRun,
  plugin: RunPlugin,
  step: "quiesce" | "resume",
  result: StepResult,
): void {
  const { name, stage } = plugin.config;
  plugin.report[step] = result;
  for (const error of result.errors) run.fail(error);
  if (result.notHeld) {
    run.warn({ code: "PluginNotHeld", message: result.notHeld.reason, plugin: name });
  }
  run.log.record(result.ok ? "info" : "error", step, {
    plugin: name,
    ok: result.ok,
    durationMs: result.durationMs,
    ...(stage ? { stage } : {}),
  });
  const outcome = result.ok
    ? (result.skipped
      ? "nothing to do"
      : result.notHeld
      ? "ok, writes not held (PluginNotHeld)"
      : "ok")
    : result.errors[0]?.code;
  run.output.say(step, `${name}: ${outcome} (${result.durationMs} ms)`);
}

/** What quiesce leaves for the snapshot. */
export interface Quiesced {
  /** Why no snapshot may be taken (a failed quiesce without continueBackupOnFailure). */
  noSnapshot?: string;
}

/**
 * Every ready plugin's pre step, in parallel. A failure with
 * `continueBackupOnFailure: false` forbids the snapshot (`noSnapshot`).
 *
 * @example
 * ```ts
 * import { quiesceAll } from "./plugins.ts";
 * import type { PreparedRun } from "./state.ts";
 * declare const run: PreparedRun;
 * const { noSnapshot } = await quiesceAll(run);
 * ```
 */
export async function quiesceAll(run: PreparedRun): Promise<Quiesced> {
  await run.deps.pause("quiesce", run.interrupt.signal);
  if (run.interrupt.signal.aborted) return {};
  const ready = run.plugins.filter((p) => p.runtime);
  if (ready.length === 0) return {};
  await pluginStep(run, ready, "quiesce", run.interrupt.signal);
  const failed = ready.find((p) => !p.report.quiesce?.ok);
  if (!failed || run.setup.config.continueBackupOnFailure) return {};
  return {
    noSnapshot:
      `plugin ${failed.config.name} failed to quiesce and continueBackupOnFailure is false`,
  };
}

/**
 * The post step of every plugin whose pre step was attempted, in parallel. A
 * signal does not stop it: the applications must come back.
 *
 * @example
 * ```ts
 * import { resumeAll } from "./plugins.ts";
 * import type { PreparedRun } from "./state.ts";
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
 * import { quiesceAll, snapshotWanted } from "./plugins.ts";
 * import type { PreparedRun } from "./state.ts";
 * declare const run: PreparedRun;
 * if (snapshotWanted(run, await quiesceAll(run))) console.log("freezing");
 * ```
 */
export function snapshotWanted(run: PreparedRun, quiesced: Quiesced): boolean {
  if (run.interrupt.signal.aborted) return false;
  const { noSnapshot } = quiesced;
  if (!noSnapshot) return true;
  run.log.record("warning", "no-snapshot", { reason: noSnapshot });
  run.output.say("snapshot", `skipped: ${noSnapshot}`);
  return false;
}
