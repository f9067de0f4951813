/**
 * The SNAPSHOT arguments of verify, as the host sees them: what each is (a
 * block device, a raw image file, a qcow2 image, a directory where an admin
 * mounted the snapshot) and whether it is under an active mount, which
 * verify refuses: a filesystem that is changing cannot be verified, and
 * mounting a second time what is mounted read-write risks it.
 *
 * @module
 */
import { spawnSync } from "node:child_process";
import { closeSync, openSync, readdirSync, readSync, realpathSync, statSync } from "node:fs";
import { basename } from "node:path";
import { type Mount, readMounts } from "../sys/mountinfo.ts";
import { VerifyError } from "./codes.ts";
import { loopDevicesOf } from "./ledger.ts";
import { findTool } from "./tools.ts";

/** What a SNAPSHOT argument is. */
export type SourceKind = "block" | "image" | "qcow2" | "directory";

/** One SNAPSHOT argument. */
export interface SnapshotSource {
  /** As given. */
  arg: string;
  /** Its real path. */
  path: string;
  kind: SourceKind;
  /** For a directory: the mount it is on (source device and fs type). */
  mount?: Mount;
}

/** The first bytes of a file. */
function head(path: string, bytes: number): Buffer {
  const fd = openSync(path, "r");
  try {
    const buffer = Buffer.alloc(bytes);
    const n = readSync(fd, buffer, 0, bytes, 0);
    return buffer.subarray(0, n);
  } finally {
    closeSync(fd);
  }
}

/** The mount a path is on (the longest mount point above it). */
export function mountOf(path: string, mounts: Mount[] = readMounts()): Mount | undefined {
  let best: Mount | undefined;
  for (const m of mounts) {
    const prefix = m.mountPoint === "/" ? "/" : `${m.mountPoint}/`;
    if (path !== m.mountPoint && !path.startsWith(prefix)) continue;
    // A later mount on the same point hides an earlier one.
    if (!best || m.mountPoint.length >= best.mountPoint.length) best = m;
  }
  return best;
}

/** `major:minor` of a block device. */
function majorMinor(rdev: number): string {
  return `${Math.floor(rdev / 256) & 0xfff}:${(rdev & 0xff) | ((rdev >> 12) & 0xfff00)}`;
}

/** Where a block device (or one of its partitions, or a device on top) is mounted, if anywhere. */
function deviceInUse(path: string, mounts: Mount[]): string | undefined {
  const id = majorMinor(statSync(path).rdev);
  const mounted = mounts.find((m) => m.device === id);
  if (mounted) return `${path} is mounted on ${mounted.mountPoint}`;
  let sys: string;
  try {
    sys = realpathSync(`/sys/dev/block/${id}`);
  } catch {
    return undefined;
  }
  // Partitions (sda1 under sda) and holders (a device-mapper or md device on top).
  const parts = readdirSync(sys).filter((e) => e.startsWith(basename(sys)));
  for (const part of parts) {
    try {
      const partId = statSync(`/dev/${part}`).rdev;
      const m = mounts.find((x) => x.device === majorMinor(partId));
      if (m) return `its partition /dev/${part} is mounted on ${m.mountPoint}`;
    } catch {
      // no device node
    }
  }
  const holders = readdirSync(`${sys}/holders`);
  if (holders.length > 0) return `${path} is in use by ${holders.join(", ")}`;
  return undefined;
}

/** An image file attached to a loop device that is mounted or held. */
function imageInUse(path: string, mounts: Mount[]): string | undefined {
  for (const device of loopDevicesOf(path)) {
    const why = deviceInUse(device, mounts);
    if (why) return `${path} is attached to ${device}, and ${why}`;
  }
  return undefined;
}

/** A qcow2 image a running QEMU holds for writing (qemu-img cannot take its lock). */
function qcow2InUse(path: string): string | undefined {
  const qemuImg = findTool("qemu-img");
  if (!qemuImg) return undefined;
  const info = spawnSync(qemuImg, ["info", "--output=json", path], { encoding: "utf8" });
  if (info.status !== 0 && /lock/i.test(info.stderr)) {
    return `${path} is open for writing by a running VM (${info.stderr.trim().split("\n")[0]})`;
  }
  return undefined;
}

/** A directory on a read-write mount (a live filesystem, or a snapshot mounted writable). */
function directoryInUse(path: string, mount: Mount | undefined): string | undefined {
  if (!mount) return undefined;
  const ro = mount.mountOptions.includes("ro") || mount.superOptions.includes("ro");
  if (ro) return undefined;
  return `${path} is on ${mount.mountPoint} (${mount.fsType} from ${mount.source}), mounted read-write: it may be a live filesystem`;
}

/**
 * What a SNAPSHOT argument is; throws a coded error when it does not exist,
 * is of no usable kind, or is under an active mount.
 *
 * @example
 * ```ts
 * import { classifySource } from "./sources.ts";
 * const source = classifySource("/var/lib/vmsnap-test/copy.img");
 * source.kind; // "image"
 * ```
 */
export function classifySource(arg: string, mounts: Mount[] = readMounts()): SnapshotSource {
  let path: string;
  try {
    path = realpathSync(arg);
  } catch (error) {
    throw new VerifyError(
      "VerifySnapshotNotFound",
      `the snapshot ${arg} does not exist (${(error as Error).message}).`,
      { cause: error },
    );
  }
  const stat = statSync(path);
  let source: SnapshotSource;
  if (stat.isBlockDevice()) source = { arg, path, kind: "block" };
  else if (stat.isDirectory()) {
    source = { arg, path, kind: "directory", mount: mountOf(path, mounts) };
  } else if (stat.isFile()) {
    const magic = head(path, 4);
    source = { arg, path, kind: magic.toString("latin1") === "QFI\xfb" ? "qcow2" : "image" };
  } else {
    throw new VerifyError(
      "VerifySnapshotUnsupported",
      `the snapshot ${arg} is neither a block device, an image file nor a directory.`,
    );
  }
  if (source.kind === "qcow2" && !findTool("qemu-img")) {
    throw new VerifyError(
      "VerifySnapshotUnsupported",
      `${arg} is a qcow2 image and qemu-img is not installed. Fix: install qemu-utils, or convert it to raw elsewhere (qemu-img convert -O raw).`,
    );
  }
  const busy = source.kind === "block"
    ? deviceInUse(path, mounts)
    : source.kind === "image"
    ? imageInUse(path, mounts)
    : source.kind === "qcow2"
    ? imageInUse(path, mounts) ?? qcow2InUse(path)
    : directoryInUse(path, source.mount);
  if (busy) {
    throw new VerifyError(
      "VerifySnapshotInUse",
      `the snapshot ${arg} is under an active mount: ${busy}. Fix: unmount it (or detach the loop device), or mount the snapshot read-only (mount -o ro,noload DEVICE DIR) and verify that directory.`,
    );
  }
  return source;
}
