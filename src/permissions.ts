/**
 * Azure's permission rules, made strict. A file that vmsnap reads secrets from
 * or runs as root must be owned by root, closed to group and other, and reached
 * only through directories that only root can change — otherwise a non-root
 * user could swap it. Symlinks are followed component by component, and every
 * directory walked through, on the way to the link and on the way to its
 * target, is judged.
 *
 * @module
 */
import { lstatSync, mkdirSync, readlinkSync, type Stats } from "node:fs";
import { dirname, isAbsolute, join } from "node:path";
import { type Code, octal, type Problem, VmsnapError } from "./errors.ts";

/** What a file is for, which decides its rule. */
export type FileRole =
  /** The config file or a secret file: no group/other bits and no execute bit. */
  | "config"
  /** A script or executable: no group/other bits, no setuid/setgid. */
  | "script";

/** How to check one file and what to call a failure. */
export interface FileRule {
  role: FileRole;
  /** Code when the file does not exist. */
  notFound: Code;
  /** Code when a rule fails. */
  permission: Code;
  /** What the file is, for messages: "pre-script", "config file". */
  what: string;
}

/** The result of walking a path: where it really leads, and what was wrong. */
export interface ResolvedPath {
  /** The path with every symlink resolved (even when it does not exist). */
  realPath: string;
  /** The final file's lstat, or undefined when it does not exist. */
  stat?: Stats;
  /** Why a directory on the way is not safe, one message each. */
  unsafe: string[];
  /** Set when the walk failed (loop, a file where a directory should be). */
  error?: string;
}

const MAX_SYMLINKS = 40;

/** Why a directory is unsafe, or undefined when only root can change it. */
function directoryFault(path: string, stat: Stats): string | undefined {
  if (stat.uid !== 0) {
    return `directory ${path} is owned by uid ${stat.uid}, not root, so that user could replace what is in it`;
  }
  if (stat.mode & 0o022) {
    const who = stat.mode & 0o020 && stat.mode & 0o002
      ? "group and other"
      : stat.mode & 0o020
      ? "group"
      : "other";
    const sticky = stat.mode & 0o1000 ? "; the sticky bit does not make it safe" : "";
    return `directory ${path} is writable by ${who} (mode ${octal(stat.mode)}${sticky})`;
  }
  return undefined;
}

/**
 * Walks an absolute path from `/`, following symlinks, and judges every
 * directory passed through.
 *
 * @example
 * ```ts
 * import { resolveSecurely } from "./permissions.ts";
 * const { realPath, unsafe } = resolveSecurely("/etc/azure/pre.sh");
 * if (unsafe.length) console.error(unsafe.join("; "));
 * ```
 */
export function resolveSecurely(path: string): ResolvedPath {
  const unsafe: string[] = [];
  const judged = new Set<string>();
  const judge = (dir: string) => {
    if (judged.has(dir)) return;
    judged.add(dir);
    const fault = directoryFault(dir, lstatSync(dir));
    if (fault) unsafe.push(fault);
  };
  let current = "/";
  judge(current);
  let pending = path.split("/").filter((part) => part !== "" && part !== ".");
  let links = 0;
  while (pending.length > 0) {
    const part = pending.shift()!;
    if (part === "..") {
      current = dirname(current);
      continue;
    }
    const next = join(current, part);
    let stat: Stats;
    try {
      stat = lstatSync(next);
    } catch (error) {
      const code = (error as NodeJS.ErrnoException).code;
      const rest = join(next, ...pending);
      if (code === "ENOENT") return { realPath: rest, unsafe };
      if (code === "ENOTDIR") {
        return { realPath: rest, unsafe, error: `${current} is not a directory` };
      }
      return { realPath: rest, unsafe, error: `cannot read ${next}: ${(error as Error).message}` };
    }
    if (stat.isSymbolicLink()) {
      if (++links > MAX_SYMLINKS) {
        return { realPath: next, unsafe, error: `too many symbolic links at ${next} (a loop?)` };
      }
      const target = readlinkSync(next);
      const targetParts = target.split("/").filter((p) => p !== "" && p !== ".");
      if (isAbsolute(target)) current = "/";
      pending = [...targetParts, ...pending];
      continue;
    }
    if (stat.isDirectory()) {
      judge(next);
      current = next;
      continue;
    }
    if (pending.length > 0) {
      return { realPath: join(next, ...pending), unsafe, error: `${next} is not a directory` };
    }
    return { realPath: next, stat, unsafe };
  }
  // The path names a directory.
  return { realPath: current, stat: lstatSync(current), unsafe };
}

/**
 * Checks a file that vmsnap will read secrets from or run as root.
 * Returns problems without a location; the caller adds where the path was configured.
 *
 * @example
 * ```ts
 * import { checkFile } from "./permissions.ts";
 * const problems = checkFile("/etc/azure/pre.sh", {
 *   role: "script",
 *   notFound: "Pre-ScriptNotFound",
 *   permission: "InsufficientPermissionforPre-Script",
 *   what: "pre-script",
 * });
 * ```
 */
export function checkFile(path: string, rule: FileRule): Problem[] {
  const problem = (code: Code, message: string): Problem[] => [{ code, message }];
  if (!isAbsolute(path)) {
    return problem(
      "RelativePath",
      `${rule.what} ${path} is not an absolute path. Fix: write the full path.`,
    );
  }
  let resolved: ResolvedPath;
  try {
    resolved = resolveSecurely(path);
  } catch (error) {
    return problem(rule.permission, `${rule.what} ${path}: ${(error as Error).message}`);
  }
  const via = resolved.realPath !== path ? ` (a link to ${resolved.realPath})` : "";
  const named = `${rule.what} ${path}${via}`;
  if (resolved.error) return problem(rule.permission, `${named}: ${resolved.error}.`);
  if (!resolved.stat) {
    return problem(
      rule.notFound,
      `${named} does not exist. Fix: install it there or correct the path.`,
    );
  }
  const { stat, realPath } = resolved;
  const faults: string[] = [];
  const fixes: string[] = [];
  if (!stat.isFile()) {
    faults.push("it is not a regular file");
  } else {
    if (stat.uid !== 0) {
      faults.push(`it is owned by uid ${stat.uid}, not root`);
      fixes.push(`chown root:root ${realPath}`);
    }
    const wanted = rule.role === "config" ? "600" : "700";
    const badBits = rule.role === "config" ? 0o7177 : 0o6077;
    if (stat.mode & badBits) {
      const reasons = [];
      if (stat.mode & 0o077) reasons.push("group or other have permission bits");
      if (rule.role === "config" && stat.mode & 0o111) reasons.push("it is executable");
      if (stat.mode & 0o6000) reasons.push("it is setuid or setgid");
      if (stat.mode & 0o1000 && rule.role === "config") reasons.push("it is sticky");
      faults.push(
        `mode ${octal(stat.mode)}: ${reasons.join(", ")} (must be ${wanted} or stricter)`,
      );
      fixes.push(`chmod ${wanted} ${realPath}`);
    }
  }
  for (const fault of resolved.unsafe) {
    faults.push(fault);
    fixes.push("move the file into a directory only root can write (such as /etc/azure)");
  }
  if (faults.length === 0) return [];
  return problem(
    rule.permission,
    `${named} is refused: ${faults.join("; ")}. Fix: ${
      [...new Set(fixes)].join(" && ") || "replace it with a regular file"
    }.`,
  );
}

/**
 * Checks a directory vmsnap writes to (the log's, the state directory). A
 * missing one is fine when `create` is false (it will be created 0700 by
 * {@linkcode ensureDirectory}); an existing one must be root's and closed to
 * group/other writes.
 *
 * @example
 * ```ts
 * import { checkDirectory } from "./permissions.ts";
 * checkDirectory("/var/lib/vmsnap", "stateDir");
 * ```
 */
export function checkDirectory(path: string, what: string): Problem[] {
  let resolved: ResolvedPath;
  try {
    resolved = resolveSecurely(path);
  } catch (error) {
    return [{ code: "InsecureDirectory", message: `${what} ${path}: ${(error as Error).message}` }];
  }
  const faults = [...resolved.unsafe];
  if (resolved.error) faults.push(resolved.error);
  else if (resolved.stat && !resolved.stat.isDirectory()) faults.push(`${path} is not a directory`);
  if (faults.length === 0) return [];
  return [{
    code: "InsecureDirectory",
    message: `${what} ${path} is refused: ${
      faults.join("; ")
    }. Fix: chown root:root and chmod 700 the directory (or go-w on the parents), or choose another path.`,
  }];
}

/**
 * Creates a directory (and missing parents) with mode 0700 after checking it,
 * or throws a {@linkcode VmsnapError} with code `InsecureDirectory`.
 *
 * @example
 * ```ts
 * import { ensureDirectory } from "./permissions.ts";
 * ensureDirectory("/var/lib/vmsnap", "stateDir");
 * ```
 */
export function ensureDirectory(path: string, what: string): void {
  const before = checkDirectory(path, what);
  if (before.length > 0) throw new VmsnapError("InsecureDirectory", before[0].message, before);
  mkdirSync(path, { recursive: true, mode: 0o700 });
}
