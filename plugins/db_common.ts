/**
 * What the database plugins share: credentials from root-only files (never
 * in argv, never in a log: every secret is registered for scrubbing), the
 * keys every database plugin has, bounded waits, and the lock watchdog that
 * releases a lock when resume has not come in time.
 *
 * @module
 */
import { readFileSync, unlinkSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import process from "node:process";
import { processStart } from "../src/sys/process_identity.ts";
import { checkFile } from "../src/sys/permissions.ts";
import { addSecret } from "../src/secrets.ts";
import type { Field } from "../src/config/spec.ts";
import { type Code, type Problem, toProblem, VmsnapError } from "../src/errors.ts";
import type {
  LockMarker,
  NotHeld,
  PluginEnv,
  PluginRuntime,
  RunError,
  StepResult,
} from "./plugin.ts";

/** The limits every database plugin has. */
export const DB_LIMIT_FIELDS = {
  /** Connect + quiesce budget. */
  timeoutInSeconds: { type: "integer", min: 1, max: 3600, default: 30 },
  /** The watchdog releases the lock if resume has not come by then. */
  maxHoldSeconds: { type: "integer", min: 1, max: 86400, default: 300 },
} as const satisfies Record<string, Field>;

/** Keys every database plugin with a password has: the limits and the credentials. */
export const DB_FIELDS = {
  ...DB_LIMIT_FIELDS,
  passwordFile: { type: "string", absolutePath: true },
  password: { type: "string" },
} as const satisfies Record<string, Field>;

/** Checks a secret file like the config file (root, 0600, root-only directories). */
export function checkSecretFile(path: string, plugin: string, key: string): Problem[] {
  return checkFile(path, {
    role: "config",
    notFound: "InsufficientPermissionforConfigFile",
    permission: "InsufficientPermissionforConfigFile",
    what: `${key} of plugin "${plugin}"`,
  }).map((p) => ({ ...p, plugin }));
}

/**
 * Reads a secret from a root-only file (its first line, without the newline),
 * registers it for scrubbing, and returns it. Throws when the file fails the
 * rules.
 *
 * @example
 * ```ts
 * import { readSecret } from "./db_common.ts";
 * const password = readSecret("/etc/vmsnap/mysql.pw", "db", "passwordFile");
 * ```
 */
export function readSecret(path: string, plugin: string, key: string): string {
  const refused = checkSecretFile(path, plugin, key);
  if (refused.length > 0) throw new PluginFailure("PluginConnectFailed", refused[0].message);
  const secret = readFileSync(path, "utf8").split(/\r?\n/)[0];
  addSecret(secret);
  return secret;
}

/** The password of a plugin config: `passwordFile`, else `password`, else none (socket auth). */
export function passwordOf(
  config: { name: string; passwordFile?: string; password?: string },
): string | undefined {
  if (config.passwordFile) return readSecret(config.passwordFile, config.name, "passwordFile");
  if (config.password !== undefined) addSecret(config.password);
  return config.password;
}

/** A failure with a code, thrown inside a plugin and turned into its StepResult. */
export class PluginFailure extends VmsnapError {
  /** The server did not answer in time (or the run was interrupted): close without a goodbye. */
  readonly unresponsive: boolean;

  constructor(
    code: Code,
    message: string,
    options: { cause?: unknown; unresponsive?: boolean } = {},
  ) {
    super(code, message, { cause: options.cause });
    this.name = "PluginFailure";
    this.unresponsive = options.unresponsive ?? false;
  }
}

/** Runs `work` with a deadline and an abort signal; see {@link WithinOptions}. */
export interface WithinOptions<T> {
  /** The deadline in milliseconds. */
  ms: number;
  /** The code of the failure when the deadline passes. */
  code: Code;
  /** The message of the failure when the deadline passes. */
  message: string;
  /** The run's abort signal: an abort fails the work with `Interrupted`. */
  signal?: AbortSignal;
  /** The message when `signal` aborts. */
  abortMessage?: string;
  /** Closes a value that arrives after the deadline or the abort (a late connection). */
  dispose?: (value: T) => unknown;
}

/**
 * Runs `work` with a deadline and the run's abort signal. The loser is
 * cancelled and closed: when the deadline passes or the signal aborts, the
 * signal given to `work` aborts (so it can close its socket), and a value
 * that still arrives later goes to `dispose`, so a connect that times out
 * never becomes an open connection nobody closes.
 *
 * @example
 * ```ts
 * import { within } from "./db_common.ts";
 * const answer = await within(
 *   { ms: 1000, code: "PluginQuiesceTimeout", message: "no answer within 1 s" },
 *   async (_signal) => 42,
 * );
 * ```
 */
export function within<T>(
  options: WithinOptions<T>,
  work: (signal: AbortSignal) => Promise<T>,
): Promise<T> {
  const cancel = new AbortController();
  let settled = false;
  return new Promise<T>((resolve, reject) => {
    const lose = (failure: PluginFailure) => {
      if (settled) return;
      settled = true;
      cleanup();
      cancel.abort(failure);
      reject(failure);
    };
    const timer = setTimeout(
      () => lose(new PluginFailure(options.code, options.message, { unresponsive: true })),
      Math.max(0, options.ms),
    );
    const onAbort = () =>
      lose(
        new PluginFailure(
          "Interrupted",
          options.abortMessage ??
            `${options.message.replace(/\.$/, "")}: vmsnap received a signal.`,
          { unresponsive: true },
        ),
      );
    const cleanup = () => {
      clearTimeout(timer);
      options.signal?.removeEventListener("abort", onAbort);
    };
    if (options.signal?.aborted) return onAbort();
    options.signal?.addEventListener("abort", onAbort, { once: true });
    let running: Promise<T>;
    try {
      running = work(cancel.signal);
    } catch (error) {
      running = Promise.reject(error);
    }
    running.then(
      (value) => {
        if (settled) {
          if (options.dispose) {
            Promise.resolve().then(() => options.dispose!(value)).catch(() => {});
          }
          return;
        }
        settled = true;
        cleanup();
        resolve(value);
      },
      (error) => {
        if (settled) return;
        settled = true;
        cleanup();
        reject(error);
      },
    );
  });
}

/** Builds a step result from facts and errors. */
export function stepResult(
  started: number,
  errors: RunError[],
  facts: Record<string, unknown>,
  extra: { skipped?: boolean; notHeld?: NotHeld } = {},
): StepResult {
  return {
    ok: errors.length === 0,
    durationMs: Math.round(performance.now() - started),
    errors,
    facts,
    ...extra,
  };
}

/** Turns what a plugin threw into a RunError naming it. */
export function asRunError(plugin: string, error: unknown, fallback: Code): RunError {
  // A code only from a VmsnapError (a driver's own `code`, such as ER_*, is not one of ours).
  return { ...toProblem(error, fallback, plugin), plugin };
}

/** The marker file of a plugin's lock in stateDir. */
export function lockMarkerPath(stateDir: string, type: string, plugin: string): string {
  return join(stateDir, `lock-${type}-${plugin.replace(/[^\w.-]/g, "_")}.json`);
}

/**
 * Records, before taking it, a lock that outlives the connection, so that a
 * later vmsnap can release it if this one dies.
 *
 * @example
 * ```ts
 * import { writeLockMarker } from "./db_common.ts";
 * import type { PluginEnv } from "./plugin.ts";
 * declare const env: PluginEnv;
 * const path = writeLockMarker(env, "mongodb", "orders");
 * ```
 */
export function writeLockMarker(env: PluginEnv, type: string, plugin: string): string {
  const marker: LockMarker = {
    type,
    plugin,
    runId: env.runId,
    pid: process.pid,
    started: processStart(process.pid) ?? "",
    configFile: env.configFile,
    since: new Date().toISOString(),
  };
  const path = lockMarkerPath(env.stateDir, type, plugin);
  writeFileSync(path, JSON.stringify(marker), { mode: 0o600 });
  return path;
}

/** Removes a lock marker. */
export function clearLockMarker(path: string): void {
  try {
    unlinkSync(path);
  } catch {
    // gone
  }
}

/** How long ending a session politely may take before it is destroyed. */
export const CLOSE_MS = 2000;

/**
 * The driver's own connect timeout: a little inside the budget, so that the
 * driver's precise reason (refused, no such host) wins over the budget's
 * "took longer".
 */
export function driverConnectMs(config: { timeoutInSeconds: number }): number {
  return Math.max(500, config.timeoutInSeconds * 1000 - 500);
}

/** The limits every database plugin's config has (see {@link DB_FIELDS}). */
export interface DbLimits {
  name: string;
  timeoutInSeconds: number;
  maxHoldSeconds: number;
}

/** What a {@link Budget} covers. */
export interface BudgetOptions {
  /** The plugin's name, for messages. */
  plugin: string;
  /** The budget in seconds (the plugin's `timeoutInSeconds`). */
  seconds: number;
  /** The run's abort signal (resume and the watchdog get one that never aborts). */
  signal: AbortSignal;
  /** The code of a round-trip that overruns the budget. */
  code: Code;
}

/** Extra details of one {@link Budget.step}. */
export interface StepOptions<T> {
  /** The code when the step overruns (default: the budget's). */
  code?: Code;
  /** The whole message when the step overruns (default: says what got no answer). */
  message?: string;
  /** The fix when the step overruns (default: check the server, raise timeoutInSeconds). */
  fix?: string;
  /** Closes a value that arrives after the deadline (a late connection). */
  dispose?: (value: T) => unknown;
}

/**
 * The deadline of one plugin step (quiesce, resume, a watchdog release,
 * `check --connect`): every database round-trip runs through `step`, which
 * gives it what is left of the budget and the run's abort signal.
 *
 * @example
 * ```ts
 * import { Budget } from "./db_common.ts";
 * const budget = new Budget({
 *   plugin: "shop",
 *   seconds: 30,
 *   signal: new AbortController().signal,
 *   code: "PluginQuiesceTimeout",
 * });
 * const version = await budget.step("SELECT VERSION()", async () => "10.11");
 * ```
 */
export class Budget {
  readonly #deadline: number;

  constructor(readonly options: BudgetOptions) {
    this.#deadline = performance.now() + options.seconds * 1000;
  }

  /** Milliseconds left (never below 0). */
  remainingMs(): number {
    return Math.max(0, this.#deadline - performance.now());
  }

  /** The run's abort signal. */
  get signal(): AbortSignal {
    return this.options.signal;
  }

  /** Runs one round-trip within what is left of the budget; obeys the abort signal. */
  step<T>(
    what: string,
    work: (signal: AbortSignal) => Promise<T>,
    extra: StepOptions<T> = {},
  ): Promise<T> {
    const { plugin, seconds } = this.options;
    const fix = extra.fix ??
      "check the server (its log, its disks, its connection limit); raise timeoutInSeconds if it is only slow";
    return within({
      ms: this.remainingMs(),
      code: extra.code ?? this.options.code,
      message: extra.message ??
        `plugin "${plugin}": ${what} got no answer within timeoutInSeconds (${seconds} s); vmsnap closed the session, which releases what it held. Fix: ${fix}.`,
      signal: this.options.signal,
      abortMessage:
        `plugin "${plugin}": ${what} was abandoned: vmsnap received a signal; vmsnap closed the session, which releases what it held.`,
      dispose: extra.dispose,
    }, work);
  }
}

/** Waits `ms`, or less when the signal aborts. */
export function pause(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    const timer = setTimeout(done, ms);
    function done() {
      clearTimeout(timer);
      signal.removeEventListener("abort", done);
      resolve();
    }
    signal.addEventListener("abort", done, { once: true });
  });
}

/** An open database session: ended politely or destroyed at once. */
export interface DbSession {
  /** Ends the session politely (bounded by {@link CLOSE_MS}, then destroyed). */
  end(): Promise<unknown>;
  /** Closes the socket at once. */
  destroy(): void;
}

/**
 * Ends a session: politely within {@link CLOSE_MS}, else (or when `now`)
 * destroyed. Never throws, never waits longer.
 *
 * @example
 * ```ts
 * import { closeSession } from "./db_common.ts";
 * await closeSession({ end: async () => {}, destroy: () => {} });
 * ```
 */
export async function closeSession(session: DbSession | undefined, now = false): Promise<void> {
  if (!session) return;
  if (now) return session.destroy();
  await within(
    { ms: CLOSE_MS, code: "PluginResumeFailed", message: "close" },
    () => Promise.resolve().then(() => session.end()),
  ).catch(() => session.destroy());
}

/** A signal that never aborts (resume and the watchdog always run to their end). */
const NEVER = new AbortController().signal;

/** Opens a session; aborting `signal` must close whatever is half open. */
export type DbConnect<S extends DbSession> = (
  signal: AbortSignal,
  lost: (why: string) => void,
) => Promise<S>;

/** What a database plugin tells {@link dbRuntime}. */
export interface DbPluginSpec<S extends DbSession> {
  /** The plugin type, for log events (`<type>-watchdog-release`). */
  type: string;
  config: DbLimits;
  /** Opens the one session; `lost` is called when the server ends it. */
  connect: DbConnect<S>;
  /**
   * Takes the lock (or flushes), every round-trip through `budget.step`;
   * adds facts; returns whether something is held until resume, or, when
   * writes should have been held and were not, why ({@linkcode NotHeld}).
   */
  quiesce(
    session: S,
    budget: Budget,
    env: PluginEnv,
    facts: Record<string, unknown>,
  ): Promise<boolean | NotHeld>;
  /** Releases the lock at resume; adds facts. Throws `PluginLockLost` when the session had ended. */
  release(
    session: S,
    budget: Budget,
    env: PluginEnv,
    facts: Record<string, unknown>,
  ): Promise<void>;
  /** Releases at the watchdog (default: ending the session releases the lock). */
  watchdogRelease?(session: S, budget: Budget): Promise<void>;
  /** Undoes what outlives the session after a failed quiesce (bounded by CLOSE_MS). */
  abandon?(session: S, budget: Budget): Promise<void>;
  /**
   * Undoes, on a new session, what outlives a lost one (Redis's pause), at
   * resume; returns what it did, for the PluginLockLost message.
   */
  afterLoss?(budget: Budget): Promise<string>;
  /** A quiesce error that is not a PluginFailure, as a RunError. */
  quiesceError?(error: unknown): RunError;
  /** The PluginLockLost message. */
  lostMessage(why: string): string;
  /** The PluginResumeFailed message. */
  resumeFailedMessage(why: string): string;
}

const messageOf = (error: unknown): string => (error as Error)?.message ?? String(error);

/**
 * One database plugin's lock across a run: the session, whether it holds
 * the lock, since when, why it was lost, and the watchdog. quiesce and
 * resume are the only ways in; each returns a StepResult, never throws.
 */
class DbLock<S extends DbSession> implements PluginRuntime {
  #session: S | undefined;
  #held = false;
  #lockedAt = 0;
  #lost: string | undefined;
  #watchdog: ReturnType<typeof setTimeout> | undefined;
  #releasedByWatchdog = false;

  constructor(private readonly spec: DbPluginSpec<S>) {}

  async quiesce(env: PluginEnv): Promise<StepResult> {
    const started = performance.now();
    const facts: Record<string, unknown> = {};
    const budget = this.#budget(env.signal, "PluginQuiesceTimeout");
    this.#lost = undefined;
    this.#releasedByWatchdog = false;
    try {
      this.#session = await this.#connect(budget);
      const outcome = await this.spec.quiesce(this.#session, budget, env, facts);
      this.#held = outcome === true;
      if (!this.#held) {
        await this.#close();
        return stepResult(started, [], facts, outcome ? { notHeld: outcome as NotHeld } : {});
      }
      this.#lockedAt = performance.now();
      this.#armWatchdog(env);
      return stepResult(started, [], facts);
    } catch (error) {
      return stepResult(started, [await this.#quiesceFailed(error)], facts);
    }
  }

  async resume(env: PluginEnv): Promise<StepResult> {
    const started = performance.now();
    clearTimeout(this.#watchdog);
    if (!this.#held) return stepResult(started, [], {}, { skipped: true });
    this.#held = false;
    const facts: Record<string, unknown> = {
      holdMs: Math.round(performance.now() - this.#lockedAt),
    };
    const errors: RunError[] = [];
    try {
      if (this.#lost || !this.#session) {
        throw new PluginFailure("PluginLockLost", this.#lost ?? "the session ended");
      }
      const budget = this.#budget(env.signal, "PluginResumeFailed");
      await this.spec.release(this.#session, budget, env, facts);
    } catch (error) {
      errors.push(await this.#releaseFailed(error));
    } finally {
      await this.#close();
    }
    facts.lockHeld = !this.#lost;
    return stepResult(started, errors, facts);
  }

  #budget(signal: AbortSignal, code: Code): Budget {
    const { name, timeoutInSeconds } = this.spec.config;
    return new Budget({ plugin: name, seconds: timeoutInSeconds, signal, code });
  }

  async #close(now = false): Promise<void> {
    const closing = this.#session;
    this.#session = undefined;
    await closeSession(closing, now);
  }

  /** Opens the session within the budget; a connection that comes late is closed. */
  #connect(budget: Budget): Promise<S> {
    const { config } = this.spec;
    return budget.step(
      "connecting",
      (signal) =>
        this.spec.connect(signal, (why) => {
          if (this.#held) this.#lost ??= why;
        }),
      {
        code: "PluginConnectFailed",
        message:
          `plugin "${config.name}": connecting took longer than timeoutInSeconds (${config.timeoutInSeconds} s). Fix: check that the server is up and answering; raise timeoutInSeconds if it is only slow.`,
        dispose: (late) => closeSession(late, true),
      },
    );
  }

  /** Releases the lock after maxHoldSeconds if resume has not come by then. */
  #armWatchdog(env: PluginEnv): void {
    const { spec } = this;
    const { config } = spec;
    this.#watchdog = setTimeout(async () => {
      env.log("error", `${spec.type}-watchdog-release`, {
        plugin: config.name,
        maxHoldSeconds: config.maxHoldSeconds,
      });
      this.#lost ??= `released by the watchdog after maxHoldSeconds (${config.maxHoldSeconds} s)`;
      const release = this.#session && spec.watchdogRelease;
      if (release) {
        await release.call(spec, this.#session!, this.#budget(NEVER, "PluginResumeFailed"))
          .then(() => (this.#releasedByWatchdog = true), () => {});
      } else {
        await this.#close();
        this.#releasedByWatchdog = true;
      }
    }, config.maxHoldSeconds * 1000);
  }

  /** After a failed quiesce: undo what outlives the session, close it, say why. */
  async #quiesceFailed(error: unknown): Promise<RunError> {
    const { spec } = this;
    this.#held = false;
    const coded = error instanceof PluginFailure;
    // A server that stopped answering, or a signal: no polite goodbye.
    const now = coded && error.unresponsive;
    if (this.#session && spec.abandon) {
      const undo = new Budget({
        plugin: spec.config.name,
        seconds: CLOSE_MS / 1000,
        signal: NEVER,
        code: "PluginQuiesceFailed",
      });
      await spec.abandon(this.#session, undo).catch(() => {});
    }
    await this.#close(now);
    return coded || !spec.quiesceError
      ? asRunError(spec.config.name, error, "PluginQuiesceFailed")
      : spec.quiesceError(error);
  }

  /** A resume that did not release: the lock was lost (undone where it outlives the session), or the release failed. */
  async #releaseFailed(error: unknown): Promise<RunError> {
    const { spec } = this;
    const isLost = this.#lost !== undefined ||
      (error instanceof PluginFailure && error.code === "PluginLockLost");
    this.#lost ??= isLost ? messageOf(error) : undefined;
    let undone = "";
    if (isLost && spec.afterLoss && !this.#releasedByWatchdog) {
      undone = await spec.afterLoss(this.#budget(NEVER, "PluginResumeFailed")).then(
        (done) => ` ${done}`,
        (e) => ` Undoing it on a new connection failed too: ${messageOf(e)}.`,
      );
    }
    return {
      code: isLost ? "PluginLockLost" : "PluginResumeFailed",
      message: isLost
        ? spec.lostMessage(this.#lost!) + undone
        : spec.resumeFailedMessage(messageOf(error)),
      plugin: spec.config.name,
    };
  }
}

/**
 * The lifecycle every database plugin shares: connect within the budget
 * (a late connection is closed), quiesce with every round-trip bounded and
 * the run's signal obeyed, the watchdog that releases after
 * `maxHoldSeconds`, the lost-session tracking, and resume with its
 * `PluginLockLost`/`PluginResumeFailed` mapping. Every close is bounded.
 *
 * @example
 * ```ts
 * import { dbRuntime } from "./db_common.ts";
 * const runtime = dbRuntime({
 *   type: "demo",
 *   config: { name: "demo", timeoutInSeconds: 5, maxHoldSeconds: 60 },
 *   connect: async () => ({ end: async () => {}, destroy: () => {} }),
 *   quiesce: async () => true,
 *   release: async () => {},
 *   lostMessage: (why) => `lost: ${why}`,
 *   resumeFailedMessage: (why) => `failed: ${why}`,
 * });
 * ```
 */
export function dbRuntime<S extends DbSession>(spec: DbPluginSpec<S>): PluginRuntime {
  return new DbLock(spec);
}

/**
 * Connects one session within `timeoutInSeconds`, runs `use` with the rest
 * of the budget, and closes it (bounded): `check --connect` and `recover`.
 *
 * @example
 * ```ts
 * import { withSession } from "./db_common.ts";
 * const answer = await withSession(
 *   { name: "demo", timeoutInSeconds: 5, maxHoldSeconds: 60 },
 *   async () => ({ end: async () => {}, destroy: () => {} }),
 *   async (_session, _budget) => "ok",
 * );
 * ```
 */
export async function withSession<S extends DbSession, T>(
  config: DbLimits,
  connect: DbConnect<S>,
  use: (session: S, budget: Budget) => Promise<T>,
): Promise<T> {
  const budget = new Budget({
    plugin: config.name,
    seconds: config.timeoutInSeconds,
    signal: NEVER,
    code: "PluginConnectFailed",
  });
  const session = await budget.step("connecting", (signal) => connect(signal, () => {}), {
    dispose: (late) => closeSession(late, true),
  });
  try {
    return await use(session, budget);
  } finally {
    await closeSession(session);
  }
}

/**
 * A database plugin's config from its validated values; a password inline
 * in the config is registered as a secret (scrubbed from everything printed).
 *
 * @example
 * ```ts
 * import { dbConfig } from "./db_common.ts";
 * const config = dbConfig("redis", { type: "redis", name: "cache", password: "s3cret" });
 * ```
 */
export function dbConfig<T extends string, V extends { type: string; password?: string }>(
  type: T,
  values: V,
): Omit<V, "type"> & { type: T } {
  if (typeof values.password === "string") addSecret(values.password);
  return { ...values, type };
}

/**
 * The problems of a plugin's `passwordFile` (none without one).
 *
 * @example
 * ```ts
 * import { passwordFileProblems } from "./db_common.ts";
 * const problems = passwordFileProblems({ name: "cache", passwordFile: "/etc/vmsnap/redis.pw" });
 * ```
 */
export function passwordFileProblems(config: { name: string; passwordFile?: string }): Problem[] {
  return config.passwordFile
    ? checkSecretFile(config.passwordFile, config.name, "passwordFile")
    : [];
}
