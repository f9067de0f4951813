/**
 * The command line: `vmsnap <command> [options]`. Usage errors exit 64 and
 * suggest the nearest valid word.
 *
 * @module
 */
import { writeSync } from "node:fs";
import { resolve } from "node:path";
import { parseArgs } from "node:util";
import process from "node:process";
import { formatCheckReport, runChecks } from "../preflight/check.ts";
import { AGENT_NAMES, type AgentName, EVENT_WORDS } from "../hook/agents.ts";
import { redact, redactValue, shortSecretWarnings } from "../secrets.ts";
import { escapeForTerminal } from "../sys/terminal.ts";
import { DEFAULT_CONFIG_PATH, LOG_LEVELS, type LogLevel } from "../config/config.ts";
import { describeRecovery, recoverAll, type Recovery } from "../state/recover.ts";
import { CODES, type Problem, VmsnapError } from "../errors.ts";
import { trustedStateDir } from "../preflight/preflight.ts";
import { didYouMean } from "../config/suggest.ts";
import { VERSION } from "../version.ts";
import { journalWriter, stderrIsJournal } from "./journal.ts";

/** Exit codes, as documented in `--help`. */
export const EXIT = { ok: 0, degraded: 1, failed: 2, usage: 64 } as const;

/** One option: its type, its help line, its argument's name and, if fixed, its values. */
export type OptionSpec = {
  type: "string" | "boolean";
  short?: string;
  help: string;
  arg?: string;
  choices?: readonly string[];
};

/** The options every command takes (the man page and the completion read them too). */
export const GLOBAL_OPTIONS: Record<string, OptionSpec> = {
  config: {
    type: "string",
    arg: "PATH",
    help: `config file (default: $VMSNAP_CONFIG, else ${DEFAULT_CONFIG_PATH})`,
  },
  json: { type: "boolean", help: "machine-readable output on stdout (JSON)" },
  "log-level": {
    type: "string",
    arg: "LEVEL",
    choices: LOG_LEVELS,
    help: `${LOG_LEVELS.join("|")} (default: the config's log.level, else info)`,
  },
  help: { type: "boolean", short: "h", help: "show help" },
  version: { type: "boolean", short: "V", help: "print the version" },
};

/** One command of the table. */
export interface CommandSpec {
  summary: string;
  usage: string;
  description: string;
  options: Record<string, OptionSpec>;
  /** Positional arguments allowed after the command. */
  positionals?: number;
  /** The words the first of them takes (shown by --help and the man page, completed by bash). */
  words?: readonly string[];
}

/** The event words `vmsnap hook` is documented with (the agents' other spellings still parse). */
const HOOK_WORDS = ["freeze", "pre", "thaw", "post", "freezeFail"] as const;

const FOR_OPTION: OptionSpec = {
  type: "string",
  arg: "AGENT",
  help: `the backup agent: ${AGENT_NAMES.join("|")}`,
  choices: AGENT_NAMES,
};

const INSTALL_OPTIONS: Record<string, OptionSpec> = {
  for: FOR_OPTION,
  root: { type: "string", arg: "DIR", help: "install under this prefix (default /)" },
  "dry-run": { type: "boolean", help: "print the changes, change nothing" },
};

/** The commands: one source for --help, the man page and the bash completion. */
export const COMMANDS: Record<string, CommandSpec> = {
  check: {
    summary: "check the config, permissions and freeze targets; changes nothing",
    usage: "vmsnap check [--config PATH] [--json] [--connect]",
    description:
      `Runs every check that would stop an application-consistent snapshot and reports all
problems at once, each with its code, the file, line and column, and the fix:
  - the config file: root-owned, mode 600 or stricter, in root-only directories
  - the config: valid JSONC, every key known, every value in range
  - pre/post scripts and the snapshot command: exist, root-owned, no group/other bits,
    every directory on the way root-owned and not group/other-writable (symlinks followed)
  - the log and state directories
  - the filesystems that would be frozen, in order, and why each other mount is skipped
  - with --connect: each database plugin connects and checks the privileges quiesce
    needs, naming the missing GRANT
What a dead run left (frozen filesystems, processes, a database lock) is reported, not
undone: vmsnap recover undoes it. Changes nothing.
Exit 0 when there is no problem, 1 when there is at least one (warnings do not count).`,
    options: {
      connect: {
        type: "boolean",
        help: "also connect to each database and verify the privileges quiesce needs",
      },
    },
  },
  run: {
    summary: "take an application-consistent snapshot (root)",
    usage: "vmsnap run [--config PATH] [--json] [--external | --snapshot-command ARGV...]",
    description: `Quiesces the applications, freezes the filesystems, takes the snapshot, thaws and
resumes. --snapshot-command takes every argument after it as the command's argv.
Exit 0: snapshot at the consistency asked for; 1: snapshot at a lower consistency;
2: no snapshot; 64: usage error.`,
    options: {
      external: {
        type: "boolean",
        help: "print a frozen event and wait for snapshot-done/snapshot-failed on stdin",
      },
      "snapshot-command": {
        type: "boolean",
        help: "ARGV... the snapshot command (replaces the config's)",
      },
    },
  },
  recover: {
    summary: "undo what a dead run left: frozen filesystems, its processes, database locks",
    usage: "vmsnap recover [--config PATH] [--json]",
    description:
      `Thaws the filesystems a dead run's freeze marker lists (when its agent and guard both
died), kills processes that run started, releases database locks that outlive their
connection (MongoDB's fsync lock), and shows what the freeze guard did. Every vmsnap
start does the same first; this command only does that, and says so.
Exit 0 when everything left was undone (or nothing was left), 1 when something could not be.`,
    options: {},
  },
  hook: {
    summary:
      "be called by a backup agent: freeze|pre before its snapshot, thaw|post|freezeFail after",
    usage: `vmsnap hook ${HOOK_WORDS.join("|")} --for AGENT [--config PATH] [--timeout SECONDS]`,
    description: `What a backup agent runs around its own snapshot (see docs/hooks.md).
freeze (pre): checks, then starts a holder that quiesces every plugin (stage by stage)
and holds the database sessions; for gcp, aws and generic it also freezes the targets.
Exit 0 once everything is quiesced; else the coded error, after resuming what it quiesced.
thaw (post), freezeFail: the holder thaws what it froze, resumes, writes the result
(vmsnap status shows it); exit as vmsnap run would. No holder: said so, exit 2.
AGENT: ${AGENT_NAMES.join(", ")}.`,
    options: {
      for: FOR_OPTION,
      timeout: {
        type: "string",
        arg: "SECONDS",
        help: "the hook returns within this (default: below the agent's own limit)",
      },
    },
    positionals: 4,
    words: HOOK_WORDS,
  },
  install: {
    summary: "install the hook files of a backup agent (qemu-ga, vmware, azure, gcp, aws)",
    usage: "vmsnap install --for AGENT [--config PATH] [--root DIR] [--dry-run]",
    description: `Puts in place the files through which AGENT calls vmsnap hook, and prints every
change. Idempotent; whatever was there is backed up to /var/backups/vmsnap first and
restored by vmsnap uninstall. --root DIR installs under a prefix. See docs/hooks.md.`,
    options: INSTALL_OPTIONS,
  },
  uninstall: {
    summary: "remove what vmsnap install put in place and restore what was there",
    usage: "vmsnap uninstall --for AGENT [--root DIR] [--dry-run]",
    description: "Undoes vmsnap install --for AGENT, restoring the backed-up files.",
    options: INSTALL_OPTIONS,
  },
  init: {
    summary: "write a commented starter config for this VM (never over an existing one)",
    usage: "vmsnap init [--config PATH] [--detect] [--dry-run]",
    description:
      `Writes a starter config (root, 0600) at the config path: Azure's keys, the filesystems
vmsnap check would freeze here (listed explicitly), and with --detect a plugin entry
for each MariaDB/MySQL, PostgreSQL and MongoDB server running, with a password-file
placeholder and, in a comment, the user and GRANT it needs. Never overwrites a file
(ConfigExists). --dry-run prints the config instead of writing it.`,
    options: {
      detect: { type: "boolean", help: "find the database servers running here (root)" },
      "dry-run": { type: "boolean", help: "print the config, write nothing" },
    },
  },
  status: {
    summary: "show the last result of run or hook: when, status, consistency, errors",
    usage: "vmsnap status [--config PATH] [--json]",
    description: `Shows the result the last run (or hook hold) recorded in stateDir: when it ended,
its status and consistency, how long filesystems were frozen and each database held,
and its errors. Exit: the last result's exit code (0, 1, 2); 2 when nothing is recorded.`,
    options: {},
  },
  schema: {
    summary: "print the config's JSON Schema (for editors and config management)",
    usage: "vmsnap schema",
    description:
      `Prints the JSON Schema (draft-07) of the config, generated from the validator's own
field specs. A config valid against it has no problem and nothing clamped or ignored;
files, permissions and mounts are checked by vmsnap check.`,
    options: {},
  },
  version: {
    summary: "print the version",
    usage: "vmsnap version",
    description: "Prints `vmsnap <version>`.",
    options: {},
  },
  help: {
    summary: "show help for vmsnap or a command",
    usage: "vmsnap help [COMMAND]",
    description: "Shows the general help, or a command's help.",
    options: {},
    positionals: 1,
    get words() {
      return Object.keys(COMMANDS);
    },
  },
};

/** What the command line asked for. */
export interface Invocation {
  command: string;
  configPath: string;
  json: boolean;
  logLevel?: LogLevel;
  help: boolean;
  positionals: string[];
  external: boolean;
  connect: boolean;
  snapshotCommand?: string[];
  /** hook, install, uninstall: the agent. */
  agent?: AgentName;
  /** hook: the timeout. */
  timeoutSeconds?: number;
  /** True when --config or VMSNAP_CONFIG named the config (install --for azure has its own default). */
  configGiven: boolean;
  /** install, uninstall. */
  root: string;
  dryRun: boolean;
  /** init: look for running databases. */
  detect: boolean;
}

/** A usage error: exit 64. */
export class UsageError extends VmsnapError {
  constructor(message: string) {
    super("UsageError", message);
    this.name = "UsageError";
  }
}

function optionLines(options: Record<string, OptionSpec>): string[] {
  return Object.entries(options).map(([name, spec]) => {
    const flag = `${spec.short ? `-${spec.short}, ` : "    "}--${name}${
      spec.arg ? ` ${spec.arg}` : ""
    }`;
    return `  ${flag.padEnd(24)} ${spec.help}`;
  });
}

/** The general help. */
export function generalHelp(): string {
  return [
    `vmsnap ${VERSION}: application-consistent snapshots for Linux VMs`,
    "",
    "Usage: vmsnap <command> [options]",
    "",
    "Commands:",
    ...Object.entries(COMMANDS).map(([name, c]) => `  ${name.padEnd(10)} ${c.summary}`),
    "",
    "Options (every command):",
    ...optionLines(GLOBAL_OPTIONS),
    "",
    "The config is Azure Backup's VMSnapshotScriptPluginConfig.json (same keys, same error",
    "names), read as JSONC (comments and trailing commas allowed), with optional extensions:",
    "freeze, snapshot, plugins, log, stateDir. `vmsnap help check` lists what is checked.",
    "",
    "Exit codes: 0 success; 1 check found problems / snapshot at lower consistency;",
    "            2 no snapshot taken; 64 usage error.",
    `Error codes: ${
      Object.keys(CODES).length
    } stable codes, listed with their fixes in docs/errors.md (man vmsnap too).`,
    "",
    "Run `vmsnap <command> --help` for a command's options.",
  ].join("\n");
}

/** A command's help. */
export function commandHelp(name: string): string {
  const c = COMMANDS[name];
  return [
    `Usage: ${c.usage}`,
    "",
    c.description,
    ...(Object.keys(c.options).length ? ["", "Options:", ...optionLines(c.options)] : []),
    "",
    "Options (every command):",
    ...optionLines(GLOBAL_OPTIONS),
  ].join("\n");
}

/**
 * Parses argv (without the program name). Throws {@linkcode UsageError}.
 *
 * @example
 * ```ts
 * import { parseInvocation } from "./main.ts";
 * parseInvocation(["check", "--json"], {}).command; // "check"
 * ```
 */
export function parseInvocation(
  argv: string[],
  env: Record<string, string | undefined>,
): Invocation {
  let snapshotCommand: string[] | undefined;
  const cut = argv.indexOf("--snapshot-command");
  if (cut >= 0) {
    snapshotCommand = argv.slice(cut + 1);
    argv = argv.slice(0, cut + 1);
    if (snapshotCommand.length === 0) {
      throw new UsageError(
        "--snapshot-command needs the command's argv after it, e.g. --snapshot-command /usr/local/sbin/snap.sh",
      );
    }
  }
  const all: Record<string, OptionSpec> = { ...GLOBAL_OPTIONS };
  for (const c of Object.values(COMMANDS)) Object.assign(all, c.options);
  const { tokens } = parseArgs({
    args: argv,
    options: Object.fromEntries(
      Object.entries(all).map((
        [k, v],
      ) => [k, { type: v.type, ...(v.short ? { short: v.short } : {}) }]),
    ),
    allowPositionals: true,
    strict: false,
    tokens: true,
  });
  const positionals = tokens.filter((t) => t.kind === "positional").map((t) => t.value);
  const hasFlag = (name: string) => tokens.some((t) => t.kind === "option" && t.name === name);
  const command = positionals.shift() ?? (hasFlag("version") ? "version" : "help");
  const spec = COMMANDS[command];
  if (!spec) {
    throw new UsageError(
      `unknown command ${JSON.stringify(command)}.${didYouMean(command, Object.keys(COMMANDS))}`,
    );
  }
  const allowed = { ...GLOBAL_OPTIONS, ...spec.options };
  const values: Record<string, string | boolean> = {};
  for (const token of tokens) {
    if (token.kind !== "option") continue;
    const option = allowed[token.name];
    if (!option) {
      const suggestion = didYouMean(token.name, Object.keys(allowed)).replace(/"([^"]+)"/, "--$1");
      const elsewhere = all[token.name] ? ` (${token.rawName} belongs to another command)` : "";
      throw new UsageError(
        `unknown option ${token.rawName} for ${command}${elsewhere}.${suggestion}`,
      );
    }
    if (option.type === "string") {
      if (token.value === undefined || token.value === "") {
        throw new UsageError(`${token.rawName} needs a value: ${token.rawName} ${option.arg}`);
      }
      values[token.name] = token.value;
    } else {
      if (token.inlineValue) throw new UsageError(`${token.rawName} takes no value`);
      values[token.name] = true;
    }
  }
  if (positionals.length > (spec.positionals ?? 0)) {
    throw new UsageError(
      `unexpected argument ${JSON.stringify(positionals[spec.positionals ?? 0])} for ${command}.`,
    );
  }
  const logLevel = values["log-level"] as string | undefined;
  if (logLevel !== undefined && !(LOG_LEVELS as readonly string[]).includes(logLevel)) {
    throw new UsageError(
      `--log-level must be one of ${LOG_LEVELS.join(", ")}, not ${JSON.stringify(logLevel)}.${
        didYouMean(logLevel, LOG_LEVELS)
      }`,
    );
  }
  if (command === "run" && values.external && snapshotCommand) {
    throw new UsageError(
      "--external and --snapshot-command exclude each other: choose one way to take the snapshot.",
    );
  }
  const agentMode = checkAgentOptions(command, values, positionals);
  return {
    command,
    // A relative path is taken from the current directory, as the admin typed it.
    configPath: resolve(
      (values.config as string | undefined) ?? env.VMSNAP_CONFIG ?? DEFAULT_CONFIG_PATH,
    ),
    json: values.json === true,
    logLevel: logLevel as LogLevel | undefined,
    help: values.help === true,
    positionals,
    external: values.external === true,
    connect: values.connect === true,
    snapshotCommand,
    ...agentMode,
    configGiven: values.config !== undefined || env.VMSNAP_CONFIG !== undefined,
    root: resolve((values.root as string | undefined) ?? "/"),
    dryRun: values["dry-run"] === true,
    detect: values.detect === true,
  };
}

/** hook, install, uninstall: --for, the event, --timeout; install and uninstall share --root/--dry-run. */
function checkAgentOptions(
  command: string,
  values: Record<string, string | boolean>,
  positionals: string[],
): { agent?: AgentName; timeoutSeconds?: number } {
  if (!["hook", "install", "uninstall"].includes(command)) return {};
  if (values.help) return {};
  const agent = values.for as string | undefined;
  if (agent === undefined) {
    throw new UsageError(`${command} needs --for AGENT: one of ${AGENT_NAMES.join(", ")}.`);
  }
  if (!(AGENT_NAMES as string[]).includes(agent)) {
    throw new UsageError(
      `--for must be one of ${AGENT_NAMES.join(", ")}, not ${JSON.stringify(agent)}.${
        didYouMean(agent, AGENT_NAMES)
      }`,
    );
  }
  if (command !== "hook") return { agent: agent as AgentName };
  const event = positionals[0];
  if (event === undefined || !(event in EVENT_WORDS)) {
    throw new UsageError(
      `hook needs an event: ${HOOK_WORDS.slice(0, -1).join(", ")} or ${HOOK_WORDS.at(-1)}${
        event === undefined
          ? "."
          : `, not ${JSON.stringify(event)}.${didYouMean(event, Object.keys(EVENT_WORDS))}`
      }`,
    );
  }
  const timeout = values.timeout as string | undefined;
  if (timeout !== undefined && !/^[1-9]\d{0,4}$/.test(timeout)) {
    throw new UsageError(`--timeout must be a whole number of seconds (1-99999), not ${timeout}.`);
  }
  return { agent: agent as AgentName, timeoutSeconds: timeout ? Number(timeout) : undefined };
}

/**
 * `vmsnap recover`: undoes what dead runs left in the config's stateDir (the
 * default one when there is no config), but only when the config and the
 * stateDir pass the permission rules: a marker in a directory a user could
 * write may be forged. Only root can thaw or kill.
 */
async function recoverCommand(configPath: string, json: boolean, io: Io): Promise<number> {
  const refuse = (problems: Problem[]) => {
    for (const p of problems) io.stderr(`vmsnap recover: [${p.code}] ${redact(p.message)}\n`);
    if (json) io.stdout(`${redact(JSON.stringify({ ok: false, problems }))}\n`);
    return EXIT.failed;
  };
  if (process.getuid?.() !== 0) {
    return refuse([{
      code: "NotRoot",
      message: "vmsnap recover must run as root (it thaws filesystems and kills processes).",
    }]);
  }
  const trusted = trustedStateDir(configPath);
  if (!trusted.stateDir) return refuse(trusted.problems);
  return reportRecovery(await recoverAll(trusted.stateDir), json, io);
}

/** `vmsnap recover`'s output and exit code. */
function reportRecovery(recovery: Recovery, json: boolean, io: Io): number {
  const failed = recovery.thawed.some((t) => !t.confirmed) ||
    recovery.pluginLocks.some((l) => l.error) || (recovery.unkillable?.length ?? 0) > 0;
  const lines = describeRecovery(recovery).map((p) => p.message);
  const text = json
    ? JSON.stringify({ ok: !failed, ...recovery })
    : lines.length
    ? escapeForTerminal(lines.join("\n"))
    : "nothing to recover: no run left anything behind.";
  io.stdout(`${redact(text)}\n`);
  return failed ? EXIT.degraded : EXIT.ok;
}

/** Where output goes; tests and the binary use the process's streams. */
export interface Io {
  stdout(text: string): void;
  stderr(text: string): void;
  env: Record<string, string | undefined>;
  stdin?: NodeJS.ReadableStream;
}

/**
 * Writes to stdout or stderr. A reader that went away (`vmsnap run --json |
 * head -1`: EPIPE) or a failing output file never stops a run: the rest of
 * that stream's output is dropped quietly, the run thaws, resumes and
 * finishes (its log and exit code carry the outcome).
 */
function writeQuietly(stream: NodeJS.WriteStream, text: string | Uint8Array): void {
  if (stream.listenerCount("error") === 0) stream.on("error", () => {});
  if (!stream.destroyed && !stream.writableEnded) stream.write(text);
}

/**
 * The short commands (all but `run` and `hook`) write with write(2): Bun builds
 * `process.stdout`/`stdin` on first use, about 10 ms of a 15 ms start (issue 12).
 * `run` and `hook` keep the streams (a slow reader must not block the event loop
 * while filesystems are frozen). A full non-blocking pipe (EAGAIN) is waited for,
 * as a blocking write would (Bun's stream would drop what it queued at exit);
 * other errors (EPIPE: the reader went away) drop the output quietly, as
 * writeQuietly does.
 */
let direct = false;
/** How long a finished run waits for a slow reader of its stdout before it exits regardless. */
const OUTPUT_GRACE_MS = 5_000;
/** `run` or `hook` ran (the guard and the holder exit as before). */
let streamedCommand = false;
const pause = new Int32Array(new SharedArrayBuffer(4));

function writeDirect(fd: 1 | 2, text: string): void {
  const bytes = new TextEncoder().encode(text);
  let done = 0;
  while (done < bytes.length) {
    try {
      done += writeSync(fd, bytes, done);
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== "EAGAIN") return;
      Atomics.wait(pause, 0, 0, 5); // the reader has not read yet: try again in 5 ms
    }
  }
}

const processIo: Io = {
  stdout: (text) => direct ? writeDirect(1, text) : writeQuietly(process.stdout, text),
  stderr: (text) => direct ? writeDirect(2, text) : writeQuietly(process.stderr, text),
  env: process.env,
  // A getter: process.stdin is built on first use (milliseconds), and only run reads it.
  get stdin() {
    return process.stdin;
  },
};

/**
 * Ends the process with `code` once its output is out: at once after direct
 * writes. After `run` and `hook` (streams), stdin is closed (a pending read, as
 * in the external handshake, must not keep the process alive) and the process
 * ends by itself once its stream output is written: a reader that is slow to
 * read a full pipe still gets the result line (Bun's stream drops what it has
 * queued on process.exit, and says it has flushed). Something else left open,
 * or a reader that never reads, ends it after OUTPUT_GRACE_MS. The guard and
 * the holder exit once stdout's stream says it has flushed.
 *
 * @example
 * ```ts
 * import { exitAfterOutput, main } from "./main.ts";
 * exitAfterOutput(await main(["--version"]));
 * ```
 */
export function exitAfterOutput(code: number): void {
  if (direct) process.exit(code);
  if (!streamedCommand) return void process.stdout.write("", () => process.exit(code));
  process.exitCode = code;
  process.stdin.pause();
  (process.stdin as { unref?: () => void }).unref?.();
  process.stdin.destroy();
  setTimeout(() => process.exit(code), OUTPUT_GRACE_MS).unref();
}

/**
 * Runs vmsnap with the given arguments and returns the exit code.
 *
 * @example
 * ```ts
 * import { main } from "./main.ts";
 * const code = await main(["check", "--config", "/etc/azure/VMSnapshotScriptPluginConfig.json"]);
 * ```
 */
export async function main(argv: string[], io: Io = processIo): Promise<number> {
  // The freeze guard: this binary in a hidden mode, started by `run` only.
  // Each command's modules load when it runs (start-up, issue 12).
  if (argv[0] === "__guard" && argv.length === 1) {
    return await (await import("../freeze/guard.ts")).guardMain();
  }
  // The hook's holder: started by `vmsnap hook freeze` only.
  if (argv[0] === "__holder" && argv.length === 1) {
    return await (await import("../hook/holder.ts")).holderMain();
  }
  direct = io === processIo;
  // Under systemd, each stderr line carries its priority for the journal.
  if (stderrIsJournal(io.env)) io = { ...io, stderr: journalWriter(io.stderr) };
  let invocation: Invocation;
  try {
    invocation = parseInvocation(argv, io.env);
  } catch (error) {
    if (!(error instanceof UsageError)) throw error;
    io.stderr(`vmsnap: ${error.message}\nSee vmsnap --help.\n`);
    if (argv.includes("--json")) {
      io.stdout(
        `${
          JSON.stringify({ ok: false, problems: [{ code: "UsageError", message: error.message }] })
        }\n`,
      );
    }
    return EXIT.usage;
  }
  const { command } = invocation;
  // Help and version change nothing (no recovery, no files): `vmsnap recover --help` only helps.
  if (command === "help") {
    const topic = invocation.positionals[0];
    if (topic !== undefined && !COMMANDS[topic]) {
      io.stderr(
        `vmsnap: no help for ${JSON.stringify(topic)}.${
          didYouMean(topic, Object.keys(COMMANDS))
        }\n`,
      );
      return EXIT.usage;
    }
    io.stdout(`${topic ? commandHelp(topic) : generalHelp()}\n`);
    return EXIT.ok;
  }
  if (invocation.help) {
    io.stdout(`${commandHelp(command)}\n`);
    return EXIT.ok;
  }
  if (command === "version") {
    io.stdout(
      invocation.json ? `${JSON.stringify({ version: VERSION })}\n` : `vmsnap ${VERSION}\n`,
    );
    return EXIT.ok;
  }
  // Only recover, run and hook undo what a dead run left; check reports it.
  if (command === "recover") {
    return await recoverCommand(invocation.configPath, invocation.json, io);
  }
  if (command === "check") {
    const report = await runChecks({
      configPath: invocation.configPath,
      connect: invocation.connect,
    });
    // Secrets (inline passwords, credentials in URIs) never reach the output: redacted in the
    // object before it is printed (escaping cannot hide them), then scrubbed from the text.
    const shown = redactValue({
      ...report,
      warnings: [...report.warnings, ...shortSecretWarnings()],
    });
    const text = invocation.json
      ? JSON.stringify(shown, null, 2)
      : escapeForTerminal(formatCheckReport(shown));
    io.stdout(`${redact(text)}\n`);
    return report.ok ? EXIT.ok : EXIT.degraded;
  }
  if (command === "hook") {
    direct = false;
    streamedCommand = true;
    (await import("../sys/stdio.ts")).rememberStdioFlags();
    const { runHook } = await import("../hook/hook.ts");
    return await runHook({
      event: EVENT_WORDS[invocation.positionals[0]],
      agent: invocation.agent!,
      configPath: invocation.configPath,
      json: invocation.json,
      logLevel: invocation.logLevel,
      timeoutSeconds: invocation.timeoutSeconds,
      agentArgs: invocation.positionals.slice(1),
      streams: { stdout: io.stdout, stderr: io.stderr },
    });
  }
  if (command === "install" || command === "uninstall") {
    const options = {
      agent: invocation.agent!,
      configPath: invocation.configGiven ? invocation.configPath : undefined,
      root: invocation.root,
      dryRun: invocation.dryRun,
    };
    const { formatInstall, install, uninstall } = await import("../hook/install.ts");
    try {
      const done = command === "install" ? install(options) : uninstall(options);
      io.stdout(`${formatInstall(done, { command, ...options, json: invocation.json })}\n`);
      return EXIT.ok;
    } catch (error) {
      const code = (error as { code?: string }).code ?? "InstallFailed";
      io.stderr(`vmsnap ${command}: [${code}] ${(error as Error).message}\n`);
      return EXIT.failed;
    }
  }
  if (command === "init") {
    const { formatInit, initConfig } = await import("./init.ts");
    try {
      const outcome = initConfig({
        configPath: invocation.configPath,
        detect: invocation.detect,
        dryRun: invocation.dryRun,
      });
      if (outcome.written) io.stdout(`${formatInit(outcome)}\n`);
      else io.stdout(outcome.text);
      return EXIT.ok;
    } catch (error) {
      const code = (error as { code?: string }).code ?? "InternalError";
      io.stderr(`vmsnap init: [${code}] ${(error as Error).message}\n`);
      return EXIT.degraded;
    }
  }
  if (command === "schema") {
    io.stdout((await import("../config/json_schema.ts")).configJsonSchemaText());
    return EXIT.ok;
  }
  if (command === "status") {
    const { formatStatus, readStatus } = await import("../state/status.ts");
    const status = readStatus({ configPath: invocation.configPath });
    io.stdout(`${invocation.json ? redact(JSON.stringify(status)) : formatStatus(status)}\n`);
    return status.lastResult?.exitCode ?? EXIT.failed;
  }
  // command === "run"
  direct = false;
  streamedCommand = true;
  (await import("../sys/stdio.ts")).rememberStdioFlags();
  const { runBackup } = await import("../run/sequence.ts");
  const result = await runBackup({
    configPath: invocation.configPath,
    json: invocation.json,
    logLevel: invocation.logLevel,
    snapshotCommand: invocation.snapshotCommand,
    external: invocation.external,
    streams: { stdout: io.stdout, stderr: io.stderr },
    stdin: (io.stdin ?? process.stdin) as import("node:stream").Readable,
  });
  // After the thaw: the last result, the metrics textfile, the default log if none was open.
  const { recordRun } = await import("../state/status.ts");
  for (const line of recordRun(result, { configPath: invocation.configPath })) {
    io.stderr(`vmsnap: ${line}\n`);
  }
  return result.exitCode;
}
