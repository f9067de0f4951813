/**
 * vmsnap's exit codes, one per kind of outcome.
 *
 * @module
 */

/**
 * The exit codes, by kind: `ok` done as asked; `degraded` done with problems; `failed` nothing
 * done; `usage` a usage error.
 *
 * @example
 * ```ts
 * import { EXIT } from "./exit_codes.ts";
 * process.exitCode = EXIT.usage; // 64
 * ```
 */
export const EXIT = { ok: 0, degraded: 1, failed: 2, usage: 64 } as const;
