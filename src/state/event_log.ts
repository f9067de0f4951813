/**
 * The run's log: JSON Lines (`@timestamp`, `level`, `runId`, `event`, fields)
 * through logtape, into `log.file` (mode 0600, in a 0700 directory, rotated
 * by size: the file is renamed `.1` when the next record would take it past
 * `maxBytes`, older generations shift up to `.keep`). While filesystems are
 * frozen, records are held in memory and written after the thaw: nothing
 * writes to a frozen filesystem. What is held is bounded: past the budget,
 * the first records and the latest are kept, the ones between are dropped,
 * counted, and marked in the log by a `log-records-dropped` record. A write
 * that fails (a full disk) loses the record but never the run; the loss is
 * counted and reported. The log is a regular file: a FIFO, device or
 * directory at its path is refused (`LogFileNotRegular`), never opened in a
 * way that could block.
 *
 * @module
 */
import {
  closeSync,
  constants,
  fchmodSync,
  fstatSync,
  lstatSync,
  openSync,
  renameSync,
  type Stats,
  writeSync,
} from "node:fs";
import { Buffer } from "node:buffer";
import { dirname } from "node:path";
import { configureSync, getLogger, type Logger, type LogRecord, resetSync } from "@logtape/logtape";
import type { LogLevel } from "../config/config.ts";
import { type Problem, VmsnapError } from "../errors.ts";
import { fileKind } from "../sys/file_type.ts";
import { checkDirectory, ensureDirectory } from "../sys/permissions.ts";
import { redact } from "../secrets.ts";
import type { LogStats } from "../protocol.ts";

export type { LogStats } from "../protocol.ts";

/** Bytes of records held in memory while frozen: this much of the first, as much of the latest. */
const HOLD_BYTES = 2 * 1024 * 1024;
/**
 * Records taken while frozen but not formatted yet (formatting is JSON and
 * redaction, kept out of the frozen window's critical moments): past this
 * many, they are formatted into the held lines at once, so memory stays bounded.
 */
const DEFERRED_MAX = 64;

/** A record taken while frozen, formatted later: level, event, fields, when (ms since the epoch). */
type Deferred = [LogLevel, string, Record<string, unknown>, number];

function lstatOrUndefined(path: string): Stats | undefined {
  try {
    return lstatSync(path);
  } catch {
    return undefined;
  }
}

/** The problem with a log path whose file is not a regular file. */
function notRegular(file: string, stats: Stats): Problem {
  return {
    code: "LogFileNotRegular",
    message: `log.file ${file} is ${
      fileKind(stats) ?? "not a regular file"
    }, not a regular file; vmsnap writes its log only to a regular file (a pipe would block the run, a device would take the records). Fix: remove ${file} or point log.file at a regular file, e.g. /var/log/vmsnap/vmsnap.jsonl.`,
  };
}

/**
 * What keeps `file` from being the log: its directory fails the permission
 * rules (`InsecureDirectory`), or the path exists and is not a regular file
 * (`LogFileNotRegular`). A file that does not exist yet is fine.
 *
 * @example
 * ```ts
 * import { checkLogFile } from "./event_log.ts";
 * for (const p of checkLogFile("/var/log/vmsnap/vmsnap.jsonl")) console.log(p.code, p.message);
 * ```
 */
export function checkLogFile(file: string): Problem[] {
  const problems = checkDirectory(dirname(file), "log directory");
  if (problems.length > 0) return problems;
  const stats = lstatOrUndefined(file);
  return !stats || stats.isFile() ? [] : [notRegular(file, stats)];
}

/** Records held while frozen: the first ones, then a window of the latest. */
class Held {
  readonly since = performance.now();
  readonly head: string[] = [];
  #headBytes = 0;
  #tail: string[] = [];
  #tailStart = 0;
  #tailBytes = 0;
  dropped = 0;

  push(line: string): void {
    const bytes = line.length;
    if (this.dropped === 0 && this.#tail.length === 0 && this.#headBytes + bytes <= HOLD_BYTES) {
      this.head.push(line);
      this.#headBytes += bytes;
      return;
    }
    this.#tail.push(line);
    this.#tailBytes += bytes;
    while (this.#tailBytes > HOLD_BYTES && this.#tailStart < this.#tail.length - 1) {
      this.#tailBytes -= this.#tail[this.#tailStart].length;
      this.#tailStart++;
      this.dropped++;
    }
    if (this.#tailStart > 4096 && this.#tailStart * 2 > this.#tail.length) {
      this.#tail = this.#tail.slice(this.#tailStart);
      this.#tailStart = 0;
    }
  }

  tail(): string[] {
    return this.#tail.slice(this.#tailStart);
  }
}

/** How the log is kept. */
export interface EventLogOptions {
  runId: string;
  /** The log file; undefined keeps records in memory only (when the config could not be read). */
  file?: string;
  level: LogLevel;
  /** Rotate when the file would grow past this (default 10 MiB). */
  maxBytes?: number;
  /** Rotated files kept: file.1 … file.N (default 5). */
  keep?: number;
}

/** The run's structured log. */
export class EventLog {
  readonly file?: string;
  readonly stats: LogStats = { written: 0, lost: 0, dropped: 0, heldMs: 0 };
  #logger: Logger;
  #held: Held | undefined;
  #deferred: Deferred[] = [];
  #fd: number | undefined;
  #size = 0;
  #maxBytes: number;
  #keep: number;
  /** Every line, kept in memory too (bounded), for tests and the no-file case. */
  readonly recent: string[] = [];

  constructor(options: EventLogOptions) {
    this.file = options.file;
    this.#maxBytes = options.maxBytes ?? 10 * 1024 * 1024;
    this.#keep = options.keep ?? 5;
    const sink = (record: LogRecord) => this.#sink(record);
    resetSync();
    configureSync({
      sinks: { run: sink },
      loggers: [
        { category: ["vmsnap"], sinks: ["run"], lowestLevel: options.level },
        { category: ["logtape", "meta"], sinks: [], lowestLevel: "error" },
      ],
      reset: true,
    });
    this.#logger = getLogger(["vmsnap"]).with({ runId: options.runId });
  }

  /**
   * Records an event.
   *
   * @example
   * ```ts
   * import { EventLog } from "./event_log.ts";
   * const log = new EventLog({ runId: "r1", file: "/var/log/vmsnap/vmsnap.jsonl", level: "info" });
   * log.record("info", "script-attempt", { plugin: "app", exitCode: 0, durationMs: 12 });
   * ```
   */
  record(level: LogLevel, event: string, fields: Record<string, unknown> = {}): void {
    if (this.#held) {
      // Frozen: only noted here; formatted when the log is released (or when many are waiting).
      this.#deferred.push([level, event, fields, Date.now()]);
      if (this.#deferred.length >= DEFERRED_MAX) this.#formatDeferred();
      return;
    }
    this.#emit(level, event, fields);
  }

  /** Formats the records noted while frozen, in order, with the time each was taken. */
  #formatDeferred(): void {
    const deferred = this.#deferred;
    this.#deferred = [];
    for (const [level, event, fields, at] of deferred) {
      // The sink puts "@timestamp" first; this value (when the record was taken) replaces its own.
      this.#emit(level, event, { ...fields, "@timestamp": new Date(at).toISOString() });
    }
  }

  #emit(level: LogLevel, event: string, fields: Record<string, unknown>): void {
    const properties = { ...fields, event };
    switch (level) {
      case "debug":
        return this.#logger.debug("{event}", properties);
      case "info":
        return this.#logger.info("{event}", properties);
      case "warning":
        return this.#logger.warn("{event}", properties);
      case "error":
        return this.#logger.error("{event}", properties);
    }
  }

  /** From now on, records stay in memory (the filesystems are about to freeze). */
  hold(): void {
    if (this.file) this.#held ??= new Held();
  }

  /** Writes what was held (after the thaw) and writes through again. */
  release(): void {
    const held = this.#held;
    if (!held) return;
    this.#formatDeferred();
    this.#held = undefined;
    this.stats.heldMs = Math.max(this.stats.heldMs, Math.round(performance.now() - held.since));
    for (const line of held.head) this.#write(line);
    if (held.dropped > 0) {
      this.stats.dropped += held.dropped;
      this.record("warning", "log-records-dropped", {
        dropped: held.dropped,
        reason: `more than ${HOLD_BYTES * 2} bytes of records while frozen`,
      });
    }
    for (const line of held.tail()) this.#write(line);
  }

  /** Closes the file. */
  close(): void {
    this.release();
    if (this.#fd !== undefined) closeSync(this.#fd);
    this.#fd = undefined;
  }

  #sink(record: LogRecord): void {
    const { runId, event, ...fields } = record.properties;
    const line = redact(JSON.stringify({
      "@timestamp": new Date(record.timestamp).toISOString(),
      level: record.level,
      runId,
      event,
      ...fields,
    })) + "\n";
    this.recent.push(line);
    if (this.recent.length > 4000) this.recent.splice(0, 2000);
    if (this.#held) this.#held.push(line);
    else this.#write(line);
  }

  #write(line: string): void {
    if (!this.file) return;
    try {
      let fd = this.#open();
      const bytes = Buffer.byteLength(line);
      // Rotate when this record would take the file past the limit (an empty file takes any record).
      if (this.#size > 0 && this.#size + bytes > this.#maxBytes) {
        // The count is this writer's; the file is the truth (another writer, logrotate's copytruncate).
        this.#size = fstatSync(fd).size;
        if (this.#size > 0 && this.#size + bytes > this.#maxBytes) {
          this.#rotate();
          fd = this.#open();
        }
      }
      const written = writeSync(fd, line);
      this.#size += written;
      this.stats.written++;
    } catch (error) {
      this.stats.lost++;
      this.stats.error ??= `${this.file}: ${(error as Error).message}`;
    }
  }

  #open(): number {
    if (this.#fd !== undefined) return this.#fd;
    ensureDirectory(dirname(this.file!), "log directory");
    // O_NONBLOCK: a FIFO put at the path must not block the open; it is refused below.
    const flags = constants.O_WRONLY | constants.O_APPEND | constants.O_CREAT |
      constants.O_NOFOLLOW | constants.O_NONBLOCK;
    const before = lstatOrUndefined(this.file!);
    if (before && !before.isFile()) {
      const problem = notRegular(this.file!, before);
      throw new VmsnapError(problem.code, problem.message);
    }
    const fd = openSync(this.file!, flags, 0o600);
    const stats = fstatSync(fd);
    if (!stats.isFile()) {
      closeSync(fd);
      const problem = notRegular(this.file!, stats);
      throw new VmsnapError(problem.code, problem.message);
    }
    fchmodSync(fd, 0o600);
    // One writer per file: the size is read once, then counted (no fstat per record).
    this.#size = stats.size;
    this.#fd = fd;
    return fd;
  }

  #rotate(): void {
    closeSync(this.#fd!);
    this.#fd = undefined;
    for (let i = this.#keep - 1; i >= 1; i--) {
      try {
        renameSync(`${this.file}.${i}`, `${this.file}.${i + 1}`);
      } catch {
        // not there yet
      }
    }
    renameSync(this.file!, `${this.file}.1`);
  }
}
