/**
 * `vmsnap init [--detect] [--dry-run]`: a commented starter config for this
 * VM (../starter_config.ts), with `--detect` a plugin entry for each database
 * server running here (../detect_databases.ts). Written root-only (0600) and
 * never over an existing file (O_EXCL).
 *
 * @module
 */
import {
  closeSync,
  constants,
  existsSync,
  fchmodSync,
  mkdirSync,
  openSync,
  writeSync,
} from "node:fs";
import { dirname } from "node:path";
import process from "node:process";
import { VmsnapError } from "../../errors.ts";
import { EXIT } from "../../exit_codes.ts";
import { type FreezeTarget, planFreeze } from "../../freeze/plan.ts";
import { readMounts } from "../../sys/mountinfo.ts";
import type { FoundDatabase } from "../detect_databases.ts";
import type { FoundAgent } from "../../hook/detect_agents.ts";
import { installCommand } from "../starter_config.ts";
import type { CommandSpec, GivenOptions, Invocation } from "../command.ts";
import { type Io, reportFailure } from "../io.ts";

/** `vmsnap init`'s help. */
export const spec: CommandSpec = {
  summary: "write a commented starter config for this VM (never over an existing one)",
  usage: "vmsnap init [--config PATH] [--detect] [--dry-run]",
  description:
    `Writes a starter config (root, 0600) at the config path: Azure's keys, the filesystems
vmsnap check would freeze here (listed explicitly), and with --detect a plugin entry
for each MariaDB/MySQL, PostgreSQL and MongoDB server running, with a password-file
placeholder and, in a comment, the user and GRANT it needs, and the backup agents found
(qemu-ga, VMware Tools, Azure, Google, AWS SSM) with the vmsnap install command for
each. Never overwrites a file
(ConfigExists). --dry-run prints the config instead of writing it.
Exit 0 when written (or printed); 2 when nothing was written (ConfigExists, NotRoot).`,
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
 * Writes the starter config and says what is next, or prints it (--dry-run):
 * exit 0; nothing written: exit 2.
 *
 * @example
 * ```ts
 * import { handler } from "./init.ts";
 * const io = { stdout: (t: string) => console.log(t), stderr: (t: string) => console.error(t), env: {} };
 * await handler({ command: "init", configPath: "/etc/x.json", configGiven: true, json: false, help: false, positionals: [], detect: false, dryRun: true }, io);
 * ```
 */
export async function handler(args: Invocation & InitArgs, io: Io): Promise<number> {
  try {
    const outcome = await initConfig({
      configPath: args.configPath,
      detect: args.detect,
      dryRun: args.dryRun,
    });
    if (outcome.written) io.stdout(`${formatInit(outcome)}\n`);
    else io.stdout(outcome.text);
    return EXIT.ok;
  } catch (error) {
    return reportFailure(io, "init", error, { fallback: "InternalError" });
  }
}

/** What `vmsnap init` did. */
export interface InitOutcome {
  path: string;
  written: boolean;
  text: string;
  targets: FreezeTarget[];
  databases: FoundDatabase[];
  /** The backup agents found (`--detect`). */
  agents: FoundAgent[];
}

/** The refusal to touch an existing config. */
function configExists(configPath: string): VmsnapError {
  return new VmsnapError(
    "ConfigExists",
    `${configPath} already exists; vmsnap init never overwrites a config. Fix: vmsnap init --dry-run --config ${configPath} to see the starter, and merge what you need by hand, or move the file away.`,
  );
}

/**
 * Builds the starter config and writes it (unless dry-run). Throws
 * `ConfigExists` rather than touch an existing file.
 *
 * @example
 * ```ts
 * import { initConfig } from "./init.ts";
 * const outcome = await initConfig({ configPath: "/etc/azure/VMSnapshotScriptPluginConfig.json", detect: true, dryRun: true });
 * console.log(outcome.text);
 * ```
 */
export async function initConfig(
  options: { configPath: string; detect: boolean; dryRun: boolean },
): Promise<InitOutcome> {
  const { configPath } = options;
  if (existsSync(configPath)) throw configExists(configPath);
  const plan = planFreeze(readMounts(), { mounts: "auto", exclude: [] });
  const databases = options.detect
    ? (await import("../detect_databases.ts")).detectDatabases()
    : [];
  const agents = options.detect
    ? (await import("../../hook/detect_agents.ts")).detectAgents({ root: "/" })
    : [];
  const text = (await import("../starter_config.ts")).starterConfig({
    configPath,
    targets: plan.targets,
    databases,
    detect: options.detect,
    agents,
  });
  const outcome = {
    path: configPath,
    written: false,
    text,
    targets: plan.targets,
    databases,
    agents,
  };
  if (options.dryRun) return outcome;
  if (process.getuid?.() !== 0) {
    throw new VmsnapError(
      "NotRoot",
      `vmsnap init writes a root-owned config and must run as root. Fix: sudo vmsnap init, or vmsnap init --dry-run to see it.`,
    );
  }
  writeNewConfig(configPath, text);
  return { ...outcome, written: true };
}

/** Creates the config, root-only, refusing a file (or a link) that appeared meanwhile. */
function writeNewConfig(configPath: string, text: string): void {
  mkdirSync(dirname(configPath), { recursive: true, mode: 0o700 });
  let fd: number;
  try {
    fd = openSync(
      configPath,
      constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL | constants.O_NOFOLLOW,
      0o600,
    );
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === "EEXIST") throw configExists(configPath);
    throw error;
  }
  try {
    fchmodSync(fd, 0o600);
    writeSync(fd, text);
  } finally {
    closeSync(fd);
  }
}

/**
 * What `vmsnap init` prints after writing (the config itself goes to stdout
 * with --dry-run).
 *
 * @example
 * ```ts
 * import { formatInit } from "./init.ts";
 * formatInit({ path: "/etc/azure/x.json", written: true, text: "", targets: [], databases: [], agents: [] });
 * ```
 */
export function formatInit(outcome: InitOutcome): string {
  const dbs = outcome.databases.map((d) =>
    `${d.process} (${d.sockets[0] ?? `port ${d.ports[0]}`})`
  );
  const agents = outcome.agents.map((a) => `${a.agent} (${a.where})`);
  const install = outcome.agents.filter((a) => !a.installed).map((a) =>
    `  ${installCommand(a.agent, outcome.path)}`
  );
  return [
    `${outcome.written ? "wrote" : "would write"} ${outcome.path} (root, 0600)`,
    `  freeze: ${outcome.targets.map((t) => t.mountPoint).join(", ") || "nothing"}`,
    `  databases: ${dbs.join(", ") || "none found"}`,
    `  backup agents: ${agents.join(", ") || "none found"}`,
    "Next: follow the comments in the file (users, GRANTs, password files), then",
    `  vmsnap check --connect --config ${outcome.path}`,
    ...(install.length
      ? ["and, for the backup agent to call vmsnap around its own snapshots:", ...install]
      : []),
    "and for vmsnap's own schedule (docs/install.md: OpenRC has a cron job instead):",
    "  systemctl enable --now vmsnap.timer",
  ].join("\n");
}
