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
import {
  closeSync,
  lstatSync,
  mkdirSync,
  openSync,
  readlinkSync,
  readSync,
  type Stats,
  statSync,
} from "node:fs";
import { basename, dirname, isAbsolute, join } from "node:path";
import { type Code, octal, type Problem, VmsnapError } from "../errors.ts";

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
  const wanted = rule.role === "config" ? "600" : "700";
  const badBits = rule.role === "config" ? 0o7177 : 0o6077;
  return judgeFile(path, rule, (stat, realPath) => {
    if (!(stat.mode & badBits)) return undefined;
    const reasons = [];
    if (stat.mode & 0o077) reasons.push("group or other have permission bits");
    if (rule.role === "config" && stat.mode & 0o111) reasons.push("it is executable");
    if (stat.mode & 0o6000) reasons.push("it is setuid or setgid");
    if (stat.mode & 0o1000 && rule.role === "config") reasons.push("it is sticky");
    return {
      fault: `mode ${octal(stat.mode)}: ${reasons.join(", ")} (must be ${wanted} or stricter)`,
      fix: `chmod ${wanted} ${realPath}`,
    };
  }).problems;
}

/**
 * Judges a file: it exists at an absolute path, is a regular file owned by
 * root, passes `modeFault`, and every directory on the way is root's.
 */
function judgeFile(
  path: string,
  rule: Omit<FileRule, "role">,
  modeFault: (stat: Stats, realPath: string) => { fault: string; fix: string } | undefined,
): { problems: Problem[]; realPath?: string } {
  const found = locate(path, rule);
  if ("problems" in found) return found;
  const { stat, realPath, named } = found;
  const faults: string[] = [];
  const fixes: string[] = [];
  if (!stat.isFile()) {
    faults.push("it is not a regular file");
  } else {
    if (stat.uid !== 0) {
      faults.push(`it is owned by uid ${stat.uid}, not root`);
      fixes.push(`chown root:root ${realPath}`);
    }
    const mode = modeFault(stat, realPath);
    if (mode) {
      faults.push(mode.fault);
      fixes.push(mode.fix);
    }
  }
  for (const fault of found.unsafe) {
    faults.push(fault);
    fixes.push("move the file into a directory only root can write (such as /etc/azure)");
  }
  if (faults.length === 0) return { problems: [], realPath };
  return {
    problems: [{
      code: rule.permission,
      message: `${named} is refused: ${faults.join("; ")}. Fix: ${
        [...new Set(fixes)].join(" && ") || "replace it with a regular file"
      }.`,
    }],
  };
}

/** Where a checked path leads, or the problems that end the check early. */
type Located =
  | { problems: Problem[] }
  | { stat: Stats; realPath: string; named: string; unsafe: string[] };

/** Resolves a path for a check: relative, unreadable, missing and broken paths end it. */
function locate(path: string, rule: Omit<FileRule, "role">): Located {
  const problem = (code: Code, message: string) => ({ problems: [{ code, message }] });
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
  return { stat: resolved.stat, realPath: resolved.realPath, named, unsafe: resolved.unsafe };
}

/** How to check an executable and its interpreters, and what to call a failure. */
export type ExecutableRule = Omit<FileRule, "role">;

/** The directories `#!/usr/bin/env NAME` is resolved in: the fixed PATH every child gets. */
export const FIXED_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/** Interpreters of interpreters the kernel follows (Linux allows a few levels; 4 is plenty). */
const MAX_INTERPRETER_DEPTH = 4;

/**
 * The executable rule (OpenSSH's for `AuthorizedKeysCommand`), for the
 * snapshot command and for every interpreter a script names: a regular file
 * owned by root and not writable by group or other, reached only through
 * directories only root can change. So `/usr/bin/cp` at 0755 passes, a
 * user-writable copy is refused. The file's own `#!` interpreter (and
 * `env`'s target) is checked by the same rule.
 *
 * @example
 * ```ts
 * import { checkExecutable } from "./permissions.ts";
 * checkExecutable("/usr/bin/cp", {
 *   notFound: "SnapshotCommandNotFound",
 *   permission: "InsufficientPermissionforSnapshotCommand",
 *   what: "snapshot command",
 * }); // [] on a normal system
 * ```
 */
export function checkExecutable(path: string, rule: ExecutableRule, depth = 0): Problem[] {
  const judged = judgeFile(
    path,
    rule,
    (stat, realPath) =>
      stat.mode & 0o022
        ? {
          fault: `mode ${octal(stat.mode)}: writable by group or other`,
          fix: `chmod go-w ${realPath}`,
        }
        : undefined,
  );
  if (judged.problems.length > 0 || !judged.realPath) return judged.problems;
  return checkInterpreter(judged.realPath, { ...rule, honoursShebang: true }, depth);
}

/** What a file's first line says about how it is run. */
export interface Shebang {
  /** The interpreter's path as written. */
  interpreter: string;
  /** The optional argument (the rest of the line, as the kernel passes it). */
  argument?: string;
}

/**
 * Reads a file's `#!` line the way Linux parses it (the first 256 bytes),
 * or null when it has none (an ELF binary, or a script without one).
 *
 * @example
 * ```ts
 * import { readShebang } from "./permissions.ts";
 * readShebang("/usr/bin/cp"); // null
 * ```
 */
export function readShebang(path: string): Shebang | null {
  const buffer = Buffer.alloc(256);
  const fd = openSync(path, "r");
  let length: number;
  try {
    length = readSync(fd, buffer, 0, buffer.length, 0);
  } finally {
    closeSync(fd);
  }
  const head = buffer.subarray(0, length).toString("latin1");
  if (!head.startsWith("#!")) return null;
  const line = head.slice(2).split("\n")[0].replace(/^[ \t]+|[ \t]+$/g, "");
  const match = /^(\S+)(?:[ \t]+(.*))?$/.exec(line);
  if (!match) return null;
  return { interpreter: match[1], ...(match[2] ? { argument: match[2] } : {}) };
}

/** The first executable called `name` in the fixed PATH, as execvp finds it. */
function searchFixedPath(name: string): string | undefined {
  for (const dir of FIXED_PATH.split(":")) {
    const candidate = join(dir, name);
    try {
      if (statSync(candidate).isFile()) return candidate;
    } catch {
      // not there
    }
  }
  return undefined;
}

/** The program `env` runs, given its argument on a `#!` line (options and NAME=value skipped). */
function envTarget(argument: string | undefined): string | undefined {
  const words = (argument ?? "").split(/[ \t]+/).filter(Boolean);
  return words.find((word) => !word.startsWith("-") && !word.includes("="));
}

/**
 * Checks the interpreter a file runs with under the executable rule: its
 * `#!` interpreter when the file is exec'd (`honoursShebang`), `/bin/sh`
 * when it has no `#!` line or is run as `sh FILE`; for `#!/usr/bin/env
 * NAME`, also NAME resolved in {@linkcode FIXED_PATH}. Nothing for an ELF
 * binary.
 *
 * @example
 * ```ts
 * import { checkInterpreter } from "./permissions.ts";
 * checkInterpreter("/etc/azure/pre.sh", {
 *   notFound: "Pre-ScriptNotFound",
 *   permission: "InsufficientPermissionforPre-Script",
 *   what: "pre-script",
 *   honoursShebang: true,
 * });
 * ```
 */
export function checkInterpreter(
  path: string,
  rule: ExecutableRule & { honoursShebang: boolean },
  depth = 0,
): Problem[] {
  const { honoursShebang, ...base } = rule;
  let shebang: Shebang | null = null;
  let elf = false;
  try {
    shebang = honoursShebang ? readShebang(path) : null;
    elf = honoursShebang && !shebang && isElf(path);
  } catch (error) {
    return [{
      code: rule.permission,
      message: `${rule.what} ${path} cannot be read: ${(error as Error).message}.`,
    }];
  }
  if (elf) return [];
  if (depth >= MAX_INTERPRETER_DEPTH) {
    return [{
      code: rule.permission,
      message:
        `${rule.what} ${path}: too many interpreters in a row (#! lines naming scripts). Fix: name a binary interpreter.`,
    }];
  }
  const interpreter = shebang?.interpreter ?? "/bin/sh";
  const line = shebang
    ? ` (#!${shebang.interpreter}${shebang.argument ? ` ${shebang.argument}` : ""})`
    : " (no #! line: run with /bin/sh)";
  const what = `the interpreter of ${rule.what} ${path}${line},`;
  const problems = checkExecutable(interpreter, { ...base, what }, depth + 1);
  if (problems.length > 0 || !shebang || basename(interpreter) !== "env") return problems;
  const name = envTarget(shebang.argument);
  if (!name) return [];
  const target = name.includes("/") ? name : searchFixedPath(name);
  const envWhat =
    `${name}, which env runs for ${rule.what} ${path} (#!${shebang.interpreter} ${shebang.argument}),`;
  if (!target) {
    return [{
      code: rule.notFound,
      message:
        `${envWhat} is not in vmsnap's fixed PATH ${FIXED_PATH}. Fix: install it there or write its absolute path in the #! line.`,
    }];
  }
  return checkExecutable(target, { ...base, what: envWhat }, depth + 1);
}

/** True for an ELF binary (run directly, no interpreter to check here). */
function isElf(path: string): boolean {
  const buffer = Buffer.alloc(4);
  const fd = openSync(path, "r");
  try {
    readSync(fd, buffer, 0, 4, 0);
  } finally {
    closeSync(fd);
  }
  return buffer.equals(Buffer.from([0x7f, 0x45, 0x4c, 0x46]));
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
