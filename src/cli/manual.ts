/**
 * The man page (`vmsnap.1`) and the bash completion, generated from the
 * command table in {@link ./commands/mod.ts}: the same source as `--help`, so a
 * command added there appears in all three.
 *
 * @module
 */
import { GLOBAL_OPTIONS, type OptionSpec } from "./command.ts";
import { COMMANDS } from "./commands/mod.ts";
import { CODES } from "../errors.ts";
import { EXIT_KINDS } from "../exit_codes.ts";
import {
  DEFAULT_CONFIG_PATH,
  DEFAULT_LOG_FILE,
  DEFAULT_METRICS_FILE,
  DEFAULT_STATE_DIR,
} from "../config/config.ts";
import { VERSION } from "../version.ts";

/** Escapes text for roff: backslashes, hyphens in words, a leading dot or quote. */
function roff(text: string): string {
  return text
    .replace(/\\/g, "\\e")
    .replace(/-/g, "\\-")
    .replace(/^([.'])/gm, "\\&$1");
}

/** `--name ARG` in bold/italic roff. */
function flag(name: string, spec: OptionSpec): string {
  const short = spec.short ? `\\fB\\-${spec.short}\\fR, ` : "";
  return `${short}\\fB\\-\\-${roff(name)}\\fR${spec.arg ? ` \\fI${roff(spec.arg)}\\fR` : ""}`;
}

function optionItems(options: Record<string, OptionSpec>): string[] {
  return Object.entries(options).flatMap(([name, spec]) => [
    ".TP",
    flag(name, spec),
    roff(spec.help),
  ]);
}

/**
 * A command's description (the `--help` text) as roff: lines starting with
 * `  - ` become bullets, other lines are filled into paragraphs.
 */
function prose(text: string): string[] {
  const out: string[] = [];
  let paragraph: string[] = [];
  let bullet: string[] | undefined;
  const flush = () => {
    if (bullet) out.push(".IP \\(bu 2", roff(bullet.join(" ")));
    else if (paragraph.length) out.push(roff(paragraph.join(" ")));
    bullet = undefined;
    paragraph = [];
  };
  for (const line of text.split("\n")) {
    if (line.trim() === "") {
      flush();
      out.push(".PP");
    } else if (/^\s+- /.test(line)) {
      flush();
      bullet = [line.replace(/^\s+- /, "")];
    } else if (bullet && /^\s{3,}/.test(line)) {
      bullet.push(line.trim());
    } else {
      if (bullet) {
        flush();
        out.push(".PP");
      }
      paragraph.push(line.trim());
    }
  }
  flush();
  return out;
}

/**
 * The man page, `vmsnap.1` (the binary is in /usr/bin), in roff.
 *
 * @example
 * ```ts
 * import { manPage } from "./manual.ts";
 * const page = manPage({ date: "2026-01-01" });
 * page.startsWith(".TH VMSNAP 1"); // true
 * ```
 */
export function manPage(options: { date: string; version?: string }): string {
  const version = options.version ?? VERSION;
  return [
    `.TH VMSNAP 1 "${options.date}" "vmsnap ${roff(version)}" "System Administration"`,
    ".nh",
    ".ad l",
    ".SH NAME",
    "vmsnap \\- application\\-consistent snapshots for Linux VMs",
    ".SH SYNOPSIS",
    ".B vmsnap",
    ".I command",
    "[\\fIoptions\\fR]",
    ".SH DESCRIPTION",
    roff(
      "vmsnap quiesces the applications of a VM (pre/post scripts, MySQL/MariaDB, PostgreSQL, MongoDB), freezes its filesystems under a guard process, has the snapshot taken, thaws and resumes, and reports what consistency the snapshot has. Its config is Azure Backup's VMSnapshotScriptPluginConfig.json (same keys, same error names), read as JSONC, with optional extensions.",
    ),
    ".PP",
    roff(
      "It never leaves a filesystem frozen or a database locked, never freezes what was not planned, keeps the reason every failure happened, and never runs a file that a non-root user could have changed.",
    ),
    ".SH COMMANDS",
    ...commandSections(),
    ".SH OPTIONS",
    "Every command takes these:",
    ...optionItems(GLOBAL_OPTIONS),
    ...exitStatus(),
    ...environmentAndFiles(),
    ".SH ERROR CODES",
    "Every problem carries a stable code; where Azure Backup has a name for it, it is Azure's.",
    ...Object.entries(CODES).flatMap(([code, info]) => [
      ".TP",
      `.B ${roff(code)}`,
      `${roff(info.summary)} Fix: ${roff(info.fix)}`,
    ]),
    ".SH SEE ALSO",
    ".BR fsfreeze (8),",
    ".BR systemd.timer (5),",
    ".BR systemctl (1)",
  ].join("\n") + "\n";
}

/** One subsection per command: usage, summary, description, options. */
function commandSections(): string[] {
  return Object.entries(COMMANDS).flatMap(([name, command]) => [
    `.SS ${roff(name)}`,
    `\\fB${roff(command.usage)}\\fR`,
    ".PP",
    roff(command.summary[0].toUpperCase() + command.summary.slice(1)) + ".",
    ".PP",
    ...prose(command.description),
    ...(Object.keys(command.options).length
      ? [".PP", "Options:", ".RS 4", ...optionItems(command.options), ".RE"]
      : []),
  ]);
}

/** EXIT STATUS: the kinds, each with what it means for each command. */
function exitStatus(): string[] {
  return [
    ".SH EXIT STATUS",
    "The same kinds for every command:",
    ...EXIT_KINDS.flatMap((kind) => [".TP", `.B ${kind.code}`, roff(kind.detail)]),
  ];
}

/** ENVIRONMENT and FILES. */
function environmentAndFiles(): string[] {
  return [
    ".SH ENVIRONMENT",
    ".TP",
    ".B VMSNAP_CONFIG",
    `The config file when \\fB\\-\\-config\\fR is not given (default ${
      roff(DEFAULT_CONFIG_PATH)
    }).`,
    ".TP",
    ".B JOURNAL_STREAM",
    "Set by systemd when standard error is the journal: vmsnap then writes one line per event with a syslog priority prefix.",
    ".SH FILES",
    ".TP",
    `.I ${roff(DEFAULT_CONFIG_PATH)}`,
    "The config (root\\-owned, mode 0600).",
    ".TP",
    `.I ${roff(DEFAULT_STATE_DIR)}`,
    "State: the run lock, freeze markers, the last result.",
    ".TP",
    `.I ${roff(DEFAULT_LOG_FILE)}`,
    "The log, JSON Lines, rotated by size.",
    ".TP",
    `.I ${roff(DEFAULT_METRICS_FILE)}`,
    "The Prometheus textfile (\\fBmetrics.textfile\\fR), for node_exporter's textfile collector.",
    ".TP",
    ".I /etc/default/vmsnap",
    "Settings of vmsnap.service: VMSNAP_CONFIG and VMSNAP_RUN_ARGS.",
    ".TP",
    ".I /usr/share/doc/vmsnap/",
    "An example config and the reference documentation.",
    ".TP",
    ".I vmsnap.service\\fR, \\fIvmsnap.timer",
    "The systemd units: a oneshot \\fBvmsnap run\\fR and its schedule (disabled until enabled).",
  ];
}

/**
 * The bash completion script: commands, each command's options and the words
 * of its first argument, the values of options with fixed choices, files for
 * path arguments.
 *
 * @example
 * ```ts
 * import { bashCompletion } from "./manual.ts";
 * bashCompletion().includes("complete -F _vmsnap vmsnap"); // true
 * ```
 */
export function bashCompletion(): string {
  const quote = (words: string[]) => words.join(" ");
  const global = Object.keys(GLOBAL_OPTIONS).map((o) => `--${o}`);
  const commandCases = Object.entries(COMMANDS).map(([name, c]) => {
    const words = [...Object.keys(c.options).map((o) => `--${o}`), ...global];
    // The first argument's words (hook's events, help's commands) until one is given.
    const first = c.words ? `; ((given)) || words="$words ${quote([...c.words])}"` : "";
    return `    ${name}) words="${quote(words)}"${first} ;;`;
  });
  const all: Record<string, OptionSpec> = { ...GLOBAL_OPTIONS };
  for (const c of Object.values(COMMANDS)) Object.assign(all, c.options);
  const valued = Object.entries(all).filter(([, s]) => s.type === "string").map(([n]) => `--${n}`);
  const valueCases = Object.entries(all)
    .filter(([, spec]) => spec.type === "string")
    .map(([name, spec]) =>
      spec.choices
        ? `    --${name}) COMPREPLY=($(compgen -W "${
          quote([...spec.choices])
        }" -- "$cur")); return ;;`
        : /PATH|FILE|DIR/.test(spec.arg ?? "")
        ? `    --${name}) COMPREPLY=($(compgen -f -- "$cur")); return ;;`
        : `    --${name}) return ;;`
    );
  return `# bash completion for vmsnap ${VERSION}, generated from its command table.
_vmsnap() {
  local cur prev command words i given=0
  cur="\${COMP_WORDS[COMP_CWORD]}"
  prev="\${COMP_WORDS[COMP_CWORD-1]}"
  case "$prev" in
${valueCases.join("\n")}
  esac
  command=""
  for ((i = 1; i < COMP_CWORD; i++)); do
    case "\${COMP_WORDS[i]}" in
      ${valued.join("|")}) ((i++)) ;;
      -*) ;;
      *) [[ -z "$command" ]] && command="\${COMP_WORDS[i]}" || given=1 ;;
    esac
  done
  if [[ -z "$command" ]]; then
    if [[ "$cur" == -* ]]; then
      COMPREPLY=($(compgen -W "${quote(global)}" -- "$cur"))
    else
      COMPREPLY=($(compgen -W "${Object.keys(COMMANDS).join(" ")}" -- "$cur"))
    fi
    return
  fi
  case "$command" in
${commandCases.join("\n")}
    *) words="${quote(global)}" ;;
  esac
  COMPREPLY=($(compgen -W "$words" -- "$cur"))
}
complete -F _vmsnap vmsnap
`;
}
