/**
 * Reading the config file: only a regular file, at most
 * {@linkcode MAX_CONFIG_BYTES}, checked on the open descriptor before a byte
 * is read (a device or a FIFO is never read, and never blocks the open), and
 * only valid UTF-8. Each refusal is a {@linkcode VmsnapError} with Azure's
 * code and the fix. The file's owner and mode are preflight's
 * (src/preflight/preflight.ts `configFileProblems`).
 *
 * @module
 */
import { closeSync, constants, fstatSync, openSync, readSync, statSync } from "node:fs";
import { DEFAULT_CONFIG_PATH } from "../defaults.ts";
import { type Problem, VmsnapError } from "../errors.ts";
import { fileKind } from "../sys/file_type.ts";
import { SourceMap } from "./syntax.ts";

/** The largest config file read (a config is a few hundred bytes). */
export const MAX_CONFIG_BYTES = 1 << 20;

/**
 * The problem when the config path is not a regular file (a directory, a
 * device, a FIFO), found without opening it; undefined otherwise (a missing
 * file is left to the caller).
 *
 * @example
 * ```ts
 * import { configNotRegular } from "./read.ts";
 * configNotRegular("/dev/zero")?.code; // "ConfigFileNotRegular"
 * ```
 */
export function configNotRegular(file: string): Problem | undefined {
  let stats;
  try {
    stats = statSync(file);
  } catch {
    return undefined;
  }
  const kind = fileKind(stats);
  return kind === undefined ? undefined : notRegularProblem(file, kind);
}

function notRegularProblem(file: string, kind: string): Problem {
  return {
    code: "ConfigFileNotRegular",
    message:
      `${file} is ${kind}, not a config file; vmsnap reads only a regular file. Fix: name the JSON file itself (Azure's is ${DEFAULT_CONFIG_PATH}).`,
  };
}

/** Opens the config without blocking on a FIFO or becoming a terminal's controller. */
function openConfig(file: string): number {
  try {
    return openSync(file, constants.O_RDONLY | constants.O_NONBLOCK | constants.O_NOCTTY);
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    if (code === "ENOENT" || code === "ENOTDIR") {
      throw new VmsnapError(
        "ConfigFileNotFound",
        `${file} does not exist. Fix: create it (Azure's sample config works as is), or point --config or VMSNAP_CONFIG at your config.`,
      );
    }
    const found = code === "ENXIO" ? configNotRegular(file) : undefined; // a socket
    if (found) throw new VmsnapError(found.code, found.message);
    throw new VmsnapError(
      "ConfigFileNotReadable",
      `${file} cannot be read (${code ?? (error as Error).message}). Fix: run vmsnap as root.`,
    );
  }
}

/** The error for a file larger than MAX_CONFIG_BYTES. */
function tooBig(file: string, size: number): VmsnapError {
  return new VmsnapError(
    "IncorrectJSONConfigFile",
    `${file} is ${size} bytes; a config is at most ${MAX_CONFIG_BYTES} bytes. Fix: is this the right file?`,
  );
}

/**
 * Reads an open regular file of `size` bytes to its end, refusing more than
 * MAX_CONFIG_BYTES.
 */
function readAll(fd: number, file: string, size: number): Uint8Array {
  // Read up to one byte more than allowed: a file that grew since fstat is caught too. The
  // buffer starts at the file's size and grows: a 1 MiB one cost each start 1-2 ms (issue 12).
  let buffer = new Uint8Array(size + 1);
  let length = 0;
  for (;;) {
    if (length === buffer.length) {
      const bigger = new Uint8Array(Math.min(buffer.length * 2, MAX_CONFIG_BYTES + 1));
      bigger.set(buffer);
      buffer = bigger;
    }
    const n = readSync(fd, buffer, length, buffer.length - length, null);
    if (n === 0) break;
    length += n;
    if (length > MAX_CONFIG_BYTES) throw tooBig(file, length);
  }
  return buffer.subarray(0, length);
}

/**
 * The config's bytes: only from a regular file of at most MAX_CONFIG_BYTES,
 * checked on the open descriptor before reading.
 */
function readConfigBytes(file: string): Uint8Array {
  const fd = openConfig(file);
  try {
    const stats = fstatSync(fd);
    const kind = fileKind(stats);
    if (kind !== undefined) {
      const found = notRegularProblem(file, kind);
      throw new VmsnapError(found.code, found.message);
    }
    if (stats.size > MAX_CONFIG_BYTES) throw tooBig(file, stats.size);
    return readAll(fd, file, stats.size);
  } catch (error) {
    if (error instanceof VmsnapError) throw error;
    throw new VmsnapError(
      "ConfigFileNotReadable",
      `${file} cannot be read (${
        (error as NodeJS.ErrnoException).code ?? (error as Error).message
      }). Fix: run vmsnap as root.`,
    );
  } finally {
    closeSync(fd);
  }
}

/** The offset of the first byte that does not decode as UTF-8. */
function firstInvalidUtf8(bytes: Uint8Array): number {
  let low = 0;
  let high = bytes.length;
  // The longest valid prefix, by bisection (a prefix may end inside a character).
  while (low < high) {
    const mid = (low + high + 1) >> 1;
    try {
      new TextDecoder("utf-8", { fatal: true }).decode(bytes.subarray(0, mid), { stream: true });
      low = mid;
    } catch {
      high = mid - 1;
    }
  }
  return low;
}

/**
 * The config file's text. Throws {@linkcode VmsnapError} when the file cannot
 * be read at all (`ConfigFileNotFound`, `ConfigFileNotReadable`,
 * `ConfigFileNotRegular`) or is not UTF-8 or too big
 * (`IncorrectJSONConfigFile`, naming the line of the first invalid byte).
 *
 * @example
 * ```ts
 * import { readConfigText } from "./read.ts";
 * const text = readConfigText("/etc/azure/VMSnapshotScriptPluginConfig.json");
 * ```
 */
export function readConfigText(file: string): string {
  const bytes = readConfigBytes(file);
  try {
    return new TextDecoder("utf-8", { fatal: true }).decode(bytes);
  } catch {
    const bad = firstInvalidUtf8(bytes);
    const loc = new SourceMap(new TextDecoder().decode(bytes.subarray(0, bad))).at(bad);
    throw new VmsnapError(
      "IncorrectJSONConfigFile",
      `${file}:${loc.line}: the file is not valid UTF-8 (byte ${bad}). Fix: save it as UTF-8.`,
      [{
        code: "IncorrectJSONConfigFile",
        message: `not valid UTF-8 at byte ${bad}`,
        line: loc.line,
      }],
    );
  }
}
