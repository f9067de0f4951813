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
import { loadConfig } from "./config.ts";
import type { LockMarker } from "../plugins/plugin.ts";
import { PLUGINS } from "../plugins/registry.ts";

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
  /** Database locks a dead run left (MongoDB), and what was done about them. */
  pluginLocks?: PluginLockRecovery[];
}

/** One database lock left by a dead run. */
export interface PluginLockRecovery {
  plugin: string;
  type: string;
  runId: string;
  /** What the plugin found and did. */
  result?: string;
  /** Why it could not be released (the marker stays for the next start). */
  error?: string;
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

/**
 * Releases database locks that a dead run left (markers `lock-*.json` in
 * stateDir whose owner is gone). Each plugin's config is read again from the
 * config file the dead run used. A marker that cannot be resolved stays for
 * the next start.
 *
 * @example
 * ```ts
 * import { recoverPluginLocks } from "./recover.ts";
 * for (const r of await recoverPluginLocks("/var/lib/vmsnap")) console.log(r.plugin, r.result ?? r.error);
 * ```
 */
export async function recoverPluginLocks(stateDir: string): Promise<PluginLockRecovery[]> {
  let names: string[];
  try {
    names = readdirSync(stateDir).filter((n) => /^lock-.*\.json$/.test(n));
  } catch {
    return [];
  }
  const out: PluginLockRecovery[] = [];
  for (const name of names) {
    const path = join(stateDir, name);
    let marker: LockMarker;
    try {
      marker = JSON.parse(readFileSync(path, "utf8"));
    } catch {
      continue;
    }
    if (ownerAlive(marker)) continue;
    const entry: PluginLockRecovery = {
      plugin: marker.plugin,
      type: marker.type,
      runId: marker.runId,
    };
    out.push(entry);
    try {
      const { config } = loadConfig(marker.configFile);
      const plugin = config.plugins.find((p) => p.name === marker.plugin && p.type === marker.type);
      const definition = PLUGINS.get(marker.type);
      if (!plugin || !definition?.recover) {
        throw new Error(
          `plugin ${marker.plugin} is no longer in ${marker.configFile}; release the lock by hand`,
        );
      }
      entry.result = await definition.recover(plugin, marker);
      unlinkSync(path);
    } catch (error) {
      entry.error = `${
        (error as Error).message
      } (marker ${path} kept; the next vmsnap start tries again)`;
    }
  }
  return out;
}
