/**
 * The freeze and the thaw of a run, around its freeze session
 * (src/freeze/session.ts, which owns the descriptors, threads, guard, marker
 * and the hold of the log): what the run shows of them on its timeline and
 * in its events, and where the fault-injection pause stops.
 *
 * @module
 */
import type { PreparedRun } from "./state.ts";

/**
 * The freeze stage: the plan's problems fail it; otherwise the guard is armed
 * and the targets frozen in order. A freeze that failed thaws at once what it
 * froze (the snapshot is then crash-consistent, or not taken).
 *
 * @example
 * ```ts
 * import { freezeTargets, thawTargets } from "./freeze_step.ts";
 * import type { PreparedRun } from "./state.ts";
 * declare const run: PreparedRun;
 * try {
 *   await freezeTargets(run);
 * } finally {
 *   await thawTargets(run);
 * }
 * ```
 */
export async function freezeTargets(run: PreparedRun): Promise<void> {
  const { session } = run.setup;
  if (!await session.begin()) return;
  run.output.say(
    "freeze",
    session.levels.map((level) => level.map((t) => t.mountPoint).join(", ")).join("; then "),
  );
  await session.freeze();
  if (session.frozen.length > 0) await run.deps.pause("frozen", run.interrupt.signal);
  // A failed freeze thaws what froze at once (the session's one way out); the window stays open,
  // guarded, for the crash-consistent snapshot that may follow.
  if (session.failed) await session.thaw({ keepOpen: true });
}

/**
 * The thaw stage, always run after {@linkcode freezeTargets}: thaws in
 * reverse freeze order (each confirmed), releases the guard, writes what
 * was held in memory, and emits `thawed`.
 *
 * @example
 * ```ts
 * import { thawTargets } from "./freeze_step.ts";
 * import type { PreparedRun } from "./state.ts";
 * declare const run: PreparedRun;
 * await thawTargets(run);
 * ```
 */
export async function thawTargets(run: PreparedRun): Promise<void> {
  const { session } = run.setup;
  if (session.frozen.length > 0) await run.deps.pause("thaw", run.interrupt.signal);
  await session.thaw();
  if (session.armed) {
    const frozen = session.frozen.map((m) => m.mountPoint);
    const { frozenMs } = session.report;
    run.output.say("thaw", `${frozen.length} filesystem(s), frozen ${frozenMs} ms`);
    run.output.event({ event: "thawed", runId: run.runId, mounts: frozen, frozenMs });
  }
}
