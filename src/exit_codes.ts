/**
 * vmsnap's exit codes: one per kind of outcome, the same for every command.
 * `--help`, the man page and the README's table say what each means for
 * each command; every command returns one of these.
 *
 * @module
 */

/**
 * The exit codes, by kind: `ok` done as asked; `degraded` done, with
 * problems; `failed` nothing done; `usage` a usage error.
 *
 * @example
 * ```ts
 * import { EXIT } from "./exit_codes.ts";
 * process.exitCode = EXIT.usage; // 64
 * ```
 */
export const EXIT = { ok: 0, degraded: 1, failed: 2, usage: 64 } as const;

/** An exit code of vmsnap's. */
export type ExitCode = (typeof EXIT)[keyof typeof EXIT];

/** One kind of outcome: its code, in a few words (--help), and for each command (man page). */
export interface ExitKind {
  code: ExitCode;
  summary: string;
  detail: string;
}

/** The kinds, in the order of their codes. */
export const EXIT_KINDS: readonly ExitKind[] = [
  {
    code: EXIT.ok,
    summary: "success: done as asked",
    detail:
      "Success: done as asked. check found no problem; run and hook thaw took the snapshot at the consistency the config asks for; recover undid everything (or nothing was left).",
  },
  {
    code: EXIT.degraded,
    summary: "done, with problems: check found some; a snapshot at a lower consistency",
    detail:
      "Done, with problems: check found at least one; run and hook thaw took the snapshot at a lower consistency; recover could not undo something.",
  },
  {
    code: EXIT.failed,
    summary: "failed, nothing done: no snapshot taken, nothing written, refused",
    detail:
      "Failed, nothing done: run and hook took no snapshot; install, uninstall and init wrote nothing (or stopped at the file the error names); recover refused (not root, an untrusted config or stateDir); status found no result; an unexpected error (InternalError).",
  },
  {
    code: EXIT.usage,
    summary: "usage error: an unknown command or option, a bad value",
    detail:
      "Usage error: an unknown command or option, or a bad value (UsageError; the nearest valid word is suggested).",
  },
];

/**
 * The exit code of a command stopped by an error with this code: 64 for a
 * usage error, else 2 (failed, nothing done).
 *
 * @example
 * ```ts
 * import { exitCodeOf } from "./exit_codes.ts";
 * exitCodeOf("ConfigExists"); // 2
 * exitCodeOf("UsageError"); // 64
 * ```
 */
export function exitCodeOf(code: string): ExitCode {
  return code === "UsageError" ? EXIT.usage : EXIT.failed;
}
