/**
 * The distribution fixtures (tests/fixtures/distros/<distro>/root, sources in
 * its README.md) copied into a fresh directory, so a test may change them:
 * symbolic links are kept as they are (absolute targets name the target
 * system's paths), and the empty directories the packages create (listed in
 * `dirs`, which git cannot hold) are made.
 *
 * @module
 */
import { cpSync, existsSync, mkdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { ROOT, secureDir } from "./helpers.ts";

/** The distributions with a fixture. */
export const DISTROS = [
  "debian12",
  "rhel8",
  "rhel9",
  "fedora",
  "suse",
  "al2023",
  "alpine",
] as const;
/** A distribution with a fixture. */
export type Distro = typeof DISTROS[number];

/** Copies a distribution's root tree into `dir` (which may hold other files already). */
export function layDistro(distro: Distro, dir: string): string {
  const fixture = join(ROOT, "tests", "fixtures", "distros", distro);
  cpSync(join(fixture, "root"), dir, { recursive: true, verbatimSymlinks: true });
  const dirs = join(fixture, "dirs");
  const listed = existsSync(dirs) ? readFileSync(dirs, "utf8").split("\n") : [];
  for (const path of listed.filter((line) => line.trim() !== "")) {
    mkdirSync(join(dir, path), { recursive: true, mode: 0o755 });
  }
  return dir;
}

/** A copy of a distribution's root tree; `cleanup` removes it. */
export function distroRoot(distro: Distro): { root: string; cleanup(): void } {
  const { dir, cleanup } = secureDir(`${distro}-`);
  return { root: layDistro(distro, dir), cleanup };
}
