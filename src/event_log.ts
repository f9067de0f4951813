/**
 * The run's log: JSON Lines (`@timestamp`, `level`, `runId`, `event`, fields)
 * through logtape, into `log.file` (mode 0600, in a 0700 directory, rotated
 * by size). While filesystems are frozen, records are held in memory and
 * written after the thaw: nothing writes to a frozen filesystem. A write that
 * fails (a full disk) loses the record but never the run; the loss is counted
 * and reported.
 *
 * @module
 */
import {
  closeSync,
  constants,
  fchmodSync,
  fstatSync,
  openSync,
  renameSync,
  writeSync,
} from "node:fs";
import { Buffer } from "node:buffer";
import { dirname } from "node:path";
import { configureSync, getLogger, type Logger, type LogRecord, resetSync } from "@logtape/logtape";
import type { LogLevel } from "./config.ts";
import { ensureDirectory } from "./permissions.ts";
import { redact } from "./secrets.ts";

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

/** What became of the records. */
export interface LogStats {
  written: number;
  lost: number;
  /** The first write error, when records were lost. */
  error?: string;
  /** The longest time records waited in memory, in ms. */
  heldMs: number;
}

/** The run's structured log. */
export class EventLog {
  readonly file?: string;
  readonly stats: LogStats = { written: 0, lost: 0, heldMs: 0 };
  #logger: Logger;
  #held: string[] | undefined;
  #heldSince = 0;
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
   * log.record("info", "script-attempt", { plugin: "app", exitCode: 0, durationMs: 12 });
   * ```
   */
  record(level: LogLevel, event: string, fields: Record<string, unknown> = {}): void {
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
    this.#held ??= [];
    this.#heldSince = performance.now();
  }

  /** Writes what was held (after the thaw) and writes through again. */
  release(): void {
    const held = this.#held;
    if (!held) return;
    this.#held = undefined;
    this.stats.heldMs = Math.max(
      this.stats.heldMs,
      Math.round(performance.now() - this.#heldSince),
    );
    for (const line of held) this.#write(line);
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
    if (this.recent.length > 2000) this.recent.shift();
    if (this.#held) this.#held.push(line);
    else this.#write(line);
  }

  #write(line: string): void {
    if (!this.file) return;
    try {
      this.#open();
      const bytes = Buffer.byteLength(line);
      if (this.#size + bytes > this.#maxBytes) this.#rotate();
      this.#size += writeSync(this.#open(), line);
      this.stats.written++;
    } catch (error) {
      this.stats.lost++;
      this.stats.error ??= `${this.file}: ${(error as Error).message}`;
    }
  }

  #open(): number {
    if (this.#fd !== undefined) return this.#fd;
    ensureDirectory(dirname(this.file!), "log directory");
    const flags = constants.O_WRONLY | constants.O_APPEND | constants.O_CREAT |
      constants.O_NOFOLLOW;
    this.#fd = openSync(this.file!, flags, 0o600);
    fchmodSync(this.#fd, 0o600);
    // One writer per file: the size is read once, then counted (no fstat per record).
    this.#size = fstatSync(this.#fd).size;
    return this.#fd;
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
