/**
 * This process's file descriptors, through the one libc binding
 * ({@link ./libc.ts}):
 *
 * - marking every inherited descriptor close-on-exec before the holder is
 *   started, so the holder keeps none of what the backup agent handed the
 *   hook (an agent that reads the hook's output until end of file would
 *   otherwise hang on the holder);
 * - reading a unix socket peer's credentials (`SO_PEERCRED`);
 * - a descriptor's status flags (`F_SETFL`) and the bytes waiting in a pipe
 *   (`FIONREAD`), for stdin and stdout.
 *
 * Each degrades to "not available" instead of throwing where FFI cannot load.
 *
 * @module
 */
import { readdirSync } from "node:fs";
import { bindLibc, LIBC_SYMBOLS, type LibcCalls } from "./libc.ts";

const CLOSE_RANGE_CLOEXEC = 4;
const F_SETFD = 2;
const F_SETFL = 4;
const FD_CLOEXEC = 1;
const SOL_SOCKET = 1;
const SO_PEERCRED = 17;
const FIONREAD = 0x541bn;

type Descriptors = LibcCalls<typeof LIBC_SYMBOLS.descriptors>;

/** The descriptor calls, or undefined where FFI or libc cannot be loaded. */
function descriptors(): Descriptors | undefined {
  try {
    return bindLibc(LIBC_SYMBOLS.descriptors);
  } catch {
    return undefined;
  }
}

/** What `call` returns, or undefined when it throws. */
function attempt<T>(call: () => T): T | undefined {
  try {
    return call();
  } catch {
    return undefined;
  }
}

/** close_range(2), or undefined where libc lacks it (before glibc 2.34). */
function closeRange(): LibcCalls<typeof LIBC_SYMBOLS.closeRange>["close_range"] | undefined {
  try {
    return bindLibc(LIBC_SYMBOLS.closeRange).close_range;
  } catch {
    return undefined;
  }
}

/** Runs `work` after the current synchronous code, as the FFI load always did (off the start path). */
const later = <T>(work: () => T): Promise<T> => Promise.resolve().then(work);

/**
 * Marks every descriptor from 3 up close-on-exec, so that a process started
 * next inherits only its stdin, stdout and stderr. Returns how it was done,
 * or `"unavailable"` when neither way worked.
 *
 * @example
 * ```ts
 * import { closeOnExecAbove2 } from "./descriptors.ts";
 * await closeOnExecAbove2(); // then spawn: the child gets fds 0-2 only
 * ```
 */
export function closeOnExecAbove2(): Promise<"close_range" | "fcntl" | "unavailable"> {
  return later(() => {
    if (closeRange()?.(3, 0xffffffff, CLOSE_RANGE_CLOEXEC) === 0) return "close_range";
    // An old libc without close_range (or a kernel before 5.11): one descriptor at a time.
    const c = descriptors();
    if (!c) return "unavailable";
    let all = true;
    for (const name of readdirSync("/proc/self/fd")) {
      const fd = Number(name);
      if (fd > 2 && c.fcntl(fd, F_SETFD, FD_CLOEXEC) !== 0) all = false;
    }
    return all ? "fcntl" : "unavailable";
  });
}

/**
 * A synchronous `fcntl(fd, F_SETFL, flags)` (e.g. to clear `O_NONBLOCK` in an
 * exit handler), once FFI has loaded; undefined where it cannot. The setter
 * returns false when the call failed.
 *
 * @example
 * ```ts
 * import { statusFlagsSetter } from "./descriptors.ts";
 * const setFlags = await statusFlagsSetter();
 * setFlags?.(1, 0o2); // stdout: O_RDWR, blocking again
 * ```
 */
export function statusFlagsSetter(): Promise<
  ((fd: number, flags: number) => boolean) | undefined
> {
  return later(() => {
    const c = descriptors();
    // Called from an exit handler: never throws.
    return c &&
      ((fd: number, flags: number) => attempt(() => c.fcntl(fd, F_SETFL, flags) === 0) ?? false);
  });
}

/**
 * The credentials of the process at the other end of a connected unix
 * socket, or undefined when the runtime does not expose the descriptor.
 *
 * @example
 * ```ts
 * import net from "node:net";
 * import { peerCredentials } from "./descriptors.ts";
 * net.createServer(async (socket) => {
 *   const peer = await peerCredentials(socket);
 *   if (peer && peer.uid !== 0) socket.destroy();
 * });
 * ```
 */
export function peerCredentials(
  socket: unknown,
): Promise<{ pid: number; uid: number; gid: number } | undefined> {
  const fd = (socket as { _handle?: { fd?: unknown } })._handle?.fd;
  return later(() => {
    const c = typeof fd === "number" && fd >= 0 ? descriptors() : undefined;
    if (!c) return undefined;
    const cred = new Int32Array(3);
    const length = new Uint32Array([12]);
    const ok = c.getsockopt(fd as number, SOL_SOCKET, SO_PEERCRED, cred, length) === 0;
    return ok ? { pid: cred[0], uid: cred[1], gid: cred[2] } : undefined;
  });
}

/**
 * A synchronous `ioctl(fd, FIONREAD)` (the bytes waiting in a pipe or socket,
 * not yet read by anyone), once FFI has loaded; undefined where it cannot.
 * The counter returns undefined when the call failed (not a pipe, socket or
 * terminal).
 *
 * @example
 * ```ts
 * import { waitingBytesCounter } from "./descriptors.ts";
 * const waiting = await waitingBytesCounter();
 * if (waiting?.(0) === 0) console.log("nothing unread in stdin's pipe");
 * ```
 */
export function waitingBytesCounter(): Promise<
  ((fd: number) => number | undefined) | undefined
> {
  return later(() => {
    const c = descriptors();
    const waiting = new Int32Array(1);
    return c &&
      ((fd: number) =>
        attempt(() => c.ioctl(fd, FIONREAD, waiting) === 0 ? waiting[0] : undefined));
  });
}
