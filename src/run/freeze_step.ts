/**
 * The freeze and the thaw of a run: the guard armed, the targets opened,
 * synced and frozen level by level, then thawed in reverse (each confirmed),
 * the guard released, and what was held in memory written.
 *
 * @module
 */
import { FREEZE_POOL_READY_TIMEOUT_MS, GUARD_START_TIMEOUT_MS } from "../defaults.ts";
import { withFix } from "../errors.ts";
import {
  AGENT_THAW_ORDER,
  type FreezePool,
  type Freezer,
  inThawOrder,
  runOnHandles,
  thawHandleAndConfirm,
} from "../freeze/freezer.ts";
import type { GuardClient } from "../freeze/guard.ts";
import { unwritableStateDir } from "../state/lock.ts";
import type { ArmMessage, MountReport } from "../protocol.ts";
import { clearFreezeMarker, writeFreezeMarker } from "../state/recover.ts";
import { expediteGracePeriods, readGracePeriods } from "../freeze/rcu_expedite.ts";
import type { PreparedRun, RunState } from "./state.ts";

const round = (ms: number) => Math.round(ms * 1000) / 1000;

/**
 * Writes the freeze marker and starts the guard armed with the targets.
 * Returns false (with `GuardFailed` recorded, or `StateDirUnwritable` when
 * the marker cannot be written, the marker removed and `run.freezeFailed`
 * set) when the guard does not come up: then nothing may be frozen.
 *
 * @example
 * ```ts
 * import { armGuard } from "./freeze_step.ts";
 * import type { PreparedRun } from "./state.ts";
 * declare const run: PreparedRun;
 * if (await armGuard(run)) console.log("guarded");
 * ```
 */
export async function armGuard(run: PreparedRun): Promise<boolean> {
  const mounts = run.targets.map((t) => t.mountPoint);
  try {
    const mountIds = Object.fromEntries(run.targets.map((t) => [t.mountPoint, t.mountId]));
    writeFreezeMarker(run.config.stateDir, { runId: run.runId, mounts, mountIds });
    const arm = run.guardProcess
      ? (message: ArmMessage) => run.guardProcess!.arm(message, GUARD_START_TIMEOUT_MS)
      : run.deps.startGuard;
    run.guard = await arm({
      op: "arm",
      runId: run.runId,
      mounts,
      // The guard holds only what this run freezes: every target from before its freeze (a hold
      // sent just before the ioctl may not leave this process before the ioctl blocks), each one
      // dropped again if its freeze fails or never happens.
      held: mounts,
      mountIds,
      maxFrozenMs: run.config.freeze.maxFrozenSeconds * 1000,
      stateDir: run.config.stateDir,
      // The guard puts the 0 back if this agent dies between setting it and putting it back.
      ...(run.config.freeze.expediteRcu && readGracePeriods().value === "0"
        ? { restoreRcuExpedited: true }
        : {}),
    });
    run.freeze.guard = { pid: run.guard.pid };
    return true;
  } catch (error) {
    clearFreezeMarker(run.config.stateDir);
    // The marker could not be written (stateDir full or read-only since the lock was taken).
    const unwritable = unwritableStateDir(run.config.stateDir, error);
    run.errors.push({
      code: unwritable?.code ?? "GuardFailed",
      message: unwritable
        ? `the freeze marker could not be written in stateDir ${run.config.stateDir} (${
          (error as Error).message
        }); without it a dead run's freeze could not be undone, so nothing was frozen. Fix: free space on that filesystem or remount it read-write, or set stateDir to a writable directory only root can write.`
        : `${(error as Error).message}; nothing was frozen. Fix: see the log.`,
    });
    run.freezeFailed = true;
    return false;
  }
}

/**
 * Opens every target once and checks that the descriptor is on the mount the
 * plan chose (a mount point lazily unmounted or mounted over since planning
 * resolves to another mount): a mismatch is `FreezeMountNotFound` and nothing
 * is frozen. Then syncs them all at once (syncfs, outside the frozen window,
 * so that the freeze itself has little left to flush). False when a target
 * failed.
 */
function openTargets(run: PreparedRun, freezer: Freezer, pool?: FreezePool): boolean {
  for (const target of run.targets) {
    const opened = freezer.open(target.mountPoint);
    const problem = !opened.handle
      ? `cannot open ${target.mountPoint}: ${opened.error}`
      : opened.handle.mountId !== target.mountId
      ? `${target.mountPoint} is no longer the filesystem vmsnap planned to freeze (mount ${target.mountId}: ${target.fsType} on ${target.source}, device ${target.device}); the path now leads to ${
        opened.handle.mountId === undefined
          ? "a mount vmsnap cannot identify"
          : `mount ${opened.handle.mountId}`
      }: it was unmounted, or something was mounted over it, after the plan`
      : undefined;
    if (opened.handle) run.handles.set(target.mountPoint, opened.handle);
    if (problem) {
      run.errors.push({
        code: "FreezeMountNotFound",
        message:
          `${problem}. Nothing was frozen. Fix: find what changed the mounts during the run (a pre-script?) and run again.`,
      });
      run.freezeFailed = true;
      closeHandles(run);
      return false;
    }
  }
  // syncfs blocks nobody: every target at once.
  const mounts = [...run.handles.keys()];
  const synced = runOnHandles({
    freezer,
    pool,
    op: "sync",
    handles: [...run.handles.values()],
    stopOnFailure: false,
  });
  synced.forEach((op, i) => {
    run.log.record(op?.ok ? "debug" : "warning", "syncfs", {
      mount: mounts[i],
      ok: op?.ok ?? false,
      ms: round(op?.ms ?? 0),
      thread: op?.thread,
      error: op?.error,
    });
  });
  return true;
}

/** Closes the targets' descriptors (after the thaw is confirmed, or when nothing froze). */
function closeHandles(run: PreparedRun): void {
  for (const handle of run.handles.values()) run.freezer?.close(handle);
  run.handles.clear();
}

/**
 * Freezes the targets level by level (children first), each level's targets
 * concurrently. When a FIFREEZE fails, no further level is started (and no
 * call of its level that had not started yet): the caller thaws what froze.
 */
function freezeEach(
  run: PreparedRun,
  options: { freezer: Freezer; guard: GuardClient; pool?: FreezePool },
): void {
  const { freezer, guard, pool } = options;
  run.output.say(
    "freeze",
    run.levels.map((level) => level.map((t) => t.mountPoint).join(", ")).join("; then "),
  );
  // From here until the thaw is confirmed, nothing is written to any filesystem.
  run.log.hold();
  run.output.hold();
  const expedite = run.config.freeze.expediteRcu ? expediteGracePeriods() : undefined;
  if (expedite) {
    run.freeze.rcuExpedited = expedite.state;
    run.log.record(expedite.error ? "warning" : "debug", "rcu-expedite", {
      state: expedite.state,
      error: expedite.error,
    });
  }
  try {
    run.frozenAt = performance.now();
    freezeByLevel(run, { freezer, guard, pool });
  } finally {
    // Only the FIFREEZE calls wait for grace periods: the machine's setting is back before the snapshot.
    expedite?.restore();
  }
}

/** Freezes level after level (each level's calls together), stopping after a failed level. */
function freezeByLevel(
  run: PreparedRun,
  options: { freezer: Freezer; guard: GuardClient; pool?: FreezePool },
): void {
  const { freezer, guard, pool } = options;
  for (const [index, level] of run.levels.entries()) {
    const ops = runOnHandles({
      freezer,
      pool,
      op: "freeze",
      handles: level.map((t) => run.handles.get(t.mountPoint)!),
      stopOnFailure: true,
    });
    level.forEach((target, i) => {
      const op = ops[i];
      if (!op) return; // never started: an earlier call of its level failed
      const report: MountReport = {
        mountPoint: target.mountPoint,
        fsType: target.fsType,
        device: target.device,
        frozen: op.ok,
        freezeMs: round(op.ms),
        level: index,
      };
      run.freeze.mounts.push(report);
      run.log.record(op.ok ? "info" : "error", "freeze", {
        mount: target.mountPoint,
        ok: op.ok,
        ms: report.freezeMs,
        freezeLevel: index,
        thread: op.thread,
        error: op.error,
      });
      if (op.ok) {
        run.frozen.push(report);
        return;
      }
      report.error = op.error;
      run.errors.push({
        code: "FreezeFailed",
        message:
          `could not freeze ${target.mountPoint} (${target.fsType} on ${target.source}): ${op.error}. Everything vmsnap froze in this run (before it, or beside it in the same level) was thawed again. Fix: exclude it (freeze.exclude) or resolve the error.`,
      });
      run.freezeFailed = true;
    });
    if (run.freezeFailed || guard.expired()) return;
  }
}

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
  const freezer = run.freezer ??= await run.deps.createFreezer();
  const { config } = run;
  run.freeze = { enabled: config.fsFreezeEnabled, method: freezer.method, mounts: [], frozenMs: 0 };
  run.freezeFailed = run.freezeProblems.length > 0;
  for (const p of run.freezeProblems) {
    run.errors.push({ code: p.code, message: withFix(p).message });
  }
  if (!config.fsFreezeEnabled || run.freezeFailed || run.targets.length === 0) return;
  // The pool started while the run quiesced; not up in time: one thread, one call after another.
  let pool = run.freezePool;
  if (pool && !await pool.ready(FREEZE_POOL_READY_TIMEOUT_MS)) {
    run.log.record("warning", "freeze-pool", { ok: false, error: "its threads did not start" });
    closeFreezePool(run);
    pool = undefined;
  }
  if (!openTargets(run, freezer, pool)) return closeFreezePool(run);
  if (!await armGuard(run)) {
    closeFreezePool(run);
    return closeHandles(run);
  }
  freezeEach(run, { freezer, guard: run.guard!, pool });
  // A freeze that failed (EBUSY: someone else's freeze) or never happened is not the guard's to
  // thaw; the drops leave with the next turn of the event loop, right now. When every target
  // froze there is nothing to drop, and no turn is spent while frozen.
  const froze = new Set(run.frozen.map((m) => m.mountPoint));
  const drops = run.targets.filter((target) => !froze.has(target.mountPoint));
  for (const target of drops) run.guard!.drop(target.mountPoint);
  if (drops.length > 0) await new Promise((resolve) => setImmediate(resolve));
  if (run.frozen.length > 0) await run.deps.pause("frozen", run.interrupt.signal);
  if (run.freezeFailed) {
    thawFrozen(run);
    // Nothing of this run is frozen now, so stateDir can be written: the marker lists every
    // planned mount, and must not lead a later recovery to thaw someone else's freeze (EBUSY).
    if (run.frozen.every((m) => m.thawed)) clearFreezeMarker(run.config.stateDir);
  }
}

/** Thaws what this run froze and has not thawed yet, in the agent's order, confirming each. */
function thawFrozen(run: PreparedRun): void {
  const pending = run.frozen.filter((m) => m.thawed === undefined);
  if (pending.length === 0 || !run.freezer) return;
  for (const mount of inThawOrder(pending, AGENT_THAW_ORDER)) {
    const result = thawHandleAndConfirm(run.freezer, run.handles.get(mount.mountPoint)!);
    mount.thawed = result.confirmed;
    mount.thawMs = round(result.ms);
    run.log.record(result.confirmed ? "info" : "error", "thaw", {
      mount: mount.mountPoint,
      confirmed: result.confirmed,
      ms: mount.thawMs,
      error: result.error,
    });
    if (!result.confirmed) {
      mount.error = result.error;
      run.errors.push({
        code: "ThawFailed",
        message:
          `could not confirm that ${mount.mountPoint} is thawed: ${result.error}. Fix: run fsfreeze --unfreeze ${mount.mountPoint} now.`,
      });
    }
  }
  run.freeze.frozenMs = Math.round(performance.now() - run.frozenAt);
}

/**
 * Tells the guard the agent's thaw is done, and records what it did: died,
 * stepped in at the deadline, or found mounts still frozen. Removes the
 * freeze marker.
 *
 * @example
 * ```ts
 * import { releaseGuard } from "./freeze_step.ts";
 * import type { PreparedRun } from "./state.ts";
 * declare const run: PreparedRun;
 * await releaseGuard(run);
 * ```
 */
export async function releaseGuard(run: PreparedRun): Promise<void> {
  const { guard } = run;
  if (!guard) return;
  const guardDied = guard.died();
  const leftovers = await guard.release(run.frozen.map((m) => m.mountPoint));
  if (guardDied) {
    // Say only what happened: the mounts whose thaw was confirmed, and those that were not.
    const unconfirmed = run.frozen.filter((m) => !m.thawed).map((m) => m.mountPoint);
    const thawed = unconfirmed.length === 0
      ? "vmsnap thawed and confirmed every mount it froze itself"
      : `vmsnap could NOT confirm the thaw of ${unconfirmed.join(", ")} (see ThawFailed)`;
    run.warnings.push({
      code: "GuardFailed",
      message:
        `the freeze guard (pid ${guard.pid}) died during the freeze; ${thawed}. Fix: find out what killed it (dmesg, the OOM killer).`,
    });
  }
  const steppedIn = guard.expired();
  if (steppedIn) {
    run.freeze.guard!.steppedIn = steppedIn;
    run.errors.push({
      code: "FreezeTimeout",
      message:
        `the filesystems were still frozen after freeze.maxFrozenSeconds (${run.config.freeze.maxFrozenSeconds} s); the guard thawed ${
          steppedIn.thawed.map((t) => t.mount).join(", ")
        } after ${steppedIn.afterMs} ms. The snapshot may be inconsistent. Fix: make the snapshot faster or raise freeze.maxFrozenSeconds; check the freeze order with vmsnap check.`,
    });
  }
  for (const mount of leftovers) {
    run.errors.push({
      code: "ThawFailed",
      message: `${mount} was still frozen after vmsnap's thaw; the guard thawed it.`,
    });
  }
  clearFreezeMarker(run.config.stateDir);
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
  if (run.frozen.length > 0) await run.deps.pause("thaw", run.interrupt.signal);
  thawFrozen(run);
  for (const event of run.afterThaw?.splice(0) ?? []) run.output.event(event);
  await releaseGuard(run);
  closeHandles(run);
  closeFreezePool(run);
  run.log.release();
  run.output.release();
  if (run.guard) {
    run.output.say("thaw", `${run.frozen.length} filesystem(s), frozen ${run.freeze.frozenMs} ms`);
    run.output.event({
      event: "thawed",
      runId: run.runId,
      mounts: run.frozen.map((m) => m.mountPoint),
      frozenMs: run.freeze.frozenMs,
    });
  }
}

/**
 * Ends the pool's threads (after the thaw is confirmed, or when nothing was frozen).
 *
 * @example
 * ```ts
 * import { closeFreezePool } from "./freeze_step.ts";
 * import type { RunState } from "./state.ts";
 * declare const run: RunState;
 * closeFreezePool(run);
 * ```
 */
export function closeFreezePool(run: RunState): void {
  run.freezePool?.close();
  run.freezePool = undefined;
}
