/**
 * Loop-mounted filesystems made by a test, the only ones a test may freeze.
 * Always `cleanup()` in a `finally`: it thaws (harmless when not frozen),
 * unmounts and detaches.
 *
 * @module
 */
import { execFileSync, spawnSync } from "node:child_process";
import { mkdirSync, rmSync } from "node:fs";
import { join } from "node:path";

/** A mounted test filesystem. */
export interface LoopFs {
  image: string;
  device: string;
  mountPoint: string;
  cleanup(): void;
}

const MKFS: Record<string, (image: string) => string[]> = {
  ext4: (image) => ["mkfs.ext4", "-q", "-F", image],
  xfs: (image) => ["mkfs.xfs", "-q", "-f", image],
  btrfs: (image) => ["mkfs.btrfs", "-q", "-f", image],
};

/**
 * Makes an image file, formats it, attaches a loop device and mounts it.
 *
 * @example
 * ```ts
 * const fs = makeLoopFs({ dir, name: "data", sizeMiB: 32 });
 * try { ... } finally { fs.cleanup(); }
 * ```
 */
export function makeLoopFs(
  options: {
    dir: string;
    name: string;
    sizeMiB?: number;
    fsType?: string;
    image?: string;
    /** Where a new image file is made (default `dir`): e.g. a tmpfs, so that the loop device's flushes cost nothing. */
    imageDir?: string;
  },
): LoopFs {
  const { dir, name, sizeMiB = 32, fsType = "ext4" } = options;
  const mountPoint = join(dir, name);
  // With `image`, an existing image (a snapshot copy) is attached instead of a new one.
  const image = options.image ?? join(options.imageDir ?? dir, `${name}.img`);
  if (!options.image) {
    execFileSync("truncate", ["-s", `${sizeMiB}M`, image]);
    const [command, ...args] = MKFS[fsType](image);
    execFileSync(command, args, { stdio: "pipe" });
  }
  const device = execFileSync("losetup", ["--find", "--show", image], { encoding: "utf8" }).trim();
  mkdirSync(mountPoint, { recursive: true, mode: 0o700 });
  try {
    execFileSync("mount", [device, mountPoint], { stdio: "pipe" });
  } catch (error) {
    spawnSync("losetup", ["-d", device]);
    throw error;
  }
  return {
    image,
    device,
    mountPoint,
    cleanup() {
      spawnSync("fsfreeze", ["--unfreeze", mountPoint], { stdio: "ignore" });
      spawnSync("umount", [mountPoint], { stdio: "ignore" });
      spawnSync("losetup", ["-d", device], { stdio: "ignore" });
      rmSync(image, { force: true });
    },
  };
}
