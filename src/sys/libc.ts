/**
 * Two libc calls the hook mode needs, through the runtime's FFI (bun:ffi or
 * Deno.dlopen):
 *
 * - marking every inherited descriptor close-on-exec before the holder is
 *   started, so the holder keeps none of what the backup agent handed the
 *   hook (an agent that reads the hook's output until end of file would
 *   otherwise hang on the holder);
 * - reading a unix socket peer's credentials (`SO_PEERCRED`).
 *
 * Both degrade to "not available" instead of throwing where FFI cannot load.
 *
 * @module
 */
import { readdirSync } from "node:fs";

const CLOSE_RANGE_CLOEXEC = 4;
const F_SETFD = 2;
const F_SETFL = 4;
const FD_CLOEXEC = 1;
const SOL_SOCKET = 1;
const SO_PEERCRED = 17;
const FIONREAD = 0x541b;

interface Libc {
  closeRange(first: number, last: number, flags: number): number;
  setCloexec(fd: number): number;
  setStatusFlags(fd: number, flags: number): number;
  peerCred(fd: number): { pid: number; uid: number; gid: number } | undefined;
  /** ioctl(fd, FIONREAD): bytes waiting to be read; undefined when the call failed. */
  bytesWaiting(fd: number): number | undefined;
}

// deno-lint-ignore no-explicit-any
const runtime = globalThis as any;

async function bunLibc(): Promise<Libc> {
  const ffi = await import(["bun", "ffi"].join(":"));
  const lib = ffi.dlopen("libc.so.6", {
    close_range: { args: ["u32", "u32", "i32"], returns: "i32" },
    fcntl: { args: ["i32", "i32", "i32"], returns: "i32" },
    getsockopt: { args: ["i32", "i32", "i32", "ptr", "ptr"], returns: "i32" },
    ioctl: { args: ["i32", "u64", "ptr"], returns: "i32" },
  });
  const waiting = new Int32Array(1);
  return {
    closeRange: (first, last, flags) => lib.symbols.close_range(first, last, flags),
    setCloexec: (fd) => lib.symbols.fcntl(fd, F_SETFD, FD_CLOEXEC),
    setStatusFlags: (fd, flags) => lib.symbols.fcntl(fd, F_SETFL, flags),
    peerCred(fd) {
      const cred = new Int32Array(3);
      const length = new Uint32Array([12]);
      const ok = lib.symbols.getsockopt(
        fd,
        SOL_SOCKET,
        SO_PEERCRED,
        ffi.ptr(cred),
        ffi.ptr(length),
      );
      return ok === 0 ? { pid: cred[0], uid: cred[1], gid: cred[2] } : undefined;
    },
    bytesWaiting: (fd) =>
      lib.symbols.ioctl(fd, FIONREAD, ffi.ptr(waiting)) === 0 ? waiting[0] : undefined,
  };
}

function denoLibc(): Libc {
  const lib = runtime.Deno.dlopen("libc.so.6", {
    close_range: { parameters: ["u32", "u32", "i32"], result: "i32" },
    fcntl: { parameters: ["i32", "i32", "i32"], result: "i32" },
    getsockopt: { parameters: ["i32", "i32", "i32", "buffer", "buffer"], result: "i32" },
    ioctl: { parameters: ["i32", "u64", "buffer"], result: "i32" },
  });
  const waiting = new Int32Array(1);
  return {
    closeRange: (first, last, flags) => lib.symbols.close_range(first, last, flags),
    setCloexec: (fd) => lib.symbols.fcntl(fd, F_SETFD, FD_CLOEXEC),
    setStatusFlags: (fd, flags) => lib.symbols.fcntl(fd, F_SETFL, flags),
    peerCred(fd) {
      const cred = new Int32Array(3);
      const length = new Uint32Array([12]);
      const ok = lib.symbols.getsockopt(fd, SOL_SOCKET, SO_PEERCRED, cred, length);
      return ok === 0 ? { pid: cred[0], uid: cred[1], gid: cred[2] } : undefined;
    },
    bytesWaiting: (fd) =>
      lib.symbols.ioctl(fd, BigInt(FIONREAD), waiting) === 0 ? waiting[0] : undefined,
  };
}

let cached: Promise<Libc | undefined> | undefined;

function libc(): Promise<Libc | undefined> {
  cached ??= (async () => {
    try {
      return runtime.Bun ? await bunLibc() : runtime.Deno ? denoLibc() : undefined;
    } catch {
      return undefined;
    }
  })();
  return cached;
}

/**
 * Marks every descriptor from 3 up close-on-exec, so that a process started
 * next inherits only its stdin, stdout and stderr. Returns how it was done,
 * or `"unavailable"` when neither way worked.
 *
 * @example
 * ```ts
 * import { closeOnExecAbove2 } from "./libc.ts";
 * await closeOnExecAbove2(); // then spawn: the child gets fds 0-2 only
 * ```
 */
export async function closeOnExecAbove2(): Promise<"close_range" | "fcntl" | "unavailable"> {
  const c = await libc();
  if (!c) return "unavailable";
  try {
    if (c.closeRange(3, 0xffffffff, CLOSE_RANGE_CLOEXEC) === 0) return "close_range";
  } catch {
    // An old libc without close_range: one descriptor at a time.
  }
  let all = true;
  for (const name of readdirSync("/proc/self/fd")) {
    const fd = Number(name);
    if (fd > 2 && c.setCloexec(fd) !== 0) all = false;
  }
  return all ? "fcntl" : "unavailable";
}

/**
 * A synchronous `fcntl(fd, F_SETFL, flags)` (e.g. to clear `O_NONBLOCK` in an
 * exit handler), once FFI has loaded; undefined where it cannot. The setter
 * returns false when the call failed.
 *
 * @example
 * ```ts
 * import { statusFlagsSetter } from "./libc.ts";
 * const setFlags = await statusFlagsSetter();
 * setFlags?.(1, 0o2); // stdout: O_RDWR, blocking again
 * ```
 */
export async function statusFlagsSetter(): Promise<
  ((fd: number, flags: number) => boolean) | undefined
> {
  const c = await libc();
  if (!c) return undefined;
  return (fd, flags) => {
    try {
      return c.setStatusFlags(fd, flags) === 0;
    } catch {
      return false;
    }
  };
}

/**
 * The credentials of the process at the other end of a connected unix
 * socket, or undefined when the runtime does not expose the descriptor.
 *
 * @example
 * ```ts
 * import net from "node:net";
 * import { peerCredentials } from "./libc.ts";
 * net.createServer(async (socket) => {
 *   const peer = await peerCredentials(socket);
 *   if (peer && peer.uid !== 0) socket.destroy();
 * });
 * ```
 */
export async function peerCredentials(
  socket: unknown,
): Promise<{ pid: number; uid: number; gid: number } | undefined> {
  const fd = (socket as { _handle?: { fd?: unknown } })._handle?.fd;
  if (typeof fd !== "number" || fd < 0) return undefined;
  const c = await libc();
  try {
    return c?.peerCred(fd);
  } catch {
    return undefined;
  }
}

/**
 * A synchronous `ioctl(fd, FIONREAD)` (the bytes waiting in a pipe or socket,
 * not yet read by anyone), once FFI has loaded; undefined where it cannot.
 * The counter returns undefined when the call failed (not a pipe, socket or
 * terminal).
 *
 * @example
 * ```ts
 * import { waitingBytesCounter } from "./libc.ts";
 * const waiting = await waitingBytesCounter();
 * if (waiting?.(0) === 0) console.log("nothing unread in stdin's pipe");
 * ```
 */
export async function waitingBytesCounter(): Promise<
  ((fd: number) => number | undefined) | undefined
> {
  const c = await libc();
  if (!c) return undefined;
  return (fd) => {
    try {
      return c.bytesWaiting(fd);
    } catch {
      return undefined;
    }
  };
}
