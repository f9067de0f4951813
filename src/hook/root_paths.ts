/**
 * Where `vmsnap install --root DIR` writes: a path of the target system
 * (`/etc/qemu/fsfreeze-hook.d/vmsnap`) becomes a path of this machine with
 * every symbolic link on the way resolved inside the root, as the target
 * system would resolve it (an absolute link `etc/qemu -> /etc/qemu-real`
 * leads to `DIR/etc/qemu-real`, never to this machine's `/etc`). Directories
 * are created one level at a time with the mode asked for the last one and
 * 0755 for the others, and the ones created are named, so `uninstall` can
 * remove exactly those.
 *
 * @module
 */
import { lstatSync, mkdirSync, readdirSync, rmdirSync } from "node:fs";
import { posix } from "node:path";
import { VmsnapError } from "../errors.ts";
import { resolveUnder } from "../sys/under_root.ts";

/** The longest existing directory of a target path, resolved inside the root, and the rest. */
function splitExisting(root: string, path: string): { resolved: string; rest: string[] } {
  const parts = posix.normalize(path).split("/").filter((p) => p !== "" && p !== ".");
  for (let n = parts.length; n >= 0; n--) {
    const resolved = resolveUnder(root, `/${parts.slice(0, n).join("/")}`);
    if (resolved !== undefined) return { resolved, rest: parts.slice(n) };
  }
  return { resolved: "/", rest: parts };
}

/**
 * The target path of a directory with its links resolved inside the root
 * (its missing part appended as it is).
 *
 * @example
 * ```ts
 * import { resolveDirUnder } from "./root_paths.ts";
 * resolveDirUnder("/", "/etc/qemu/fsfreeze-hook.d"); // "/etc/qemu/fsfreeze-hook.d"
 * ```
 */
export function resolveDirUnder(root: string, dir: string): string {
  const { resolved, rest } = splitExisting(root, dir);
  refuseDanglingLink(root, resolved, rest);
  return posix.join(resolved, ...rest);
}

/** A missing component that is a link (to nowhere) is not written through. */
function refuseDanglingLink(root: string, resolved: string, rest: string[]): void {
  if (rest.length === 0) return;
  const next = posix.join(root, resolved, rest[0]);
  let link = false;
  try {
    link = lstatSync(next).isSymbolicLink();
  } catch {
    return;
  }
  if (link) {
    throw new VmsnapError(
      "InstallFailed",
      `${next} is a symbolic link to something that does not exist; vmsnap install does not write through it. Fix: remove the link or create what it points to, then run vmsnap install again.`,
    );
  }
}

/**
 * The path of this machine where a file of the target system is written:
 * its directory resolved inside the root, its own name as it is (a link at
 * that name is the caller's to refuse).
 *
 * @example
 * ```ts
 * import { hostPathUnder } from "./root_paths.ts";
 * hostPathUnder("/tmp/image", "/etc/qemu/fsfreeze-hook.d/vmsnap");
 * ```
 */
export function hostPathUnder(root: string, path: string): string {
  return posix.join(root, resolveDirUnder(root, posix.dirname(path)), posix.basename(path));
}

/**
 * Creates a directory of the target system and its missing parents: the
 * directory itself with `mode`, the parents 0755 (the usual mode of /var,
 * /etc/...). Returns the directories created (target paths, links
 * resolved), parents first; nothing when `dryRun`.
 *
 * @example
 * ```ts
 * import { makeDirUnder } from "./root_paths.ts";
 * makeDirUnder({ root: "/tmp/image", dir: "/etc/google/snapshots", mode: 0o700, dryRun: true });
 * ```
 */
export function makeDirUnder(
  options: { root: string; dir: string; mode: number; dryRun: boolean },
): string[] {
  const { root, dir, mode, dryRun } = options;
  const { resolved, rest } = splitExisting(root, dir);
  refuseDanglingLink(root, resolved, rest);
  const created: string[] = [];
  let at = resolved;
  rest.forEach((part, i) => {
    at = posix.join(at, part);
    created.push(at);
    if (!dryRun) mkdirSync(posix.join(root, at), { mode: i === rest.length - 1 ? mode : 0o755 });
  });
  return created;
}

/**
 * Removes directories that install created, deepest first, each only when
 * it is empty (whatever someone put there since stays, and so does the
 * directory holding it). Returns the ones removed.
 *
 * @example
 * ```ts
 * import { removeDirsUnder } from "./root_paths.ts";
 * removeDirsUnder({ root: "/tmp/image", dirs: ["/etc/google", "/etc/google/snapshots"], dryRun: true });
 * ```
 */
export function removeDirsUnder(
  options: { root: string; dirs: string[]; dryRun: boolean; gone?: string[] },
): string[] {
  // What this uninstall removes (or, in a dry run, would): a directory holding only that is empty.
  const gone = new Set(
    (options.gone ?? []).map((p) =>
      posix.join(resolveDirUnder(options.root, posix.dirname(p)), posix.basename(p))
    ),
  );
  const removed: string[] = [];
  // Reverse order of names: a directory comes after everything under it.
  const deepestFirst = [...new Set(options.dirs)].sort().reverse();
  for (const dir of deepestFirst) {
    const host = posix.join(options.root, resolveDirUnder(options.root, dir));
    let entries: string[];
    try {
      if (!lstatSync(host).isDirectory()) continue;
      entries = readdirSync(host);
    } catch {
      continue;
    }
    if (entries.some((e) => !gone.has(posix.join(dir, e)))) continue;
    if (!options.dryRun) {
      try {
        rmdirSync(host);
      } catch {
        continue;
      }
    }
    removed.push(dir);
    gone.add(dir);
  }
  return removed;
}
