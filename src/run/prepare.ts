/**
 * Preparing a run: the preflight (root, the config, the snapshot method), the
 * log, the run lock, recovery of what a dead run left, each plugin's checks,
 * and the freeze plan.
 *
 * @module
 */
import process from "node:process";
import {
  type Config,
  type LoadedConfig,
  type LogLevel,
  parseConfig,
  type SnapshotConfig,
} from "../config/config.ts";
import { type Problem, VmsnapError, withFix } from "../errors.ts";
import { EventLog } from "../state/event_log.ts";
import { FreezeSession } from "../freeze/session.ts";
import { acquireRunLock, type RunLock, unwritableStateDir } from "../state/lock.ts";
import {
  configFileProblems,
  freezePlan,
  logFileProblems,
  nothingToFreeze,
  readConfig,
  rootProblems,
  snapshotMethod,
  snapshotMethodProblems,
  syntaxProblems,
} from "../preflight/preflight.ts";
import type { Recovery } from "../protocol.ts";
import {
  clearFreezeMarker,
  describeRecovery,
  recoverAll,
  recoveredAnything,
  thawLeftFrozen,
  writeFreezeMarker,
} from "../state/recover.ts";
import { isPrepared, type PreparedRun, type RunState, stopWith } from "./state.ts";
import { preparePlugins } from "./plugins.ts";
import type { RunDeps } from "./deps.ts";

/** What preparing a run needs besides the run. */
export interface PrepareOptions {
  configPath: string;
  /** `--log-level`, over the config's. */
  logLevel?: LogLevel;
  /** `--snapshot-command ARGV...`. */
  snapshotCommand?: string[];
  /** `--external`. */
  external?: boolean;
  /** Hook mode for an agent that freezes the filesystems itself (qemu-ga, VMware, Azure). */
  agentFreezes?: boolean;
}

/**
 * The preflight of `run`, stopping at the first blocking problem (root, the
 * config's permissions, syntax and values, the snapshot method, the run lock);
 * then recovery of what a dead run left, each plugin's checks (a plugin that
 * fails them does not run), and the freeze plan. Throws
 * {@linkcode RunStopped} when the run cannot go on; what it got to stays in
 * `run.setup`.
 *
 * @example
 * ```ts
 * import process from "node:process";
 * import { newRun } from "./state.ts";
 * import { prepareRun } from "./prepare.ts";
 * const run = newRun({ json: true, streams: { stdout: (t) => process.stdout.write(t), stderr: (t) => process.stderr.write(t) } });
 * const prepared = await prepareRun(run, { configPath: "/etc/azure/VMSnapshotScriptPluginConfig.json", external: true });
 * ```
 */
export async function prepareRun(run: RunState, options: PrepareOptions): Promise<PreparedRun> {
  const { deps, setup } = run;
  run.output.say("check", options.configPath);
  const notRoot = rootProblems(deps.uid() === 0);
  if (notRoot.length) stopWith(run, notRoot);

  // The config: readable, parseable, root's, valid. Otherwise no script runs at all.
  const config = setup.config = usableConfig(run, options);
  // Who freezes is decided before anything is planned or started for a freeze.
  setup.freezeBy = options.agentFreezes ? "agent" : config.fsFreezeEnabled ? "vmsnap" : "nobody";
  // A dead run's freeze may hold the filesystem of stateDir or the log (on a VM: the root):
  // thawed before anything is written there.
  const thawed = await thawLeftFrozen(config.stateDir, deps.createFreezer);
  openLog(run, config, options);
  setup.method = snapshotMethodOf(run, config, options);
  const session = setup.session = openSession(run, config);
  const lock = takeLock(run, config);
  await recoverLeftovers(run, config, lock, thawed);
  await preparePlugins(run, config);
  planTargets(run, config, session);
  const failed = run.plugins.filter((p) => !p.runtime);
  if (failed.length > 0 && !config.continueBackupOnFailure) {
    stopWith(run, [{
      code: failed[0].report.checks[0].code,
      message: `plugin ${
        failed[0].config.name
      } failed its checks and continueBackupOnFailure is false: no snapshot was taken.`,
    }]);
  }
  await session.startPool();
  if (!isPrepared(run)) throw new Error("prepareRun: a part of the run's setup is missing");
  return run;
}

/** The log, now that we know where it goes. */
function openLog(run: RunState, config: Config, options: PrepareOptions): void {
  const logProblems = logFileProblems(config, run.deps.trust);
  run.log = new EventLog({
    runId: run.runId,
    file: logProblems.length ? undefined : config.log.file,
    level: options.logLevel ?? config.log.level,
  });
  if (logProblems.length) {
    run.fail({ code: logProblems[0].code, message: logProblems[0].message });
  }
  run.log.record("info", "run-start", { config: options.configPath, pid: process.pid });
}

/** The snapshot method (the command line's over the config's), or the run stops. */
function snapshotMethodOf(run: RunState, config: Config, options: PrepareOptions): SnapshotConfig {
  const method = snapshotMethod(config, options);
  const noMethod = snapshotMethodProblems(method, options.configPath, run.deps.trust);
  if (!method || noMethod.length > 0) stopWith(run, noMethod);
  return method;
}

/**
 * The freeze session (src/freeze/session.ts): with vmsnap freezing, its guard
 * starts now, in parallel with the rest of the checks and quiesce.
 */
function openSession(run: RunState, config: Config): FreezeSession {
  const { stateDir } = config;
  return new FreezeSession({
    runId: run.runId,
    stateDir,
    enabled: run.setup.freezeBy === "vmsnap",
    freeze: config.freeze,
    deps: run.deps,
    log: run.log,
    alsoHold: [run.output],
    marker: {
      write(marker) {
        try {
          writeFreezeMarker(stateDir, marker);
        } catch (error) {
          throw unwritableStateDir(stateDir, error) ?? error;
        }
      },
      clear: () => clearFreezeMarker(stateDir),
    },
    fail: run.fail,
    warn: run.warn,
  });
}

/**
 * The config when it can be used: readable, parseable, root's, valid. When it
 * cannot and the command line names a snapshot method anyway, the run goes on
 * as Azure's framework does (no scripts, the default freeze, the problem
 * reported, a lower consistency than asked); otherwise the run stops.
 */
function usableConfig(run: RunState, options: PrepareOptions): Config {
  const blocking = configProblems(options.configPath, run.deps);
  if (blocking.loaded) {
    // What Azure's framework tolerates, run accepts the same way, each with its warning.
    run.warn(...blocking.loaded.lenient, ...blocking.loaded.warnings);
    return blocking.loaded.config;
  }
  const problems = blocking.problems.map(withFix);
  if (!options.snapshotCommand && !options.external) {
    if (!blocking.values) stopWith(run, problems);
    for (const { code, message } of problems) run.fail({ code, message });
    stopWith(run, [invalidConfig(options.configPath, problems.length)]);
  }
  run.setup.configFallback = true;
  const [first, ...rest] = problems;
  run.fail({
    code: first.code,
    message:
      `${first.message} As Azure's framework does, the snapshot was taken anyway: no scripts were run, the default freeze (fsFreezeEnabled, freeze.mounts "auto") and the default stateDir and log were used, so the snapshot is at most filesystem-consistent.`,
  });
  for (const { code, message } of rest) run.fail({ code, message });
  return parseConfig("{}", options.configPath, { plugins: run.deps.plugins }).config;
}

/**
 * The config's blocking problems (unreadable, syntax, permissions, or its
 * values: `values`), or the loaded config.
 */
function configProblems(
  path: string,
  { trust, plugins }: Pick<RunDeps, "trust" | "plugins">,
): { loaded?: LoadedConfig; problems: Problem[]; values?: true } {
  const read = readConfig(path, { plugins });
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
    return run.setup.lock = acquireRunLock(config.stateDir, run.runId);
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
  const recovered = await recoverAll(config.stateDir, {
    deadRun: lock.tookOverFrom,
    thawed,
    plugins: run.deps.plugins,
  });
  if (!recoveredAnything(recovered)) return;
  run.setup.recovered = recovered;
  run.log.record("warning", "recovered", { ...recovered });
  for (const problem of describeRecovery(recovered)) {
    run.warn(problem);
    run.output.say("recover", problem.message);
  }
  for (const left of recovered.pluginLocks.filter((l) => l.error)) {
    run.fail({
      code: "PluginResumeFailed",
      message: `a lock left by run ${left.runId}: ${left.error}`,
      plugin: left.plugin,
    });
  }
}

/**
 * The freeze targets and the plan's problems (they fail the freeze, not the
 * run), when vmsnap freezes.
 */
function planTargets(run: RunState, config: Config, session: FreezeSession): void {
  if (run.setup.freezeBy !== "vmsnap") return;
  const { plan, problems } = freezePlan(config, run.deps.readMounts);
  session.plan({ targets: plan?.targets ?? [], problems });
  if (plan) run.warn(...plan.warnings, ...nothingToFreeze(plan));
}
