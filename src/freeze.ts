/**
 * Freezing and thawing one filesystem: the FIFREEZE/FITHAW ioctls through
 * libc via the runtime's FFI (Deno.dlopen or bun:ffi, ~1 ms), with the
 * `fsfreeze` command as the fallback (~15 ms a call) where FFI is not
 * allowed.
 *
 * @module
 */
import { spawnSync } from "node:child_process";
import { existsSync } from "node:fs";

const FIFREEZE = 0xc0045877n;
const FITHAW = 0xc0045878n;
const O_RDONLY_CLOEXEC = 0o2000000;

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

/** Freezes and thaws mount points. */
export interface Freezer {
  readonly method: "ioctl" | "fsfreeze";
  freeze(mountPoint: string): FreezeOp;
  thaw(mountPoint: string): FreezeOp;
}

type Ioctl = (path: string, request: bigint) => number;

/** Names an errno. */
export function errnoName(errno: number): string {
  return ERRNO_NAMES[errno] ?? `errno ${errno}`;
}

// deno-lint-ignore no-explicit-any
const runtime = globalThis as any;

/** ioctl(open(path), request) through Deno's FFI; returns 0 or -errno. */
function denoIoctl(): Ioctl {
  const lib = runtime.Deno.dlopen("libc.so.6", {
    open: { parameters: ["buffer", "i32"], result: "i32" },
    ioctl: { parameters: ["i32", "u64", "u64"], result: "i32" },
    close: { parameters: ["i32"], result: "i32" },
    __errno_location: { parameters: [], result: "pointer" },
  });
  const errno = () => new runtime.Deno.UnsafePointerView(lib.symbols.__errno_location()).getInt32();
  return (path, request) => {
    const fd = lib.symbols.open(new TextEncoder().encode(`${path}\0`), O_RDONLY_CLOEXEC);
    if (fd < 0) return -errno();
    const result = lib.symbols.ioctl(fd, request, 0n);
    const error = result < 0 ? errno() : 0;
    lib.symbols.close(fd);
    return -error;
  };
}

/** The same through bun:ffi. */
async function bunIoctl(): Promise<Ioctl> {
  const ffi = await import(["bun", "ffi"].join(":"));
  const lib = ffi.dlopen("libc.so.6", {
    open: { args: ["ptr", "i32"], returns: "i32" },
    ioctl: { args: ["i32", "u64", "u64"], returns: "i32" },
    close: { args: ["i32"], returns: "i32" },
    __errno_location: { args: [], returns: "ptr" },
  });
  const errno = () => ffi.read.i32(lib.symbols.__errno_location(), 0);
  return (path, request) => {
    const name = new TextEncoder().encode(`${path}\0`);
    const fd = lib.symbols.open(ffi.ptr(name), O_RDONLY_CLOEXEC);
    if (fd < 0) return -errno();
    const result = lib.symbols.ioctl(fd, request, 0n);
    const error = result < 0 ? errno() : 0;
    lib.symbols.close(fd);
    return -error;
  };
}

function timed(run: () => number): FreezeOp {
  const started = performance.now();
  const result = run();
  const ms = performance.now() - started;
  return result === 0
    ? { ok: true, ms }
    : { ok: false, errno: -result, error: errnoName(-result), ms };
}

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

let cached: Promise<Freezer> | undefined;

/**
 * The freezer for this process: the ioctl through FFI, or `fsfreeze` when FFI
 * cannot be loaded. `VMSNAP_FREEZE_METHOD=fsfreeze` (or `method`) forces the
 * fallback.
 *
 * @example
 * ```ts
 * import { createFreezer } from "./freeze.ts";
 * const freezer = await createFreezer();
 * const op = freezer.freeze("/data");
 * if (op.ok) freezer.thaw("/data");
 * ```
 */
export function createFreezer(method?: Freezer["method"]): Promise<Freezer> {
  if (method) return build(method);
  cached ??= build(
    runtime.process?.env?.VMSNAP_FREEZE_METHOD === "fsfreeze" ? "fsfreeze" : "ioctl",
  );
  return cached;
}

async function build(method: Freezer["method"]): Promise<Freezer> {
  let ioctl: Ioctl | undefined;
  if (method === "ioctl") {
    try {
      ioctl = runtime.Bun ? await bunIoctl() : runtime.Deno ? denoIoctl() : undefined;
    } catch {
      ioctl = undefined;
    }
  }
  const call: Ioctl = ioctl ?? fsfreezeCommand;
  return {
    method: ioctl ? "ioctl" : "fsfreeze",
    freeze: (mountPoint: string) => timed(() => call(mountPoint, FIFREEZE)),
    thaw: (mountPoint: string) => timed(() => call(mountPoint, FITHAW)),
  };
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
 * import { AGENT_THAW_ORDER, inThawOrder } from "./freeze.ts";
 * inThawOrder(["/data/child", "/data"], AGENT_THAW_ORDER); // ["/data", "/data/child"]
 * ```
 */
export function inThawOrder<T>(inFreezeOrder: readonly T[], order: ThawOrder): T[] {
  return order === "freeze-order" ? [...inFreezeOrder] : [...inFreezeOrder].reverse();
}

/**
 * Thaws a mount point and confirms it: a second FITHAW must answer EINVAL
 * ("not frozen"). `wasFrozen` tells whether the first call thawed anything.
 *
 * @example
 * ```ts
 * import { createFreezer, thawAndConfirm } from "./freeze.ts";
 * const { confirmed } = thawAndConfirm(await createFreezer(), "/data");
 * ```
 */
export function thawAndConfirm(
  freezer: Freezer,
  mountPoint: string,
): { confirmed: boolean; wasFrozen: boolean; error?: string; ms: number } {
  const first = freezer.thaw(mountPoint);
  const second = freezer.thaw(mountPoint);
  const confirmed = !second.ok && second.errno === ERRNO.EINVAL;
  const wasFrozen = first.ok;
  const error = confirmed
    ? undefined
    : second.ok
    ? "still frozen after thaw (frozen twice?)"
    : first.ok || first.errno === ERRNO.EINVAL
    ? second.error
    : first.error;
  return { confirmed, wasFrozen, error, ms: first.ms + second.ms };
}
