/**
 * The snapshot's filesystems inside the sandbox: found (blkid, partx for a
 * partition table), mounted read-only without journal replay (ext4
 * `ro,noload`, xfs `ro,norecovery,nouuid`, btrfs `ro,rescue=nologreplay`),
 * loop devices read-only, and looked at: whether the journal needed no
 * recovery (a filesystem frozen for the snapshot leaves none) and whether
 * the filesystem recorded errors.
 *
 * @module
 */
import { readFileSync } from "node:fs";
import { join } from "node:path";
import type { Evidence } from "./verdict.ts";
import type { Sandbox } from "./sandbox.ts";
import type { SnapshotSource } from "./sources.ts";

/** One filesystem of a snapshot. */
export interface SnapshotFs {
  source: SnapshotSource;
  /** 1-based partition number, when the snapshot has a partition table. */
  partition?: number;
  fsType?: string;
  uuid?: string;
  label?: string;
  /** Where it is mounted read-only inside the sandbox. */
  lower?: string;
  /** Why it is not a filesystem verify can mount (LVM, swap, encrypted). */
  skipped?: string;
  evidence: Evidence[];
}

/** Mount options that never replay a journal, per filesystem type. */
const NO_REPLAY: Record<string, string> = {
  ext2: "ro",
  ext3: "ro,noload",
  ext4: "ro,noload",
  xfs: "ro,norecovery,nouuid",
  btrfs: "ro,rescue=nologreplay",
};

/** Types that hold no mountable filesystem. */
const NOT_MOUNTABLE = /^(swap|LVM2_member|crypto_LUKS|linux_raid_member|zfs_member|BitLocker)$/;

/** `KEY=value` lines (blkid -o export). */
function exported(text: string): Record<string, string> {
  return Object.fromEntries(
    text.split("\n").filter((l) => l.includes("=")).map((l) => [
      l.slice(0, l.indexOf("=")),
      l.slice(l.indexOf("=") + 1),
    ]),
  );
}

/** A region of an image or device. */
interface Region {
  partition?: number;
  offset: number;
  size?: number;
  probe: Record<string, string>;
}

/** The regions of a device or image that hold something: the whole, or each partition. */
async function regions(sandbox: Sandbox, path: string): Promise<Region[]> {
  const whole = await sandbox.run(["blkid", "-p", "-o", "export", path]);
  const probe = exported(whole.stdout);
  if (!probe.PTTYPE) return [{ offset: 0, probe }];
  const table = await sandbox.run(["partx", "-g", "-r", "-b", "-o", "NR,START,SIZE", path]);
  const found: Region[] = [];
  for (const line of table.stdout.trim().split("\n").filter(Boolean)) {
    const [nr, start, size] = line.trim().split(/\s+/).map(Number);
    const offset = start * 512;
    const part = await sandbox.run([
      "blkid",
      "-p",
      "-O",
      String(offset),
      "-S",
      String(size),
      "-o",
      "export",
      path,
    ]);
    found.push({ partition: nr, offset, size, probe: exported(part.stdout) });
  }
  return found;
}

/** Mounts one region read-only at `target`; returns the evidence. */
async function mountRegion(
  sandbox: Sandbox,
  source: SnapshotSource,
  path: string,
  region: Region,
  target: string,
): Promise<Evidence> {
  const type = region.probe.TYPE;
  const options = [NO_REPLAY[type] ?? "ro"];
  const loop = source.kind !== "block" || region.partition !== undefined;
  if (loop) {
    options.unshift("loop");
    if (region.offset) options.push(`offset=${region.offset}`);
    if (region.size) options.push(`sizelimit=${region.size}`);
  }
  await sandbox.run(["mkdir", "-p", target]);
  const ran = await sandbox.run(["mount", "-t", type, "-o", options.join(","), path, target]);
  return {
    kind: "start",
    name: "mounts read-only without journal replay",
    ok: ran.code === 0,
    detail: ran.code === 0
      ? `mount -t ${type} -o ${options.join(",")}`
      : `mount -t ${type} -o ${options.join(",")} failed: ${
        ran.stderr.trim() || `exit ${ran.code}`
      }`,
  };
}

/** The block device a mount point inside the sandbox is mounted from. */
function deviceAt(sandbox: Sandbox, mountPoint: string): string | undefined {
  const text = readFileSync(`/proc/${sandbox.initPid}/mountinfo`, "utf8");
  for (const line of text.split("\n")) {
    const [left, right] = line.split(" - ");
    if (left?.split(" ")[4] === mountPoint) return right.split(" ")[1];
  }
  return undefined;
}

/** ext2/3/4: journal recovery pending, errors recorded (dumpe2fs -h, read-only). */
async function extEvidence(sandbox: Sandbox, device: string): Promise<Evidence[]> {
  const ran = await sandbox.run(["dumpe2fs", "-h", device]);
  if (ran.code !== 0) {
    return [{ kind: "info", name: "superblock", ok: false, detail: ran.stderr.trim() }];
  }
  const features = /^Filesystem features:\s*(.*)$/m.exec(ran.stdout)?.[1] ?? "";
  const state = /^Filesystem state:\s*(.*)$/m.exec(ran.stdout)?.[1]?.trim() ?? "unknown";
  const hasJournal = /\bhas_journal\b/.test(features);
  const pending = /\bneeds_recovery\b/.test(features);
  const out: Evidence[] = [{
    kind: "check",
    name: "the filesystem recorded no errors",
    ok: !/error/i.test(state),
    detail: `state: ${state}`,
  }];
  if (hasJournal) {
    out.push({
      kind: "position",
      name: "the journal needs no recovery (frozen at the snapshot)",
      ok: !pending,
      detail: pending
        ? "needs_recovery is set: the snapshot was taken while the filesystem was being written (not frozen)"
        : "no needs_recovery: the journal was flushed (a freeze, or a clean unmount)",
    });
  }
  return out;
}

/** btrfs: a log tree (fsync log) left to replay. */
async function btrfsEvidence(sandbox: Sandbox, device: string): Promise<Evidence[]> {
  const ran = await sandbox.run(["btrfs", "inspect-internal", "dump-super", device]);
  const logRoot = /^log_root\s+(\d+)/m.exec(ran.stdout)?.[1];
  if (ran.code !== 0 || logRoot === undefined) {
    return [{ kind: "info", name: "superblock", ok: false, detail: ran.stderr.trim() }];
  }
  return [{
    kind: "position",
    name: "no log tree to replay (frozen at the snapshot)",
    ok: logRoot === "0",
    detail: logRoot === "0"
      ? "log_root 0"
      : `log_root ${logRoot}: fsyncs after the last commit were not replayed`,
  }];
}

/** What the filesystem's own metadata says about how the snapshot was taken. */
async function cleanliness(sandbox: Sandbox, fs: SnapshotFs): Promise<Evidence[]> {
  if (fs.source.kind === "directory") {
    return [{
      kind: "info",
      name: "journal state",
      ok: true,
      detail: "not looked at: the snapshot was mounted by the admin",
    }];
  }
  const device = fs.lower ? deviceAt(sandbox, fs.lower) : undefined;
  if (!device) return [];
  if (/^ext[234]$/.test(fs.fsType ?? "")) return await extEvidence(sandbox, device);
  if (fs.fsType === "btrfs") return await btrfsEvidence(sandbox, device);
  return [{
    kind: "info",
    name: "journal state",
    ok: true,
    detail: `${fs.fsType}: its log does not tell a frozen snapshot from a crash copy`,
  }];
}

/**
 * Finds and mounts the filesystems of one snapshot (an image or device path
 * as the sandbox sees it: a qcow2 image is converted first), under
 * `<lowerDir>/<n>`; `next` numbers them across snapshots.
 *
 * @example
 * ```ts
 * import { mountSnapshot } from "./filesystems.ts";
 * import type { Sandbox } from "./sandbox.ts";
 * import type { SnapshotSource } from "./sources.ts";
 * declare const sandbox: Sandbox;
 * declare const source: SnapshotSource;
 * let n = 0;
 * const filesystems = await mountSnapshot(sandbox, source, source.path, "/run/w/lower", () => n++);
 * ```
 */
export async function mountSnapshot(
  sandbox: Sandbox,
  source: SnapshotSource,
  path: string,
  lowerDir: string,
  next: () => number,
): Promise<SnapshotFs[]> {
  if (source.kind === "directory") {
    const target = join(lowerDir, String(next()));
    await sandbox.run(["mkdir", "-p", target]);
    const ran = await sandbox.run(["mount", "--bind", "-o", "ro", path, target]);
    const fs: SnapshotFs = {
      source,
      fsType: source.mount?.fsType,
      lower: ran.code === 0 ? target : undefined,
      evidence: [{
        kind: "start",
        name: "the directory is readable (bound read-only)",
        ok: ran.code === 0,
        detail: ran.code === 0 ? `on ${source.mount?.source ?? "?"}` : ran.stderr.trim(),
      }],
    };
    fs.evidence.push(...await cleanliness(sandbox, fs));
    return [fs];
  }
  const out: SnapshotFs[] = [];
  for (const region of await regions(sandbox, path)) {
    const fs: SnapshotFs = {
      source,
      partition: region.partition,
      fsType: region.probe.TYPE,
      uuid: region.probe.UUID,
      label: region.probe.LABEL,
      evidence: [],
    };
    out.push(fs);
    if (!fs.fsType && region.partition === undefined) {
      fs.evidence.push({
        kind: "start",
        name: "holds a filesystem",
        ok: false,
        detail:
          "no filesystem signature (blkid): not a filesystem image, or its superblock is damaged",
      });
      continue;
    }
    if (!fs.fsType || NOT_MOUNTABLE.test(fs.fsType)) {
      fs.skipped = fs.fsType
        ? `${fs.fsType}: not a filesystem verify can mount`
        : "an empty partition";
      continue;
    }
    const target = join(lowerDir, String(next()));
    const mounted = await mountRegion(sandbox, source, path, region, target);
    fs.evidence.push(mounted);
    if (!mounted.ok) continue;
    fs.lower = target;
    fs.evidence.push(...await cleanliness(sandbox, fs));
  }
  return out;
}
