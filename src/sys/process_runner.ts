/**
 * Runs one external process (a script attempt, the snapshot command) the
 * way an admin needs it run:
 *
 * - in its own session and process group, stdin `/dev/null`, cwd `/`, the
 *   environment given (nothing inherited);
 * - output read continuously, line by line, so a process printing megabytes
 *   never blocks on a full pipe; the tail is kept;
 * - tracked in its own cgroup (v2) where the machine has a usable one
 *   (`src/sys/cgroup.ts`): no descendant can leave it, whatever session, group
 *   or environment it moves to; elsewhere by its process group and by a tag
 *   in the environment every descendant inherits (which `env -i` defeats);
 * - on timeout or abort: SIGTERM to every member (cgroup, group, tag), a
 *   grace period, then SIGKILL (`cgroup.kill`) until none is left or the
 *   kill time is over; what is still alive then (a process blocked in the
 *   kernel) is reported as a survivor, never counted as killed, and the
 *   runner does not wait for an exit that will not come;
 * - on a normal exit, descendants are left alone (a daemon the script started
 *   on purpose) but the run does not wait for the pipes they hold; they are
 *   reported.
 *
 * @module
 */
import { type ChildProcess, spawn, type SpawnOptions } from "node:child_process";
import { accessSync, constants, readdirSync, readFileSync } from "node:fs";
import process from "node:process";
import { StringDecoder } from "node:string_decoder";
import {
  cgroup2OrMount,
  createProcessCgroup,
  joinAndExecArgv,
  PRIVATE_CGROUP2_DIR,
  type ProcessCgroup,
} from "./cgroup.ts";

/** The environment variable that tags every process a run starts. */
export const TAG_VARIABLE = "VMSNAP_PROCESS_TAG";

/** How to run the process. */
export interface RunProcessOptions {
  /** The executable and its arguments (no shell). */
  argv: string[];
  /** The whole environment of the process. */
  env: Record<string, string>;
  /** Kill it after this long. */
  timeoutMs: number;
  /** Kill it when this aborts. */
  signal?: AbortSignal;
  /** Between SIGTERM and SIGKILL. */
  graceMs?: number;
  /** Every output line, as it comes. */
  onLine?: (stream: "stdout" | "stderr", line: string) => void;
  /** How many lines of each stream to keep for the result. */
  tailLines?: number;
  /** After the process exits, how long to wait for its pipes to close. */
  drainMs?: number;
  /** After the grace, how long to keep sending SIGKILL before reporting survivors. */
  killMs?: number;
  /** `auto`: a cgroup where the machine has one, else the tag; `tag`: never a cgroup. */
  isolation?: "auto" | "tag";
  /** Where to mount a private cgroup2 when the machine has none (a cgroup-v1 VM); default /run/vmsnap/cgroup2. */
  cgroupMountDir?: string;
}

/** A process still alive after the kill: blocked in the kernel (state D) or out of reach. */
export interface Survivor extends Leftover {
  /** Its state letter from /proc (D: uninterruptible sleep). */
  state: string;
}

/** A process left running after a normal exit. */
export interface Leftover {
  pid: number;
  command: string;
}

/** What happened. */
export interface ProcessResult {
  exitCode: number | null;
  /** The signal that ended it, when one did. */
  signal: string | null;
  timedOut: boolean;
  aborted: boolean;
  /** Set when it could not be started at all. */
  spawnError?: string;
  /**
   * True when the file had no `#!` line (ENOEXEC) and vmsnap ran it with /bin/sh, as execvp
   * does. Only known without a cgroup: with one, the joining shell's `exec` does the same itself.
   */
  viaShell?: boolean;
  durationMs: number;
  tail: { stdout: string[]; stderr: string[] };
  lines: number;
  bytes: number;
  /** Descendants still running after a normal exit (left alone). */
  leftovers: Leftover[];
  /** Processes killed after a timeout or abort (found, and gone after the kill). */
  killed: number;
  /** Processes found but still alive after the kill (never counted in `killed`). */
  survivors: Survivor[];
  /** How the process's descendants were tracked. */
  tracking: "cgroup" | "tag";
  /** The cgroup left behind because survivors are in it (`echo 1 > CGROUP/cgroup.kill` later). */
  cgroup?: string;
}

const MAX_LINE = 4096;

/** One of the process's output streams. */
type Stream = "stdout" | "stderr";

/** The pids in /proc, as strings (empty when /proc cannot be read). */
function processIds(): string[] {
  try {
    return readdirSync("/proc").filter((entry) => /^\d+$/.test(entry));
  } catch {
    return [];
  }
}

/**
 * Pids of processes whose environment holds `NAME=value` (never this
 * process). Every descendant of a script inherits its environment, whatever
 * session or process group it moved to.
 */
export function findByEnvironment(name: string, value: string): number[] {
  const needle = Buffer.from(`\0${name}=${value}\0`);
  const pids: number[] = [];
  for (const entry of processIds()) {
    if (Number(entry) === process.pid) continue;
    try {
      // A leading NUL makes the first variable match like the others.
      const environ = Buffer.concat([Buffer.from([0]), readFileSync(`/proc/${entry}/environ`)]);
      if (environ.includes(needle)) pids.push(Number(entry));
    } catch {
      // gone, or a zombie
    }
  }
  return pids;
}

/** Pids of processes carrying a run's process tag. */
export function findTagged(tag: string): number[] {
  return findByEnvironment(TAG_VARIABLE, tag);
}

/** The command line of a process, for messages. */
export function commandOf(pid: number): string {
  try {
    return readFileSync(`/proc/${pid}/cmdline`, "utf8").split("\0").filter(Boolean).join(" ");
  } catch {
    return "?";
  }
}

function signalAll(pgid: number | undefined, pids: number[], signal: NodeJS.Signals): void {
  if (pgid) {
    try {
      process.kill(-pgid, signal);
    } catch {
      // the group is gone
    }
  }
  for (const pid of pids) {
    try {
      process.kill(pid, signal);
    } catch {
      // gone
    }
  }
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/** Live (not zombie) members of a process group, from /proc. */
export function groupMembers(pgid: number): number[] {
  const pids: number[] = [];
  for (const entry of processIds()) {
    try {
      const stat = readFileSync(`/proc/${entry}/stat`, "utf8");
      // pid (comm) state ppid pgrp ...: comm may hold spaces and parentheses.
      const [state, , pgrp] = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
      if (Number(pgrp) === pgid && state !== "Z" && state !== "X") pids.push(Number(entry));
    } catch {
      // gone
    }
  }
  return pids;
}

/** What a kill achieved. */
export interface KillOutcome {
  /** Every process found while killing. */
  found: number;
  /** Those still alive when the kill time was over. */
  survivors: number[];
}

/**
 * Kills a process group, every process `find` returns and every member of
 * the cgroup: SIGTERM, a grace, then SIGKILL until none is left or
 * `killMs` is over. Zombies (which an init that reaps slowly keeps around)
 * count as gone. Says what it found and what survived.
 *
 * @example
 * ```ts
 * import { findTagged, killProcesses } from "./process_runner.ts";
 * const outcome = await killProcesses({ find: () => findTagged("some-tag"), graceMs: 2000 });
 * outcome.survivors; // [] unless a process is blocked in the kernel
 * ```
 */
export async function killProcesses(options: {
  pgid?: number;
  find: () => number[];
  graceMs: number;
  killMs?: number;
  cgroup?: ProcessCgroup;
}): Promise<KillOutcome> {
  const { pgid, find, cgroup } = options;
  const found = new Set<number>();
  const alive = () => {
    const pids = [
      ...new Set([
        ...find(),
        ...(pgid ? groupMembers(pgid) : []),
        ...(cgroup?.members() ?? []),
      ]),
    ].filter((pid) => pid !== process.pid && isLive(pid));
    pids.forEach((p) => found.add(p));
    return pids;
  };
  const first = alive(); // counted before any of them can die
  cgroup?.signal("SIGTERM");
  signalAll(pgid, first, "SIGTERM");
  const termUntil = performance.now() + options.graceMs;
  while (performance.now() < termUntil) {
    await sleep(25);
    if (alive().length === 0) return { found: found.size, survivors: [] };
  }
  const killUntil = performance.now() + (options.killMs ?? 5000);
  let pids = alive();
  while (pids.length > 0 && performance.now() < killUntil) {
    cgroup?.kill();
    signalAll(pgid, pids, "SIGKILL");
    await sleep(20);
    pids = alive();
  }
  return { found: found.size, survivors: pids };
}

/** A process's state letter (R, S, D, Z…), or undefined when it is gone. */
function stateOf(pid: number): string | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
    return stat.slice(stat.lastIndexOf(")") + 2).split(" ")[0];
  } catch {
    return undefined;
  }
}

/** True while a process exists and is not a zombie. */
function isLive(pid: number): boolean {
  const state = stateOf(pid);
  return state !== undefined && state !== "Z" && state !== "X";
}

/** Why a program cannot be exec'd, before a wrapper shell would hide it behind exit 126/127. */
function cannotExec(program: string): string | undefined {
  try {
    accessSync(program, constants.X_OK);
    return undefined;
  } catch (error) {
    const e = error as NodeJS.ErrnoException;
    return `spawn ${program} ${e.code ?? e.message}`;
  }
}

/** The shell a file without a `#!` line is run with (what execvp and every shell do). */
export const FALLBACK_SHELL = "/bin/sh";

/**
 * Starts a process; a file the kernel refuses with ENOEXEC (an executable
 * script without a `#!` line) is run with /bin/sh instead, as execvp(3) and
 * every shell do. Bun's spawn throws ENOEXEC synchronously; other runtimes
 * fall back themselves. Throws what spawn throws otherwise.
 *
 * @example
 * ```ts
 * import { spawnFallingBack } from "./process_runner.ts";
 * const { child, viaShell } = spawnFallingBack(["/etc/azure/pre"], { stdio: "ignore" });
 * ```
 */
export function spawnFallingBack(
  argv: string[],
  options: SpawnOptions,
): { child: ChildProcess; viaShell: boolean } {
  const [command, ...args] = argv;
  try {
    return { child: spawn(command, args, options), viaShell: false };
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== "ENOEXEC") throw error;
    return { child: spawn(FALLBACK_SHELL, argv, options), viaShell: true };
  }
}

/** Output read line by line: every line to `onLine` as it comes, the last ones kept. */
class OutputLines {
  #pending: Record<Stream, string> = { stdout: "", stderr: "" };
  // A character split across two reads is decoded whole (one decoder per stream).
  #decoders = { stdout: new StringDecoder("utf8"), stderr: new StringDecoder("utf8") };

  constructor(
    private readonly result: ProcessResult,
    private readonly options: Pick<RunProcessOptions, "tailLines" | "onLine">,
  ) {}

  /** Reads both of the child's pipes. */
  listen(child: ChildProcess): void {
    child.stdout!.on("data", (chunk: Buffer) => this.#read("stdout", chunk));
    child.stderr!.on("data", (chunk: Buffer) => this.#read("stderr", chunk));
  }

  /** Emits what is left of a line without its newline, at the end. */
  flush(): void {
    for (const stream of ["stdout", "stderr"] as const) {
      this.#pending[stream] += this.#decoders[stream].end();
      if (this.#pending[stream]) this.#emit(stream, this.#pending[stream]);
      this.#pending[stream] = "";
    }
  }

  #read(stream: Stream, chunk: Buffer): void {
    this.result.bytes += chunk.length;
    const text = this.#pending[stream] + this.#decoders[stream].write(chunk);
    const parts = text.split("\n");
    this.#pending[stream] = parts.pop()!;
    // A line with no newline for too long is emitted in pieces.
    if (this.#pending[stream].length > MAX_LINE * 4) {
      parts.push(this.#pending[stream]);
      this.#pending[stream] = "";
    }
    for (const line of parts) this.#emit(stream, line.replace(/\r$/, ""));
  }

  #emit(stream: Stream, line: string): void {
    if (line.length > MAX_LINE) line = `${line.slice(0, MAX_LINE)}… (${line.length} characters)`;
    this.result.lines++;
    const tail = this.result.tail[stream];
    tail.push(line);
    if (tail.length > (this.options.tailLines ?? 20)) tail.shift();
    try {
      this.options.onLine?.(stream, line);
    } catch {
      // A failing consumer (the log) must not crash the run from a stream callback; the tail keeps the line.
    }
  }
}

/** A process that was started, and how it is tracked. */
interface Started {
  options: RunProcessOptions;
  result: ProcessResult;
  child: ChildProcess;
  cgroup?: ProcessCgroup;
  /** The value of TAG_VARIABLE in its environment. */
  tag: string;
  /** performance.now() when the run began. */
  started: number;
}

/**
 * One started process, watched to its end: its output, its timeout and the
 * abort signal (a kill of everything it started), its exit and its pipes,
 * then what it left behind. `done` resolves once, with the result.
 */
class Supervision {
  readonly done: Promise<ProcessResult>;
  #resolve!: (result: ProcessResult) => void;
  #output: OutputLines;
  #openPipes = 2;
  #onPipesClosed: (() => void) | undefined;
  #timer: ReturnType<typeof setTimeout>;
  #killing: Promise<KillOutcome> | undefined;
  #settled = false;
  readonly #onAbort = () => this.#stop("abort");

  constructor(private readonly run: Started) {
    this.done = new Promise((resolve) => (this.#resolve = resolve));
    const { child, options, result } = run;
    const pipeClosed = () => {
      if (--this.#openPipes === 0) this.#onPipesClosed?.();
    };
    child.stdout!.once("close", pipeClosed);
    child.stderr!.once("close", pipeClosed);
    this.#output = new OutputLines(result, options);
    this.#output.listen(child);
    this.#timer = setTimeout(() => this.#stop("timeout"), options.timeoutMs);
    if (options.signal?.aborted) queueMicrotask(this.#onAbort);
    options.signal?.addEventListener("abort", this.#onAbort, { once: true });
    child.on("error", (error) => {
      result.spawnError = error.message;
      this.#finish();
    });
    child.on("exit", (code, signal) => this.#exited(code, signal));
  }

  /** The process exited: finish once its pipes close, or after drainMs (a daemon may hold them). */
  #exited(code: number | null, signal: NodeJS.Signals | null): void {
    this.run.result.exitCode = code;
    this.run.result.signal = signal;
    if (this.#openPipes === 0) return void this.#finish();
    const drain = setTimeout(() => this.#finish(), this.run.options.drainMs ?? 200);
    this.#onPipesClosed = () => {
      clearTimeout(drain);
      this.#finish();
    };
  }

  /** A timeout or an abort: kill the process and everything it started. */
  #stop(why: "timeout" | "abort"): void {
    if (this.#killing || this.#settled) return;
    const { child, options, result, tag, cgroup } = this.run;
    if (why === "timeout") result.timedOut = true;
    else result.aborted = true;
    this.#killing = killProcesses({
      pgid: child.pid,
      find: () => findTagged(tag),
      graceMs: options.graceMs ?? 2000,
      killMs: options.killMs,
      cgroup,
    });
    // A process blocked in the kernel never exits: do not wait for it past the kill.
    this.#killing.then(() => this.#finish());
  }

  async #finish(): Promise<void> {
    if (this.#settled) return;
    this.#settled = true;
    const { child, options, result, started } = this.run;
    clearTimeout(this.#timer);
    options.signal?.removeEventListener("abort", this.#onAbort);
    if (this.#killing) this.#recordKill(await this.#killing);
    else this.#recordLeftovers();
    this.#releaseCgroup();
    child.stdout!.destroy();
    child.stderr!.destroy();
    this.#output.flush();
    result.durationMs = Math.round(performance.now() - started);
    this.#resolve(result);
  }

  /** What the kill achieved: killed, and survivors (never counted as killed). */
  #recordKill(outcome: KillOutcome): void {
    const { result } = this.run;
    result.killed = outcome.found - outcome.survivors.length;
    result.survivors = outcome.survivors.map((pid) => ({
      pid,
      command: commandOf(pid),
      state: stateOf(pid) ?? "?",
    }));
  }

  /** After a normal exit: what it started and left running (left alone). */
  #recordLeftovers(): void {
    const { result, tag, cgroup } = this.run;
    const left = [...new Set([...findTagged(tag), ...(cgroup?.members() ?? [])])].filter(isLive);
    result.leftovers = left.map((pid) => ({ pid, command: commandOf(pid) }));
  }

  /** Survivors stay in their cgroup, for a later `cgroup.kill`; otherwise it goes. */
  #releaseCgroup(): void {
    const { result, cgroup } = this.run;
    if (cgroup && result.survivors.length > 0) result.cgroup = cgroup.path;
    else cgroup?.release();
  }
}

/** A result before anything happened. */
function emptyResult(): ProcessResult {
  return {
    exitCode: null,
    signal: null,
    timedOut: false,
    aborted: false,
    durationMs: 0,
    tail: { stdout: [], stderr: [] },
    lines: 0,
    bytes: 0,
    leftovers: [],
    killed: 0,
    survivors: [],
    tracking: "tag",
  };
}

/**
 * Runs a process to its end, its timeout, or an abort.
 *
 * @example
 * ```ts
 * import { runProcess } from "./process_runner.ts";
 * const r = await runProcess({ argv: ["/bin/echo", "hi"], env: { PATH: "/usr/bin:/bin" }, timeoutMs: 5000 });
 * r.exitCode; // 0
 * r.tail.stdout; // ["hi"]
 * ```
 */
export function runProcess(options: RunProcessOptions): Promise<ProcessResult> {
  const tag = crypto.randomUUID(); // Web Crypto: node:crypto costs ~2 ms of start-up
  const started = performance.now();
  const result = emptyResult();
  const unstartable = cannotExec(options.argv[0]);
  if (unstartable) return Promise.resolve({ ...result, spawnError: unstartable });
  const cgroup = options.isolation === "tag"
    ? undefined
    : createProcessCgroup(cgroup2OrMount(options.cgroupMountDir ?? PRIVATE_CGROUP2_DIR));
  if (cgroup) result.tracking = "cgroup";
  const argv = cgroup ? joinAndExecArgv(cgroup.path, options.argv) : options.argv;
  let spawned: ReturnType<typeof spawnFallingBack>;
  try {
    spawned = spawnFallingBack(argv, {
      cwd: "/",
      env: { ...options.env, [TAG_VARIABLE]: tag },
      stdio: ["ignore", "pipe", "pipe"],
      detached: true,
    });
  } catch (error) {
    // Bun throws some spawn failures (EACCES, ENOENT…) instead of emitting "error".
    result.spawnError = (error as Error).message;
    cgroup?.release();
    result.durationMs = Math.round(performance.now() - started);
    return Promise.resolve(result);
  }
  if (spawned.viaShell) result.viaShell = true;
  return new Supervision({ options, result, child: spawned.child, cgroup, tag, started }).done;
}

/**
 * What the kill after a timeout or a signal achieved, true to the facts:
 * how many processes were killed, and every one still running (never
 * counted as killed).
 *
 * @example
 * ```ts
 * import { describeKill, type ProcessResult } from "./process_runner.ts";
 * declare const result: ProcessResult;
 * describeKill(result, "the script"); // "3 process(es) (the script and what it started) were killed (tracked in their own cgroup)."
 * ```
 */
export function describeKill(result: ProcessResult, what: string): string {
  const killed = `${result.killed} process(es) (${what} and what it started) were killed`;
  const how = result.tracking === "cgroup" ? " (tracked in their own cgroup)" : "";
  if (result.survivors.length === 0) return `${killed}${how}.`;
  const list = result.survivors.map((p) => `pid ${p.pid} (${p.command}, state ${p.state})`);
  const later = result.cgroup
    ? ` They stay in cgroup ${result.cgroup}: once they can die, echo 1 > ${result.cgroup}/cgroup.kill.`
    : " Kill them by hand once they can die.";
  return `${killed}${how}; ${result.survivors.length} could not be killed and are still running: ${
    list.join(", ")
  }.${later}`;
}
