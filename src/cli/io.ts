/**
 * Where the command line's output goes, and how the process ends once it is
 * out.
 *
 * The short commands (all but `run` and `hook`) write with write(2): Bun
 * builds `process.stdout`/`stdin` on first use, about 10 ms of a 15 ms start
 * (issue 12). `run` and `hook` write through the streams (a slow reader must
 * not block the event loop while filesystems are frozen). Under systemd,
 * each stderr line carries its priority for the journal.
 *
 * @module
 */
import { writeSync } from "node:fs";
import process from "node:process";
import { VmsnapError } from "../errors.ts";
import { exitCodeOf } from "../exit_codes.ts";
import { journalWriter, stderrIsJournal } from "./journal.ts";

/** Where output goes; tests and the binary use the process's streams. */
export interface Io {
  stdout(text: string): void;
  stderr(text: string): void;
  env: Record<string, string | undefined>;
  stdin?: NodeJS.ReadableStream;
}

/**
 * How the process writes and ends: `direct` with write(2), then at once;
 * `streams` through the runtime's streams, once they are written out;
 * `flush` (the guard and the holder) once stdout's stream says it has flushed.
 */
export type OutputMode = "direct" | "streams" | "flush";

/** How long a finished run waits for a slow reader of its stdout before it exits regardless. */
const OUTPUT_GRACE_MS = 5_000;
/** What Atomics.wait sleeps on while a full non-blocking pipe drains. */
const pause = new Int32Array(new SharedArrayBuffer(4));

/**
 * Writes to stdout or stderr. A reader that went away (`vmsnap run --json |
 * head -1`: EPIPE) or a failing output file never stops a run: the rest of
 * that stream's output is dropped quietly, the run thaws, resumes and
 * finishes (its log and exit code carry the outcome).
 */
function writeQuietly(stream: NodeJS.WriteStream, text: string | Uint8Array): void {
  if (stream.listenerCount("error") === 0) stream.on("error", () => {});
  if (!stream.destroyed && !stream.writableEnded) stream.write(text);
}

/**
 * Writes with write(2). A full non-blocking pipe (EAGAIN) is waited for, as a
 * blocking write would (Bun's stream would drop what it queued at exit); other
 * errors (EPIPE: the reader went away) drop the output quietly, as
 * writeQuietly does.
 */
function writeDirect(fd: 1 | 2, text: string): void {
  const bytes = new TextEncoder().encode(text);
  let done = 0;
  while (done < bytes.length) {
    try {
      done += writeSync(fd, bytes, done);
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== "EAGAIN") return;
      Atomics.wait(pause, 0, 0, 5); // the reader has not read yet: try again in 5 ms
    }
  }
}

/**
 * The process's own output, written as `mode` says (`flush` writes as
 * `streams` does), its stderr journal-prefixed under systemd.
 *
 * @example
 * ```ts
 * import { processIo } from "./io.ts";
 * processIo("direct").stdout("done\n");
 * ```
 */
export function processIo(mode: OutputMode): Io {
  const direct = mode === "direct";
  return forJournal({
    stdout: (text) => direct ? writeDirect(1, text) : writeQuietly(process.stdout, text),
    stderr: (text) => direct ? writeDirect(2, text) : writeQuietly(process.stderr, text),
    env: process.env,
    // A getter: process.stdin is built on first use (milliseconds), and only run reads it.
    get stdin() {
      return process.stdin;
    },
  });
}

/**
 * The process's streams for `run` and `hook`: the flags of stdin, stdout and
 * stderr are noted first, before the runtime builds its streams (see
 * src/sys/stdio.ts).
 *
 * @example
 * ```ts
 * import { streamingIo } from "./io.ts";
 * (await streamingIo()).stderr("vmsnap: started\n");
 * ```
 */
export async function streamingIo(): Promise<Io> {
  (await import("../sys/stdio.ts")).rememberStdioFlags();
  return processIo("streams");
}

/**
 * The same output, with each stderr line prefixed by its syslog priority when
 * stderr is the systemd journal.
 *
 * @example
 * ```ts
 * import { forJournal } from "./io.ts";
 * const io = forJournal({ stdout: () => {}, stderr: () => {}, env: {} });
 * ```
 */
export function forJournal(io: Io): Io {
  return stderrIsJournal(io.env) ? { ...io, stderr: journalWriter(io.stderr) } : io;
}

/**
 * Ends the process with `code` once its output is out: at once after direct
 * writes. After `run` and `hook` (streams), stdin is closed (a pending read, as
 * in the external handshake, must not keep the process alive) and the process
 * ends by itself once its stream output is written: a reader that is slow to
 * read a full pipe still gets the result line (Bun's stream drops what it has
 * queued on process.exit, and says it has flushed). Something else left open,
 * or a reader that never reads, ends it after OUTPUT_GRACE_MS. The guard and
 * the holder (`flush`) exit once stdout's stream says it has flushed.
 *
 * @example
 * ```ts
 * import { exitAfterOutput } from "./io.ts";
 * exitAfterOutput(0, "direct");
 * ```
 */
export function exitAfterOutput(code: number, mode: OutputMode): void {
  if (mode === "direct") process.exit(code);
  if (mode === "flush") return void process.stdout.write("", () => process.exit(code));
  process.exitCode = code;
  process.stdin.pause();
  (process.stdin as { unref?: () => void }).unref?.();
  process.stdin.destroy();
  setTimeout(() => process.exit(code), OUTPUT_GRACE_MS).unref();
}

/**
 * A command stopped by an error: `vmsnap COMMAND: [Code] message` on stderr
 * (the error's code, else `fallback`; with `stack`, the stack of an error
 * vmsnap did not expect). Returns its exit code by kind: 64 for a usage
 * error, else 2.
 *
 * @example
 * ```ts
 * import { reportFailure } from "./io.ts";
 * const io = { stdout: (t: string) => console.log(t), stderr: (t: string) => console.error(t), env: {} };
 * reportFailure(io, "init", new Error("disk full"), { fallback: "InternalError" }); // 2
 * ```
 */
export function reportFailure(
  io: Io,
  command: string,
  error: unknown,
  how: { fallback: string; stack?: boolean },
): number {
  const own = (error as { code?: unknown } | undefined)?.code;
  const code = typeof own === "string" ? own : how.fallback;
  const message = error instanceof Error ? error.message : String(error);
  const stack = how.stack && error instanceof Error && !(error instanceof VmsnapError)
    ? (error.stack ?? "").split("\n").filter((line) => /^\s+at /.test(line)).map((l) => `\n${l}`)
      .join("")
    : "";
  io.stderr(`vmsnap ${command}: [${code}] ${message}${stack}\n`);
  return exitCodeOf(code);
}
