/**
 * Which filesystems to freeze, and in which order. Discovery only: freezing
 * itself lives in the freeze module.
 *
 * The order matters. Freezing a filesystem flushes it; if its blocks go to a
 * loop image on a filesystem that is already frozen, the flush blocks in the
 * kernel. So dependents go first: a mount before the mount it sits under, and
 * a loop-backed filesystem before the filesystem that holds its image.
 *
 * @module
 */
import { readFileSync, realpathSync, statSync } from "node:fs";
import { basename } from "node:path";
import type { Problem } from "../errors.ts";
import type { Mount } from "../sys/mountinfo.ts";

/** Filesystem types whose superblock supports FIFREEZE. */
export const FREEZABLE_TYPES: ReadonlySet<string> = new Set([
  "ext2",
  "ext3",
  "ext4",
  "xfs",
  "btrfs",
  "jfs",
  "reiserfs",
  "f2fs",
  "nilfs2",
  "bcachefs",
]);

/** Network filesystems: never frozen (the server is another machine). */
const NETWORK_TYPES: ReadonlySet<string> = new Set([
  "nfs",
  "nfs4",
  "cifs",
  "smb3",
  "smbfs",
  "ceph",
  "glusterfs",
  "9p",
  "virtiofs",
  "lustre",
  "afs",
  "gpfs",
  "ncpfs",
  "davfs",
]);

/** A filesystem to freeze. */
export interface FreezeTarget {
  mountPoint: string;
  /** The mount's id in /proc/self/mountinfo: what the run checks its opened descriptor against. */
  mountId: number;
  /** `major:minor` of the superblock. */
  device: string;
  fsType: string;
  source: string;
}

/** A mount that will not be frozen, and why. */
export interface SkippedMount {
  mountPoint: string;
  fsType: string;
  source: string;
  reason: string;
}

/** The outcome of planning. */
export interface FreezePlan {
  /** In freezing order; thaw in reverse. */
  targets: FreezeTarget[];
  skipped: SkippedMount[];
  /** Problems with an explicit list (path `freeze.mounts[i]`). */
  problems: Problem[];
  warnings: Problem[];
}

/** What planning needs besides the mount table. */
export interface PlanOptions {
  /** `"auto"`, or mount points to freeze in the order given. */
  mounts: "auto" | string[];
  /** Mount points or globs (`*`, `?`, `**`) never frozen. */
  exclude: readonly string[];
  /**
   * For a loop device source (`/dev/loop3`), the `major:minor` and path of
   * the file that backs it. Defaults to reading `/sys/block/loopN/loop/backing_file`.
   */
  loopBacking?: (source: string) => { device?: string; file: string } | undefined;
}

/** Converts a glob to an anchored regular expression. */
function globToRegExp(glob: string): RegExp {
  let out = "";
  for (let i = 0; i < glob.length; i++) {
    const c = glob[i];
    if (c === "*" && glob[i + 1] === "*") {
      out += ".*";
      i++;
    } else if (c === "*") out += "[^/]*";
    else if (c === "?") out += "[^/]";
    else out += c.replace(/[.+^${}()|[\]\\]/g, "\\$&");
  }
  return new RegExp(`^${out}$`);
}

/** `/a/b/` → `/a/b`, keeping `/`. */
function trimSlash(path: string): string {
  return path.length > 1 ? path.replace(/\/+$/, "") || "/" : path;
}

/** True when `child` lies strictly below `parent`. */
function isBelow(child: string, parent: string): boolean {
  if (child === parent) return false;
  return parent === "/" ? child.startsWith("/") : child.startsWith(`${parent}/`);
}

/** Decodes a Linux dev_t into `major:minor`. */
function deviceOf(dev: bigint): string {
  const major = ((dev >> 8n) & 0xfffn) | ((dev >> 32n) & ~0xfffn);
  const minor = (dev & 0xffn) | ((dev >> 12n) & ~0xffn);
  return `${major}:${minor}`;
}

/**
 * The file backing a loop device, from sysfs, with the device it lives on.
 *
 * @example
 * ```ts
 * import { sysfsLoopBacking } from "./plan.ts";
 * sysfsLoopBacking("/dev/loop0"); // { file: "/srv/images/data.img", device: "8:1" } or undefined
 * ```
 */
export function sysfsLoopBacking(source: string): { device?: string; file: string } | undefined {
  if (!/^\/dev\/loop\d+$/.test(source)) return undefined;
  try {
    const file = readFileSync(`/sys/block/${basename(source)}/loop/backing_file`, "utf8").trim()
      .replace(/ \(deleted\)$/, "");
    try {
      return { file: realpathSync(file), device: deviceOf(statSync(file, { bigint: true }).dev) };
    } catch {
      return { file };
    }
  } catch {
    return undefined;
  }
}

/** Why a mount can never be frozen, or undefined when its type and source allow it. */
function unfreezable(mount: Mount): string | undefined {
  if (mount.fsType.startsWith("fuse")) {
    return "FUSE filesystem (its daemon could not flush while frozen)";
  }
  if (NETWORK_TYPES.has(mount.fsType)) return "network filesystem (the data is on another machine)";
  if (!mount.source.startsWith("/dev/")) {
    return "not backed by a block device (pseudo or virtual filesystem)";
  }
  if (!FREEZABLE_TYPES.has(mount.fsType)) {
    return `filesystem type ${mount.fsType} does not support freezing`;
  }
  return undefined;
}

/**
 * The freeze-order rule: `mustPrecede(a, b)` when `a` must be frozen before
 * `b` (a sits below b, or a's loop image lives on b).
 */
function precedence(
  loopBacking: NonNullable<PlanOptions["loopBacking"]>,
): (a: FreezeTarget, b: FreezeTarget) => boolean {
  const backingCache = new Map<string, ReturnType<NonNullable<PlanOptions["loopBacking"]>>>();
  const backing = (t: FreezeTarget) => {
    if (!backingCache.has(t.source)) backingCache.set(t.source, loopBacking(t.source));
    return backingCache.get(t.source);
  };
  const holderOf = (file: string, among: FreezeTarget[]) =>
    among.filter((t) => t.mountPoint === file || isBelow(file, t.mountPoint))
      .sort((x, y) => y.mountPoint.length - x.mountPoint.length)[0];
  return (a, b) => {
    if (isBelow(a.mountPoint, b.mountPoint)) return true;
    const image = backing(a);
    if (!image) return false;
    if (image.device !== undefined) return image.device === b.device;
    return holderOf(image.file, [b]) === b;
  };
}

/**
 * Groups targets (in freeze order) into levels that can each be frozen
 * concurrently: two targets where one must precede the other (either way
 * round: an explicit list may put them in the wrong order, and that order is
 * kept) never share a level, and the earlier one's level comes first. A
 * target goes in the level after the last level holding one it depends on.
 *
 * @example
 * ```ts
 * import { freezeLevels } from "./plan.ts";
 * const t = (mountPoint: string, device: string) =>
 *   ({ mountPoint, mountId: 1, device, fsType: "ext4", source: `/dev/${device}` });
 * freezeLevels([t("/srv/a/inner", "1"), t("/srv/a", "2"), t("/srv/b", "3")], () => undefined);
 * // [[/srv/a/inner, /srv/b], [/srv/a]]
 * ```
 */
export function freezeLevels(
  targets: readonly FreezeTarget[],
  loopBacking: NonNullable<PlanOptions["loopBacking"]> = sysfsLoopBacking,
): FreezeTarget[][] {
  const mustPrecede = precedence(loopBacking);
  const levelOf: number[] = [];
  const levels: FreezeTarget[][] = [];
  targets.forEach((target, j) => {
    let level = 0;
    for (let i = 0; i < j; i++) {
      const other = targets[i];
      if (mustPrecede(other, target) || mustPrecede(target, other)) {
        level = Math.max(level, levelOf[i] + 1);
      }
    }
    levelOf.push(level);
    (levels[level] ??= []).push(target);
  });
  return levels;
}

/**
 * Orders targets so that each is frozen before any target it depends on:
 * deeper mounts before their parents, loop filesystems before the one that
 * holds their image. Ties: deeper first, then by name, so the order is stable.
 */
function dependencyOrder(
  targets: FreezeTarget[],
  mustPrecede: (a: FreezeTarget, b: FreezeTarget) => boolean,
): FreezeTarget[] {
  const depth = (t: FreezeTarget) => t.mountPoint === "/" ? 0 : t.mountPoint.split("/").length - 1;
  const pending = [...targets].sort((a, b) =>
    depth(b) - depth(a) || a.mountPoint.localeCompare(b.mountPoint)
  );
  const ordered: FreezeTarget[] = [];
  while (pending.length > 0) {
    // The first pending target that no other pending target must precede.
    let index = pending.findIndex((t) => !pending.some((o) => o !== t && mustPrecede(o, t)));
    if (index < 0) index = 0; // a cycle cannot happen with real mounts; keep the depth order
    ordered.push(...pending.splice(index, 1));
  }
  return ordered;
}

/** The mounts left out of the plan, with why. */
class Skips {
  readonly skipped: SkippedMount[] = [];
  readonly ids = new Set<number>();

  skip(m: Mount, reason: string): void {
    this.ids.add(m.mountId);
    this.skipped.push({ mountPoint: m.mountPoint, fsType: m.fsType, source: m.source, reason });
  }
}

/** A mount as a freeze target. */
function toTarget(m: Mount): FreezeTarget {
  return {
    mountPoint: m.mountPoint,
    mountId: m.mountId,
    device: m.device,
    fsType: m.fsType,
    source: m.source,
  };
}

/** Only the last mount at a mount point is visible; earlier ones are hidden under it. */
function visibleMounts(all: readonly Mount[], skips: Skips): Mount[] {
  const visible: Mount[] = [];
  all.forEach((mount, i) => {
    if (all.slice(i + 1).some((later) => later.mountPoint === mount.mountPoint)) {
      skips.skip(mount, "hidden under a later mount at the same mount point");
    } else visible.push(mount);
  });
  return visible;
}

/** The devices that `freeze.exclude` leaves out (any mount of them matches), with the pattern. */
function excludedDevicesOf(visible: Mount[], exclude: readonly string[]): Map<string, string> {
  const excludes = exclude.map((e) => ({ text: e, re: globToRegExp(trimSlash(e)) }));
  const excludedDevices = new Map<string, string>();
  for (const mount of visible) {
    const hit = excludes.find((e) => e.re.test(mount.mountPoint));
    if (hit) excludedDevices.set(mount.device, hit.text);
  }
  return excludedDevices;
}

/**
 * `"auto"`: every visible, writable, freezable filesystem not excluded, once
 * (the mount of its root, else its shortest path), in dependency order.
 */
function autoTargets(
  visible: Mount[],
  excludedDevices: Map<string, string>,
  skips: Skips,
): FreezeTarget[] {
  const chosen = new Map<string, Mount>();
  for (const mount of visible) {
    const excluded = excludedDevices.get(mount.device);
    const reason = unfreezable(mount) ??
      (mount.mountOptions.includes("ro") || mount.superOptions.includes("ro")
        ? "mounted read-only (nothing to flush)"
        : excluded !== undefined
        ? `excluded by freeze.exclude ${JSON.stringify(excluded)}`
        : undefined);
    if (reason) {
      skips.skip(mount, reason);
      continue;
    }
    const previous = chosen.get(mount.device);
    if (!previous) {
      chosen.set(mount.device, mount);
      continue;
    }
    // One entry per filesystem: prefer the mount of its root, then the shortest path.
    const better = (mount.root === "/") !== (previous.root === "/")
      ? mount.root === "/"
      : mount.mountPoint.length < previous.mountPoint.length;
    const [keep, drop] = better ? [mount, previous] : [previous, mount];
    chosen.set(mount.device, keep);
    skips.skip(drop, `same filesystem as ${keep.mountPoint} (bind mount or duplicate)`);
  }
  return [...chosen.values()].map(toTarget);
}

/** The problem with one entry of an explicit list, or the mount it names. */
function listedMount(given: string, path: string, visible: Mount[]): Mount | Problem {
  const point = trimSlash(given);
  const mount = visible.find((m) => m.mountPoint === point);
  if (!mount) {
    const holder = visible.filter((m) => isBelow(point, m.mountPoint))
      .sort((a, b) => b.mountPoint.length - a.mountPoint.length)[0];
    const hint = holder
      ? ` It lies on the filesystem mounted at ${holder.mountPoint}; list that mount point instead.`
      : "";
    return {
      code: "FreezeMountNotFound",
      message:
        `${given} is not a mount point (not in /proc/self/mountinfo).${hint} Fix: mount it or correct freeze.mounts.`,
      path,
    };
  }
  const reason = unfreezable(mount);
  if (!reason) return mount;
  return {
    code: "FreezeNotSupported",
    message: `${given} cannot be frozen: ${reason}. Fix: remove it from freeze.mounts.`,
    path,
  };
}

/** An explicit list: frozen in the order given, after checks; each target with its list index. */
function listedTargets(
  mounts: readonly string[],
  visible: Mount[],
  excludedDevices: Map<string, string>,
  skips: Skips,
): { targets: FreezeTarget[]; listIndex: Map<FreezeTarget, number>; problems: Problem[] } {
  const targets: FreezeTarget[] = [];
  const listIndex = new Map<FreezeTarget, number>();
  const problems: Problem[] = [];
  mounts.forEach((given, i) => {
    const mount = listedMount(given, `freeze.mounts[${i}]`, visible);
    if (!("mountId" in mount)) return void problems.push(mount);
    const excluded = excludedDevices.get(mount.device);
    const same = targets.find((t) => t.device === mount.device);
    if (excluded !== undefined) {
      skips.skip(mount, `excluded by freeze.exclude ${JSON.stringify(excluded)}`);
    } else if (same) {
      skips.skip(mount, `same filesystem as ${same.mountPoint} (listed twice or a bind mount)`);
    } else {
      const target = toTarget(mount);
      listIndex.set(target, i);
      targets.push(target);
    }
  });
  for (const mount of visible) {
    if (!targets.some((t) => t.device === mount.device) && !skips.ids.has(mount.mountId)) {
      skips.skip(mount, "not in freeze.mounts");
    }
  }
  return { targets, listIndex, problems };
}

/** An explicit list that freezes a filesystem before one that depends on it: a warning each. */
function orderWarnings(
  targets: FreezeTarget[],
  listIndex: Map<FreezeTarget, number>,
  mustPrecede: (a: FreezeTarget, b: FreezeTarget) => boolean,
): Problem[] {
  const warnings: Problem[] = [];
  targets.forEach((later, j) => {
    for (const earlier of targets.slice(0, j)) {
      if (!mustPrecede(later, earlier)) continue;
      warnings.push({
        code: "FreezeOrder",
        message: `freeze.mounts freezes ${earlier.mountPoint} before ${later.mountPoint}, which ${
          isBelow(later.mountPoint, earlier.mountPoint)
            ? "is mounted below it"
            : "has its loop image on it"
        }; freezing ${later.mountPoint} then flushes into a frozen filesystem and can block in the kernel until the guard thaws. Fix: list ${later.mountPoint} first, or use "auto".`,
        path: `freeze.mounts[${listIndex.get(later)}]`,
      });
    }
  });
  return warnings;
}

/**
 * Plans the freeze from the mount table.
 *
 * @example
 * ```ts
 * import { planFreeze } from "./plan.ts";
 * import { readMounts } from "../sys/mountinfo.ts";
 * const plan = planFreeze(readMounts(), { mounts: "auto", exclude: ["/boot/**"] });
 * plan.targets.map((t) => t.mountPoint); // e.g. ["/data", "/"]
 * ```
 */
export function planFreeze(all: readonly Mount[], options: PlanOptions): FreezePlan {
  const mustPrecede = precedence(options.loopBacking ?? sysfsLoopBacking);
  const skips = new Skips();
  const visible = visibleMounts(all, skips);
  const excludedDevices = excludedDevicesOf(visible, options.exclude);
  if (options.mounts === "auto") {
    const targets = dependencyOrder(autoTargets(visible, excludedDevices, skips), mustPrecede);
    return { targets, skipped: skips.skipped, problems: [], warnings: [] };
  }
  const listed = listedTargets(options.mounts, visible, excludedDevices, skips);
  return {
    targets: listed.targets,
    skipped: skips.skipped,
    problems: listed.problems,
    warnings: orderWarnings(listed.targets, listed.listIndex, mustPrecede),
  };
}
