/**
 * What a run achieved, in the words of the result: `application` when every
 * configured plugin quiesced and the freeze held, `filesystem` when only the
 * freeze held, `crash` when the snapshot was taken without a (holding)
 * freeze, `none` when no snapshot was taken. The exit code compares it with
 * what the config asked for.
 *
 * @module
 */
import type { Consistency } from "../protocol.ts";

export type { Consistency } from "../protocol.ts";

/** The facts the verdict is made of. */
export interface ConsistencyFacts {
  snapshotTaken: boolean;
  /** Plugins configured (including any that failed their checks). */
  plugins: number;
  /** Every configured plugin quiesced and held to the end. */
  pluginsHeld: boolean;
  /** fsFreezeEnabled. */
  freezeRequested: boolean;
  /** Every target froze, none failed to thaw, the guard did not step in. */
  freezeHeld: boolean;
}

/** What the config asks for. */
export function requestedConsistency(
  facts: Pick<ConsistencyFacts, "plugins" | "freezeRequested">,
): Consistency {
  if (facts.plugins > 0) return "application";
  return facts.freezeRequested ? "filesystem" : "crash";
}

/**
 * What was achieved.
 *
 * @example
 * ```ts
 * import { achievedConsistency } from "./consistency.ts";
 * achievedConsistency({ snapshotTaken: true, plugins: 1, pluginsHeld: true, freezeRequested: true, freezeHeld: true }); // "application"
 * ```
 */
export function achievedConsistency(facts: ConsistencyFacts): Consistency {
  if (!facts.snapshotTaken) return "none";
  const freezeOk = facts.freezeRequested ? facts.freezeHeld : true;
  if (facts.plugins > 0 && facts.pluginsHeld && freezeOk) return "application";
  if (facts.freezeRequested && facts.freezeHeld) return "filesystem";
  return "crash";
}

/** 0: as asked; 1: a snapshot at a lower consistency; 2: no snapshot. */
export function exitCodeFor(requested: Consistency, achieved: Consistency): 0 | 1 | 2 {
  if (achieved === "none") return 2;
  return achieved === requested ? 0 : 1;
}
