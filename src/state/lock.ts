/**
 * One run at a time per machine: `run.lock` in stateDir, held with
 * `flock(2)` (exclusive, non-blocking) for the whole run. The kernel releases
 * the lock when its holder dies, so there is no stale-lock takeover to race:
 * whoever gets the flock is the only holder. The file records the holder
 * (pid, process start time, run id) for messages and for recovery: a record
 * found under a lock nobody holds is a run that died (`tookOverFrom`). The
 * holder unlinks the file when it is done; a contender that locked a file
 * already unlinked sees that its file is no longer the one at the path and
 * tries again.
 *
 * flock is called through the one libc binding (src/sys/libc.ts), as the
 * freeze ioctls are.
 *
 * @module
 */
import { constants, readFileSync, statSync, unlinkSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import process from "node:process";
import { VmsnapError } from "../errors.ts";
import { bindLibc, cString, LIBC_SYMBOLS } from "../sys/libc.ts";
import { ensureDirectory } from "../sys/permissions.ts";
import { ownerAlive, processStart } from "../sys/process_identity.ts";

/** What the lock file holds. */
export interface LockOwner {
  pid: number;
  /** Process start time (clock ticks since boot), to tell a reused pid apart. */
  started: string;
  runId: string;
  since: string;
}

/** A held lock. */
export interface RunLock {
  path: string;
  /** Set when the lock was left by a run that died (its record was still in the file). */
  tookOverFrom?: LockOwner;
  release(): void;
}

const LOCK_EX = 2;
const LOCK_NB = 4;
const EINTR = 4;
const EWOULDBLOCK = 11;
const O_CLOEXEC = 0o2000000;
/** errno values that mean stateDir cannot be written. */
const UNWRITABLE = new Set(["ENOSPC", "EROFS", "EDQUOT", "EIO", "EACCES", "EPERM", "ENOENT"]);
const ERRNO_CODES: Record<number, string> = {
  1: "EPERM",
  2: "ENOENT",
  5: "EIO",
  13: "EACCES",
  28: "ENOSPC",
  30: "EROFS",
  40: "ELOOP",
  122: "EDQUOT",
};

/** The lock's libc calls (each returns the result, or -errno), bound on first use. */
const libc = () => bindLibc(LIBC_SYMBOLS.lock);

/** The error for a stateDir that cannot take the lock file. */
function unwritable(stateDir: string, path: string, code: string, cause?: unknown): VmsnapError {
  const why = code === "ENOSPC" || code === "EDQUOT"
    ? "its filesystem is full"
    : code === "EROFS"
    ? "its filesystem is mounted read-only"
    : code === "EIO"
    ? "an I/O error"
    : code === "ENOENT"
    ? "the directory is missing"
    : "permission denied";
  const error = new VmsnapError(
    "StateDirUnwritable",
    `stateDir ${stateDir} cannot be written (${path}: ${code}, ${why}); vmsnap keeps its run lock and freeze marker there, so nothing was started: no plugin quiesced, nothing frozen. Fix: free space on that filesystem, remount it read-write, or set stateDir to a writable directory only root can write.`,
  );
  if (cause !== undefined) Object.defineProperty(error, "cause", { value: cause });
  return error;
}

/** True when `code` (a Node errno name) means the directory cannot be written. */
function isUnwritable(code: string | undefined): boolean {
  return code !== undefined && UNWRITABLE.has(code);
}

/**
 * `StateDirUnwritable` for an errno error met creating or writing in
 * stateDir (ENOSPC, EROFS, EDQUOT, EIO, EACCES…), else undefined.
 *
 * @example
 * ```ts
 * import { mkdirSync } from "node:fs";
 * import { unwritableStateDir } from "./lock.ts";
 * try {
 *   mkdirSync("/var/lib/vmsnap", { recursive: true, mode: 0o700 });
 * } catch (error) {
 *   throw unwritableStateDir("/var/lib/vmsnap", error) ?? error;
 * }
 * ```
 */
export function unwritableStateDir(stateDir: string, error: unknown): VmsnapError | undefined {
  const { code, path } = (error ?? {}) as NodeJS.ErrnoException;
  return isUnwritable(code) ? unwritable(stateDir, path ?? stateDir, code!, error) : undefined;
}

/** The same file (device and inode)? */
const sameFile = (a: { dev: number; ino: number }, b: { dev: number; ino: number }) =>
  a.dev === b.dev && a.ino === b.ino;

function statOrUndefined(path: string) {
  try {
    return statSync(path);
  } catch {
    return undefined;
  }
}

function readOwner(path: string): LockOwner | undefined {
  try {
    const owner = JSON.parse(readFileSync(path, "utf8"));
    return typeof owner?.pid === "number" ? owner : undefined;
  } catch {
    return undefined;
  }
}

/** An fd holding the flock of the file at `path` (the file still at that path), or undefined. */
function lockFile(path: string, stateDir: string): number | undefined {
  const lib = libc();
  for (let attempt = 0; attempt < 20; attempt++) {
    const flags = constants.O_RDWR | constants.O_CREAT | constants.O_NOFOLLOW | O_CLOEXEC;
    const fd = lib.open(cString(path), flags, 0o600);
    if (fd < 0) {
      const code = ERRNO_CODES[-fd] ?? `errno ${-fd}`;
      if (isUnwritable(code)) throw unwritable(stateDir, path, code);
      throw new Error(`cannot open ${path}: ${code}`);
    }
    let locked = lib.flock(fd, LOCK_EX | LOCK_NB);
    while (locked === -EINTR) locked = lib.flock(fd, LOCK_EX | LOCK_NB);
    if (locked < 0) {
      lib.close(fd);
      if (locked === -EWOULDBLOCK) return undefined;
      throw new Error(`flock ${path}: errno ${-locked}`);
    }
    // The holder before us unlinks the file before it lets go: ours must still be the one at the path.
    const mine = statSync(`/proc/self/fd/${fd}`);
    const atPath = statOrUndefined(path);
    if (atPath && sameFile(mine, atPath)) return fd;
    lib.close(fd);
  }
  throw new Error(`${path} kept changing under vmsnap; try again`);
}

/**
 * Takes the run lock (creating stateDir 0700 if needed), or throws
 * `AnotherRunInProgress` (a live run holds it), `InsecureDirectory` (stateDir
 * fails the permission rules) or `StateDirUnwritable` (stateDir or the lock
 * file cannot be created or written; then nothing is left behind).
 *
 * @example
 * ```ts
 * import { acquireRunLock } from "./lock.ts";
 * const lock = acquireRunLock("/var/lib/vmsnap", "run-1");
 * try {
 *   // ... the run
 * } finally {
 *   lock.release();
 * }
 * ```
 */
export function acquireRunLock(stateDir: string, runId: string): RunLock {
  const path = join(stateDir, "run.lock");
  try {
    ensureDirectory(stateDir, "stateDir");
  } catch (error) {
    throw (error instanceof VmsnapError ? undefined : unwritableStateDir(stateDir, error)) ?? error;
  }
  const fd = lockFile(path, stateDir);
  if (fd === undefined) {
    const owner = readOwner(path);
    throw new VmsnapError(
      "AnotherRunInProgress",
      `another vmsnap run (${
        owner ? `pid ${owner.pid}, run ${owner.runId}, since ${owner.since}` : "starting"
      }) holds ${path}. Fix: wait for it to finish; the lock of a process that died is released by the kernel and taken over automatically.`,
    );
  }
  const lib = libc();
  const dropLock = () => {
    const atPath = statOrUndefined(path);
    if (atPath && sameFile(atPath, statSync(`/proc/self/fd/${fd}`))) {
      try {
        unlinkSync(path);
      } catch {
        // gone
      }
    }
    lib.close(fd);
  };
  // A record under a lock nobody held: the run that wrote it died.
  const previous = readOwner(path);
  if (previous && previous.pid !== process.pid && ownerAlive(previous)) {
    // Alive but not holding the flock: a vmsnap from before the flock lock. Never two runs.
    lib.close(fd);
    throw new VmsnapError(
      "AnotherRunInProgress",
      `another vmsnap run (pid ${previous.pid}, run ${previous.runId}, since ${previous.since}) holds ${path}. Fix: wait for it to finish.`,
    );
  }
  const me: LockOwner = {
    pid: process.pid,
    started: processStart(process.pid) ?? "",
    runId,
    since: new Date().toISOString(),
  };
  try {
    // Through our own descriptor's inode (/proc/self/fd), so the record lands in the file we lock.
    writeFileSync(`/proc/self/fd/${fd}`, JSON.stringify(me), { mode: 0o600 });
  } catch (error) {
    dropLock();
    const code = (error as NodeJS.ErrnoException).code;
    if (isUnwritable(code)) throw unwritable(stateDir, path, code!, error);
    throw error;
  }
  return { path, tookOverFrom: previous, release: dropLock };
}

/**
 * Removes a run lock left by a run that died, and returns its record; does
 * nothing (undefined) while a live run holds the lock. For commands other
 * than `run`, whose recovery cleans up after a dead run.
 *
 * @example
 * ```ts
 * import { clearStaleRunLock } from "./lock.ts";
 * const dead = clearStaleRunLock("/var/lib/vmsnap");
 * if (dead) console.log(`run ${dead.runId} died`);
 * ```
 */
export function clearStaleRunLock(stateDir: string): LockOwner | undefined {
  const path = join(stateDir, "run.lock");
  if (!statOrUndefined(path)) return undefined;
  let fd: number | undefined;
  try {
    fd = lockFile(path, stateDir);
  } catch {
    return undefined;
  }
  if (fd === undefined) return undefined;
  const previous = readOwner(path);
  const alive = previous !== undefined && ownerAlive(previous);
  if (!alive) {
    try {
      unlinkSync(path);
    } catch {
      // gone
    }
  }
  libc().close(fd);
  return alive ? undefined : previous;
}
