/**
 * qemu-ga's options that decide whether and how it runs its fsfreeze hook,
 * read from its command line and its config file (qemu-ga(8), qga/main.c:
 * the config file is read first, the command line overrides it; `-F` takes
 * its path only attached, `-F/path` or `--fsfreeze-hook=/path`).
 *
 * @module
 */

/** The hook- and RPC-related options of one qemu-ga command line. */
export interface QemuGaArgs {
  /** `-F`/`--fsfreeze-hook`: `null` when given without a path (qemu-ga's default), absent when not given. */
  hook?: string | null;
  /** `-c`/`--config`. */
  config?: string;
  /** Commands blocked (`-b`, `--blacklist`, `--block-rpcs`), every list joined. */
  blocked: string[];
  /** Commands allowed (`-a`, `--allow-rpcs`), when an allow list was given. */
  allowed?: string[];
}

/** Splits a comma-separated RPC list. */
function rpcList(value: string): string[] {
  return value.split(",").map((s) => s.trim()).filter((s) => s !== "");
}

/** Long options that take a value (as `--opt=value` or `--opt value`). */
const LONG_WITH_VALUE: Record<string, "config" | "block" | "allow" | "other"> = {
  config: "config",
  blacklist: "block",
  "block-rpcs": "block",
  "allow-rpcs": "allow",
  method: "other",
  path: "other",
  logfile: "other",
  pidfile: "other",
  statedir: "other",
};
/** Short options that take a value (attached or as the next word). */
const SHORT_WITH_VALUE: Record<string, "config" | "block" | "allow" | "other"> = {
  c: "config",
  b: "block",
  a: "allow",
  m: "other",
  p: "other",
  l: "other",
  f: "other",
  t: "other",
};

/** Records one option's value. */
function take(args: QemuGaArgs, what: "config" | "block" | "allow" | "other", value: string): void {
  if (what === "config") args.config = value;
  else if (what === "block") args.blocked.push(...rpcList(value));
  else if (what === "allow") args.allowed = [...(args.allowed ?? []), ...rpcList(value)];
}

/**
 * Reads the options that matter for the fsfreeze hook from qemu-ga's argv
 * (argv[0] is the program).
 *
 * @example
 * ```ts
 * import { parseQemuGaArgs } from "./qemu_ga_args.ts";
 * parseQemuGaArgs(["/usr/bin/qemu-ga", "--block-rpcs=guest-exec", "-F/etc/qemu-ga/fsfreeze-hook"]);
 * // { hook: "/etc/qemu-ga/fsfreeze-hook", blocked: ["guest-exec"] }
 * ```
 */
export function parseQemuGaArgs(argv: string[]): QemuGaArgs {
  const args: QemuGaArgs = { blocked: [] };
  for (let i = 1; i < argv.length; i++) {
    const word = argv[i];
    if (word === "-F" || word === "--fsfreeze-hook") args.hook = null;
    else if (word.startsWith("--fsfreeze-hook=")) args.hook = word.slice("--fsfreeze-hook=".length);
    else if (word.startsWith("-F")) args.hook = word.slice(2);
    else if (word.startsWith("--")) {
      const eq = word.indexOf("=");
      const name = eq < 0 ? word.slice(2) : word.slice(2, eq);
      const what = LONG_WITH_VALUE[name];
      if (!what) continue;
      const value = eq < 0 ? argv[++i] : word.slice(eq + 1);
      if (value !== undefined) take(args, what, value);
    } else if (/^-[a-zA-Z]/.test(word)) {
      const what = SHORT_WITH_VALUE[word[1]];
      if (!what) continue;
      const value = word.length > 2 ? word.slice(2) : argv[++i];
      if (value !== undefined) take(args, what, value);
    }
  }
  return args;
}

/**
 * Parses qemu-ga's config file (a GLib key file): the keys of its
 * `[general]` group.
 *
 * @example
 * ```ts
 * import { parseQemuGaConfig } from "./qemu_ga_args.ts";
 * parseQemuGaConfig("[general]\nfsfreeze-hook=/etc/qemu/fsfreeze-hook\n")["fsfreeze-hook"];
 * ```
 */
export function parseQemuGaConfig(text: string): Record<string, string> {
  const keys: Record<string, string> = {};
  let group = "";
  for (const raw of text.split("\n")) {
    const line = raw.trim();
    if (line === "" || line.startsWith("#")) continue;
    const header = line.match(/^\[(.+)\]$/);
    if (header) group = header[1].trim();
    else if (group === "general" && line.includes("=")) {
      const eq = line.indexOf("=");
      keys[line.slice(0, eq).trim()] = line.slice(eq + 1).trim();
    }
  }
  return keys;
}

/** The freeze commands a hook needs qemu-ga to accept. */
export const FSFREEZE_COMMANDS = ["guest-fsfreeze-freeze", "guest-fsfreeze-thaw"];

/**
 * Which freeze commands the block and allow lists (command line and config
 * file together) leave disabled; empty when the freeze works.
 *
 * @example
 * ```ts
 * import { blockedFreezeCommands } from "./qemu_ga_args.ts";
 * blockedFreezeCommands({ blocked: [], allowed: ["guest-ping"] });
 * // ["guest-fsfreeze-freeze", "guest-fsfreeze-thaw"]
 * ```
 */
export function blockedFreezeCommands(lists: { blocked: string[]; allowed?: string[] }): string[] {
  return FSFREEZE_COMMANDS.filter((cmd) =>
    lists.blocked.includes(cmd) || (lists.allowed !== undefined && !lists.allowed.includes(cmd))
  );
}
