/**
 * The verdicts of `vmsnap verify` and how they are reached from evidence.
 *
 * - `application-consistent`: the restore starts, every check passes, the
 *   manifest says the run held the database, and every position the
 *   manifest recorded is the restored one;
 * - `crash-consistent`: it starts and passes its checks, but a position
 *   differs, nothing comparable was recorded, the run did not hold it, or
 *   there is no manifest;
 * - `damaged`: it does not start (mount, server, recovery) or fails a check.
 *
 * Each piece of evidence has a kind that says what its failure means: a
 * failed `start` or `check` is damage, a failed `position` lowers the
 * verdict to crash-consistent, `info` is shown and judged by nobody.
 *
 * @module
 */

/** A verdict, best first in {@linkcode VERDICTS}. */
export type Verdict = "application-consistent" | "crash-consistent" | "damaged";

/** Every verdict, best first. */
export const VERDICTS: readonly Verdict[] = [
  "application-consistent",
  "crash-consistent",
  "damaged",
];

/** What a piece of evidence decides when it fails. */
export type EvidenceKind = "start" | "check" | "position" | "info";

/** One thing the verifier looked at. */
export interface Evidence {
  kind: EvidenceKind;
  /** What was checked, in words. */
  name: string;
  ok: boolean;
  /** What was found (figures, the tool's words). */
  detail: string;
}

/**
 * The lowest of some verdicts (the best when there are none).
 *
 * @example
 * ```ts
 * import { lowest } from "./verdict.ts";
 * lowest(["application-consistent", "damaged"]); // "damaged"
 * ```
 */
export function lowest(verdicts: Verdict[]): Verdict {
  return verdicts.reduce<Verdict>(
    (low, v) => VERDICTS.indexOf(v) > VERDICTS.indexOf(low) ? v : low,
    "application-consistent",
  );
}

/**
 * The verdict the evidence supports. `held` says the manifest recorded the
 * run holding this database (or filesystem) at the snapshot; without a
 * manifest it is false.
 *
 * @example
 * ```ts
 * import { verdictOf } from "./verdict.ts";
 * verdictOf([{ kind: "start", name: "starts", ok: true, detail: "" }, { kind: "position", name: "GTID", ok: true, detail: "" }], true);
 * // "application-consistent"
 * ```
 */
export function verdictOf(evidence: Evidence[], held: boolean): Verdict {
  if (evidence.some((e) => !e.ok && (e.kind === "start" || e.kind === "check"))) return "damaged";
  const positions = evidence.filter((e) => e.kind === "position");
  if (!held || positions.length === 0 || positions.some((e) => !e.ok)) return "crash-consistent";
  return "application-consistent";
}

/**
 * The exit code, in the sense of `run`'s: 0 application-consistent, 1 a
 * lower consistency, 2 damaged (or verify could not run).
 *
 * @example
 * ```ts
 * import { exitCodeOf } from "./verdict.ts";
 * exitCodeOf("crash-consistent"); // 1
 * ```
 */
export function exitCodeOf(verdict: Verdict): 0 | 1 | 2 {
  return VERDICTS.indexOf(verdict) as 0 | 1 | 2;
}
