/**
 * `vmsnap __holder`: the hook's holder, this binary in a hidden mode started
 * by `vmsnap hook freeze` only (src/hook/holder.ts).
 *
 * @module
 */

/**
 * Runs the holder until its hold ends; returns its exit code.
 *
 * @example
 * ```ts
 * import { handler } from "./holder.ts";
 * process.exitCode = await handler();
 * ```
 */
export async function handler(): Promise<number> {
  return await (await import("../../hook/holder.ts")).holderMain();
}
