/**
 * The command line: `vmsnap <command> [options]`. Reads the invocation,
 * answers help, and hands the rest to the command's module (commands/).
 * Usage errors exit 64 and suggest the nearest valid word.
 *
 * @module
 */
import { EXIT } from "../exit_codes.ts";
import { type ParsedInvocation, parseInvocation } from "./args.ts";
import { type CommandModule, entry, UsageError } from "./command.ts";
import { COMMAND_MODULES, HIDDEN_COMMANDS } from "./commands/mod.ts";
import { showHelp } from "./help.ts";
import {
  exitAfterOutput,
  forJournal,
  type Io,
  type OutputMode,
  processIo,
  reportFailure,
  streamingIo,
} from "./io.ts";

/** A command's exit code, and how the process must end once it is out. */
interface Outcome {
  code: number;
  mode: OutputMode;
}

/**
 * Runs vmsnap with the given arguments and returns the exit code. Without
 * `io`, the process's own output.
 *
 * @example
 * ```ts
 * import { main } from "./main.ts";
 * const code = await main(["check", "--config", "/etc/azure/VMSnapshotScriptPluginConfig.json"]);
 * ```
 */
export async function main(argv: string[], io?: Io): Promise<number> {
  return (await dispatch(argv, io)).code;
}

/**
 * The binary: runs the command, then ends the process once its output is out.
 *
 * @example
 * ```ts
 * import { cli } from "./main.ts";
 * await cli(["--version"]);
 * ```
 */
export async function cli(argv: string[]): Promise<void> {
  const { code, mode } = await dispatch(argv);
  exitAfterOutput(code, mode);
}

/** Runs one command line; each command's modules load when it runs (start-up, issue 12). */
async function dispatch(argv: string[], given?: Io): Promise<Outcome> {
  const hidden = argv.length === 1 ? entry(HIDDEN_COMMANDS, argv[0]) : undefined;
  if (hidden) return { code: await hidden.handler(), mode: "flush" };
  const io = given ? forJournal(given) : processIo("direct");
  const invocation = readInvocation(argv, io);
  if (!invocation) return { code: EXIT.usage, mode: "direct" };
  if (invocation.command === "help" || invocation.help) {
    return { code: showHelp(invocation, io), mode: "direct" };
  }
  const command = COMMAND_MODULES[invocation.command]; // a known name: parseInvocation checked it
  const mode = command.streams ? "streams" : "direct";
  const out = command.streams && !given ? await streamingIo() : io;
  return { code: await handle(command, invocation, out), mode };
}

/** Runs the command's handler; an error it did not expect is said with its stack: exit 2. */
async function handle(
  command: CommandModule,
  invocation: ParsedInvocation,
  io: Io,
): Promise<number> {
  try {
    return await command.handler(invocation, io);
  } catch (error) {
    return reportFailure(io, invocation.command, error, { fallback: "InternalError", stack: true });
  }
}

/** The invocation, or undefined after a usage error was written (JSON too with --json). */
function readInvocation(argv: string[], io: Io): ParsedInvocation | undefined {
  try {
    return parseInvocation(argv, io.env);
  } catch (error) {
    if (!(error instanceof UsageError)) throw error;
    io.stderr(`vmsnap: ${error.message}\nSee vmsnap --help.\n`);
    if (argv.includes("--json")) {
      const problems = [{ code: "UsageError", message: error.message }];
      io.stdout(`${JSON.stringify({ ok: false, problems })}\n`);
    }
    return undefined;
  }
}
