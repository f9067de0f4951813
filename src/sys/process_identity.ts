/**
 * A process told apart from a later one that got the same pid: its pid and
 * its start time (clock ticks since boot, from `/proc/PID/stat`). Lock files,
 * markers and the hook holder record both, so that a record left by a process
 * that died is never mistaken for a live owner.
 *
 * @module
 */
import { readFileSync } from "node:fs";

/**
 * The start time of a process from /proc, or undefined when it is gone (or a zombie).
 *
 * @example
 * ```ts
 * import process from "node:process";
 * import { processStart } from "./process_identity.ts";
 * const started = processStart(process.pid); // "123456"
 * ```
 */
export function processStart(pid: number): string | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
    const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
    return fields[0] === "Z" ? undefined : fields[19];
  } catch {
    return undefined;
  }
}

/**
 * True when the process recorded as an owner (in a lock, a marker) is still running.
 *
 * @example
 * ```ts
 * import { ownerAlive } from "./process_identity.ts";
 * ownerAlive({ pid: 1, started: "0" }); // false unless pid 1 started at tick 0
 * ```
 */
export function ownerAlive(owner: { pid: number; started: string }): boolean {
  return processStart(owner.pid) === owner.started;
}
