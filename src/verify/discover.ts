/**
 * Looking at the snapshot's files from verify's side (through
 * `/proc/<pid>/root`, never following a symbolic link): finding a
 * database's data directory when the manifest does not record it, and the
 * newest modification time under a directory (a snapshot taken in a run's
 * frozen window holds nothing written after the run).
 *
 * @module
 */
import { lstatSync, readdirSync } from "node:fs";
import { join } from "node:path";

/** What marks a data directory, by database type (names in the directory). */
const MARKERS: Record<string, (names: Set<string>) => boolean> = {
  mysql: (n) =>
    n.has("ibdata1") || (n.has("mysql") && (n.has("aria_log_control") || n.has("ib_logfile0"))),
  postgresql: (n) => n.has("PG_VERSION") && n.has("global") && n.has("base"),
  redis: (n) => n.has("dump.rdb") || n.has("appendonlydir") || n.has("appendonly.aof"),
};

/** Directories never searched (relative to the root): system and the servers' own. */
const SKIP = new Set([
  "proc",
  "sys",
  "dev",
  "run",
  "tmp",
  "usr",
  "etc",
  "bin",
  "sbin",
  "lib",
  "lib32",
  "lib64",
  "libx32",
  "boot",
  "opt",
  "snap",
]);

/** How deep and how wide the search goes. */
export const SEARCH_LIMITS = { depth: 6, directories: 50_000 };

/** The names in a directory, or none. */
function names(dir: string): string[] {
  try {
    return readdirSync(dir);
  } catch {
    return [];
  }
}

/**
 * The data directories of a database type under some roots (VM paths, with
 * `reach` turning a VM path into one this process can read). Breadth-first,
 * no symbolic links, within {@linkcode SEARCH_LIMITS}; a data directory's
 * own subdirectories are not searched.
 *
 * @example
 * ```ts
 * import { findDataDirs } from "./discover.ts";
 * findDataDirs("postgresql", ["/"], (p) => `/proc/1234/root/w/root${p}`);
 * ```
 */
export function findDataDirs(
  type: string,
  roots: string[],
  reach: (vmPath: string) => string,
): string[] {
  const marker = MARKERS[type];
  if (!marker) return [];
  const found: string[] = [];
  let seen = 0;
  let level = roots.map((r) => r);
  for (let depth = 0; depth <= SEARCH_LIMITS.depth && level.length > 0; depth++) {
    const next: string[] = [];
    for (const dir of level) {
      if (++seen > SEARCH_LIMITS.directories) return found;
      const entries = names(reach(dir));
      if (marker(new Set(entries))) {
        found.push(dir);
        continue;
      }
      for (const entry of entries) {
        const path = join(dir, entry);
        if (depth === 0 && dir === "/" && SKIP.has(entry)) continue;
        if (entry === "lost+found") continue;
        try {
          if (lstatSync(reach(path)).isDirectory()) next.push(path);
        } catch {
          // gone
        }
      }
    }
    level = next;
  }
  return [...new Set(found)];
}

/** The newest file under a directory. */
export interface Newest {
  path: string;
  mtimeMs: number;
  /** Files looked at. */
  files: number;
}

/**
 * The most recently modified file under `dir` (a path this process can
 * read), at most `limit` entries, no symbolic links followed.
 *
 * @example
 * ```ts
 * import { newestFile } from "./discover.ts";
 * newestFile("/var/lib/mysql")?.mtimeMs;
 * ```
 */
export function newestFile(dir: string, limit = 200_000): Newest | undefined {
  let newest: Newest | undefined;
  let files = 0;
  const stack = [dir];
  while (stack.length > 0 && files < limit) {
    const current = stack.pop()!;
    for (const entry of names(current)) {
      const path = join(current, entry);
      let stat;
      try {
        stat = lstatSync(path);
      } catch {
        continue;
      }
      if (stat.isDirectory()) {
        stack.push(path);
        continue;
      }
      if (!stat.isFile()) continue;
      files++;
      if (!newest || stat.mtimeMs > newest.mtimeMs) {
        newest = { path, mtimeMs: stat.mtimeMs, files: 0 };
      }
    }
  }
  return newest && { ...newest, files };
}
