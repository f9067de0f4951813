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
import { processStart } from "../src/lock.ts";
import { checkFile } from "../src/permissions.ts";
import { addSecret } from "../src/secrets.ts";
import type { Field } from "../src/schema.ts";
import type { Code, Problem } from "../src/errors.ts";
import type { LockMarker, PluginEnv, RunError, StepResult } from "./plugin.ts";

/** Keys every database plugin has. */
export const DB_FIELDS: Record<string, Field> = {
  /** Connect + quiesce budget. */
  timeoutInSeconds: { type: "integer", min: 1, max: 3600, default: 30 },
  /** The watchdog releases the lock if resume has not come by then. */
  maxHoldSeconds: { type: "integer", min: 1, max: 86400, default: 300 },
  passwordFile: { type: "string", absolutePath: true },
  password: { type: "string" },
};

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
export class PluginFailure extends Error {
  constructor(readonly code: Code, message: string) {
    super(message);
  }
}

/** Runs `work` with a deadline; rejects with a PluginFailure of `code` when it passes. */
export function within<T>(ms: number, code: Code, message: string, work: Promise<T>): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new PluginFailure(code, message)), ms);
  });
  return Promise.race([work, timeout]).finally(() => clearTimeout(timer));
}

/** Builds a step result from facts and errors. */
export function stepResult(
  started: number,
  errors: RunError[],
  facts: Record<string, unknown>,
  extra: { skipped?: boolean } = {},
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
  if (error instanceof PluginFailure) return { code: error.code, message: error.message, plugin };
  return {
    code: fallback,
    message: `plugin "${plugin}": ${(error as Error).message ?? error}`,
    plugin,
  };
}

/**
 * Releases a lock after `maxHoldSeconds` when resume has not come. The
 * database-side session timeout (set by each plugin) is the second line: it
 * holds even when the agent's event loop is stuck.
 */
export class Watchdog {
  #timer: ReturnType<typeof setTimeout> | undefined;
  fired = false;

  start(seconds: number, release: () => Promise<void> | void): void {
    this.#timer = setTimeout(async () => {
      this.fired = true;
      try {
        await release();
      } catch {
        // The connection is gone, and the lock with it.
      }
    }, seconds * 1000);
  }

  stop(): void {
    clearTimeout(this.#timer);
  }
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
