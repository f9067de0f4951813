/**
 * Parses `/proc/self/mountinfo` (proc(5)): one line per mount, with octal
 * escapes (`\040` for a space) in paths.
 *
 * @module
 */
import { readFileSync } from "node:fs";

/** One mount, as the kernel lists it. */
export interface Mount {
  mountId: number;
  parentId: number;
  /** Device of the superblock, `major:minor`. Bind mounts of one filesystem share it. */
  device: string;
  /** The directory of the filesystem that is mounted here (`/` unless a bind mount of a subdirectory). */
  root: string;
  mountPoint: string;
  mountOptions: string[];
  optionalFields: string[];
  fsType: string;
  source: string;
  superOptions: string[];
}

/** Decodes the kernel's octal escapes (`\040`, `\011`, `\012`, `\134`). */
export function unescapeMountPath(text: string): string {
  return text.replace(
    /\\([0-7]{3})/g,
    (_, digits: string) => String.fromCharCode(parseInt(digits, 8)),
  );
}

/**
 * Parses mountinfo text. Lines that do not have the documented shape are
 * skipped and returned in `bad` so that a caller can say so.
 *
 * @example
 * ```ts
 * import { parseMountinfo } from "./mountinfo.ts";
 * const { mounts } = parseMountinfo("36 35 98:0 /mnt1 /mnt/my\\040disk rw,noatime master:1 - ext3 /dev/root rw,errors=continue\n");
 * mounts[0].mountPoint; // "/mnt/my disk"
 * ```
 */
export function parseMountinfo(text: string): { mounts: Mount[]; bad: string[] } {
  const mounts: Mount[] = [];
  const bad: string[] = [];
  for (const line of text.split("\n")) {
    if (line.trim() === "") continue;
    const fields = line.split(" ");
    const separator = fields.indexOf("-", 6);
    if (fields.length < 10 || separator < 0 || fields.length < separator + 4) {
      bad.push(line);
      continue;
    }
    const [mountId, parentId, device, root, mountPoint, mountOptions] = fields;
    mounts.push({
      mountId: Number(mountId),
      parentId: Number(parentId),
      device,
      root: unescapeMountPath(root),
      mountPoint: unescapeMountPath(mountPoint),
      mountOptions: mountOptions.split(","),
      optionalFields: fields.slice(6, separator),
      fsType: fields[separator + 1],
      source: unescapeMountPath(fields[separator + 2]),
      superOptions: fields.slice(separator + 3).join(" ").split(","),
    });
  }
  return { mounts, bad };
}

/**
 * Reads and parses this process's mount table.
 *
 * @example
 * ```ts
 * import { readMounts } from "./mountinfo.ts";
 * for (const m of readMounts()) console.log(m.mountPoint, m.fsType);
 * ```
 */
export function readMounts(path = "/proc/self/mountinfo"): Mount[] {
  return parseMountinfo(readFileSync(path, "utf8")).mounts;
}
