/**
 * What a previous run left behind: a freeze marker whose agent and guard
 * both died while frozen, and the reports a guard leaves when it had to step
 * in. The next run thaws what the marker lists and reports both.
 *
 * @module
 */
import { readdirSync, readFileSync, unlinkSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import process from "node:process";
import type { Freezer } from "./freeze.ts";
import { thawAndConfirm } from "./freeze.ts";
import type { GuardReport } from "./guard.ts";
import { ownerAlive, processStart } from "./lock.ts";

/** The marker written before freezing and removed after the thaw is confirmed. */
export interface FreezeMarker {
  runId: string;
  pid: number;
  started: string;
  guardPid?: number;
  mounts: string[];
  since: string;
}

/** What recovery found and did. */
export interface Recovery {
  /** Mounts of a dead run that were thawed (or found already thawed). */
  thawed: {
    runId: string;
    mount: string;
    wasFrozen: boolean;
    confirmed: boolean;
    error?: string;
  }[];
  /** What guards reported after stepping in. */
  guardReports: GuardReport[];
}

const markerPath = (stateDir: string) => join(stateDir, "frozen.json");

/**
 * Writes the freeze marker (before anything is frozen).
 *
 * @example
 * ```ts
 * import { writeFreezeMarker } from "./recover.ts";
 * writeFreezeMarker("/var/lib/vmsnap", { runId, mounts: ["/data"] });
 * ```
 */
export function writeFreezeMarker(
  stateDir: string,
  marker: { runId: string; mounts: string[]; guardPid?: number },
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

/**
 * Thaws what a dead run left frozen, and collects guard reports.
 *
 * @example
 * ```ts
 * import { recoverStale } from "./recover.ts";
 * import { createFreezer } from "./freeze.ts";
 * const recovery = recoverStale("/var/lib/vmsnap", await createFreezer());
 * ```
 */
export function recoverStale(stateDir: string, freezer: Freezer): Recovery {
  const recovery: Recovery = { thawed: [], guardReports: [] };
  let marker: FreezeMarker | undefined;
  try {
    marker = JSON.parse(readFileSync(markerPath(stateDir), "utf8"));
  } catch {
    marker = undefined;
  }
  if (marker && !ownerAlive(marker)) {
    for (const mount of [...marker.mounts].reverse()) {
      recovery.thawed.push({ runId: marker.runId, mount, ...thawAndConfirm(freezer, mount) });
    }
    clearFreezeMarker(stateDir);
  }
  let entries: string[] = [];
  try {
    entries = readdirSync(stateDir);
  } catch {
    return recovery;
  }
  for (const name of entries.filter((n) => /^guard-.*\.json$/.test(n))) {
    try {
      recovery.guardReports.push(JSON.parse(readFileSync(join(stateDir, name), "utf8")));
    } catch {
      // unreadable: drop it
    }
    try {
      unlinkSync(join(stateDir, name));
    } catch {
      // gone
    }
  }
  return recovery;
}
