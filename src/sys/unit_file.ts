/**
 * systemd units read from files under a root prefix, as systemd would read
 * them (systemd.unit(5), systemd.service(5), systemd.exec(5)): the unit file
 * found first on the unit search path, its drop-ins (`<unit>.d/*.conf`, by
 * file name, a name in /etc hiding the same name further down), `ExecStart=`
 * with its reset by an empty assignment, `Environment=` and
 * `EnvironmentFile=`, and the command line with `$VAR` / `${VAR}` expanded.
 *
 * Nothing here runs systemctl: a root prefix (tests, packaging, a mounted
 * image) has no systemd to ask.
 *
 * @module
 */
import { readdirSync } from "node:fs";
import { join } from "node:path";
import { readUnder } from "./under_root.ts";

/** Where systemd looks for system units, most important first. */
export const UNIT_SEARCH_PATH = [
  "/etc/systemd/system",
  "/run/systemd/system",
  "/usr/local/lib/systemd/system",
  "/usr/lib/systemd/system",
  "/lib/systemd/system",
];

/** One `Key=value` of a unit file, with where it was read. */
export interface UnitEntry {
  section: string;
  key: string;
  value: string;
  /** The file (a path on the target system). */
  file: string;
}

/**
 * Parses a unit file's text: sections, `Key=value` lines, comments (`#`,
 * `;`) and lines continued by a trailing backslash.
 *
 * @example
 * ```ts
 * import { parseUnit } from "./unit_file.ts";
 * const entries = parseUnit("[Service]\nExecStart=/usr/bin/qemu-ga \\\n  -F/etc/hook\n", "/x.service");
 * entries[0].value; // "/usr/bin/qemu-ga   -F/etc/hook"
 * ```
 */
export function parseUnit(text: string, file: string): UnitEntry[] {
  const entries: UnitEntry[] = [];
  let section = "";
  let pending = "";
  for (const raw of text.split("\n")) {
    const line = pending === "" ? raw.trim() : `${pending} ${raw.trim()}`;
    pending = "";
    if (/^[#;]/.test(line)) continue;
    if (line.endsWith("\\")) {
      pending = line.slice(0, -1);
      continue;
    }
    const header = line.match(/^\[(.+)\]$/);
    if (header) {
      section = header[1];
      continue;
    }
    const eq = line.indexOf("=");
    if (eq <= 0) continue;
    entries.push({
      section,
      key: line.slice(0, eq).trim(),
      value: line.slice(eq + 1).trim(),
      file,
    });
  }
  return entries;
}

/** A unit as systemd loads it from the files under a root. */
export interface LoadedUnit {
  name: string;
  /** The unit file used (a path on the target system), if any was found. */
  path?: string;
  /** The drop-ins applied, in the order systemd applies them. */
  dropins: string[];
  /** Every entry of the unit file, then of each drop-in. */
  entries: UnitEntry[];
  /** Every path looked at, found or not. */
  looked: string[];
}

/**
 * Loads a unit: the first unit file on the search path, then its drop-ins
 * from every directory of the search path (a drop-in name in a more
 * important directory hides the same name in a less important one), sorted
 * by file name.
 *
 * @example
 * ```ts
 * import { loadUnit } from "./unit_file.ts";
 * const unit = loadUnit({ root: "/", name: "qemu-guest-agent.service" });
 * console.log(unit.path ?? "not installed", unit.dropins);
 * ```
 */
export function loadUnit(options: { root: string; name: string }): LoadedUnit {
  const { root, name } = options;
  const looked: string[] = [];
  let path: string | undefined;
  let entries: UnitEntry[] = [];
  for (const dir of UNIT_SEARCH_PATH) {
    const candidate = join(dir, name);
    looked.push(candidate);
    const text = readUnder(root, candidate);
    if (text !== undefined) {
      path = candidate;
      entries = parseUnit(text, candidate);
      break;
    }
  }
  const byName = new Map<string, string>();
  for (const dir of UNIT_SEARCH_PATH) {
    const dropinDir = join(dir, `${name}.d`);
    looked.push(dropinDir);
    let names: string[];
    try {
      names = readdirSync(join(root, dropinDir));
    } catch {
      continue;
    }
    for (const file of names) {
      if (file.endsWith(".conf") && !byName.has(file)) byName.set(file, join(dropinDir, file));
    }
  }
  const dropins = [...byName.keys()].sort().map((file) => byName.get(file)!);
  for (const dropin of dropins) {
    entries = [...entries, ...parseUnit(readUnder(root, dropin) ?? "", dropin)];
  }
  return { name, path, dropins, entries, looked };
}

/**
 * The values of one key of one section, in order; an empty assignment
 * resets the list (as for `ExecStart=`, `Environment=`, `EnvironmentFile=`).
 *
 * @example
 * ```ts
 * import { parseUnit, values } from "./unit_file.ts";
 * const e = parseUnit("[Service]\nExecStart=/a\nExecStart=\nExecStart=/b\n", "/u");
 * values(e, "Service", "ExecStart").map((v) => v.value); // ["/b"]
 * ```
 */
export function values(entries: UnitEntry[], section: string, key: string): UnitEntry[] {
  let out: UnitEntry[] = [];
  for (const entry of entries) {
    if (entry.section !== section || entry.key !== key) continue;
    out = entry.value === "" ? [] : [...out, entry];
  }
  return out;
}

/**
 * Splits a command line into words the way systemd does: whitespace
 * separates, double and single quotes group, a backslash escapes the next
 * character.
 *
 * @example
 * ```ts
 * import { splitWords } from "./unit_file.ts";
 * splitWords(`/bin/sh -c "echo 'a b'"`); // ["/bin/sh", "-c", "echo 'a b'"]
 * ```
 */
export function splitWords(line: string): string[] {
  const words: string[] = [];
  let word: string | undefined;
  let quote: string | undefined;
  for (let i = 0; i < line.length; i++) {
    const c = line[i];
    if (quote) {
      if (c === quote) quote = undefined;
      else if (c === "\\" && quote === '"' && i + 1 < line.length) word += line[++i];
      else word += c;
    } else if (c === '"' || c === "'") {
      quote = c;
      word ??= "";
    } else if (c === "\\" && i + 1 < line.length) {
      word = (word ?? "") + line[++i];
    } else if (/\s/.test(c)) {
      if (word !== undefined) words.push(word);
      word = undefined;
    } else {
      word = (word ?? "") + c;
    }
  }
  if (word !== undefined) words.push(word);
  return words;
}

/**
 * Parses an environment file (`EnvironmentFile=`, `/etc/sysconfig/*`,
 * `/etc/default/*`): `KEY=value` lines, comments, quoted values; the last
 * assignment of a key wins.
 *
 * @example
 * ```ts
 * import { parseEnvironmentFile } from "./unit_file.ts";
 * parseEnvironmentFile('# c\nA=1\nB="x y"\n'); // { A: "1", B: "x y" }
 * ```
 */
export function parseEnvironmentFile(text: string): Record<string, string> {
  const env: Record<string, string> = {};
  for (const raw of text.split("\n")) {
    const line = raw.trim();
    if (line === "" || /^[#;]/.test(line)) continue;
    const m = line.match(/^(?:export\s+)?([A-Za-z_][A-Za-z0-9_]*)\s*=\s*(.*)$/);
    if (!m) continue;
    let value = m[2].trim();
    const quoted = value.match(/^"((?:[^"\\]|\\.)*)"$/) ?? value.match(/^'([^']*)'$/);
    if (quoted) value = quoted[1].replace(/\\(.)/g, "$1");
    else value = value.replace(/\s+#.*$/, "");
    env[m[1]] = value;
  }
  return env;
}

/** The environment of a unit's service, and the files it came from. */
export interface UnitEnvironment {
  env: Record<string, string>;
  /** Each `EnvironmentFile=` (a path on the target system), whether it was read. */
  files: { path: string; optional: boolean; found: boolean }[];
}

/**
 * The service's environment: `Environment=` assignments and the
 * `EnvironmentFile=` files (a leading `-` makes a missing file no error),
 * later files overriding earlier ones.
 *
 * @example
 * ```ts
 * import { loadUnit, unitEnvironment } from "./unit_file.ts";
 * const unit = loadUnit({ root: "/", name: "qemu-guest-agent.service" });
 * console.log(unitEnvironment({ root: "/", unit }).env);
 * ```
 */
export function unitEnvironment(options: { root: string; unit: LoadedUnit }): UnitEnvironment {
  const env: Record<string, string> = {};
  for (const entry of values(options.unit.entries, "Service", "Environment")) {
    for (const word of splitWords(entry.value)) {
      const eq = word.indexOf("=");
      if (eq > 0) env[word.slice(0, eq)] = word.slice(eq + 1);
    }
  }
  const files: UnitEnvironment["files"] = [];
  for (const entry of values(options.unit.entries, "Service", "EnvironmentFile")) {
    const optional = entry.value.startsWith("-");
    const path = optional ? entry.value.slice(1) : entry.value;
    const text = readUnder(options.root, path);
    files.push({ path, optional, found: text !== undefined });
    if (text !== undefined) Object.assign(env, parseEnvironmentFile(text));
  }
  return { env, files };
}

/**
 * Expands a command line's variables as systemd does: `${VAR}` is one word
 * (or part of one), `$VAR` standing alone as a word is split at whitespace
 * into zero or more words. An unset variable is empty.
 *
 * @example
 * ```ts
 * import { expandCommand } from "./unit_file.ts";
 * expandCommand("/usr/bin/qemu-ga -F${HOOK} $ARGS", { HOOK: "/h", ARGS: "-a b" });
 * // ["/usr/bin/qemu-ga", "-F/h", "-a", "b"]
 * ```
 */
export function expandCommand(line: string, env: Record<string, string>): string[] {
  const out: string[] = [];
  for (const word of splitWords(line)) {
    const alone = word.match(/^\$([A-Za-z_][A-Za-z0-9_]*)$/);
    if (alone) {
      out.push(...(env[alone[1]] ?? "").split(/\s+/).filter((w) => w !== ""));
      continue;
    }
    out.push(word.replace(/\$\{([A-Za-z_][A-Za-z0-9_]*)\}/g, (_, name) => env[name] ?? ""));
  }
  return out;
}

/** A service's effective command line. */
export interface ExecStart {
  /** The `ExecStart=` line used (the last after the last reset). */
  raw: string;
  /** The file that set it. */
  file: string;
  /** The words, variables expanded, without systemd's prefixes (`-`, `@`, `+`, `!`, `:`). */
  argv: string[];
  /** The environment used to expand it. */
  environment: UnitEnvironment;
}

/**
 * The effective `ExecStart=` of a loaded service unit (the first command
 * of the last list after a reset, as for `Type=simple`), expanded.
 * Undefined when the unit sets none.
 *
 * @example
 * ```ts
 * import { effectiveExecStart, loadUnit } from "./unit_file.ts";
 * const unit = loadUnit({ root: "/", name: "qemu-guest-agent.service" });
 * console.log(effectiveExecStart({ root: "/", unit })?.argv);
 * ```
 */
export function effectiveExecStart(
  options: { root: string; unit: LoadedUnit },
): ExecStart | undefined {
  const lines = values(options.unit.entries, "Service", "ExecStart");
  const first = lines[0];
  if (!first) return undefined;
  const environment = unitEnvironment(options);
  const raw = first.value.replace(/^[-@+!:]+/, "");
  return {
    raw: first.value,
    file: first.file,
    argv: expandCommand(raw, environment.env),
    environment,
  };
}
