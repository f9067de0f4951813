/**
 * Where manifests live and how verify finds the one for a snapshot:
 *
 * 1. on the snapshot itself: {@linkcode ON_SNAPSHOT_MANIFEST} under the root
 *    of each filesystem (written before FIFREEZE); when `<stateDir>/manifests`
 *    holds the final manifest of the same run, that one is used (it knows
 *    whether a lock was lost before resume);
 * 2. else `<stateDir>/manifests/<runId>.json` by filesystem UUID: the most
 *    recent run that names one of the snapshot's UUIDs and started before the
 *    snapshot;
 * 3. else the file given with `--manifest`.
 *
 * @module
 */
import { spawnSync } from "node:child_process";
import {
  closeSync,
  fsyncSync,
  mkdirSync,
  openSync,
  readdirSync,
  readFileSync,
  renameSync,
  unlinkSync,
  writeSync,
} from "node:fs";
import { join } from "node:path";
import { readMounts } from "../sys/mountinfo.ts";
import process from "node:process";
import type { BuildDeps, Manifest } from "./manifest.ts";
import { parseManifest, readManifestFile } from "./manifest_read.ts";
import { VerifyError } from "./codes.ts";
import { findTool } from "./tools.ts";

/** The manifest's path on each filesystem, relative to its root (configurable). */
export const ON_SNAPSHOT_MANIFEST = ".vmsnap/manifest.json";

/** The most manifests a lookup reads from stateDir (newest first). */
export const MAX_MANIFESTS_SCANNED = 1000;

/**
 * The directory of stored manifests.
 *
 * @example
 * ```ts
 * import { manifestsDir } from "./manifest_store.ts";
 * manifestsDir("/var/lib/vmsnap"); // "/var/lib/vmsnap/manifests"
 * ```
 */
export function manifestsDir(stateDir: string): string {
  return join(stateDir, "manifests");
}

/**
 * Stores a manifest as `<stateDir>/manifests/<runId>.json` (0600, written
 * whole then renamed); returns its path.
 *
 * @example
 * ```ts
 * import { saveManifest } from "./manifest_store.ts";
 * import type { Manifest } from "./manifest.ts";
 * declare const manifest: Manifest;
 * saveManifest("/var/lib/vmsnap", manifest);
 * ```
 */
export function saveManifest(stateDir: string, manifest: Manifest): string {
  const dir = manifestsDir(stateDir);
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  if (!/^[\w.-]+$/.test(manifest.runId)) {
    throw new VerifyError("VerifyManifestInvalid", `run id ${manifest.runId} cannot name a file.`);
  }
  const path = join(dir, `${manifest.runId}.json`);
  const fresh = `${path}.new-${process.pid}`;
  const fd = openSync(fresh, "w", 0o600);
  try {
    writeSync(fd, `${JSON.stringify(manifest, null, 2)}\n`);
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
  try {
    renameSync(fresh, path);
  } catch (error) {
    unlinkSync(fresh);
    throw error;
  }
  return path;
}

/** A manifest with where it was found. */
export interface FoundManifest {
  manifest: Manifest;
  source: "snapshot" | "stateDir" | "option";
  path: string;
}

/**
 * The most recent stored manifest that names one of `uuids` and started no
 * later than `before` (ms since the epoch); unreadable files are skipped.
 *
 * @example
 * ```ts
 * import { findStoredManifest } from "./manifest_store.ts";
 * findStoredManifest("/var/lib/vmsnap", ["0b1c…"], Date.now())?.manifest.runId;
 * ```
 */
export function findStoredManifest(
  stateDir: string,
  uuids: string[],
  before: number,
): FoundManifest | undefined {
  let names: string[];
  try {
    names = readdirSync(manifestsDir(stateDir)).filter((n) => n.endsWith(".json"));
  } catch {
    return undefined;
  }
  // Run ids start with their UTC time: the name order is the time order.
  names.sort().reverse();
  for (const name of names.slice(0, MAX_MANIFESTS_SCANNED)) {
    const path = join(manifestsDir(stateDir), name);
    let manifest: Manifest;
    try {
      manifest = readManifestFile(path);
    } catch {
      continue;
    }
    if (Date.parse(manifest.startedAt) > before) continue;
    if (manifest.filesystems.some((f) => f.uuid !== undefined && uuids.includes(f.uuid))) {
      return { manifest, source: "stateDir", path };
    }
  }
  return undefined;
}

/** The stored final manifest of a run, if there is one. */
function storedFinal(stateDir: string, runId: string): FoundManifest | undefined {
  if (!/^[\w.-]+$/.test(runId)) return undefined;
  const path = join(manifestsDir(stateDir), `${runId}.json`);
  try {
    const manifest = readManifestFile(path);
    return manifest.stage === "final" ? { manifest, source: "stateDir", path } : undefined;
  } catch {
    return undefined;
  }
}

/** What the lookup looks at. */
export interface ManifestLookup {
  /** Manifests read from the snapshot's filesystems (path as shown to the admin, text). */
  onSnapshot: { path: string; text: string }[];
  stateDir: string;
  /** The UUIDs of the snapshot's filesystems. */
  uuids: string[];
  /** The latest moment the snapshot can be from (ms since the epoch). */
  before: number;
  /** `--manifest FILE`. */
  explicit?: string;
}

/**
 * The manifest for a snapshot, in the lookup order of this module, or
 * undefined when there is none. A manifest on the snapshot that fails
 * validation is an error (it belongs to this snapshot); so is an
 * unreadable `--manifest`.
 *
 * @example
 * ```ts
 * import { chooseManifest } from "./manifest_store.ts";
 * chooseManifest({ onSnapshot: [], stateDir: "/var/lib/vmsnap", uuids: [], before: Date.now() });
 * ```
 */
export function chooseManifest(lookup: ManifestLookup): FoundManifest | undefined {
  const carried = lookup.onSnapshot.map(({ path, text }) => ({
    manifest: parseManifest(text, path),
    path,
  }));
  if (carried.length > 0) {
    // Several filesystems of one snapshot carry the same run's manifest; the newest run wins.
    carried.sort((a, b) => b.manifest.runId.localeCompare(a.manifest.runId));
    const { manifest, path } = carried[0];
    return storedFinal(lookup.stateDir, manifest.runId) ?? { manifest, source: "snapshot", path };
  }
  const stored = findStoredManifest(lookup.stateDir, lookup.uuids, lookup.before);
  if (stored) return stored;
  if (lookup.explicit) {
    return {
      manifest: readManifestFile(lookup.explicit),
      source: "option",
      path: lookup.explicit,
    };
  }
  return undefined;
}

/**
 * A block device's path from a path or the `major:minor` the result records
 * (sysfs names it), or undefined.
 *
 * @example
 * ```ts
 * import { devicePath } from "./manifest_store.ts";
 * devicePath("7:3"); // "/dev/loop3"
 * ```
 */
export function devicePath(device: string): string | undefined {
  if (device.startsWith("/dev/")) return device;
  if (!/^\d+:\d+$/.test(device)) return undefined;
  try {
    const name = /^DEVNAME=(.+)$/m.exec(readFileSync(`/sys/dev/block/${device}/uevent`, "utf8"))
      ?.[1];
    return name ? `/dev/${name}` : undefined;
  } catch {
    return undefined;
  }
}

/**
 * What building a manifest needs, from this machine: UUIDs by `blkid`, files
 * read whole (a backup_label).
 *
 * @example
 * ```ts
 * import { buildManifest } from "./manifest.ts";
 * import { machineBuildDeps } from "./manifest_store.ts";
 * import type { RunResult } from "../protocol.ts";
 * declare const result: RunResult;
 * buildManifest(result, machineBuildDeps());
 * ```
 */
export function machineBuildDeps(): BuildDeps {
  const blkid = findTool("blkid");
  return {
    uuidOf({ device, mountPoint }) {
      // btrfs shows an anonymous device number (0:NN): its mount's source names the device.
      const path = devicePath(device) ??
        devicePath(readMounts().find((m) => m.mountPoint === mountPoint)?.source ?? "");
      if (!blkid || !path) return undefined;
      const out = spawnSync(blkid, ["-o", "value", "-s", "UUID", path], { encoding: "utf8" });
      return out.status === 0 && out.stdout.trim() ? out.stdout.trim() : undefined;
    },
    readText(path) {
      try {
        return readFileSync(path, "utf8");
      } catch {
        return undefined;
      }
    },
  };
}
