/**
 * A private world for one `vmsnap run` test: a secure directory, a loop-mounted
 * filesystem to freeze, scripts, a config that freezes only that mount, and a
 * snapshot command that copies the image. `cleanup()` thaws, unmounts and
 * removes everything; call it in a `finally`.
 *
 * @module
 */
import { existsSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { put, putConfig, secureDir } from "./helpers.ts";
import { type LoopFs, makeLoopFs } from "./loop.ts";

/** The fixture. */
export interface RunFixture {
  dir: string;
  fs: LoopFs;
  /** The mount point being frozen. */
  mp: string;
  /** Where the default snapshot command copies the image. */
  copy: string;
  /** The default snapshot command (copies the image to `copy`). */
  snap: string;
  /** Writes `#!/bin/sh` + body as a root-owned script (mode 700 unless given). */
  script(name: string, body: string, mode?: number): string;
  /** Writes a config (0600, `name` in the fixture directory) with this fixture's defaults under the given keys. */
  config(keys?: Record<string, unknown>, name?: string): string;
  /** A file in the fixture directory (not on the frozen mount). */
  path(name: string): string;
  read(name: string): string;
  exists(name: string): boolean;
  cleanup(): void;
}

/** Makes a fixture; `fsType` picks the test filesystem. */
export function runFixture(options: { fsType?: string; sizeMiB?: number } = {}): RunFixture {
  const { dir, cleanup } = secureDir("run-");
  let fs: LoopFs;
  try {
    fs = makeLoopFs({ dir, name: "data", sizeMiB: options.sizeMiB ?? 64, fsType: options.fsType });
  } catch (error) {
    cleanup();
    throw error;
  }
  const copy = join(dir, "copy.img");
  const script = (name: string, body: string, mode = 0o700) =>
    put(join(dir, name), `#!/bin/sh\n${body}\n`, mode);
  const snap = script("snap.sh", `cp --sparse=always "${fs.image}" "${copy}"`);
  return {
    dir,
    fs,
    mp: fs.mountPoint,
    copy,
    snap,
    script,
    config: (keys = {}, name = "vmsnap.json") =>
      putConfig(dir, {
        freeze: { mounts: [fs.mountPoint] },
        snapshot: { command: [snap] },
        log: { file: join(dir, "log", "vmsnap.jsonl") },
        stateDir: join(dir, "state"),
        ...keys,
      }, name),
    path: (name) => join(dir, name),
    read: (name) => readFileSync(join(dir, name), "utf8"),
    exists: (name) => existsSync(join(dir, name)),
    cleanup() {
      try {
        fs.cleanup();
      } finally {
        cleanup();
      }
    },
  };
}
