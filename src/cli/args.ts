/**
 * Reading the command line: the command, the global options, and the
 * command's own options as its module reads them. Every mistake is a
 * {@linkcode UsageError} that suggests the nearest valid word.
 *
 * @module
 */
import { resolve } from "node:path";
import { parseArgs } from "node:util";
import { DEFAULT_CONFIG_PATH, LOG_LEVELS, type LogLevel } from "../config/config.ts";
import { didYouMean } from "../config/suggest.ts";
import { entry, GLOBAL_OPTIONS, type Invocation, type OptionSpec, UsageError } from "./command.ts";
import { COMMAND_MODULES, COMMANDS } from "./commands/mod.ts";
import type { CheckArgs } from "./commands/check.ts";
import type { HookArgs } from "./commands/hook.ts";
import type { InitArgs } from "./commands/init.ts";
import type { InstallArgs } from "./commands/install.ts";
import type { RunArgs } from "./commands/run.ts";

/** What the command line asked for: the global options and the command's own. */
export type ParsedInvocation =
  & Invocation
  & Partial<CheckArgs & RunArgs & HookArgs & InstallArgs & InitArgs>;

type Token = ReturnType<typeof parseArgs>["tokens"] extends (infer T)[] | undefined ? T : never;
type OptionToken = Extract<Token, { kind: "option" }>;

/** Every option of every command, with the global ones. */
function allOptions(): Record<string, OptionSpec> {
  const all: Record<string, OptionSpec> = { ...GLOBAL_OPTIONS };
  for (const c of Object.values(COMMANDS)) Object.assign(all, c.options);
  return all;
}

/** Splits off what follows an option that takes the rest (`--snapshot-command ARGV...`). */
function cutRest(argv: string[], all: Record<string, OptionSpec>): {
  argv: string[];
  rest?: string[];
} {
  for (const [name, spec] of Object.entries(all)) {
    const cut = argv.indexOf(`--${name}`);
    if (!spec.rest || cut < 0) continue;
    const rest = argv.slice(cut + 1);
    if (rest.length === 0) {
      throw new UsageError(
        `--${name} needs the command's argv after it, e.g. --${name} ${spec.rest.example}`,
      );
    }
    return { argv: argv.slice(0, cut + 1), rest };
  }
  return { argv };
}

/** The tokens of the command line, every known option with its type. */
function tokenize(argv: string[], all: Record<string, OptionSpec>): Token[] {
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
  return tokens;
}

/** The command: the first word, else `version` for a lone --version, else `help`. */
function commandOf(positionals: string[], tokens: Token[]): string {
  const versionFlag = tokens.some((t) => t.kind === "option" && t.name === "version");
  const command = positionals.shift() ?? (versionFlag ? "version" : "help");
  if (!entry(COMMANDS, command)) {
    throw new UsageError(
      `unknown command ${JSON.stringify(command)}.${didYouMean(command, Object.keys(COMMANDS))}`,
    );
  }
  return command;
}

/** The value of one option token, checked against its spec. */
function optionValue(token: OptionToken, option: OptionSpec): string | boolean {
  if (option.type === "string") {
    if (token.value === undefined || token.value === "") {
      throw new UsageError(`${token.rawName} needs a value: ${token.rawName} ${option.arg}`);
    }
    return token.value;
  }
  if (token.inlineValue) throw new UsageError(`${token.rawName} takes no value`);
  return true;
}

/** The options given, each known to the command (or global) and with a value if it takes one. */
function optionValues(
  command: string,
  tokens: Token[],
  all: Record<string, OptionSpec>,
): Record<string, string | boolean> {
  const allowed = { ...GLOBAL_OPTIONS, ...COMMANDS[command].options };
  const values: Record<string, string | boolean> = {};
  for (const token of tokens) {
    if (token.kind !== "option") continue;
    const option = entry(allowed, token.name);
    if (!option) {
      const suggestion = didYouMean(token.name, Object.keys(allowed)).replace(/"([^"]+)"/, "--$1");
      const elsewhere = entry(all, token.name)
        ? ` (${token.rawName} belongs to another command)`
        : "";
      throw new UsageError(
        `unknown option ${token.rawName} for ${command}${elsewhere}.${suggestion}`,
      );
    }
    values[token.name] = optionValue(token, option);
  }
  return values;
}

/** `--log-level`, one of the levels. */
function readLogLevel(values: Record<string, string | boolean>): LogLevel | undefined {
  const level = values["log-level"] as string | undefined;
  if (level !== undefined && !(LOG_LEVELS as readonly string[]).includes(level)) {
    throw new UsageError(
      `--log-level must be one of ${LOG_LEVELS.join(", ")}, not ${JSON.stringify(level)}.${
        didYouMean(level, LOG_LEVELS)
      }`,
    );
  }
  return level as LogLevel | undefined;
}

/**
 * Parses argv (without the program name). Throws {@linkcode UsageError}.
 *
 * @example
 * ```ts
 * import { parseInvocation } from "./args.ts";
 * parseInvocation(["check", "--json"], {}).command; // "check"
 * ```
 */
export function parseInvocation(
  argv: string[],
  env: Record<string, string | undefined>,
): ParsedInvocation {
  const all = allOptions();
  const cut = cutRest(argv, all);
  const tokens = tokenize(cut.argv, all);
  const positionals = tokens.filter((t) => t.kind === "positional").map((t) => t.value);
  const command = commandOf(positionals, tokens);
  const values = optionValues(command, tokens, all);
  const allowedPositionals = COMMANDS[command].positionals ?? 0;
  if (positionals.length > allowedPositionals) {
    throw new UsageError(
      `unexpected argument ${JSON.stringify(positionals[allowedPositionals])} for ${command}.`,
    );
  }
  const logLevel = readLogLevel(values);
  const help = values.help === true;
  const own = entry(COMMAND_MODULES, command)?.parse?.({
    command,
    values,
    positionals,
    rest: cut.rest,
    help,
  });
  return {
    command,
    // A relative path is taken from the current directory, as the admin typed it.
    configPath: resolve(
      (values.config as string | undefined) ?? env.VMSNAP_CONFIG ?? DEFAULT_CONFIG_PATH,
    ),
    configGiven: values.config !== undefined || env.VMSNAP_CONFIG !== undefined,
    json: values.json === true,
    logLevel,
    help,
    positionals,
    ...own,
  };
}
