/**
 * The freeze session: everything that exists only while vmsnap holds
 * filesystems frozen, behind one way in and one way out, as QEMU's guest
 * agent keeps "frozen" behind `ga_set_frozen`/`ga_unset_frozen` with its
 * rollback in one function. It owns
 *
 * - the targets' descriptors: each opened once, checked against the plan,
 *   synced; freeze, thaw and confirm go through them;
 * - the worker threads that freeze several targets at once (started while
 *   the run quiesces);
 * - the guard: spawned early, armed just before the first FIFREEZE, released
 *   after the thaw;
 * - the freeze marker in stateDir (src/state/recover.ts reads it after a
 *   crash): written once before the guard is armed, cleared once;
 * - the in-memory hold of the log and the timeline: from the first FIFREEZE
 *   until the thaw nothing is written to any filesystem;
 * - `/sys/kernel/rcu_expedited` around the FIFREEZE calls
 *   (`freeze.expediteRcu`).
 *
 * {@linkcode FreezeSession.begin} gets everything ready (threads up,
 * targets opened and synced, marker, guard armed), {@linkcode FreezeSession.freeze}
 * is the way in, {@linkcode FreezeSession.thaw} the one way out: the run's
 * thaw, a failed freeze's partial thaw, a failed start and the holder's end of
 * hold all go through it, and it may be called again (it then does nothing
 * more). A failed freeze thaws at once but keeps the window open (the guard
 * armed, the log held) for the crash-consistent snapshot that may follow. Between FIFREEZE and FITHAW the session spends no turn of the event
 * loop, opens no stream and writes nothing to disk (see `freeze` and `thaw`).
 *
 * @module
 */
import {
  FREEZE_POOL_MAX_WORKERS,
  FREEZE_POOL_READY_TIMEOUT_MS,
  GUARD_START_TIMEOUT_MS,
} from "../defaults.ts";
import { type Problem, VmsnapError, withFix } from "../errors.ts";
import type { LogLevel } from "../config/log_level.ts";
import type { ArmMessage, FreezeReport, MountReport } from "../protocol.ts";
import {
  AGENT_THAW_ORDER,
  type FreezeHandle,
  type FreezePool,
  type Freezer,
  inThawOrder,
  runOnHandles,
  thawHandleAndConfirm,
} from "./freezer.ts";
import type { GuardClient, GuardProcess } from "./guard.ts";
import { freezeLevels, type FreezeTarget } from "./plan.ts";
import { expediteGracePeriods, readGracePeriods } from "./rcu_expedite.ts";

/** What a session needs from outside: the freezer and the guard (replaced in tests). */
export interface SessionDeps {
  /** The freezer (FFI ioctl, or `fsfreeze`). */
  createFreezer(): Promise<Freezer>;
  /** Starts and arms the freeze guard (when none was spawned early). */
  startGuard(arm: ArmMessage): Promise<GuardClient>;
  /** Starts a guard early, to be armed later (off the critical path between quiesce and freeze). */
  spawnGuard(): GuardProcess;
}

/** Something that must not write while frozen: it keeps what it would write in memory. */
export interface Holdable {
  hold(): void;
  release(): void;
}

/** The run's log as the session uses it: it records, and is held while frozen. */
export interface SessionLog extends Holdable {
  record(level: LogLevel, event: string, fields?: Record<string, unknown>): void;
}

/** The freeze marker: what a later recovery needs to thaw this session's mounts if it dies. */
export interface MarkerStore {
  /** Throws when it cannot be written (a `StateDirUnwritable` {@linkcode VmsnapError} for a full or read-only stateDir). */
  write(marker: { runId: string; mounts: string[]; mountIds: Record<string, number> }): void;
  clear(): void;
}

/** What a session is made with. */
export interface SessionOptions {
  runId: string;
  /** Where the guard leaves its report when it has to step in. */
  stateDir: string;
  /** vmsnap freezes (fsFreezeEnabled, and no agent that freezes itself). */
  enabled: boolean;
  freeze: { maxFrozenSeconds: number; expediteRcu: boolean };
  deps: SessionDeps;
  log: SessionLog;
  /** What else must not write while frozen (the run's timeline), released after the log. */
  alsoHold?: readonly Holdable[];
  marker: MarkerStore;
  /** Records an error for the result. */
  fail(problem: Problem): void;
  /** Records a warning for the result. */
  warn(problem: Problem): void;
}

/** Rounds to microseconds, for the result and the log. */
const round = (ms: number) => Math.round(ms * 1000) / 1000;

/**
 * One freeze of one run (or hold). With `enabled` the guard is spawned at
 * once, so that it starts while the run checks and quiesces.
 *
 * @example
 * ```ts
 * import { FreezeSession, type SessionOptions } from "./session.ts";
 * declare const options: SessionOptions;
 * const session = new FreezeSession(options);
 * session.plan({ targets: [], problems: [] });
 * try {
 *   if (await session.begin()) await session.freeze();
 *   // ... the snapshot, with session.stillFrozen() ...
 * } finally {
 *   await session.thaw();
 * }
 * session.close();
 * ```
 */
export class FreezeSession {
  readonly #options: SessionOptions;
  #targets: readonly FreezeTarget[] = [];
  #levels: FreezeTarget[][] = [];
  #problems: readonly Problem[] = [];
  #report: FreezeReport = { enabled: false, mounts: [], frozenMs: 0 };
  #frozen: MountReport[] = [];
  #failed = false;
  #frozenAt = 0;
  #freezer?: Freezer;
  #pool?: FreezePool;
  #early?: GuardProcess;
  #guard?: GuardClient;
  #guardReleased = false;
  #markerWritten = false;
  #held = false;
  readonly #handles = new Map<string, FreezeHandle>();
  readonly #afterThaw: (() => void)[] = [];

  constructor(options: SessionOptions) {
    this.#options = options;
    // The guard starts now, in parallel with the rest of the checks and quiesce; armed before the freeze.
    if (options.enabled) this.#early = options.deps.spawnGuard();
  }

  /** The targets planned, in freeze order. */
  get targets(): readonly FreezeTarget[] {
    return this.#targets;
  }

  /** The targets grouped into levels frozen one after another, each level concurrently. */
  get levels(): readonly (readonly FreezeTarget[])[] {
    return this.#levels;
  }

  /** The freeze part of the result. */
  get report(): FreezeReport {
    return this.#report;
  }

  /** What this session froze, in freeze order (each with its thaw, once thawed). */
  get frozen(): readonly MountReport[] {
    return this.#frozen;
  }

  /** The freeze failed (its plan, a target, the guard): the snapshot is at most crash-consistent. */
  get failed(): boolean {
    return this.#failed;
  }

  /** A guard was armed: there was a freeze to thaw and report. */
  get armed(): boolean {
    return this.#guard !== undefined;
  }

  /**
   * The freeze plan: the targets (grouped into levels frozen one after
   * another, each level concurrently), and its problems (they fail the
   * freeze, not the run).
   */
  plan(plan: { targets: readonly FreezeTarget[]; problems: readonly Problem[] }): void {
    this.#targets = plan.targets;
    this.#levels = freezeLevels(plan.targets);
    this.#problems = plan.problems;
  }

  /**
   * With two targets or more, the freezer (FFI loaded now, not between
   * quiesce and freeze) and its worker threads, started while the run
   * quiesces: one fewer than the targets (this thread takes a job too), at
   * most FREEZE_POOL_MAX_WORKERS. They are used only once they are all up.
   */
  async startPool(): Promise<void> {
    const targets = this.#targets.length;
    if (!this.#options.enabled || this.#problems.length > 0 || targets < 2) return;
    const freezer = this.#freezer ??= await this.#options.deps.createFreezer();
    try {
      this.#pool = freezer.startPool?.({
        workers: Math.min(FREEZE_POOL_MAX_WORKERS, targets - 1),
        capacity: targets,
      });
    } catch (error) {
      // No threads (a runtime without workers): frozen one after another, as with one target.
      this.#options.log.record("warning", "freeze-pool", {
        ok: false,
        error: (error as Error).message,
      });
    }
  }

  /**
   * Everything before the first FIFREEZE: the plan's problems recorded (they
   * fail the freeze), the threads checked, every target opened (on the mount
   * the plan chose) and synced, the marker written and the guard armed.
   * False when there is nothing to freeze or a step failed (recorded, and
   * rolled back through {@linkcode FreezeSession.thaw}): then nothing may be
   * frozen.
   */
  async begin(): Promise<boolean> {
    const { enabled, deps, fail } = this.#options;
    const freezer = this.#freezer ??= await deps.createFreezer();
    this.#report = { enabled, method: freezer.method, mounts: [], frozenMs: 0 };
    this.#failed = this.#problems.length > 0;
    for (const p of this.#problems) fail({ code: p.code, message: withFix(p).message });
    if (!enabled || this.#failed || this.#targets.length === 0) return false;
    await this.#checkPool();
    if (!this.#openTargets(freezer) || !await this.#armGuard()) {
      this.#failed = true;
      await this.thaw();
      return false;
    }
    return true;
  }

  /** The pool started while the run quiesced; not up in time: one thread, one call after another. */
  async #checkPool(): Promise<void> {
    if (this.#pool && !await this.#pool.ready(FREEZE_POOL_READY_TIMEOUT_MS)) {
      this.#options.log.record("warning", "freeze-pool", {
        ok: false,
        error: "its threads did not start",
      });
      this.#closePool();
    }
  }

  /**
   * Opens every target once and checks that the descriptor is on the mount
   * the plan chose (a mount point lazily unmounted or mounted over since
   * planning resolves to another mount): a mismatch is `FreezeMountNotFound`
   * and nothing is frozen. Then syncs them all at once (syncfs, outside the
   * frozen window, so that the freeze itself has little left to flush).
   * False when a target failed.
   */
  #openTargets(freezer: Freezer): boolean {
    for (const target of this.#targets) {
      const opened = freezer.open(target.mountPoint);
      if (opened.handle) this.#handles.set(target.mountPoint, opened.handle);
      const problem = !opened.handle
        ? `cannot open ${target.mountPoint}: ${opened.error}`
        : misplaced(target, opened.handle);
      if (problem) {
        this.#options.fail({
          code: "FreezeMountNotFound",
          message:
            `${problem}. Nothing was frozen. Fix: find what changed the mounts during the run (a pre-script?) and run again.`,
        });
        return false;
      }
    }
    this.#syncTargets(freezer);
    return true;
  }

  /** syncfs blocks nobody: every target at once. */
  #syncTargets(freezer: Freezer): void {
    const mounts = [...this.#handles.keys()];
    const synced = runOnHandles({
      freezer,
      pool: this.#pool,
      op: "sync",
      handles: [...this.#handles.values()],
      stopOnFailure: false,
    });
    synced.forEach((op, i) => {
      this.#options.log.record(op?.ok ? "debug" : "warning", "syncfs", {
        mount: mounts[i],
        ok: op?.ok ?? false,
        ms: round(op?.ms ?? 0),
        thread: op?.thread,
        error: op?.error,
      });
    });
  }

  /**
   * Writes the freeze marker and arms the guard with the targets. False
   * (with `GuardFailed` recorded, or `StateDirUnwritable` when the marker
   * cannot be written) when the guard does not come up: then nothing may be
   * frozen.
   */
  async #armGuard(): Promise<boolean> {
    const { runId, stateDir, freeze, deps, marker } = this.#options;
    const mounts = this.#targets.map((t) => t.mountPoint);
    const mountIds = Object.fromEntries(this.#targets.map((t) => [t.mountPoint, t.mountId]));
    try {
      this.#markerWritten = true;
      marker.write({ runId, mounts, mountIds });
      const early = this.#early;
      const arm = early
        ? (message: ArmMessage) => early.arm(message, GUARD_START_TIMEOUT_MS)
        : deps.startGuard;
      this.#guard = await arm({
        op: "arm",
        runId,
        mounts,
        // The guard holds only what this run freezes: every target from before its freeze (a hold
        // sent just before the ioctl may not leave this process before the ioctl blocks), each one
        // dropped again if its freeze fails or never happens.
        held: mounts,
        mountIds,
        maxFrozenMs: freeze.maxFrozenSeconds * 1000,
        stateDir,
        // The guard puts the 0 back if this agent dies between setting it and putting it back.
        ...(freeze.expediteRcu && readGracePeriods().value === "0"
          ? { restoreRcuExpedited: true }
          : {}),
      });
      this.#report.guard = { pid: this.#guard.pid };
      return true;
    } catch (error) {
      this.#options.fail(armFailure(stateDir, error));
      return false;
    }
  }

  /**
   * The way in: holds what must not write, expedites RCU grace periods if
   * asked, and freezes the targets level by level (children first), each
   * level's targets concurrently. When a FIFREEZE fails, no further level is
   * started (and no call of its level that had not started yet): the caller
   * thaws what froze ({@linkcode FreezeSession.failed}). Call only after
   * {@linkcode FreezeSession.begin} answered true.
   */
  async freeze(): Promise<void> {
    // From here until the thaw is confirmed, nothing is written to any filesystem.
    this.hold();
    const expedite = this.#options.freeze.expediteRcu ? expediteGracePeriods() : undefined;
    if (expedite) {
      this.#report.rcuExpedited = expedite.state;
      this.#options.log.record(expedite.error ? "warning" : "debug", "rcu-expedite", {
        state: expedite.state,
        error: expedite.error,
      });
    }
    try {
      this.#frozenAt = performance.now();
      this.#freezeByLevel(this.#freezer!, this.#guard!);
    } finally {
      // Only the FIFREEZE calls wait for grace periods: the machine's setting is back before the snapshot.
      expedite?.restore();
    }
    // A turn of the event loop only when there are drops to send (see #dropUnfrozen).
    if (this.#dropUnfrozen() > 0) await new Promise((resolve) => setImmediate(resolve));
  }

  /** Freezes level after level (each level's calls together), stopping after a failed level. */
  #freezeByLevel(freezer: Freezer, guard: GuardClient): void {
    for (const [index, level] of this.#levels.entries()) {
      const ops = runOnHandles({
        freezer,
        pool: this.#pool,
        op: "freeze",
        handles: level.map((t) => this.#handles.get(t.mountPoint)!),
        stopOnFailure: true,
      });
      level.forEach((target, i) => {
        const op = ops[i];
        if (op) this.#recordFreeze(target, index, op); // else never started: an earlier call of its level failed
      });
      if (this.#failed || guard.expired()) return;
    }
  }

  /** One FIFREEZE's outcome, for the result and the log. */
  #recordFreeze(
    target: FreezeTarget,
    level: number,
    op: { ok: boolean; ms: number; thread: number; error?: string },
  ): void {
    const report: MountReport = {
      mountPoint: target.mountPoint,
      fsType: target.fsType,
      device: target.device,
      frozen: op.ok,
      freezeMs: round(op.ms),
      level,
    };
    this.#report.mounts.push(report);
    this.#options.log.record(op.ok ? "info" : "error", "freeze", {
      mount: target.mountPoint,
      ok: op.ok,
      ms: report.freezeMs,
      freezeLevel: level,
      thread: op.thread,
      error: op.error,
    });
    if (op.ok) {
      this.#frozen.push(report);
      return;
    }
    report.error = op.error;
    this.#options.fail({
      code: "FreezeFailed",
      message:
        `could not freeze ${target.mountPoint} (${target.fsType} on ${target.source}): ${op.error}. Everything vmsnap froze in this run (before it, or beside it in the same level) was thawed again. Fix: exclude it (freeze.exclude) or resolve the error.`,
    });
    this.#failed = true;
  }

  /**
   * A freeze that failed (EBUSY: someone else's freeze) or never happened is
   * not the guard's to thaw: dropped, and the drops leave with the next turn
   * of the event loop, right after. When every target froze there is nothing
   * to drop, and no turn is spent while frozen. Returns how many were dropped.
   */
  #dropUnfrozen(): number {
    const froze = new Set(this.#frozen.map((m) => m.mountPoint));
    const drops = this.#targets.filter((target) => !froze.has(target.mountPoint));
    for (const target of drops) this.#guard!.drop(target.mountPoint);
    return drops.length;
  }

  /**
   * From now on nothing is written to disk: the log and the timeline wait in
   * memory until {@linkcode FreezeSession.thaw}. `freeze` holds by itself;
   * the holder calls it when the agent is about to freeze.
   */
  hold(): void {
    this.#held = true;
    this.#options.log.hold();
    for (const quiet of this.#options.alsoHold ?? []) quiet.hold();
  }

  /** The mounts this session froze whose thaw is not confirmed (what the snapshot covers). */
  stillFrozen(): string[] {
    return this.#frozen.filter((m) => !m.thawed).map((m) => m.mountPoint);
  }

  /** Every planned target froze and was thawed (confirmed), and the guard did not step in. */
  freezeHeld(): boolean {
    const { mounts, guard } = this.#report;
    return mounts.length > 0 && mounts.every((m) => m.frozen && m.thawed) &&
      mounts.length === this.#targets.length && !guard?.steppedIn;
  }

  /**
   * Runs `then` right after the FITHAW calls when something is frozen now
   * (before the guard is released and before what was held is written), else
   * at once: an event that must not wait for a slow thaw, nor come before it.
   */
  whenThawed(then: () => void): void {
    if (this.#frozen.some((m) => m.thawed === undefined)) this.#afterThaw.push(then);
    else then();
  }

  /**
   * The way out, and the rollback of everything the session set up: thaws
   * what it froze and has not thawed yet (in reverse freeze order, each
   * confirmed), runs what waited for the thaw, releases the guard (and
   * records what it did), clears the marker, closes the descriptors and the
   * threads, and writes what was held in memory. Again: nothing more.
   *
   * With `keepOpen` (a freeze that failed part way, before the
   * crash-consistent snapshot that may still follow): only the thaw, and the
   * marker cleared once nothing of this session is left frozen; the guard
   * stays armed and the log held until the window ends with the next `thaw()`.
   */
  async thaw(options: { keepOpen?: boolean } = {}): Promise<void> {
    this.#thawFrozen();
    if (options.keepOpen) {
      // Nothing of this session is frozen now, so stateDir can be written: the marker lists every
      // planned mount, and must not lead a later recovery to thaw someone else's freeze (EBUSY).
      if (this.#frozen.every((m) => m.thawed)) this.#clearMarker();
      return;
    }
    for (const then of this.#afterThaw.splice(0)) then();
    await this.#releaseGuard();
    this.#clearMarker();
    this.#closeHandles();
    this.#closePool();
    this.#releaseHolds();
  }

  /** Removes the freeze marker, once. */
  #clearMarker(): void {
    if (this.#markerWritten) this.#options.marker.clear();
    this.#markerWritten = false;
  }

  /** Thaws what this session froze and has not thawed yet, in the agent's order, confirming each. */
  #thawFrozen(): void {
    const pending = this.#frozen.filter((m) => m.thawed === undefined);
    if (pending.length === 0 || !this.#freezer) return;
    for (const mount of inThawOrder(pending, AGENT_THAW_ORDER)) {
      const result = thawHandleAndConfirm(this.#freezer, this.#handles.get(mount.mountPoint)!);
      mount.thawed = result.confirmed;
      mount.thawMs = round(result.ms);
      this.#options.log.record(result.confirmed ? "info" : "error", "thaw", {
        mount: mount.mountPoint,
        confirmed: result.confirmed,
        ms: mount.thawMs,
        error: result.error,
      });
      if (!result.confirmed) {
        mount.error = result.error;
        this.#options.fail({
          code: "ThawFailed",
          message:
            `could not confirm that ${mount.mountPoint} is thawed: ${result.error}. Fix: run fsfreeze --unfreeze ${mount.mountPoint} now.`,
        });
      }
    }
    this.#report.frozenMs = Math.round(performance.now() - this.#frozenAt);
  }

  /**
   * Tells the guard the thaw is done, and records what it did: died, stepped
   * in at the deadline, or found mounts still frozen.
   */
  async #releaseGuard(): Promise<void> {
    const guard = this.#guard;
    if (!guard || this.#guardReleased) return;
    this.#guardReleased = true;
    const { fail, warn, freeze } = this.#options;
    const guardDied = guard.died();
    const leftovers = await guard.release(this.#frozen.map((m) => m.mountPoint));
    if (guardDied) {
      // Say only what happened: the mounts whose thaw was confirmed, and those that were not.
      const unconfirmed = this.#frozen.filter((m) => !m.thawed).map((m) => m.mountPoint);
      const thawed = unconfirmed.length === 0
        ? "vmsnap thawed and confirmed every mount it froze itself"
        : `vmsnap could NOT confirm the thaw of ${unconfirmed.join(", ")} (see ThawFailed)`;
      warn({
        code: "GuardFailed",
        message:
          `the freeze guard (pid ${guard.pid}) died during the freeze; ${thawed}. Fix: find out what killed it (dmesg, the OOM killer).`,
      });
    }
    const steppedIn = guard.expired();
    if (steppedIn) {
      this.#report.guard!.steppedIn = steppedIn;
      fail({
        code: "FreezeTimeout",
        message:
          `the filesystems were still frozen after freeze.maxFrozenSeconds (${freeze.maxFrozenSeconds} s); the guard thawed ${
            steppedIn.thawed.map((t) => t.mount).join(", ")
          } after ${steppedIn.afterMs} ms. The snapshot may be inconsistent. Fix: make the snapshot faster or raise freeze.maxFrozenSeconds; check the freeze order with vmsnap check.`,
      });
    }
    for (const mount of leftovers) {
      fail({
        code: "ThawFailed",
        message: `${mount} was still frozen after vmsnap's thaw; the guard thawed it.`,
      });
    }
  }

  #releaseHolds(): void {
    if (!this.#held) return;
    this.#held = false;
    this.#options.log.release();
    for (const quiet of this.#options.alsoHold ?? []) quiet.release();
  }

  /** Closes the targets' descriptors (after the thaw is confirmed, or when nothing froze). */
  #closeHandles(): void {
    for (const handle of this.#handles.values()) this.#freezer?.close(handle);
    this.#handles.clear();
  }

  /** Ends the pool's threads (after the thaw is confirmed, or when nothing was frozen). */
  #closePool(): void {
    this.#pool?.close();
    this.#pool = undefined;
  }

  /**
   * At the end of the run: lets a guard that was never armed go, and ends
   * threads that never froze anything (a run that stopped before its freeze).
   */
  close(): void {
    this.#early?.dismiss();
    this.#closePool();
  }
}

/** Why a target's descriptor is not on the mount the plan chose, or undefined when it is. */
function misplaced(target: FreezeTarget, handle: FreezeHandle): string | undefined {
  if (handle.mountId === target.mountId) return undefined;
  return `${target.mountPoint} is no longer the filesystem vmsnap planned to freeze (mount ${target.mountId}: ${target.fsType} on ${target.source}, device ${target.device}); the path now leads to ${
    handle.mountId === undefined ? "a mount vmsnap cannot identify" : `mount ${handle.mountId}`
  }: it was unmounted, or something was mounted over it, after the plan`;
}

/** The error when the marker could not be written or the guard did not come up. */
function armFailure(stateDir: string, error: unknown): Problem {
  // The marker could not be written (stateDir full or read-only since the lock was taken).
  if (error instanceof VmsnapError && error.code === "StateDirUnwritable") {
    return {
      code: error.code,
      message: `the freeze marker could not be written in stateDir ${stateDir} (${
        ((error.cause ?? error) as Error).message
      }); without it a dead run's freeze could not be undone, so nothing was frozen. Fix: free space on that filesystem or remount it read-write, or set stateDir to a writable directory only root can write.`,
    };
  }
  return {
    code: "GuardFailed",
    message: `${(error as Error).message}; nothing was frozen. Fix: see the log.`,
  };
}
