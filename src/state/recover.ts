/**
 * What a dead run left behind, found and undone by the next vmsnap start of
 * any kind (and by `vmsnap recover`):
 *
 * - a freeze marker whose agent died (and whose guard died too): the mounts
 *   it lists are thawed;
 * - the reports a guard leaves when it had to step in: collected and shown;
 * - a run lock whose owner died: the processes that run started (found by
 *   `VMSNAP_RUN_ID` in their environment, which every descendant inherits)
 *   are killed, and the lock is removed;
 * - database locks that outlive their connection (MongoDB's fsync lock):
 *   released once through the plugin.
 *
 * A recovery that is not the start of a run (a thaw hook with no holder, which
 * qemu-ga runs on every thaw, even one with no freeze before it) undoes the
 * same but keeps its report in `recovered-*.json`: the next `run` or `recover`
 * shows it (and removes it), `check` lists it.
 *
 * @module
 */
import { readdirSync, readFileSync, unlinkSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import process from "node:process";
import { loadConfig } from "../config/config.ts";
import {
  createFreezer,
  EMERGENCY_THAW_ORDER,
  type Freezer,
  inThawOrder,
  thawIfPlanned,
} from "../freeze/freezer.ts";
import type { Problem } from "../errors.ts";
import type { GuardReport, PluginLockRecovery, Recovery } from "../protocol.ts";
import { clearStaleRunLock, type LockOwner } from "./lock.ts";
import { ownerAlive, processStart } from "../sys/process_identity.ts";
import { commandOf, findByEnvironment, killProcesses } from "../sys/process_runner.ts";
import type { LockMarker, PluginDefinition } from "../../plugins/plugin.ts";
import { PLUGINS } from "../../plugins/registry.ts";

export type { PluginLockRecovery, Recovery } from "../protocol.ts";

/** The marker written before freezing and removed after the thaw is confirmed. */
export interface FreezeMarker {
  runId: string;
  pid: number;
  started: string;
  mounts: string[];
  /** Mount point → the mount id planned: recovery thaws a path only while it leads there. */
  mountIds?: Record<string, number>;
  since: string;
}

const markerPath = (stateDir: string) => join(stateDir, "frozen.json");
const KEPT = /^recovered-.*\.json$/;

/** A report kept by a recovery that was not the start of a run. */
interface KeptRecovery {
  by: string;
  at: string;
  recovery: Recovery;
}

/**
 * Writes the freeze marker (before anything is frozen).
 *
 * @example
 * ```ts
 * import { writeFreezeMarker } from "./recover.ts";
 * writeFreezeMarker("/var/lib/vmsnap", { runId: "20261126T050000Z-a1b2c3", mounts: ["/data"] });
 * ```
 */
export function writeFreezeMarker(
  stateDir: string,
  marker: { runId: string; mounts: string[]; mountIds?: Record<string, number> },
): void {
  const full: FreezeMarker = {
    ...marker,
    pid: process.pid,
    started: processStart(process.pid) ?? "",
    since: new Date().toISOString(),
  };
  writeFileSync(markerPath(stateDir), JSON.stringify(full), { mode: 0o600 });
}

/** Removes the freeze marker (after the thaw is confirmed). */
export function clearFreezeMarker(stateDir: string): void {
  try {
    unlinkSync(markerPath(stateDir));
  } catch {
    // not there
  }
}

function readJson<T>(path: string): T | undefined {
  try {
    return JSON.parse(readFileSync(path, "utf8")) as T;
  } catch {
    return undefined;
  }
}

function stateEntries(stateDir: string, pattern: RegExp): string[] {
  try {
    return readdirSync(stateDir).filter((n) => pattern.test(n));
  } catch {
    return [];
  }
}

/** True when recovery found anything at all. */
export function recoveredAnything(r: Recovery): boolean {
  return r.deadRun !== undefined ||
    r.thawed.length + r.guardReports.length + r.killed.length + r.pluginLocks.length +
          (r.unkillable?.length ?? 0) + (r.earlier?.length ?? 0) > 0;
}

/**
 * What dead runs left in `stateDir`, found without changing anything (for
 * `vmsnap check`): each is a `DeadRunLeftover` problem whose fix is `vmsnap
 * recover`.
 *
 * @example
 * ```ts
 * import { findLeftovers } from "./recover.ts";
 * for (const p of findLeftovers("/var/lib/vmsnap")) console.error(p.message);
 * ```
 */
export function findLeftovers(stateDir: string): Problem[] {
  const left = (message: string, plugin?: string): Problem => ({
    code: "DeadRunLeftover",
    message: `${message}. Fix: run vmsnap recover (as root); nothing was changed.`,
    ...(plugin ? { plugin } : {}),
  });
  const found: Problem[] = [];
  const marker = readJson<FreezeMarker>(markerPath(stateDir));
  if (marker && !ownerAlive(marker)) {
    found.push(left(
      `run ${marker.runId} (pid ${marker.pid}) died while freezing ${
        marker.mounts.join(", ")
      }; they may still be frozen (${markerPath(stateDir)})`,
    ));
  }
  for (const name of stateEntries(stateDir, /^guard-.*\.json$/)) {
    const report = readJson<GuardReport>(join(stateDir, name));
    if (!report) continue;
    found.push(left(
      `the guard of run ${report.runId} thawed ${
        report.thawed.map((t) => t.mount).join(", ")
      } after ${report.afterMs} ms (${
        report.reason === "deadline" ? "freeze.maxFrozenSeconds passed" : "its agent died"
      }); its report is ${join(stateDir, name)}`,
    ));
  }
  const deadLock = deadRunLock(stateDir);
  if (deadLock) found.push(left(deadLock));
  for (const name of stateEntries(stateDir, KEPT)) {
    const kept = readJson<KeptRecovery>(join(stateDir, name));
    if (!kept?.recovery) continue;
    found.push(left(
      `${kept.by} undid what a dead run left at ${kept.at}; its report is kept in ${
        join(stateDir, name)
      } (vmsnap recover shows it): ${
        describeRecovery(kept.recovery).map((p) => p.message).join("; ")
      }`,
    ));
  }
  for (const name of stateEntries(stateDir, /^lock-.*\.json$/)) {
    const lock = readJson<LockMarker>(join(stateDir, name));
    if (!lock || ownerAlive(lock)) continue;
    found.push(left(
      `plugin "${lock.plugin}": run ${lock.runId} died holding its ${lock.type} lock (${
        join(stateDir, name)
      })`,
      lock.plugin,
    ));
  }
  return found;
}

/** A run lock whose owner died, with the processes it started that still run, in words. */
function deadRunLock(stateDir: string): string | undefined {
  const owner = readJson<LockOwner>(join(stateDir, "run.lock"));
  if (!owner?.runId || ownerAlive(owner)) return undefined;
  const pids = findByEnvironment("VMSNAP_RUN_ID", owner.runId);
  const running = pids.length
    ? `; ${pids.length} process(es) it started still run: ${
      pids.map((pid) => `${pid} (${commandOf(pid)})`).join(", ")
    }`
    : "";
  return `run ${owner.runId} (pid ${owner.pid}, started ${owner.since}) died holding the run lock${running}`;
}

/**
 * Thaws what a dead run left frozen (its freeze marker's mounts, when its
 * agent and guard both died), writing nothing: the caller may not write to
 * stateDir before this, since stateDir may sit on one of those filesystems.
 * Pass the outcome to {@linkcode recoverAll} as `thawed`. `freezerOf` gives
 * the freezer (the run's dependency; by default the ioctl's).
 *
 * @example
 * ```ts
 * import { recoverAll, thawLeftFrozen } from "./recover.ts";
 * const thawed = await thawLeftFrozen("/var/lib/vmsnap");
 * // ... take the run lock (a write) ...
 * await recoverAll("/var/lib/vmsnap", { thawed });
 * ```
 */
export async function thawLeftFrozen(
  stateDir: string,
  freezerOf: () => Promise<Freezer> = () => createFreezer(),
): Promise<Recovery["thawed"]> {
  const marker = readJson<FreezeMarker>(markerPath(stateDir));
  if (!marker || ownerAlive(marker)) return [];
  const freezer = await freezerOf();
  // The emergency order, as the guard's: see ThawOrder in freeze.ts.
  return inThawOrder(marker.mounts, EMERGENCY_THAW_ORDER).map((mount) => ({
    runId: marker.runId,
    mount,
    ...thawIfPlanned(freezer, mount, marker.mountIds?.[mount]),
  }));
}

/** What a recovery is told besides the stateDir. */
export interface RecoverOptions {
  /** The owner of a stale run lock that the caller already took over (vmsnap run). */
  deadRun?: LockOwner;
  /** Who recovers, when it is not the start of a run or `recover`: the report is kept. */
  keepFor?: string;
  /** What {@linkcode thawLeftFrozen} already thawed. */
  thawed?: Recovery["thawed"];
  /** The freezer (the caller's dependency; by default the ioctl's). */
  freezerOf?: () => Promise<Freezer>;
  /** Plugin types by their `"type"` value (the caller's dependency; by default every plugin). */
  // deno-lint-ignore no-explicit-any
  plugins?: ReadonlyMap<string, PluginDefinition<any>>;
}

/**
 * Finds and undoes what dead runs left in `stateDir`. `deadRun` is the owner
 * of a stale run lock that the caller already took over (vmsnap run); other
 * commands let recovery find and remove a stale lock itself. `keepFor` (who
 * recovers, when it is not the start of a run or `recover`) keeps the report
 * in stateDir for the next run or `recover`, which show it in `earlier`.
 *
 * @example
 * ```ts
 * import { recoverAll } from "./recover.ts";
 * const recovery = await recoverAll("/var/lib/vmsnap");
 * for (const t of recovery.thawed) console.error(`thawed ${t.mount}`);
 * ```
 */
export async function recoverAll(
  stateDir: string,
  options: RecoverOptions = {},
): Promise<Recovery> {
  const recovery: Recovery = { thawed: [], guardReports: [], killed: [], pluginLocks: [] };

  // A freeze whose agent and guard both died: thawed first, before anything here writes to
  // stateDir (which may be on a filesystem that freeze holds).
  recovery.thawed.push(...(options.thawed ?? await thawLeftFrozen(stateDir, options.freezerOf)));
  const marker = readJson<FreezeMarker>(markerPath(stateDir));
  if (marker && !ownerAlive(marker)) clearFreezeMarker(stateDir);
  if (!options.keepFor) recovery.earlier = takeKept(stateDir);
  recovery.guardReports.push(...takeGuardReports(stateDir));
  // Under the lock's flock: never the lock of a run that is starting right now.
  const dead = options.deadRun ?? clearStaleRunLock(stateDir);
  if (dead?.runId) await killDeadRun(recovery, dead);
  recovery.pluginLocks.push(...await releasePluginLocks(stateDir, options.plugins ?? PLUGINS));
  if (!recovery.earlier?.length) delete recovery.earlier;
  if (options.keepFor && recoveredAnything(recovery)) keep(stateDir, options.keepFor, recovery);
  return recovery;
}

/** The reports of guards that stepped in, removed from stateDir (this recovery reports them). */
function takeGuardReports(stateDir: string): GuardReport[] {
  const reports: GuardReport[] = [];
  for (const name of stateEntries(stateDir, /^guard-.*\.json$/)) {
    const report = readJson<GuardReport>(join(stateDir, name));
    if (report) reports.push(report);
    try {
      unlinkSync(join(stateDir, name));
    } catch {
      // gone
    }
  }
  return reports;
}

/** The processes of a run whose agent died: killed (what the kill could not end is said so). */
async function killDeadRun(recovery: Recovery, dead: LockOwner): Promise<void> {
  recovery.deadRun = { runId: dead.runId, pid: dead.pid, since: dead.since };
  const pids = findByEnvironment("VMSNAP_RUN_ID", dead.runId);
  if (pids.length === 0) return;
  const commands = new Map(pids.map((pid) => [pid, commandOf(pid)]));
  const outcome = await killProcesses({
    find: () => findByEnvironment("VMSNAP_RUN_ID", dead.runId),
    graceMs: 1000,
  });
  // Only what is really gone counts as killed; the rest is said as it is.
  for (const pid of pids) {
    const entry = { runId: dead.runId, pid, command: commands.get(pid) ?? "?" };
    if (outcome.survivors.includes(pid)) (recovery.unkillable ??= []).push(entry);
    else recovery.killed.push(entry);
  }
}

/** Database locks that outlive their connection, released through their plugin. */
async function releasePluginLocks(
  stateDir: string,
  // deno-lint-ignore no-explicit-any
  plugins: ReadonlyMap<string, PluginDefinition<any>>,
): Promise<PluginLockRecovery[]> {
  const released: PluginLockRecovery[] = [];
  for (const name of stateEntries(stateDir, /^lock-.*\.json$/)) {
    const path = join(stateDir, name);
    const lock = readJson<LockMarker>(path);
    if (!lock || ownerAlive(lock)) continue;
    const entry: PluginLockRecovery = { plugin: lock.plugin, type: lock.type, runId: lock.runId };
    released.push(entry);
    try {
      const { config } = loadConfig(lock.configFile, { plugins: PLUGINS });
      const plugin = config.plugins.find((p) => p.name === lock.plugin && p.type === lock.type);
      const definition = plugins.get(lock.type);
      if (!plugin || !definition?.recover) {
        throw new Error(
          `plugin ${lock.plugin} is no longer in ${lock.configFile}; release the lock by hand`,
        );
      }
      entry.result = await definition.recover(plugin, lock);
      unlinkSync(path);
    } catch (error) {
      entry.error = `${
        (error as Error).message
      } (marker ${path} kept; the next vmsnap start tries again)`;
    }
  }
  return released;
}

/** Keeps a recovery's report for the next run or `recover` (best effort: stderr has it too). */
function keep(stateDir: string, by: string, recovery: Recovery): void {
  const kept: KeptRecovery = { by, at: new Date().toISOString(), recovery };
  try {
    writeFileSync(
      join(stateDir, `recovered-${Date.now()}-${process.pid}.json`),
      JSON.stringify(kept),
      { mode: 0o600, flag: "wx" },
    );
  } catch {
    // An unwritable stateDir: the caller's output is all that is left.
  }
}

/** The kept reports, oldest first, removed from stateDir (this recovery reports them). */
function takeKept(stateDir: string): KeptRecovery[] {
  const kept: KeptRecovery[] = [];
  for (const name of stateEntries(stateDir, KEPT).sort()) {
    const record = readJson<KeptRecovery>(join(stateDir, name));
    if (record?.recovery) kept.push(record);
    try {
      unlinkSync(join(stateDir, name));
    } catch {
      // gone
    }
  }
  return kept;
}

/**
 * One coded problem per thing recovered, for stderr, the run's warnings and
 * the check report: `Recovered` for the run's own leftovers (lock, frozen
 * mounts, processes, guard reports), `PluginRecovered` for a database lock.
 *
 * @example
 * ```ts
 * import { describeRecovery, recoverAll } from "./recover.ts";
 * for (const p of describeRecovery(await recoverAll("/var/lib/vmsnap"))) console.error(p.message);
 * ```
 */
export function describeRecovery(r: Recovery): Problem[] {
  const recovered = (message: string): Problem => ({ code: "Recovered", message });
  return [
    ...(r.earlier ?? []).flatMap((e) =>
      describeRecovery(e.recovery).map((p) => ({
        ...p,
        message: `${p.message} (done by ${e.by} at ${e.at}; its report was kept)`,
      }))
    ),
    ...(r.deadRun
      ? [recovered(
        `run ${r.deadRun.runId} (pid ${r.deadRun.pid}, started ${r.deadRun.since}) died without finishing; its run lock was released`,
      )]
      : []),
    ...r.thawed.map((t) =>
      recovered(
        `thawed ${t.mount}, left frozen by run ${t.runId} whose agent and guard died${
          t.wasFrozen ? "" : " (it was already thawed)"
        }${t.confirmed ? "" : `; NOT confirmed: ${t.error}`}`,
      )
    ),
    ...r.guardReports.map((g) =>
      recovered(
        `the guard of run ${g.runId} thawed ${
          g.thawed.map((t) => t.mount).join(", ")
        } after ${g.afterMs} ms (${
          g.reason === "deadline" ? "freeze.maxFrozenSeconds passed" : "its agent died"
        })`,
      )
    ),
    ...r.killed.map((k) =>
      recovered(
        `killed pid ${k.pid} (${k.command}), left running by run ${k.runId} whose agent died`,
      )
    ),
    ...(r.unkillable ?? []).map((k) =>
      recovered(
        `could NOT kill pid ${k.pid} (${k.command}), left running by run ${k.runId} whose agent died: blocked in the kernel; kill it once it can die`,
      )
    ),
    ...r.pluginLocks.map((l): Problem => ({
      code: "PluginRecovered",
      plugin: l.plugin,
      message: `plugin "${l.plugin}": run ${l.runId} died holding its lock: ${
        l.result ?? `not released: ${l.error}`
      }`,
    })),
  ];
}
