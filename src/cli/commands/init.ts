/**
 * `vmsnap init`: a commented starter config for this VM.
 *
 * @module
 */
import { EXIT } from "../../exit_codes.ts";
import type { CommandSpec, GivenOptions, Invocation } from "../command.ts";
import type { Io } from "../io.ts";

/** `vmsnap init`'s help. */
export const spec: CommandSpec = {
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
};

/** `vmsnap init`'s own options. */
export interface InitArgs {
  detect: boolean;
  dryRun: boolean;
}

/**
 * Reads `--detect` and `--dry-run`.
 *
 * @example
 * ```ts
 * import { parse } from "./init.ts";
 * parse({ command: "init", values: { "dry-run": true }, positionals: [], help: false }).dryRun; // true
 * ```
 */
export function parse(given: GivenOptions): InitArgs {
  return { detect: given.values.detect === true, dryRun: given.values["dry-run"] === true };
}

/**
 * Writes the starter config and says what is next, or prints it (--dry-run).
 *
 * @example
 * ```ts
 * import { handler } from "./init.ts";
 * const io = { stdout: (t: string) => console.log(t), stderr: (t: string) => console.error(t), env: {} };
 * await handler({ command: "init", configPath: "/etc/x.json", configGiven: true, json: false, help: false, positionals: [], detect: false, dryRun: true }, io);
 * ```
 */
export async function handler(args: Invocation & InitArgs, io: Io): Promise<number> {
  const { formatInit, initConfig } = await import("../init.ts");
  try {
    const outcome = initConfig({
      configPath: args.configPath,
      detect: args.detect,
      dryRun: args.dryRun,
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
