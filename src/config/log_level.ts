/**
 * Log levels: a leaf module, so that plugins (which log) need not import the
 * config loader (which imports the plugins).
 *
 * @module
 */

/**
 * Log levels, quietest last.
 *
 * @example
 * ```ts
 * import { LOG_LEVELS } from "./log_level.ts";
 * LOG_LEVELS.includes("info"); // true
 * ```
 */
export const LOG_LEVELS = ["debug", "info", "warning", "error"] as const;

/** A log level. */
export type LogLevel = typeof LOG_LEVELS[number];
