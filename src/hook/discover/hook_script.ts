/**
 * The hook directory an fsfreeze-hook script runs, read from the script
 * itself. qemu's script sets `FSFREEZE_D=$(dirname -- "$0")/fsfreeze-hook.d`
 * (the directory beside the path qemu-ga called, links not resolved) or, in
 * current qemu, `$(dirname -- "$(realpath $0)")/fsfreeze-hook.d` (beside
 * the script's real path); a vendor or admin script may name a directory
 * outright (`HOOK_DIR=/etc/...`).
 *
 * @module
 */
import { posix } from "node:path";
import { kindUnder, readUnder, resolveUnder } from "../../sys/under_root.ts";

/** What the script says about its hook directory. */
export interface HookDir {
  /** The directory, when the script names one that can be read. */
  path?: string;
  /** How it was found, or why not. */
  detail: string;
  exists: boolean;
}

/** An assignment of a directory variable: `FSFREEZE_D=...`, `HOOK_DIR=...`, or any `X=...fsfreeze-hook.d`. */
function dirAssignment(text: string): { name: string; value: string } | undefined {
  for (const line of text.split("\n")) {
    const m = line.match(/^\s*([A-Za-z_][A-Za-z0-9_]*)=(.*)$/);
    if (!m) continue;
    const value = m[2].trim().replace(/^"(.*)"$/, "$1");
    if (m[1] === "FSFREEZE_D" || m[1] === "HOOK_DIR" || /fsfreeze-hook\.d/.test(value)) {
      return { name: m[1], value };
    }
  }
  return undefined;
}

/** The directory a `$(dirname ...)`-style value names, for a script called as `script`. */
function evaluate(root: string, script: string, value: string): string | undefined {
  const dirname = value.match(
    /^\$\(\s*dirname\s+(?:--\s+)?"?(\$\(\s*realpath\s+"?\$0"?\s*\)|\$0)"?\s*\)(.*)$/,
  );
  if (dirname) {
    const real = dirname[1].includes("realpath") ? resolveUnder(root, script) : script;
    return real === undefined ? undefined : posix.normalize(posix.dirname(real) + dirname[2]);
  }
  const suffix = value.match(/^\$\{0%\/\*\}(.*)$/);
  if (suffix) return posix.normalize(posix.dirname(script) + suffix[1]);
  return value.startsWith("/") && !value.includes("$") ? posix.normalize(value) : undefined;
}

/**
 * Reads the hook directory from an fsfreeze-hook script under a root.
 *
 * @example
 * ```ts
 * import { readHookDir } from "./hook_script.ts";
 * readHookDir({ root: "/", script: "/etc/qemu/fsfreeze-hook" }).path; // "/etc/qemu/fsfreeze-hook.d" on Debian
 * ```
 */
export function readHookDir(options: { root: string; script: string }): HookDir {
  const { root, script } = options;
  const text = readUnder(root, script);
  if (text === undefined) {
    return { detail: `${script} does not exist, so no hook directory is run`, exists: false };
  }
  const found = dirAssignment(text);
  if (!found) {
    return {
      detail: `${script} names no hook directory (no FSFREEZE_D= or HOOK_DIR=)`,
      exists: false,
    };
  }
  const path = evaluate(root, script, found.value);
  if (!path) {
    return {
      detail: `${script} sets ${found.name}=${found.value}, which vmsnap cannot evaluate`,
      exists: false,
    };
  }
  return {
    path,
    detail: `${script} runs ${found.name}=${found.value}, which is ${path}`,
    exists: kindUnder(root, path).kind === "directory",
  };
}
