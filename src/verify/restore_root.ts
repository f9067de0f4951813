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
import { type Sandbox, shellQuote } from "./sandbox.ts";
import { VerifyError } from "./codes.ts";

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

/** A line of the build script. */
type Line = string[] | { sh: string };

/** The overlay of one filesystem; prints `metacopy` when the kernel took it. */
function overlay(lower: string, scratch: string, target: string): Line[] {
  const [upper, work] = [join(scratch, "upper"), join(scratch, "work")];
  const base = `lowerdir=${lower},upperdir=${upper},workdir=${work}`;
  const mount = (options: string) =>
    ["mount", "-t", "overlay", "-o", options, "vmsnap-verify", target].map(shellQuote).join(" ");
  return [
    ["mkdir", "-p", upper, work, target],
    // metacopy: a chown copies up metadata only (the data stays below until written).
    {
      sh: `if ${
        mount(`${base},metacopy=on,redirect_dir=on`)
      } 2>/dev/null; then echo metacopy; else ${mount(base)}; fi`,
    },
  ];
}

/** This machine's program directories, read-only, unless the snapshot has a link there. */
function hostDirs(dir: string): Line[] {
  const lines: Line[] = [];
  for (const name of HOST_DIRS) {
    const host = `/${name}`;
    if (!existsSync(host)) continue;
    const t = shellQuote(join(dir, name));
    if (lstatSync(host).isSymbolicLink()) {
      // usrmerge: /bin -> usr/bin; a snapshot with a directory there gets the host's behind it.
      const link = shellQuote(readlinkSync(host));
      const real = shellQuote(realpathSync(host));
      lines.push({
        sh:
          `if [ ! -e ${t} ] && [ ! -L ${t} ]; then ln -s ${link} ${t}; elif [ -d ${t} ] && [ ! -L ${t} ]; then mount --bind -o ro ${real} ${t}; fi`,
      });
    } else {
      lines.push({
        sh: `if [ ! -L ${t} ]; then mkdir -p ${t} && mount --bind -o ro ${
          shellQuote(host)
        } ${t}; fi`,
      });
    }
  }
  return lines;
}

/** A private /dev, /proc, /tmp and /run. */
function privateSystem(dir: string): Line[] {
  const dev = join(dir, "dev");
  const lines: Line[] = [
    ["mkdir", "-p", dev],
    ["mount", "-t", "tmpfs", "-o", "mode=0755,size=1m", "vmsnap-dev", dev],
  ];
  for (const node of DEVICES) {
    if (!existsSync(`/dev/${node}`)) continue;
    lines.push(["touch", join(dev, node)], ["mount", "--bind", `/dev/${node}`, join(dev, node)]);
  }
  lines.push(
    ["ln", "-s", "/proc/self/fd", join(dev, "fd")],
    ["mkdir", "-p", join(dev, "shm"), join(dir, "proc"), join(dir, "tmp"), join(dir, "run")],
    ["mount", "-t", "tmpfs", "-o", "mode=1777", "vmsnap-shm", join(dev, "shm")],
    ["mount", "-t", "proc", "-o", "nosuid,nodev,noexec", "proc", join(dir, "proc")],
    ["mount", "-t", "tmpfs", "-o", "mode=1777", "vmsnap-tmp", join(dir, "tmp")],
    ["mount", "-t", "tmpfs", "-o", "mode=0755", "vmsnap-run", join(dir, "run")],
    // Sticky and open to all, as /tmp: each server (its own user) makes its socket and log here.
    ["mkdir", "-p", "-m", "1777", join(dir, RUN_DIR)],
  );
  return lines;
}

/**
 * Builds the root at `dir` in one script: overlays (upper layers under
 * `scratch`) at each placement's VM path, shallowest first, then the host's
 * program directories and the private system directories.
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
  const placements = [...options.placements].sort((a, b) =>
    a.vmPath.split("/").filter(Boolean).length - b.vmPath.split("/").filter(Boolean).length
  );
  const lines: Line[] = [["mkdir", "-p", dir]];
  let overlays = 0;
  for (const [i, placement] of placements.entries()) {
    if (!placement.fs.lower) continue;
    const target = placement.vmPath === "/" ? dir : join(dir, placement.vmPath);
    lines.push(...overlay(placement.fs.lower, join(scratch, `layer${i}`), target));
    overlays++;
  }
  lines.push(...hostDirs(dir), ...privateSystem(dir));
  const ran = await sandbox.script(lines);
  if (ran.code !== 0) {
    throw new VerifyError(
      "VerifyNamespaceFailed",
      `cannot build the restore root: ${ran.stderr.trim() || `exit ${ran.code}`}.`,
    );
  }
  const metacopy = ran.stdout.split("\n").filter((l) => l === "metacopy").length === overlays;
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
