/**
 * The last result of either mode (`run`, or a hook's freeze and thaw), kept
 * in `<stateDir>/last-result.json` (mode 0600) for `vmsnap status` and for a
 * later hook that must say how a hold ended. Written whole (a temporary file,
 * synced, renamed into place: a reader sees the previous result or the new
 * one, never half), never while anything is frozen; secrets are scrubbed as
 * in every output. A write that fails leaves nothing behind.
 *
 * @module
 */
import {
  closeSync,
  fsyncSync,
  openSync,
  readFileSync,
  renameSync,
  unlinkSync,
  writeSync,
} from "node:fs";
import { join } from "node:path";
import process from "node:process";
import { redact } from "../secrets.ts";

/**
 * The file under stateDir.
 *
 * @example
 * ```ts
 * import { lastResultPath } from "./last_result.ts";
 * lastResultPath("/var/lib/vmsnap"); // "/var/lib/vmsnap/last-result.json"
 * ```
 */
export function lastResultPath(stateDir: string): string {
  return join(stateDir, "last-result.json");
}

/**
 * Writes the result; returns the error message when it could not (then the
 * previous result stays in place and no temporary file is left).
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
  let fd: number | undefined;
  try {
    fd = openSync(fresh, "w", 0o600);
    writeSync(fd, `${redact(JSON.stringify(result))}\n`);
    fsyncSync(fd);
    closeSync(fd);
    fd = undefined;
    renameSync(fresh, path);
    return undefined;
  } catch (error) {
    if (fd !== undefined) closeSync(fd);
    try {
      unlinkSync(fresh);
    } catch {
      // never created
    }
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
