/**
 * stderr when it is the systemd journal: systemd sets `JOURNAL_STREAM` to
 * the `device:inode` of the stream it connected to stderr. Each line then
 * gets a syslog priority prefix (`<3>` error, `<4>` warning, `<6>` info, as
 * sd-daemon(3) describes), so `journalctl -p warning -u vmsnap` shows what
 * went wrong and every line is one journal entry.
 *
 * @module
 */
import { fstatSync } from "node:fs";

/** Syslog priorities journald reads from a `<N>` prefix. */
export const PRIORITY = { err: 3, warning: 4, notice: 5, info: 6 } as const;

/**
 * True when fd 2 is the stream `JOURNAL_STREAM` names (a shell or a pipe in
 * between breaks the match, and the prefixes are then left out).
 *
 * @example
 * ```ts
 * import process from "node:process";
 * import { stderrIsJournal } from "./journal.ts";
 * stderrIsJournal(process.env); // false in a terminal
 * ```
 */
export function stderrIsJournal(env: Record<string, string | undefined>, fd = 2): boolean {
  const stream = env.JOURNAL_STREAM?.match(/^(\d+):(\d+)$/);
  if (!stream) return false;
  try {
    const stat = fstatSync(fd, { bigint: true });
    return stat.dev === BigInt(stream[1]) && stat.ino === BigInt(stream[2]);
  } catch {
    return false;
  }
}

/**
 * The priority of one event written to stderr (one write is one event: a
 * timeline step, the verdict with its error lines, a usage error).
 *
 * @example
 * ```ts
 * import { priorityOf } from "./journal.ts";
 * priorityOf("vmsnap run r1: degraded, crash-consistent, exit 1, 9 ms\n"); // 4
 * ```
 */
export function priorityOf(text: string): number {
  const first = text.trimStart().split("\n")[0];
  if (/: failed,|^vmsnap( [a-z]+)?: |\[[A-Za-z-]+\]/.test(first)) {
    return /^vmsnap: (recovered|paused)/.test(first) ? PRIORITY.warning : PRIORITY.err;
  }
  if (/: degraded,|^\+[\d.]+s\s+recover\b/.test(first)) return PRIORITY.warning;
  if (/: success,/.test(first)) return PRIORITY.notice;
  return PRIORITY.info;
}

/**
 * Wraps a stderr writer: every line of a write gets the write's priority
 * prefix; the verdict's error lines (`  [Code] ...`) are errors.
 *
 * @example
 * ```ts
 * import process from "node:process";
 * import { journalWriter } from "./journal.ts";
 * const write = journalWriter((t) => process.stderr.write(t));
 * write("vmsnap run r1: failed, none-consistent (no snapshot), exit 2, 3 ms\n"); // "<3>vmsnap run ..."
 * ```
 */
export function journalWriter(write: (text: string) => void): (text: string) => void {
  return (text) => {
    const priority = priorityOf(text);
    const lines = text.replace(/\n$/, "").split("\n");
    write(
      lines.map((line) => `<${/^\s+\[[A-Za-z-]+\]/.test(line) ? PRIORITY.err : priority}>${line}\n`)
        .join(""),
    );
  };
}
