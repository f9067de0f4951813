/**
 * The root directory the restored servers run in (chroot), inside the
 * sandbox: each snapshot filesystem under an overlay whose upper layer is
 * scratch space, at the mount point the manifest recorded for it (so that
 * the data directory, an absolute symbolic link such as PostgreSQL's
 * `pg_wal`, or a tablespace resolve as on the VM), and this machine's
 * programs bound read-only (`/usr`, `/etc`, …), a private `/dev`, `/proc`,
 * `/tmp` and `/run`. Nothing in it reaches the host's files: whatever a
 * server writes lands in the scratch space and goes with the sandbox.
 *
 * @module
 */
import { existsSync, lstatSync, readlinkSync, realpathSync } from "node:fs";
import { join } from "node:path";
import type { SnapshotFs } from "./filesystems.ts";
import type { Sandbox } from "./sandbox.ts";

/** Host directories the root gets read-only (the servers' programs and libraries). */
export const HOST_DIRS = ["usr", "bin", "sbin", "lib", "lib32", "lib64", "libx32", "etc", "opt"];

/** Device nodes the root's /dev gets. */
const DEVICES = ["null", "zero", "full", "random", "urandom", "tty"];

/** Where verify keeps the servers' sockets, logs and configs, inside the root. */
export const RUN_DIR = "/run/vmsnap-verify";

/** One filesystem placed in the root. */
export interface Placement {
  fs: SnapshotFs;
  /** Its mount point on the VM (from the manifest), or `/snapshots/<n>`. */
  vmPath: string;
}

/** The root, built. */
export interface RestoreRoot {
  /** Its directory inside the sandbox. */
  dir: string;
  placements: Placement[];
  /** Whether overlays were mounted with metacopy (a chown copies no data). */
  metacopy: boolean;
}

/** Runs a command in the sandbox and throws with its output when it fails. */
async function must(sandbox: Sandbox, argv: string[]): Promise<void> {
  const ran = await sandbox.run(argv, { timeoutMs: 60_000 });
  if (ran.code !== 0) {
    throw new Error(`${argv.join(" ")} failed: ${ran.stderr.trim() || `exit ${ran.code}`}`);
  }
}

/** Mounts one overlay; true when metacopy was accepted. */
async function overlay(
  sandbox: Sandbox,
  lower: string,
  scratch: string,
  target: string,
): Promise<boolean> {
  const upper = join(scratch, "upper");
  const work = join(scratch, "work");
  await must(sandbox, ["mkdir", "-p", upper, work, target]);
  const base = `lowerdir=${lower},upperdir=${upper},workdir=${work}`;
  const withMeta = await sandbox.run([
    "mount",
    "-t",
    "overlay",
    "-o",
    `${base},metacopy=on,redirect_dir=on`,
    "vmsnap-verify",
    target,
  ]);
  if (withMeta.code === 0) return true;
  await must(sandbox, ["mount", "-t", "overlay", "-o", base, "vmsnap-verify", target]);
  return false;
}

/** Binds this machine's program directories read-only into the root. */
async function bindHost(sandbox: Sandbox, dir: string): Promise<void> {
  for (const name of HOST_DIRS) {
    const host = `/${name}`;
    if (!existsSync(host)) continue;
    const target = join(dir, name);
    const inRoot = sandbox.path(target);
    if (lstatSync(host).isSymbolicLink()) {
      // usrmerge: /bin -> usr/bin. The root gets the same link unless the snapshot has a directory there.
      if (!existsSync(inRoot)) {
        await must(sandbox, ["ln", "-sfn", readlinkSync(host), target]);
        continue;
      }
      if (lstatSync(inRoot).isSymbolicLink()) continue;
      await must(sandbox, ["mount", "--bind", "-o", "ro", realpathSync(host), target]);
      continue;
    }
    if (existsSync(inRoot) && lstatSync(inRoot).isSymbolicLink()) continue;
    await must(sandbox, ["mkdir", "-p", target]);
    await must(sandbox, ["mount", "--bind", "-o", "ro", host, target]);
  }
}

/** A private /dev, /proc, /tmp and /run. */
async function privateSystem(sandbox: Sandbox, dir: string): Promise<void> {
  const dev = join(dir, "dev");
  await must(sandbox, ["mkdir", "-p", dev]);
  await must(sandbox, ["mount", "-t", "tmpfs", "-o", "mode=0755,size=1m", "vmsnap-dev", dev]);
  for (const node of DEVICES) {
    if (!existsSync(`/dev/${node}`)) continue;
    await must(sandbox, ["touch", join(dev, node)]);
    await must(sandbox, ["mount", "--bind", `/dev/${node}`, join(dev, node)]);
  }
  await must(sandbox, ["ln", "-s", "/proc/self/fd", join(dev, "fd")]);
  await must(sandbox, ["mkdir", "-p", join(dev, "shm")]);
  await must(sandbox, ["mount", "-t", "tmpfs", "-o", "mode=1777", "vmsnap-shm", join(dev, "shm")]);
  await must(sandbox, ["mkdir", "-p", join(dir, "proc"), join(dir, "tmp"), join(dir, "run")]);
  await must(sandbox, [
    "mount",
    "-t",
    "proc",
    "-o",
    "nosuid,nodev,noexec",
    "proc",
    join(dir, "proc"),
  ]);
  await must(sandbox, ["mount", "-t", "tmpfs", "-o", "mode=1777", "vmsnap-tmp", join(dir, "tmp")]);
  await must(sandbox, ["mount", "-t", "tmpfs", "-o", "mode=0755", "vmsnap-run", join(dir, "run")]);
  // Sticky and open to all, as /tmp: each server (its own user) makes its socket and log here.
  await must(sandbox, ["mkdir", "-p", "-m", "1777", join(dir, RUN_DIR)]);
}

/**
 * Builds the root at `dir`: overlays (upper layers under `scratch`) at each
 * placement's VM path, shallowest first, then the host's program
 * directories and the private system directories.
 *
 * @example
 * ```ts
 * import { buildRestoreRoot } from "./restore_root.ts";
 * import type { Sandbox } from "./sandbox.ts";
 * declare const sandbox: Sandbox;
 * const root = await buildRestoreRoot(sandbox, { dir: "/w/root", scratch: "/w/scratch", placements: [] });
 * ```
 */
export async function buildRestoreRoot(
  sandbox: Sandbox,
  options: { dir: string; scratch: string; placements: Placement[] },
): Promise<RestoreRoot> {
  const { dir, scratch } = options;
  await must(sandbox, ["mkdir", "-p", dir]);
  const placements = [...options.placements].sort((a, b) =>
    a.vmPath.split("/").filter(Boolean).length - b.vmPath.split("/").filter(Boolean).length
  );
  let metacopy = true;
  for (const [i, placement] of placements.entries()) {
    if (!placement.fs.lower) continue;
    const target = placement.vmPath === "/" ? dir : join(dir, placement.vmPath);
    metacopy = await overlay(sandbox, placement.fs.lower, join(scratch, `layer${i}`), target) &&
      metacopy;
  }
  await bindHost(sandbox, dir);
  await privateSystem(sandbox, dir);
  return { dir, placements, metacopy };
}

/**
 * The placement a VM path lies in (the deepest), and the path relative to
 * its mount point.
 *
 * @example
 * ```ts
 * import { placementOf } from "./restore_root.ts";
 * placementOf([], "/var/lib/mysql"); // undefined
 * ```
 */
export function placementOf(
  placements: Placement[],
  vmPath: string,
): { placement: Placement; relative: string } | undefined {
  let best: Placement | undefined;
  for (const p of placements) {
    if (!p.fs.lower) continue;
    const prefix = p.vmPath === "/" ? "/" : `${p.vmPath}/`;
    if (vmPath !== p.vmPath && !vmPath.startsWith(prefix)) continue;
    if (!best || p.vmPath.length > best.vmPath.length) best = p;
  }
  if (!best) return undefined;
  return {
    placement: best,
    relative: vmPath.slice(best.vmPath === "/" ? 1 : best.vmPath.length + 1),
  };
}
