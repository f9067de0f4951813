/**
 * The one FFI binding of libc: every libc function vmsnap calls is declared
 * here, in a symbol set per concern (the freeze path, the run lock, this
 * process's descriptors, `close_range`), and bound through the runtime's FFI
 * (`bun:ffi` in the binary, `Deno.dlopen` in the tests) by one loader with one
 * cache.
 *
 * Which library: `libc.so.6` first. Under glibc it is glibc. Under musl (the
 * `linux-x64-musl` build) every name that starts with `libc.` is one of the
 * dynamic linker's reserved names (ldso/dynlink.c, `load_library`) and
 * resolves to the running musl itself, never to a file (a gcompat
 * `libc.so.6` is not read). The musl names follow for a dynamic linker that
 * refuses `libc.so.6`; the library is chosen once per thread, with a probe
 * that needs only `__errno_location` (glibc and musl both have it), so a
 * symbol missing from one set (`close_range` before glibc 2.34) never makes
 * the loader try another library.
 *
 * Each call returns its result (0, or a descriptor) or -errno, read on the
 * calling thread (errno is per thread). No node builtins, here or below: a
 * freeze-pool worker thread (src/freeze/worker.ts) imports this and binds its
 * own copy, and nothing else loads in it. Loading is synchronous (a lock is
 * taken in synchronous code).
 *
 * @module
 */

/** The libraries tried, in order (see the module's documentation). */
export const LIBC_NAMES = [
  "libc.so.6",
  "libc.musl-x86_64.so.1",
  "libc.musl-aarch64.so.1",
  "/lib/ld-musl-x86_64.so.1",
  "/lib/ld-musl-aarch64.so.1",
] as const;

/** A C argument: 32-bit integers, a 64-bit one (a bigint), or a pointer to a typed array. */
export type LibcType = "i32" | "u32" | "u64" | "buffer";

/** One C function: its arguments; every one vmsnap calls returns an int. */
export interface LibcFunction {
  readonly parameters: readonly LibcType[];
}

/** The functions one concern calls, by their C name. */
export type SymbolSet = Readonly<Record<string, LibcFunction>>;

/** What a JavaScript caller passes for a C argument. */
type ArgOf<T> = T extends "buffer" ? ArrayBufferView : T extends "u64" ? bigint : number;

/** The JavaScript arguments of a C function's parameters. */
type Args<P extends readonly LibcType[]> = { -readonly [I in keyof P]: ArgOf<P[I]> };

/** A bound function: its result, or -errno. */
type Call<F extends LibcFunction> = F["parameters"] extends infer P extends readonly LibcType[]
  ? (...args: Args<P>) => number
  : never;

/** A symbol set, bound: each function returns its result, or -errno. */
export type LibcCalls<S extends SymbolSet> = { readonly [K in keyof S]: Call<S[K]> };

const fn = <const P extends readonly LibcType[]>(...parameters: P): { readonly parameters: P } => ({
  parameters,
});

/**
 * Every libc function vmsnap calls, by concern. A concern binds its own set,
 * so an argument declared differently (ioctl's third one: a number for
 * FIFREEZE, a buffer for FIONREAD) or a function an older libc lacks stays
 * within its concern.
 */
export const LIBC_SYMBOLS = {
  /** The freeze path (src/sys/freeze_libc.ts): the agent's thread and each pool worker. */
  freeze: {
    open: fn("buffer", "i32"),
    ioctl: fn("i32", "u64", "u64"),
    syncfs: fn("i32"),
    close: fn("i32"),
  },
  /** The run lock (src/state/lock.ts). */
  lock: {
    open: fn("buffer", "i32", "i32"),
    flock: fn("i32", "i32"),
    close: fn("i32"),
  },
  /** This process's descriptors (src/sys/descriptors.ts): stdio and hook mode. */
  descriptors: {
    fcntl: fn("i32", "i32", "i32"),
    getsockopt: fn("i32", "i32", "i32", "buffer", "buffer"),
    ioctl: fn("i32", "u64", "buffer"),
  },
  /** glibc 2.34 and later; without it, hook mode marks descriptors one by one. */
  closeRange: {
    close_range: fn("u32", "u32", "i32"),
  },
} as const satisfies Record<string, SymbolSet>;

/** What the runtime's FFI opened: raw symbols, and how to read errno. */
interface Opened {
  symbols: Record<string, (...args: unknown[]) => number>;
  errno(): number;
  close(): void;
}

// deno-lint-ignore no-explicit-any
const runtime = globalThis as any;
const ERRNO = "__errno_location";

/** Opens a library with a set through Deno's FFI. */
function denoOpen(name: string, set: SymbolSet): Opened {
  const declared = Object.fromEntries(
    Object.entries(set).map(([symbol, f]) => [symbol, { parameters: f.parameters, result: "i32" }]),
  );
  const lib = runtime.Deno.dlopen(name, {
    ...declared,
    [ERRNO]: { parameters: [], result: "pointer" },
  });
  return {
    symbols: lib.symbols,
    errno: () => new runtime.Deno.UnsafePointerView(lib.symbols[ERRNO]()).getInt32(),
    close: () => lib.close(),
  };
}

/** The same through bun:ffi, loaded synchronously and hidden from Deno's resolver. */
function bunOpen(name: string, set: SymbolSet): Opened {
  // deno-lint-ignore no-explicit-any
  const ffi = (import.meta as unknown as { require(id: string): any }).require(
    ["bun", "ffi"].join(":"),
  );
  const declared = Object.fromEntries(
    Object.entries(set).map(([symbol, f]) => [symbol, {
      args: f.parameters.map((p) => p === "buffer" ? "ptr" : p),
      returns: "i32",
    }]),
  );
  const lib = ffi.dlopen(name, { ...declared, [ERRNO]: { args: [], returns: "ptr" } });
  const symbols = Object.fromEntries(
    Object.entries(set).map(([symbol, f]) => {
      const raw = lib.symbols[symbol];
      const buffers = f.parameters.flatMap((p, i) => p === "buffer" ? [i] : []);
      if (buffers.length === 0) return [symbol, raw];
      // bun:ffi takes a pointer where Deno takes the typed array.
      return [symbol, (...args: unknown[]) => {
        for (const i of buffers) args[i] = ffi.ptr(args[i]);
        return raw(...args);
      }];
    }),
  );
  return {
    symbols,
    errno: () => ffi.read.i32(lib.symbols[ERRNO](), 0),
    close: () => lib.close(),
  };
}

/** Opens `name` with `set` through this runtime's FFI; throws when it cannot. */
function open(name: string, set: SymbolSet): Opened {
  if (runtime.Bun) return bunOpen(name, set);
  if (runtime.Deno) return denoOpen(name, set);
  throw new Error("this runtime has no FFI");
}

/** The library that opened on this thread, once found. */
let library: string | undefined;
/** Each set bound on this thread. */
const bound = new Map<SymbolSet, unknown>();

/** The first of LIBC_NAMES this runtime opens (probed with errno alone). */
function libraryName(): string {
  if (library) return library;
  const failures: string[] = [];
  for (const name of LIBC_NAMES) {
    try {
      open(name, {}).close();
      return library = name;
    } catch (error) {
      failures.push(`${name}: ${(error as Error)?.message ?? error}`);
    }
  }
  throw new Error(`cannot load libc through FFI (${failures.join("; ")})`);
}

/**
 * Binds a symbol set (once per thread; later calls return the same binding).
 * Each bound function returns its result, or -errno. Throws when this runtime
 * has no FFI, no libc opens, or the libc lacks a function of the set.
 *
 * @example
 * ```ts
 * import { bindLibc, LIBC_SYMBOLS } from "./libc.ts";
 * const lock = bindLibc(LIBC_SYMBOLS.lock);
 * const fd = lock.open(new TextEncoder().encode("/tmp\0"), 0, 0);
 * if (fd >= 0) lock.close(fd);
 * ```
 */
export function bindLibc<S extends SymbolSet>(set: S): LibcCalls<S> {
  const known = bound.get(set);
  if (known) return known as LibcCalls<S>;
  const name = libraryName();
  let opened: Opened;
  try {
    opened = open(name, set);
  } catch (error) {
    throw new Error(
      `cannot bind ${Object.keys(set).join(", ")} in ${name}: ${(error as Error)?.message}`,
      { cause: error },
    );
  }
  const calls = Object.fromEntries(
    Object.keys(set).map((symbol) => {
      const raw = opened.symbols[symbol];
      return [symbol, (...args: unknown[]) => {
        const result = raw(...args);
        return result < 0 ? -opened.errno() : result;
      }];
    }),
  ) as unknown as LibcCalls<S>;
  bound.set(set, calls);
  return calls;
}

/**
 * A path as C wants it: UTF-8, NUL-terminated.
 *
 * @example
 * ```ts
 * import { cString } from "./libc.ts";
 * cString("/data").at(-1); // 0
 * ```
 */
export function cString(text: string): Uint8Array {
  return new TextEncoder().encode(`${text}\0`);
}
