/**
 * The libc calls of the freeze path (open, ioctl, syncfs, close) through the
 * runtime's FFI: `Deno.dlopen` or `bun:ffi`. No node builtins, so that a
 * freeze-pool worker thread (src/freeze/worker.ts) loads it and nothing else.
 * Each call returns its result (0, or a descriptor) or -errno, read on the
 * calling thread (errno is per thread).
 *
 * @module
 */

/** The FIFREEZE ioctl request. */
export const FIFREEZE = 0xc0045877n;
/** The FITHAW ioctl request. */
export const FITHAW = 0xc0045878n;
const O_RDONLY_CLOEXEC = 0o2000000;

/** musl's names first: on a musl system a `libc.so.6` is at most a glibc-compatibility shim. */
export const LIBC_NAMES = [
  "libc.musl-x86_64.so.1",
  "libc.musl-aarch64.so.1",
  "libc.so.6",
  "libc.so",
] as const;

/** The libc calls the freezer needs; each returns 0 (or an fd) or -errno. */
export interface FreezeLibc {
  open(path: string): number;
  ioctl(fd: number, request: bigint): number;
  syncfs(fd: number): number;
  close(fd: number): void;
}

// deno-lint-ignore no-explicit-any
const runtime = globalThis as any;

const SYMBOLS = {
  open: [["buffer", "i32"], "i32"],
  ioctl: [["i32", "u64", "u64"], "i32"],
  syncfs: [["i32"], "i32"],
  close: [["i32"], "i32"],
  __errno_location: [[], "pointer"],
} as const;

/** libc through Deno's FFI. */
function denoLibc(name: string): FreezeLibc {
  const lib = runtime.Deno.dlopen(
    name,
    Object.fromEntries(
      Object.entries(SYMBOLS).map(([name, [parameters, result]]) => [name, { parameters, result }]),
    ),
  );
  const errno = () => new runtime.Deno.UnsafePointerView(lib.symbols.__errno_location()).getInt32();
  const call = (result: number) => result < 0 ? -errno() : result;
  return {
    open: (path) => call(lib.symbols.open(new TextEncoder().encode(`${path}\0`), O_RDONLY_CLOEXEC)),
    ioctl: (fd, request) => call(lib.symbols.ioctl(fd, request, 0n)),
    syncfs: (fd) => call(lib.symbols.syncfs(fd)),
    close: (fd) => void lib.symbols.close(fd),
  };
}

/** The same through bun:ffi. */
async function bunLibc(name: string): Promise<FreezeLibc> {
  const ffi = await import(["bun", "ffi"].join(":"));
  const lib = ffi.dlopen(
    name,
    Object.fromEntries(
      Object.entries(SYMBOLS).map(([name, [args, returns]]) => [
        name,
        {
          args: args.map((a) => a === "buffer" ? "ptr" : a),
          returns: returns === "pointer" ? "ptr" : returns,
        },
      ]),
    ),
  );
  const errno = () => ffi.read.i32(lib.symbols.__errno_location(), 0);
  const call = (result: number) => result < 0 ? -errno() : result;
  return {
    open: (path) =>
      call(lib.symbols.open(ffi.ptr(new TextEncoder().encode(`${path}\0`)), O_RDONLY_CLOEXEC)),
    ioctl: (fd, request) => call(lib.symbols.ioctl(fd, request, 0n)),
    syncfs: (fd) => call(lib.symbols.syncfs(fd)),
    close: (fd) => void lib.symbols.close(fd),
  };
}

/**
 * Loads libc through this runtime's FFI (the first of {@linkcode LIBC_NAMES}
 * that opens); throws when FFI or libc cannot be loaded.
 *
 * @example
 * ```ts
 * import { FIFREEZE, loadFreezeLibc } from "./freeze_libc.ts";
 * const libc = await loadFreezeLibc();
 * const fd = libc.open("/data");
 * if (fd >= 0) console.log(libc.ioctl(fd, FIFREEZE)); // 0, or -errno
 * ```
 */
export async function loadFreezeLibc(): Promise<FreezeLibc> {
  if (!runtime.Bun && !runtime.Deno) throw new Error("no FFI in this runtime");
  let lastError: unknown;
  for (const name of LIBC_NAMES) {
    try {
      return runtime.Bun ? await bunLibc(name) : denoLibc(name);
    } catch (error) {
      lastError = error;
    }
  }
  throw new Error(`cannot load libc through FFI: ${(lastError as Error)?.message}`, {
    cause: lastError,
  });
}
