/**
 * `vmsnap run`: quiesce, freeze, snapshot, thaw, resume; then record the
 * result.
 *
 * @module
 */
import process from "node:process";
import type { Readable } from "node:stream";
import { type CommandSpec, type GivenOptions, type Invocation, UsageError } from "../command.ts";
import type { Io } from "../io.ts";

/** `vmsnap run`'s help. */
export const spec: CommandSpec = {
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
      rest: { example: "/usr/local/sbin/snap.sh" },
    },
  },
};

/** run writes through the process's streams: a slow reader must not block it while frozen. */
export const streams = true;

/** `vmsnap run`'s own options. */
export interface RunArgs {
  external: boolean;
  /** `--snapshot-command`'s argv. */
  snapshotCommand?: string[];
}

/**
 * Reads `--external` and `--snapshot-command`, which exclude each other.
 *
 * @example
 * ```ts
 * import { parse } from "./run.ts";
 * parse({ command: "run", values: {}, positionals: [], rest: ["/sbin/snap"], help: false });
 * ```
 */
export function parse(given: GivenOptions): RunArgs {
  const external = given.values.external === true;
  if (external && given.rest) {
    throw new UsageError(
      "--external and --snapshot-command exclude each other: choose one way to take the snapshot.",
    );
  }
  return { external, snapshotCommand: given.rest };
}

/**
 * Runs the backup; after the thaw, records the last result, the metrics
 * textfile and, if no log was open, the default log. Exits with the result's
 * code.
 *
 * @example
 * ```ts
 * import { handler } from "./run.ts";
 * import { processIo } from "../io.ts";
 * await handler({ command: "run", configPath: "/etc/x.json", configGiven: true, json: true, help: false, positionals: [], external: true }, processIo("streams"));
 * ```
 */
export async function handler(args: Invocation & RunArgs, io: Io): Promise<number> {
  const { runBackup } = await import("../../run/sequence.ts");
  const result = await runBackup({
    configPath: args.configPath,
    json: args.json,
    logLevel: args.logLevel,
    snapshotCommand: args.snapshotCommand,
    external: args.external,
    streams: { stdout: io.stdout, stderr: io.stderr },
    stdin: (io.stdin ?? process.stdin) as Readable,
  });
  const { recordRun } = await import("../../state/record.ts");
  for (const line of recordRun(result, { configPath: args.configPath })) {
    io.stderr(`vmsnap: ${line}\n`);
  }
  return result.exitCode;
}
