/**
 * The help: `vmsnap --help`, `vmsnap help COMMAND`, `vmsnap COMMAND --help`,
 * built from the commands' specs.
 *
 * @module
 */
import { CODES } from "../errors.ts";
import { EXIT, EXIT_KINDS } from "../exit_codes.ts";
import { didYouMean } from "../config/suggest.ts";
import { VERSION } from "../version.ts";
import { entry, GLOBAL_OPTIONS, type Invocation, type OptionSpec } from "./command.ts";
import { COMMANDS } from "./commands/mod.ts";
import type { Io } from "./io.ts";

/** One line per option: `  -h, --help  show help`. */
function optionLines(options: Record<string, OptionSpec>): string[] {
  return Object.entries(options).map(([name, spec]) => {
    const flag = `${spec.short ? `-${spec.short}, ` : "    "}--${name}${
      spec.arg ? ` ${spec.arg}` : ""
    }`;
    return `  ${flag.padEnd(24)} ${spec.help}`;
  });
}

/**
 * The general help.
 *
 * @example
 * ```ts
 * import { generalHelp } from "./help.ts";
 * generalHelp().startsWith("vmsnap "); // true
 * ```
 */
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
    "Exit codes, by kind, the same for every command (`vmsnap help COMMAND` says which it uses):",
    ...EXIT_KINDS.map((kind) => `  ${String(kind.code).padEnd(3)} ${kind.summary}`),
    `Error codes: ${
      Object.keys(CODES).length
    } stable codes, listed with their fixes in docs/errors.md (man vmsnap too).`,
    "",
    "Run `vmsnap <command> --help` for a command's options.",
  ].join("\n");
}

/**
 * A command's help.
 *
 * @example
 * ```ts
 * import { commandHelp } from "./help.ts";
 * commandHelp("check").startsWith("Usage: vmsnap check"); // true
 * ```
 */
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
 * `vmsnap help [TOPIC]` and `vmsnap COMMAND --help`: prints the help asked
 * for; an unknown topic is a usage error. Changes nothing (no recovery, no
 * files): `vmsnap recover --help` only helps.
 *
 * @example
 * ```ts
 * import { showHelp } from "./help.ts";
 * const io = { stdout: (t: string) => console.log(t), stderr: (t: string) => console.error(t), env: {} };
 * showHelp({ command: "help", configPath: "/x", configGiven: false, json: false, help: false, positionals: ["run"] }, io); // 0
 * ```
 */
export function showHelp(invocation: Invocation, io: Io): number {
  if (invocation.command !== "help") {
    io.stdout(`${commandHelp(invocation.command)}\n`);
    return EXIT.ok;
  }
  const topic = invocation.positionals[0];
  if (topic !== undefined && !entry(COMMANDS, topic)) {
    io.stderr(
      `vmsnap: no help for ${JSON.stringify(topic)}.${didYouMean(topic, Object.keys(COMMANDS))}\n`,
    );
    return EXIT.usage;
  }
  io.stdout(`${topic ? commandHelp(topic) : generalHelp()}\n`);
  return EXIT.ok;
}
