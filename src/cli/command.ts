/**
 * What a command of the command line is made of: its spec (the words of
 * `--help`, the man page and the bash completion), the reading of its own
 * options, and its handler. Each command is one module of `commands/`
 * exporting these; `commands/mod.ts` puts them in a table.
 *
 * @module
 */
import { DEFAULT_CONFIG_PATH, LOG_LEVELS, type LogLevel } from "../config/config.ts";
import { VmsnapError } from "../errors.ts";
import type { Io } from "./io.ts";

/** One option: its type, its help line, its argument's name and, if fixed, its values. */
export type OptionSpec = {
  type: "string" | "boolean";
  short?: string;
  help: string;
  arg?: string;
  choices?: readonly string[];
  /** The option takes every argument after it (`run --snapshot-command ARGV...`); an example. */
  rest?: { example: string };
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

/** How a command is shown: `--help`, `help COMMAND`, the man page and the bash completion. */
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

/** What every command is given: the global options, read. */
export interface Invocation {
  command: string;
  configPath: string;
  /** True when --config or VMSNAP_CONFIG named the config (install --for azure has its own default). */
  configGiven: boolean;
  json: boolean;
  logLevel?: LogLevel;
  help: boolean;
  /** The arguments after the command's name. */
  positionals: string[];
}

/** A command's own options as the parser found them, known to the spec and with their values. */
export interface GivenOptions {
  command: string;
  values: Record<string, string | boolean>;
  positionals: string[];
  /** The arguments after an option that takes the rest (`--snapshot-command`). */
  rest?: string[];
  /** `--help` was given: the command's help is shown, its options need not be complete. */
  help: boolean;
}

/**
 * A command: the module `commands/<name>.ts` exports these.
 *
 * @example
 * ```ts
 * import type { CommandModule } from "./command.ts";
 * const hello: CommandModule = {
 *   spec: { summary: "say hello", usage: "vmsnap hello", description: "Says hello.", options: {} },
 *   handler(_args, io) {
 *     io.stdout("hello\n");
 *     return Promise.resolve(0);
 *   },
 * };
 * ```
 */
export interface CommandModule<Args extends object = object> {
  spec: CommandSpec;
  /** Reads and checks the command's own options; throws a {@linkcode UsageError}. */
  parse?(given: GivenOptions): Args;
  /**
   * `run` and `hook` write through the process's streams (a slow reader must not block the event
   * loop while filesystems are frozen); the other commands write with write(2) (start-up).
   */
  streams?: boolean;
  /** Does the command and returns its exit code. */
  handler(args: Invocation & Args, io: Io): Promise<number>;
}

/**
 * A usage error: exit 64.
 *
 * @example
 * ```ts
 * import { UsageError } from "./command.ts";
 * throw new UsageError("unknown command \"chekc\". Did you mean \"check\"?");
 * ```
 */
export class UsageError extends VmsnapError {
  constructor(message: string) {
    super("UsageError", message);
    this.name = "UsageError";
  }
}

/**
 * The entry of a table named by a word from the command line: only the
 * table's own names count (`toString` or `constructor` name no command).
 *
 * @example
 * ```ts
 * import { entry } from "./command.ts";
 * entry({ check: 1 }, "toString"); // undefined
 * ```
 */
export function entry<T>(table: Readonly<Record<string, T>>, name: string): T | undefined {
  return Object.hasOwn(table, name) ? table[name] : undefined;
}
