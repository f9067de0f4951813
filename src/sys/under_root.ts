/**
 * Files of a target system read under a root prefix (`--root`): paths are
 * the target's, and a symbolic link is followed inside the root (an
 * absolute link target is the target system's path, not this machine's).
 *
 * @module
 */
import { accessSync, constants, lstatSync, readFileSync, readlinkSync, type Stats } from "node:fs";
import { posix } from "node:path";

/** Links followed at most while resolving one path (as the kernel's ELOOP limit). */
const MAX_LINKS = 40;

/**
 * The path with every symbolic link resolved inside the root, as the target
 * system would resolve it; undefined when a component is missing or the
 * links loop.
 *
 * @example
 * ```ts
 * import { resolveUnder } from "./under_root.ts";
 * resolveUnder("/", "/etc/qemu/fsfreeze-hook"); // the real path, or undefined
 * ```
 */
export function resolveUnder(root: string, path: string): string | undefined {
  const pending = posix.normalize(path).split("/").filter((p) => p !== "" && p !== ".");
  let resolved = "/";
  let links = 0;
  while (pending.length > 0) {
    const part = pending.shift()!;
    if (part === "..") {
      resolved = posix.dirname(resolved);
      continue;
    }
    const next = posix.join(resolved, part);
    let stat: Stats;
    try {
      stat = lstatSync(posix.join(root, next));
    } catch {
      return undefined;
    }
    if (!stat.isSymbolicLink()) {
      resolved = next;
      continue;
    }
    if (++links > MAX_LINKS) return undefined;
    const target = readlinkSync(posix.join(root, next));
    if (target.startsWith("/")) resolved = "/";
    pending.unshift(...target.split("/").filter((p) => p !== "" && p !== "."));
  }
  return resolved;
}

/** The host path of a target path, links resolved inside the root. */
function hostPath(root: string, path: string): string | undefined {
  const resolved = resolveUnder(root, path);
  return resolved === undefined ? undefined : posix.join(root, resolved);
}

/**
 * A text file of the target system, or undefined when it is missing or
 * unreadable.
 *
 * @example
 * ```ts
 * import { readUnder } from "./under_root.ts";
 * readUnder("/", "/etc/sysconfig/qemu-ga") ?? "";
 * ```
 */
export function readUnder(root: string, path: string): string | undefined {
  const host = hostPath(root, path);
  if (host === undefined) return undefined;
  try {
    return readFileSync(host, "utf8");
  } catch {
    return undefined;
  }
}

/**
 * What a target path is: a regular file, a directory, something else, or
 * missing (links followed inside the root); and whether it is executable.
 *
 * @example
 * ```ts
 * import { kindUnder } from "./under_root.ts";
 * kindUnder("/", "/etc/qemu").kind; // "directory" on Debian with qemu-guest-agent
 * ```
 */
export function kindUnder(
  root: string,
  path: string,
): { kind: "file" | "directory" | "other" | "missing"; executable: boolean; link: boolean } {
  let link = false;
  try {
    link = lstatSync(posix.join(root, path)).isSymbolicLink();
  } catch {
    // missing: reported below
  }
  const host = hostPath(root, path);
  if (host === undefined) return { kind: "missing", executable: false, link };
  const stat = lstatSync(host);
  const kind = stat.isFile() ? "file" : stat.isDirectory() ? "directory" : "other";
  let executable = false;
  try {
    accessSync(host, constants.X_OK);
    executable = kind === "file" && (stat.mode & 0o111) !== 0;
  } catch {
    executable = false;
  }
  return { kind, executable, link };
}
