/**
 * The programs verify runs, found on vmsnap's fixed PATH (never the
 * caller's), so a directory an unprivileged user controls can never supply
 * one.
 *
 * @module
 */
import { accessSync, constants, statSync } from "node:fs";
import { join } from "node:path";
import { FIXED_PATH } from "../sys/permissions.ts";

/**
 * The absolute path of an executable on vmsnap's fixed PATH, or undefined.
 * An absolute `name` is returned when it is an executable file.
 *
 * @example
 * ```ts
 * import { findTool } from "./tools.ts";
 * findTool("nsenter"); // "/usr/bin/nsenter"
 * ```
 */
export function findTool(name: string, path = FIXED_PATH): string | undefined {
  const candidates = name.startsWith("/") ? [name] : path.split(":").map((dir) => join(dir, name));
  for (const candidate of candidates) {
    try {
      if (!statSync(candidate).isFile()) continue;
      accessSync(candidate, constants.X_OK);
      return candidate;
    } catch {
      // not here
    }
  }
  return undefined;
}
