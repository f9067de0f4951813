/**
 * One run at a time per machine: a lock file in stateDir, created
 * exclusively, holding the owner's pid and process start time. A lock whose
 * process is gone (or whose pid now belongs to another process) is stale and
 * taken over.
 *
 * @module
 */
import { linkSync, readFileSync, renameSync, unlinkSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import process from "node:process";
import { VmsnapError } from "./errors.ts";

/** What the lock file holds. */
export interface LockOwner {
  pid: number;
  /** Process start time (clock ticks since boot), to tell a reused pid apart. */
  started: string;
  runId: string;
  since: string;
}

/** The start time of a process from /proc, or undefined when it is gone. */
export function processStart(pid: number): string | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
    const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
    return fields[0] === "Z" ? undefined : fields[19];
  } catch {
    return undefined;
  }
}

/** True when the owner recorded in a lock or marker is still running. */
export function ownerAlive(owner: Pick<LockOwner, "pid" | "started">): boolean {
  return processStart(owner.pid) === owner.started;
}

/** A held lock. */
export interface RunLock {
  path: string;
  /** Set when a stale lock was taken over. */
  tookOverFrom?: LockOwner;
  release(): void;
}

/**
 * Takes the run lock, or throws `AnotherRunInProgress`.
 *
 * @example
 * ```ts
 * import { acquireRunLock } from "./lock.ts";
 * const lock = acquireRunLock("/var/lib/vmsnap", "run-1");
 * try { ... } finally { lock.release(); }
 * ```
 */
export function acquireRunLock(stateDir: string, runId: string): RunLock {
  const path = join(stateDir, "run.lock");
  const me: LockOwner = {
    pid: process.pid,
    started: processStart(process.pid) ?? "",
    runId,
    since: new Date().toISOString(),
  };
  let tookOverFrom: LockOwner | undefined;
  for (let attempt = 0; attempt < 5; attempt++) {
    // Created whole: written aside, then linked into place (link fails when the lock exists).
    const fresh = `${path}.new-${process.pid}`;
    writeFileSync(fresh, JSON.stringify(me), { mode: 0o600 });
    try {
      linkSync(fresh, path);
      unlinkSync(fresh);
      return {
        path,
        tookOverFrom,
        release() {
          try {
            const owner = JSON.parse(readFileSync(path, "utf8")) as LockOwner;
            if (owner.pid === me.pid && owner.runId === runId) unlinkSync(path);
          } catch {
            // already gone
          }
        },
      };
    } catch (error) {
      unlinkSync(fresh);
      if ((error as NodeJS.ErrnoException).code !== "EEXIST") throw error;
    }
    let owner: LockOwner | undefined;
    try {
      owner = JSON.parse(readFileSync(path, "utf8"));
    } catch {
      owner = undefined; // unreadable: locks are written whole, so this one is damaged
    }
    if (owner && ownerAlive(owner)) {
      throw new VmsnapError(
        "AnotherRunInProgress",
        `another vmsnap run (pid ${owner.pid}, run ${owner.runId}, since ${owner.since}) holds ${path}. Fix: wait for it to finish; a lock of a dead process is taken over automatically.`,
      );
    }
    // Stale: move it aside atomically (only one contender wins the rename), then retry.
    try {
      renameSync(path, `${path}.stale-${process.pid}`);
      unlinkSync(`${path}.stale-${process.pid}`);
      tookOverFrom = owner;
    } catch {
      // Someone else moved it first; look again.
    }
  }
  throw new VmsnapError(
    "AnotherRunInProgress",
    `could not take ${path} after several attempts. Fix: run again.`,
  );
}
