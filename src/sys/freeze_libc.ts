/**
 * The libc calls of the freeze path (open, ioctl, syncfs, close), bound from
 * the one libc binding ({@link ./libc.ts}). No node builtins, so that a
 * freeze-pool worker thread (src/freeze/worker.ts) loads it and nothing else,
 * and binds its own copy. Each call returns its result (0, or a descriptor)
 * or -errno, read on the calling thread (errno is per thread).
 *
 * @module
 */
import { bindLibc, cString, LIBC_SYMBOLS } from "./libc.ts";

/** The FIFREEZE ioctl request. */
export const FIFREEZE = 0xc0045877n;
/** The FITHAW ioctl request. */
export const FITHAW = 0xc0045878n;
const O_RDONLY_CLOEXEC = 0o2000000;

/** The libc calls the freezer needs; each returns 0 (or an fd) or -errno. */
export interface FreezeLibc {
  open(path: string): number;
  ioctl(fd: number, request: bigint): number;
  syncfs(fd: number): number;
  close(fd: number): void;
}

/**
 * Binds the freeze path's libc calls on this thread; rejects when FFI or
 * libc cannot be loaded.
 *
 * @example
 * ```ts
 * import { FIFREEZE, loadFreezeLibc } from "./freeze_libc.ts";
 * const libc = await loadFreezeLibc();
 * const fd = libc.open("/data");
 * if (fd >= 0) console.log(libc.ioctl(fd, FIFREEZE)); // 0, or -errno
 * ```
 */
export function loadFreezeLibc(): Promise<FreezeLibc> {
  try {
    const calls = bindLibc(LIBC_SYMBOLS.freeze);
    return Promise.resolve({
      open: (path) => calls.open(cString(path), O_RDONLY_CLOEXEC),
      ioctl: (fd, request) => calls.ioctl(fd, request, 0n),
      syncfs: (fd) => calls.syncfs(fd),
      close: (fd) => void calls.close(fd),
    });
  } catch (error) {
    return Promise.reject(error);
  }
}
