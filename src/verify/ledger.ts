/**
 * The record of what one verify set up, kept in
 * `<stateDir>/verify/active/<verifyId>.json` from before the first thing is
 * set up until the last is removed, so that a verify killed on the way
 * (SIGKILL, power loss) is cleaned up by the next one (or `vmsnap recover`).
 *
 * Most of it needs no record: the mounts, the servers and the network live in
 * private namespaces whose first process exits when verify's end of its stdin
 * pipe closes, and the kernel then kills every process in them and unmounts
 * everything; loop devices set up by those mounts detach themselves. What
 * outlives a SIGKILL is named here: the namespace's anchor process (if it
 * was itself stopped), loop devices caught between set-up and mount, scratch
 * directories on disk, the work directory.
 *
 * @module
 */
import { spawnSync } from "node:child_process";
import {
  closeSync,
  existsSync,
  fsyncSync,
  mkdirSync,
  openSync,
  readdirSync,
  readFileSync,
  readlinkSync,
  renameSync,
  rmdirSync,
  rmSync,
  unlinkSync,
  writeSync,
} from "node:fs";
import { join } from "node:path";
import process from "node:process";
import { processStart } from "../sys/process_identity.ts";
import { type VerifyProblem, verifyProblem } from "./codes.ts";
import { findTool } from "./tools.ts";

/** What one verify set up. */
export interface VerifyRecord {
  verifyId: string;
  /** The verify process, and its start time (to tell a reused pid). */
  pid: number;
  started: string;
  since: string;
  /** The `unshare` process and the namespace's first process (host pids). */
  anchor?: { pid: number; started: string };
  init?: { pid: number; started: string; mntNs: string };
  /** The empty host directory the namespace's tmpfs is mounted on. */
  workDir?: string;
  /** Scratch directories on disk (`--scratch`): removed whole. */
  scratchDirs: string[];
  /** Image files loop-attached: a loop device left on one of them is detached. */
  images: string[];
}

/**
 * The directory of records.
 *
 * @example
 * ```ts
 * import { ledgerDir } from "./ledger.ts";
 * ledgerDir("/var/lib/vmsnap"); // "/var/lib/vmsnap/verify/active"
 * ```
 */
export function ledgerDir(stateDir: string): string {
  return join(stateDir, "verify", "active");
}

/** One verify's record, written whole on every change. */
export class Ledger {
  readonly path: string;
  readonly record: VerifyRecord;

  /** Starts the record of a verify (this process). */
  constructor(stateDir: string, verifyId: string) {
    mkdirSync(ledgerDir(stateDir), { recursive: true, mode: 0o700 });
    this.path = join(ledgerDir(stateDir), `${verifyId}.json`);
    this.record = {
      verifyId,
      pid: process.pid,
      started: processStart(process.pid) ?? "",
      since: new Date().toISOString(),
      scratchDirs: [],
      images: [],
    };
    this.save();
  }

  /** Changes the record and writes it before going on. */
  update(change: (record: VerifyRecord) => void): void {
    change(this.record);
    this.save();
  }

  /** Everything was removed: the record goes. */
  close(): void {
    rmSync(this.path, { force: true });
  }

  private save(): void {
    const fresh = `${this.path}.new`;
    const fd = openSync(fresh, "w", 0o600);
    try {
      writeSync(fd, JSON.stringify(this.record));
      fsyncSync(fd);
    } finally {
      closeSync(fd);
    }
    renameSync(fresh, this.path);
  }
}

/** True while the recorded process is the one that started (not a reused pid). */
function still(owner: { pid: number; started: string } | undefined): boolean {
  return owner !== undefined && processStart(owner.pid) === owner.started;
}

/** Pids of every process whose mount namespace is `ns` (`mnt:[4026…]`). */
export function processesIn(ns: string): number[] {
  const pids: number[] = [];
  for (const entry of readdirSync("/proc")) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      if (readlinkSync(`/proc/${entry}/ns/mnt`) === ns) pids.push(Number(entry));
    } catch {
      // gone, or a kernel thread
    }
  }
  return pids;
}

/** Waits until `done` holds or `ms` pass; returns whether it held. */
export async function settle(done: () => boolean, ms: number): Promise<boolean> {
  const until = performance.now() + ms;
  while (!done()) {
    if (performance.now() > until) return false;
    await new Promise((r) => setTimeout(r, 20));
  }
  return true;
}

/** Loop devices backed by `image` (from sysfs, no tool needed). */
export function loopDevicesOf(image: string): string[] {
  const found: string[] = [];
  let entries: string[] = [];
  try {
    entries = readdirSync("/sys/block").filter((e) => e.startsWith("loop"));
  } catch {
    return found;
  }
  for (const dev of entries) {
    try {
      const backing = readFileSync(`/sys/block/${dev}/loop/backing_file`, "utf8").trim();
      if (backing === image || backing === `${image} (deleted)`) found.push(`/dev/${dev}`);
    } catch {
      // not attached
    }
  }
  return found;
}

/** Detaches a loop device nothing holds (not mounted, no partition in use). */
function detachIdleLoop(device: string): boolean {
  const name = device.replace("/dev/", "");
  try {
    if (readdirSync(`/sys/block/${name}/holders`).length > 0) return false;
    const mounted = readFileSync("/proc/self/mountinfo", "utf8").split("\n").some((l) =>
      l.split(" - ")[1]?.split(" ")[1]?.startsWith(device)
    );
    if (mounted) return false;
  } catch {
    return false;
  }
  const losetup = findTool("losetup");
  return !!losetup && spawnSync(losetup, ["-d", device], { stdio: "ignore" }).status === 0;
}

/** Removes what one dead verify left; says what was done. */
async function sweepRecord(record: VerifyRecord): Promise<string[]> {
  const done: string[] = [];
  for (const owner of [record.anchor, record.init]) {
    if (still(owner)) {
      process.kill(owner!.pid, "SIGKILL");
      done.push(`killed its namespace process ${owner!.pid}`);
    }
  }
  if (record.init) {
    const ns = record.init.mntNs;
    const empty = await settle(() => processesIn(ns).length === 0, 10_000);
    if (!empty) {
      for (const pid of processesIn(ns)) process.kill(pid, "SIGKILL");
      done.push(`killed the processes left in its namespace ${ns}`);
      await settle(() => processesIn(ns).length === 0, 5_000);
    }
  }
  for (const image of record.images) {
    // A namespace's loop mounts detach by themselves once it is gone; allow a moment.
    await settle(() => loopDevicesOf(image).length === 0, 2_000);
    for (const device of loopDevicesOf(image)) {
      if (detachIdleLoop(device)) done.push(`detached ${device} (${image})`);
    }
  }
  for (const dir of record.scratchDirs) {
    if (existsSync(dir) && dir.includes(record.verifyId)) {
      rmSync(dir, { recursive: true, force: true });
      done.push(`removed the scratch directory ${dir}`);
    }
  }
  if (record.workDir && existsSync(record.workDir)) {
    try {
      rmdirSync(record.workDir);
    } catch {
      // not empty (something else mounted there?): left for the admin, named below
    }
  }
  return done;
}

/**
 * Cleans what verifies that died left behind (their records name it) and
 * removes their records; a record whose verify still runs is left alone.
 * Returns one warning per dead verify cleaned.
 *
 * @example
 * ```ts
 * import { sweepLeftovers } from "./ledger.ts";
 * for (const w of await sweepLeftovers("/var/lib/vmsnap")) console.warn(w.message);
 * ```
 */
export async function sweepLeftovers(stateDir: string): Promise<VerifyProblem[]> {
  const dir = ledgerDir(stateDir);
  let names: string[];
  try {
    names = readdirSync(dir);
  } catch {
    return [];
  }
  const warnings: VerifyProblem[] = [];
  for (const name of names) {
    const path = join(dir, name);
    if (name.endsWith(".new")) {
      unlinkSync(path);
      continue;
    }
    let record: VerifyRecord;
    try {
      record = JSON.parse(readFileSync(path, "utf8")) as VerifyRecord;
    } catch {
      unlinkSync(path);
      continue;
    }
    if (still(record)) continue;
    const done = await sweepRecord(record);
    unlinkSync(path);
    warnings.push(verifyProblem(
      "VerifyLeftoverCleaned",
      `verify ${record.verifyId} (pid ${record.pid}, since ${record.since}) died before it cleaned up: ${
        done.length > 0 ? done.join("; ") : "its namespace was already gone"
      }.`,
    ));
  }
  return warnings;
}
