/**
 * The process's own stdin and stdout where the runtime's streams misbehave:
 * a character device that is not a terminal (a VM's virtio-serial port, given
 * as `vmsnap run --external`'s stdin and stdout).
 *
 * - Bun reads such a stdin as a regular file, with a blocking `pread` on the
 *   main thread: the event loop stops (no `frozen` line, no timeout) until
 *   input arrives, and a device that refuses `pread` (virtio-serial: ESPIPE)
 *   never delivers a line. {@linkcode handshakeInput} reads it with `read(2)`
 *   in non-blocking mode, polled (nothing left in flight keeps the process
 *   alive once the answer is in).
 * - Bun's stdout stream sets `O_NONBLOCK` on stdout's open file description,
 *   which another process may share (the shell that opened the port, a relay
 *   `cat`): its reads and writes then fail with EAGAIN.
 *   {@linkcode rememberStdioFlags} notes the flags of stdin, stdout and stderr
 *   at start, and at exit clears the `O_NONBLOCK` that vmsnap or the runtime
 *   added. While vmsnap runs, a process sharing the descriptor still sees it
 *   non-blocking.
 *
 * @module
 */
import { fstatSync, readFileSync, readSync } from "node:fs";
import process from "node:process";
import { Readable } from "node:stream";
import { isatty } from "node:tty";
import { statusFlagsSetter } from "./descriptors.ts";

const O_NONBLOCK = 0o4000;
/** How long to wait before reading again when nothing is there (before the answer is due). */
const POLL_MS = 20;
/**
 * Once the answer is due ({@linkcode expectInputSoon}: the filesystems are frozen), the wait
 * starts at 1 ms and doubles up to this: the answer is picked up within ~1 ms when the caller
 * answers at once, within ANSWER_POLL_MS when it takes longer.
 */
const ANSWER_POLL_MS = 4;
/** What expectInputSoon does for each polling stream. */
const hurry = new WeakMap<Readable, () => void>();

/** The file status flags of one of this process's descriptors, from /proc (no FFI). */
function statusFlags(fd: number): number | undefined {
  try {
    const line = /^flags:\s*([0-7]+)$/m.exec(readFileSync(`/proc/self/fdinfo/${fd}`, "utf8"));
    return line ? parseInt(line[1], 8) : undefined;
  } catch {
    return undefined;
  }
}

/** True when the descriptor is a character device that is not a terminal. */
function isPlainCharDevice(fd: number): boolean {
  try {
    return fstatSync(fd).isCharacterDevice() && !isatty(fd);
  } catch {
    return false;
  }
}

const remembered = new Map<number, number>();
let setFlags: ((fd: number, flags: number) => boolean) | undefined;
let loading: Promise<unknown> | undefined;

/** Clears O_NONBLOCK where it was not set at start. Synchronous (an exit handler). */
function restoreFlags(): void {
  for (const [fd, before] of remembered) {
    const now = statusFlags(fd);
    if (now === undefined || (before & O_NONBLOCK) || !(now & O_NONBLOCK)) continue;
    setFlags?.(fd, now & ~O_NONBLOCK);
  }
}

/**
 * Notes stdin's, stdout's and stderr's file status flags (before the first
 * write to process.stdout), and clears at exit the `O_NONBLOCK` set since.
 *
 * @example
 * ```ts
 * import { rememberStdioFlags } from "./stdio.ts";
 * rememberStdioFlags();
 * ```
 */
export function rememberStdioFlags(): void {
  if (loading) return;
  for (const fd of [0, 1, 2]) {
    const flags = statusFlags(fd);
    if (flags !== undefined) remembered.set(fd, flags);
  }
  loading = statusFlagsSetter().then((setter) => (setFlags = setter)).catch(() => {});
  process.on("exit", restoreFlags);
}

/** Reads fd 0 made non-blocking, polling; undefined when it cannot be made non-blocking. */
async function pollingReader(): Promise<Readable | undefined> {
  rememberStdioFlags();
  await loading;
  const flags = statusFlags(0);
  if (flags === undefined || !setFlags?.(0, flags | O_NONBLOCK)) return undefined;
  const buffer = Buffer.alloc(64 * 1024);
  let timer: ReturnType<typeof setTimeout> | undefined;
  let cap = POLL_MS;
  let delay = POLL_MS;
  const attempt = () => {
    timer = undefined;
    let bytes: number;
    try {
      bytes = readSync(0, buffer, 0, buffer.length, null);
    } catch (error) {
      const code = (error as NodeJS.ErrnoException).code;
      if (code !== "EAGAIN" && code !== "EINTR") return void stream.destroy(error as Error);
      timer = setTimeout(attempt, delay);
      delay = Math.min(delay * 2, cap);
      return;
    }
    delay = Math.min(1, cap);
    stream.push(bytes > 0 ? Buffer.from(buffer.subarray(0, bytes)) : null);
  };
  const stream: Readable = new Readable({
    read: attempt,
    destroy(error, callback) {
      clearTimeout(timer);
      callback(error);
    },
  });
  hurry.set(stream, () => {
    cap = ANSWER_POLL_MS;
    delay = 1;
    if (timer === undefined) return; // not waiting (reading, or nothing asked yet)
    clearTimeout(timer);
    attempt();
  });
  return stream;
}

/**
 * Says that input is due now on a stream from {@linkcode handshakeInput} (the
 * `frozen` line is about to go out): a polled character device is read again
 * at once and then every 1–4 ms instead of every 20 ms, so that the answer is
 * not left waiting while the filesystems are frozen. Nothing for other streams.
 *
 * @example
 * ```ts
 * import process from "node:process";
 * import { expectInputSoon, handshakeInput } from "./stdio.ts";
 * const input = await handshakeInput(process.stdin);
 * expectInputSoon(input);
 * ```
 */
export function expectInputSoon(stream: Readable): void {
  hurry.get(stream)?.();
}

/**
 * The stream the external handshake reads its answer from: `stdin` itself,
 * unless it is the process's fd 0 on a character device that is not a
 * terminal, which is read directly (see the module). Destroy a stream this
 * returned when done with it (it stops reading).
 *
 * @example
 * ```ts
 * import process from "node:process";
 * import { handshakeInput } from "./stdio.ts";
 * const input = await handshakeInput(process.stdin);
 * input.on("data", (chunk) => console.log(String(chunk)));
 * ```
 */
export async function handshakeInput(stdin: Readable): Promise<Readable> {
  const fd = (stdin as { fd?: unknown }).fd;
  if (fd !== 0 || !isPlainCharDevice(0)) return stdin;
  return await pollingReader() ?? stdin;
}
