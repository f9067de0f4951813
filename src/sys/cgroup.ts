/**
 * One cgroup (v2) per process vmsnap runs, where the machine has a usable
 * cgroup2 hierarchy: every descendant stays in it whatever it does (a new
 * session, a new process group, a cleared environment, `su -l`), so a
 * timeout kills all of them (`cgroup.kill`, or SIGKILL to each member), and
 * what could not be killed is known.
 *
 * The cgroup is created under vmsnap's own cgroup (so a systemd unit that
 * runs vmsnap still accounts for, and can stop, its scripts). The process
 * joins it itself before it execs the program (see
 * {@linkcode joinAndExecArgv}), so no code of the program ever runs outside it.
 * Where there is no cgroup2 mount, or it cannot be written (a read-only
 * container mount), the caller falls back to process groups and an
 * environment tag.
 *
 * @module
 */
import {
  existsSync,
  mkdirSync,
  readdirSync,
  readFileSync,
  rmdirSync,
  writeFileSync,
} from "node:fs";
import { spawnSync } from "node:child_process";
import { join } from "node:path";
import process from "node:process";

/** A cgroup made for one process and its descendants. */
export interface ProcessCgroup {
  /** Its directory. */
  path: string;
  /** Live members (pids), from `cgroup.procs`. */
  members(): number[];
  /** True while any process is in it (`cgroup.events`). */
  populated(): boolean;
  /** Sends a signal to every member. */
  signal(signal: NodeJS.Signals): void;
  /** SIGKILLs every member: `cgroup.kill` where the kernel has it (5.14+), else one by one. */
  kill(): void;
  /**
   * Moves the members back to vmsnap's own cgroup (a daemon a script started
   * on purpose stays as it would without vmsnap's cgroup), then removes the
   * cgroup. Returns false when it could not be removed.
   */
  release(): boolean;
}

/** The cgroup2 mount point and vmsnap's own cgroup directory in it. */
export interface Cgroup2Home {
  mountPoint: string;
  /** vmsnap's own cgroup directory. */
  own: string;
}

/** Unescapes a mountinfo field (`\040` for a space). */
const unescape = (field: string) =>
  field.replace(/\\([0-7]{3})/g, (_, octal) => String.fromCharCode(parseInt(octal, 8)));

/**
 * Finds a cgroup2 hierarchy this process can create cgroups in: a `cgroup2`
 * mount in `/proc/self/mountinfo` (`/sys/fs/cgroup` on a systemd VM,
 * `/sys/fs/cgroup/unified` in hybrid mode) and this process's cgroup in it
 * (the `0::` line of `/proc/self/cgroup`). Undefined when there is none.
 *
 * @example
 * ```ts
 * import { findCgroup2 } from "./cgroup.ts";
 * findCgroup2()?.own; // "/sys/fs/cgroup/system.slice/vmsnap.service"
 * ```
 */
export function findCgroup2(
  files: { mountinfo?: string; cgroup?: string } = {},
): Cgroup2Home | undefined {
  let mountinfo: string;
  try {
    mountinfo = readFileSync(files.mountinfo ?? "/proc/self/mountinfo", "utf8");
  } catch {
    return undefined;
  }
  const own = ownCgroup(files.cgroup);
  if (own === undefined) return undefined;
  for (const line of mountinfo.split("\n")) {
    const [left, right] = line.split(" - ");
    if (!right || right.split(" ")[0] !== "cgroup2") continue;
    const fields = left.split(" ");
    const root = unescape(fields[3]);
    const mountPoint = unescape(fields[4]);
    // The mount shows the hierarchy from `root`; our cgroup must lie under it.
    if (root !== "/" && own !== root && !own.startsWith(`${root}/`)) continue;
    const relative = root === "/" ? own : own.slice(root.length);
    return { mountPoint, own: trimSlash(join(mountPoint, relative)) };
  }
  return undefined;
}

/**
 * Where a private cgroup2 is mounted when the machine has none: under /run
 * (runtime state, gone at reboot like every cgroup), one for the machine,
 * reused by every run.
 */
export const PRIVATE_CGROUP2_DIR = "/run/vmsnap/cgroup2";

/** mount(8), by its fixed path (never the caller's PATH). */
const MOUNT = "/usr/bin/mount";

/**
 * The cgroup2 hierarchy, mounting a private view of it at `dir` when none
 * is mounted (a cgroup-v1 VM: RHEL 8 and others in systemd's legacy mode).
 * Mounting cgroup2 there is what systemd's hybrid mode does at
 * /sys/fs/cgroup/unified: with every controller bound to v1 it tracks
 * processes only and changes nothing for systemd. The mount stays (a later
 * run finds it in mountinfo) until reboot. Undefined when the kernel cannot
 * (no cgroup2, or not allowed here): the caller falls back.
 *
 * @example
 * ```ts
 * import { cgroup2OrMount, PRIVATE_CGROUP2_DIR } from "./cgroup.ts";
 * cgroup2OrMount(PRIVATE_CGROUP2_DIR)?.own;
 * ```
 */
export function cgroup2OrMount(
  dir: string | undefined,
  files: { mountinfo?: string; cgroup?: string } = {},
): Cgroup2Home | undefined {
  const found = findCgroup2(files);
  if (found || !dir) return found;
  try {
    mkdirSync(dir, { recursive: true, mode: 0o700 });
  } catch {
    return undefined;
  }
  const mounted = spawnSync(MOUNT, ["-t", "cgroup2", "vmsnap-cgroup2", dir], { stdio: "ignore" });
  if (mounted.status !== 0) return undefined;
  // A new mount shows the whole hierarchy, from its root.
  const own = ownCgroup(files.cgroup);
  return own === undefined ? undefined : { mountPoint: dir, own: trimSlash(join(dir, own)) };
}

/** This process's cgroup2 path (the `0::` line of /proc/self/cgroup). */
function ownCgroup(file = "/proc/self/cgroup"): string | undefined {
  try {
    return readFileSync(file, "utf8").split("\n").find((line) => line.startsWith("0::"))
      ?.slice(3);
  } catch {
    return undefined;
  }
}

const trimSlash = (path: string) => path.replace(/(.)\/+$/, "$1");

let counter = 0;

/** Reads a cgroup's member pids (empty when it is gone). */
function readProcs(dir: string): number[] {
  try {
    return readFileSync(join(dir, "cgroup.procs"), "utf8").split("\n").filter(Boolean).map(Number);
  } catch {
    return [];
  }
}

/**
 * Removes the empty cgroups a dead vmsnap left (killed before it could
 * remove them). A cgroup that still has processes is left alone: rmdir
 * refuses it, and the recovery of a dead run deals with its processes.
 */
function sweepStale(dir: string): void {
  let entries: string[];
  try {
    entries = readdirSync(dir);
  } catch {
    return;
  }
  for (const entry of entries) {
    const match = /^vmsnap-(\d+)-\d+$/.exec(entry);
    if (!match || Number(match[1]) === process.pid || existsSync(`/proc/${match[1]}`)) continue;
    try {
      rmdirSync(join(dir, entry));
    } catch {
      // still populated, or already gone
    }
  }
}

/**
 * Creates a cgroup for one process under vmsnap's own cgroup, or returns
 * undefined when the machine has no usable cgroup2 hierarchy.
 *
 * @example
 * ```ts
 * import { createProcessCgroup } from "./cgroup.ts";
 * const cgroup = createProcessCgroup();
 * if (cgroup) console.log(cgroup.path);
 * ```
 */
export function createProcessCgroup(home = findCgroup2()): ProcessCgroup | undefined {
  if (!home) return undefined;
  sweepStale(home.own);
  const path = join(home.own, `vmsnap-${process.pid}-${++counter}`);
  try {
    mkdirSync(path);
    if (!existsSync(join(path, "cgroup.procs"))) {
      rmdirSync(path);
      return undefined;
    }
  } catch {
    return undefined;
  }
  return cgroupAt(path, home);
}

/** Sends a signal to each pid; one that is gone is skipped. */
function signalEach(pids: number[], signal: NodeJS.Signals): void {
  for (const pid of pids) {
    try {
      process.kill(pid, signal);
    } catch {
      // gone
    }
  }
}

/** The handle of a cgroup made at `path` under vmsnap's own. */
function cgroupAt(path: string, home: Cgroup2Home): ProcessCgroup {
  const canKill = existsSync(join(path, "cgroup.kill"));
  const members = () => readProcs(path);
  return {
    path,
    members,
    populated() {
      try {
        return /^populated 1$/m.test(readFileSync(join(path, "cgroup.events"), "utf8"));
      } catch {
        return members().length > 0;
      }
    },
    signal: (signal) => signalEach(members(), signal),
    kill() {
      if (canKill) {
        try {
          writeFileSync(join(path, "cgroup.kill"), "1");
          return;
        } catch {
          // fall through to one by one
        }
      }
      signalEach(members(), "SIGKILL");
    },
    release: () => releaseCgroup(path, home, members),
  };
}

/** Moves the members back to vmsnap's own cgroup, then removes the cgroup; false when it stays. */
function releaseCgroup(path: string, home: Cgroup2Home, members: () => number[]): boolean {
  for (let round = 0; round < 20; round++) {
    const pids = members();
    if (pids.length === 0) break;
    for (const pid of pids) {
      try {
        writeFileSync(join(home.own, "cgroup.procs"), String(pid));
      } catch {
        // gone, or a zombie
      }
    }
  }
  try {
    rmdirSync(path);
    return true;
  } catch {
    return false;
  }
}

/**
 * The argv that makes a process join a cgroup and then exec the program:
 * `/bin/sh -c 'echo $$ > PROCS; exec "$@"'`. The shell writes its own pid
 * (the pid the program keeps across exec) before the program's first
 * instruction, so nothing the program forks can start outside the cgroup;
 * writing the pid from vmsnap after spawn would race with the program's
 * first fork. If the write fails the program still runs (and vmsnap's
 * process-group and tag tracking still apply). The shell's `exec` also runs
 * a file without a `#!` line with /bin/sh, as execvp does.
 *
 * @example
 * ```ts
 * import { joinAndExecArgv } from "./cgroup.ts";
 * joinAndExecArgv("/sys/fs/cgroup/vmsnap-1-1", ["/etc/azure/pre.sh", "a"]);
 * // ["/bin/sh", "-c", '{ echo $$ > "$0/cgroup.procs"; } 2>/dev/null; exec "$@"', "/sys/fs/cgroup/vmsnap-1-1", "/etc/azure/pre.sh", "a"]
 * ```
 */
export function joinAndExecArgv(cgroupPath: string, argv: string[]): string[] {
  return [
    "/bin/sh",
    "-c",
    '{ echo $$ > "$0/cgroup.procs"; } 2>/dev/null; exec "$@"',
    cgroupPath,
    ...argv,
  ];
}
