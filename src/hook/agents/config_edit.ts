/**
 * One setting changed in an agent's own file, everything else kept as the
 * admin wrote it (comments, order, other keys): a key of an INI section
 * (Google's `instance_configs.cfg`, VMware's `tools.conf`, qemu-ga's
 * `qemu-ga.conf`), or a variable of an environment file (RHEL's
 * `/etc/sysconfig/qemu-ga`, OpenRC's `/etc/conf.d/qemu-guest-agent`).
 *
 * @module
 */

/** Escapes a text for a regular expression. */
function literal(text: string): string {
  return text.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");
}

/**
 * Sets `key = value` in `[section]`: the key's line replaced where it is,
 * else added first in the section, else the section added at the end.
 * `ignoreCase` matches keys in any case (Python's configparser and
 * VMware's reader lowercase them: a `Enabled = false` left beside a new
 * `enabled = true` would be a duplicate).
 *
 * @example
 * ```ts
 * import { setIniKey } from "./config_edit.ts";
 * setIniKey("[Snapshots]\nEnabled = false\n", { section: "Snapshots", key: "enabled", value: "true", ignoreCase: true });
 * // "[Snapshots]\nenabled = true\n"
 * ```
 */
export function setIniKey(
  text: string,
  setting: {
    section: string;
    key: string;
    value: string;
    ignoreCase?: boolean;
    separator?: string;
  },
): string {
  const line = `${setting.key}${setting.separator ?? " = "}${setting.value}`;
  const lines = text.split("\n");
  const header = new RegExp(`^\\s*\\[${literal(setting.section)}\\]\\s*$`);
  const start = lines.findIndex((l) => header.test(l));
  if (start < 0) {
    const body = text === "" || text.endsWith("\n") ? text : `${text}\n`;
    return `${body}${body ? "\n" : ""}[${setting.section}]\n${line}\n`;
  }
  let end = lines.findIndex((l, i) => i > start && /^\s*\[/.test(l));
  if (end < 0) end = lines.length;
  const key = new RegExp(`^\\s*${literal(setting.key)}\\s*[=:]`, setting.ignoreCase ? "i" : "");
  const at = lines.findIndex((l, i) => i > start && i < end && key.test(l));
  if (at >= 0) lines[at] = line;
  else lines.splice(start + 1, 0, line);
  return lines.join("\n");
}

/** A value as an environment file writes it: bare when it can be, else in double quotes. */
function envValue(value: string): string {
  return /^[\w@%+=:,./-]*$/.test(value) ? value : `"${value.replace(/(["\\$`])/g, "\\$1")}"`;
}

/**
 * Sets `NAME=value` in an environment file: the last assignment of the
 * name replaced (a commented one is left as the documentation it is), else
 * one added at the end.
 *
 * @example
 * ```ts
 * import { setEnvVar } from "./config_edit.ts";
 * setEnvVar("# doc\nFSFREEZE_HOOK_PATHNAME=/dev/null\n", "FSFREEZE_HOOK_PATHNAME", "/etc/qemu-ga/fsfreeze-hook");
 * // "# doc\nFSFREEZE_HOOK_PATHNAME=/etc/qemu-ga/fsfreeze-hook\n"
 * ```
 */
export function setEnvVar(text: string, name: string, value: string): string {
  const lines = text.split("\n");
  const assignment = new RegExp(`^\\s*(export\\s+)?${literal(name)}\\s*=`);
  let at = -1;
  lines.forEach((l, i) => {
    if (assignment.test(l)) at = i;
  });
  const line = `${lines[at]?.match(/^\s*export\s+/) ? "export " : ""}${name}=${envValue(value)}`;
  if (at >= 0) {
    lines[at] = line;
    return lines.join("\n");
  }
  const body = text === "" || text.endsWith("\n") ? text : `${text}\n`;
  return `${body}${line}\n`;
}
