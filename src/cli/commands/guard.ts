/**
 * `vmsnap __guard`: the freeze guard, this binary in a hidden mode started by
 * `run` only (src/freeze/guard.ts).
 *
 * @module
 */

/**
 * Runs the guard until it is released; returns its exit code.
 *
 * @example
 * ```ts
 * import { handler } from "./guard.ts";
 * process.exitCode = await handler();
 * ```
 */
export async function handler(): Promise<number> {
  return await (await import("../../freeze/guard.ts")).guardMain();
}
