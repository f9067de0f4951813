/**
 * INI files as the agents read them (VMware's `tools.conf`, Google's
 * `instance_configs.cfg`): `[section]` headers, `key = value` (or `key:
 * value`) lines, `#`/`;` comments; keys are matched without regard to case,
 * as GLib's key files and Python's configparser do for these files.
 *
 * @module
 */

/** Sections by name, each key lowercased to its last value. */
export type Ini = Record<string, Record<string, string>>;

/**
 * Parses INI text.
 *
 * @example
 * ```ts
 * import { parseIni } from "./ini.ts";
 * parseIni("[vmbackup]\nexecScripts = false\n").vmbackup.execscripts; // "false"
 * ```
 */
export function parseIni(text: string): Ini {
  const ini: Ini = {};
  let section = "";
  for (const raw of text.split("\n")) {
    const line = raw.trim();
    if (line === "" || /^[#;]/.test(line)) continue;
    const header = line.match(/^\[(.+)\]$/);
    if (header) {
      section = header[1].trim();
      ini[section] ??= {};
      continue;
    }
    const m = line.match(/^([^=:]+?)\s*[=:]\s*(.*)$/);
    if (m) (ini[section] ??= {})[m[1].toLowerCase()] = m[2];
  }
  return ini;
}

/**
 * A boolean as these files write it (`true`/`false`, `1`/`0`, `yes`/`no`,
 * `on`/`off`); undefined when absent or unreadable.
 *
 * @example
 * ```ts
 * import { iniBool } from "./ini.ts";
 * iniBool("False"); // false
 * ```
 */
export function iniBool(value: string | undefined): boolean | undefined {
  if (value === undefined) return undefined;
  const v = value.trim().toLowerCase();
  if (["true", "1", "yes", "on"].includes(v)) return true;
  if (["false", "0", "no", "off"].includes(v)) return false;
  return undefined;
}
