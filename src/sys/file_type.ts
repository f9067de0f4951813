/**
 * What kind of file a path is, in words for a message: vmsnap reads its
 * config and writes its log only as regular files.
 *
 * @module
 */
import type { Stats } from "node:fs";

/**
 * What a non-regular file is called in a message ("a FIFO (named pipe)"), or
 * undefined for a regular file.
 *
 * @example
 * ```ts
 * import { statSync } from "node:fs";
 * import { fileKind } from "./file_type.ts";
 * fileKind(statSync("/dev/zero")); // "a character device"
 * ```
 */
export function fileKind(stats: Stats): string | undefined {
  if (stats.isFile()) return undefined;
  if (stats.isFIFO()) return "a FIFO (named pipe)";
  if (stats.isDirectory()) return "a directory";
  if (stats.isCharacterDevice()) return "a character device";
  if (stats.isBlockDevice()) return "a block device";
  if (stats.isSocket()) return "a socket";
  if (stats.isSymbolicLink()) return "a symbolic link";
  return "not a regular file";
}
