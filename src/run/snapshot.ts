/**
 * Taking the snapshot while the filesystems are frozen: the snapshot command
 * (argv, no shell, its own timeout), or the external handshake with a backup
 * extension that takes the snapshot itself (a `frozen` line on stdout, then
 * `snapshot-done` or `snapshot-failed` on stdin).
 *
 * @module
 */
import { createInterface } from "node:readline";
import type { Readable } from "node:stream";
import type { LogLevel, SnapshotConfig } from "../config/config.ts";
import { snapshotCommandProblems } from "../preflight/preflight.ts";
import {
  HANDSHAKE_ANSWERS,
  type HandshakeAnswer,
  type HandshakeFrozen,
  type RunError,
  type SnapshotOutcome,
} from "../protocol.ts";
import { describeKill, type ProcessResult, runProcess } from "../sys/process_runner.ts";
import { SCRIPT_PATH } from "../../plugins/script_runner.ts";
import { expectInputSoon, handshakeInput } from "../sys/stdio.ts";
import { waitingBytesCounter } from "../sys/descriptors.ts";

/** How to take the snapshot. */
export type SnapshotMethod = SnapshotConfig;

export type { SnapshotOutcome } from "../protocol.ts";

/** What taking the snapshot needs. */
export interface SnapshotContext {
  runId: string;
  mounts: string[];
  signal: AbortSignal;
  log(level: LogLevel, event: string, fields: Record<string, unknown>): void;
  /** Prints the handshake line (external). */
  announce(event: HandshakeFrozen): void;
  /** Lines from the caller (external). */
  stdin: Readable;
  /**
   * The caller's lines, already being read (external; {@linkcode openHandshake}
   * before the freeze, so that setting up the reader is not in the frozen
   * window). Without it, `stdin` is opened here.
   */
  handshake?: HandshakeReader;
}

/** What the caller answered, or why there is no answer. */
export type CallerAnswer = { line?: HandshakeAnswer; why?: "timeout" | "eof" | "abort" };

/** Waits one turn of the event loop's poll phase, so input already in the pipe is read. */
const pollOnce = () => new Promise<void>((resolve) => setImmediate(resolve));

/**
 * Starts reading the caller's lines before `frozen` is announced, so that
 * anything it sent earlier (input buffered in the pipe, `echo snapshot-done |
 * vmsnap run --external`) is read and discarded, never taken as the answer.
 * `early()` drains what is already there; `answer()` waits for the first
 * `snapshot-done`/`snapshot-failed` after that.
 */
function answerReader(stdin: Readable) {
  const lines = createInterface({ input: stdin, crlfDelay: Infinity });
  const early: string[] = [];
  let closed = false;
  let onLine: ((line: string) => void) | undefined;
  let onClose: (() => void) | undefined;
  lines.on("line", (line) => onLine ? onLine(line) : early.push(line));
  lines.on("close", () => {
    closed = true;
    onClose?.();
  });
  const stop = () => {
    onLine = () => {};
    onClose = undefined;
    lines.removeAllListeners();
    lines.close();
  };
  return {
    stop,
    /**
     * Every line received so far (before the announcement). `unread` tells how
     * many bytes wait unread in stdin: 0 means every byte sent so far has
     * already reached the lines above (no turn of the event loop is spent).
     */
    async early(unread?: () => number | undefined): Promise<string[]> {
      if (unread?.() !== 0) {
        await pollOnce();
        await pollOnce();
      }
      return early.splice(0);
    },
    /** The answer after the announcement, the timeout, EOF, or an abort. */
    answer(timeoutMs: number, signal: AbortSignal): Promise<CallerAnswer> {
      return new Promise((resolve) => {
        const done = (value: CallerAnswer) => {
          clearTimeout(timer);
          signal.removeEventListener("abort", onAbort);
          // Later lines are ignored from now on; closing readline waits for the thaw (the
          // caller's close(), or the next turn), so the answer goes straight on to FITHAW.
          onLine = () => {};
          onClose = undefined;
          setImmediate(stop);
          resolve(value);
        };
        const timer = setTimeout(() => done({ why: "timeout" }), timeoutMs);
        const onAbort = () => done({ why: "abort" });
        signal.addEventListener("abort", onAbort, { once: true });
        onLine = (line) => {
          const word = HANDSHAKE_ANSWERS.find((answer) => answer === line.trim());
          if (word) done({ line: word });
        };
        onClose = () => done({ why: "eof" });
        if (closed) done({ why: "eof" });
      });
    },
  };
}

/** The caller's side of the external handshake, read from before the `frozen` line. */
export interface HandshakeReader {
  /** Every line received so far (before the announcement), after draining what is in the pipe. */
  early(): Promise<string[]>;
  /** The answer after the announcement, the timeout, EOF, or an abort. */
  answer(timeoutMs: number, signal: AbortSignal): Promise<CallerAnswer>;
  /** Stops reading (again: nothing). */
  close(): void;
}

/**
 * Starts reading the caller's lines for the external handshake. `run` opens it
 * before the freeze: building the reader (the runtime's stdin stream, readline)
 * takes about a millisecond, which would otherwise be spent while the
 * filesystems are frozen, before the `frozen` line. Lines that arrive before
 * the announcement are still discarded ({@linkcode HandshakeReader.early}).
 * Close it when done (`takeSnapshot` does after the answer).
 *
 * @example
 * ```ts
 * import process from "node:process";
 * import { openHandshake } from "./snapshot.ts";
 * const handshake = await openHandshake(process.stdin);
 * try {
 *   console.log(await handshake.early());
 * } finally {
 *   handshake.close();
 * }
 * ```
 */
export async function openHandshake(stdin: Readable): Promise<HandshakeReader> {
  // A character-device stdin (virtio-serial) is read directly, not through the runtime's stream.
  const input = await handshakeInput(stdin);
  const reader = answerReader(input);
  // stdin read by the runtime's stream (a pipe, a socket): how much the stream has not read yet.
  const fd = (stdin as { fd?: unknown }).fd;
  const waiting = input === stdin && fd === 0 ? await waitingBytesCounter() : undefined;
  let open = true;
  return {
    early() {
      // The answer is due from now on: a polled device is read every few ms, not every 20.
      expectInputSoon(input);
      return reader.early(waiting && (() => waiting(0)));
    },
    answer: reader.answer,
    close() {
      if (!open) return;
      open = false;
      reader.stop();
      if (input !== stdin) input.destroy();
    },
  };
}

/**
 * Takes the snapshot. Never throws: every failure is in the outcome.
 *
 * @example
 * ```ts
 * import process from "node:process";
 * import { takeSnapshot } from "./snapshot.ts";
 * const outcome = await takeSnapshot(
 *   { kind: "command", command: ["/usr/local/sbin/snap"], timeoutInSeconds: 60 },
 *   {
 *     runId: "20261126T050000Z-a1b2c3",
 *     mounts: ["/data"],
 *     signal: new AbortController().signal,
 *     log: (level, event, fields) => console.log(level, event, fields),
 *     announce: (event) => console.log(JSON.stringify(event)),
 *     stdin: process.stdin,
 *   },
 * );
 * ```
 */
export function takeSnapshot(
  method: SnapshotMethod,
  ctx: SnapshotContext,
): Promise<SnapshotOutcome> {
  return method.kind === "external"
    ? externalSnapshot(method, ctx)
    : commandSnapshot(method.command, method.timeoutInSeconds, ctx);
}

/** Milliseconds since `started`, rounded. */
const since = (started: number) => Math.round(performance.now() - started);

/** The external handshake: the `frozen` line, then the caller's answer. */
async function externalSnapshot(
  method: SnapshotMethod,
  ctx: SnapshotContext,
): Promise<SnapshotOutcome> {
  const started = performance.now();
  const reader = ctx.handshake ?? await openHandshake(ctx.stdin);
  const early = await reader.early();
  if (early.length > 0) {
    ctx.log("warning", "snapshot-input-discarded", {
      lines: early.length,
      first: early.slice(0, 5).map((line) => line.slice(0, 200)),
      note: "the caller wrote this before vmsnap announced frozen; only an answer after it counts",
    });
  }
  ctx.announce({ event: "frozen", runId: ctx.runId, mounts: ctx.mounts });
  const answer = await reader.answer(method.timeoutInSeconds * 1000, ctx.signal);
  // A reader handed in is closed by its owner (after the thaw, off the frozen window).
  if (!ctx.handshake) reader.close();
  ctx.log("info", "snapshot-answer", {
    answer: answer.line ?? answer.why,
    durationMs: since(started),
  });
  if (answer.line === "snapshot-done") {
    return { kind: "external", taken: true, durationMs: since(started), answer: answer.line };
  }
  return {
    kind: "external",
    taken: false,
    durationMs: since(started),
    answer: answer.line ?? answer.why,
    error: noAnswer(answer, `${method.timeoutInSeconds} s`),
  };
}

/** Why the caller's answer is not `snapshot-done`. */
function noAnswer(answer: CallerAnswer, limit: string): RunError {
  const message = answer.line === "snapshot-failed"
    ? "the caller answered snapshot-failed. Fix: see the backup extension's log for why."
    : answer.why === "eof"
    ? "the caller closed stdin without answering snapshot-done. Fix: the caller must write snapshot-done or snapshot-failed and keep stdin open until then."
    : answer.why === "abort"
    ? "vmsnap received a signal while waiting for the caller."
    : `the caller did not answer within ${limit} (snapshot.external.timeoutInSeconds). Fix: answer sooner or raise the timeout.`;
  const code = answer.why === "timeout"
    ? "SnapshotTimeout"
    : answer.why === "abort"
    ? "Interrupted"
    : "SnapshotFailed";
  return { code, message: `external snapshot: ${message}` };
}

/** The snapshot command: argv, no shell, its own timeout, its output in the log. */
async function commandSnapshot(
  command: string[],
  timeoutInSeconds: number,
  ctx: SnapshotContext,
): Promise<SnapshotOutcome> {
  const started = performance.now();
  const refused = snapshotCommandProblems(command);
  if (refused.length > 0) {
    return {
      kind: "command",
      taken: false,
      durationMs: since(started),
      error: { code: refused[0].code, message: refused[0].message },
    };
  }
  const result = await runProcess({
    argv: command,
    env: {
      PATH: SCRIPT_PATH,
      LANG: "C",
      HOME: "/root",
      VMSNAP_RUN_ID: ctx.runId,
      VMSNAP_MOUNTS: ctx.mounts.join("\n"),
    },
    timeoutMs: timeoutInSeconds * 1000,
    signal: ctx.signal,
    onLine: (stream, line) => ctx.log("info", "snapshot-output", { stream, line }),
  });
  ctx.log(result.exitCode === 0 ? "info" : "warning", "snapshot-command", {
    command,
    exitCode: result.exitCode,
    signal: result.signal,
    durationMs: result.durationMs,
    timedOut: result.timedOut,
  });
  const outcome = {
    kind: "command" as const,
    durationMs: result.durationMs,
    exitCode: result.exitCode,
  };
  if (result.exitCode === 0 && !result.timedOut && !result.aborted) {
    return { ...outcome, taken: true };
  }
  return {
    ...outcome,
    taken: false,
    error: commandFailure(command, `${timeoutInSeconds} s`, result),
  };
}

/** Why the snapshot command did not take the snapshot, with its last output. */
function commandFailure(command: string[], limit: string, result: ProcessResult): RunError {
  const tail = [...result.tail.stdout.slice(-5), ...result.tail.stderr.slice(-5)];
  const output = tail.length ? ` Last output:\n    ${tail.join("\n    ")}` : "";
  if (result.timedOut) {
    return {
      code: "SnapshotTimeout",
      message: `snapshot command ${
        command[0]
      } did not finish within ${limit} (snapshot.timeoutInSeconds); ${
        describeKill(result, "the command")
      }${output}\n  Fix: make it faster or raise snapshot.timeoutInSeconds.`,
    };
  }
  if (result.aborted) {
    return {
      code: "Interrupted",
      message: "the snapshot command was stopped: vmsnap received a signal.",
    };
  }
  const how = result.spawnError
    ? `could not be started (${result.spawnError})`
    : result.signal
    ? `was killed by ${result.signal}`
    : `exited with code ${result.exitCode}`;
  return {
    code: "SnapshotFailed",
    message: `snapshot command ${
      command.join(" ")
    } ${how}.${output}\n  Fix: run it by hand and read the log.`,
  };
}
