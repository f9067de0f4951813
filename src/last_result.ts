/**
 * The last result of either mode (`run`, or a hook's freeze and thaw), kept
 * in `<stateDir>/last-result.json` (mode 0600) for `vmsnap status` and for a
 * later hook that must say how a hold ended. Written whole (a temporary file
 * renamed into place), never while anything is frozen.
 *
 * @module
 */
import { readFileSync, renameSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import process from "node:process";

/** The file under stateDir. */
export function lastResultPath(stateDir: string): string {
  return join(stateDir, "last-result.json");
}

/**
 * Writes the result; returns the error message when it could not.
 *
 * @example
 * ```ts
 * import { writeLastResult } from "./last_result.ts";
 * writeLastResult("/var/lib/vmsnap", { event: "result", runId: "r1", exitCode: 0 });
 * ```
 */
export function writeLastResult(stateDir: string, result: object): string | undefined {
  const path = lastResultPath(stateDir);
  const fresh = `${path}.new-${process.pid}`;
  try {
    writeFileSync(fresh, `${JSON.stringify(result)}\n`, { mode: 0o600 });
    renameSync(fresh, path);
    return undefined;
  } catch (error) {
    return `${path}: ${(error as Error).message}`;
  }
}

/**
 * Reads the last result, or undefined when there is none (or it is damaged).
 *
 * @example
 * ```ts
 * import { readLastResult } from "./last_result.ts";
 * const last = readLastResult("/var/lib/vmsnap");
 * ```
 */
// deno-lint-ignore no-explicit-any
export function readLastResult<T = any>(stateDir: string): T | undefined {
  try {
    return JSON.parse(readFileSync(lastResultPath(stateDir), "utf8")) as T;
  } catch {
    return undefined;
  }
}
