/**
 * What hook mode depends on: the run's dependencies (src/run/deps.ts: the
 * uid, the clock, the freezer, the guard, the mount table, the plugins, the
 * permission rules), which the holder takes as they are, and for the hook
 * itself the start of a holder. `PRODUCTION_HOOK_DEPS` are the real ones.
 *
 * @module
 */
import { spawn } from "node:child_process";
import { PRODUCTION_DEPS, type RunDeps } from "../run/deps.ts";
import { closeOnExecAbove2 } from "../sys/descriptors.ts";
import { selfCommand } from "../sys/self.ts";
import { HOLDER_SPEC_VARIABLE, type HolderSpec } from "./holder.ts";

/** A holder started by the freeze hook. */
export interface HolderProcess {
  readonly pid: number | undefined;
  /** Its exit code once it exited (-1 when it was killed or could not start), else undefined. */
  exited(): number | undefined;
  /** Stops it (SIGTERM: it resumes what it quiesced, thaws what it froze). */
  stop(): void;
}

/** The run's dependencies, and how the hook starts its holder. */
export interface HookDeps extends RunDeps {
  spawnHolder(spec: HolderSpec): Promise<HolderProcess>;
}

/**
 * Starts the holder (this binary in the hidden `__holder` mode) in its own
 * session, with stdin, stdout and stderr on /dev/null and no other inherited
 * descriptor, cwd `/`, and its orders in its environment.
 *
 * @example
 * ```ts
 * import { spawnHolder } from "./deps.ts";
 * const holder = await spawnHolder({
 *   runId: "20261126T050000Z-a1b2c3",
 *   configPath: "/etc/vmsnap/vmsnap.json",
 *   agent: "gcp",
 *   attachTimeoutMs: 30_000,
 *   agentArgs: [],
 * });
 * ```
 */
export async function spawnHolder(spec: HolderSpec): Promise<HolderProcess> {
  // The holder inherits nothing but /dev/null: an agent reading our output until EOF must not wait for it.
  await closeOnExecAbove2();
  const [command, ...args] = selfCommand(["__holder"]);
  const child = spawn(command, args, {
    detached: true,
    stdio: "ignore",
    cwd: "/",
    env: {
      PATH: "/usr/sbin:/usr/bin:/sbin:/bin",
      LANG: "C",
      [HOLDER_SPEC_VARIABLE]: JSON.stringify(spec),
    },
  });
  let exited: number | undefined;
  child.on("exit", (code) => (exited = code ?? -1));
  child.on("error", () => (exited = -1));
  child.unref();
  return { pid: child.pid, exited: () => exited, stop: () => void child.kill("SIGTERM") };
}

/** The production dependencies of hook mode. */
export const PRODUCTION_HOOK_DEPS: HookDeps = { ...PRODUCTION_DEPS, spawnHolder };
