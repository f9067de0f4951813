/**
 * The guest image cache and the per-run payload. The image is built once by
 * tests/vm/build_image.sh from the Debian archive apt uses here and cached
 * under /var/cache/vmsnap-vmtest/<key>, the key a hash of the recipe and the
 * mirror. The payload (the freshly built vmsnap, the guest scripts, the
 * config) is a small ext4 image made at every run, never cached.
 *
 * @module
 */
import { createHash } from "node:crypto";
import { execFileSync } from "node:child_process";
import {
  copyFileSync,
  existsSync,
  mkdirSync,
  readdirSync,
  readFileSync,
  writeFileSync,
} from "node:fs";
import { join } from "node:path";
import process from "node:process";

/** The cache's root (`VMSNAP_VMTEST_CACHE` overrides). */
export const CACHE_ROOT = process.env.VMSNAP_VMTEST_CACHE ?? "/var/cache/vmsnap-vmtest";

/** The cached guest. */
export interface GuestImage {
  dir: string;
  disk: string;
  kernel: string;
  initrd: string;
  /** Whether this run built it, and in how long. */
  built: boolean;
  buildMs: number;
  /** The Debian mirror it came from. */
  mirror: string;
  /** Size of the qcow2 on disk, MiB. */
  sizeMiB: number;
}

/**
 * The Debian archive and security archive apt uses on this machine, from
 * /etc/apt/sources.list and /etc/apt/sources.list.d (one-line and deb822).
 *
 * @example
 * ```ts
 * const { mirror, security } = debianMirrors();
 * ```
 */
export function debianMirrors(): { mirror: string; security: string } {
  const files = ["/etc/apt/sources.list"];
  if (existsSync("/etc/apt/sources.list.d")) {
    for (const f of readdirSync("/etc/apt/sources.list.d").sort()) {
      files.push(join("/etc/apt/sources.list.d", f));
    }
  }
  const uris: string[] = [];
  for (const file of files.filter(existsSync)) {
    const text = readFileSync(file, "utf8");
    for (const m of text.matchAll(/^deb\s+(?:\[[^\]]*\]\s+)?(\S+)\s+\S+/gm)) uris.push(m[1]);
    for (const m of text.matchAll(/^URIs:\s*(\S+)/gm)) uris.push(m[1]);
  }
  const debian = uris.filter((u) => /\/debian\/?$/.test(u));
  const security = uris.filter((u) => /\/debian-security\/?$/.test(u));
  if (debian.length === 0) {
    throw new Error(
      "no Debian archive (…/debian) in /etc/apt/sources.list*: vmtest builds its guest from the archive apt uses. Fix: configure apt with a Debian mirror.",
    );
  }
  return {
    mirror: debian[0].replace(/\/$/, ""),
    security: (security[0] ?? "http://deb.debian.org/debian-security").replace(/\/$/, ""),
  };
}

/**
 * Returns the cached guest image, building it first when the recipe or the
 * mirror changed.
 *
 * @example
 * ```ts
 * const image = ensureImage(join(ROOT, "tests", "vm", "build_image.sh"));
 * ```
 */
export function ensureImage(recipe: string): GuestImage {
  const { mirror, security } = debianMirrors();
  const key = createHash("sha256").update(readFileSync(recipe)).update(`\n${mirror}\n${security}`)
    .digest("hex").slice(0, 16);
  const dir = join(CACHE_ROOT, key);
  const disk = join(dir, "root.qcow2");
  let built = false;
  let buildMs = 0;
  if (!existsSync(disk)) {
    mkdirSync(dir, { recursive: true, mode: 0o755 });
    console.log(`vmtest: building the guest image from ${mirror} into ${dir} (once)`);
    const started = performance.now();
    execFileSync("bash", [recipe, dir, mirror, security], {
      stdio: ["ignore", "inherit", "inherit"],
    });
    buildMs = performance.now() - started;
    writeFileSync(join(dir, "build-ms"), `${Math.round(buildMs)}\n`);
    built = true;
  } else if (existsSync(join(dir, "build-ms"))) {
    buildMs = Number(readFileSync(join(dir, "build-ms"), "utf8"));
  }
  const info = JSON.parse(
    execFileSync("qemu-img", ["info", "-U", "--output=json", disk], { encoding: "utf8" }),
  );
  return {
    dir,
    disk,
    kernel: join(dir, "vmlinuz"),
    initrd: join(dir, "initrd.img"),
    built,
    buildMs,
    mirror,
    sizeMiB: Math.round(info["actual-size"] / 2 ** 20),
  };
}

/**
 * Makes the payload disk: an ext4 image holding the given files (name →
 * source path), attached read-only to the guest.
 *
 * @example
 * ```ts
 * makePayload(join(work, "payload.img"), join(work, "payload"), { vmsnap: "dist/vmsnap" });
 * ```
 */
export function makePayload(image: string, staging: string, files: Record<string, string>): void {
  mkdirSync(staging, { recursive: true, mode: 0o755 });
  let bytes = 0;
  for (const [name, source] of Object.entries(files)) {
    copyFileSync(source, join(staging, name));
    bytes += readFileSync(source).length;
  }
  execFileSync("truncate", ["-s", `${Math.ceil(bytes / 2 ** 20) + 32}M`, image]);
  execFileSync("mkfs.ext4", ["-q", "-F", "-d", staging, image], { stdio: "pipe" });
}
