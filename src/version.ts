/**
 * The version of vmsnap, compiled into the binary (nothing is read from the
 * source tree at run time). A unit test keeps it equal to package.json's.
 *
 * @example
 * ```ts
 * import { VERSION } from "./version.ts";
 * console.log(`vmsnap ${VERSION}`);
 * ```
 */
export const VERSION = "0.1.0";
