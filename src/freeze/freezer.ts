/**
 * Freezing and thawing one filesystem: the FIFREEZE/FITHAW ioctls through
 * libc via the runtime's FFI (Deno.dlopen or bun:ffi, ~1 ms), with the
 * `fsfreeze` command as the fallback (~15 ms a call) where FFI is not
 * allowed.
 *
 * @module
 */
import { spawnSync } from "node:child_process";
import { closeSync, constants as fsConstants, existsSync, openSync, readFileSync } from "node:fs";
import process from "node:process";
import { FIFREEZE, FITHAW, type FreezeLibc, loadFreezeLibc } from "../sys/freeze_libc.ts";
import { type FreezePool, POOL_CALL_THREW, type PoolOp, startFreezePool } from "./pool.ts";

export type { FreezePool } from "./pool.ts";

/** errno values the freeze code acts on. */
export const ERRNO = { EPERM: 1, ENOENT: 2, EBUSY: 16, EINVAL: 22, EOPNOTSUPP: 95 } as const;

const ERRNO_NAMES: Record<number, string> = {
  1: "EPERM (not root)",
  2: "ENOENT (no such mount point)",
  13: "EACCES",
  16: "EBUSY (already frozen)",
  22: "EINVAL (not frozen)",
  95: "EOPNOTSUPP (this filesystem cannot freeze)",
};

/** The outcome of one ioctl. */
export interface FreezeOp {
  ok: boolean;
  /** errno when it failed. */
  errno?: number;
  /** errno in words, or the fallback's message. */
  error?: string;
  ms: number;
}

/** A filesystem opened once: freeze, thaw and confirm all go through this descriptor. */
export interface FreezeHandle {
  readonly mountPoint: string;
  readonly fd: number;
  /** The mount the descriptor is on (`mnt_id` in /proc/self/fdinfo), when it could be read. */
  readonly mountId?: number;
}

/** Freezes and thaws mount points, by path or through a descriptor opened once. */
export interface Freezer {
  readonly method: "ioctl" | "fsfreeze";
  freeze(mountPoint: string): FreezeOp;
  thaw(mountPoint: string): FreezeOp;
  /** Opens a mount point (a directory, read-only, close-on-exec). */
  open(mountPoint: string): { handle?: FreezeHandle; errno?: number; error?: string };
  freezeHandle(handle: FreezeHandle): FreezeOp;
  thawHandle(handle: FreezeHandle): FreezeOp;
  /** syncfs(2): flushes the filesystem's dirty data before the freeze (outside the frozen window). */
  syncHandle(handle: FreezeHandle): FreezeOp;
  close(handle: FreezeHandle): void;
  /**
   * Starts worker threads that issue the calls of {@linkcode runOnHandles}
   * concurrently (ioctl method only; absent where there is no FFI).
   */
  startPool?(options: { workers: number; capacity: number }): FreezePool;
}

type Libc = FreezeLibc;

/** Names an errno. */
export function errnoName(errno: number): string {
  return ERRNO_NAMES[errno] ?? `errno ${errno}`;
}

function timed(run: () => number): FreezeOp {
  const started = performance.now();
  const result = run();
  const ms = performance.now() - started;
  return result >= 0
    ? { ok: true, ms }
    : { ok: false, errno: -result, error: errnoName(-result), ms };
}

/** coreutils' sync, for syncfs(2) without FFI. */
const SYNC = ["/usr/bin/sync", "/bin/sync"].find((path) => existsSync(path)) ?? "/usr/bin/sync";

/** Where util-linux installs fsfreeze (usrmerge or not). */
const FSFREEZE = ["/usr/sbin/fsfreeze", "/sbin/fsfreeze"].find((path) => existsSync(path)) ??
  "/usr/sbin/fsfreeze";

/** The `fsfreeze` fallback: maps its message back to an errno where it can. */
function fsfreezeCommand(path: string, request: bigint): number {
  const flag = request === FIFREEZE ? "--freeze" : "--unfreeze";
  // By its absolute path, never through the caller's PATH.
  const ran = spawnSync(FSFREEZE, [flag, path], { encoding: "utf8" });
  if (ran.status === 0) return 0;
  const text = `${ran.stderr}`;
  if (/busy/i.test(text)) return -ERRNO.EBUSY;
  if (/invalid argument/i.test(text)) return -ERRNO.EINVAL;
  if (/not supported/i.test(text)) return -ERRNO.EOPNOTSUPP;
  if (/no such file/i.test(text)) return -ERRNO.ENOENT;
  if (/not permitted/i.test(text)) return -ERRNO.EPERM;
  return -1000;
}

/**
 * Without FFI: descriptors from node:fs, and `fsfreeze` given the
 * descriptor's /proc path (the same filesystem even after an unmount or an
 * over-mount of the mount point).
 */
const fallbackLibc: Libc = {
  open(path) {
    try {
      return openSync(path, fsConstants.O_RDONLY | fsConstants.O_DIRECTORY);
    } catch (error) {
      // node's errno is negative (-2 for ENOENT).
      return -Math.abs((error as NodeJS.ErrnoException).errno ?? ERRNO.ENOENT);
    }
  },
  ioctl: (fd, request) => fsfreezeCommand(`/proc/${process.pid}/fd/${fd}`, request),
  syncfs: (fd) =>
    spawnSync(SYNC, ["--file-system", `/proc/${process.pid}/fd/${fd}`]).status === 0 ? 0 : -1000,
  close: (fd) => closeSync(fd),
};

/** The mount a descriptor is on, from /proc/self/fdinfo. */
export function mountIdOf(fd: number): number | undefined {
  try {
    const match = readFileSync(`/proc/self/fdinfo/${fd}`, "utf8").match(/^mnt_id:\s*(\d+)/m);
    return match ? Number(match[1]) : undefined;
  } catch {
    return undefined;
  }
}

const cached = new Map<Freezer["method"], Promise<Freezer>>();

/**
 * The freezer for this process: the ioctl through FFI, or `fsfreeze` when FFI
 * cannot be loaded. `method` `"fsfreeze"` forces the fallback (a test switch
 * of the binary, src/run/test_switches.ts). One per method and process.
 *
 * @example
 * ```ts
 * import { createFreezer } from "./freezer.ts";
 * const freezer = await createFreezer();
 * const op = freezer.freeze("/data");
 * if (op.ok) freezer.thaw("/data");
 * ```
 */
export function createFreezer(method: Freezer["method"] = "ioctl"): Promise<Freezer> {
  let freezer = cached.get(method);
  if (!freezer) cached.set(method, freezer = build(method));
  return freezer;
}

async function build(method: Freezer["method"]): Promise<Freezer> {
  let ffi: Libc | undefined;
  if (method === "ioctl") {
    try {
      ffi = await loadFreezeLibc();
    } catch {
      ffi = undefined;
    }
  }
  const libc = ffi ?? fallbackLibc;
  const byPath = (path: string, request: bigint) => {
    if (!ffi) return fsfreezeCommand(path, request);
    const fd = libc.open(path);
    if (fd < 0) return fd;
    const result = libc.ioctl(fd, request);
    libc.close(fd);
    return result;
  };
  return {
    method: ffi ? "ioctl" : "fsfreeze",
    freeze: (mountPoint) => timed(() => byPath(mountPoint, FIFREEZE)),
    thaw: (mountPoint) => timed(() => byPath(mountPoint, FITHAW)),
    open(mountPoint) {
      const fd = libc.open(mountPoint);
      if (fd < 0) return { errno: -fd, error: errnoName(-fd) };
      return { handle: { mountPoint, fd, mountId: mountIdOf(fd) } };
    },
    freezeHandle: (handle) => timed(() => libc.ioctl(handle.fd, FIFREEZE)),
    thawHandle: (handle) => timed(() => libc.ioctl(handle.fd, FITHAW)),
    syncHandle: (handle) => timed(() => libc.syncfs(handle.fd)),
    close: (handle) => libc.close(handle.fd),
    startPool: ffi
      ? ({ workers, capacity }) => startFreezePool({ workers, capacity, libc: ffi! })
      : undefined,
  };
}

/** A call's outcome with the thread that made it (0: the calling thread). */
export type ThreadedOp = FreezeOp & { thread: number };

/**
 * syncfs or FIFREEZE on several descriptors: all at once through `pool` when
 * there is one and more than one handle (up to the pool's threads + 1 issued
 * together, each whatever the others return), else one after another on
 * this thread. With `stopOnFailure` a call not yet issued when one failed is
 * never started (its entry is undefined). Blocks until every started call
 * returned.
 *
 * @example
 * ```ts
 * import { createFreezer, runOnHandles } from "./freezer.ts";
 * const freezer = await createFreezer();
 * const handles = ["/a", "/b"].flatMap((p) => freezer.open(p).handle ?? []);
 * const pool = freezer.startPool?.({ workers: 1, capacity: 2 });
 * if (pool && !await pool.ready(2000)) pool.close();
 * const ops = runOnHandles({ freezer, pool, op: "sync", handles, stopOnFailure: false });
 * pool?.close();
 * ```
 */
export function runOnHandles(
  options: {
    freezer: Freezer;
    pool?: FreezePool;
    op: Exclude<PoolOp, "thaw">;
    handles: readonly FreezeHandle[];
    stopOnFailure: boolean;
  },
): (ThreadedOp | undefined)[] {
  const { freezer, pool, op, handles, stopOnFailure } = options;
  if (pool && handles.length > 1) {
    return pool.run(op, handles.map((h) => h.fd), { stopOnFailure }).map((done) => {
      if (!done.started) return undefined;
      const errno = -done.result;
      return done.result >= 0 ? { ok: true, ms: done.ms, thread: done.thread } : {
        ok: false,
        errno,
        error: errno === POOL_CALL_THREW ? "the FFI call threw in its thread" : errnoName(errno),
        ms: done.ms,
        thread: done.thread,
      };
    });
  }
  const results: (ThreadedOp | undefined)[] = [];
  for (const handle of handles) {
    const done = op === "sync" ? freezer.syncHandle(handle) : freezer.freezeHandle(handle);
    results.push({ ...done, thread: 0 });
    if (!done.ok && stopOnFailure) break;
  }
  return handles.map((_, i) => results[i]);
}

/**
 * The two orders a thaw can go in:
 *
 * - `reverse-freeze-order`: the agent's own thaw, after its freezes all
 *   returned. Parents (frozen last) thaw first, so a child's thaw never waits
 *   on a frozen parent.
 * - `freeze-order`: an emergency thaw (the guard at its deadline or on the
 *   agent's death, recovery after both died). A freeze still in progress
 *   (stuck in the kernel, flushing into a filesystem frozen before it) holds
 *   its superblock's lock and a thaw of it waits for that lock; it is always
 *   the last one started, so everything it may be waiting on is thawed first.
 */
export type ThawOrder = "reverse-freeze-order" | "freeze-order";

/** The agent's thaw order. */
export const AGENT_THAW_ORDER: ThawOrder = "reverse-freeze-order";

/** The guard's and recovery's thaw order. */
export const EMERGENCY_THAW_ORDER: ThawOrder = "freeze-order";

/**
 * Puts things listed in freeze order into the given thaw order.
 *
 * @example
 * ```ts
 * import { AGENT_THAW_ORDER, inThawOrder } from "./freezer.ts";
 * inThawOrder(["/data/child", "/data"], AGENT_THAW_ORDER); // ["/data", "/data/child"]
 * ```
 */
export function inThawOrder<T>(inFreezeOrder: readonly T[], order: ThawOrder): T[] {
  return order === "freeze-order" ? [...inFreezeOrder] : [...inFreezeOrder].reverse();
}

/**
 * Thaws through a descriptor and confirms through the same one: the
 * filesystem the run froze, wherever its mount point is now.
 *
 * @example
 * ```ts
 * import { createFreezer, thawHandleAndConfirm } from "./freezer.ts";
 * const freezer = await createFreezer();
 * const { handle } = freezer.open("/data");
 * if (handle) thawHandleAndConfirm(freezer, handle);
 * ```
 */
export function thawHandleAndConfirm(
  freezer: Freezer,
  handle: FreezeHandle,
): { confirmed: boolean; wasFrozen: boolean; error?: string; ms: number } {
  return confirmThaw(freezer.thawHandle(handle), freezer.thawHandle(handle));
}

/** A thaw is confirmed when a second FITHAW answers EINVAL ("not frozen"). */
function confirmThaw(
  first: FreezeOp,
  second: FreezeOp,
): { confirmed: boolean; wasFrozen: boolean; error?: string; ms: number } {
  const confirmed = !second.ok && second.errno === ERRNO.EINVAL;
  const error = confirmed
    ? undefined
    : second.ok
    ? "still frozen after thaw (frozen twice?)"
    : first.ok || first.errno === ERRNO.EINVAL
    ? second.error
    : first.error;
  return { confirmed, wasFrozen: first.ok, error, ms: first.ms + second.ms };
}

/**
 * Thaws a mount point and confirms it: a second FITHAW must answer EINVAL
 * ("not frozen"). `wasFrozen` tells whether the first call thawed anything.
 *
 * @example
 * ```ts
 * import { createFreezer, thawAndConfirm } from "./freezer.ts";
 * const { confirmed } = thawAndConfirm(await createFreezer(), "/data");
 * ```
 */
export function thawAndConfirm(
  freezer: Freezer,
  mountPoint: string,
): { confirmed: boolean; wasFrozen: boolean; error?: string; ms: number } {
  return confirmThaw(freezer.thaw(mountPoint), freezer.thaw(mountPoint));
}

/**
 * An emergency thaw (guard, recovery) of a planned mount point: only while
 * the path still leads to the planned mount (`mountId`), through the
 * descriptor that checked it. Without a mount id (an older marker), by path.
 *
 * @example
 * ```ts
 * import { createFreezer, thawIfPlanned } from "./freezer.ts";
 * thawIfPlanned(await createFreezer(), "/data", 42);
 * ```
 */
export function thawIfPlanned(
  freezer: Freezer,
  mountPoint: string,
  mountId: number | undefined,
): { wasFrozen: boolean; confirmed: boolean; error?: string } {
  if (mountId === undefined) return thawAndConfirm(freezer, mountPoint);
  const { handle, error } = freezer.open(mountPoint);
  if (!handle) return { wasFrozen: false, confirmed: false, error: `cannot open it: ${error}` };
  try {
    if (handle.mountId !== mountId) {
      return {
        wasFrozen: false,
        confirmed: false,
        error:
          `it no longer leads to the planned mount ${mountId} (now ${handle.mountId}): not thawed, it is not the filesystem vmsnap froze`,
      };
    }
    const { ms: _ms, ...result } = thawHandleAndConfirm(freezer, handle);
    return result;
  } finally {
    freezer.close(handle);
  }
}
